"""The platform's own configuration, read by the worker from its kepler.yaml.

Approval policy comes from here, never from a request or a service's repository,
so nobody can waive their own approval."""

from __future__ import annotations

from temporalio import activity

from activities.errors import non_retryable
from kepler import naming
from kepler.identity import AllowedSigners
from kepler.settings import ConfigError, Platform
from kepler.payloads import EnvironmentPolicy, PolicyQuery
from kepler.previews import PreviewSettings


def signers_of(platform: Platform) -> AllowedSigners:
    """The allowed signers now; a broken file fails the operation, never lets it through."""
    try:
        return platform.signers()
    except ConfigError as e:
        raise non_retryable("InvalidConfig", str(e)) from None


def environment_policy_of(platform: Platform, query: PolicyQuery) -> EnvironmentPolicy:
    """The environment's policy for the service, from the worker's kepler.yaml."""
    env = platform.environments.get(query.env)
    if env is None:
        known = ", ".join(sorted(platform.environments))
        raise non_retryable("InvalidInput", f"env: unknown environment {query.env!r} "
                            f"(configured: {known})")
    return EnvironmentPolicy(
        env=query.env, namespace=env.namespace_for(query.service, query.env),
        approval=env.approval, rollback_approval=env.rollback_approval, bounds=env.bounds,
        bake_time=env.bake_time, rollout_timeout=env.rollout_timeout,
        verify_with_prometheus=env.verify_with_prometheus, verify_no_data=env.verify_no_data,
        builder=platform.builder, registry_host=platform.registry.host,
        image_repository=naming.image_repository(platform.gitlab.group, query.service),
        signers=signers_of(platform), admins=list(platform.identity.admins),
        promotion=platform.promotion.get(query.env),
        auto_promote_to=[target for target, path in platform.promotion.items()
                         if path.source == query.env and path.auto],
        freeze=platform.freeze.get(query.env),
    )


class PlatformActivities:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    @activity.defn(name="platform.environment_policy")
    def environment_policy(self, query: PolicyQuery) -> EnvironmentPolicy:
        return environment_policy_of(self.platform, query)

    @activity.defn(name="platform.signers")
    def signers(self) -> AllowedSigners:
        """Who may sign now (a run reads them again for a passkey enrolled after it started)."""
        return signers_of(self.platform)

    @activity.defn(name="platform.environments")
    def environments(self) -> list[str]:
        return sorted(self.platform.environments)

    @activity.defn(name="platform.preview_settings")
    def preview_settings(self) -> PreviewSettings:
        """Where previews run (kepler.yaml `previews:`); refused when previews are off."""
        if self.platform.previews.env is None:
            raise non_retryable("InvalidInput", "previews.env: previews are off in kepler.yaml")
        return self.platform.previews
