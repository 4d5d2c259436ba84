"""Issue 26, item 3, against the real worker, dev server and sandbox: raw starts of Scale
and SetResources into prod (unsigned, under the minimum) are refused, a signed one waits
for an approver, and prod's namespace is exactly as it was after each (tests/world.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowFailureError

from kepler.scale import ResourcesRequest, ScaleReport, ScaleRequest
from sandbox.serve import Sandbox
from tests import world
from tests.e2e.test_release import kepler, wait_for_outcome, wait_for_stage
from tests.helpers import signed

pytestmark = pytest.mark.e2e
NAMESPACES = ["ballast-prod"]


@pytest.mark.parametrize("workflow,req,why", [
    ("Scale", ScaleRequest(service="ballast", env="prod", replicas=0, requested_by="alice"),
     "the request is not signed"),
    ("SetResources", ResourcesRequest(service="ballast", env="prod", memory="1Mi",
                                      memory_limit="1Mi", requested_by="alice"),
     "the request is not signed"),
    ("Scale", "signed-to-0", "replicas: 0 is under this environment's minimum of 1"),
])
async def test_a_raw_start_into_prod_changes_nothing(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path,
        workflow: str, req: Any, why: str) -> None:
    await created(platform_file, tmp_path)
    if req == "signed-to-0":
        req = signed(ScaleRequest(service="ballast", env="prod", replicas=0, requested_by="carol"))
    before = world.snapshot(sandbox, NAMESPACES)
    with pytest.raises(WorkflowFailureError) as e:
        await dev_env.client.execute_workflow(workflow, req, id="ballast@prod",
                                              task_queue="kepler-e2e", result_type=ScaleReport)
    assert why in str(e.value.cause)
    assert world.differences(before, world.snapshot(sandbox, NAMESPACES)) == []


async def test_a_signed_scale_of_prod_waits_and_a_rejection_changes_nothing(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    await created(platform_file, tmp_path)
    before = world.snapshot(sandbox, NAMESPACES)
    code, out, err = await kepler(platform_file, "scale", "ballast", "--env", "prod",
                                  "--replicas", "3")
    assert code == 0, out + err
    status = await wait_for_stage(platform_file, "ballast", "prod", "awaiting approval")
    assert status["pending_approval"]["approvers"] == ["alice", "bob"]
    assert world.differences(before, world.snapshot(sandbox, NAMESPACES)) == []
    code, out, err = await kepler(platform_file, "approve", "ballast", "--env", "prod")
    assert code == 3 and "four eyes" in err  # carol asked: she cannot approve it
    code, out, err = await kepler(platform_file, "reject", "ballast", "--env", "prod", user="bob")
    assert code == 0, out + err
    assert (await wait_for_outcome(platform_file, "ballast", "prod"))["outcome"] == "rejected"
    assert world.differences(before, world.snapshot(sandbox, NAMESPACES)) == []


async def created(platform_file: Path, tmp_path: Path) -> None:
    """The service `ballast`, created once (its prod Deployment exists)."""
    if (await kepler(platform_file, "status", "ballast", "--env", "all"))[0] == 0:
        return
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "ballast", "team": "t",
                                                        "replicas": 2}))
    code, out, err = await kepler(platform_file, "service", "create", "-f",
                                  str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
