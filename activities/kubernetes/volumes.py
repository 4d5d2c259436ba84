"""Kubernetes volumes: check that the claims and ConfigMaps a service mounts exist
(Kepler binds storage, never creates it)."""

from __future__ import annotations

from temporalio import activity

from activities.errors import non_retryable
from activities.kubernetes.client import ClusterActivities
from kepler.jobs import VolumeCheck


class VolumeActivities(ClusterActivities):
    @activity.defn(name="kubernetes.check_volumes")
    def check_volumes(self, req: VolumeCheck) -> list[str]:
        """Every claim and ConfigMap the spec mounts exists in the namespace; otherwise
        non-retryable, naming each missing one (Kepler binds storage, never creates it)."""
        cluster = self.clusters(req.env)
        missing = [f"PersistentVolumeClaim {name!r}" for name in req.claims
                   if cluster.get("PersistentVolumeClaim", req.namespace, name) is None]
        missing += [f"ConfigMap {name!r}" for name in req.config_maps
                    if cluster.get("ConfigMap", req.namespace, name) is None]
        if missing:
            raise non_retryable("NotFound", f"volumes: {', '.join(missing)} not found in namespace "
                                f"{req.namespace!r} ({req.env}): create "
                                f"{'it' if len(missing) == 1 else 'them'} first, or fix the spec")
        return [f"{req.env}: {n}" for n in req.claims + req.config_maps]
