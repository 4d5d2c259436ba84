"""ReleaseVersion: put one git ref of a service into one environment, safely.

The runbook: resolve the ref — or, promoting (`from_env`), take the digest and commit
live and healthy in the source environment, soaked, as they are; into an environment with
a promotion path, only that commit's digest there (or a break-glass gate); reuse or build
the image; pin it by digest; get
approval when policy asks; the pre_deploy hook (its undo registered first); remember
what runs now; apply image + config; wait for the rollout; the post_deploy hook; verify;
notify. Anything failing after the apply puts the previous image *and* config back, then
runs the pre_deploy hook's undo. A blue-green release (the request's strategy, or the spec's
for the environment) hands over to the Canary workflow once the spec is read
(workflows/bluegreen.py).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.common import patches

# the baseline whose runs read policy and freezes in one step, and apply, wait and record in one
KEPLER_0_2_3 = "kepler-0.2.3"

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import RELEASE_VERSION
    from activities.gitlab import GitLabActivities
    from activities.prometheus import PrometheusActivities
    from activities.registry import RegistryActivities
    from activities.temporal import TemporalActivities
    from kepler import manifests
    from kepler.models import Operation, ReleaseReport, ReleaseRequest
    from kepler.train import TRAIN_PREFIX
    from kepler.payloads import (
        ApplyRelease, Authorization, Commit, EnvironmentPolicy, ImageQuery, ReadSpec, ReleaseRecord,
        ReleaseTarget, ResolveRef,
        VerifyRelease, WaitRollout,
    )
    from workflows.steps.platform import check_bounds, read_policy, read_policy_and_freezes
    from workflows.common.approval import ApprovalGate
    from workflows.base import Done, KeplerWorkflow, StepFailed
    from workflows.common.approval import APPROVAL_EXPIRY, SIGNED_APPROVALS
    from workflows.common.trust import Untrusted, verify_train_approvals
    from workflows.steps.image import ensure_image, pinned_image
    from kepler.freeze import ActiveFreeze
    from kepler.spec import Hooks, ServiceSpec
    import workflows.steps.cronjob as cronjob
    import workflows.steps.hooks as release_hooks
    import workflows.steps.freeze as freeze
    import workflows.steps.kube as kube
    import workflows.steps.promotion as promotion
    import workflows.bluegreen as blue_green


@workflow.defn(name=RELEASE_VERSION.workflow)
class ReleaseVersion(ApprovalGate, KeplerWorkflow[ReleaseReport]):
    _by_train = False  # a train member whose train's signed approvals cover it

    @workflow.run
    async def run(self, req: ReleaseRequest) -> ReleaseReport:
        self.report = ReleaseReport(service=req.service, env=req.env, outcome="running")
        return await self.operate(Operation.RELEASE, req.service, req.env, req.requested_by,
                                  req.ref or f"from {req.from_env}", lambda: self.runbook(req), req)

    async def runbook(self, req: ReleaseRequest) -> Done:
        report: ReleaseReport = self.report
        policy, adhoc = await self.policy_and_freezes(req)
        checked = await freeze.check(self, policy, req, adhoc)  # refused, waited out, or break-glass
        ref, pinned = req.ref or "", req.image
        if req.from_env:  # a promotion: exactly what is live and healthy there, as it is
            live = await promotion.source_release(self, req, policy)
            commit = Commit(sha=live.commit, short_id=live.commit[:8], title=live.version)
            ref, pinned = live.version or live.commit[:12], live.image
            self.skip("resolve ref", f"{ref} ({live.commit[:12]}), as live in {req.from_env}")
        elif req.commit:  # pinned by a train: what its approver saw, not what the ref is now
            commit = Commit(sha=req.commit, short_id=req.commit[:8], title=ref)
            self.skip("resolve ref", f"{ref} is {req.commit[:12]}, as resolved before")
        else:
            commit = await self.step("resolve ref", GitLabActivities.resolve_ref,
                                     ResolveRef(service=req.service, ref=ref))
        report.commit = commit.sha
        self.set_version(f"{ref}@{commit.short_id}")
        if not (pinned or policy.promotion or req.strategy == "blue-green"):  # beside the spec
            self.prefetch("find image", RegistryActivities.find_image,
                          ImageQuery(repository=policy.image_repository, reference=commit.sha))
        spec = await self.step("read service spec", GitLabActivities.read_spec,
                               ReadSpec(service=req.service, sha=commit.sha))
        self.record_change(commit.sha, commit.committed_at, spec.team)
        target = ReleaseTarget(env=req.env, namespace=policy.namespace, service=req.service)
        check_bounds(self, policy, spec.replicas_in(req.env), spec.resources_in(req.env))
        if blue_green.chosen(req, spec) and await blue_green.something_live(self, target):
            await blue_green.hand_over(self, req, ref, commit)  # the Canary workflow runs it
        on_path = promotion.OnPath() if req.from_env else await promotion.enforce_path(
            self, req.service, req.env, policy, commit.sha, pinned, req.break_glass)
        pinned = pinned or on_path.image  # on a path: the source's digest, never a build
        if pinned:  # pinned with its commit: exactly the digest approved or tested
            image = await pinned_image(self, policy, pinned, commit.sha,
                                       approved=self._by_train and policy.approval.required)
        else:
            image = await ensure_image(self, policy, req.service, commit.sha)
        report.image = image

        what = (f"release of {req.service} {ref} ({commit.sha[:12]}) to {req.env}"
                + (f", promoted from {req.from_env}" if req.from_env else ""))
        if on_path.break_glass and checked.frozen is None:  # off the path: two approvers
            approvals = await promotion.break_glass_gate(self, policy, req.reason, what,
                                                         [image], [commit.sha])
            report.approved_by = [a.approver for a in approvals]
            await freeze.recheck(self, policy, req, checked)
        elif policy.approval.required and self._by_train and checked.frozen is None:
            self.skip("approval", f"approved with {workflow.info().parent.workflow_id}")
            await freeze.recheck(self, policy, req, checked)
        else:  # the usual gate, or a break-glass one; then a freeze begun since refuses
            approvals = await freeze.gate(self, policy, req, checked, what,
                                          digests=[image], commits=[commit.sha])
            report.approved_by = [a.approver for a in approvals]
        broke_glass = req.reason if checked.frozen is not None or on_path.break_glass else ""

        if spec.type == "cronjob":  # a CronJob's pod template; one run is the check
            previous = await cronjob.snapshot(self, target)
            report.previous_image = previous.image
            await cronjob.release(self, req, previous, spec, image, commit.sha,
                                  self.release_authorization(req))
            await kube.record_release(self, target, image, commit.sha, ref, req.requested_by,
                                      cronjob=True, break_glass=broke_glass)
            return self._live(req, ref)
        hooks = release_hooks.of(spec)  # pre_deploy, the deploy, post_deploy
        undo = release_hooks.recorded_undo(hooks)
        # the deploy step records the release, unless something comes between them
        record = None if self.checks_after_rollout(policy, hooks) else kube.release_record(
            image, commit.sha, ref, req.requested_by, undo=undo, break_glass=broke_glass)
        await release_hooks.around(
            self, hooks, release_hooks.release_of(spec, req.env, target, image, commit.sha, ref),
            self.release_authorization(req),
            lambda: self.deploy(req, policy, spec, target, image, commit.sha, ref, record))
        await self.verify(policy, req)
        if record is None:
            await kube.record_release(self, target, image, commit.sha, ref, req.requested_by,
                                      undo=undo, break_glass=broke_glass)
        await promotion.offer_onwards(self, req, policy, image, commit.sha, ref)
        return self._live(req, ref)

    async def deploy(self, req: ReleaseRequest, policy: EnvironmentPolicy, spec: ServiceSpec,
                     target: ReleaseTarget, image: str, commit: str, ref: str,
                     record: ReleaseRecord | None) -> None:
        """Remember what runs (its undo puts it back), apply, wait for the rollout (and
        record it, given `record`): in one activity in runs begun on kepler-0.2.3."""
        snapshot = await kube.snapshot(self, target)
        self.report.previous_image = snapshot.image
        self.saga.add(f"restore {snapshot.image or 'the empty deployment'} and its config",
                      lambda: kube.restore_and_wait(self, snapshot, policy.rollout_timeout))
        override = kube.overrides_of(snapshot)  # kepler scale|resources
        change = ApplyRelease(
            target=target, image=image,
            replicas=spec.replicas_in(req.env) if override.replicas is None else override.replicas,
            config=spec.config_files, env=spec.env_in(req.env),
            resources=override.resources or spec.resources_in(req.env), port=spec.port,
            health_path=spec.health_path, pod=manifests.pod_shape(spec, req.env),
            annotations=kube.release_annotations(req.requested_by, commit=commit, version=ref),
            authorization=self.release_authorization(req))
        if patches.begun_on(KEPLER_0_2_3):
            await kube.deploy(self, change, policy.rollout_timeout, record)
            return
        result = await kube.apply(self, change)
        await kube.wait_rollout(self, WaitRollout(target=target, generation=result.generation,
                                                  timeout=policy.rollout_timeout))

    async def policy_and_freezes(self, req: ReleaseRequest) -> tuple[EnvironmentPolicy,
                                                                     list[ActiveFreeze] | None]:
        """The policy, and the ad-hoc freezes read with it (None: freeze.check reads them)."""
        if patches.begun_on(KEPLER_0_2_3):
            return await read_policy_and_freezes(self, req.service, req.env)
        self.prefetch("check freeze", TemporalActivities.active_freeze, req.env)
        return await read_policy(self, req.service, req.env), None

    @staticmethod
    def checks_after_rollout(policy: EnvironmentPolicy, hooks: Hooks | None) -> bool:
        """Something between the rollout and the record (a post_deploy hook, the bake,
        Prometheus), or a run begun before the deploy step could record the release."""
        return bool(hooks and hooks.post_deploy) or policy.bake_time > timedelta(0) \
            or policy.verify_with_prometheus or not patches.begun_on(KEPLER_0_2_3)

    def _live(self, req: ReleaseRequest, ref: str) -> Done:
        return Done("succeeded", f"{ref} ({self.report.commit[:12]}) is live in {req.env}")

    def needs_approval(self, policy: EnvironmentPolicy) -> bool:
        self._by_train = self.approved_by_train(self.request, policy)
        return super().needs_approval(policy) and not self._by_train

    def release_authorization(self, req: ReleaseRequest) -> Authorization:
        parent = workflow.info().parent
        if self._by_train and parent is not None:  # the train's signed approvals, for its run
            return self.authorization(approvals=req.train_approvals, train=parent.workflow_id,
                                      request=req.train_request)
        return self.authorization()

    def approved_by_train(self, req: ReleaseRequest, policy: EnvironmentPolicy) -> bool:
        """The train's one gate stands for its members' gates, when this release is the
        child of a train run whose signed approvals name this commit and digest (a parent's id or a
        flag alone proves nothing: anyone can start a workflow called train-x@prod)."""
        parent = workflow.info().parent
        if not (req.train_approved and parent is not None and parent.workflow_id.startswith(
                TRAIN_PREFIX) and parent.workflow_id.endswith("@" + req.env)):
            return False
        if not policy.approval.required:
            return True
        patches.retired(SIGNED_APPROVALS)
        patches.retired(APPROVAL_EXPIRY)
        try:
            verify_train_approvals(req.train_approvals, parent.workflow_id, parent.run_id,
                                   req.env, req.commit, req.image, policy.approval,
                                   req.requested_by, policy.signers, workflow.now())
        except Untrusted as e:
            raise StepFailed("verify train approval", str(e), "Unauthorized", bad_input=True) from None
        return True

    async def verify(self, policy: EnvironmentPolicy, req: ReleaseRequest) -> None:
        if policy.bake_time > timedelta(0):
            self.set_stage("baking")
            await workflow.sleep(policy.bake_time)
        if not policy.verify_with_prometheus:
            self.skip("verify", "no Prometheus check configured for this environment")
            return
        verdict = await self.step("verify", PrometheusActivities.verify, VerifyRelease(
            env=req.env, namespace=policy.namespace, service=req.service, workload=req.service))
        if verdict.verdict == "failed":
            raise StepFailed("verify", verdict.detail, "VerificationFailed")
        if verdict.verdict in ("no_data", "skipped"):
            if policy.verify_no_data == "fail":
                raise StepFailed("verify", f"{verdict.detail}: nothing to verify with, and "
                                 f"{req.env}'s verify_no_data policy is fail", "VerificationFailed")
            self.state.notes.append(f"verify: {verdict.detail}; passed by {req.env}'s "
                                    "verify_no_data policy (skip)")
