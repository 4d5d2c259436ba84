"""The last check before a release reaches its environment, in the activity that writes it:
the platform's own policy and allowed signers (this worker's kepler.yaml, never the
workflow's payload), the workflow and run the activity really belongs to (Temporal's
activity info), and the exact image being written. The workflow's gate checked the same;
this holds even if a path through workflow code ever skipped it. During a freeze window it
asks for the break-glass approvals a release needs then."""

from __future__ import annotations

from datetime import datetime, timezone

from temporalio import activity

from activities.authority import calling_run
from activities.errors import non_retryable
from kepler import naming
from kepler.contracts import CANARY, RELEASE_VERSION, SCALE, SET_RESOURCES
from kepler.identity import InvalidStatement, SignedStatement, verify
from kepler.freeze import BREAK_GLASS, BREAK_GLASS_APPROVALS, window_at
from kepler.settings import ApprovalPolicy, ConfigError, Platform
from kepler.identity import CLOCK_SKEW
from kepler.payloads import ApplyRelease, Authorization, ReleaseRecord, ReleaseTarget

FROZEN_WORKFLOWS = (RELEASE_VERSION.workflow, CANARY.workflow)  # what a freeze window stops where applied


def authorize(platform: Platform, change: ApplyRelease, history: list[ReleaseRecord]) -> None:
    """Raise Unauthorized unless `change` may be applied; `history` is the live workload's
    release history (what was live and healthy here before)."""
    authorize_promotion_path(platform, change, history)
    if change.authorization is None:
        raise refused(f"no authorization for {change.image} in {change.target.env}")
    if through_freeze(platform, change.target, change.image, change.authorization):
        return
    authorize_image(platform, change.target, change.image,
                    change.annotations.get(naming.COMMIT, ""), change.authorization, history)


def through_freeze(platform: Platform, target: ReleaseTarget, image: str, auth: Authorization,
                   hook: bool = False) -> bool:
    """During one of the platform's freeze windows, a release (or a canary's first
    deployment) is written only with verified break-glass approvals of this image for this
    run: raise Unauthorized otherwise; True when it has them (they are more than the usual
    approval). False outside a window, or for what a freeze never stops (rollbacks,
    restores, a running canary's promotion). `hook`: a release's or canary's pre_deploy or
    post_deploy Job, a change like its first deployment. Ad-hoc freezes are checked by the
    workflow."""
    kind = activity.info().workflow_type
    if kind not in FROZEN_WORKFLOWS or (kind == CANARY.workflow and not hook
                                        and target.name() != naming.canary_name(target.service)):
        return False
    now = datetime.now(timezone.utc)
    window = window_at(platform.freeze.get(target.env), target.env, now)
    if window is None:
        return False
    policy = platform.environments[target.env].approval
    needed = max(BREAK_GLASS_APPROVALS, policy.min_approvals if policy.required else 0)
    approvers, _ = _approvers(platform, target, image, "", auth, policy, break_glass=True)
    if len(approvers) < needed:
        raise refused(f"{window.describe()}: {len(approvers)} of {needed} verified break-glass "
                      f"approvals of {image} for {target.service} in {target.env}")
    return True


def authorize_image(platform: Platform, target: ReleaseTarget, image: str, commit: str,
                    auth: Authorization, history: list[ReleaseRecord]) -> None:
    """Raise Unauthorized unless `auth` lets `image` (built from `commit`) reach `target`."""
    env = platform.environments[target.env]
    where = f"{target.service} in {target.env}"
    if auth.gate == "history":
        if any(r.image == image for r in history) or not env.approval.required:
            return
        raise refused(f"{image} was never live for {where}: it needs approval")
    policy = env.rollback_approval if auth.gate == "rollback_approval" else env.approval
    if not policy.required:
        return
    approvers, expired = _approvers(platform, target, image, commit, auth, policy)
    if len(approvers) < policy.min_approvals:
        raise refused(f"{len(approvers)} of {policy.min_approvals} valid approvals of "
                       f"{image} for {where} (run {activity.info().workflow_run_id})"
                       + (f"; {expired} older than {policy.valid_for}, expired" if expired else ""))


