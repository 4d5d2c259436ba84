"""The per-call retry policy for transient HTTP failures (urllib3), shared by the
activities' HTTP sessions (activities/http_retry.py) and every Kubernetes API client
(kepler/clients/kube.py), the CLI's included.

Each *idempotent* call (GET, HEAD, PUT, DELETE) is retried a few times, quickly, when
the answer means "try again" (429, 502, 503, 504), the connection is refused, or the
response is cut off; any call, a POST too, is resent on an answer that says it was not
handled (429, 502, 503, 504).
"""

from __future__ import annotations

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
