"""Real receivers on loopback for notification tests: an HTTP endpoint that records what
it gets, and an aiosmtpd SMTP server (plain or STARTTLS with a throwaway certificate)."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.helpers import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def serve(port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """`handler` on 127.0.0.1:`port`, in a daemon thread; `shutdown()` and
    `server_close()` it when done."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class HttpReceiver:
    """Records every POST; answers with `statuses` in turn, then with 200."""
    statuses: list[int] = field(default_factory=list)
    reply: bytes = b"ok"
    received: list[Received] = field(default_factory=list)
    reply_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        receiver = self
        self.port = free_port()
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", str(len(receiver.reply)))
                for name, value in receiver.reply_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(receiver.reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve(self.port, Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/T0K3N"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ForbiddingApiServer:
    """A Kubernetes API server to a service account that may read but not write (RBAC):
    every read finds nothing (404), every write is forbidden (403); Status bodies."""

    def __init__(self) -> None:
        self.port = free_port()

        def status(code: int, reason: str, message: str) -> bytes:
            return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": reason, "code": code, "message": message}).encode()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, code: int, body: bytes) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer(404, status(404, "NotFound", f"{self.path} not found"))

            def _refuse(self) -> None:
                self._answer(403, status(403, "Forbidden", "forbidden: kepler may not write here"))

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve(self.port, Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              message_from_bytes(envelope.content)))
        return "250 OK"


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class SmtpServer:
    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.sink = _Sink()
        self.port = free_port()
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port,
                                     tls_context=context, require_starttls=bool(tls))
        self.controller.start()

    @property
    def messages(self) -> list[tuple[str, list[str], Message]]:
        return self.sink.messages

    def close(self) -> None:
        self.controller.stop()
