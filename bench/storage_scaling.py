"""Do saving a turn and listing stay flat as an owner's conversation count grows?

For each engine, one owner gets 10 and 10 000 conversations of ~10 messages (bulk-inserted),
each size in a database of its own. Then, in interleaved rounds so machine noise hits every
size alike, it times:

* save: append one message to one conversation and save it as the end of a turn
  (`save(..., expected=...)`: the revision check, then the new message's row);
* list: the whole list (every summary: O(n) by nature) and its first page of 10
  (`list(owner, limit=10)`: the same rows at every size, so only finding them differs);
* load: one conversation; search: a word in a single message.

Engines: `sqlite` (the default, DATA_DIR/chat.db), `postgresql` (a throwaway cluster from
tests/pg_server.py; skipped when PostgreSQL is not installed) and `files` (the JSON file
store it replaces, for comparison).

    .venv/bin/python bench/storage_scaling.py [--engines sqlite,postgresql,files]
        [--sizes 10,10000] [--save-rounds 150] [--list-rounds 30]

Prints medians and the ratio of the largest size to the smallest per engine (target for save
and the first page: <= 1.5, i.e. O(one conversation)). SQLite commits without fsync in WAL
mode (synchronous=NORMAL) and the test cluster runs with fsync off, so these are the stores'
own costs, not the disk's; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatlib.messages import AnswerMeta, ChatMessage  # noqa: E402
from chatlib.storage import (  # noqa: E402
    SCHEMA_VERSION,
    AsyncConversationStore,
    Conversation,
    ConversationStore,
    json_bytes,
)
from chatlib.store import database_url, open_store  # noqa: E402
from chatlib.store.schema import conversations, messages  # noqa: E402
from chatlib.store.sql import encode_messages  # noqa: E402

OWNER = "0123456789abcdef" * 2
RATIO_TARGET = 1.5
PAGE = 10  # the first page of a list: as many rows at every size, so only the lookup differs
NEEDLE = "needle-in-one-message"


def make_conversation(n: int, now: float) -> Conversation:
    """A typical conversation: 5 questions, 5 answers with metadata, ~4 kB of JSON."""
    history: list[ChatMessage] = []
    for turn in range(5):
        history.append(ChatMessage("user", f"Question {turn} of chat {n}: " + "why? " * 20))
        history.append(
            ChatMessage(
                "assistant",
                "Because " + "reasons and more reasons. " * 20,
                meta=AnswerMeta(
                    model="openai/gpt-4o",
                    status="complete",
                    prompt_tokens=120,
                    completion_tokens=180,
                    cost_usd=0.0021,
                    ttft_ms=300.0,
                    latency_ms=2100.0,
                ),
            )
        )
    return Conversation(
        id=uuid.uuid4().hex,
        title=f"Chat number {n}",
        created_at=now - n,
        updated_at=now - n,
        model="openai/gpt-4o",
        system_prompt="Be brief.",
        temperature=0.3,
        messages=tuple(history),
        revision=1,
    )


def corpus(count: int) -> Iterator[Conversation]:
    """`count` conversations; the one in the middle is the one the bench chats in."""
    now = time.time()
    for n in range(count):
        conversation = make_conversation(n, now)
        if n == count // 2:
            found = ChatMessage("user", f"Where is the {NEEDLE}?")
            conversation = replace(conversation, messages=(*conversation.messages, found))
        yield conversation


def middle_of(count: int, made: list[Conversation]) -> Conversation:
    """The conversation to chat in (half-way through the list)."""
    return made[count // 2]


# -- populating -------------------------------------------------------------------------------


def populate_files(root: Path, count: int) -> Conversation:
    """Write `count` conversation files directly (no fsync); return the one to chat in."""
    folder = root / "conversations" / OWNER
    folder.mkdir(parents=True)
    made = list(corpus(count))
    for conversation in made:
        document = {"schema_version": SCHEMA_VERSION, **conversation.to_dict()}
        (folder / f"{conversation.id}.json").write_bytes(json_bytes(document))
    return middle_of(count, made)


async def populate_sql(store: Any, count: int) -> Conversation:
    """Bulk-insert `count` conversations and their messages; return the one to chat in."""
    made = list(corpus(count))
    for start in range(0, count, 2000):
        chunk = made[start : start + 2000]
        async with store.engine.begin() as connection:
            await connection.execute(insert(conversations), [_row(c) for c in chunk])
            await connection.execute(
                insert(messages),
                [
                    {
                        "conversation_id": c.id,
                        "position": position,
                        "role": role,
                        "content": content,
                        "reasoning": reasoning,
                        "meta": meta,
                        "created_at": created_at,
                    }
                    for c in chunk
                    for position, (role, content, reasoning, meta, created_at) in enumerate(
                        encode_messages(c.messages)
                    )
                ],
            )
    if store.engine.dialect.name == "postgresql":
        async with store.engine.connect() as connection:  # what autovacuum does after a while
            await connection.execute(text("ANALYZE"))
            await connection.commit()
    return middle_of(count, made)


def _row(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "owner_key": OWNER,
        "title": conversation.title,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "revision": conversation.revision,
        "message_count": len(conversation.messages),
        "total_cost_usd": conversation.total_cost_usd,
    }


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Cell:
    """One engine at one owner size, and its measurements (milliseconds)."""

    engine: str
    count: int
    store: Any  # SqlConversationStore or AsyncConversationStore: the same async interface
    conversation: Conversation
    populate_s: float = 0.0
    save_ms: list[float] = field(default_factory=list)
    list_ms: list[float] = field(default_factory=list)
    page_ms: list[float] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    await action()
    return (time.perf_counter() - start) * 1000


async def save_turn(cell: Cell, turn: int) -> None:
    """The end of one chat turn: one more message, saved against the revision last seen."""
    message = ChatMessage("user", f"turn {turn}: " + "more text " * 30)
    last = cell.conversation
    grown = replace(last, messages=(*last.messages, message))
    start = time.perf_counter()
    cell.conversation = await cell.store.save(OWNER, grown, expected=last)
    cell.save_ms.append((time.perf_counter() - start) * 1000)


async def first_page(cell: Cell, turn: int) -> None:
    """A sidebar's first page (the file store has no pages)."""
    del turn
    if cell.engine != "files":
        cell.page_ms.append(await timed(lambda: cell.store.list(OWNER, limit=PAGE)))


