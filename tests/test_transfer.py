"""Visitors download their conversations and bring them back; bad files are refused clearly."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from chatlib.attachments import Attachment
from chatlib.errors import ImportRejected
from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.options import AnswerOptions
from chatlib.sources import Source
from chatlib.storage import Conversation, ConversationStore, is_valid_conversation_id
from chatlib.transfer import (
    EXPORT_MAX_AGE_SECONDS,
    build_export,
    export_filename,
    export_json,
    export_markdown,
    parse_import,
    parse_import_file,
    write_export,
)
from tests.clocks import FakeClock
from tests.legacy import transfer as released_transfer

ALICE = "a1" * 16
BOB = "b2" * 16
CORPUS = Path(__file__).resolve().parent / "import_corpus"
NOW = datetime(2025, 6, 15, 12, 0, 5, tzinfo=UTC)
MB = 1_000_000
# The corpus is checked against small limits so its files stay small and readable.
CORPUS_LIMITS: dict[str, Any] = {
    "max_bytes": 100_000,
    "max_conversations": 5,
    "max_messages": 20,
    "max_message_chars": 1000,
}


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path, clock=FakeClock())


def _import(store: ConversationStore, owner: str, data: bytes, **limits: Any) -> list[Any]:
    """What an import does: check the whole file, then save all of it."""
    return store.save_all(owner, parse_import(data, **limits))


def _conversation(store: ConversationStore, owner: str, question: str) -> Conversation:
    conversation = replace(
        store.new_conversation("anthropic/claude-sonnet-4", "You are a pirate.", 0.7),
        messages=(
            ChatMessage("user", question, created_at=1_750_000_001.5),
            ChatMessage(
                "assistant",
                "Arr, <script>alert('x')</script> **bold** answer",
                reasoning="Let me think like a pirate.",
                meta=AnswerMeta(
                    model="anthropic/claude-sonnet-4",
                    status="complete",
                    prompt_tokens=12,
                    completion_tokens=30,
                    cost_usd=0.0012,
                    ttft_ms=250.0,
                    latency_ms=1500.0,
                    generation_id="gen-abc",
                ),
                created_at=1_750_000_003.0,
            ),
        ),
    )
    return store.save(owner, conversation)


def _content(conversation: Conversation) -> tuple[object, ...]:
    return (
        conversation.title,
        conversation.created_at,
        conversation.updated_at,
        conversation.model,
        conversation.system_prompt,
        conversation.temperature,
        conversation.messages,
    )


def _parse(data: bytes, **limits: Any) -> list[Conversation]:
    return parse_import(data, **{"max_bytes": 5 * MB, **limits})


# -- export -----------------------------------------------------------------------------------


def test_exported_conversations_come_back_whole_as_new_copies(store: ConversationStore) -> None:
    originals = [
        _conversation(store, ALICE, "Where is the treasure?"),
        _conversation(store, ALICE, "Hi"),
    ]
    data = export_json(originals, now=NOW)

    imported = _import(store, BOB, data, max_bytes=5 * MB)

    assert [_content(c) for c in imported] == [_content(c) for c in originals]
    assert {c.id for c in imported}.isdisjoint({c.id for c in originals})
    assert all(is_valid_conversation_id(c.id) for c in imported)
    assert sorted(s.id for s in store.list(BOB).conversations) == sorted(c.id for c in imported)
    # Importing the same file again adds copies; it never overwrites.
    _import(store, BOB, data, max_bytes=5 * MB)
    assert len(store.list(BOB).conversations) == 4
    assert len(store.list(ALICE).conversations) == 2


def test_the_export_holds_the_conversations_and_nothing_else(store: ConversationStore) -> None:
    conversation = _conversation(store, ALICE, "What do you know about me?")

    data = export_json([conversation], now=NOW)
    document = orjson.loads(data)

    assert set(document) == {"format", "schema_version", "exported_at", "conversations"}
    assert document["format"] == "openrouter-chat"
    assert document["schema_version"] == 1
    assert document["exported_at"] == "2025-06-15T12:00:05Z"
    assert document["conversations"] == [conversation.to_dict()]
    assert ALICE.encode() not in data


def test_the_download_is_named_by_its_utc_time() -> None:
    assert export_filename(NOW) == "chat_20250615T120005Z.json"
    paris = timezone(timedelta(hours=2))
    assert export_filename(datetime(2025, 6, 15, 14, 0, 5, tzinfo=paris)) == (
        "chat_20250615T120005Z.json"
    )


def test_exports_are_removed_after_an_hour(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    old = write_export(exports, b'{"old": true}', NOW, name="chat_old.md")
    assert old.name == "chat_old.md"
    hour_ago = time.time() - EXPORT_MAX_AGE_SECONDS - 60
    os.utime(old.parent, (hour_ago, hour_ago))
    recent = write_export(exports, b'{"recent": true}', NOW)
    assert not old.exists() and not old.parent.exists()
    assert recent.read_bytes() == b'{"recent": true}'


def test_two_visitors_exporting_in_the_same_second_get_their_own_files(tmp_path: Path) -> None:
    exports = tmp_path / "exports"

    mine = write_export(exports, b'{"mine": true}', NOW)
    theirs = write_export(exports, b'{"theirs": true}', NOW)

    assert mine != theirs
    assert mine.name == theirs.name == "chat_20250615T120005Z.json"
    assert mine.read_bytes() == b'{"mine": true}'
    assert theirs.read_bytes() == b'{"theirs": true}'
    assert exports in mine.parents and exports in theirs.parents
    assert mine.stat().st_mode & 0o777 == 0o600


def test_markdown_export_reads_like_the_chat(store: ConversationStore) -> None:
    conversation = _conversation(store, ALICE, "Where is the treasure?")

    markdown = export_markdown(conversation)

    assert markdown.startswith("# Where is the treasure?\n")
    assert "- Model: `anthropic/claude-sonnet-4`" in markdown
    assert "  > You are a pirate." in markdown
    assert "**You**\n\nWhere is the treasure?" in markdown
    assert "**Assistant** (anthropic/claude-sonnet-4 · 30 tokens · $0.0012)" in markdown
    assert "> Let me think like a pirate." in markdown
    assert "Arr, <script>alert('x')</script> **bold** answer" in markdown
    assert markdown.index("**You**") < markdown.index("**Assistant**")


SEARCHED = (
    Source("https://en.wikipedia.org/wiki/Treasure_(pirates)", "Treasure [pirates] (wiki)"),
    Source("https://www.example.org/map"),
    Source("javascript:alert(document.cookie)", "Click me"),
    Source("file:///etc/passwd\n\n# injected heading"),
)


def _searched(store: ConversationStore) -> Conversation:
    """A chat that searched the web: its options and an answer citing pages, some hostile."""
    chat = _conversation(store, ALICE, "Where is the treasure?")
    answer = chat.messages[1]
    assert answer.meta is not None
    cited = replace(answer, meta=replace(answer.meta, sources=SEARCHED))
    options = AnswerOptions(web_search=True, reasoning_effort="high", max_tokens=2000)
    return store.save(ALICE, replace(chat, messages=(chat.messages[0], cited), options=options))


def test_a_chats_options_and_an_answers_sources_travel_in_the_json_export(
    store: ConversationStore,
) -> None:
    chat = _searched(store)

    document = orjson.loads(export_json([chat], now=NOW))
    (imported,) = _import(store, BOB, export_json([chat], now=NOW), max_bytes=5 * MB)

    exported = document["conversations"][0]
    assert exported["options"] == {
        "web_search": True,
        "reasoning_effort": "high",
        "max_tokens": 2000,
    }
    assert exported["messages"][1]["meta"]["sources"][0] == {
        "url": "https://en.wikipedia.org/wiki/Treasure_(pirates)",
        "title": "Treasure [pirates] (wiki)",
    }
    assert imported.options == chat.options
    assert imported.messages[1].meta == chat.messages[1].meta
    assert store.load(BOB, imported.id).options == chat.options


def test_a_file_from_before_options_imports_with_the_defaults(store: ConversationStore) -> None:
    document = _conversation(store, ALICE, "Old chat").to_dict()
    del document["options"]

    (imported,) = _parse(orjson.dumps(document))

    assert imported.options == AnswerOptions()


def test_markdown_lists_an_answers_sources_numbered_and_links_only_web_pages(
    store: ConversationStore,
) -> None:
    markdown = export_markdown(_searched(store))

    assert "Sources:\n\n1. [Treasure \\[pirates\\] \\(wiki\\)](" in markdown
    assert "(https://en.wikipedia.org/wiki/Treasure_%28pirates%29) — en.wikipedia.org" in markdown
    assert "2. [example.org](https://www.example.org/map) — example.org" in markdown
    assert "3. Click me — ` javascript:alert(document.cookie) `" in markdown
    assert "4. ` file:///etc/passwd\ufffd\ufffd# injected heading `" in markdown
    assert markdown.index("Arr,") < markdown.index("Sources:")
    links = _links(markdown)
    assert links == [
        "https://en.wikipedia.org/wiki/Treasure_%28pirates%29",
        "https://www.example.org/map",
    ]
    assert "<h1>injected" not in MarkdownIt("commonmark").render(markdown)


def test_markdown_names_the_chats_options_only_when_they_are_not_the_defaults(
    store: ConversationStore,
) -> None:
    plain = export_markdown(_conversation(store, ALICE, "Hi"))
    searched = export_markdown(_searched(store))

    assert "Web search" not in plain and "Reasoning" not in plain and "Answer length" not in plain
    header = searched.split("---")[0]
    assert "- Web search: on\n- Reasoning effort: high\n- Answer length: at most 2,000 tokens" in (
        header
    )


def _links(markdown: str) -> list[str]:
    """Every link a Markdown viewer would make (none filtered out by the parser's own checks)."""
    parser = MarkdownIt("commonmark")
    parser.validateLink = lambda _url: True  # type: ignore[method-assign]
    found: list[str] = []
    tokens = list(parser.parse(markdown))
    while tokens:
        token = tokens.pop()
        tokens.extend(token.children or ())
        if token.type == "link_open":
            found.insert(0, str(token.attrs["href"]))
    return found


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            Source,
            url=st.text(min_size=1, max_size=60)
            | st.sampled_from(
                ["https://", "http://x/", "HTTPS://A.EXAMPLE/(", "javascript:x"]
            ).flatmap(lambda start: st.text(max_size=30).map(start.__add__)),
            title=st.text(max_size=40),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_whatever_a_source_says_the_markdown_links_only_web_pages(sources: list[Source]) -> None:
    answer = ChatMessage(
        "assistant", "Answer", meta=AnswerMeta("m/x", "complete", sources=tuple(sources))
    )
    chat = Conversation(
        "c" * 32, "Sources", 1.0, 1.0, "m/x", "", 0.3, (ChatMessage("user", "q"), answer)
    )

    markdown = export_markdown(chat)

    listed = markdown.split("Sources:\n\n", 1)[1].rstrip("\n").split("\n")
    assert [line.split(". ", 1)[0] for line in listed] == [
        str(n) for n in range(1, len(sources) + 1)
    ]
    for href in _links(markdown):
        assert href.lower().startswith(("http://", "https://"))
    assert len(_links(markdown)) == sum(s.link is not None for s in sources)


# -- import: what is accepted -----------------------------------------------------------------


def test_a_single_conversation_or_a_bare_list_can_be_imported(store: ConversationStore) -> None:
    conversation = _conversation(store, ALICE, "single")
    single = orjson.dumps(conversation.to_dict())
    bare_list = orjson.dumps([conversation.to_dict(), conversation.to_dict()])

    assert [_content(c) for c in _parse(single)] == [_content(conversation)]
    assert len(_parse(bare_list)) == 2


def test_a_file_saved_by_a_windows_editor_with_a_bom_is_accepted(
    store: ConversationStore,
) -> None:
    conversation = _conversation(store, ALICE, "from Notepad")

    imported = _parse(b"\xef\xbb\xbf" + export_json([conversation]))

    assert imported[0].title == "from Notepad"


def test_a_minimal_hand_written_file_gets_sensible_defaults() -> None:
    data = b"""{"model": "openai/gpt-4o", "temperature": 1,
               "messages": [{"role": "user", "content": "Write a haiku\\nabout rain"}]}"""

    (conversation,) = _parse(data, clock=lambda: 1_700_000_000.0)

    assert conversation.title == "Write a haiku"
    assert conversation.created_at == conversation.updated_at == 1_700_000_000.0
    assert conversation.system_prompt == ""


def test_html_stays_text_and_path_like_titles_stay_titles(
    store: ConversationStore, tmp_path: Path
) -> None:
    data = orjson.dumps(
        {
            "id": "../../" + ALICE + "/evil",
            "title": "../../etc/passwd\x00\u202e",
            "model": "openai/gpt-4o",
            "temperature": 0.3,
            "messages": [{"role": "user", "content": "<img src=x onerror=alert(1)>"}],
        }
    )

    (imported,) = _import(store, BOB, data, max_bytes=MB)

    assert imported.title == "../../etc/passwd"
    assert imported.messages[0].content == "<img src=x onerror=alert(1)>"
    assert is_valid_conversation_id(imported.id)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert names == [
        f"conversations/{BOB}/.lock",
        f"conversations/{BOB}/{imported.id}.json",
        f"conversations/{BOB}/index.jsonl",
    ]


# -- import: what is refused ------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_with_both_sizes() -> None:
    with pytest.raises(ImportRejected) as refused:
        parse_import(b" " * 6_200_000, max_bytes=5 * MB)

    assert refused.value.reason == "file is 6.2 MB; the limit is 5.0 MB"
    assert "Nothing was imported" in str(refused.value)


def test_a_file_just_over_the_limit_shows_exact_bytes() -> None:
    with pytest.raises(ImportRejected, match="file is 5,000,001 bytes; the limit is 5,000,000"):
        parse_import(b" " * 5_000_001, max_bytes=5 * MB)


# Each malformed file and the words its refusal must contain.
EXPECTED_REASONS = {
    "bad_utf8.json": "not valid UTF-8 (byte 0xe9",
    "boolean_timestamp.json": "conversation 1, field 'created_at' is a boolean, expected a number",
    "content_blocks.json": "conversation 1, message 1 has content that is a list, expected a str",
    "content_deeply_nested.json": "message 1 has content that is a list",
    "content_number.json": "message 1 has content that is a number, expected a string",
    "conversation_is_a_string.json": "conversation 2 is a string, expected an object",
    "conversations_not_a_list.json": "field 'conversations' is an object, expected a list",
    "empty.json": "file is empty",
    "infinite_number.json": "file is not JSON: number is infinity",
    "message_not_an_object.json": "conversation 1, message 1 is a string, expected an object",
    "message_too_long.json": "message 1 content is 1,001 characters; the limit is 1,000",
    "messages_not_a_list.json": "field 'messages' is a string, expected a list",
    "missing_content.json": "conversation 1, message 1 is missing the field 'content'",
    "missing_messages.json": "conversation 1 is missing the field 'messages'",
    "missing_model.json": "conversation 1 is missing the field 'model'",
    "missing_role.json": "conversation 1, message 1 is missing the field 'role'",
    "model_too_long.json": "field 'model' is 302 characters; the limit is 200",
    "model_with_spaces.json": "field 'model' contains spaces or control characters",
    "nan_temperature.json": "file is not JSON: unexpected character",
    "negative_cost.json": "message 1, meta, field 'cost_usd' is -1, expected a number from 0",
    "max_tokens_fraction.json": "options, field 'max_tokens' is 12.5, expected null or a whole",
    "max_tokens_zero.json": "conversation 1, options, field 'max_tokens' is 0, expected null or",
    "negative_tokens.json": "field 'completion_tokens' is a number, expected a whole number ≥ 0",
    "nested_too_deep.json": "file is not JSON: depth limit exceeded",
    "newer_schema.json": "schema_version 2, newer than this app reads (1)",
    "no_conversations.json": "file contains no conversations",
    "only_whitespace.json": "file is empty",
    "options_not_an_object.json": "field 'options' is a string, expected an object",
    "reasoning_effort_unknown.json": (
        "options, field 'reasoning_effort' is 'extreme', expected one of off/low/medium/high"
    ),
    "path_title_with_tool_role.json": "message 1 has role 'function', expected user/assistant",
    "plain_text.json": "file is not JSON: unexpected character",
    "source_title_too_long.json": "meta, source 1, field 'title' is 301 characters; the limit",
    "source_url_is_a_number.json": "message 2, meta, source 2, field 'url' is a number",
    "sources_not_a_list.json": "meta, field 'sources' is an object, expected a list",
    "role_tool.json": "conversation 1, message 2 has role 'tool', expected user/assistant/system",
    "temperature_as_text.json": "field 'temperature' is a string, expected a number",
    "temperature_out_of_range.json": "field 'temperature' is 7, expected a number from 0 to 2",
    "title_is_a_number.json": "conversation 1, field 'title' is a number, expected a string",
    "too_many_conversations.json": "file has 6 conversations; the limit is 5",
    "too_many_messages.json": "conversation 1 has 21 messages; the limit is 20",
    "top_level_null.json": "the top level is null",
    "top_level_number.json": "the top level is a number",
    "top_level_string.json": "the top level is a string",
    "truncated.json": "file is not JSON",
    "unknown_status.json": "meta has status 'hacked'",
    "unrelated_object.json": "neither 'conversations' nor 'messages'",
    "utf16_with_bom.json": "file is UTF-16 encoded; it must be UTF-8",
    "web_search_as_text.json": "options, field 'web_search' is 'yes', expected true or false",
    "wrong_format.json": "field 'format' is 'chatgpt-export', expected 'openrouter-chat'",
}


def test_every_corpus_file_has_an_expected_reason() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.json")) == sorted(EXPECTED_REASONS)
    assert len(EXPECTED_REASONS) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED_REASONS))
