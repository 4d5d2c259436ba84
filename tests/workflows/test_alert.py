"""Alert-driven rollback: the policy, the payload, and the AlertAction workflow's
canary-abort and busy paths on the time-skipping server (a stand-in Canary with the
real one's `abort` update contract: CanaryControl {by, reason})."""

from __future__ import annotations

import uuid
import pytest
from pydantic import ValidationError
from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.alerts import AlertActivities
from kepler.notifications import Notification
from kepler.alerts import AlertsConfig, WebhookPayload, alert_workflow_id, triage
from kepler.models import Model, ReleaseRequest
from kepler.settings import ConfigError, parse_platform
from kepler.clients import operations as ops
from workflows.alert import AlertAction


def payload(status: str = "firing", **labels: str) -> dict:
    """Alertmanager's webhook body, version 4, as it sends it."""
    alert_labels = {"alertname": "HighErrorRate", "severity": "critical",
                    "kepler_service": "shop", "kepler_env": "staging", **labels}
    return {
        "version": "4", "groupKey": '{}:{alertname="HighErrorRate"}', "truncatedAlerts": 0,
        "status": status, "receiver": "kepler", "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": alert_labels, "commonAnnotations": {"summary": "5xx above 5%"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": status, "labels": alert_labels,
                    "annotations": {"summary": "5xx above 5%"},
                    "startsAt": "2026-11-25T10:00:00.000Z",
                    "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-25T10:05:00Z",
                    "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
                    "fingerprint": "c8a5ba8bb0d1e0f3"}]}


POLICY = AlertsConfig.model_validate({"rollback": [
    {"match": {"severity": "critical"}, "envs": ["staging", "prod"]},
    {"match_re": {"alertname": "Latency.*"}, "services": ["shop"]}]})


def test_triage_follows_the_policy() -> None:
    def why(**labels: str) -> str:
        alert = WebhookPayload.model_validate(payload(**labels)).alerts[0]
        action, reason = triage(alert, POLICY, ["prod", "staging"])
        return "act" if action else reason

    assert why() == "act"
    assert "no rule" in why(severity="warning")
    assert why(severity="warning", alertname="LatencyHigh") == "act"  # the second rule
    assert "unknown environment" in why(kepler_env="qa")
    assert "bad labels" in why(kepler_service="Shop!")
    alert = WebhookPayload.model_validate(payload("resolved")).alerts[0]
    assert triage(alert, POLICY, ["staging"])[1].startswith("resolved")
    assert "not Kepler's" in triage(WebhookPayload.model_validate(payload()).alerts[0].model_copy(
        update={"labels": {"alertname": "x"}}), POLICY, ["staging"])[1]
    assert triage(WebhookPayload.model_validate(payload()).alerts[0], AlertsConfig(),
                  ["staging"])[0] is None  # no rules: alerts never act


def test_bad_payloads_and_policies_are_refused() -> None:
    for broken in ({**payload(), "version": "3"}, {**payload(), "alerts": [{"status": "firing"}]},
                   {**payload(), "alerts": [{**payload()["alerts"][0], "fingerprint": "../x"}]}):
        with pytest.raises(ValidationError):
            WebhookPayload.model_validate(broken)
    with pytest.raises(ConfigError, match="alerts.rollback.0.match_re"):
        parse_platform(
            "gitlab: {url: http://g}\njenkins: {url: http://j}\nregistry: {url: http://r, host: r}\n"
            "environments: {staging: {cluster: {server: http://k}}}\n"
            "alerts:\n  rollback:\n    - match_re: {alertname: '(unclosed'}\n")


class CanaryControl(Model):
    """The argument of the Canary's control updates (kepler/canary.py): who and why, and
    the signed statement that lets them (the receiver's: its action's signed request)."""
    by: str
    reason: str = ""
    signed: dict | None = None


@workflow.defn(name="Canary")
class StandInCanary:
    """The Canary's control surface, as workflows/canary.py defines it: `abort` is an
    update taking CanaryControl."""

    def __init__(self) -> None:
        self.aborted: CanaryControl | None = None

    @workflow.run
    async def run(self, req: ReleaseRequest) -> str:
        await workflow.wait_condition(lambda: self.aborted is not None)
        return f"aborted by {self.aborted.by}: {self.aborted.reason}"

    @workflow.update
    async def abort(self, control: CanaryControl) -> str:
        self.aborted = control
        return "aborting: traffic goes back to stable and the canary scales to 0"