async def load_one(cell: Cell, turn: int) -> None:
    """Reopening the conversation."""
    del turn
    cell.load_ms.append(await timed(lambda: cell.store.load(OWNER, cell.conversation.id)))


async def search_one(cell: Cell, turn: int) -> None:
    """A search that one message matches."""
    del turn
    cell.search_ms.append(await timed(lambda: cell.store.search(OWNER, NEEDLE)))


async def list_all(cell: Cell, turn: int) -> None:
    """The whole list (every summary)."""
    del turn
    cell.list_ms.append(await timed(lambda: cell.store.list(OWNER)))


async def interleaved(
    cells: list[Cell], rounds: int, measure: Callable[[Cell, int], Awaitable[None]]
) -> None:
    """Run `measure` once per cell per round, in a new random order each round."""
    rng = random.Random(1)
    for turn in range(rounds):
        for cell in rng.sample(cells, len(cells)):
            await measure(cell, turn)


def median(values: list[float]) -> float:
    """The median (NaN when nothing was measured)."""
    return statistics.median(values) if values else float("nan")


def p90(values: list[float]) -> float:
    """The 90th percentile."""
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else median(values)


# -- engines ----------------------------------------------------------------------------------


@dataclass
class Places:
    """Where the databases go: a temporary folder, and a PostgreSQL cluster once needed."""

    workdir: Path
    stack: contextlib.ExitStack
    postgres_url: str | None = None


async def open_cells(engine: str, sizes: list[int], places: Places) -> list[Cell]:
    """A store per size of `engine`, populated; [] when the engine is not available here."""
    cells: list[Cell] = []
    for count in sizes:
        begin = time.perf_counter()
        if engine == "files":
            root = places.workdir / f"files-{count}"
            conversation = populate_files(root, count)
            store: Any = AsyncConversationStore(ConversationStore(root))
            await store.list(OWNER)  # the first listing builds the index (one-off)
        else:
            url = _sql_url(engine, count, places)
            if url is None:
                return []
            store = await open_store(url, data_dir=None)
            conversation = await populate_sql(store, count)
        cell = Cell(engine, count, store, conversation)
        cell.populate_s = time.perf_counter() - begin
        print(f"{engine:>10}: {count:>6} conversations ready in {cell.populate_s:.1f} s")
        cells.append(cell)
    return cells


