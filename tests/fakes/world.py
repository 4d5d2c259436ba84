"""In-memory activities with the real activity names, for time-skipping workflow tests
of every branch. (The real activities are tested against the sandbox elsewhere.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from kepler.canary import CanaryState
from kepler.freeze import ActiveFreeze, EnvironmentFreeze
from kepler.clients.freezes import adhoc_freezes
from kepler.identity import RequestUse
from kepler.promotion import LiveRelease, PromotionPath
from kepler.spec import ServiceSpec
from kepler.settings import ApprovalPolicy, Bounds, load_platform
from kepler.payloads import (
    AdoptedObject, Applied, ApplyObjects, DeployRelease, DeployResult, ExistingService, ReleaseRecord, RecordRelease, ApplyRelease, ApplyResult, BuildRequest, BuildResult, Commit,
    EnsureHook, EnsureJob, EnsureProject, EnvironmentPolicy, ImageQuery, PolicyNow, PolicyQuery, ProjectRef,
    ReadSpec, ReleaseSnapshot, ReleaseTarget, ResolveRef, Revision, RolloutResult, RouteWeights,
    UndoCreated, VerifyRelease, VerifyResult, WaitRollout,
)
from kepler.notifications import Notification

DIGEST = "sha256:" + "a" * 64
COMMITTED_AT = datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc)  # every fake commit's time


def activity_name(fn: Any) -> str:
    return getattr(fn, "__temporal_activity_definition").name


def by_name(activities: list[Any]) -> dict[str, Any]:
    """Activities keyed by their Temporal name, to swap or drop one in a test."""
    return {activity_name(a): a for a in activities}


def replaced(activities: list[Any], *replacements: Any, drop: tuple[str, ...] = ()) -> list[Any]:
    """`activities` with those of the same names as `replacements` swapped, `drop` left out."""
    table = by_name(activities)
    table.update(by_name(list(replacements)))
    return with_combined([a for name, a in table.items() if name not in drop])


def with_combined(activities: list[Any]) -> list[Any]:
    """`activities` with the activities Kepler combines made of their own parts, as the
    real ones are: `kubernetes.deploy_release` of apply_release, wait_rollout and
    record_release; `platform.policy_and_freezes` of environment_policy and active_freeze."""
    table = by_name(activities)
    policy, freezes = table.get("platform.environment_policy"), table.get("temporal.active_freeze")
    if policy is not None and freezes is not None:
        @activity.defn(name="platform.policy_and_freezes")
        async def policy_and_freezes(q: PolicyQuery) -> PolicyNow:
            return PolicyNow(policy=await policy(q), adhoc_freezes=await freezes(q.env))

        table["platform.policy_and_freezes"] = policy_and_freezes
    apply, wait = table.get("kubernetes.apply_release"), table.get("kubernetes.wait_rollout")
    record = table.get("kubernetes.record_release")
    if apply is None or wait is None:
        return list(table.values())

    @activity.defn(name="kubernetes.deploy_release")
    async def deploy_release(d: DeployRelease) -> DeployResult:
        applied = await apply(d.release)
        rollout = await wait(WaitRollout(target=d.release.target, generation=applied.generation,
                                         timeout=d.timeout))
        if d.record is None or record is None:
            return DeployResult(applied=applied, rollout=rollout)
        await record(RecordRelease(target=d.release.target, record=d.record))
        return DeployResult(applied=applied, rollout=rollout, recorded=True)

    table["kubernetes.deploy_release"] = deploy_release
    return list(table.values())


def sha_of(ref: str) -> str:
    return (ref.encode().hex() * 40)[:40]

FAKE_SEAL = "sealed-by-the-fake-world"


@dataclass
class FakeWorld:
    approvers: list[str] = field(default_factory=lambda: ["alice", "bob"])
    idempotent: bool = True  # what the service's spec says
    spec: dict[str, Any] = field(default_factory=dict)  # more of it (e.g. environments)
    min_approvals: int = 1
    approval_valid_for: timedelta = timedelta(days=7)
    images: dict[str, str] = field(default_factory=dict)   # commit -> digest
    build_fails: bool = False
    rollout_fails: bool = False
    rollout_hangs: bool = False
    deployment: dict[str, Any] = field(default_factory=lambda: {
        "image": "reg/demo/shop@sha256:" + "0" * 64, "config": {"a": "1"}, "replicas": 2})
    calls: list[str] = field(default_factory=list)
    notes: list[Notification] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    fail_step: str = ""
    routes: RouteWeights | None = None
    history: list[Revision] = field(default_factory=list)
    recorded: list[RecordRelease] = field(default_factory=list)  # kubernetes.record_release
    existing: ExistingService | None = None  # a GitLab project there before a create
    releases: list[ReleaseRecord] = field(default_factory=list)  # kepler.dev/history, newest first
    live: LiveRelease = field(default_factory=LiveRelease)  # what a promotion's source runs
    promotion: PromotionPath | None = None  # prod's promotion path
    freeze: EnvironmentFreeze | None = None  # prod's freeze windows
    temporal: Any = None  # a client: ad-hoc freezes are asked of the Freeze workflows themselves
    request_runs: dict[str, str] = field(default_factory=dict)  # signature -> the run it started
    handed_over: set[str] = field(default_factory=set)  # release runs that handed over

    def activities(self) -> list[Any]:
        world = self

        def record(name: str) -> None:
            world.calls.append(name)
            if world.fail_step == name:
                raise ApplicationError(f"{name} exploded", type="InvalidInput", non_retryable=True)

        @activity.defn(name="platform.environment_policy")
        async def environment_policy(q: PolicyQuery) -> EnvironmentPolicy:
            record("policy")
            needs = q.env == "prod"
            return EnvironmentPolicy(
                env=q.env, namespace=f"{q.service}-{q.env}",
                approval=ApprovalPolicy(required=needs, approvers=world.approvers if needs else [],
                                        min_approvals=world.min_approvals if needs else 1,
                                        timeout=timedelta(hours=24), remind_every=timedelta(hours=4),
                                        valid_for=world.approval_valid_for),
                rollback_approval=ApprovalPolicy(), bounds=Bounds(), bake_time=timedelta(0),
                rollout_timeout=timedelta(minutes=10), registry_host="reg",
                image_repository=f"demo/{q.service}", signers=load_platform().signers(),
                admins=list(load_platform().identity.admins),
                promotion=world.promotion if q.env == "prod" else None,
                auto_promote_to=["prod"] if world.promotion and world.promotion.auto
                and world.promotion.source == q.env else [],
                freeze=world.freeze if q.env == "prod" else None)

        @activity.defn(name="temporal.active_freeze")
        async def active_freeze(env: str) -> list[ActiveFreeze]:
            record(f"active_freeze {env}")
            return await adhoc_freezes(world.temporal, env) if world.temporal else []

        @activity.defn(name="temporal.request_used")
        async def request_used(use: RequestUse) -> str:
            """As Temporal's records say it (the real one reads visibility, which the
            time-skipping server lacks): the first run a signed request started."""
            me = f"{activity.info().workflow_id}/{activity.info().workflow_run_id}"
            first = world.request_runs.setdefault(use.signature, me)
            if use.handed_over and first != me and first not in world.handed_over:
                world.handed_over.add(first)  # the release that handed over: once
                return ""
            return "" if first == me else first.rpartition("/")[2]

        @activity.defn(name="platform.environments")
        async def environments() -> list[str]:
            record("environments")
            return ["prod", "staging"]

        @activity.defn(name="gitlab.resolve_ref")
        async def resolve_ref(r: ResolveRef) -> Commit:
            record("resolve_ref")
            if r.ref == "missing":
                raise ApplicationError("ref 'missing' does not exist", type="NotFound", non_retryable=True)
            sha = sha_of(r.ref)
            return Commit(sha=sha, short_id=sha[:8], title=r.ref, committed_at=COMMITTED_AT)

        @activity.defn(name="gitlab.read_spec")
        async def read_spec(r: ReadSpec) -> ServiceSpec:
            record("read_spec")
            return ServiceSpec(name=r.service, team="t", config_files={"v": r.sha[:6]},
                               idempotent=world.idempotent, **world.spec)

        @activity.defn(name="registry.find_image")
        async def find_image(q: ImageQuery) -> str:
            record("find_image")
            digest = world.images.get(q.reference) or (q.reference if q.reference.startswith("sha256:") else "")
            return f"reg/{q.repository}@{digest}" if digest else ""

        @activity.defn(name="jenkins.build")
        async def build(b: BuildRequest) -> BuildResult:
            record("build")
            if world.build_fails:
                raise ApplicationError("build kepler-shop #1 ended FAILURE; log tail:\nmake: *** boom",
                                       type="BuildFailed", non_retryable=True)
            world.images[b.commit] = "sha256:" + b.commit[:8] * 8
            return BuildResult(number=1, result="SUCCESS")

        @activity.defn(name="kubernetes.snapshot")
        async def snapshot(t: ReleaseTarget) -> ReleaseSnapshot:
            record("snapshot")
            d = world.deployment
            return ReleaseSnapshot(target=t, exists=True, image=d["image"], replicas=d["replicas"],
                                   config=dict(d["config"]), annotations=dict(d.get("annotations", {})),
                                   history=list(world.releases))

        @activity.defn(name="kubernetes.live_release")
        async def live_release(t: ReleaseTarget) -> LiveRelease:
            record(f"live_release {t.env}")
            return world.live

        @activity.defn(name="kubernetes.apply_release")
        async def apply_release(a: ApplyRelease) -> ApplyResult:
            # the real activity checks this again; a workflow path that forgets it fails here
            assert a.authorization is not None, "a release written without its authorization"
            record("apply_release")
            world.deployment.update(image=a.image, config=dict(a.config), replicas=a.replicas)
            return ApplyResult(changed=True, generation=2)

        @activity.defn(name="kubernetes.restore_release")
        async def restore_release(s: ReleaseSnapshot) -> ApplyResult:
            record("restore_release")
            world.deployment.update(image=s.image, config=dict(s.config or {}), replicas=s.replicas)
            return ApplyResult(changed=True, generation=3)

        @activity.defn(name="kubernetes.wait_rollout")
        async def wait_rollout(w: WaitRollout) -> RolloutResult:
            record("wait_rollout")
            if world.rollout_hangs and w.generation == 2:
                while True:
                    activity.heartbeat("0/2 ready")
                    await asyncio.sleep(0.05)
            if world.rollout_fails and w.generation == 2:
                raise ApplicationError("shop-prod/shop: pod shop-x: CrashLoopBackOff",
                                       type="RolloutFailed", non_retryable=True)
            return RolloutResult(ready_replicas=2)

        @activity.defn(name="kubernetes.revision_history")
        async def revision_history(t: ReleaseTarget) -> list[Revision]:
            record("revision_history")
            return world.history

        @activity.defn(name="kubernetes.apply_objects")
        async def apply_objects(a: ApplyObjects) -> list[Applied]:
            record(f"apply_objects {a.env}")
            out = []
            for m in a.manifests:
                world.created.append(f"{a.env}/{m['kind']}/{m['metadata']['name']}")
                out.append(Applied(kind=m["kind"], namespace=m["metadata"].get("namespace", ""),
                                   name=m["metadata"]["name"], created=True))
            return out

        @activity.defn(name="kubernetes.record_adopted")
        async def record_adopted(a: ApplyObjects) -> list[AdoptedObject]:
            record(f"record_adopted {a.env}")
            return []  # the fake world starts empty

        @activity.defn(name="kubernetes.foreign_objects")
        async def foreign_objects(a: ApplyObjects) -> list[AdoptedObject]:
            record(f"foreign_objects {a.env}")
            return []  # the fake world starts empty

        @activity.defn(name="kubernetes.delete_if_created")
        async def delete_if_created(u: UndoCreated) -> bool:
            record("delete_if_created")
            key = f"{u.env}/{u.kind}/{u.name}"
            if key in world.created:
                world.created.remove(key)
                return True
            return False

        @activity.defn(name="gitlab.ensure_project")
        async def ensure_project(p: EnsureProject) -> ProjectRef:
            record("ensure_project")
            world.created.append(f"gitlab/{p.service}")
            return ProjectRef(project_id=1, path=f"demo/{p.service}", http_url="http://g/x.git", created=True)

        @activity.defn(name="gitlab.ensure_hook")
        async def ensure_hook(h: EnsureHook) -> str:
            record("ensure_hook")
            return "added"

        @activity.defn(name="kubernetes.record_release")
        async def record_release(r: RecordRelease) -> bool:
            record("record_release")
            world.recorded.append(r)
            return True

        @activity.defn(name="gitlab.remove_hook")
        async def remove_hook(h: EnsureHook) -> bool:
            record("remove_hook")
            return True

        @activity.defn(name="gitlab.delete_project_if_created")
        async def delete_project_if_created(u: UndoCreated) -> bool:
            record("delete_project_if_created")
            return world._remove(f"gitlab/{u.service}")

        @activity.defn(name="gitlab.existing_service")
        async def existing_service(service: str) -> ExistingService | None:
            record("existing_service")
            return world.existing

        @activity.defn(name="gitlab.revert_files")
        async def revert_files(u: UndoCreated) -> bool:
            record("revert_files")
            return False  # the fake project is always created by the run

        @activity.defn(name="jenkins.ensure_job")
        async def ensure_job(j: EnsureJob) -> bool:
            record("ensure_job")
            world.created.append(f"jenkins/{j.service}")
            return True

        @activity.defn(name="jenkins.delete_job_if_created")
        async def delete_job_if_created(u: UndoCreated) -> bool:
            record("delete_job_if_created")
            return world._remove(f"jenkins/{u.service}")

        @activity.defn(name="istio.set_routes")
        async def set_routes(r: RouteWeights) -> RouteWeights:
            record("set_routes")
            previous = world.routes or RouteWeights(env=r.env, namespace=r.namespace, service=r.service)
            world.routes = r
            return previous

        @activity.defn(name="prometheus.verify")
        async def verify(v: VerifyRelease) -> VerifyResult:
            record("verify")
            return VerifyResult(verdict="passed")

        @activity.defn(name="notify")
        async def notify(n: Notification) -> list[str]:
            world.notes.append(n)
            return ["test"]

        # the worker's seal (activities/authority.py) is tested with the real interceptor
        @activity.defn(name="authority.seal")
        async def seal(state: CanaryState) -> CanaryState:
            return state.model_copy(update={"seal": FAKE_SEAL})

        @activity.defn(name="authority.check_seal")
        async def check_seal(state: CanaryState) -> bool:
            if state.seal != FAKE_SEAL:
                raise ApplicationError("not sealed", type="Unauthorized", non_retryable=True)
            return True

        return with_combined([environment_policy, environments, resolve_ref, read_spec, find_image, build,
                snapshot, apply_release, restore_release, wait_rollout, revision_history,
                apply_objects, record_adopted, foreign_objects, delete_if_created, ensure_project, ensure_hook, remove_hook,
                record_release,
                delete_project_if_created, existing_service, revert_files, ensure_job, delete_job_if_created, set_routes, verify,
                live_release, active_freeze, request_used,
                notify, seal, check_seal])

    def _remove(self, key: str) -> bool:
        if key in self.created:
            self.created.remove(key)
            return True
        return False
