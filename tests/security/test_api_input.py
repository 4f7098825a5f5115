"""Break 5 and the OWASP basics of the API: wrong types, garbage and oversized bodies."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import AppServer
from tests.fakes.openrouter import FakeOpenRouter
from tests.security.conftest import LogTail, http_from

TEN_MB = 10_000_000


@pytest.fixture(scope="module")
def client(security_app: AppServer) -> Iterator[Client]:
    yield Client(security_app.url, verbose=False)


def ask(client: Client, **inputs: Any) -> str:
    arguments = {
        "message": "hi",
        "model": "openai/gpt-4o",
        "system_prompt": "",
        "temperature": 0.3,
        "history": [],
    }
    arguments.update(inputs)
    return str(client.predict(*arguments.values(), api_name="/chat"))


@pytest.mark.parametrize(
    ("parameter", "value", "said"),
    [
        ("message", 123, "Invalid message: expected text, got a number"),
        ("message", [1, 2], "Invalid message: expected text, got a list"),
        ("message", None, "Invalid message: expected text, got null"),
        ("message", {}, "Invalid message: expected text, got an object"),
        ("temperature", "hot", "Invalid temperature: expected a number"),
        ("history", "x", "Invalid history: expected a list of messages"),
    ],
    ids=lambda v: repr(v)[:12],
)
def test_a_wrong_type_is_refused_in_one_line_naming_the_parameter(
    client: Client,
    security_app: AppServer,
    fake: FakeOpenRouter,
    parameter: str,
    value: Any,
    said: str,
) -> None:
    tail = LogTail(security_app)
    with pytest.raises(AppError) as refused:
        ask(client, **{parameter: value})
    message = str(refused.value)
    assert said in message
    assert "\n" not in message.strip()
    assert fake.chat_requests() == []
    assert "Traceback" not in tail.new()


def test_a_ten_megabyte_message_is_refused_as_too_long_and_not_logged(
    client: Client, security_app: AppServer, fake: FakeOpenRouter
) -> None:
    tail = LogTail(security_app)
    marker = secrets.token_hex(8)
    with pytest.raises(AppError, match=r"10,000,000 characters long; the limit is 8,000"):
        ask(client, message=marker + "x" * (TEN_MB - len(marker)))
    assert fake.chat_requests() == []
    written = tail.new()
    assert "Traceback" not in written
    assert marker not in written  # the text of a refused message never reaches the log
    with http_from(security_app.url) as http:
        assert http.get("config").status_code == 200


GARBAGE = [b"{not json", b"", b"[]", b'{"data": 5}', b"\xff\xfe", b'{"data": "x" * 3}']
JOIN = "gradio_api/queue/join"
CALL = "gradio_api/call/chat"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        *[(JOIN, b) for b in GARBAGE],
        *[(CALL, b) for b in GARBAGE],
        (JOIN, b'{"data": [1], "fn_index": "a", "session_hash": "s"}'),
    ],
    ids=repr,
)
def test_a_malformed_body_to_the_queue_is_a_clear_client_error(
    security_app: AppServer, route: str, body: bytes
) -> None:
    tail = LogTail(security_app)
    with http_from(security_app.url) as http:
        answer = http.post(route, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]
    assert "Traceback" not in tail.new()


def test_all_five_inputs_over_plain_http_get_a_message_too(security_app: AppServer) -> None:
    """The raw REST route (no gradio_client) refuses wrong types with the same words."""
    tail = LogTail(security_app)
    with http_from(security_app.url) as http:
        event = http.post("gradio_api/call/chat", json={"data": [123, None, None, None, None]})
        stream = http.get(f"gradio_api/call/chat/{event.json()['event_id']}")
    assert "event: error" in stream.text
    assert "Invalid message: expected text, got a number." in stream.text
    assert "Traceback" not in tail.new()


def test_a_message_alone_over_plain_http_is_answered_or_refused_with_a_reason(
    security_app: AppServer, fake: FakeOpenRouter
) -> None:
    tail = LogTail(security_app)
    marker = f"secret-text-{secrets.token_hex(6)}"
    answers = []
    with http_from(security_app.url) as http:
        for data in ([None], [marker]):
            event = http.post("gradio_api/call/chat", json={"data": data})
            answers.append(http.get(f"gradio_api/call/chat/{event.json()['event_id']}").text)
    written = tail.settled()
    assert marker not in written
    assert "Traceback" not in written
    assert not [a for a in answers if '{"error": null}' in a]


def test_an_unknown_event_number_is_a_client_error(security_app: AppServer) -> None:
    tail = LogTail(security_app)
    with http_from(security_app.url) as http:
        answer = http.post(
            "gradio_api/queue/join",
            json={"data": [], "fn_index": 9999, "session_hash": secrets.token_hex(5)},
        )
    written = tail.settled()
    assert answer.status_code < 500
    assert "Traceback" not in written
