"""Each environment names its cluster in kepler.yaml; the activities pick the client
per environment: a server URL with a bearer token from the environment, or a
kubeconfig context."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from temporalio.exceptions import ApplicationError

from activities.kubernetes.client import Clusters
from kepler.settings import parse_platform

BASE = {"gitlab": {"url": "http://g"}, "jenkins": {"url": "http://j"},
        "registry": {"url": "http://r", "host": "r"}}


def platform(environments: dict) -> object:
    return parse_platform(yaml.safe_dump({**BASE, "environments": environments}))


def test_server_and_token_per_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROD_TOKEN", "s3cret")
    clusters = Clusters(platform({
        "staging": {"cluster": {"server": "http://staging.example:6443"}},
        "prod": {"cluster": {"server": "https://prod.example:6443", "token_env": "PROD_TOKEN"}}}))
    staging, prod = clusters("staging").api.configuration, clusters("prod").api.configuration
    assert staging.host == "http://staging.example:6443" and not staging.api_key
    assert prod.host == "https://prod.example:6443"
    assert prod.get_api_key_with_prefix("authorization") == "Bearer s3cret"
    assert clusters("prod") is clusters("prod")  # one client per environment per worker


def test_a_missing_token_or_environment_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROD_TOKEN", raising=False)
    clusters = Clusters(platform({"prod": {"cluster": {"server": "https://p", "token_env": "PROD_TOKEN"}}}))
    with pytest.raises(ApplicationError, match="PROD_TOKEN is not set") as e:
        clusters("prod")
    assert e.value.non_retryable and e.value.type == "Unauthorized"
    with pytest.raises(ApplicationError, match="unknown environment 'qa'"):
        clusters("qa")


def test_kubeconfig_context_per_environment(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "east",
        "clusters": [{"name": "east", "cluster": {"server": "https://east.example"}},
                     {"name": "west", "cluster": {"server": "https://west.example"}}],
        "users": [{"name": "kepler", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "east", "context": {"cluster": "east", "user": "kepler"}},
                     {"name": "west", "context": {"cluster": "west", "user": "kepler"}}]}))
    clusters = Clusters(platform({
        "staging": {"cluster": {"context": "east", "kubeconfig": str(kubeconfig)}},
        "prod": {"cluster": {"context": "west", "kubeconfig": str(kubeconfig)}}}))
    assert clusters("staging").api.configuration.host == "https://east.example"
    assert clusters("prod").api.configuration.host == "https://west.example"


def test_a_cluster_needs_a_server_or_a_context() -> None:
    with pytest.raises(Exception, match="a cluster needs a server URL or a kubeconfig context"):
        platform({"prod": {"cluster": {"token_env": "X"}}})