def test_a_malformed_file_is_refused_with_its_reason_and_nothing_changes(
    store: ConversationStore, name: str
) -> None:
    existing = _conversation(store, ALICE, "precious")
    before = store.list(ALICE)

    with pytest.raises(ImportRejected) as refused:
        _import(store, ALICE, (CORPUS / name).read_bytes(), **CORPUS_LIMITS)

    assert EXPECTED_REASONS[name] in refused.value.reason
    assert store.list(ALICE) == before
    assert store.load(ALICE, existing.id) == existing


# -- import: untrusted input never escapes as anything but ImportRejected ----------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def mostly(
    valid: st.SearchStrategy[Any], plausible: st.SearchStrategy[Any] = json_values
) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes a plausible mistake or anything at all."""
    choices = {"valid": valid, "plausible": plausible, "junk": json_values}
    return st.sampled_from(["valid"] * 6 + ["plausible", "junk"]).flatmap(choices.__getitem__)


messages = st.fixed_dictionaries(
    {
        "role": mostly(st.sampled_from(["user", "assistant", "system"]), st.just("tool")),
        "content": mostly(st.text(max_size=50)),
    },
    optional={
        "reasoning": mostly(st.text(max_size=20)),
        "created_at": mostly(st.floats(0, 2e9), st.floats(-1, 4e10)),
        "meta": mostly(
            st.fixed_dictionaries(
                {},
                optional={
                    "model": mostly(st.just("openai/gpt-4o"), st.sampled_from(["has space", ""])),
                    "status": mostly(st.sampled_from(["complete", "streaming"]), st.just("bogus")),
                    "completion_tokens": mostly(st.integers(0, 10**6), st.integers(-5, 10**13)),
                    "cost_usd": mostly(st.floats(0, 10), st.floats(-1, 2e6)),
                    "error": mostly(st.text(max_size=20)),
                    "generation_id": mostly(st.text(max_size=20)),
                    "sources": mostly(
                        st.lists(
                            st.fixed_dictionaries(
                                {"url": mostly(st.text(min_size=1, max_size=40))},
                                optional={"title": mostly(st.text(max_size=20))},
                            ),
                            max_size=3,
                        )
                    ),
                },
            )
        ),
    },
)
conversations = st.fixed_dictionaries(
    {
        "model": mostly(st.just("openai/gpt-4o"), st.sampled_from(["a b", "x" * 201])),
        "temperature": mostly(st.floats(0, 2), st.floats(-1, 3)),
        "messages": mostly(st.lists(messages, max_size=4)),
    },
    optional={
        "id": json_values,
        "title": mostly(st.text(max_size=300)),
        "system_prompt": mostly(st.text(max_size=20)),
        "created_at": mostly(st.floats(0, 2e9), st.floats(-1, 4e10)),
        "updated_at": mostly(st.floats(0, 2e9), st.floats(-1, 4e10)),
        "schema_version": mostly(st.just(1), st.sampled_from([2, 0, 1.5])),
        "options": mostly(
            st.fixed_dictionaries(
                {},
                optional={
                    "web_search": mostly(st.booleans(), st.sampled_from([0, 1, "true"])),
                    "reasoning_effort": mostly(
                        st.sampled_from(["off", "low", "medium", "high"]),
                        st.sampled_from(["HIGH", "max", ""]),
                    ),
                    "max_tokens": mostly(
                        st.none() | st.integers(1, 10**6), st.integers(-1, 10**7) | st.floats()
                    ),
                },
            )
        ),
    },
)
documents = (
    json_values
    | conversations
    | st.lists(conversations, max_size=3)
    | st.fixed_dictionaries(
        {"conversations": st.lists(conversations, max_size=3) | json_values},
        optional={
            "format": st.just("openrouter-chat") | json_values,
            "schema_version": st.just(1) | json_values,
        },
    )
)


def _accepted_or_refused(data: bytes) -> None:
    try:
        imported = parse_import(
            data, max_bytes=100_000, max_conversations=5, max_messages=20, max_message_chars=500
        )
    except ImportRejected as refused:
        assert refused.reason
        return
    assert imported
    for conversation in imported:
        assert is_valid_conversation_id(conversation.id)
        assert conversation.title and len(conversation.title) <= 200
        assert orjson.loads(orjson.dumps(conversation.to_dict()))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_accepted_or_refused_never_crash(data: bytes) -> None:
    _accepted_or_refused(data)


@settings(max_examples=200, deadline=None)
@given(documents)
def test_arbitrary_json_is_accepted_or_refused_never_crash(document: object) -> None:
    _accepted_or_refused(orjson.dumps(document))


# -- attached files -----------------------------------------------------------------------


def _with_files(store: ConversationStore) -> tuple[Conversation, dict[str, Attachment]]:
    """A chat whose question carries a picture and a PDF, and those files' bytes."""
    from tests.test_attachment_store import DOCUMENT, PICTURE

    chat = _conversation(store, ALICE, "Compare these")
    question = replace(chat.messages[0], attachments=(PICTURE.ref, DOCUMENT.ref))
    chat = replace(chat, messages=(question, *chat.messages[1:]))
    return chat, {f.ref.sha256: f for f in (PICTURE, DOCUMENT)}


