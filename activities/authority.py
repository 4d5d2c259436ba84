"""Authority derived, never carried: what every activity call is checked against before it
runs, in one place (a worker interceptor), from sources nobody outside the worker can write.

- **The calling run, as Temporal knows it.** Anyone who may start workflows may also poll
  a task queue of their own and run a workflow there that schedules Kepler's activities on
  Kepler's queue. So before any activity runs, the worker describes the run that scheduled
  it (cached: a run's type and queue never change) and refuses it unless it is a Kepler
  workflow type running on this worker's own task queue, that is, Kepler's own code.
- **Namespaces come from the worker's kepler.yaml.** An argument that names an environment,
  a service and a namespace must name the namespace that environment's pattern gives the
  service; a policy picked by one environment never writes into another's namespace.
- **Runs are the run's own.** A `run_id` an argument claims (what a create marks as made
  by it, what an undo deletes) must be the calling run or its first run.
- **What a run carries is sealed.** Snapshots (what to put back), a decommission's
  footprint, records of adopted objects and a canary's continue-as-new state are sealed
  by the worker when an activity returns them (an HMAC, with a key only workers hold, over
  the content, the workflow id and the run chain's first run); an activity given one back
  refuses it unless the seal is this chain's. So a restore puts back only what that same
  run snapshotted, and a canary continues only from its own state.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.errors import non_retryable, retryable
from kepler.canary import CanaryState
from kepler.clients.temporal import execution_info
from kepler.contracts import PREVIEW
from kepler.previews import PREVIEW_PREFIX, preview_namespace
from kepler.decommission import Footprint
from kepler.settings import Platform, Secrets, home_secret
from kepler.payloads import AdoptedObject, ReleaseSnapshot

log = logging.getLogger("kepler.authority")

SEALED = (ReleaseSnapshot, AdoptedObject, Footprint, CanaryState)  # carry a `seal` field
KNOWN_RUNS = 10_000  # described runs kept in memory
SEAL_KEY_BYTES = 32


@dataclass(frozen=True)
class CallingRun:
    """The run an activity belongs to, as the Temporal server describes it."""
    workflow_id: str
    run_id: str
    first_run_id: str
    workflow_type: str
    task_queue: str
    parent: tuple[str, str] = ("", "")  # the parent's workflow id and run (a train's member)


_current: contextvars.ContextVar[CallingRun | None] = contextvars.ContextVar(
    "kepler_calling_run", default=None)


def calling_run() -> CallingRun | None:
    """The checked run of the activity running now (None outside the worker's interceptor,
    e.g. an activity called straight from a test)."""
    return _current.get()


def unauthorized(why: str) -> Exception:
    return non_retryable("Unauthorized", f"refused by the worker: {why}")


def seal_key(secrets_: Secrets) -> bytes:
    """KEPLER_SEAL_KEY (every worker of a platform the same), else a key kept in the Kepler
    home (made once: one machine's workers share it)."""
    if secrets_.seal_key is not None:
        return secrets_.seal_key.get_secret_value().encode()
    return home_secret("seal", SEAL_KEY_BYTES)


class Seal:
    """HMAC-SHA256 of a model's content, bound to a workflow id and its first run."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def of(self, model: BaseModel, run: CallingRun) -> str:
        content = json.dumps(model.model_dump(mode="json", exclude={"seal"}), sort_keys=True,
                             separators=(",", ":"))
        message = f"{run.workflow_id}\n{run.first_run_id}\n{type(model).__name__}\n{content}"
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def check(self, model: BaseModel, run: CallingRun) -> None:
        given = getattr(model, "seal", "")
        if not given or not hmac.compare_digest(given, self.of(model, run)):
            raise unauthorized(f"this {type(model).__name__} was not made by run "
                               f"{run.first_run_id} of {run.workflow_id}: only what a run "
                               "recorded itself is put back or carried on")


def derived_namespace(platform: Platform, env: str, service: str) -> str:
    config = platform.environments.get(env)
    if config is None:
        raise unauthorized(f"environment {env!r} is not in the worker's kepler.yaml")
    return config.namespace_for(service, env)


def preview_of(run: CallingRun) -> tuple[str, int] | None:
    """(service, merge request) of a Preview run, from its workflow id as Temporal knows it."""
    if run.workflow_type != PREVIEW.workflow:
        return None
    parts = run.workflow_id.split("/")
    if len(parts) != 3 or f"{parts[0]}/" != PREVIEW_PREFIX or not re.fullmatch(r"[1-9][0-9]{0,9}",
                                                                                parts[2]):
        raise unauthorized(f"{run.workflow_id}: not a preview's id (preview/<service>/<iid>)")
    return parts[1], int(parts[2])


def check_namespaces(platform: Platform, value: Any, depth: int = 0,
                     preview: tuple[str, int] | None = None) -> None:
    """Every model in `value` naming env, service and namespace names the derived namespace
    (for a Preview run's own service: its own namespace in the previews' environment);
    a batch of manifests (ApplyObjects) stays in its services' namespaces."""
    if depth > 4 or not isinstance(value, BaseModel):
        return
    data = value.__dict__
    if all(isinstance(data.get(k), str) for k in ("env", "service", "namespace")):
        named = data["name"] if data.get("kind") == "Namespace" else data["namespace"]
        if named or data["env"]:
            want = derived_namespace(platform, data["env"], data["service"])
            if preview is not None and preview[0] == data["service"]:
                if platform.previews.mode == "namespace":
                    want = preview_namespace(preview[0], platform.previews.env or "", preview[1])
                if data["env"] != platform.previews.env:
                    raise unauthorized(f"a preview runs in {platform.previews.env}, not "
                                       f"{data['env']!r}")
            if named != want:
                raise unauthorized(f"{type(value).__name__} names namespace {named!r}; "
                                   f"{data['service']} lives in {want!r} in {data['env']}")
    if isinstance(data.get("env"), str) and isinstance(data.get("manifests"), list):
        _check_manifests(platform, data["env"], data["manifests"])
    for name, field in data.items():
        if isinstance(field, BaseModel) and name != "authorization":
            check_namespaces(platform, field, depth + 1, preview)


def _check_manifests(platform: Platform, env: str, manifests: list[dict[str, Any]]) -> None:
    """One service's objects (its `app` label), all in that service's namespace."""
    metas = [m.get("metadata") or {} for m in manifests]
    services = {(meta.get("labels") or {}).get("app") for meta in metas} - {None}
    if len(services) != 1:
        raise unauthorized(f"objects of one service at a time, not {sorted(services) or 'none'}")
    service = services.pop()
    want = derived_namespace(platform, env, service)
    for m, meta in zip(manifests, metas):
        ns = meta.get("name") if m.get("kind") == "Namespace" else meta.get("namespace")
        if ns != want:
            raise unauthorized(f"{m.get('kind')} {ns}/{meta.get('name')}: {service} lives in "
                               f"{want!r} in {env}")


class Authority:
    """The worker's checks of who calls its activities (see the module's doc)."""

    def __init__(self, platform: Platform, client: Client, task_queue: str,
                 workflow_types: Iterable[str], key: bytes) -> None:
        self.platform, self.client, self.task_queue = platform, client, task_queue
        self.workflow_types = frozenset(workflow_types)
        self.seal = Seal(key)
        self._runs: OrderedDict[tuple[str, str], CallingRun] = OrderedDict()

    async def calling_run(self, info: activity.Info) -> CallingRun:
        key = (info.workflow_id or "", info.workflow_run_id or "")
        if not all(key):
            raise unauthorized("an activity is only run for a workflow")
        run = self._runs.get(key)
        if run is None:
            run = await self._describe(*key)
            self._runs[key] = run
            while len(self._runs) > KNOWN_RUNS:
                self._runs.popitem(last=False)
        if run.workflow_type not in self.workflow_types or run.task_queue != self.task_queue:
            raise unauthorized(
                f"{info.activity_type} was scheduled by run {run.run_id} of {run.workflow_id}, "
                f"a {run.workflow_type} on task queue {run.task_queue!r}: only Kepler's own "
                f"workflows on {self.task_queue!r} may call Kepler's activities")
        return run

    async def _describe(self, workflow_id: str, run_id: str) -> CallingRun:
        try:
            execution = await execution_info(self.client, workflow_id, run_id)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise unauthorized(f"run {run_id} of {workflow_id} is unknown to Temporal") from None
            raise retryable(f"describe the calling run: {e.message}") from None
        parent = execution.parent_execution
        return CallingRun(workflow_id=workflow_id, run_id=run_id,
                          first_run_id=execution.first_run_id or run_id,
                          workflow_type=execution.type.name, task_queue=execution.task_queue,
                          parent=(parent.workflow_id, parent.run_id))

    def check_arguments(self, args: Iterable[Any], run: CallingRun) -> None:
        preview = preview_of(run)
        for arg in args:
            check_namespaces(self.platform, arg, preview=preview)
            if isinstance(arg, SEALED):
                self.seal.check(arg, run)
            claimed = getattr(arg, "run_id", None) if isinstance(arg, BaseModel) else None
            if isinstance(claimed, str) and claimed not in (run.run_id, run.first_run_id):
                raise unauthorized(f"{type(arg).__name__} claims run {claimed!r}; it comes from "
                                   f"run {run.run_id} of {run.workflow_id}")

    def sealed(self, result: Any, run: CallingRun) -> Any:
        if isinstance(result, SEALED):
            result.seal = self.seal.of(result, run)
        elif isinstance(result, list):
            for item in result:
                if isinstance(item, SEALED):
                    item.seal = self.seal.of(item, run)
        return result


class AuthorityInterceptor(Interceptor):
    """Wraps every activity of the worker in `Authority`'s checks."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CheckedActivity(next, self.authority)


class _CheckedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, authority: Authority) -> None:
        super().__init__(next)
        self.authority = authority

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        run = await self.authority.calling_run(activity.info())
        self.authority.check_arguments(input.args, run)
        token = _current.set(run)
        try:
            result = await super().execute_activity(input)
        finally:
            _current.reset(token)
        return self.authority.sealed(result, run)


def authority_for(platform: Platform, secrets_: Secrets, client: Client, task_queue: str,
                  workflow_types: Iterable[str]) -> AuthorityInterceptor:
    return AuthorityInterceptor(Authority(platform, client, task_queue, workflow_types,
                                          seal_key(secrets_)))


class AuthorityActivities:
    """A canary's continue-as-new state passes through these: the interceptor seals what
    `seal` returns and checks what `check_seal` is given (their bodies do nothing else)."""

    @activity.defn(name="authority.seal")
    async def seal(self, state: CanaryState) -> CanaryState:
        return state

    @activity.defn(name="authority.check_seal")
    async def check_seal(self, state: CanaryState) -> bool:
        if calling_run() is None:  # only the worker's interceptor can vouch for a seal
            raise unauthorized("no calling run was checked")
        return True
