"""The DORA metrics (kepler/metrics.py) over hand-made rows, with exact figures."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kepler.metrics import (
    EXPORTED, KEYS, ChangeRow, as_json, compute, parse_window, per_period, prometheus_text,
)

ROOT = Path(__file__).resolve().parent.parent
SINCE = datetime(2026, 3, 1, tzinfo=timezone.utc)
UNTIL = SINCE + timedelta(days=10)
ALERTS = "alertmanager"


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=timezone.utc)


def row(n: int, operation: str, outcome: str, closed: datetime, *, env: str = "staging",
        service: str = "shop", committed_at: datetime | None = None, commit: str = "",
        requested_by: str = "carol", started: datetime | None = None, team: str = "",
        signed_by: str = "") -> ChangeRow:
    return ChangeRow(workflow_id=f"{service}@{env}", run_id=f"run-{n}", operation=operation,
                     service=service, env=env, outcome=outcome,
                     started=started or closed - timedelta(minutes=5), closed=closed,
                     requested_by=requested_by, commit=commit or (f"{n:040x}" if operation != "rollback" else ""),
                     committed_at=committed_at, team=team, signed_by=signed_by)


ROWS = [
    row(1, "release", "succeeded", at(2, 10), committed_at=at(1, 10), team="payments"),  # lead 24 h
    row(2, "release", "rolled_back", at(3, 12), committed_at=at(3, 8)),  # a failure...
    row(3, "release", "succeeded", at(3, 13), committed_at=at(3, 11), commit="c" * 40),  # ...restored 1 h later, lead 2 h
    row(4, "canary", "succeeded", at(5), committed_at=at(4)),  # promoted, lead 24 h; then undone by an alert:
    row(5, "rollback", "succeeded", at(5, 6, 10), started=at(5, 6), requested_by=ALERTS,
        signed_by=ALERTS),  # restored in 10 min
    row(6, "release", "succeeded", at(4), env="prod", commit="c" * 40),  # a promotion: row 3's commit time, lead 13 h
    row(7, "release", "cancelled", at(6)),  # no deploy
    row(8, "release", "succeeded", at(1) - timedelta(hours=1), committed_at=at(1) - timedelta(days=1)),  # before the window
    row(9, "rollback", "succeeded", at(6, 12)),  # a rollback by a person, nothing failing: no incident
    row(10, "release", "failed", at(9)),  # NOT put back, nothing healthy since: unrestored
    row(11, "release", "succeeded", at(8), service="cart", committed_at=at(7), team="web"),
]


def test_each_environment_gets_the_four_metrics_with_exact_figures() -> None:
    metrics = as_json(compute(ROWS, ["staging", "prod", "dev"], SINCE, UNTIL, ALERTS))
    assert list(metrics) == ["staging", "prod", "dev"]
    assert all(list(m) == list(KEYS) for m in metrics.values())
    staging = metrics["staging"]
    # succeeded deploys: 1, 3, 4 (shop) and 11 (cart), over 10 days
    assert staging["deployment_frequency"] == {"deploys": 4, "days": 10.0, "per_day": 0.4}
    # 24 h, 2 h, 24 h, 24 h
    assert staging["lead_time"] == {"median_seconds": 86400.0, "samples": 4}
    # 2 rolled back, 10 failed, 4 undone by the alert's rollback; of 1, 2, 3, 4, 10, 11
    assert staging["change_failure_rate"] == {"failed": 3, "deploys": 6, "rate": 0.5}
    # 2 -> 3: 1 h; the alert's rollback: started 06:00, healthy at 06:10; 10: still failing
    assert staging["time_to_restore"] == {"median_seconds": 2100.0, "restores": 2, "unrestored": 1}
    prod = metrics["prod"]
    assert prod["lead_time"] == {"median_seconds": 13 * 3600.0, "samples": 1}
    assert prod["change_failure_rate"] == {"failed": 0, "deploys": 1, "rate": 0.0}
    assert metrics["dev"] == {
        "deployment_frequency": {"deploys": 0, "days": 10.0, "per_day": 0.0},
        "lead_time": {"median_seconds": None, "samples": 0},
        "change_failure_rate": {"failed": 0, "deploys": 0, "rate": None},
        "time_to_restore": {"median_seconds": None, "restores": 0, "unrestored": 0}}


def test_team_keeps_the_services_whose_latest_release_names_it_with_their_rollbacks() -> None:
    metrics = as_json(compute(ROWS, ["staging"], SINCE, UNTIL, ALERTS, team="payments"))["staging"]
    assert metrics["deployment_frequency"]["deploys"] == 3  # cart (team web) is left out
    assert metrics["change_failure_rate"] == {"failed": 3, "deploys": 5, "rate": 0.6}
    assert metrics["time_to_restore"]["restores"] == 2  # the alert's rollback carries no team
    assert as_json(compute(ROWS, ["staging"], SINCE, UNTIL, ALERTS, team="nobody"))[
        "staging"]["deployment_frequency"]["deploys"] == 0


def test_per_period_computes_each_window_as_compute_does_a_boundary_row_in_the_later() -> None:
    periods = per_period(ROWS, ["staging"], UNTIL, timedelta(days=2), 5, ALERTS)
    assert [since for since, _ in periods] == [at(1), at(3), at(5), at(7), at(9)]
    staging = [m["staging"] for _, m in periods]
    # 1 on the 2nd; 3 on the 3rd; 4 closed exactly at the 5th: the third window; 11 on the 8th
    assert [m.deployment_frequency.deploys for m in staging] == [1, 1, 1, 1, 0]
    assert sum(m.deployment_frequency.deploys for m in staging) == compute(
        ROWS, ["staging"], SINCE, UNTIL, ALERTS)["staging"].deployment_frequency.deploys
    assert [m.deployment_frequency.days for m in staging] == [2.0] * 5
    assert [(m.change_failure_rate.failed, m.change_failure_rate.deploys) for m in staging] == [
        (0, 1), (1, 2), (1, 1), (0, 1), (1, 1)]  # 2 rolled back; 4 undone by the alert; 10 failed
    assert [m.time_to_restore.restores for m in staging] == [0, 1, 1, 0, 0]
    assert staging[3].lead_time.median_seconds == 86400.0  # 11: committed the day before
    team = per_period(ROWS, ["staging"], UNTIL, timedelta(days=2), 5, ALERTS, team="web")
    assert [m["staging"].deployment_frequency.deploys for _, m in team] == [0, 0, 0, 1, 0]


def test_an_alert_rollback_after_a_rollback_undoes_no_deploy() -> None:
    rows = [row(1, "release", "succeeded", at(2)),
            row(2, "rollback", "succeeded", at(3)),
            row(3, "rollback", "succeeded", at(4, 0, 5), started=at(4), requested_by=ALERTS,
                signed_by=ALERTS)]
    cfr = compute(rows, ["staging"], SINCE, UNTIL, ALERTS)["staging"].change_failure_rate
    assert (cfr.failed, cfr.deploys) == (0, 1)


def test_failures_in_a_row_are_one_incident_until_healthy() -> None:
    rows = [row(1, "release", "failed", at(2)), row(2, "release", "rolled_back", at(2, 1)),
            row(3, "canary", "rolled_back", at(2, 2)), row(4, "release", "succeeded", at(2, 3)),
            row(5, "release", "failed", at(3)), row(6, "rollback", "failed", at(3, 1)),
            row(7, "rollback", "succeeded", at(3, 2))]
    ttr = compute(rows, ["staging"], SINCE, UNTIL, ALERTS)["staging"].time_to_restore
    assert (ttr.median_seconds, ttr.restores, ttr.unrestored) == (3 * 3600 - 3600 / 2, 2, 0)


@pytest.mark.parametrize("text", ["30d", "1h", "90d", "1d12h"])
def test_since_takes_a_bounded_duration(text: str) -> None:
    assert timedelta(hours=1) <= parse_window(text) <= timedelta(days=90)


@pytest.mark.parametrize("text", ["0h", "59m", "91d", "30", "thirty days", "30d\n", "", "P30D",
                                  "99999999999999d"])
def test_since_refuses_what_is_malformed_or_out_of_bounds(text: str) -> None:
    with pytest.raises(ValueError, match="^--since: "):
        parse_window(text)


def parse_exposition(text: str) -> dict[tuple[str, str], float]:
    """Prometheus' text format, strictly: every sample of a declared gauge, by (name, env)."""
    samples, declared = {}, set()
    for line in text.splitlines():
        if m := re.fullmatch(r"# TYPE ([a-z_]+) gauge", line):
            declared.add(m.group(1))
        elif not line.startswith("# HELP "):
            m = re.fullmatch(r'([a-z_]+)(?:\{env="([a-z0-9-]+)"\})? (\S+)', line)
            assert m and m.group(1) in declared, line
            samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


