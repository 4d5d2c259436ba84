"""Preview environments per merge request (README: Preview environments): the platform's
settings, what the GitLab webhook receiver tells a Preview workflow, and what the workflow
reads, deploys and reports. A GitLab event only wakes a preview up: what it deploys or
whether it ends is read from GitLab itself (the merge request's state and head commit)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field, field_validator

from kepler.requests import OperationRequest, Subject
from kepler.validation import Duration, EnvName, ServiceName
from kepler.workloads import Model

PREVIEW_PREFIX = "preview/"
MAX_MR_IID = 10**9
PREVIEW_ANNOTATION = "kepler.dev/preview"  # on a preview's namespace: the workflow id it is for
SYSTEM_REQUESTER = "gitlab"  # who asks for a preview: a merge request (the webhook)
NOTE_MARKER = "<!-- kepler-preview -->"  # Kepler's own note on the merge request
PREVIEW_HEADER = "x-preview"  # header mode: requests with `x-preview: mr-<iid>` reach the preview
ROUTE_PREFIX = "preview-"  # header mode: the preview's own route in the VirtualService
URL_FIELDS = {"service", "namespace", "mr", "port", "env"}


def preview_workflow_id(service: str, mr: int) -> str:
    return f"{PREVIEW_PREFIX}{service}/{mr}"


def preview_name(service: str, mr: int) -> str:
    """Header mode: the preview's Deployment, Service and route name, `<service>-mr-<iid>`."""
    return f"{service}-mr-{mr}"


def preview_route(vs_route: dict) -> bool:
    """A route a preview added to the service's VirtualService (header mode): never live."""
    return str(vs_route.get("name", "")).startswith(ROUTE_PREFIX)


def preview_namespace(service: str, env: str, mr: int) -> str:
    """The preview's own namespace: `<service>-<env>-mr-<iid>` (a DNS label, <= 63)."""
    name = f"{service}-{env}-mr-{mr}"
    if len(name) > 63:
        raise ValueError(f"preview namespace {name!r} is over 63 characters")
    return name


class PreviewSettings(Model):
    """kepler.yaml `previews:` — where merge requests get their preview, and for how long."""
    env: EnvName | None = Field(None, description=(
        "the environment previews run in (its cluster, config overrides); none: previews off. "
        "Must not require approval"))
    mode: Literal["namespace", "header"] = Field("namespace", description=(
        "namespace: each merge request's preview in a namespace of its own; header: beside "
        "the service in its environment's namespace, reached with `x-preview: mr-<iid>`"))
    ttl: Duration = Field(timedelta(hours=72), description=(
        "a preview without pushes for this long is torn down (10m-30d)"))
    max_per_service: int = Field(5, ge=1, le=50, description=(
        "previews of one service at once; the oldest idle one makes room"))
    replicas: int = Field(1, ge=1, le=5)
    url: str = Field("http://{service}.{namespace}.svc.cluster.local", max_length=300,
                     description="the preview's URL posted on the merge request; fields "
                     "{service}, {namespace}, {mr}, {port}, {env}")
    pushes_per_run: int = Field(50, ge=1, le=500, description=(
        "pushes per workflow run before continue-as-new (bounded history)"))

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=10) <= value <= timedelta(days=30):
            raise ValueError("must be between 10m and 30d")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[A-Za-z0-9{}._:/-]+", value):
            raise ValueError("must be an http(s) URL of letters, digits, {fields} and ._:/-")
        unknown = set(re.findall(r"{([^}]*)}", value)) - URL_FIELDS
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))} (known: "
                             f"{', '.join(sorted(URL_FIELDS))})")
        return value

    def url_of(self, service: str, namespace: str, mr: int, port: int) -> str:
        url = self.url.format(service=service, namespace=namespace, mr=mr, port=port, env=self.env)
        return url + (f" with the header {PREVIEW_HEADER}: mr-{mr}" if self.mode == "header" else "")


class PreviewRequest(OperationRequest):
    """Start a merge request's preview (the webhook receiver's, with signal-with-start)."""
    service: ServiceName
    mr: int = Field(ge=1, le=MAX_MR_IID, description="the merge request's iid in its project")
    requested_by: str = SYSTEM_REQUESTER

    def subject(self) -> Subject:
        return Subject(self.service, "preview", f"!{self.mr}", self.requested_by)

    def own_workflow_id(self) -> str:
        return preview_workflow_id(self.service, self.mr)


MergeRequestAction = Literal["open", "update", "reopen", "merge", "close", "approved",
                             "unapproved", "approval", "unapproval"]


class MergeRequestEvent(Model):
    """A GitLab Merge Request Hook, as the receiver passes it on: a hint to look again. The
    preview reads the merge request from GitLab before it deploys or ends anything."""
    action: MergeRequestAction | Literal["evicted", "other"] = "other"
    sha: str = Field("", pattern=r"^([0-9a-f]{40}|[0-9a-f]{64})?$")
    at: datetime | None = None


class MergeRequestQuery(Model):
    service: ServiceName
    mr: int = Field(ge=1, le=MAX_MR_IID)


class MergeRequestState(Model):
    """The merge request as GitLab says it now (activities/gitlab.py)."""
    iid: int
    state: Literal["opened", "closed", "merged", "locked"]
    sha: str = Field(pattern=r"^([0-9a-f]{40}|[0-9a-f]{64})$")
    source_branch: str = Field(max_length=255)
    title: str = Field("", max_length=255)
    author: str = Field("", max_length=255)
    same_project: bool = True  # a fork's merge request gets no preview: its code is not ours


class PreviewNote(Model):
    """Kepler's one note on a merge request, created or updated in place."""
    service: ServiceName
    mr: int = Field(ge=1, le=MAX_MR_IID)
    body: str = Field(max_length=4000)


class PreviewPolicy(Model):
    """What the platform says of one service's previews (platform.preview_policy)."""
    settings: PreviewSettings
    env: EnvName
    namespace: str
    approval_required: bool = False
    rollout_timeout: timedelta = timedelta(minutes=10)
    registry_host: str = ""
    image_repository: str = ""


class PreviewTarget(Model):
    env: EnvName
    namespace: str = Field(max_length=63)
    service: ServiceName
    mr: int = Field(ge=1, le=MAX_MR_IID)


class PreviewDeploy(Model):
    target: PreviewTarget
    manifests: list[dict] = Field(max_length=10)


class PreviewRoom(Model):
    """Make room for one more preview of `service`: at most `cap` at once."""
    service: ServiceName
    cap: int = Field(ge=1, le=50)


class PreviewState(Model):
    """What `kepler preview show` and the status query say of one preview."""
    mr: int
    env: str
    namespace: str
    url: str = ""
    title: str = ""
    source_branch: str = ""
    sha: str = ""  # the merge request's head when last read
    deployed_sha: str = ""
    image: str = ""
    pushes: int = 0
    last_push_at: datetime | None = None
    expires_at: datetime | None = None
    waiting_on: str = ""
    last_error: str = ""


class PreviewReport(Model):
    service: str
    mr: int
    outcome: str
    deployed_sha: str = ""
    pushes: int = 0
    reason: str = ""
    error: str = ""
    undone: list[str] = Field(default_factory=list)
