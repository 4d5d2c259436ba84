"""The one place that says how Kepler talks to Temporal: converter and client."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec
from temporalio.runtime import Runtime


def data_converter(codec: PayloadCodec | None = None) -> DataConverter:
    """pydantic v2 models in every payload (workflow, activity, update, query), encrypted
    when `KEPLER_CODEC_KEYS` is set (kepler/codec.py); failure messages then too."""
    from kepler.codec import codec_from_env

    codec = codec or codec_from_env()
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec,
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)


async def connect(address: str, namespace: str = "default", runtime: Runtime | None = None,
                  interceptors: Sequence[Interceptor] = ()) -> Client:
    return await Client.connect(address, namespace=namespace, data_converter=data_converter(),
                                runtime=runtime, interceptors=interceptors)
