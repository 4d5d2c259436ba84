"""Platform configuration (`kepler.yaml`) and secrets (environment only).

`load_platform()` validates the file at start; each problem is reported with
the file, the line and the field, e.g.
`kepler.yaml:14: environments.prod.approval.min_approvals: must be >= 1`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kepler.alerts import AlertsConfig
from kepler.freeze import EnvironmentFreeze
from kepler.promotion import AutoPromotionConfig, PromotionPath
from kepler.previews import PreviewSettings
from kepler import yamlio
from kepler.models import Model
from kepler.notifications import NotificationsConfig
from kepler.identity_settings import (  # noqa: F401 (kepler_home and ConfigError: re-exported)
    ConfigError, ConsoleConfig, IdentityConfig, home_secret, kepler_home,
)
from kepler.validation import Duration, EnvName, Quantity, UserName, describe_validation_error

if TYPE_CHECKING:
    from kepler.identity import AllowedSigners

DEFAULT_CONFIG = "kepler.yaml"


class TemporalConfig(Model):
    """Where Temporal is, and how to reach it safely. Whoever can reach the frontend can
    start workflows and send updates: restrict it (mTLS or API keys, network policy) even
    though Kepler's approvals hold without trusting it (README: Deploying Kepler)."""
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "kepler"
    ui_url: str = "http://127.0.0.1:8233"
    deployment_name: str = Field("kepler", pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description=(
        "the Worker Deployment a worker started with a build id (KEPLER_BUILD_ID) joins"))
    tls: bool = Field(False, description="connect with TLS (implied by a certificate or API key)")
    server_ca: str | None = Field(None, description="PEM file of the CA that signed the server")
    server_name: str | None = Field(None, description="the server's name in its certificate")
    client_cert: str | None = Field(None, description="PEM client certificate (mTLS)")
    client_key: str | None = Field(None, description="PEM client private key (mTLS)")
    api_key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]{0,63}$", description=(
        "name of the environment variable holding an API key (never the key itself)"))

    @model_validator(mode="after")
    def _pair(self) -> "TemporalConfig":
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together (mTLS)")
        return self

    def connect_options(self) -> dict[str, Any]:
        """TLS and API key options for temporalio's Client.connect; ConfigError naming the
        field when a file or the key cannot be read."""
        from temporalio.service import TLSConfig

        def read(field: str) -> bytes | None:
            value = getattr(self, field)
            if value is None:
                return None
            try:
                return Path(value).expanduser().read_bytes()
            except OSError as e:
                raise ConfigError(f"temporal.{field}: cannot read {value}: {e.strerror}") from None

        api_key = None
        if self.api_key_env:
            api_key = os.environ.get(self.api_key_env)
            if not api_key:
                raise ConfigError(f"temporal.api_key_env: {self.api_key_env} is not set")
        certs = {k: read(k) for k in ("server_ca", "client_cert", "client_key")}
        tls: Any = False
        if self.tls or api_key or any(certs.values()):
            tls = TLSConfig(server_root_ca_cert=certs["server_ca"], domain=self.server_name,
                            client_cert=certs["client_cert"], client_private_key=certs["client_key"])
        return {"tls": tls, "api_key": api_key}


class ApprovalPolicy(Model):
    required: bool = False
    approvers: list[UserName] = Field(default_factory=list)
    min_approvals: int = Field(1, ge=1, le=10)
    timeout: Duration = timedelta(hours=24)
    remind_every: Duration = timedelta(hours=4)
    valid_for: Duration = Field(timedelta(days=7), description=(
        "how long a signed approval lets its change through: one older than this is refused "
        "at the gate and where the change is applied (a canary may not last longer)"))

    @model_validator(mode="after")
    def _enough_approvers(self) -> "ApprovalPolicy":
        if self.required and len(self.approvers) < self.min_approvals:
            raise ValueError("approvers must list at least min_approvals people when required")
        if self.valid_for < self.timeout:
            raise ValueError("valid_for must be at least timeout: a first approval must not "
                             "expire while the gate still waits for the last")
        return self


class ClusterConfig(Model):
    server: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    token_env: str | None = Field(None, description="name of the env var holding the bearer token")
    verify_tls: bool = True

    @model_validator(mode="after")
    def _one_way(self) -> "ClusterConfig":
        if not self.server and not self.context:
            raise ValueError("a cluster needs a server URL or a kubeconfig context")
        return self


