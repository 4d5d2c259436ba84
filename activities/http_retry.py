"""Per-call retries for transient HTTP failures, under the activity-level retry policy.

An activity makes several calls; if each could only be retried by re-running the
whole activity, a flaky link (say 20 % of calls failing) would almost never let
a 30-call activity through. So each *idempotent* call (GET, HEAD, PUT, DELETE) is
retried a few times, quickly, when the answer means "try again" (429, 502, 503,
504), the connection is refused, or the response is cut off. A POST is resent only
on an answer that says it was not handled (429, 502, 503, 504); when its response
is lost, it fails the activity, whose retry re-reads the world first.
"""

from __future__ import annotations

import time
from typing import Any

import jenkins
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

TRANSIENT_STATUS = (429, 502, 503, 504)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
ATTEMPTS = 5


class _Retry(Retry):
    """429/502/503/504 mean the request was not handled: safe to resend for any method.
    Everything else (a reset read, say) is resent only for idempotent methods."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code in TRANSIENT_STATUS:
            method = "GET"
        return super().is_retry(method, status_code, has_retry_after)


def transient_retry() -> Retry:
    """urllib3's retry: refused connections and reset reads (idempotent methods), and
    answers meaning 'not handled, try again' (any method)."""
    return _Retry(total=ATTEMPTS, connect=ATTEMPTS, read=ATTEMPTS, status=ATTEMPTS, other=0,
                 backoff_factor=0.05, backoff_max=2.0, status_forcelist=TRANSIENT_STATUS,
                 allowed_methods=IDEMPOTENT, raise_on_status=False,
                 respect_retry_after_header=True)


class _ResendCutOff:
    """A response whose body was cut off is read inside Session.send; resend it there."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        attempts = ATTEMPTS if request.method in IDEMPOTENT else 1
        for attempt in range(attempts):
            try:
                return super().send(request, **kwargs)  # type: ignore[misc]
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")


class RetryingSession(_ResendCutOff, requests.Session):
    pass


class RetryingJenkinsSession(_ResendCutOff, jenkins.WrappedSession):
    pass


def mount_retries(session: requests.Session) -> requests.Session:
    adapter = HTTPAdapter(max_retries=transient_retry())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def retrying_session() -> requests.Session:
    return mount_retries(RetryingSession())


def retrying_jenkins_session() -> requests.Session:
    return mount_retries(RetryingJenkinsSession())
