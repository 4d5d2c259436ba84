"""Jenkins stand-in: the REST subset python-jenkins uses, with builds that really build.

Jobs are parameterised pipelines (GIT_REF, IMAGE) whose config.xml names a GitLab
repository. The routes are the methods of `JenkinsApi`; the jobs, the queue and the
running builds are `Jenkins` (sandbox/jenkins/server.py); what a build does is
sandbox/jenkins/build.py.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.jenkins.build import parse_job_config
from sandbox.jenkins.server import Jenkins
from sandbox.world import World

VERSION = "2.462.3"
_BAD_NAME = re.compile(r"[?*/\\%!@#$^&|<>\[\]:;]")
_RUN_CLASS = "org.jenkinsci.plugins.workflow.job.WorkflowRun"
_JOB_CLASS = "org.jenkinsci.plugins.workflow.job.WorkflowJob"


def _with_version_header(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-jenkins", VERSION.encode())]
            await send(message)
        await app(scope, receive, send_with_header)
    return wrapped


def _jenkins_error(status: int, message: str) -> Response:
    return Response(f"<html><body><h1>Error</h1><p>{message}</p></body></html>", status_code=status,
                    media_type="text/html", headers={"X-Error": message})


def _not_found() -> Response:
    return _jenkins_error(404, "Not Found")


class JenkinsApi:
    """The REST routes of the stand-in, over one `Jenkins`."""

    def __init__(self, jenkins: Jenkins) -> None:
        self.jenkins = jenkins
        self.jobs = jenkins.jobs

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET"]), Route("/api/json", self.root, methods=["GET"]),
            Route("/crumbIssuer/api/json", self.crumb, methods=["GET"]),
            Route("/me/api/json", self.whoami, methods=["GET"]),
            Route("/createItem", self.create_item, methods=["POST"]),
            Route("/queue/item/{id}/api/json", self.queue_item, methods=["GET"]),
            Route("/queue/cancelItem", self.cancel_item, methods=["POST"]),
            Route("/job/{name}/api/json", self.job_info, methods=["GET"]),
            Route("/job/{name}/config.xml", self.job_config, methods=["GET", "POST"]),
            Route("/job/{name}/doDelete", self.delete_job, methods=["POST"]),
            Route("/job/{name}/buildWithParameters", self.build_with_parameters, methods=["POST"]),
            Route("/job/{name}/build", self.build_with_parameters, methods=["POST"]),
            Route("/job/{name}/{number}/api/json", self.build_info, methods=["GET"]),
            Route("/job/{name}/{number}/consoleText", self.console_text, methods=["GET"]),
            Route("/job/{name}/{number}/logText/progressiveText", self.progressive_text,
                  methods=["GET"]),
            Route("/job/{name}/{number}/stop", self.stop, methods=["POST"]),
        ]

    # ---- lookups and JSON shapes -------------------------------------------------------

    def _job(self, request: Request) -> dict[str, Any] | None:
        return self.jobs.get(request.path_params["name"])

    def _build(self, request: Request) -> tuple[str, dict[str, Any]] | None:
        """(job name, build) for /job/<name>/<number or alias>/..., or None."""
        job = self._job(request)
        if job is None:
            return None
        number = request.path_params["number"]
        finished = [b for b in job["builds"].values() if not b["building"]]
        aliases = {
            "lastBuild": list(job["builds"].values()),
            "lastCompletedBuild": finished,
            "lastSuccessfulBuild": [b for b in finished if b["result"] == "SUCCESS"],
            "lastFailedBuild": [b for b in finished if b["result"] == "FAILURE"],
        }
        if number in aliases:
            candidates = aliases[number]
            build = max(candidates, key=lambda b: b["number"]) if candidates else None
        else:
            build = job["builds"].get(number)
        return (request.path_params["name"], build) if build else None

    def _build_ref(self, name: str, build: dict[str, Any] | None) -> dict[str, Any] | None:
        if build is None:
            return None
        return {"_class": _RUN_CLASS, "number": build["number"],
                "url": self.jenkins.build_url(name, build["number"])}

    def _build_json(self, name: str, build: dict[str, Any]) -> dict[str, Any]:
        actions: list[dict[str, Any]] = [{"_class": "hudson.model.ParametersAction", "parameters": [
            {"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
            for k, v in build["params"].items()]}]
        if build["sha"]:
            actions.append({"_class": "hudson.plugins.git.util.BuildData",
                            "lastBuiltRevision": {"SHA1": build["sha"]}})
        return {"_class": _RUN_CLASS, "number": build["number"],
                "id": str(build["number"]), "url": self.jenkins.build_url(name, build["number"]),
                "displayName": f"#{build['number']}", "fullDisplayName": f"{name} #{build['number']}",
                "building": build["building"], "result": build["result"], "timestamp": build["timestamp"],
                "duration": build["duration"],
                "estimatedDuration": int(self.jenkins.settings.build_seconds * 1000),
                "queueId": build["queue_id"], "description": build["description"], "actions": actions}

    def _job_json(self, name: str, job: dict[str, Any]) -> dict[str, Any]:
        builds = sorted(job["builds"].values(), key=lambda b: -b["number"])
        finished = [b for b in builds if not b["building"]]
        last = builds[0] if builds else None
        color = "notbuilt" if last is None else {
            "SUCCESS": "blue", "FAILURE": "red", "ABORTED": "aborted"}.get(finished[0]["result"], "grey") \
            if finished else "notbuilt"
        if last and last["building"]:
            color += "_anime"
        waiting = [i for i in self.jenkins.state.data["queue"].values()
                   if i["job"] == name and i["state"] == "waiting"]
        ref = self._build_ref
        return {
            "_class": _JOB_CLASS, "name": name, "fullName": name,
            "displayName": name, "url": self.jenkins.job_url(name), "buildable": True, "color": color,
            "description": job["description"], "nextBuildNumber": job["next_build"],
            "builds": [ref(name, b) for b in builds], "inQueue": bool(waiting),
            "queueItem": {"id": waiting[0]["id"]} if waiting else None,
            "lastBuild": ref(name, last),
            "lastCompletedBuild": ref(name, finished[0] if finished else None),
            "lastSuccessfulBuild": ref(name, next((b for b in finished if b["result"] == "SUCCESS"), None)),
            "lastFailedBuild": ref(name, next((b for b in finished if b["result"] == "FAILURE"), None)),
            "property": [{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": [
                {"_class": "hudson.model.StringParameterDefinition", "name": p["name"], "type": "StringParameterDefinition",
                 "description": p["description"], "defaultParameterValue": {"value": p["default"]}}
                for p in job["parameters"]]}],
        }

    def _store_job(self, name: str, config_xml: str, job: dict[str, Any] | None) -> Response | None:
        """Create or reconfigure job `name`; the error answer if config.xml is not one."""
        try:
            config = parse_job_config(config_xml)
        except ValueError as e:
            return _jenkins_error(400, str(e))
        job = job if job is not None else {"builds": {}, "next_build": 1}
        job.update(config=config_xml, repository_url=config.repository_url, parameters=config.parameters,
                   concurrent=config.concurrent, description=config.description)
        self.jobs[name] = job
        self.jenkins.state.save()
        return None

    # ---- the instance -------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        if not self.jenkins.authorised(request):  # anonymous may see the version, nothing else
            return JSONResponse({"_class": "hudson.model.Hudson"})
        return JSONResponse({"_class": "hudson.model.Hudson", "mode": "NORMAL", "nodeName": "",
                             "nodeDescription": "Kepler sandbox Jenkins", "useCrumbs": True,
                             "jobs": [{"_class": _JOB_CLASS, "name": n,
                                       "url": self.jenkins.job_url(n), "color": self._job_json(n, j)["color"]}
                                      for n, j in sorted(self.jobs.items())]})

    async def crumb(self, _: Request) -> Response:
        return JSONResponse({"_class": "hudson.security.csrf.DefaultCrumbIssuer",
                             "crumb": self.jenkins.crumb, "crumbRequestField": "Jenkins-Crumb"})

    async def whoami(self, _: Request) -> Response:
        user = self.jenkins.settings.jenkins_user
        return JSONResponse({"_class": "hudson.model.User", "id": user, "fullName": user,
                             "absoluteUrl": f"{self.jenkins.url}/user/{user}", "description": None})

    # ---- jobs ---------------------------------------------------------------------------

    async def create_item(self, request: Request) -> Response:
        name = request.query_params.get("name", "")
        if not name.strip() or _BAD_NAME.search(name) or name in (".", ".."):
            return _jenkins_error(400, f"'{name}' is an unsafe character" if name else "No name is specified")
        if name in self.jobs:
            return _jenkins_error(400, f"A job already exists with the name '{name}'")
        problem = self._store_job(name, (await request.body()).decode(errors="replace"), None)
        if problem:
            return problem
        self.jenkins.audit.record("create_job", job=name, repository_url=self.jobs[name]["repository_url"])
        return Response(status_code=200)

    async def job_info(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return _not_found()
        return JSONResponse(self._job_json(request.path_params["name"], job))

    async def job_config(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return _not_found()
        if request.method == "GET":
            return Response(job["config"], media_type="application/xml")
        name = request.path_params["name"]
        problem = self._store_job(name, (await request.body()).decode(errors="replace"), job)
        if problem:
            return problem
        self.jenkins.audit.record("reconfig_job", job=name)
        return Response(status_code=200)

    async def delete_job(self, request: Request) -> Response:
        name = request.path_params["name"]
        if self.jobs.pop(name, None) is None:
            return _not_found()
        for key, event in list(self.jenkins.stop_events.items()):
            if key.startswith(f"{name}#"):
                event.set()
        self.jenkins.state.save()
        self.jenkins.audit.record("delete_job", job=name)
        return Response(status_code=200)

    # ---- the queue ----------------------------------------------------------------------

    async def build_with_parameters(self, request: Request) -> Response:
        name = request.path_params["name"]
        job = self._job(request)
        if job is None:
            return _not_found()
        body = (await request.body()).decode(errors="replace")
        form = dict(parse_qsl(body)) if "urlencoded" in request.headers.get("content-type", "") else {}
        supplied = {**request.query_params, **form}
        params = {p["name"]: str(supplied.get(p["name"], p["default"])) for p in job["parameters"]}
        item = self.jenkins.enqueue(name, params)
        return Response(status_code=201, headers={"Location": f"{self.jenkins.url}/queue/item/{item['id']}/"})

    async def queue_item(self, request: Request) -> Response:
        item = self.jenkins.state.data["queue"].get(request.path_params["id"])
        if item is None:
            return _not_found()
        waiting = item["state"] == "waiting"
        kind = "WaitingItem" if waiting else "LeftItem"
        return JSONResponse({
            "_class": f"hudson.model.Queue${kind}", "id": item["id"], "blocked": False,
            "buildable": waiting, "stuck": False, "cancelled": item["cancelled"], "why": item["why"],
            "inQueueSince": item["inQueueSince"], "url": f"queue/item/{item['id']}/",
            "task": {"_class": _JOB_CLASS, "name": item["job"], "url": self.jenkins.job_url(item["job"])},
            "actions": [{"_class": "hudson.model.ParametersAction", "parameters": [
                {"name": k, "value": v} for k, v in item["params"].items()]}],
            "executable": item["executable"]})

    async def cancel_item(self, request: Request) -> Response:
        item = self.jenkins.state.data["queue"].get(request.query_params.get("id", ""))
        if item is None:
            return _not_found()
        if item["state"] == "waiting":
            item.update(state="left", cancelled=True, why=None)
            self.jenkins.state.save()
            self.jenkins.audit.record("cancel_queue_item", queue_id=item["id"])
        return Response(status_code=204)

    # ---- builds -------------------------------------------------------------------------

    async def build_info(self, request: Request) -> Response:
        found = self._build(request)
        return JSONResponse(self._build_json(*found)) if found else _not_found()

    async def console_text(self, request: Request) -> Response:
        found = self._build(request)
        return PlainTextResponse(found[1]["log"]) if found else _not_found()

    async def progressive_text(self, request: Request) -> Response:
        found = self._build(request)
        if not found:
            return _not_found()
        data = found[1]["log"].encode()
        start = int(request.query_params.get("start", "0") or 0)
        headers = {"X-Text-Size": str(len(data))}
        if found[1]["building"]:
            headers["X-More-Data"] = "true"
        return Response(data[start:], media_type="text/plain; charset=utf-8", headers=headers)

    async def stop(self, request: Request) -> Response:
        found = self._build(request)
        if not found:
            return _not_found()
        name, build = found
        event = self.jenkins.stop_events.get(f"{name}#{build['number']}")
        if event is not None:
            event.set()
            self.jenkins.audit.record("stop_build", job=name, number=build["number"])
        return Response(status_code=200)


class _AuthGuard:
    """Basic auth on every path but the root, and a crumb, when sent, that must match."""

    def __init__(self, app: ASGIApp, jenkins: Jenkins) -> None:
        self.app = app
        self.jenkins = jenkins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/", ""):
            request = Request(scope)
            if not self.jenkins.authorised(request):
                user = self.jenkins.settings.jenkins_user
                await Response(f"Invalid password/token for user: {user}", status_code=401,
                               headers={"WWW-Authenticate": 'Basic realm="Jenkins"'})(scope, receive, send)
                return
            sent = request.headers.get("jenkins-crumb")
            if scope["method"] == "POST" and sent is not None and sent != self.jenkins.crumb:
                await _jenkins_error(403, "No valid crumb was included in the request")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(world: World) -> ASGIApp:
    jenkins = Jenkins(world)
    app = Starlette(routes=JenkinsApi(jenkins).routes(), lifespan=jenkins.lifespan)
    world.components["jenkins"] = jenkins
    return _with_version_header(_AuthGuard(app, jenkins))
