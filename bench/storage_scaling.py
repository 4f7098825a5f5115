"""Does saving a turn stay flat as an owner's conversation count grows?

In a temporary directory, one owner gets 10, 1 000 and 10 000 conversations of ~10 messages
(written straight to disk, then indexed by one listing). Then, in interleaved rounds so machine
noise hits every size alike, it times:

* save: append one message to one conversation and `ConversationStore.save` it (also with
  `os.fsync` stubbed out, to see the store's own work apart from the disk's flush latency);
* list: `ConversationStore.list` (index fold + directory scan);
* load: `ConversationStore.load` of one conversation.

    .venv/bin/python bench/storage_scaling.py [--save-rounds 150] [--list-rounds 12]

Prints medians, the ratio of the largest size to the smallest (target for save: <= 1.5), and
whether one save is cheap enough (< 1 ms) to run on the event loop. Absolute numbers depend on
the disk (fsync) and a shared machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatlib.messages import AnswerMeta, ChatMessage  # noqa: E402
from chatlib.storage import (  # noqa: E402
    SCHEMA_VERSION,
    Conversation,
    ConversationStore,
    json_bytes,
)

OWNER = "0123456789abcdef" * 2
SAVE_RATIO_TARGET = 1.5
EVENT_LOOP_BUDGET_MS = 1.0


def make_conversation(n: int, now: float) -> Conversation:
    """A typical conversation: 5 questions, 5 answers with metadata, ~4 kB of JSON."""
    messages: list[ChatMessage] = []
    for turn in range(5):
        messages.append(ChatMessage("user", f"Question {turn} of chat {n}: " + "why? " * 20))
        messages.append(
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
        messages=tuple(messages),
    )


def populate(root: Path, count: int) -> Conversation:
    """Write `count` conversation files directly (no fsync); return one to keep chatting in."""
    folder = root / "conversations" / OWNER
    folder.mkdir(parents=True)
    now = time.time()
    target = make_conversation(0, now)
    for n in range(count):
        conversation = target if n == count // 2 else make_conversation(n, now)
        document = {"schema_version": SCHEMA_VERSION, **conversation.to_dict()}
        (folder / f"{conversation.id}.json").write_bytes(json_bytes(document))
    return target


@dataclass
class Cell:
    """One owner size and its measurements (milliseconds)."""

    count: int
    store: ConversationStore
    conversation: Conversation
    populate_s: float = 0.0
    first_list_ms: float = 0.0
    save_ms: list[float] = field(default_factory=list)
    save_no_fsync_ms: list[float] = field(default_factory=list)
    list_ms: list[float] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)


def timed(action: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def save_turn(cell: Cell, turn: int) -> float:
    """One chat turn: append a message, save; returns milliseconds."""
    message = ChatMessage("user", f"turn {turn}: " + "more text " * 30)
    grown = replace(cell.conversation, messages=(*cell.conversation.messages, message))
    start = time.perf_counter()
    cell.conversation = cell.store.save(OWNER, grown)
    return (time.perf_counter() - start) * 1000


def interleaved(cells: list[Cell], rounds: int, measure: Callable[[Cell, int], None]) -> None:
    """Run `measure` once per cell per round, in a new random order each round.

    Disk and CPU noise on a shared machine then hits every size alike.
    """
    rng = random.Random(1)
    for turn in range(rounds):
        for cell in rng.sample(cells, len(cells)):
            measure(cell, turn)


def no_fsync(fd: int) -> None:
    """Stand-in for os.fsync: returns at once."""
    del fd


def list_and_load(cell: Cell, turn: int) -> None:
    """A sidebar refresh and a reopen of one conversation."""
    del turn
    cell.list_ms.append(timed(lambda: cell.store.list(OWNER)))
    cell.load_ms.append(timed(lambda: cell.store.load(OWNER, cell.conversation.id)))


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def p90(values: list[float]) -> float:
    """The 90th percentile."""
    return statistics.quantiles(values, n=10)[-1]


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save-rounds", type=int, default=150)
    parser.add_argument("--list-rounds", type=int, default=12)
    parser.add_argument("--sizes", default="10,1000,10000")
    args = parser.parse_args()
    # The one-off index rebuild logs at info level; keep the table readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        cells: list[Cell] = []
        for count in sizes:
            root = Path(tmp) / f"owner-{count}"
            begin = time.perf_counter()
            conversation = populate(root, count)
            cell = Cell(count, ConversationStore(root), conversation)
            cell.populate_s = time.perf_counter() - begin
            # The first listing builds the index from every file (one-off, e.g. after a restore).
            cell.first_list_ms = timed(lambda cell=cell: cell.store.list(OWNER))
            cells.append(cell)
            print(
                f"populated {count:>6} conversations in {cell.populate_s:.1f} s; "
                f"index built in {cell.first_list_ms:.0f} ms"
            )

        interleaved(cells, args.save_rounds, lambda c, t: c.save_ms.append(save_turn(c, t)))
        real_fsync = os.fsync
        os.fsync = no_fsync  # the store's own work, without the disk's flush latency
        try:
            interleaved(
                cells, args.save_rounds, lambda c, t: c.save_no_fsync_ms.append(save_turn(c, t))
            )
        finally:
            os.fsync = real_fsync
        interleaved(cells, args.list_rounds, list_and_load)
        for cell in cells:
            listed = cell.store.list(OWNER)
            assert len(listed.conversations) == cell.count and not listed.corrupt
            assert listed.conversations[0].id == cell.conversation.id

    print(
        f"\n{args.save_rounds} save rounds, {args.list_rounds} list rounds, interleaved in "
        "random order across sizes; times in ms\n"
    )
    print(
        "| conversations | save median | save p90 | save w/o fsync | list median | list p90 "
        "| load median |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for cell in cells:
        print(
            f"| {cell.count:,} | {median(cell.save_ms):.2f} | {p90(cell.save_ms):.2f} "
            f"| {median(cell.save_no_fsync_ms):.3f} "
            f"| {median(cell.list_ms):.2f} | {p90(cell.list_ms):.2f} "
            f"| {median(cell.load_ms):.2f} |"
        )
    small, large = cells[0], cells[-1]
    save_ratio = median(large.save_ms) / median(small.save_ms)
    work_ratio = median(large.save_no_fsync_ms) / median(small.save_no_fsync_ms)
    list_ratio = median(large.list_ms) / median(small.list_ms)
    verdict = "PASS" if save_ratio <= SAVE_RATIO_TARGET else "FAIL"
    sizes_label = f"{large.count:,} / {small.count:,}"
    print(f"\nsave ratio {sizes_label}: {save_ratio:.2f} (target <= {SAVE_RATIO_TARGET}) {verdict}")
    print(f"save ratio without fsync {sizes_label}: {work_ratio:.2f} (the store's own work)")
    print(f"list ratio {sizes_label}: {list_ratio:.1f} (O(n) in index entries and file names)")
    save_ms = median(small.save_ms)
    where = (
        "cheap enough for the event loop"
        if save_ms < EVENT_LOOP_BUDGET_MS
        else "too slow for the event loop: use AsyncConversationStore (worker thread)"
    )
    print(f"one save: {save_ms:.2f} ms vs {EVENT_LOOP_BUDGET_MS:.0f} ms budget -> {where}")
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
