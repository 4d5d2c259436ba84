"""`kepler codec-server`: the Temporal UI's remote codec endpoint (ASGI, Starlette).

The UI (and `temporal` CLI with --codec-endpoint) POSTs `{"payloads": [...]}` (protobuf
JSON) to `/decode` and `/encode`; this server runs them through the same AES-GCM codec
as the worker. Requests need `Authorization: Bearer <KEPLER_CODEC_AUTH_TOKEN>`; browsers
may call it from the origins in `KEPLER_CODEC_CORS_ORIGINS` (default: the local UI).
"""

from __future__ import annotations

import hmac
import os
from typing import Sequence

import typer
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from kepler.codec import CodecError, EncryptionCodec
from starter.cli_common import BAD_INPUT, OK, CliError, command
from starter.http_body import BodyTooLarge, read_body

DEFAULT_ORIGINS = ("http://127.0.0.1:8233", "http://localhost:8233", "http://localhost:8080")
ENV_TOKEN = "KEPLER_CODEC_AUTH_TOKEN"
ENV_ORIGINS = "KEPLER_CODEC_CORS_ORIGINS"
MAX_BODY = 8 * 1024 * 1024


def create_app(codec: EncryptionCodec, token: str, origins: Sequence[str] = DEFAULT_ORIGINS) -> Starlette:
    if not token:
        raise ValueError(f"{ENV_TOKEN} must be set: the codec server never runs without auth")
    expected = f"Bearer {token}".encode()

    async def run(request: Request, encode: bool) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error": "unauthorized"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge as e:
            return JSONResponse({"error": str(e)}, status_code=413)
        try:
            payloads = json_format.Parse(body or b"{}", Payloads())
        except (json_format.ParseError, ValueError) as e:
            return JSONResponse({"error": f"invalid payloads: {e}"}, status_code=400)
        try:
            out = await (codec.encode if encode else codec.decode)(list(payloads.payloads))
        except CodecError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        text = json_format.MessageToJson(Payloads(payloads=out))
        return Response(text, media_type="application/json")

    async def decode(request: Request) -> Response:
        return await run(request, encode=False)

    async def encode(request: Request) -> Response:
        return await run(request, encode=True)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "current_key": codec.current})

    return Starlette(routes=[
        Route("/decode", decode, methods=["POST"]),
        Route("/encode", encode, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
    ], middleware=[Middleware(
        CORSMiddleware, allow_origins=list(origins), allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"], allow_credentials=True,
        max_age=600)])


def app_from_env() -> Starlette:
    from kepler.codec import ENV_KEYS, codec_from_env

    codec = codec_from_env()
    if codec is None:
        raise ValueError(f"{ENV_KEYS} is not set: there is nothing to decode with")
    origins = [o.strip() for o in os.environ.get(ENV_ORIGINS, "").split(",") if o.strip()]
    return create_app(codec, os.environ.get(ENV_TOKEN, ""), origins or DEFAULT_ORIGINS)


def register(app: typer.Typer) -> None:
    @command(app, "codec-server", output=False)
    def codec_server(host: str = typer.Option("127.0.0.1", help="address to listen on"),
                     port: int = typer.Option(8234, help="port to listen on")) -> int:
        """Serve /decode and /encode for the Temporal UI (keys from KEPLER_CODEC_KEYS,
        bearer token from KEPLER_CODEC_AUTH_TOKEN, origins from KEPLER_CODEC_CORS_ORIGINS)."""
        import uvicorn

        try:
            asgi = app_from_env()
        except ValueError as e:
            raise CliError(str(e), BAD_INPUT) from None
        uvicorn.run(asgi, host=host, port=port, log_level="warning")
        return OK


__all__ = ["create_app", "app_from_env", "register"]
