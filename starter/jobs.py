"""`kepler job run` and `kepler logs`: cronjob services run on demand, and pod logs
through the Kubernetes API."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kepler.jobs import RunJobRequest
from kepler.settings import Platform
from kepler.validation import parse_duration
from starter import session
from starter.cli_common import (
    BAD_INPUT, FAILED, OK, AsOpt, CliError, EnvOpt, command, err_console, subject_app,
)


def register(app: typer.Typer) -> None:
    job_app = subject_app("Cronjob services: run one now.", no_args_is_help=True)
    app.add_typer(job_app, name="job")

    @command(job_app, "run")
    def job_run(service: str, env: str = EnvOpt, reason: str = "",
                watch_it: bool = typer.Option(False, "--watch"), as_user: Optional[str] = AsOpt,
                *, as_json: bool) -> int:
        """Run the cronjob service SERVICE in ENV once, now (a Job from its CronJob), under
        the SERVICE@ENV lock; with --watch, wait for its verdict."""
        return session.start_operation(as_json, env, as_user, watch_it, RunJobRequest,
                                       service=service, reason=reason)

    @command(app)
    def logs(service: str, env: str = EnvOpt,
             since: Optional[str] = typer.Option(None, "--since", help="e.g. 10m, 1h"),
             follow: bool = typer.Option(False, "--follow", "-f", help="stream new lines"),
             version: str = typer.Option("stable", "--version", help="stable or canary"),
             tail: Optional[int] = typer.Option(None, "--tail", help="last N lines per pod"),
             *, as_json: bool) -> int:
        """Show (or --follow) the logs of SERVICE's pods in ENV, through the Kubernetes API."""
        p = session.platform()
        session.check_env(p, env)
        session.check_service(service)
        if version not in ("stable", "canary"):
            raise CliError("--version: must be stable or canary", BAD_INPUT)
        if tail is not None and tail < 0:
            raise CliError("--tail: must be 0 or more", BAD_INPUT)
        since_seconds = None
        if since is not None:
            try:
                since_seconds = int(parse_duration(since).total_seconds())
            except (ValueError, AttributeError) as e:
                raise CliError(f"--since: {e}", BAD_INPUT) from None
            if since_seconds <= 0:
                raise CliError("--since: must be more than 0s", BAD_INPUT)
        return _logs(p, service, env, version, since_seconds, tail, follow, as_json)


def _logs(p: Platform, service: str, env: str, version: str, since: int | None, tail: int | None,
          follow: bool, as_json: bool) -> int:
    from kepler.clients import pod_logs as k8s_logs
    from kepler.clients.kube import Clusters

    namespace = p.environment(env).namespace_for(service, env)
    try:
        core = k8s.CoreV1Api(Clusters(p)(env).api)
        pods = k8s_logs.service_pods(core, namespace, service, version)
    except ApiException as e:
        raise CliError(f"cannot list pods in {namespace}: {k8s_logs.reason(e)}", FAILED) from None
    except Exception as e:  # noqa: BLE001 - unreachable cluster, bad kubeconfig
        raise CliError(f"cannot reach the cluster of {env}: {type(e).__name__}: {e}", FAILED) from None
    started = [(pod.metadata.name, pod.spec.containers[0].name) for pod in pods
               if pod.status and pod.status.phase in k8s_logs.STARTED_PHASES]
    if not started:
        raise CliError(f"no {version} pods of {service} have started in {env} (namespace "
                       f"{namespace}); nothing to show", FAILED)
    problems: list[str] = []

    def show(line: "k8s_logs.LogLine") -> None:  # one line each; JSON lines with -o json
        typer.echo(json.dumps({"pod": line.pod, "line": line.text}) if as_json
                   else f"{line.pod} {line.text}")
        sys.stdout.flush()

    try:
        if follow:
            for line in k8s_logs.follow(core, namespace, started, since, tail, problems):
                show(line)
        else:
            for pod, container in started:
                try:
                    for line in k8s_logs.read(core, namespace, pod, container, since, tail):
                        show(line)
                except ApiException as e:
                    problems.append(f"{pod}: {k8s_logs.reason(e)}")
    except KeyboardInterrupt:
        return OK
    for problem in problems:
        err_console.print(f"warning: {problem}", highlight=False, markup=False)
    return OK if len(problems) < len(started) else FAILED
