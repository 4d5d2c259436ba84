"""Text a user typed (a reason, a comment) reaches chat and mail as text: a reason of
`<!channel> <https://evil.test|Approve>` pings nobody and links nowhere. Sent through
the real notify activity to real receivers (HTTP, SMTP)."""

from __future__ import annotations

from email.message import Message
from typing import Iterator

import pytest

from activities.notify import NotifyActivities
from kepler.notifications import Notification
from kepler.settings import Secrets
from tests.activities.test_notify import platform_with
from tests.receivers import HttpReceiver, SmtpServer

HOSTILE = "released: <!channel> <https://evil.test|Approve> [Approve](https://evil.test) <b>x</b> & *"


def hostile() -> Notification:
    return Notification(event="awaiting_approval", service="shop", env="prod", text=HOSTILE,
                        link="shop@prod")


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver(reply=b'{"errcode":0,"errmsg":"ok"}')
    yield r
    r.close()


def test_slack_text_is_escaped(receiver: HttpReceiver) -> None:
    p = platform_with({"channels": {"s": {"type": "slack", "url": receiver.url}}, "routes": [{"channels": ["s"]}]})
    NotifyActivities(p, Secrets()).notify(hostile())
    body = receiver.received[0].json()
    section = body["blocks"][0]["text"]["text"]
    for text in (section, body["text"]):
        assert "<!channel>" not in text and "<https://evil.test" not in text
        assert "&lt;!channel&gt; &lt;https://evil.test|Approve&gt;" in text and "&amp; *" in text
    # Kepler's own link still works
    assert body["blocks"][1]["elements"][0]["text"].startswith("<http://127.0.0.1:8233/")


def test_wecom_markdown_is_escaped(receiver: HttpReceiver) -> None:
    p = platform_with({"channels": {"w": {"type": "wecom", "url": receiver.url}}, "routes": [{"channels": ["w"]}]})
    NotifyActivities(p, Secrets()).notify(hostile())
    content = receiver.received[0].json()["markdown"]["content"]
    assert "[Approve](https://evil.test)" not in content and "\\[Approve\\](https://evil.test)" in content
    assert "\\<!channel\\>" in content and "\\<b\\>" in content


def test_html_mail_is_escaped() -> None:
    smtp = SmtpServer()
    try:
        p = platform_with({"channels": {"m": {"type": "email", "host": "127.0.0.1", "port": smtp.port,
                                              "sender": "kepler@example.test", "to": ["ops@example.test"],
                                              "security": "plain"}},
                           "routes": [{"channels": ["m"]}]})
        NotifyActivities(p, Secrets()).notify(hostile())
        (_, _, message), = smtp.messages
    finally:
        smtp.close()
    parts: dict[str, Message] = {part.get_content_type(): part for part in message.walk()}
    html = parts["text/html"].get_payload(decode=True).decode()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "&lt;!channel&gt;" in html
    assert parts["text/plain"].get_payload(decode=True).decode().startswith(HOSTILE)
