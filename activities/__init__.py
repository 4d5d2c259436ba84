"""Activities: all I/O, one module per external system."""

from __future__ import annotations

from typing import Any, Callable

from temporalio.client import Client

from kepler.settings import Platform, Secrets


def build(platform: Platform, secrets: Secrets,
          client: Client | None = None) -> list[Callable[..., Any]]:
    """Every activity, bound to this worker's configuration; those that ask Temporal
    (visibility, freezes, promotions) use the worker's own `client` when given."""
    from activities.alerts import AlertActivities
    from activities.authority import AuthorityActivities
    from activities.docker_build import DockerBuildActivities
    from activities.gitlab import GitLabActivities
    from activities.jenkins import JenkinsActivities
    from activities.kubernetes.cronjob import CronJobActivities
    from activities.kubernetes.hooks import HookActivities
    from activities.kubernetes.istio import IstioActivities
    from activities.kubernetes.previews import PreviewActivities
    from activities.kubernetes.scale import ScaleActivities
    from activities.kubernetes.teardown import TeardownActivities
    from activities.kubernetes.volumes import VolumeActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.notify import NotifyActivities
    from activities.temporal import TemporalActivities
    from activities.platform import PlatformActivities
    from activities.prometheus import PrometheusActivities
    from activities.promotion import PromotionActivities
    from activities.registry import RegistryActivities

    instances = [
        PlatformActivities(platform), GitLabActivities(platform, secrets),
        JenkinsActivities(platform, secrets), DockerBuildActivities(platform, secrets),
        RegistryActivities(platform, secrets),
        DeploymentActivities(platform), CronJobActivities(platform), VolumeActivities(platform),
        HookActivities(platform),
        ScaleActivities(platform), TeardownActivities(platform), IstioActivities(platform),
        PrometheusActivities(platform), NotifyActivities(platform, secrets),
        TemporalActivities(platform, client), AlertActivities(platform, client),
        PromotionActivities(platform, client), AuthorityActivities(), PreviewActivities(platform),
    ]
    return [getattr(obj, name) for obj in instances for name in dir(type(obj))
            if hasattr(getattr(type(obj), name), "__temporal_activity_definition")]