def _sql_url(engine: str, count: int, places: Places) -> str | None:
    """A new, empty database of `engine` (None: PostgreSQL is not installed here)."""
    if engine == "sqlite":
        return database_url(places.workdir / f"sqlite-{count}")
    from tests.pg_server import fresh_database, postgres_bin_dir, running_postgres

    if postgres_bin_dir() is None:
        print("postgresql: not installed here (make system-deps); skipped")
        return None
    if places.postgres_url is None:
        places.postgres_url = places.stack.enter_context(running_postgres()).url
    return fresh_database(places.postgres_url)


# -- the report -------------------------------------------------------------------------------


def print_table(cells: list[Cell], args: argparse.Namespace) -> None:
    """Medians per engine and size."""
    print(
        f"\n{args.save_rounds} save rounds, {args.list_rounds} list rounds, interleaved in "
        "random order across engines and sizes; times in ms\n"
    )
    print(
        "| engine | conversations | save median | save p90 | list all | list first "
        f"{PAGE} | load | search |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cell in cells:
        print(
            f"| {cell.engine} | {cell.count:,} | {median(cell.save_ms):.2f} "
            f"| {p90(cell.save_ms):.2f} | {median(cell.list_ms):.2f} "
            f"| {median(cell.page_ms):.2f} | {median(cell.load_ms):.2f} "
            f"| {median(cell.search_ms):.2f} |"
        )


def print_ratios(cells: list[Cell]) -> bool:
    """Largest size / smallest per engine; True when every save (and page) ratio passes."""
    passed = True
    for engine in dict.fromkeys(c.engine for c in cells):
        mine = [c for c in cells if c.engine == engine]
        small, large = mine[0], mine[-1]
        label = f"{large.count:,} / {small.count:,}"

        def ratio(attribute: str, small: Cell = small, large: Cell = large) -> float:
            return median(getattr(large, attribute)) / median(getattr(small, attribute))

        save = ratio("save_ms")
        ok = save <= RATIO_TARGET
        line = f"\n{engine}: save ratio {label}: {save:.2f} (target <= {RATIO_TARGET})"
        if engine != "files":
            page = ratio("page_ms")
            ok = ok and page <= RATIO_TARGET
            line += f"; first-page list ratio {page:.2f} (target <= {RATIO_TARGET})"
        print(line + (" PASS" if ok else " FAIL"))
        print(
            f"{engine}: list-all ratio {ratio('list_ms'):.1f} (every summary: O(n) by nature); "
            f"load {ratio('load_ms'):.2f}; search {ratio('search_ms'):.2f}"
        )
        passed = passed and ok
    return passed


async def run(args: argparse.Namespace) -> int:
    """Populate, measure, print; 0 when every engine's ratios pass."""
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        places = Places(Path(tmp), stack)
        cells: list[Cell] = []
        for engine in engines:
            cells += await open_cells(engine, sizes, places)
        try:
            await interleaved(cells, args.save_rounds, save_turn)
            # One pass per kind of call: a heavy one (a 10 000-row list, a search) leaves
            # garbage and busy caches that would land on whatever runs next.
            for measure in (first_page, load_one, search_one, list_all):
                await interleaved(cells, args.list_rounds, measure)
            for cell in cells:
                listed = (await cell.store.list(OWNER)).conversations
                assert len(listed) == cell.count and listed[0].id == cell.conversation.id
                found = await cell.store.search(OWNER, NEEDLE)
                assert [s.id for s in found] == [cell.conversation.id]
        finally:
            for cell in cells:
                if hasattr(cell.store, "aclose"):
                    await cell.store.aclose()
    print_table(cells, args)
    passed = print_ratios(cells)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")
    return 0 if passed else 1


def main() -> int:
    """Parse the arguments and run the bench."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgresql,files")
    parser.add_argument("--sizes", default="10,10000")
    parser.add_argument("--save-rounds", type=int, default=150)
    parser.add_argument("--list-rounds", type=int, default=30)
    args = parser.parse_args()
    # Startup and one-off repairs log at info level; keep the table readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
