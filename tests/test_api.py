"""The documented `chat` API, driven with gradio_client like an API user would."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from chatlib.usage import read_usage
from tests import stored
from tests.conftest import AppServer
from tests.fakes.openrouter import FakeOpenRouter, expected_reply


@pytest.fixture(scope="module")
def client(app_server: AppServer) -> Client:
    return Client(app_server.url, verbose=False)


def test_chat_streams_a_growing_answer(client: Client, fake: FakeOpenRouter) -> None:
    job = client.submit(
        "Stream to me [[tokens=30]] [[rate=30]]",
        "openai/gpt-4o-mini",
        "Be brief.",
        0.5,
        [],
        api_name="/chat",
    )
    partials = list(job)
    final = job.outputs()[-1]
    assert final == expected_reply("Stream to me", 30)
    assert len(set(partials)) >= 3  # it arrived in pieces, not at the end
    assert all(final.startswith(p) for p in partials)
    body = fake.chat_requests()[-1].body
    assert body["model"] == "openai/gpt-4o-mini"
    assert body["temperature"] == 0.5
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_only_the_message_is_required(client: Client, fake: FakeOpenRouter) -> None:
    answer = client.predict("Just this [[tokens=5]]", api_name="/chat")
    assert answer == expected_reply("Just this", 5)
    body = fake.chat_requests()[-1].body
    assert body["model"] == "openai/gpt-4o"
    assert body["temperature"] == 0.3


def test_prior_messages_are_sent_upstream(client: Client, fake: FakeOpenRouter) -> None:
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
    ]
    client.predict(
        "What is my name? [[tokens=3]]", "openai/gpt-4o", "", 0.3, history, api_name="/chat"
    )
    sent = fake.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent] == [
        "My name is Ada.",
        "Hello Ada.",
        "What is my name? [[tokens=3]]",
    ]


def test_oversize_message_is_refused_without_an_upstream_call(
    client: Client, fake: FakeOpenRouter
) -> None:
    with pytest.raises(AppError, match="8,001 characters"):
        client.predict("x" * 8001, api_name="/chat")
    assert fake.chat_requests() == []


def test_bad_history_is_refused_with_a_reason(client: Client, fake: FakeOpenRouter) -> None:
    with pytest.raises(AppError, match="role"):
        client.predict(
            "hi", "openai/gpt-4o", "", 0.3, [{"role": "tool", "content": "x"}], api_name="/chat"
        )
    assert fake.chat_requests() == []


def test_upstream_errors_reach_the_caller(client: Client) -> None:
    with pytest.raises(AppError, match="out of credits"):
        client.predict("hi [[error=402]]", api_name="/chat")


def test_midstream_failure_delivers_partial_text_then_the_error(client: Client) -> None:
    job = client.submit("Break [[tokens=20]] [[midstream_error=5]] [[rate=50]]", api_name="/chat")
    with pytest.raises(AppError, match="interrupted"):
        job.result()
    assert expected_reply("Break", 5).startswith(job.outputs()[-1])
    assert job.outputs()[-1]


def test_chat_is_the_only_public_endpoint(client: Client) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/chat"}
    assert not api["unnamed_endpoints"]


def test_the_api_neither_reads_nor_writes_stored_conversations(
    client: Client, app_server: AppServer
) -> None:
    # The database exists (the read-only reader refuses a missing file); the app is shared
    # with the browser modules, so what counts is that the call adds no chat.
    before = stored.conversations(app_server.workdir / ".data")
    client.predict("Nothing of this is stored [[tokens=3]]", api_name="/chat")
    assert stored.conversations(app_server.workdir / ".data") == before
    api = client.view_api(return_format="dict", print_info=False)
    parameters = [p["parameter_name"] for p in api["named_endpoints"]["/chat"]["parameters"]]
    assert parameters == [
        "message",
        "model",
        "system_prompt",
        "temperature",
        "history",
        "files",
        "web_search",
        "reasoning_effort",
        "max_tokens",
    ]


def test_inputs_that_would_cost_the_operator_dearly_are_refused(
    client: Client, fake: FakeOpenRouter
) -> None:
    many = [{"role": "user", "content": "x"}] * 1_001
    with pytest.raises(AppError, match="at most 1,000 messages"):
        client.predict("hi", "openai/gpt-4o", "", 0.3, many, api_name="/chat")
    with pytest.raises(AppError, match="system prompt is 8,001 characters"):
        client.predict("hi", "openai/gpt-4o", "s" * 8_001, 0.3, api_name="/chat")
    with pytest.raises(AppError, match="not a model id"):
        client.predict("hi", "m" * 5_000, api_name="/chat")
    with pytest.raises(AppError, match="between 0 and 2"):
        client.predict("hi", "openai/gpt-4o", "", 7, api_name="/chat")
    assert fake.chat_requests() == []


def test_a_picture_sent_with_handle_file_reaches_a_vision_model(
    client: Client, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), "teal").save(photo)
    answer = client.predict(
        "What is this? [[tokens=3]]",
        "openai/gpt-4o",
        files=[handle_file(str(photo))],
        api_name="/chat",
    )
    assert answer == expected_reply("What is this?", 3)
    parts = fake.chat_requests()[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in parts].count("image_url") == 1


def test_files_are_checked_like_the_page_s(
    client: Client, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    disguised = tmp_path / "photo.png"
    disguised.write_bytes(b"MZ\x90\x00" + bytes(range(256)) * 8)
    with pytest.raises(AppError, match="photo.png"):
        client.predict("Look [[tokens=3]]", files=[handle_file(str(disguised))], api_name="/chat")
    # A path on the server, not an upload, is refused whatever the caller claims.
    server_file = {"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}
    with httpx.Client(base_url=client.src) as http:
        started = http.post(
            "/gradio_api/call/chat", json={"data": ["hi", None, None, None, None, [server_file]]}
        )
        result = http.get(f"/gradio_api/call/chat/{started.json()['event_id']}").text
    assert "event: error" in result
    assert fake.chat_requests() == []


def test_uploads_much_bigger_than_an_import_are_refused(app_server: AppServer) -> None:
    # Any visitor can upload; only imports use it, so a big file must not reach the disk.
    big = b"x" * (10_000_000 + 1)
    response = httpx.post(
        f"{app_server.url}gradio_api/upload", files={"files": ("big.json", big)}, timeout=60
    )
    assert response.status_code == 413
    small = httpx.post(
        f"{app_server.url}gradio_api/upload", files={"files": ("ok.json", b"{}")}, timeout=60
    )
    assert small.status_code == 200


def test_a_caller_cancelling_mid_answer_still_leaves_a_usage_row(
    client: Client, app_server: AppServer
) -> None:
    usage_dir = app_server.workdir / ".data" / "usage"

    def stopped_rows() -> int:
        if not usage_dir.exists():
            return 0
        return sum(r.status == "stopped" for r in read_usage(usage_dir))

    before = stopped_rows()
    job = client.submit("Cancel me [[tokens=400]] [[rate=20]]", api_name="/chat")
    deadline = time.monotonic() + 30
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.outputs(), "no text arrived"
    job.cancel()
    while stopped_rows() == before and time.monotonic() < deadline + 30:
        time.sleep(0.1)
    assert stopped_rows() == before + 1


def test_web_search_sources_follow_the_finished_answer(
    client: Client, fake: FakeOpenRouter
) -> None:
    job = client.submit(
        "Search for me [[tokens=20]] [[rate=40]]", web_search=True, api_name="/chat"
    )
    partials = list(job)
    final = job.outputs()[-1]
    reply = expected_reply("Search for me", 20)
    assert final == (
        f"{reply}\n\nSources:\n"
        "1. Source 1 — https://example.com/source-1\n"
        "2. Source 2 — https://example.com/source-2\n"
        "3. Source 3 — https://example.com/source-3"
    )
    assert all(final.startswith(p) for p in partials)  # while it streams: the text so far
    tools = fake.chat_requests()[-1].body["tools"]
    assert tools == [{"type": "openrouter:web_search", "parameters": {"max_results": 5}}]


def test_reasoning_effort_and_answer_length_reach_upstream(
    client: Client, fake: FakeOpenRouter
) -> None:
    answer = client.predict(
        "Think [[tokens=5]]",
        "deepseek/deepseek-r1",
        reasoning_effort="low",
        max_tokens=3,
        api_name="/chat",
    )
    assert answer == expected_reply("Think", 3)  # the fake stops at max_tokens
    body = fake.chat_requests()[-1].body
    assert body["reasoning"] == {"effort": "low"}
    assert body["max_tokens"] == 3
    assert "tools" not in body
    # A model that does not reason is not sent the effort; without the options: nothing.
    client.predict("Plain [[tokens=3]]", "openai/gpt-4o", reasoning_effort="high", api_name="/chat")
    assert "reasoning" not in fake.chat_requests()[-1].body
    client.predict("Default [[tokens=3]]", api_name="/chat")
    assert not {"reasoning", "max_tokens", "tools"} & set(fake.chat_requests()[-1].body)


def test_odd_answer_options_are_refused_naming_them(client: Client, fake: FakeOpenRouter) -> None:
    with pytest.raises(AppError, match="Invalid reasoning_effort"):
        client.predict("hi", reasoning_effort="extreme", api_name="/chat")
    with pytest.raises(AppError, match="Invalid max_tokens"):
        client.predict("hi", max_tokens=0, api_name="/chat")
    with httpx.Client(base_url=client.src) as http:
        data = ["hi", None, None, None, None, None, "yes"]
        started = http.post("/gradio_api/call/chat", json={"data": data})
        result = http.get(f"/gradio_api/call/chat/{started.json()['event_id']}").text
    assert "event: error" in result and "Invalid web_search" in result
    assert fake.chat_requests() == []


def test_an_old_rest_caller_sending_six_values_still_gets_an_answer(
    client: Client, fake: FakeOpenRouter
) -> None:
    with httpx.Client(base_url=client.src, timeout=30) as http:
        data = ["Old style [[tokens=3]]", "openai/gpt-4o", "", 0.3, [], None]
        started = http.post("/gradio_api/call/chat", json={"data": data})
        result = http.get(f"/gradio_api/call/chat/{started.json()['event_id']}").text
    assert "event: complete" in result
    assert expected_reply("Old style", 3) in result
    assert "tools" not in fake.chat_requests()[-1].body
