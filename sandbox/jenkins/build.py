"""What a sandbox Jenkins build does: read the job's config.xml, check out a commit
from GitLab over HTTP, work out the image's behaviour labels, push a tiny OCI image.

A commit chooses how its build and image behave, through `kepler-sandbox.yaml`
(crash, unready, error_rate, latency_ms, build: {fail, seconds}, hooks: {pre_deploy,
post_deploy, undo: ok | fail}) and/or Dockerfile
`LABEL io.kepler.sandbox.*=...` lines; the YAML wins where both speak.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import shlex
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import httpx
import yaml

from sandbox.http_client import shared_client
from sandbox.registry.oci import (HOOK_KINDS, LABEL_BUILD_FAIL, LABEL_CRASH, LABEL_ERROR_RATE,
                                  LABEL_HOOK_PREFIX, LABEL_LATENCY_MS, LABEL_UNREADY,
                                  LABEL_REVISION, PushError, build_image, parse_image_ref, push_image)

SANDBOX_FILE = "kepler-sandbox.yaml"


@dataclass
class JobConfig:
    repository_url: str | None
    parameters: list[dict[str, str]] = field(default_factory=list)
    concurrent: bool = True
    description: str = ""


def parse_job_config(xml_text: str) -> JobConfig:
    """Read what the stand-in needs from a job's config.xml; ValueError if it is not one."""
    upper = xml_text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise ValueError("config.xml must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise ValueError(f"config.xml is not well-formed XML: {e}") from e
    url = root.findtext(".//hudson.plugins.git.UserRemoteConfig/url")
    parameters = [
        {"name": p.findtext("name") or "", "default": p.findtext("defaultValue") or "",
         "description": p.findtext("description") or ""}
        for p in root.iter() if p.tag.endswith("ParameterDefinition") and p.findtext("name")
    ]
    if root.tag == "project":  # freestyle: opt-in concurrentBuild
        concurrent = (root.findtext("concurrentBuild") or "false").strip() == "true"
    else:  # pipeline: concurrent unless disableConcurrentBuilds()
        concurrent = root.find(".//org.jenkinsci.plugins.workflow.job.properties."
                               "DisableConcurrentBuildsJobProperty") is None
    return JobConfig((url or "").strip() or None, parameters, concurrent,
                     root.findtext("description") or "")


def project_path(repository_url: str, gitlab_url: str) -> str:
    """`http://gitlab/demo/svc.git` -> `demo/svc`: everything after the GitLab host, minus .git."""
    path = urlsplit(repository_url).path
    base = urlsplit(gitlab_url).path.rstrip("/")
    if base and path.startswith(base + "/"):
        path = path[len(base):]
    return path.strip("/").removesuffix(".git")


def dockerfile_facts(text: str) -> tuple[dict[str, str], list[str] | None, list[str]]:
    """LABELs, CMD and EXPOSEd ports of a Dockerfile (line continuations joined)."""
    labels: dict[str, str] = {}
    cmd: list[str] | None = None
    ports: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        try:
            if word == "LABEL":
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    labels[key] = value
            elif word == "EXPOSE":
                ports += [p if "/" in p else f"{p}/tcp" for p in rest.split()]
            elif word == "CMD":
                cmd = yaml.safe_load(rest) if rest.strip().startswith("[") else ["/bin/sh", "-c", rest]
        except (ValueError, yaml.YAMLError):
            continue
    return labels, cmd, ports


@dataclass
class Behaviour:
    labels: dict[str, str]
    fail_reason: str | None
    seconds: float | None
    cmd: list[str] | None
    ports: list[str]


def behaviour(files: dict[str, bytes]) -> Behaviour:
    """Labels and build outcome a commit asks for; a malformed file is itself a failure reason."""
    dockerfile = files.get("Dockerfile", b"").decode(errors="replace")
    docker_labels, cmd, ports = dockerfile_facts(dockerfile)
    labels = {LABEL_CRASH: "false", LABEL_ERROR_RATE: "0", LABEL_LATENCY_MS: "0"}
    labels.update({k: v for k, v in docker_labels.items() if k != LABEL_BUILD_FAIL})
    fail = None
    if docker_labels.get(LABEL_BUILD_FAIL, "").lower() == "true":
        fail = f"Dockerfile sets LABEL {LABEL_BUILD_FAIL}=true"
    if "Dockerfile" not in files:
        fail = "no Dockerfile at the root of the repository"
    seconds = None
    if SANDBOX_FILE in files:
        try:
            doc = yaml.safe_load(files[SANDBOX_FILE]) or {}
            if not isinstance(doc, dict):
                raise ValueError("it must be a mapping")
            seconds, yaml_fail = _apply_yaml(doc, labels)
            fail = yaml_fail or fail
        except (yaml.YAMLError, ValueError) as e:
            fail = f"{SANDBOX_FILE} is invalid: {e}"
    return Behaviour(labels, fail, seconds, cmd, ports)


def _apply_yaml(doc: dict[str, Any], labels: dict[str, str]) -> tuple[float | None, str | None]:
    if "crash" in doc:
        if not isinstance(doc["crash"], bool):
            raise ValueError("crash must be true or false")
        labels[LABEL_CRASH] = "true" if doc["crash"] else "false"
    if "unready" in doc:  # a readiness probe that never passes: the rollout stops progressing
        if not isinstance(doc["unready"], bool):
            raise ValueError("unready must be true or false")
        labels[LABEL_UNREADY] = "true" if doc["unready"] else "false"
    if "error_rate" in doc:
        rate = doc["error_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError("error_rate must be a number from 0 to 1")
        labels[LABEL_ERROR_RATE] = str(float(rate)) if rate else "0"
    if "latency_ms" in doc:
        latency = doc["latency_ms"]
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
            raise ValueError("latency_ms must be a whole number of milliseconds >= 0")
        labels[LABEL_LATENCY_MS] = str(latency)
    hooks = doc.get("hooks") or {}
    if not isinstance(hooks, dict) or any(k not in HOOK_KINDS or v not in ("ok", "fail")
                                          for k, v in hooks.items()):
        raise ValueError("hooks must map pre_deploy, post_deploy or undo to ok or fail")
    labels.update({LABEL_HOOK_PREFIX + k: v for k, v in hooks.items()})
    build = doc.get("build") or {}
    if not isinstance(build, dict):
        raise ValueError("build must be a mapping")
    seconds = build.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 <= seconds <= 3600):
        raise ValueError("build.seconds must be a number from 0 to 3600")
    fail = build.get("fail", False)
    if not isinstance(fail, bool):
        raise ValueError("build.fail must be true or false")
    return (float(seconds) if seconds is not None else None,
            f"{SANDBOX_FILE} sets build.fail: true" if fail else None)


class BuildFailed(Exception):
    """Ends the build FAILURE; the message is the console's last ERROR line."""


def _untar(archive: bytes) -> dict[str, bytes]:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        for member in tar.getmembers():
            if member.isfile() and "/" in member.name:
                extracted = tar.extractfile(member)
                if extracted is not None:
                    files[member.name.split("/", 1)[1]] = extracted.read()
    return files


async def run_build(*, gitlab_url: str, gitlab_token: str, repository_url: str | None,
                    params: dict[str, str], default_seconds: float, log: Callable[[str], None],
                    stopped: asyncio.Event) -> dict[str, Any]:
    """The build's steps; returns {sha, image, digest}. Raises BuildFailed with a readable reason."""
    if not repository_url:
        raise BuildFailed("the job's config.xml has no GitSCM repository URL")
    ref = params.get("GIT_REF") or "main"
    path = project_path(repository_url, gitlab_url)
    log(f"The recommended git tool is: NONE\nCloning the remote Git repository\n"
        f"Cloning repository {repository_url}")
    repository = f"{gitlab_url}/api/v4/projects/{quote(path, safe='')}/repository"
    gitlab, headers = shared_client(), {"PRIVATE-TOKEN": gitlab_token}
    try:
        found = await gitlab.get(f"{repository}/commits/{quote(ref, safe='')}", headers=headers,
                                 timeout=30)
        if found.status_code == 404:
            raise BuildFailed(f"Couldn't find any revision to build for {ref!r} in {path}. "
                              "Verify the repository and branch configuration for this job.")
        found.raise_for_status()
        commit = found.json()
        log(f"Checking out Revision {commit['id']} ({ref})\nCommit message: \"{commit['title']}\"")
        archive = await gitlab.get(f"{repository}/archive.tar.gz", params={"sha": commit["id"]},
                                   headers=headers, timeout=30)
        archive.raise_for_status()
    except httpx.HTTPError as e:
        raise BuildFailed(f"could not fetch {path}@{ref} from GitLab: {e}") from e
    files = _untar(archive.content)
    wanted = behaviour(files)
    image_text = params.get("IMAGE", "")
    log("[Pipeline] stage\n[Pipeline] { (Build)")
    log(f"+ docker build -t {image_text or '<IMAGE>'} .")
    seconds = wanted.seconds if wanted.seconds is not None else default_seconds
    try:
        await asyncio.wait_for(stopped.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
    if stopped.is_set():
        raise asyncio.CancelledError
    if wanted.fail_reason:
        raise BuildFailed(f"docker build failed: {wanted.fail_reason}")
    if not image_text:
        raise BuildFailed("parameter IMAGE is required, e.g. 127.0.0.1:5000/demo/svc:<sha>")
    try:
        target = parse_image_ref(image_text)
    except ValueError as e:
        raise BuildFailed(str(e)) from e
    labels = {**wanted.labels, LABEL_REVISION: commit["id"],
              "org.opencontainers.image.source": repository_url}
    image = build_image(files, labels, created=commit["committed_date"], cmd=wanted.cmd,
                        exposed_ports=wanted.ports)
    log(f"Successfully built {image.digest[7:19]}\n[Pipeline] }}\n[Pipeline] stage\n"
        f"[Pipeline] {{ (Push)\n+ docker push {target}")
    try:
        digest = await push_image(f"http://{target.host}", target.repository, target.reference, image)
    except (PushError, httpx.HTTPError) as e:
        raise BuildFailed(f"docker push failed: {e}") from e
    log(f"{target.reference}: digest: {digest} size: {len(image.manifest)}\n[Pipeline] }}")
    return {"sha": commit["id"], "image": str(target), "digest": digest}
