"""What every operation command needs: the platform file, the acting user, a Temporal
client, validated requests, and a way to turn outcomes into exit codes."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Callable, TypeVar

from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from kepler.settings import ConfigError, Platform, load_platform
from kepler.temporal import connect
from kepler.validation import describe_validation_error
from starter.output import BAD_INPUT, FAILED, REFUSED, CliError
from starter.ops import Refused

T = TypeVar("T")


def platform() -> Platform:
    try:
        return load_platform()
    except ConfigError as e:
        raise CliError(str(e), BAD_INPUT) from None


def acting_user(p: Platform, as_user: str | None) -> str:
    if as_user:
        if p.identity != "env-or-as":
            raise CliError("--as: this platform takes the user from KEPLER_USER only", BAD_INPUT)
        return as_user
    user = os.environ.get("KEPLER_USER")
    if not user:
        raise CliError("KEPLER_USER is not set: who is acting? (or pass --as USER)", BAD_INPUT)
    return user


def check_env(p: Platform, env: str) -> None:
    if env not in p.environments:
        raise CliError(f"--env: unknown environment {env!r} (configured: "
                       f"{', '.join(sorted(p.environments))})", BAD_INPUT)


def check_target(p: Platform, service: str, env: str) -> None:
    """SERVICE and --env of a command that addresses `<service>@<env>` (or `@all`)."""
    from kepler.validation import service_name

    try:
        service_name(service)
    except ValueError as e:
        raise CliError(f"service: {e}", BAD_INPUT) from None
    if env != "all":
        check_env(p, env)


def build(model: Callable[..., T], **fields: Any) -> T:
    """A validated request, or exit 2 naming the field and the rule."""
    try:
        return model(**fields)
    except ValidationError as e:
        raise CliError(describe_validation_error(e), BAD_INPUT) from None


def ui_link(p: Platform, workflow_id: str, run_id: str = "") -> str:
    base = f"{p.temporal.ui_url.rstrip('/')}/namespaces/{p.temporal.namespace}/workflows/{workflow_id}"
    return f"{base}/{run_id}/history" if run_id else base


async def client(p: Platform) -> Client:
    try:
        return await asyncio.wait_for(connect(p.temporal.address, p.temporal.namespace), 15)
    except (RPCError, RuntimeError, asyncio.TimeoutError, OSError) as e:
        raise CliError(f"cannot reach Temporal at {p.temporal.address}: {e} "
                       "(is `kepler dev up` running?)", FAILED) from None


def run(coro: Awaitable[T]) -> T:
    """Run one command's coroutine, mapping Kepler's refusals and failures to exit codes."""
    async def guarded() -> T:
        try:
            return await coro
        except Refused as e:
            raise CliError(str(e), REFUSED) from None
        except WorkflowFailureError as e:
            cause = e.cause
            while getattr(cause, "cause", None) is not None and not getattr(cause, "message", ""):
                cause = cause.cause
            raise CliError(getattr(cause, "message", str(cause)), FAILED) from None

    return asyncio.run(guarded())
