"""Version 2 of Kepler's release runbook, for the worker-versioning test: one more command
(a timer) before its first step — a change under which version 1's histories no longer
replay, which before worker versioning needed a `workflow.patched` branch."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.models import ReleaseReport, ReleaseRequest

from workflows.release import ReleaseVersion

V2_TIMER = timedelta(milliseconds=10)


@workflow.defn(name="ReleaseVersion")
class ReleaseVersionV2(ReleaseVersion):
    @workflow.run
    async def run(self, req: ReleaseRequest) -> ReleaseReport:
        await workflow.sleep(V2_TIMER)
        return await super().run(req)