def test_files_travel_once_each_in_the_export_and_come_back_byte_for_byte(
    store: ConversationStore,
) -> None:
    chat, files = _with_files(store)
    twice = replace(chat, id="f" * 32)  # a second chat with the same files

    data = export_json([chat, twice], now=NOW, files=files)

    document = orjson.loads(data)
    assert sorted(document["attachments"]) == sorted(files)
    parsed = parse_import_file(data, max_bytes=5 * MB)
    assert {f.ref.sha256: f.data for f in parsed.files} == {s: f.data for s, f in files.items()}
    assert parsed.conversations[0].messages == chat.messages


def test_the_released_app_still_imports_an_export_with_files(store: ConversationStore) -> None:
    chat, files = _with_files(store)

    [imported] = released_transfer.parse_import(
        export_json([chat], now=NOW, files=files), max_bytes=5 * MB
    )

    assert [m.content for m in imported.messages] == [m.content for m in chat.messages]


def _tampered(store: ConversationStore, change: Callable[[dict[str, Any], str], None]) -> bytes:
    chat, files = _with_files(store)
    document = orjson.loads(export_json([chat], now=NOW, files=files))
    change(document, next(iter(sorted(files))))
    return orjson.dumps(document)


def _first_png(document: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in document["attachments"].values() if f["mime"] == "image/png")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda d, _: _first_png(d).update(data_base64=base64.b64encode(b"\x89PNG").decode()),
            "does not match its SHA-256",
        ),
        (
            lambda d, sha: d["attachments"].pop(sha),
            "is referred to but not in the file",
        ),
        (
            lambda d, _: d["conversations"][0]["messages"][0]["attachments"][0].update(
                name="../../etc/passwd"
            ),
            "expected a plain file name",
        ),
        (
            lambda d, _: d["conversations"][0]["messages"][0]["attachments"][0].update(kind="pdf"),
            "field 'kind' is 'pdf'",
        ),
        (
            lambda d, _: _first_png(d).update(data_base64="not base64!"),
            "not valid base64",
        ),
    ],
    ids=["sha-mismatch", "missing-file", "path-name", "kind-mismatch", "bad-base64"],
)
def test_a_tampered_file_is_refused_naming_what_is_wrong(
    store: ConversationStore, change: Callable[[dict[str, Any], str], None], reason: str
) -> None:
    with pytest.raises(ImportRejected, match=re.escape(reason)):
        parse_import_file(_tampered(store, change), max_bytes=5 * MB)


