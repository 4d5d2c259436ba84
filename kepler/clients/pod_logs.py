"""Pod logs through the Kubernetes API (official client: list pods by label, then
read_namespaced_pod_log, or its follow stream), for `kepler logs` and the log tail of a
failed cronjob run. Read-only: no workflow, no lock; what it shows comes straight from
the cluster."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

STARTED_PHASES = ("Running", "Succeeded", "Failed")


@dataclass(frozen=True)
class LogLine:
    pod: str
    text: str


def service_pods(core: k8s.CoreV1Api, namespace: str, service: str, version: str) -> list[k8s.V1Pod]:
    """The pods of one version (stable or canary) of a service, oldest first."""
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={service},version={version}",
                                        _request_timeout=15).items
    except ApiException as e:
        if e.status == 404:
            return []
        raise
    return sorted(pods, key=lambda p: (p.metadata.creation_timestamp, p.metadata.name))


def read(core: k8s.CoreV1Api, namespace: str, pod: str, container: str | None,
         since_seconds: int | None, tail: int | None, timeout: float = 30) -> list[LogLine]:
    """The pod's log (of its only container when `container` is None), at most `tail`
    lines of the last `since_seconds`."""
    text = core.read_namespaced_pod_log(pod, namespace, container=container,
                                        since_seconds=since_seconds, tail_lines=tail,
                                        _request_timeout=timeout)
    return [LogLine(pod, ln) for ln in str(text).splitlines()]


def follow(core: k8s.CoreV1Api, namespace: str, pods: list[tuple[str, str]],
           since_seconds: int | None, tail: int | None,
           problems: list[str]) -> Iterator[LogLine]:
    """Lines of every (pod, container) as they come, until every stream ends."""
    lines: queue.Queue[LogLine | None] = queue.Queue(maxsize=10000)

    def pump(pod: str, container: str) -> None:
        try:
            resp = core.read_namespaced_pod_log(pod, namespace, container=container, follow=True,
                                                since_seconds=since_seconds, tail_lines=tail,
                                                _preload_content=False)
            buffer = b""
            for chunk in resp.stream(1024):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for ln in complete:
                    lines.put(LogLine(pod, ln.decode(errors="replace")))
            if buffer:
                lines.put(LogLine(pod, buffer.decode(errors="replace")))
        except ApiException as e:
            problems.append(f"{pod}: {reason(e)}")
        except Exception as e:  # noqa: BLE001 - a broken stream ends that pod's lines only
            problems.append(f"{pod}: {type(e).__name__}: {e}")
        finally:
            lines.put(None)

    threads = [threading.Thread(target=pump, args=pc, daemon=True) for pc in pods]
    for t in threads:
        t.start()
    open_streams = len(threads)
    while open_streams:
        item = lines.get()
        if item is None:
            open_streams -= 1
        else:
            yield item


def reason(e: ApiException) -> str:
    import json

    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError):
        return f"HTTP {e.status}: {e.reason}"