def _approvers(platform: Platform, target: ReleaseTarget, image: str, commit: str,
               auth: Authorization, policy: ApprovalPolicy,
               break_glass: bool = False) -> tuple[set[str], int]:
    """Who validly approved `image` for `target` in this run (or its train), other than the
    verified requester, and how many approvals had expired; `break_glass`: only approvals
    that name a break-glass."""
    where = f"{target.service} in {target.env}"
    try:
        signers = platform.signers()
    except ConfigError as e:
        raise refused(str(e)) from None
    requester = _signer(auth.request, signers, people_only=False) if auth.request else None
    if requester is None:
        raise refused(f"the request for {where} is not signed")
    info = activity.info()
    runs = {(info.workflow_id, info.workflow_run_id)}
    run = calling_run()  # as Temporal describes it (None: called without the worker's interceptor)
    first_run_id = run.first_run_id if run else auth.first_run_id
    if first_run_id:
        runs.add((info.workflow_id, first_run_id))
    train = (run.parent if run else (auth.train, "")) if auth.train else ("", "")
    approvers: set[str] = set()
    expired = 0
    now = datetime.now(timezone.utc)
    for signed in auth.approvals:
        who, s = _signer(signed, signers), signed.statement
        if break_glass and not s.operation.startswith(BREAK_GLASS + " "):
            continue
        own_run = (s.workflow_id, s.run_id) in runs
        of_train = (bool(train[0]) and s.workflow_id == train[0] and s.operation == "train"
                    and (not train[1] or s.run_id == train[1]))
        # a train approved its members' digests (trains from before: their commits)
        covers = image in s.digests or (of_train and not s.digests and commit in s.commits)
        service_ok = of_train or s.service == target.service
        fresh = -CLOCK_SKEW <= now - s.issued_at <= policy.valid_for
        if (who and s.action == "approve" and (own_run or of_train) and covers and service_ok
                and s.env == target.env and who in policy.approvers and who != requester):
            if fresh:
                approvers.add(who)
            else:
                expired += 1
    return approvers, expired


def _signer(signed: SignedStatement | None, signers: object, people_only: bool = True) -> str | None:
    """Who verifiably signed `signed`; a system identity (alerts, schedules) may request,
    never approve."""
    if signed is None:
        return None
    try:
        who = verify(signed, signers)  # type: ignore[arg-type]
    except InvalidStatement:
        return None
    return who.name if who.kind == "person" or not people_only else None


def refused(why: str) -> Exception:
    return non_retryable("Unauthorized", f"refused at apply time: {why}")


# workflow type -> its operation
OVERRIDES = {SCALE.workflow: SCALE.operation, SET_RESOURCES.workflow: SET_RESOURCES.operation}