class Bounds(Model):
    max_replicas: int = Field(20, ge=0, le=1000)
    max_cpu: str = "4"
    max_memory: str = "8Gi"
    # the least `kepler scale|resources` may set (a typo or an attack must not take a
    # service to 0 pods or 1Mi of memory); a release's own spec is bounded above only
    min_replicas: int = Field(1, ge=0, le=1000)
    min_cpu: Quantity = "10m"
    min_memory: Quantity = "32Mi"

    @model_validator(mode="after")
    def _min_below_max(self) -> "Bounds":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas: {self.min_replicas} is over max_replicas "
                             f"{self.max_replicas}")
        return self


class EnvironmentConfig(Model):
    cluster: ClusterConfig
    namespace: str = Field("{service}-{env}", description="pattern; {service} and {env} expand")
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    rollback_approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    bounds: Bounds = Field(default_factory=Bounds)
    bake_time: Duration = timedelta(seconds=0)
    rollout_timeout: Duration = timedelta(minutes=10)
    verify_with_prometheus: bool = False
    verify_no_data: Literal["fail", "skip"] = Field("fail", description=(
        "a release's verification when Prometheus has no data for it: fail (roll back) or "
        "skip (pass, noted in its status)"))

    def namespace_for(self, service: str, env: str) -> str:
        return self.namespace.format(service=service, env=env)


class GitLabConfig(Model):
    url: str
    group: str = "demo"
    templates_group: str = "kepler-templates"
    webhook_url: str | None = None


class JenkinsConfig(Model):
    url: str
    user: str = "kepler"


class RegistryConfig(Model):
    url: str = Field(description="how Kepler reaches the registry API")
    host: str = Field(description="how image references name it, e.g. registry.example.com")
    username: str | None = None


class PrometheusConfig(Model):
    url: str


class DockerBuilderConfig(Model):
    """The local Docker builder (`builder: docker`): which engine, and how RUN steps reach
    the network. The registry must be reachable (and, for plain http, listed in the
    engine's --insecure-registry) from the engine."""
    host: str | None = Field(None, description="e.g. unix:///var/run/docker.sock; default DOCKER_HOST")
    network_mode: str | None = Field(None, description="network for RUN steps, e.g. none or host")
    timeout_s: int = Field(600, ge=10, le=86400)


class ChatOpsConfig(Model):
    """The Slack chat-ops endpoint: who is who, and where replies may be posted."""
    users: dict[str, UserName] = Field(default_factory=dict,
                                       description="Slack user id -> Kepler identity")
    response_url_prefix: str = Field("https://hooks.slack.com/",
                                     description="only post follow-ups to response_urls under this")
    signing_key: str | None = Field(None, description=(
        "the bot's own key, listed as kepler-delegate in identity.allowed_signers: it signs "
        "for the Slack user it verified (relative: inside the Kepler home)"))


class DecommissionPolicy(Model):
    """Decommission always needs approval. Approvers default to the union of every
    environment's approval approvers."""
    approvers: list[UserName] = Field(default_factory=list)
    min_approvals: int = Field(1, ge=1, le=10)
    timeout: Duration = timedelta(hours=24)
    remind_every: Duration = timedelta(hours=4)
    min_soak: Duration = Field(timedelta(minutes=1), description=(
        "the shortest soak a decommission may ask for: the time anyone has to restore"))
    delete_namespaces: bool = Field(False, description=(
        "phase 2 deletes a service's namespace when Kepler created it and nothing else "
        "lives there; off, such a namespace is kept (and the report says so). Needs the "
        "opt-in role deploy/kubernetes/base/rbac-namespace-cleanup.yaml (it lists Secrets "
        "and deletes namespaces)"))

    def soak_problem(self, soak: timedelta) -> str:
        """Why `soak` is refused, or ''."""
        if soak < self.min_soak:
            return (f"soak: {soak} is under the platform's minimum of {self.min_soak} "
                    "(decommission.min_soak in kepler.yaml)")
        return ""


