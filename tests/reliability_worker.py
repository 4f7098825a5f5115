"""Chat and save through the real services until killed (used by the SIGKILL crash test).

Usage: python -m tests.reliability_worker DATA_DIR BASE_URL API_KEY

This is the app's persistence path without the UI: `ConversationService` over
`ChatService`, the real `SqlConversationStore` (SQLite at DATA_DIR/chat.db, WAL) and
`SqlUsageLog` (its table and a CSV file in DATA_DIR/usage), answers streamed from the fake
OpenRouter at BASE_URL. API turns of the real app save no conversation, and
driving the UI in a browser is too slow for twenty kill cycles, so the crash test kills this.

The process imports everything once, then forks one chatting child per "run" line on
stdin, so a kill cycle does not pay a second of imports. The test SIGKILLs the child by
pid; the parent reaps it and waits for the next "run" (it exits when stdin closes).

Protocol on stdout, one line each, flushed:

    ready                           imports done, waiting for "run"
    started <pid> <usage csv path>  a child is chatting (its usage rows go to that file)
    saved <owner> <id> <n> <digest> a turn's final save is committed: the first n messages
                                    of that conversation hash to digest
    deleting <owner> <id>           the conversation is about to be deleted on purpose
    exited <pid> <exit code>        the child is gone and reaped (-9 after a SIGKILL)

Each task writes only its own conversations, so a report is never overtaken by another
task's older copy. A child exits by itself after a while, so it never outlives a test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import traceback
from pathlib import Path

import structlog

from chatlib.chat import ChatService
from chatlib.client import ClientPool
from chatlib.config import Settings
from chatlib.conversations import ConversationService, TurnRequest
from chatlib.errors import ConversationNotFound
from chatlib.frames import FrameBudget
from chatlib.messages import ChatMessage
from chatlib.store import SqlConversationStore, create_engine_for, database_url
from chatlib.store.startup import prepare_database
from chatlib.usage import SqlUsageLog, UsageLog

OWNERS = tuple(f"{n:032x}" for n in (0xA11CE, 0xB0B, 0xC4A2))
TASKS_PER_OWNER = 2
GIVE_UP_AFTER_SECONDS = 30.0
MODEL = "openai/gpt-4o-mini"


def digest(messages: tuple[ChatMessage, ...]) -> str:
    """A short fingerprint of the roles and texts of `messages`."""
    body = json.dumps([[m.role, m.content] for m in messages], ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def report(*fields: object) -> None:
    """One protocol line on stdout."""
    sys.stdout.write(" ".join(str(f) for f in fields) + "\n")
    sys.stdout.flush()


async def chat_forever(
    service: ConversationService,
    owner: str,
    mine: list[str | None],
    rng: random.Random,
) -> None:
    """Keep chatting in this task's conversations: continue, start, rename, delete."""
    step = 0
    while True:
        step += 1
        if not mine or rng.random() < 0.15:
            mine.append(None)  # a new chat: the turn creates it
        slot = rng.randrange(len(mine))
        fault = rng.choice(["", "", "", "", " [[midstream_error=2]]", " [[error=402]]"])
        text = (
            f"turn {step} in {(mine[slot] or 'a new chat')[:8]} {'lorem ' * rng.randrange(1, 60)}"
            f"[[tokens={rng.randrange(2, 40)}]] [[rate=800]]{fault}"
        )
        turn = TurnRequest(
            owner_key=owner,
            conversation_id=mine[slot],
            user_text=text,
            model=MODEL,
            system_prompt="Be brief.",
            temperature=0.3,
        )
        try:
            async for frame in service.turn(turn):
                conversation = frame.conversation
                if frame.done and frame.save_error is None:
                    count = len(conversation.messages)
                    report("saved", owner, conversation.id, count, digest(conversation.messages))
        except ConversationNotFound:  # its first question was never saved
            del mine[slot]
            continue
        mine[slot] = conversation.id
        if step % 11 == 0:
            await service.rename(owner, conversation.id, f"Renamed at step {step}")
        if step % 17 == 0:
            report("deleting", owner, conversation.id)  # before: a kill may land in between
            await service.delete(owner, conversation.id)
            del mine[slot]


async def chat_until_killed(data_dir: Path, base_url: str, api_key: str) -> None:
    """Wire the services like `create_services` does, then chat until killed."""
    settings = Settings(
        openrouter_api_key=api_key,
        openrouter_base_url=base_url,
        stream_idle_timeout_seconds=10.0,
        openrouter_max_retries=0,
        data_dir=data_dir,
    )
    # As `create_services`: the database was migrated before serving; connect lazily here.
    store = SqlConversationStore(create_engine_for(database_url(data_dir)))
    usage = SqlUsageLog(store.engine, UsageLog(data_dir / "usage"))
    chat = ChatService(
        settings,
        ClientPool(settings),
        FrameBudget(updates_per_second=300, min_interval_s=0.03),
        usage=usage,
    )
    service = ConversationService(
        store, chat, exports_dir=data_dir / "exports", max_import_bytes=settings.max_import_bytes
    )
    report("started", os.getpid(), usage.csv_log.path)
    rng = random.Random()
    tasks = []
    for owner in OWNERS:
        existing = [s.id for s in (await service.list(owner)).conversations]
        for index in range(TASKS_PER_OWNER):
            mine: list[str | None] = [i for i in existing if int(i, 16) % TASKS_PER_OWNER == index]
            task_rng = random.Random(rng.random())
            tasks.append(asyncio.create_task(chat_forever(service, owner, mine, task_rng)))
    done, _ = await asyncio.wait(tasks, timeout=GIVE_UP_AFTER_SECONDS)
    for task in done:
        task.result()  # surface a crash of the worker itself as a non-zero exit


def serve(data_dir: Path, base_url: str, api_key: str) -> None:
    """Fork a chatting child per "run" line; report how each one ended."""
    # Migrated once, as the app does before serving; every connection is closed before a fork.
    asyncio.run(prepare_database(database_url(data_dir), data_dir=None))
    report("ready")
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                asyncio.run(chat_until_killed(data_dir, base_url, api_key))
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)  # never return into the parent's loop
        _, status = os.waitpid(pid, 0)
        # A leading newline: a line the child was writing when killed stays on its own.
        sys.stdout.write(f"\nexited {pid} {os.waitstatus_to_exitcode(status)}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    # Log events go to stderr (kept by the test for diagnosis); stdout is the protocol.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    serve(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