def test_a_program_disguised_as_a_picture_is_refused(store: ConversationStore) -> None:
    program = b"\x7fELF\x02\x01\x01" + bytes(64)
    disguised = _disguised(store, program)

    with pytest.raises(ImportRejected, match="says it is 'image/png' but its bytes are not"):
        parse_import_file(disguised, max_bytes=5 * MB)
    html = _disguised(store, b"<html><script>alert(1)</script></html>")
    with pytest.raises(ImportRejected, match="'image/png' but its bytes are text/plain"):
        parse_import_file(html, max_bytes=5 * MB)


def _disguised(store: ConversationStore, data: bytes) -> bytes:
    """An export whose picture was swapped for `data`, hashes and sizes made to agree."""
    from chatlib.attachments import AttachmentRef

    chat = _conversation(store, ALICE, "Look")
    sha = hashlib.sha256(data).hexdigest()
    ref = AttachmentRef(sha256=sha, name="cat.png", mime="image/png", size=len(data), kind="image")
    question = replace(chat.messages[0], attachments=(ref,))
    files = {sha: Attachment(ref=ref, data=data)}
    return export_json([replace(chat, messages=(question,))], now=NOW, files=files)


def test_a_file_over_the_attachment_limit_is_refused_with_both_sizes(
    store: ConversationStore,
) -> None:
    chat, files = _with_files(store)
    data = export_json([chat], now=NOW, files=files)

    with pytest.raises(ImportRejected, match=r"per file") as refused:
        parse_import_file(data, max_bytes=5 * MB, max_file_bytes=50)
    assert "('photo.png') is about 75 bytes; the limit is 50 bytes per file" in str(refused.value)


