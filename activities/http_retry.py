"""Per-call retries for transient HTTP failures, under the activity-level retry policy.

An activity makes several calls; if each could only be retried by re-running the
whole activity, a flaky link (say 20 % of calls failing) would almost never let
a 30-call activity through. So each *idempotent* call (GET, HEAD, PUT, DELETE) is
retried a few times, quickly, when the answer means "try again" (429, 502, 503,
504), the connection is refused, or the response is cut off. A POST is resent only
on an answer that says it was not handled (429, 502, 503, 504); when its response
is lost, it fails the activity, whose retry re-reads the world first.

The urllib3 policy is kepler/retry.py (the Kubernetes API clients use it too); this
module mounts it on the requests sessions of GitLab and Jenkins.
"""

from __future__ import annotations

import time
from typing import Any

import jenkins
import requests
from requests.adapters import HTTPAdapter

from kepler.retry import ATTEMPTS, IDEMPOTENT, transient_retry


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
