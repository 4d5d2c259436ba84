"""Kubernetes: a Deployment's replicas and resources, and the override annotations that
make `kepler scale|resources` survive the next release (kepler/scale.py)."""

from __future__ import annotations

from temporalio import activity

from activities.authorization import authorize_override
from activities.errors import non_retryable
from activities.kubernetes.client import ClusterActivities, read_modify_write
from activities.kubernetes.release import DEPLOYMENT, resources_of
from kepler import manifests, naming
from kepler.scale import OVERRIDE_KEYS, ApplyOverrides, DeploymentState, Overrides
from kepler.payloads import ReleaseTarget


def overrides_of(annotations: dict[str, str]) -> Overrides:
    """A hand-edited override annotation is bad data no retry can fix."""
    try:
        return Overrides.from_annotations(annotations)
    except ValueError as e:
        raise non_retryable("InvalidInput", str(e)) from None


CHANGED_BY_RUN = naming.ANNOTATION_PREFIX + "changed-by-run"  # whose undo is its own


class ScaleActivities(ClusterActivities):
    @activity.defn(name="kubernetes.deployment_state")
    def deployment_state(self, target: ReleaseTarget) -> DeploymentState:
        deploy = self.clusters(target.env).get("Deployment", target.namespace, target.name())
        if deploy is None:
            return DeploymentState(target=target)
        ann = deploy["metadata"].get("annotations") or {}
        return DeploymentState(
            target=target, exists=True, replicas=deploy["spec"].get("replicas", 0),
            resources=resources_of(DEPLOYMENT.container(deploy)), overrides=overrides_of(ann),
            generation=deploy["metadata"].get("generation", 0), commit=ann.get(naming.COMMIT, ""),
            image=DEPLOYMENT.container(deploy).get("image", ""))

    @activity.defn(name="kubernetes.apply_overrides")
    def apply_overrides(self, req: ApplyOverrides) -> DeploymentState:
        """Idempotent: nothing is written when the Deployment already matches. What would
        be written is checked first, on the object it goes to (activities/authorization.py
        authorize_override), unless it is this run's undo of its own change: the object
        then names this run (Temporal's run id, never the payload's) as its last writer."""
        t = req.target
        wanted = {k: v for k, v in req.overrides.annotations().items()}
        run = activity.info().workflow_run_id

        def change(deploy: dict) -> bool:
            c = DEPLOYMENT.container(deploy)
            image = c.get("image", "")
            meta_ann = dict(deploy["metadata"].get("annotations") or {})
            own_undo = req.undo and meta_ann.get(CHANGED_BY_RUN) == run
            new_ann = {k: v for k, v in meta_ann.items() if k not in OVERRIDE_KEYS}
            new_ann.update({k: v for k, v in wanted.items() if v is not None})
            changed = new_ann != meta_ann
            if req.replicas is not None and deploy["spec"].get("replicas") != req.replicas:
                deploy["spec"]["replicas"] = req.replicas
                changed = True
            if req.resources is not None:
                block = manifests.resources_block(req.resources)
                if c.get("resources") != block:
                    c["resources"] = block  # a new pod template: a rollout
                    changed = True
            if changed and not own_undo:
                authorize_override(self.platform, t, image, req.authorization, req.replicas,
                                   req.resources, req.undo)
            if changed and req.operation_id:
                new_ann[naming.ANNOTATION_PREFIX + "changed-by"] = (
                    f"{req.operation_id} ({req.requested_by})")
                new_ann[CHANGED_BY_RUN] = run
            deploy["metadata"]["annotations"] = new_ann
            return changed

        live = read_modify_write(self.clusters(t.env), "Deployment", t.namespace, t.name(), change)
        ann = live["metadata"].get("annotations") or {}
        return DeploymentState(target=t, exists=True, replicas=live["spec"].get("replicas", 0),
                               resources=resources_of(DEPLOYMENT.container(live)),
                               overrides=overrides_of(ann),
                               generation=live["metadata"].get("generation", 0))