def test_markdown_with_files_is_a_zip_linking_them_and_without_is_plain(
    store: ConversationStore,
) -> None:
    chat, files = _with_files(store)

    download = build_export([chat], "markdown", NOW, files)
    plain = build_export([_conversation(store, ALICE, "plain")], "markdown", NOW, files)

    assert download.name == "chat_20250615T120005Z.zip"
    with zipfile.ZipFile(io.BytesIO(download.data)) as archive:
        names = sorted(archive.namelist())
        markdown = archive.read("chat.md").decode()
        stored = {n: archive.read(n) for n in names if n.startswith("files/")}
    assert names == ["chat.md", "files/photo.png", "files/report.pdf"]
    assert {hashlib.sha256(b).hexdigest() for b in stored.values()} == set(files)
    assert "![photo.png](files/photo.png)" in markdown
    assert "- 📎 [report.pdf](files/report.pdf)" in markdown
    assert plain.name.endswith(".md") and plain.data.startswith(b"# plain")


_REF_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2**40),
    st.text(max_size=80),
    st.sampled_from(["image/png", "application/pdf", "text/plain", "image", "pdf", "a" * 64]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["sha256", "name", "mime", "size", "kind", "width", "height"]),
            _REF_VALUES,
        ),
        max_size=3,
    )
)
def test_arbitrary_file_references_are_accepted_or_refused_never_crash(refs: object) -> None:
    document = {"messages": [{"role": "user", "content": "hi", "attachments": refs}]}
    try:
        parse_import_file(orjson.dumps(document), max_bytes=MB)
    except ImportRejected as refused:
        assert refused.reason