def authorize_override(platform: Platform, target: ReleaseTarget, image: str,
                       auth: Authorization | None, replicas: int | None,
                       resources: "kepler.spec.Resources | None", undo: bool) -> None:
    """`kubernetes.apply_overrides` (kepler scale|resources), checked where it writes, with
    this worker's kepler.yaml and the run Temporal says it belongs to: the namespace is the
    environment's own; a change (an undo puts back what the run read, and is never bounded)
    stays within the environment's bounds, both ways; where approval is required, the
    run is a Scale or SetResources whose signed request names it, and enough valid approvals
    of that run name the image running there. Raise InvalidInput or Unauthorized otherwise."""
    from kepler.scale import bounds_problems, minimum_problems  # (kept below the others' code)
    env = platform.environments.get(target.env)
    where = f"{target.service} in {target.env}"
    if env is None:
        raise refused(f"{target.env} is not an environment of this platform")
    if target.namespace != env.namespace_for(target.service, target.env):
        raise refused(f"{where} lives in {env.namespace_for(target.service, target.env)}, "
                      f"not {target.namespace}")
    if not undo:
        problems = (bounds_problems(env.bounds, replicas, resources)
                    + minimum_problems(env.bounds, replicas, resources))
        if problems:
            raise non_retryable("InvalidInput", f"refused at apply time: {'; '.join(problems)}")
    if not env.approval.required:
        return
    info = activity.info()
    operation = OVERRIDES.get(info.workflow_type)
    if auth is None or operation is None:
        raise refused(f"a change of replicas or resources of {where} needs the signed request "
                      "and approvals of a Scale or SetResources run")
    try:
        signers = platform.signers()
    except ConfigError as e:
        raise refused(str(e)) from None
    s = auth.request.statement if auth.request else None
    if (_signer(auth.request, signers, people_only=False) is None or s is None
            or (s.action, s.operation, s.service, s.env, s.workflow_id) != (
                "request", operation, target.service, target.env, info.workflow_id)):
        raise refused(f"the request for {where} is not a signed {operation} of "
                      f"{info.workflow_id}")
    approvers, expired = _approvers(platform, target, image, "", auth, env.approval)
    if len(approvers) < env.approval.min_approvals:
        raise refused(f"{len(approvers)} of {env.approval.min_approvals} valid approvals of "
                      f"{operation} of {where} (run {info.workflow_run_id}, running {image})"
                      + (f"; {expired} expired" if expired else ""))


# --- promotion paths (issue 26, item 10) -------------------------------------------------------
# (imported here, not above: this part is appended to the module as one piece)
from typing import Any  # noqa: E402

from temporalio.exceptions import ApplicationError  # noqa: E402

from kepler.promotion import soaked_in  # noqa: E402
from kepler.payloads import history_of  # noqa: E402

_CLUSTERS: dict[int, Any] = {}  # the worker's clusters, one set per platform it runs with


def authorize_promotion_path(platform: Platform, change: ApplyRelease,
                             history: list[ReleaseRecord]) -> None:
    """Raise Unauthorized unless `change` may enter an environment with a promotion path
    (`promotion.<env>.from`): its image was live here before (putting back), or was live
    and healthy in the source environment for the path's soak — as that environment's own
    workload records it, read through this worker's clusters — or the run has verified
    break-glass approvals of it."""
    target, image = change.target, change.image
    path = platform.promotion.get(target.env)
    if path is None or any(r.image == image for r in history):
        return
    upstream = _source_history(platform, target.service, path.source)
    if soaked_in(upstream, image, path.soak, datetime.now(timezone.utc)):
        return
    if change.authorization is not None and _broke_glass(platform, change):
        return
    raise refused(f"{image} was not live and healthy in {path.source} for {path.soak}, and "
                  f"{target.env} takes only that (promotion.{target.env}.from: {path.source}); "
                  "nor has this run two verified break-glass approvals of it")


def _source_history(platform: Platform, service: str, source: str) -> list[ReleaseRecord]:
    from activities.kubernetes.client import Clusters  # the one client; it imports nothing of ours

    clusters = _CLUSTERS.setdefault(id(platform), Clusters(platform))
    namespace = platform.environments[source].namespace_for(service, source)
    for kind in ("Deployment", "CronJob"):
        workload = clusters(source).get(kind, namespace, service)  # rbac: Deployment, CronJob
        if workload is not None:
            return history_of(workload["metadata"].get("annotations") or {})
    return []


def _broke_glass(platform: Platform, change: ApplyRelease) -> bool:
    assert change.authorization is not None
    policy = platform.environments[change.target.env].approval
    needed = max(BREAK_GLASS_APPROVALS, policy.min_approvals if policy.required else 0)
    try:
        approvers, _ = _approvers(platform, change.target, change.image,
                                  change.annotations.get(naming.COMMIT, ""), change.authorization,
                                  policy, break_glass=True)
    except ApplicationError:  # unsigned: no break-glass
        return False
    return len(approvers) >= needed
