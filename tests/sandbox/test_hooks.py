"""The stand-ins' release hooks: a commit's kepler-sandbox.yaml `hooks:` becomes image
labels (Jenkins), and the simulated kubelet fails the hook pod those labels name."""

from __future__ import annotations

from sandbox.jenkins.build import behaviour
from sandbox.kubernetes.images import failing_hook


def files(sandbox_yaml: str) -> dict[str, bytes]:
    return {"Dockerfile": b"FROM scratch\n", "kepler-sandbox.yaml": sandbox_yaml.encode()}


def pod(hook: str | None) -> dict:
    return {"metadata": {"labels": {"kepler.dev/hook": hook} if hook else {}}}


def test_hooks_in_kepler_sandbox_yaml_become_labels_that_fail_only_that_hook() -> None:
    wanted = behaviour(files("hooks: {pre_deploy: fail, undo: ok}\n"))
    assert wanted.fail_reason is None
    assert wanted.labels["io.kepler.sandbox.hook.pre_deploy"] == "fail"
    assert failing_hook(pod("pre_deploy"), wanted.labels) == "pre_deploy"
    assert failing_hook(pod("undo"), wanted.labels) is None
    assert failing_hook(pod("post_deploy"), wanted.labels) is None
    assert failing_hook(pod(None), wanted.labels) is None  # not a hook: a cronjob run


def test_a_malformed_hooks_mapping_fails_the_build_with_a_reason() -> None:
    for bad in ("hooks: {pre_deploy: maybe}\n", "hooks: {migrate: fail}\n", "hooks: [fail]\n"):
        reason = behaviour(files(bad)).fail_reason
        assert reason and "hooks must map pre_deploy, post_deploy or undo to ok or fail" in reason