def test_the_exposition_has_each_gauge_per_environment_and_leaves_unknowns_out() -> None:
    metrics = compute(ROWS, ["staging", "dev"], SINCE, UNTIL, ALERTS)
    samples = parse_exposition(prometheus_text(metrics, timedelta(days=10)))
    assert samples[("kepler_dora_change_failure_rate", "staging")] == 0.5
    assert samples[("kepler_dora_lead_time_seconds", "staging")] == 86400
    assert samples[("kepler_dora_time_to_restore_seconds", "staging")] == 2100
    assert samples[("kepler_dora_deployment_frequency_per_day", "staging")] == 0.4
    assert samples[("kepler_dora_window_seconds", "")] == 864000
    assert ("kepler_dora_lead_time_seconds", "dev") not in samples  # no sample, not a 0
    assert samples[("kepler_dora_deployments", "dev")] == 0
    assert {name for name, _ in samples} == set(EXPORTED)


def test_the_grafana_dashboard_shows_only_what_the_exporter_exports() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dora.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    named = {n for e in exprs for n in re.findall(r"\bkepler_dora_[a-z_]+", e)}
    assert named <= set(EXPORTED), named - set(EXPORTED)
    for key in ("kepler_dora_deployment_frequency_per_day", "kepler_dora_lead_time_seconds",
                "kepler_dora_change_failure_rate", "kepler_dora_time_to_restore_seconds"):
        assert key in named
    assert all('env=~"$env"' in e for e in exprs if "env" in e)


def test_compose_registers_every_search_attribute_with_its_type() -> None:
    from kepler.search_attributes import ALL_KEYS, type_name

    setup = " ".join(json.dumps(yaml_load(ROOT / "deploy/compose.yaml")["services"]["temporal-setup"]
                                ["command"]).split())
    for key in ALL_KEYS:
        assert key.name in setup, key.name
        if type_name(key) != "Keyword":
            assert f"--name {key.name} --type {type_name(key)}" in setup


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
