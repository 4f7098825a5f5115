"""Pure history functions: what is sent upstream, what the user sees, input limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlib.errors import InputError
from chatlib.messages import (
    AnswerMeta,
    ChatMessage,
    ImportLimits,
    SchemaError,
    build_upstream_messages,
    check_model_id,
    check_system_prompt,
    check_temperature,
    check_user_input,
    format_answer_footer,
    history_from_dicts,
    parse_message,
    strip_last_turn,
    user_message_index,
)
from chatlib.sources import MAX_SOURCE_TITLE_CHARS, MAX_SOURCE_URL_CHARS, MAX_SOURCES, Source
from ui.display import to_display


def _dicts(history: tuple[ChatMessage, ...]) -> list[dict[str, object]]:
    return [message.to_dict() for message in history]


def _turns(n: int) -> tuple[ChatMessage, ...]:
    history: list[ChatMessage] = []
    for i in range(n):
        history.append(ChatMessage("user", f"q{i}"))
        history.append(ChatMessage("assistant", f"a{i}", meta=AnswerMeta(model="m")))
    return tuple(history)


def test_only_the_latest_messages_go_upstream_with_the_system_prompt() -> None:
    sent = build_upstream_messages(_turns(30), "Be brief.", max_history=5)
    assert sent[0] == {"role": "system", "content": "Be brief."}
    # The window never starts with an orphan answer.
    assert sent[1] == {"role": "user", "content": "q28"}
    assert [m["content"] for m in sent[1:]] == ["q28", "a28", "q29", "a29"]


def test_empty_system_prompt_is_not_sent() -> None:
    sent = build_upstream_messages((ChatMessage("user", "hi"),), "   ", max_history=40)
    assert sent == [{"role": "user", "content": "hi"}]


def test_failed_empty_answers_are_not_sent_upstream() -> None:
    history = (
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "", meta=AnswerMeta(model="m", status="interrupted")),
        ChatMessage("user", "again"),
    )
    sent = build_upstream_messages(history, "", max_history=40)
    assert [m["role"] for m in sent] == ["user", "user"]


def test_input_history_is_never_mutated() -> None:
    history = _turns(2)
    before = _dicts(history)
    build_upstream_messages(history, "s", 1)
    to_display(history)
    assert _dicts(history) == before


def test_oversize_input_is_refused_with_limit_and_length() -> None:
    with pytest.raises(InputError) as caught:
        check_user_input("x" * 8001, 8000)
    assert "8,001" in str(caught.value) and "8,000" in str(caught.value)


def test_blank_input_is_refused() -> None:
    with pytest.raises(InputError):
        check_user_input("  \n ", 100)


def test_footer_shows_model_tokens_cost_ttft_and_speed() -> None:
    meta = AnswerMeta(
        model="openai/gpt-4o",
        status="complete",
        prompt_tokens=12,
        completion_tokens=100,
        cost_usd=0.00123,
        ttft_ms=250,
        latency_ms=2250,
    )
    footer = format_answer_footer(meta)
    assert footer == "openai/gpt-4o · 12 → 100 tokens · $0.00123 · TTFT 0.25 s · 50 tok/s"


def test_stopped_and_interrupted_answers_say_so() -> None:
    assert "stopped" in format_answer_footer(AnswerMeta(model="m", status="stopped"))
    assert "interrupted" in format_answer_footer(AnswerMeta(model="m", status="interrupted"))


def test_display_shows_thinking_block_error_and_footer() -> None:
    answer = ChatMessage(
        "assistant",
        "partial",
        reasoning="hmm",
        meta=AnswerMeta(model="m", status="interrupted", error="Provider died"),
    )
    shown = to_display((ChatMessage("user", "<b>hi</b>"), answer))
    assert shown[0] == {"role": "user", "content": "<b>hi</b>"}
    assert shown[1]["metadata"]["title"] == "Thinking"
    assert shown[1]["content"] == "hmm"
    assert shown[2]["content"].startswith("partial")
    assert "Provider died" in shown[2]["content"]
    assert "interrupted" in shown[2]["content"]


def test_streaming_placeholder_before_first_token() -> None:
    shown = to_display(
        (ChatMessage("user", "hi"), ChatMessage("assistant", "", meta=AnswerMeta("m")))
    )
    assert "typing-indicator" in shown[1]["content"]  # dots until the first token


def test_strip_last_turn_returns_the_text_to_retry() -> None:
    earlier, text = strip_last_turn(_turns(2))
    assert text == "q1"
    assert len(earlier) == 2


def test_user_message_index_counts_only_user_messages() -> None:
    assert user_message_index(_turns(3), 2) == 4
    assert user_message_index(_turns(1), 5) is None


def test_history_round_trips_through_dicts() -> None:
    history = _turns(2)
    assert history_from_dicts(_dicts(history)) == history


def test_history_from_untrusted_dicts_rejects_bad_roles() -> None:
    with pytest.raises(ValueError, match="role"):
        history_from_dicts([{"role": "tool", "content": "x"}])


def test_what_a_turn_sends_upstream_is_bounded_in_characters() -> None:
    history = tuple(ChatMessage("user" if i % 2 == 0 else "assistant", "x" * 100) for i in range(9))
    sent = build_upstream_messages(history, "sys", max_history=40, max_chars=350)
    # The newest message always goes; older ones only while they fit: 3 + 100 + 100 + 100.
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    huge = (*history, ChatMessage("user", "y" * 1_000))
    assert build_upstream_messages(huge, "", max_history=40, max_chars=10)[-1]["content"] == (
        "y" * 1_000
    )


def test_untrusted_history_is_checked_before_it_is_parsed() -> None:
    items = [{"role": "user", "content": "hi"}] * 5
    assert len(history_from_dicts(items, max_messages=5, max_chars=10)) == 5
    with pytest.raises(ValueError, match="at most 4 messages"):
        history_from_dicts(items, max_messages=4)
    with pytest.raises(ValueError, match="at most 9 characters"):
        history_from_dicts(items, max_chars=9)


def test_model_ids_system_prompts_and_temperatures_are_checked() -> None:
    assert check_model_id("  openai/gpt-4o:online ") == "openai/gpt-4o:online"
    for bad in ("", "two words", "x" * 201, "tab\there", "new\nline"):
        with pytest.raises(InputError):
            check_model_id(bad)
    assert check_system_prompt("Be brief.", 10) == "Be brief."
    with pytest.raises(InputError, match="11 characters long; the limit is 10"):
        check_system_prompt("x" * 11, 10)
    assert check_temperature("0.7") == 0.7
    for bad_temperature in (float("nan"), float("inf"), -0.1, 2.01, "warm", None):
        with pytest.raises(InputError, match="between 0 and 2"):
            check_temperature(bad_temperature)


def test_a_question_saved_without_its_answer_shows_as_interrupted() -> None:
    shown = to_display((ChatMessage("user", "Are you there?"),))
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert "interrupted" in shown[-1]["content"] and "Retry" in shown[-1]["content"]


# -- the pages an answer cites ------------------------------------------------------------------

CITED = (
    Source("https://en.wikipedia.org/wiki/Lighthouse", "Lighthouse - Wikipedia"),
    Source("https://example.org/no-title"),
    Source("javascript:alert(1)", "Kept as the model cited it, never a link"),
)


def _answer_with(sources: object) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "It helps ships.",
        "meta": {"model": "m/x", "sources": sources},
    }


def test_an_answers_sources_come_back_as_they_were_saved() -> None:
    answer = ChatMessage(
        "assistant", "It helps ships.", meta=AnswerMeta("m/x", "complete", sources=CITED)
    )

    saved = answer.to_dict()

    assert saved["meta"]["sources"][1] == {"url": "https://example.org/no-title"}
    assert ChatMessage.from_dict(saved) == answer
    assert parse_message(saved, limits=ImportLimits()) == answer  # an import takes them too
    assert [s.link for s in parse_message(saved).meta.sources] == [  # type: ignore[union-attr]
        "https://en.wikipedia.org/wiki/Lighthouse",
        "https://example.org/no-title",
        None,
    ]


@pytest.mark.parametrize(
    ("sources", "reason"),
    [
        ("https://a.example", "field 'sources' is a string, expected a list"),
        (["https://a.example"], "source 1 is a string, expected an object"),
        ([{"title": "no address"}], "source 1 is missing the field 'url'"),
        ([{"url": 42}], "source 1, field 'url' is a number, expected a string"),
        ([{"url": "  "}], "source 1, field 'url' is empty"),
        ([{"url": "https://a.example", "title": ["x"]}], "field 'title' is a list, expected a str"),
        (
            [{"url": "https://a.example/" + "x" * MAX_SOURCE_URL_CHARS}],
            f"field 'url' is {MAX_SOURCE_URL_CHARS + 18:,} characters; the limit is "
            f"{MAX_SOURCE_URL_CHARS:,}",
        ),
        (
            [{"url": "https://a.example", "title": "t" * (MAX_SOURCE_TITLE_CHARS + 1)}],
            f"field 'title' is {MAX_SOURCE_TITLE_CHARS + 1} characters",
        ),
        (
            [{"url": f"https://a.example/{n}"} for n in range(MAX_SOURCES + 1)],
            f"has {MAX_SOURCES + 1} sources; the limit is {MAX_SOURCES}",
        ),
    ],
)
def test_an_imported_answer_with_odd_sources_is_refused_naming_the_field(
    sources: object, reason: str
) -> None:
    with pytest.raises(SchemaError) as refused:
        parse_message(_answer_with(sources), where="message 2", limits=ImportLimits())
    assert reason in refused.value.reason
    assert refused.value.reason.startswith("message 2, meta")


_HOSTILE = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=60)
    | st.text(min_size=MAX_SOURCE_URL_CHARS - 2, max_size=MAX_SOURCE_URL_CHARS + 2)
    | st.lists(st.text(max_size=5), max_size=2)
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["url", "title", "content"]), _HOSTILE, max_size=3),
        max_size=4,
    )
    | _HOSTILE
)
def test_any_sources_in_an_import_are_taken_whole_or_refused_with_a_reason(sources: object) -> None:
    try:
        message = parse_message(_answer_with(sources), limits=ImportLimits())
    except SchemaError as refused:
        assert "sources" in refused.reason or "source " in refused.reason
        return
    assert message.meta is not None
    for source in message.meta.sources:
        assert source.url.strip() and len(source.url) <= MAX_SOURCE_URL_CHARS
        assert len(source.title) <= MAX_SOURCE_TITLE_CHARS
        assert source.link is None or source.link.lower().startswith(("http://", "https://"))
    assert parse_message(message.to_dict(), limits=ImportLimits()) == message