@workflow.defn(name="ReleaseVersion")
class WaitingRelease:
    @workflow.run
    async def run(self, req: ReleaseRequest) -> str:
        await workflow.wait_condition(lambda: False)
        return ""


async def _act(time_env, queue: str, notes: list[Notification], env: str = "staging"):
    alert = WebhookPayload.model_validate(payload(kepler_env=env)).alerts[0]
    req, _ = triage(alert, POLICY, ["staging", "prod"])
    assert req is not None
    return await time_env.client.execute_workflow(
        "AlertAction", req, id=alert_workflow_id(req.service, req.env, req.fingerprint,
                                                 req.starts_at),
        task_queue=queue, result_type=__import__("kepler.alerts", fromlist=["x"]).AlertOutcome)


@pytest.mark.parametrize("running,expected", [("Canary", "canary_aborted"),
                                              ("ReleaseVersion", "busy")])
async def test_running_canary_is_aborted_anything_else_is_left_alone(
        time_env, running: str, expected: str) -> None:
    queue = f"q-{uuid.uuid4()}"
    notes: list[Notification] = []

    @activity.defn(name="notify")
    async def notify(n: Notification) -> list[str]:
        notes.append(n)
        return ["test"]

    async with Worker(time_env.client, task_queue=queue,
                      workflows=[AlertAction, StandInCanary, WaitingRelease],
                      activities=[AlertActivities(None, time_env.client).act, notify],
                      workflow_runner=UnsandboxedWorkflowRunner()):  # stand-ins live here
        started = await ops.start(time_env.client, ReleaseRequest(
            service="shop", env="staging", ref="v2", requested_by="carol"), queue)
        if running == "Canary":  # same id and lock, but the Canary workflow type
            await started.handle.terminate()
            started = await time_env.client.start_workflow(
                "Canary", ReleaseRequest(service="shop", env="staging", ref="v2",
                                         requested_by="carol"), id="shop@staging", task_queue=queue)
        with time_env.auto_time_skipping_disabled():  # the release must stay as it is
            outcome = await _act(time_env, queue, notes)
        assert outcome.action == expected and outcome.workflow_id == "shop@staging"
        if running == "Canary":
            result = await started.result()
            assert result.startswith("aborted by alertmanager: alert HighErrorRate "
                                     "(c8a5ba8bb0d1e0f3) firing: 5xx above 5%")
        else:
            assert "no rollback started" in outcome.detail and "carol" in outcome.detail
            desc = await started.handle.describe()
            assert desc.status.name == "RUNNING"  # the release keeps its lock
            await started.handle.terminate()
    assert [n.event for n in notes] == ["alert"] and outcome.detail in notes[0].text


def test_real_canary_takes_the_same_abort() -> None:
    """The stand-in's contract is the real Canary's (workflows/canary.py, issue 6)."""
    Canary = pytest.importorskip("workflows.canary").Canary
    real = pytest.importorskip("kepler.canary").CanaryControl
    assert set(real.model_fields) == set(CanaryControl.model_fields)

    defn = workflow._Definition.from_class(Canary)
    assert "abort" in defn.updates
    import inspect

    params = list(inspect.signature(Canary.abort).parameters.values())
    assert params[1].annotation in (real, "CanaryControl")


async def test_a_signed_rollback_must_be_the_alerts_own() -> None:
    """The receiver signs the rollback an alert starts; one for another service, carried in
    an action, is refused before anything is started."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.alerts import AlertActivities
    from kepler.alerts import rollback_of

    alert = WebhookPayload.model_validate(payload()).alerts[0]
    req, _ = triage(alert, POLICY, ["staging", "prod"])
    other = rollback_of(req).model_copy(update={"service": "payments"})
    with pytest.raises(ApplicationError, match="the signed rollback is not this alert's"):
        await ActivityEnvironment().run(AlertActivities(None).act,
                                        req.model_copy(update={"rollback": other}))
