"""Kubernetes + Istio API stand-in that simulates rollouts and traffic.

Serves, over plain http, what the official `kubernetes` client and kubectl use:
discovery (/version, /api, /apis, group versions), OpenAPI v3, and namespaced CRUD,
patch (merge, strategic merge, JSON patch), watch, label/field selectors and the
scale/status subresources for namespaces, pods, services, configmaps, secrets,
serviceaccounts, events, deployments, replicasets, HPAs, PDBs and Istio's
virtualservices/destinationrules/gateways (networking.istio.io v1 and v1beta1).

A controller loop runs rollouts (sandbox/kubernetes/rollout.py, pods.py), Jobs and
CronJobs (batch.py) and the traffic simulation (traffic.py), whose Istio-style series
are exported on `/metrics`. The Prometheus stand-in reads the same simulation through
`world.components["kubernetes"]`.

Point a client at it with `kubernetes.client.Configuration(host=world.urls["kubernetes"])`,
or kubectl with a kubeconfig whose cluster `server` is that URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sandbox.kubernetes import discovery
from sandbox.kubernetes.api import ResourceApi
from sandbox.kubernetes.batch import BatchController
from sandbox.kubernetes.images import ImageResolver
from sandbox.kubernetes.logs import PodLogs
from sandbox.kubernetes.resources import resource_for_kind
from sandbox.kubernetes.rollout import Controller
from sandbox.kubernetes.store import Store
from sandbox.kubernetes.traffic import Traffic
from sandbox.world import World

log = logging.getLogger(__name__)


@dataclass
class KubernetesSim:
    """The in-process simulation other stand-ins may read (never write)."""

    store: Store
    images: ImageResolver
    controller: Controller
    traffic: Traffic
    batch: BatchController | None = None
    _woken: asyncio.Event | None = None

    def step(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.controller.tick(now)
        if self.batch is not None:
            self.batch.tick(now)
        self.traffic.advance(now, settle=False)

    def wake(self) -> None:
        """Reconcile now, not at the next tick: a client wrote, or an image lookup the
        kubelet waits for came back (a real controller reacts to its watch at once)."""
        if self._woken is not None:
            self._woken.set()

    def _written(self, res: Any, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Start looking up the images a workload's pods will pull as soon as it is written,
        as its pods are being made, so they need not wait a tick for them."""
        template = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in template.get("containers") or ():
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                self.images.lookup(container["image"])

    async def run(self) -> None:
        self._woken = asyncio.Event()
        self.images.on_resolved = self.wake
        self.store.on_write.append(self._written)
        last_save = time.monotonic()
        while True:
            started = time.monotonic()
            self._woken.clear()
            try:
                self.step()
            except Exception:  # keep simulating; a bad object must not stop the world
                log.exception("kubernetes sandbox: reconcile failed")
            if self.store.dirty and time.monotonic() - last_save > 0.5:
                self.store.save()
                last_save = time.monotonic()
            # With hundreds of objects a reconcile takes long: keep it under a quarter of
            # the loop, so the API stays responsive (the simulation slows down instead).
            spent = time.monotonic() - started
            await asyncio.sleep(3 * spent)
            with contextlib.suppress(asyncio.TimeoutError):  # the rest of a tick, unless woken
                await asyncio.wait_for(self._woken.wait(),
                                       max(0.0, self.controller.tick_seconds - 3 * spent))


def _json(doc: dict[str, Any] | None) -> Response:
    if doc is None:
        return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {},
                             "status": "Failure", "message": "the server could not find the "
                             "requested resource", "reason": "NotFound", "code": 404},
                            status_code=404)
    return JSONResponse(doc)


