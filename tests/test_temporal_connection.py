"""Connecting to a real Temporal cluster safely: TLS, mTLS client certificates and API
keys from the environment (kepler.yaml `temporal`), with clear errors naming the field.
The dev server has no TLS, so this checks the options Kepler hands temporalio's
Client.connect, and that the CLI refuses a broken setting before connecting."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from kepler.settings import ConfigError, TemporalConfig

BIN = Path(sys.executable).parent


def pem_pair(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_mtls_and_api_key_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca, _ = pem_pair(tmp_path, "ca")
    cert, key = pem_pair(tmp_path, "worker")
    options = TemporalConfig(address="temporal.example:7233", server_ca=str(ca), client_cert=str(cert),
                             client_key=str(key), server_name="temporal.example").connect_options()
    tls = options["tls"]
    assert tls.server_root_ca_cert == ca.read_bytes() and tls.client_cert == cert.read_bytes()
    assert tls.client_private_key == key.read_bytes() and tls.domain == "temporal.example"
    assert options["api_key"] is None

    monkeypatch.setenv("KEPLER_TEMPORAL_API_KEY", "k3y-for-tests")
    options = TemporalConfig(api_key_env="KEPLER_TEMPORAL_API_KEY").connect_options()
    assert options["api_key"] == "k3y-for-tests" and options["tls"]  # an API key implies TLS
    assert TemporalConfig().connect_options() == {"tls": False, "api_key": None}  # the dev server


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="temporal.client_cert: cannot read"):
        TemporalConfig(client_cert=str(tmp_path / "missing.pem"),
                       client_key=str(tmp_path / "missing.key")).connect_options()
    with pytest.raises(ConfigError, match="temporal.api_key_env: NOPE_NOT_SET is not set"):
        TemporalConfig(api_key_env="NOPE_NOT_SET").connect_options()
    with pytest.raises(ValidationError, match="client_cert and client_key go together"):
        TemporalConfig(client_cert="a.pem")
    with pytest.raises(ValidationError, match="api_key_env"):
        TemporalConfig(api_key_env="the key itself: abc123")


async def test_the_cli_refuses_an_unreadable_certificate_before_connecting(tmp_path: Path) -> None:
    config = yaml.safe_load((Path(__file__).parent.parent / "kepler.yaml").read_text())
    config["temporal"].update(client_cert=str(tmp_path / "gone.pem"), client_key=str(tmp_path / "gone.key"))
    (tmp_path / "kepler.yaml").write_text(yaml.safe_dump(config))
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "kepler"), "status", "shop", "--env", "staging", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KEPLER_CONFIG": str(tmp_path / "kepler.yaml"), "KEPLER_USER": "carol"})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, (out, err)
    assert b"temporal.client_cert: cannot read" in err
