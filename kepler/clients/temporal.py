"""The one place that says how Kepler talks to Temporal: converter and client."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from typing import Any, Awaitable, Callable, Sequence

from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter, DataConverter, DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter, EncodingPayloadConverter, JSONPlainPayloadConverter, PayloadCodec,
)
from temporalio.runtime import Runtime


@functools.lru_cache(maxsize=1024)
def _type_adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


class _PydanticJSON(PydanticJSONPlainPayloadConverter):
    """temporalio.contrib.pydantic's JSON converter with its type adapters cached per
    process: the workflow sandbox makes a converter per workflow run, so a per-converter
    cache rebuilt every payload type's adapter on every run."""

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        try:
            adapter = _type_adapter(Any if type_hint is None else type_hint)
        except TypeError:  # an unhashable hint: the stock path
            return super().from_payload(payload, type_hint)
        return adapter.validate_json(payload.data)


@functools.cache
def _encoding_converters() -> tuple[EncodingPayloadConverter, ...]:
    json = _PydanticJSON()
    return tuple(json if isinstance(c, JSONPlainPayloadConverter) else c
                 for c in DefaultPayloadConverter.default_encoding_payload_converters)


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default converters, with pydantic v2 for JSON. The SDK makes a converter
    for every workflow activation (with its serialization context): they share one set of
    encoding converters, which hold no state of their own but caches."""

    def __init__(self) -> None:
        super().__init__(*_encoding_converters())


pydantic_data_converter = DataConverter(payload_converter_class=PayloadConverter)


def data_converter(codec: PayloadCodec | None = None) -> DataConverter:
    """pydantic v2 models in every payload (workflow, activity, update, query), encrypted
    when `KEPLER_CODEC_KEYS` is set (kepler/codec.py); failure messages then too."""
    from kepler.codec import codec_from_env

    codec = codec or codec_from_env()
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec,
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)


async def execution_info(client: Client, workflow_id: str, run_id: str = "") -> WorkflowExecutionInfo:
    """Temporal's record of a run (the latest of `workflow_id` without `run_id`): status,
    type, task queue, first run and parent, undecoded. `describe()` also decodes the memo
    and search attributes, the most of a describe's CPU and needed by none of the checks
    on the release path (authority, the service lock, the freeze lookup). Raises RPCError
    (NOT_FOUND: no such run)."""
    response = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(namespace=client.namespace, execution=WorkflowExecution(
            workflow_id=workflow_id, run_id=run_id)))
    return response.workflow_execution_info


async def connect(address: str, namespace: str = "default", runtime: Runtime | None = None,
                  interceptors: Sequence[Interceptor] = (), tls: Any = False,
                  api_key: str | None = None) -> Client:
    """A client with Kepler's converter; `tls` and `api_key` as TemporalConfig.connect_options."""
    return await Client.connect(address, namespace=namespace, data_converter=data_converter(),
                                runtime=runtime, interceptors=interceptors, tls=tls,
                                api_key=api_key)


class LazyClient:
    """One Temporal client, connected on first use and then shared: for the servers
    (chat-ops, alerts) and the activities that talk to Temporal themselves. Give it a
    connected client, a factory coroutine, or nothing to connect to `temporal`."""

    def __init__(self, temporal: Any | None,
                 client: Client | Callable[[], Awaitable[Client]] | None = None) -> None:
        self._temporal = temporal
        self._client = client if isinstance(client, Client) else None
        self._factory = None if isinstance(client, Client) else client
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        async with self._lock:
            if self._client is None:
                if self._factory is not None:
                    self._client = await self._factory()
                else:
                    assert self._temporal is not None, "a platform or a client"
                    self._client = await connect(self._temporal.address, self._temporal.namespace,
                                                 **self._temporal.connect_options())
            return self._client
