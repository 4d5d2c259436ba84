"""Kepler's search attributes: what the Temporal UI filters and shows at a glance."""

from __future__ import annotations

from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey

SERVICE = SearchAttributeKey.for_keyword("KeplerService")
ENV = SearchAttributeKey.for_keyword("KeplerEnv")
OPERATION = SearchAttributeKey.for_keyword("KeplerOperation")
VERSION = SearchAttributeKey.for_keyword("KeplerVersion")
REQUESTED_BY = SearchAttributeKey.for_keyword("KeplerRequestedBy")
STAGE = SearchAttributeKey.for_keyword("KeplerStage")
OUTCOME = SearchAttributeKey.for_keyword("KeplerOutcome")
# What a change was, for the DORA metrics (kepler/metrics.py): written by releases and
# canaries with their outcome, in the one write the end makes anyway.
COMMIT = SearchAttributeKey.for_keyword("KeplerCommit")
COMMIT_TIME = SearchAttributeKey.for_datetime("KeplerCommitTime")
TEAM = SearchAttributeKey.for_keyword("KeplerTeam")

ALL_KEYS: list[SearchAttributeKey] = [SERVICE, ENV, OPERATION, VERSION, REQUESTED_BY, STAGE, OUTCOME,
                                      COMMIT, COMMIT_TIME, TEAM]


def type_name(key: SearchAttributeKey) -> str:
    """The type as `temporal operator search-attribute create --type` and the dev server's
    `--search-attribute NAME=TYPE` spell it."""
    return {SearchAttributeIndexedValueType.KEYWORD: "Keyword",
            SearchAttributeIndexedValueType.DATETIME: "Datetime"}[key.indexed_value_type]
