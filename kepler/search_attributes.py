"""Kepler's search attributes: what the Temporal UI filters and shows at a glance."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

SERVICE = SearchAttributeKey.for_keyword("KeplerService")
ENV = SearchAttributeKey.for_keyword("KeplerEnv")
OPERATION = SearchAttributeKey.for_keyword("KeplerOperation")
VERSION = SearchAttributeKey.for_keyword("KeplerVersion")
REQUESTED_BY = SearchAttributeKey.for_keyword("KeplerRequestedBy")
STAGE = SearchAttributeKey.for_keyword("KeplerStage")
OUTCOME = SearchAttributeKey.for_keyword("KeplerOutcome")

ALL_KEYS: list[SearchAttributeKey] = [SERVICE, ENV, OPERATION, VERSION, REQUESTED_BY, STAGE, OUTCOME]
