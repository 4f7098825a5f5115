"""Issue 17 as an attacker sees it: web sources that would send a reader elsewhere than they
show, answer options out of range, comparisons stacked up from one page, and the new service
doors (compare, keep an answer, retry at a question) tried with another visitor's chat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from chatlib.compare import CompareControl, check_models
from chatlib.conversations import ConversationService
from chatlib.errors import ChatError, ConversationNotFound, InputError
from chatlib.messages import AnswerMeta, ChatMessage, SchemaError
from chatlib.options import AnswerOptions
from chatlib.sources import MAX_SOURCE_TITLE_CHARS, MAX_SOURCES, Source, merged
from chatlib.sources import sources_from_annotations as parsed
from chatlib.storage import AsyncConversationStore, Conversation, ConversationStore, parse_options
from chatlib.transfer import export_markdown
from tests.fakes.openrouter import FakeOpenRouter
from tests.turns import OWNER, eventually, last_frame, service_over, turn_request
from ui.display import sources_html

FAST, QUICK = "openai/gpt-4o", "anthropic/claude-3.5-haiku"
MALLORY = "b" * 32  # another visitor

# Each would be shown as one site and open another (or none a reader can see).
SPOOFING_URLS = [
    "https://evil.example\\@good.example/",  # browsers read "\" as "/": evil.example
    "https://good.example@evil.example/",  # user info before the host
    "https://user:pass@host.example/",
    "https://x.example\u202e/moc.elgoog",  # right-to-left override
    "https://bank.example\u200b.evil.example/",  # zero-width space
    "https://a.example\u00a0b/",  # no-break space
    "https://a.example/\u2028",  # line separator
    "https://\u0085a.example/",  # C1 control
    "https://%65vil.example/",  # escaped host
    "http:\\\\evil.example",
    "//evil.example",
    "java\tscript:alert(1)",
    " javascript:alert(1)",
    "javascript&#58;alert(1)",
    "JaVaScRiPt:alert(1)",
]


def _links(markdown: str) -> list[str]:
    parser = MarkdownIt("commonmark")
    parser.validateLink = lambda _url: True  # type: ignore[method-assign,assignment]
    found: list[str] = []
    tokens = list(parser.parse(markdown))
    while tokens:
        token = tokens.pop()
        tokens.extend(token.children or ())
        if token.type == "link_open":
            found.append(str(token.attrs["href"]))
    return found


@pytest.mark.parametrize("url", SPOOFING_URLS)
def test_a_source_that_would_mislead_is_never_a_link_on_the_page_or_in_the_export(
    url: str,
) -> None:
    source = Source(url, "Your bank")
    assert source.link is None and source.domain == ""
    assert "<a " not in sources_html([source])
    answer = ChatMessage("assistant", "A", meta=AnswerMeta("m/x", "complete", sources=(source,)))
    chat = Conversation("c" * 32, "t", 1.0, 1.0, "m/x", "", 0.3, (ChatMessage("user", "q"), answer))
    assert _links(export_markdown(chat)) == []


def test_plain_web_addresses_stay_links() -> None:
    for url in ("https://example.com/a?b=1#c", "HTTPS://Example.COM", "http://[::1]:8080/x"):
        assert Source(url).link == url
    assert Source("https://www.bücher.example/").domain == "bücher.example"


def test_a_flood_of_citations_is_capped_in_count_and_title_length() -> None:
    huge = {"type": "url_citation", "url_citation": {"url": "https://a.example/", "title": "t"}}
    flood = [
        {"type": "url_citation", "url_citation": {"url": f"https://a.example/{n}", "title": "x"}}
        for n in range(100_000)
    ]
    big = {"url": "https://b.example/", "title": "T" * 10**7}
    long_title = {"type": "url_citation", "url_citation": big}
    odd: list[object] = [None, 7, "x", [huge], {"type": "url_citation", "url_citation": [1]}]
    sources = merged((), parsed([*odd, long_title, *flood]))
    assert len(sources) == MAX_SOURCES
    assert len(sources[0].title) == MAX_SOURCE_TITLE_CHARS
    assert parsed({"not": "a list"}) == [] and parsed("x" * 10**6) == []


def test_the_same_model_twice_is_refused_whatever_its_case() -> None:
    with pytest.raises(InputError, match="picked twice"):
        check_models([FAST, FAST.upper()])
    with pytest.raises(InputError, match="at most 3"):
        check_models([FAST, QUICK, "a/b", "c/d"])


@pytest.mark.parametrize("tokens", [10**5000, 10**20], ids=["5001-digits", "21-digits"])
def test_an_imported_answer_length_too_big_to_write_is_refused_by_name(tokens: int) -> None:
    with pytest.raises(SchemaError, match="'max_tokens' is a huge number") as refused:
        parse_options({"max_tokens": tokens}, "conversation 1")
    assert len(str(refused.value)) < 200


# -- the service: one page, other visitors --------------------------------------------------


@pytest.fixture
async def conversations(fake: FakeOpenRouter, tmp_path: Path) -> AsyncIterator[ConversationService]:
    store = AsyncConversationStore(ConversationStore(tmp_path / "data"))
    async with service_over(store, fake, tmp_path) as service:
        yield service


async def test_a_newer_comparison_from_the_same_page_stops_the_older_one(
    fake: FakeOpenRouter, conversations: ConversationService
) -> None:
    fake.set_defaults(stall=0)  # nobody says a word until stopped
    older = CompareControl.for_columns(2)
    first = conversations.compare(turn_request("one", session_key="page"), (FAST, QUICK), older)
    await anext(first)
    assert not older.stop_requested

    newer = conversations.compare(turn_request("two", session_key="page"), (FAST, QUICK))
    await anext(newer)

    assert older.stop_requested and all(c.stop_requested for c in older.columns)
    ended = await last_frame(first)
    assert ended.done
    assert [c.answer.meta.status for c in ended.columns if c.answer.meta] == ["stopped"] * 2
    await newer.aclose()
    await eventually(lambda: fake.active_streams == 0)


async def test_another_page_comparing_leaves_this_one_running(
    fake: FakeOpenRouter, conversations: ConversationService
) -> None:
    fake.set_defaults(stall=0)
    mine = CompareControl.for_columns(2)
    first = conversations.compare(turn_request("one", session_key="mine"), (FAST, QUICK), mine)
    await anext(first)
    other = conversations.compare(turn_request("two", session_key="theirs"), (FAST, QUICK))
    await anext(other)
    assert not mine.stop_requested
    await first.aclose()
    await other.aclose()
    await eventually(lambda: fake.active_streams == 0)


@pytest.mark.parametrize(
    "options, field",
    [
        (AnswerOptions(max_tokens=0), "max_tokens"),
        (AnswerOptions(max_tokens=-5), "max_tokens"),
        (AnswerOptions(max_tokens=10**12), "max_tokens"),
        (AnswerOptions(max_tokens=True), "max_tokens"),
        (AnswerOptions(max_tokens=2.5), "max_tokens"),  # type: ignore[arg-type]
        (AnswerOptions(reasoning_effort="extreme"), "reasoning_effort"),  # type: ignore[arg-type]
        (AnswerOptions(reasoning_effort=["high"]), "reasoning_effort"),  # type: ignore[arg-type]
        (AnswerOptions(web_search="yes"), "web_search"),  # type: ignore[arg-type]
    ],
)
async def test_odd_answer_options_are_refused_by_name_before_anything_is_sent(
    fake: FakeOpenRouter, conversations: ConversationService, options: AnswerOptions, field: str
) -> None:
    with pytest.raises(InputError, match=field):
        await last_frame(conversations.turn(turn_request("hi", options=options)))
    with pytest.raises(InputError, match=field):
        await last_frame(conversations.compare(turn_request("hi", options=options), (FAST, QUICK)))
    assert fake.chat_requests() == []


async def test_another_visitors_chat_cannot_be_compared_kept_or_retried(
    fake: FakeOpenRouter, conversations: ConversationService
) -> None:
    theirs = await last_frame(conversations.compare(turn_request("secret"), (FAST, QUICK)))
    chat_id = theirs.conversation.id
    asked = len(fake.chat_requests())

    with pytest.raises(ConversationNotFound):
        await last_frame(
            conversations.compare(turn_request("x", chat_id, owner=MALLORY), (FAST, QUICK))
        )
    with pytest.raises(ConversationNotFound):
        await conversations.keep_answer(MALLORY, chat_id, 1, 2)
    with pytest.raises(ConversationNotFound):
        retry = turn_request("", chat_id, owner=MALLORY, action="retry", edit_index=0)
        await last_frame(conversations.turn(retry))
    assert len(fake.chat_requests()) == asked
    stored = await conversations.open(OWNER, chat_id)
    assert stored == theirs.conversation


@pytest.mark.parametrize("nth", [-1, 1, 10**9, -(10**9)])
async def test_a_retry_at_a_question_that_is_not_there_is_refused(
    fake: FakeOpenRouter, conversations: ConversationService, nth: int
) -> None:
    chat = await last_frame(conversations.turn(turn_request("only question")))
    asked = len(fake.chat_requests())
    retry = turn_request("", chat.conversation.id, action="retry", edit_index=nth, model=QUICK)
    with pytest.raises(InputError):
        await last_frame(conversations.turn(retry))
    assert len(fake.chat_requests()) == asked


@pytest.mark.parametrize("at, version", [(1, 0), (1, 3), (1, -1), (-1, 1), (0, 2), (99, 1)])
async def test_keeping_an_answer_that_is_not_there_is_refused(
    conversations: ConversationService, at: int, version: int
) -> None:
    compared = await last_frame(conversations.compare(turn_request("q"), (FAST, QUICK)))
    with pytest.raises(ChatError):
        await conversations.keep_answer(OWNER, compared.conversation.id, at, version)
    assert await conversations.open(OWNER, compared.conversation.id) == compared.conversation
