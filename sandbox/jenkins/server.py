"""The Jenkins stand-in's state and work: jobs and builds (persisted), the build queue,
and the builds running in background tasks.

`buildWithParameters` queues an item (merged with an identical waiting one, as Jenkins
does), which after a short quiet period (and once no other build runs, if the job
disables concurrent builds) becomes build N; the build runs in a background task
(sandbox/jenkins/build.py) and ends SUCCESS, FAILURE or ABORTED. A successful build's
description is `<image>@<digest>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from typing import Any, AsyncIterator
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request

from sandbox.common import StateStore
from sandbox.jenkins.build import BuildFailed, run_build
from sandbox.world import World

QUIET_PERIOD = 0.1


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

    def enqueue(self, job: str, params: dict[str, str]) -> dict[str, Any]:
        """A new queue item for a build of `job`, or the waiting one with the same
        parameters (Jenkins merges identical requests)."""
        queue = self.state.data["queue"]
        with self.state.lock:
            item = next((i for i in queue.values() if i["job"] == job and i["state"] == "waiting"
                         and i["params"] == params), None)
            if item is None:
                self.state.data["next_queue_id"] += 1
                item = {"id": self.state.data["next_queue_id"], "job": job, "params": params,
                        "state": "waiting", "why": "In the quiet period.", "executable": None,
                        "inQueueSince": int(time.time() * 1000), "cancelled": False}
                queue[str(item["id"])] = item
                self.state.save()
                self.audit.record("queue_build", job=job, queue_id=item["id"], params=params)
                self.schedule(item)
        return item

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
