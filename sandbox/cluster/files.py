"""The files a real control plane is started with: the static token file, the service-account key
pair, kubeconfigs, and a Node for kwok to manage. Written under the cluster's state directory."""

from __future__ import annotations

import base64
import json
import secrets
import random
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# the annotation kwok is told to select the nodes it manages by (--manage-nodes-with-annotation-selector)
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, below the kernel's ephemeral range (from 32768),
    so the outgoing connections of the components starting meanwhile cannot take it as
    their source port; another listener still may, and the start then fails with its log."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


@dataclass(frozen=True)
class Identity:
    """One static-token user (kube-apiserver --token-auth-file)."""

    name: str
    token: str
    groups: tuple[str, ...]


def new_identity(name: str, *groups: str) -> Identity:
    return Identity(name=name, token=secrets.token_urlsafe(32), groups=groups)


def write_token_file(path: Path, identities: list[Identity]) -> None:
    """token,user,uid,"group1,group2" per line (the format envtest writes too)."""
    lines = [f'{i.token},{i.name},{i.name},"{",".join(i.groups)}"' for i in identities]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def write_service_account_keys(private_path: Path, public_path: Path) -> None:
    """An RSA key pair: the API server signs service-account tokens with the private key
    (--service-account-signing-key-file) and verifies them with the public one
    (--service-account-key-file); the controller manager signs legacy token secrets with it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def kubeconfig(server: str, ca_pem: bytes, user: str, token: str, context: str = "kepler-real") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> None:
    # JSON is YAML: kubectl, client-go and the Python client read it as a kubeconfig
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def fake_node(name: str, cpu: str = "256", memory: str = "1Ti", pods: str = "1500") -> dict[str, Any]:
    """A Node for kwok to manage: annotated the way kwok is told to select nodes, untainted so
    ordinary pods schedule on it, with room for everything a whole test session leaves
    running on one cluster (nothing runs on it: the numbers cost nothing)."""
    resources = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "operatingSystem": "linux",
                "containerRuntimeVersion": "fake",
                "osImage": "kwok",
                "kernelVersion": "fake",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        },
    }
