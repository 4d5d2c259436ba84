"""Jenkins stand-in: the REST subset python-jenkins uses, with builds that really build.

Jobs are parameterised pipelines (GIT_REF, IMAGE) whose config.xml names a
GitLab repository. `buildWithParameters` queues an item (merged with an
identical waiting one, as Jenkins does), which after a short quiet period (and
once no other build runs, if the job disables concurrent builds) becomes build
N; the build runs in a background task (sandbox/jenkins/build.py) and ends
SUCCESS, FAILURE or ABORTED. A successful build's description is
`<image>@<digest>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import time
from typing import Any, AsyncIterator
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.common import StateStore
from sandbox.jenkins.build import BuildFailed, parse_job_config, run_build
from sandbox.world import World

VERSION = "2.462.3"
QUIET_PERIOD = 0.1
_BAD_NAME = re.compile(r"[?*/\\%!@#$^&|<>\[\]:;]")


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


class Jenkins:
    def __init__(self, world: World) -> None:
        self.world = world
        self.settings = world.settings
        self.audit = world.audits["jenkins"]
        state = world.state_path("jenkins")
        self.state = StateStore(state / "state.json" if state else None,
                                {"jobs": {}, "queue": {}, "next_queue_id": 0})
        self.crumb = hashlib.sha256(f"crumb:{self.settings.jenkins_token}".encode()).hexdigest()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stop_events: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()

    @property
    def url(self) -> str:
        return self.world.urls["jenkins"]

    @property
    def jobs(self) -> dict[str, Any]:
        return self.state.data["jobs"]

    def job_url(self, name: str) -> str:
        return f"{self.url}/job/{quote(name)}/"

    def build_url(self, name: str, number: int) -> str:
        return f"{self.job_url(name)}{number}/"

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(f"{user}:{password}",
                                   f"{self.settings.jenkins_user}:{self.settings.jenkins_token}")

    # ---- lifecycle ----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        with self.state.lock:
            for name, job in self.jobs.items():
                for build in job["builds"].values():
                    if build["building"]:  # the process running it is gone
                        build.update(building=False, result="ABORTED",
                                     duration=int(time.time() * 1000) - build["timestamp"])
                        build["log"] += "Jenkins was restarted; the build was interrupted\nFinished: ABORTED\n"
            self.state.save()
        for item in list(self.state.data["queue"].values()):
            if item["state"] == "waiting":
                self.schedule(item)
        yield
        for task in list(self.tasks.values()):
            task.cancel()

    def schedule(self, item: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.leave_queue(item))
        self.tasks[f"q{item['id']}"] = task

    async def leave_queue(self, item: dict[str, Any]) -> None:
        await asyncio.sleep(QUIET_PERIOD)
        while True:
            with self.state.lock:
                job = self.jobs.get(item["job"])
                if job is None or item["state"] != "waiting":
                    return
                running = [b for b in job["builds"].values() if b["building"]]
                if job["concurrent"] or not running:
                    build = self.start_build(item, job)
                    break
                item["why"] = f"Build #{running[0]['number']} is already in progress"
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=0.5)
        key = f"{item['job']}#{build['number']}"
        self.stop_events[key] = asyncio.Event()
        self.tasks[key] = asyncio.get_running_loop().create_task(self.execute(item["job"], build))
        self.tasks.pop(f"q{item['id']}", None)

    def start_build(self, item: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        number = job["next_build"]
        job["next_build"] += 1
        build = {"number": number, "queue_id": item["id"], "params": item["params"], "building": True,
                 "result": None, "timestamp": int(time.time() * 1000), "duration": 0,
                 "log": f"Started by user {self.settings.jenkins_user}\n", "description": None, "sha": None}
        job["builds"][str(number)] = build
        item.update(state="left", why=None, executable={
            "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun", "number": number,
            "url": self.build_url(item["job"], number)})
        self.state.save()
        self.audit.record("start_build", job=item["job"], number=number, params=item["params"])
        return build

    async def execute(self, name: str, build: dict[str, Any]) -> None:
        key = f"{name}#{build['number']}"
        stopped = self.stop_events[key]

        def log(text: str) -> None:
            with self.state.lock:
                build["log"] += text.rstrip("\n") + "\n"

        result, outcome = "SUCCESS", {}
        try:
            outcome = await run_build(
                gitlab_url=self.world.urls.get("gitlab", ""), gitlab_token=self.settings.gitlab_token,
                repository_url=self.jobs[name]["repository_url"] if name in self.jobs else None,
                params=build["params"], default_seconds=self.settings.build_seconds, log=log,
                stopped=stopped)
        except BuildFailed as e:
            log(f"ERROR: {e}")
            result = "FAILURE"
        except asyncio.CancelledError:
            log(f"Aborted by {self.settings.jenkins_user}")
            result = "ABORTED"
        except Exception as e:  # noqa: BLE001 - a build never takes the server down
            log(f"ERROR: unexpected {type(e).__name__}: {e}")
            result = "FAILURE"
        log(f"[Pipeline] End of Pipeline\nFinished: {result}")
        with self.state.lock:
            build.update(building=False, result=result, sha=outcome.get("sha"),
                         duration=int(time.time() * 1000) - build["timestamp"])
            if outcome.get("digest"):
                build["description"] = f"{outcome['image']}@{outcome['digest']}"
            self.state.save()
        self.audit.record("finish_build", job=name, number=build["number"], result=result, **outcome)
        self.tasks.pop(key, None)
        self.stop_events.pop(key, None)
        self.changed.set()


def create_app(world: World) -> ASGIApp:
    jenkins = Jenkins(world)
    jobs = jenkins.jobs

    def job_or_404(request: Request) -> dict[str, Any] | None:
        return jobs.get(request.path_params["name"])

    def build_or_404(request: Request) -> tuple[str, dict[str, Any]] | None:
        job = job_or_404(request)
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

    def build_ref(name: str, build: dict[str, Any] | None) -> dict[str, Any] | None:
        if build is None:
            return None
        return {"_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun", "number": build["number"],
                "url": jenkins.build_url(name, build["number"])}

    def build_json(name: str, build: dict[str, Any]) -> dict[str, Any]:
        actions: list[dict[str, Any]] = [{"_class": "hudson.model.ParametersAction", "parameters": [
            {"_class": "hudson.model.StringParameterValue", "name": k, "value": v}
            for k, v in build["params"].items()]}]
        if build["sha"]:
            actions.append({"_class": "hudson.plugins.git.util.BuildData",
                            "lastBuiltRevision": {"SHA1": build["sha"]}})
        return {"_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun", "number": build["number"],
                "id": str(build["number"]), "url": jenkins.build_url(name, build["number"]),
                "displayName": f"#{build['number']}", "fullDisplayName": f"{name} #{build['number']}",
                "building": build["building"], "result": build["result"], "timestamp": build["timestamp"],
                "duration": build["duration"], "estimatedDuration": int(world.settings.build_seconds * 1000),
                "queueId": build["queue_id"], "description": build["description"], "actions": actions}

    def job_json(name: str, job: dict[str, Any]) -> dict[str, Any]:
        builds = sorted(job["builds"].values(), key=lambda b: -b["number"])
        finished = [b for b in builds if not b["building"]]
        last = builds[0] if builds else None
        color = "notbuilt" if last is None else {
            "SUCCESS": "blue", "FAILURE": "red", "ABORTED": "aborted"}.get(finished[0]["result"], "grey") \
            if finished else "notbuilt"
        if last and last["building"]:
            color += "_anime"
        waiting = [i for i in jenkins.state.data["queue"].values() if i["job"] == name and i["state"] == "waiting"]
        return {
            "_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "name": name, "fullName": name,
            "displayName": name, "url": jenkins.job_url(name), "buildable": True, "color": color,
            "description": job["description"], "nextBuildNumber": job["next_build"],
            "builds": [build_ref(name, b) for b in builds], "inQueue": bool(waiting),
            "queueItem": {"id": waiting[0]["id"]} if waiting else None,
            "lastBuild": build_ref(name, last),
            "lastCompletedBuild": build_ref(name, finished[0] if finished else None),
            "lastSuccessfulBuild": build_ref(name, next((b for b in finished if b["result"] == "SUCCESS"), None)),
            "lastFailedBuild": build_ref(name, next((b for b in finished if b["result"] == "FAILURE"), None)),
            "property": [{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": [
                {"_class": "hudson.model.StringParameterDefinition", "name": p["name"], "type": "StringParameterDefinition",
                 "description": p["description"], "defaultParameterValue": {"value": p["default"]}}
                for p in job["parameters"]]}],
        }

    def store_job(name: str, config_xml: str, job: dict[str, Any] | None) -> Response | None:
        try:
            config = parse_job_config(config_xml)
        except ValueError as e:
            return _jenkins_error(400, str(e))
        job = job if job is not None else {"builds": {}, "next_build": 1}
        job.update(config=config_xml, repository_url=config.repository_url, parameters=config.parameters,
                   concurrent=config.concurrent, description=config.description)
        jobs[name] = job
        jenkins.state.save()
        return None

    async def root(request: Request) -> Response:
        if not jenkins.authorised(request):  # anonymous may see the version, nothing else
            return JSONResponse({"_class": "hudson.model.Hudson"})
        return JSONResponse({"_class": "hudson.model.Hudson", "mode": "NORMAL", "nodeName": "",
                             "nodeDescription": "Kepler sandbox Jenkins", "useCrumbs": True,
                             "jobs": [{"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "name": n,
                                       "url": jenkins.job_url(n), "color": job_json(n, j)["color"]}
                                      for n, j in sorted(jobs.items())]})

    async def crumb(_: Request) -> Response:
        return JSONResponse({"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": jenkins.crumb,
                             "crumbRequestField": "Jenkins-Crumb"})

    async def whoami(_: Request) -> Response:
        user = world.settings.jenkins_user
        return JSONResponse({"_class": "hudson.model.User", "id": user, "fullName": user,
                             "absoluteUrl": f"{jenkins.url}/user/{user}", "description": None})

    async def create_item(request: Request) -> Response:
        name = request.query_params.get("name", "")
        if not name.strip() or _BAD_NAME.search(name) or name in (".", ".."):
            return _jenkins_error(400, f"'{name}' is an unsafe character" if name else "No name is specified")
        if name in jobs:
            return _jenkins_error(400, f"A job already exists with the name '{name}'")
        problem = store_job(name, (await request.body()).decode(errors="replace"), None)
        if problem:
            return problem
        jenkins.audit.record("create_job", job=name, repository_url=jobs[name]["repository_url"])
        return Response(status_code=200)

    async def job_info(request: Request) -> Response:
        job = job_or_404(request)
        if job is None:
            return _jenkins_error(404, "Not Found")
        return JSONResponse(job_json(request.path_params["name"], job))

    async def job_config(request: Request) -> Response:
        job = job_or_404(request)
        if job is None:
            return _jenkins_error(404, "Not Found")
        if request.method == "GET":
            return Response(job["config"], media_type="application/xml")
        problem = store_job(request.path_params["name"], (await request.body()).decode(errors="replace"), job)
        if problem:
            return problem
        jenkins.audit.record("reconfig_job", job=request.path_params["name"])
        return Response(status_code=200)

    async def delete_job(request: Request) -> Response:
        name = request.path_params["name"]
        if jobs.pop(name, None) is None:
            return _jenkins_error(404, "Not Found")
        for key, event in list(jenkins.stop_events.items()):
            if key.startswith(f"{name}#"):
                event.set()
        jenkins.state.save()
        jenkins.audit.record("delete_job", job=name)
        return Response(status_code=200)

    async def build_with_parameters(request: Request) -> Response:
        name = request.path_params["name"]
        job = job_or_404(request)
        if job is None:
            return _jenkins_error(404, "Not Found")
        body = (await request.body()).decode(errors="replace")
        form = dict(parse_qsl(body)) if "urlencoded" in request.headers.get("content-type", "") else {}
        supplied = {**request.query_params, **form}
        params = {p["name"]: str(supplied.get(p["name"], p["default"])) for p in job["parameters"]}
        queue = jenkins.state.data["queue"]
        with jenkins.state.lock:
            same = next((i for i in queue.values() if i["job"] == name and i["state"] == "waiting"
                         and i["params"] == params), None)
            item = same
            if item is None:
                jenkins.state.data["next_queue_id"] += 1
                item = {"id": jenkins.state.data["next_queue_id"], "job": name, "params": params,
                        "state": "waiting", "why": "In the quiet period.", "executable": None,
                        "inQueueSince": int(time.time() * 1000), "cancelled": False}
                queue[str(item["id"])] = item
                jenkins.state.save()
                jenkins.audit.record("queue_build", job=name, queue_id=item["id"], params=params)
                jenkins.schedule(item)
        return Response(status_code=201, headers={"Location": f"{jenkins.url}/queue/item/{item['id']}/"})

    async def queue_item(request: Request) -> Response:
        item = jenkins.state.data["queue"].get(request.path_params["id"])
        if item is None:
            return _jenkins_error(404, "Not Found")
        waiting = item["state"] == "waiting"
        kind = "WaitingItem" if waiting else "LeftItem"
        return JSONResponse({
            "_class": f"hudson.model.Queue${kind}", "id": item["id"], "blocked": False,
            "buildable": waiting, "stuck": False, "cancelled": item["cancelled"], "why": item["why"],
            "inQueueSince": item["inQueueSince"], "url": f"queue/item/{item['id']}/",
            "task": {"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "name": item["job"],
                     "url": jenkins.job_url(item["job"])},
            "actions": [{"_class": "hudson.model.ParametersAction", "parameters": [
                {"name": k, "value": v} for k, v in item["params"].items()]}],
            "executable": item["executable"]})

    async def cancel_item(request: Request) -> Response:
        item = jenkins.state.data["queue"].get(request.query_params.get("id", ""))
        if item is None:
            return _jenkins_error(404, "Not Found")
        if item["state"] == "waiting":
            item.update(state="left", cancelled=True, why=None)
            jenkins.state.save()
            jenkins.audit.record("cancel_queue_item", queue_id=item["id"])
        return Response(status_code=204)

    async def build_info(request: Request) -> Response:
        found = build_or_404(request)
        return JSONResponse(build_json(*found)) if found else _jenkins_error(404, "Not Found")

    async def console_text(request: Request) -> Response:
        found = build_or_404(request)
        return PlainTextResponse(found[1]["log"]) if found else _jenkins_error(404, "Not Found")

    async def progressive_text(request: Request) -> Response:
        found = build_or_404(request)
        if not found:
            return _jenkins_error(404, "Not Found")
        data = found[1]["log"].encode()
        start = int(request.query_params.get("start", "0") or 0)
        headers = {"X-Text-Size": str(len(data))}
        if found[1]["building"]:
            headers["X-More-Data"] = "true"
        return Response(data[start:], media_type="text/plain; charset=utf-8", headers=headers)

    async def stop(request: Request) -> Response:
        found = build_or_404(request)
        if not found:
            return _jenkins_error(404, "Not Found")
        name, build = found
        event = jenkins.stop_events.get(f"{name}#{build['number']}")
        if event is not None:
            event.set()
            jenkins.audit.record("stop_build", job=name, number=build["number"])
        return Response(status_code=200)

    routes = [
        Route("/", root, methods=["GET"]), Route("/api/json", root, methods=["GET"]),
        Route("/crumbIssuer/api/json", crumb, methods=["GET"]),
        Route("/me/api/json", whoami, methods=["GET"]),
        Route("/createItem", create_item, methods=["POST"]),
        Route("/queue/item/{id}/api/json", queue_item, methods=["GET"]),
        Route("/queue/cancelItem", cancel_item, methods=["POST"]),
        Route("/job/{name}/api/json", job_info, methods=["GET"]),
        Route("/job/{name}/config.xml", job_config, methods=["GET", "POST"]),
        Route("/job/{name}/doDelete", delete_job, methods=["POST"]),
        Route("/job/{name}/buildWithParameters", build_with_parameters, methods=["POST"]),
        Route("/job/{name}/build", build_with_parameters, methods=["POST"]),
        Route("/job/{name}/{number}/api/json", build_info, methods=["GET"]),
        Route("/job/{name}/{number}/consoleText", console_text, methods=["GET"]),
        Route("/job/{name}/{number}/logText/progressiveText", progressive_text, methods=["GET"]),
        Route("/job/{name}/{number}/stop", stop, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=jenkins.lifespan)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/", ""):
            request = Request(scope)
            if not jenkins.authorised(request):
                user = world.settings.jenkins_user
                await Response(f"Invalid password/token for user: {user}", status_code=401,
                               headers={"WWW-Authenticate": 'Basic realm="Jenkins"'})(scope, receive, send)
                return
            sent = request.headers.get("jenkins-crumb")
            if scope["method"] == "POST" and sent is not None and sent != jenkins.crumb:
                await _jenkins_error(403, "No valid crumb was included in the request")(scope, receive, send)
                return
        await app(scope, receive, send)

    world.components["jenkins"] = jenkins
    return _with_version_header(guarded)