class Platform(Model):
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    builder: Literal["jenkins", "docker"] = "jenkins"
    gitlab: GitLabConfig
    jenkins: JenkinsConfig
    docker: DockerBuilderConfig = Field(default_factory=DockerBuilderConfig)
    registry: RegistryConfig
    prometheus: PrometheusConfig | None = None
    environments: dict[EnvName, EnvironmentConfig]
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    chatops: ChatOpsConfig = Field(default_factory=ChatOpsConfig)
    decommission: DecommissionPolicy = Field(default_factory=DecommissionPolicy)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    promotion: dict[EnvName, PromotionPath] = Field(default_factory=dict, description=(
        "per environment: the environment its releases are promoted from"))
    auto_promotion: AutoPromotionConfig = Field(default_factory=AutoPromotionConfig)
    freeze: dict[EnvName, EnvironmentFreeze] = Field(default_factory=dict, description=(
        "per environment: its freeze windows (README: Freeze windows)"))
    previews: PreviewSettings = Field(default_factory=PreviewSettings, description=(
        "preview environments per merge request (README: Preview environments)"))

    def signers(self) -> "AllowedSigners":
        """Who may sign what now: SSH keys, and the console's enrolled passkeys."""
        return self.identity.signers(self.console.relying_party())

    @model_validator(mode="after")
    def _has_env(self) -> "Platform":
        if not self.environments:
            raise ValueError("environments must name at least one environment")
        env = self.previews.env
        if env is not None and env not in self.environments:
            raise ValueError(f"previews.env: unknown environment {env!r}")
        if env is not None and self.environments[env].approval.required:
            raise ValueError(f"previews.env: {env} requires approval, and a preview deploys "
                             "every push unapproved: choose an environment without approval")
        for target, path in self.promotion.items():
            for what, env in (("", target), (".from", path.source)):
                if env not in self.environments:
                    raise ValueError(f"promotion.{target}{what}: unknown environment {env!r}")
            if path.source == target:
                raise ValueError(f"promotion.{target}.from: an environment is not promoted from itself")
            seen, env = {target}, path.source
            while env in self.promotion:  # staging <- prod <- staging would promote for ever
                if env in seen:
                    raise ValueError(f"promotion.{target}.from: the paths make a cycle through {env}")
                seen.add(env)
                env = self.promotion[env].source
            if path.auto and not self.auto_promotion.signing_key:
                raise ValueError(f"promotion.{target}.auto needs auto_promotion.signing_key (the "
                                 "worker signs the promotions it asks for)")
            if path.verify_with_prometheus and self.prometheus is None:
                raise ValueError(f"promotion.{target}.verify_with_prometheus needs prometheus.url")
        for env in self.freeze:
            if env not in self.environments:
                raise ValueError(f"freeze.{env}: unknown environment {env!r}")
        for name, env in self.environments.items():
            if env.verify_with_prometheus and self.prometheus is None:
                raise ValueError(f"environments.{name}.verify_with_prometheus needs prometheus.url "
                                 "(a verification with nothing to ask would pass silently)")
        return self

    def decommission_approval(self) -> ApprovalPolicy:
        """Always required; approvers from `decommission.approvers`, else every
        environment's approvers (union, in configuration order)."""
        d = self.decommission
        approvers = list(d.approvers)
        if not approvers:
            for env in self.environments.values():
                approvers += [a for a in env.approval.approvers if a not in approvers]
        return ApprovalPolicy.model_construct(required=True, approvers=approvers,
                                              min_approvals=d.min_approvals, timeout=d.timeout,
                                              remind_every=d.remind_every)

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigError(f"env: unknown environment {name!r} (configured: {known})") from None


class Secrets(BaseSettings):
    """Tokens and passwords: from the environment only, never in a payload or log."""
    model_config = SettingsConfigDict(env_prefix="KEPLER_", extra="ignore")

    gitlab_token: SecretStr = SecretStr("sandbox-gitlab-token")
    jenkins_token: SecretStr = SecretStr("sandbox-jenkins-token")
    registry_password: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    alertmanager_token: SecretStr | None = None
    smtp_password: SecretStr | None = None
    seal_key: SecretStr | None = None  # seals what runs carry (activities/authority.py)
    console_secret: SecretStr | None = None  # signs the console's session cookies
    gitlab_hook_token: SecretStr | None = None  # GitLab's X-Gitlab-Token on merge request hooks


def config_path() -> Path:
    return Path(os.environ.get("KEPLER_CONFIG", DEFAULT_CONFIG))


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of its closest parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_platform(text: str, source: str = DEFAULT_CONFIG) -> Platform:
    try:
        root = yaml.compose(text)
        data = yamlio.load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {e.problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: must be a mapping of settings")
    try:
        return Platform.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            line = _line_of(root, tuple(err["loc"]))
            loc = ".".join(str(p) for p in err["loc"]) or "(top)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}:{line}: {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_platform(path: Path | None = None) -> Platform:
    path = path or config_path()
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the platform configuration: {e.strerror}") from None
    return parse_platform(text, str(path))


__all__ = ["ConfigError", "Platform", "Secrets", "load_platform", "parse_platform",
           "describe_validation_error"]
