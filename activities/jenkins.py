"""Jenkins, through python-jenkins: the build job and builds of one commit.

The job's config.xml is built with ElementTree, so every value is escaped: a
crafted name or ref cannot inject XML.
"""

from __future__ import annotations

import contextlib
import re
import time
import xml.etree.ElementTree as ET
from typing import Any, Iterator

import jenkins
import requests
from temporalio import activity

from activities.http_retry import retrying_jenkins_session
from activities.errors import non_retryable, raise_for_status, retryable
from kepler import naming
from kepler.settings import Platform, Secrets
from kepler.payloads import BuildRequest, BuildResult, EnsureJob, UndoCreated

POLL_SECONDS = 0.5
LOG_TAIL_LINES = 30
RECENT_BUILDS = 10


@contextlib.contextmanager
def jenkins_errors(what: str) -> Iterator[None]:
    try:
        yield
    except jenkins.NotFoundException as e:
        raise non_retryable("NotFound", f"{what}: {e}") from None
    except jenkins.JenkinsException as e:
        text = str(e)
        if re.search(r"\[40[13]\]", text) or "authentication failed" in text.lower():
            raise non_retryable("Unauthorized", f"{what}: {text[:300]}") from None
        if re.search(r"\[40[0-9]\]|\[4[1-9][0-9]\]", text) and "[408]" not in text and "[429]" not in text:
            raise non_retryable("InvalidInput", f"{what}: {text[:300]}") from None
        raise retryable(f"{what}: {text[:300]}") from None
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else None
        raise_for_status(status, what)
    except (requests.ConnectionError, requests.Timeout, TimeoutError) as e:
        raise retryable(f"{what}: Jenkins unreachable: {type(e).__name__}") from None


def job_config(service: str, repo_url: str, run_id: str) -> str:
    """A parameterised pipeline (GIT_REF, IMAGE) that builds from the service's repo."""
    root = ET.Element("flow-definition", plugin="workflow-job")
    ET.SubElement(root, "description").text = (
        f"Kepler build job for {service} ({naming.CREATED_BY_RUN} {run_id})")
    ET.SubElement(root, "keepDependencies").text = "false"
    props = ET.SubElement(root, "properties")
    params = ET.SubElement(ET.SubElement(props, "hudson.model.ParametersDefinitionProperty"),
                           "parameterDefinitions")
    for name, description in (("GIT_REF", "commit to build"), ("IMAGE", "repository:tag to push")):
        p = ET.SubElement(params, "hudson.model.StringParameterDefinition")
        ET.SubElement(p, "name").text = name
        ET.SubElement(p, "description").text = description
        ET.SubElement(p, "trim").text = "true"
    definition = ET.SubElement(root, "definition", {
        "class": "org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition", "plugin": "workflow-cps"})
    scm = ET.SubElement(definition, "scm", {"class": "hudson.plugins.git.GitSCM", "plugin": "git"})
    remotes = ET.SubElement(scm, "userRemoteConfigs")
    ET.SubElement(ET.SubElement(remotes, "hudson.plugins.git.UserRemoteConfig"), "url").text = repo_url
    branches = ET.SubElement(scm, "branches")
    ET.SubElement(ET.SubElement(branches, "hudson.plugins.git.BranchSpec"), "name").text = "${GIT_REF}"
    ET.SubElement(definition, "scriptPath").text = "Jenkinsfile"
    ET.SubElement(definition, "lightweight").text = "true"
    return "<?xml version='1.1' encoding='UTF-8'?>\n" + ET.tostring(root, encoding="unicode")


def backup_job(service: str, run_id: str) -> str:
    return f"{naming.jenkins_job(service)}.before-run-{run_id}"


_BACKUP_HEADER = "Kepler keeps here the config of {job} as it was before run {run} adopted it; " \
    "an undo of that run puts it back.\n--- config.xml ---\n"


def backup_config(job: str, run_id: str, original: str) -> str:
    """A disabled job that builds nothing, holding `original` verbatim in its description."""
    root = ET.Element("project")
    ET.SubElement(root, "description").text = _BACKUP_HEADER.format(job=job, run=run_id) + original
    ET.SubElement(root, "keepDependencies").text = "false"
    ET.SubElement(root, "disabled").text = "true"
    ET.SubElement(root, "builders")
    return "<?xml version='1.1' encoding='UTF-8'?>\n" + ET.tostring(root, encoding="unicode")


def original_config(backup: str) -> str:
    description = ET.fromstring(backup).findtext("description") or ""
    _, marker, original = description.partition("\n--- config.xml ---\n")
    if not marker or not original.strip():
        raise non_retryable("InvalidBackup", "the backup job holds no config.xml")
    return original