class KubernetesApi:
    """The HTTP routes of one cluster: discovery, OpenAPI, the resource API, pod logs,
    the traffic metrics and the health endpoints."""

    def __init__(self, sim: KubernetesSim, host: str) -> None:
        self.sim = sim
        self.host = host
        self.api = ResourceApi(sim.store)
        self.logs = PodLogs(sim.store)

    def routes(self) -> list[Route]:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route("/version", self.version),
            Route("/api", self.core_versions),
            Route("/api/v1", self.core_resources),
            Route("/apis", self.groups),
            Route("/apis/{group}", self.group),
            Route("/apis/{group}/{version}", self.group_resources),
            Route("/openapi/v3", self.openapi_root),
            Route("/openapi/v3/{path:path}", self.openapi_doc),
            Route("/api/v1/namespaces/{namespace}/pods/{name}/log", self.logs.handle),
            Route("/api/v1/{rest:path}", self.core, methods=methods),
            Route("/apis/{group}/{version}/{rest:path}", self.grouped, methods=methods),
            Route("/metrics", self.metrics),
            Route("/healthz", self.healthz),
            Route("/readyz", self.healthz),
            Route("/livez", self.healthz),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        """Run the simulation while the app serves; save the store when it stops."""
        task = asyncio.create_task(self.sim.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.sim.images.aclose()
            self.sim.store.save()

    # ---- discovery and OpenAPI ------------------------------------------------------------

    async def version(self, _: Request) -> Response:
        return JSONResponse(discovery.KUBE_VERSION)

    async def core_versions(self, request: Request) -> Response:
        return JSONResponse(discovery.api_versions(request.headers.get("host", self.host)))

    async def groups(self, _: Request) -> Response:
        return JSONResponse(discovery.api_group_list())

    async def core_resources(self, _: Request) -> Response:
        return _json(discovery.api_resource_list("", "v1"))

    async def group(self, request: Request) -> Response:
        return _json(discovery.api_group(request.path_params["group"]))

    async def group_resources(self, request: Request) -> Response:
        p = request.path_params
        return _json(discovery.api_resource_list(p["group"], p["version"]))

    async def openapi_root(self, _: Request) -> Response:
        return JSONResponse(discovery.openapi_v3_root())

    async def openapi_doc(self, request: Request) -> Response:
        parts = request.path_params["path"].strip("/").split("/")
        doc = None
        if parts[0] == "api" and len(parts) == 2:
            doc = discovery.openapi_v3_document("", parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = discovery.openapi_v3_document(parts[1], parts[2])
        return _json(doc)

    # ---- resources, metrics, health -------------------------------------------------------

    async def core(self, request: Request) -> Response:
        return self._woke(request, await self.api.handle(request, "", "v1",
                                                         request.path_params["rest"]))

    async def grouped(self, request: Request) -> Response:
        p = request.path_params
        return self._woke(request, await self.api.handle(request, p["group"], p["version"],
                                                         p["rest"]))

    def _woke(self, request: Request, response: Response) -> Response:
        if request.method != "GET":
            self.sim.wake()
        return response

    async def metrics(self, _: Request) -> Response:
        return PlainTextResponse(self.sim.traffic.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz(self, _: Request) -> Response:
        return PlainTextResponse("ok")


def create_app(world: World, name: str = "kubernetes") -> Starlette:
    """One cluster. A second one (SandboxSettings.clusters) is another app with its own
    `name`, store, state folder and simulation; the Prometheus stand-in reads the first."""
    settings = world.settings
    store = Store(world.state_path(name), world.audits[name])
    images = ImageResolver()
    controller = Controller(store, images, settings)
    traffic = Traffic(store, controller.kubelet, settings.traffic_rps)
    sim = KubernetesSim(store, images, controller, traffic,
                        BatchController(store, images, settings.seconds_per_replica))
    world.components[name] = sim
    cluster = KubernetesApi(sim, settings.host)
    _ensure_default_namespaces(store)
    return Starlette(routes=cluster.routes(), lifespan=cluster.lifespan)


def _ensure_default_namespaces(store: Store) -> None:
    namespaces = resource_for_kind("Namespace")
    for name in ("default", "kube-system", "kube-public", "istio-system"):
        if store.find(namespaces, None, name) is None:
            store.create(namespaces, {"metadata": {"name": name}}, actor="sandbox",
                         audited=False)
    store.save()
