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
from kepler.steps import ReleaseTarget


def overrides_of(annotations: dict[str, str]) -> Overrides:
    """A hand-edited override annotation is bad data no retry can fix."""
    try:
        return Overrides.from_annotations(annotations)
    except ValueError as e:
        raise non_retryable("InvalidInput", str(e)) from None


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
        """Idempotent: nothing is written when the Deployment already matches. Checked
        first, on the object it writes (activities/authorization.py authorize_override)."""
        t = req.target
        wanted = {k: v for k, v in req.overrides.annotations().items()}

        def change(deploy: dict) -> bool:
            c = DEPLOYMENT.container(deploy)
            authorize_override(self.platform, t, c.get("image", ""), req.authorization,
                               req.replicas, req.resources, req.undo)
            meta_ann = dict(deploy["metadata"].get("annotations") or {})
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
            if changed and req.operation_id:
                new_ann[naming.ANNOTATION_PREFIX + "changed-by"] = (
                    f"{req.operation_id} ({req.requested_by})")
            deploy["metadata"]["annotations"] = new_ann
            return changed

        live = read_modify_write(self.clusters(t.env), "Deployment", t.namespace, t.name(), change)
        ann = live["metadata"].get("annotations") or {}
        return DeploymentState(target=t, exists=True, replicas=live["spec"].get("replicas", 0),
                               resources=resources_of(DEPLOYMENT.container(live)),
                               overrides=overrides_of(ann),
                               generation=live["metadata"].get("generation", 0))
