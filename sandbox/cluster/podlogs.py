"""Pod logs on the real cluster: the stand-in's simulated lines (sandbox/kubernetes/logs.py),
written as container log files that kwok serves as the kubelet.

kwok v0.8.0 answers the kubelet's containerLogs endpoint (which the API server's `pods/log`
proxies to: `kubectl logs`, read_namespaced_pod_log) from the file a kwok `Logs` object names for
the pod's container; RealCluster runs kwok with `--enable-crds=Logs`, so those objects live in the
API server. Once a container has started, the bridge creates the pod's Logs object (owned by the
pod, so the garbage collector removes it with the pod) naming one file per container, and every
second appends the lines the simulation has produced since, in the CRI log format the kubelet
reads (`<RFC 3339 time> stdout F <line>`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from sandbox.kubernetes.logs import lines_for

from .kubeapi import ApiStatusError, KubeApi

log = logging.getLogger(__name__)

LOGS_API = "/apis/kwok.x-k8s.io/v1alpha1"
STARTED = ("running", "crash", "unready", "succeeded", "failed")


def cri_line(ts: float, text: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e9):09d}Z"
    return f"{stamp} stdout F {text}\n"


class PodLogFiles:
    def __init__(self, api: KubeApi, directory: Path) -> None:
        self.api = api
        self.directory = directory
        self.enabled = True  # False once the cluster turns out to have no Logs API
        self._written: dict[str, dict[str, float]] = {}  # pod uid -> container -> last line's time
        self._announced: set[str] = set()  # pod uids whose Logs object exists

    def _dir(self, pod: dict[str, Any]) -> Path:
        meta = pod["metadata"]
        return self.directory / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"

    async def write(self, pod: dict[str, Any], sim: dict[str, Any], now: float) -> None:
        """Append what the pod's containers have logged up to `now`; announce the files to kwok
        the first time."""
        if not self.enabled or sim.get("state") not in STARTED:
            return
        uid = pod["metadata"]["uid"]
        written = self._written.setdefault(uid, {})
        folder = self._dir(pod)
        folder.mkdir(parents=True, exist_ok=True)
        for container in pod["spec"].get("containers") or []:
            last = written.get(container["name"], 0.0)
            view = sim
            if last and sim.get("state") == "running" and sim.get("job") is None:
                # a serving pod logs a line a second from its start: ask only for the new ones
                view = {**sim, "started": max(float(sim["started"]), last)}
            new = [(ts, text) for ts, text in lines_for(pod, container, view, now) if ts > last]
            path = folder / f"{container['name']}.log"
            with path.open("a") as f:
                f.writelines(cri_line(ts, text) for ts, text in new)
            if new:
                written[container["name"]] = new[-1][0]
        if uid not in self._announced:
            await self._announce(pod, folder)

    async def _announce(self, pod: dict[str, Any], folder: Path) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}],
            },
            "spec": {"logs": [{"containers": [c["name"]], "logsFile": str(folder / f"{c['name']}.log"),
                               "follow": True} for c in pod["spec"].get("containers") or []]},
        }
        try:
            await self.api.create(f"{LOGS_API}/namespaces/{meta['namespace']}/logs", body)
        except ApiStatusError as e:
            if e.code == 404 and "could not find the requested resource" in str(e):
                log.warning("real cluster: no kwok Logs API (%s); pod logs stay empty", e)
                self.enabled = False
                return
            if e.code != 409:
                raise
        self._announced.add(meta["uid"])

    def forget(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        self._written.pop(uid, None)
        self._announced.discard(uid)
        shutil.rmtree(self._dir(pod), ignore_errors=True)
