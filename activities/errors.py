"""Error classification: what a retry cannot fix fails at once, with a type.

4xx validation, auth and not-found-where-it-must-exist are non-retryable; 5xx,
429, timeouts and connection errors are raised as retryable so the workflow's
retry policy waits them out.
"""

from __future__ import annotations

from typing import NoReturn

from temporalio.exceptions import ApplicationError


def non_retryable(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def retryable(message: str, kind: str = "Unavailable") -> ApplicationError:
    return ApplicationError(message, type=kind)


def raise_for_status(status: int | None, what: str, detail: str = "") -> NoReturn:
    """Raise the right ApplicationError for an HTTP status from `what`."""
    text = f"{what}: HTTP {status}" + (f": {detail[:500]}" if detail else "")
    if status in (400, 422):
        raise non_retryable("InvalidInput", text)
    if status in (401, 403):
        raise non_retryable("Unauthorized", text)
    if status == 404:
        raise non_retryable("NotFound", text)
    if status == 409:
        raise retryable(text, "Conflict409")
    raise retryable(text)