class JenkinsActivities:
    def __init__(self, platform: Platform, secrets: Secrets) -> None:
        self.config = platform.jenkins
        self._token = secrets.jenkins_token

    def client(self) -> jenkins.Jenkins:
        server = jenkins.Jenkins(self.config.url, username=self.config.user,
                                 password=self._token.get_secret_value(), timeout=15)
        server._session = retrying_jenkins_session()  # python-jenkins has no public hook
        return server

    @activity.defn(name="jenkins.ensure_job")
    def ensure_job(self, req: EnsureJob) -> bool:
        """Create the build job, or bring an existing one to the template. True if created.
        An existing job's config is kept first in a disabled backup job (in Jenkins, never
        in the workflow: it may hold anything), so an undo can put it back exactly."""
        name = naming.jenkins_job(req.service)
        server = self.client()
        with jenkins_errors(f"Jenkins job {name}"):
            if server.job_exists(name):
                config = server.get_job_config(name)
                description = ET.fromstring(config).findtext("description") or ""
                if f"{naming.CREATED_BY_RUN} {req.run_id})" in description:  # ours: a retry
                    server.reconfig_job(name, job_config(req.service, req.repo_url, req.run_id))
                    return True
                backup = backup_job(req.service, req.run_id)
                if not server.job_exists(backup):  # a retry keeps the first (the original)
                    server.create_job(backup, backup_config(name, req.run_id, config))
                before = re.search(rf"{re.escape(naming.CREATED_BY_RUN)} ([^)\s]+)\)", description)
                server.reconfig_job(name, job_config(req.service, req.repo_url,
                                                     before.group(1) if before else "adopted"))
                return False
            server.create_job(name, job_config(req.service, req.repo_url, req.run_id))
            return True

    @activity.defn(name="jenkins.delete_job_if_created")
    def delete_job_if_created(self, undo: UndoCreated) -> bool:
        """Undo ensure_job: delete the job if this run created it; if it adopted one, put
        the job's config back from the backup and drop the backup."""
        name = naming.jenkins_job(undo.service)
        server = self.client()
        with jenkins_errors(f"delete Jenkins job {name}"):
            backup = backup_job(undo.service, undo.run_id)
            if server.job_exists(backup):
                original = original_config(server.get_job_config(backup))
                if server.job_exists(name):
                    server.reconfig_job(name, original)
                else:
                    server.create_job(name, original)
                server.delete_job(backup)
                return True
            if not server.job_exists(name):
                return False
            description = ET.fromstring(server.get_job_config(name)).findtext("description") or ""
            if f"{naming.CREATED_BY_RUN} {undo.run_id})" not in description:
                return False
            server.delete_job(name)
            return True

    @activity.defn(name="jenkins.drop_backup")
    def drop_backup(self, undo: UndoCreated) -> bool:
        """After a create went through: the adopted job's old config is no longer needed."""
        server = self.client()
        backup = backup_job(undo.service, undo.run_id)
        with jenkins_errors(f"delete Jenkins job {backup}"):
            if not server.job_exists(backup):
                return False
            server.delete_job(backup)
            return True

    @activity.defn(name="jenkins.build")
    def build(self, req: BuildRequest) -> BuildResult:
        """Trigger one build and wait for it, heartbeating. A retry resumes the build it
        already triggered (queue item and number are kept in the heartbeat details)."""
        name = naming.jenkins_job(req.service)
        server = self.client()
        progress: dict[str, Any] = {}
        details = activity.info().heartbeat_details
        if details:
            progress = dict(details[0])
        with jenkins_errors(f"build {name} at {req.commit[:12]}"):
            if "queue_item" not in progress and "number" not in progress:
                found = self._existing_build(server, name, req)
                if found is not None:  # triggered by a try that died before it could say so
                    progress["number"] = found
            if "queue_item" not in progress and "number" not in progress:
                progress["queue_item"] = server.build_job(
                    name, parameters={"GIT_REF": req.commit, "IMAGE": req.image})
                activity.heartbeat(progress)
            while "number" not in progress:
                item = server.get_queue_item(progress["queue_item"])
                if item.get("cancelled"):
                    raise non_retryable("BuildFailed", f"build of {name} was cancelled in the queue")
                executable = item.get("executable")
                if executable:
                    progress["number"] = executable["number"]
                activity.heartbeat(progress)
                if "number" not in progress:
                    time.sleep(POLL_SECONDS)
            number = progress["number"]
            while True:
                info = server.get_build_info(name, number)
                if not info.get("building") and info.get("result"):
                    break
                activity.heartbeat({**progress, "state": "building"})
                time.sleep(POLL_SECONDS)
            result = info["result"]
            if result != "SUCCESS":
                log = server.get_build_console_output(name, number)
                tail = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
                raise non_retryable("BuildFailed", f"build {name} #{number} ended {result}; "
                                    f"log tail:\n{tail}")
        return BuildResult(number=number, result=result, duration_ms=info.get("duration", 0))

    @staticmethod
    def _existing_build(server: jenkins.Jenkins, name: str, req: BuildRequest) -> int | None:
        """A recent build of exactly this commit and image that is running or passed."""
        wanted = {"GIT_REF": req.commit, "IMAGE": req.image}
        for ref in server.get_job_info(name).get("builds", [])[:RECENT_BUILDS]:
            info = server.get_build_info(name, ref["number"])
            if not info.get("building") and info.get("result") != "SUCCESS":
                continue
            for action in info.get("actions") or []:
                params = {p.get("name"): p.get("value") for p in (action or {}).get("parameters", [])}
                if params and all(params.get(k) == v for k, v in wanted.items()):
                    return ref["number"]
        return None

    @activity.defn(name="jenkins.delete_job")
    def delete_job(self, service: str) -> bool:
        name = naming.jenkins_job(service)
        server = self.client()
        with jenkins_errors(f"delete Jenkins job {name}"):
            if not server.job_exists(name):
                return False
            server.delete_job(name)
            return True
