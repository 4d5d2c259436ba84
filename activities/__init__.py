"""Activities: all I/O, one module per external system."""

from __future__ import annotations

from typing import Any, Callable

from kepler.settings import Platform, Secrets


def build(platform: Platform, secrets: Secrets) -> list[Callable[..., Any]]:
    """Every activity, bound to this worker's configuration."""
    from activities.docker_build import DockerBuildActivities
    from activities.alerts import AlertActivities
    from activities.k8s_workloads import WorkloadActivities
    from activities.gitlab import GitLabActivities
    from activities.istio import IstioActivities
    from activities.jenkins import JenkinsActivities
    from activities.kubernetes import KubernetesActivities
    from activities.k8s_scale import ScaleActivities
    from activities.k8s_teardown import TeardownActivities
    from activities.notify import NotifyActivities
    from activities.operations import OperationsActivities
    from activities.platform import PlatformActivities
    from activities.prometheus import PrometheusActivities
    from activities.registry import RegistryActivities

    instances = [
        PlatformActivities(platform), GitLabActivities(platform, secrets),
        JenkinsActivities(platform, secrets), DockerBuildActivities(platform, secrets),
        RegistryActivities(platform, secrets),
        KubernetesActivities(platform), IstioActivities(platform), PrometheusActivities(platform),
        NotifyActivities(platform, secrets),
        TeardownActivities(platform), OperationsActivities(platform), ScaleActivities(platform),
    ]
    instances += [WorkloadActivities(platform), AlertActivities(platform)]
    return [getattr(obj, name) for obj in instances for name in dir(type(obj))
            if hasattr(getattr(type(obj), name), "__temporal_activity_definition")]
