"""Reliability: a crowd streaming through faults, SIGKILL crashes, a failing disk, hostile
input and secrets, against the real app (a subprocess) and the fake OpenRouter.

The figures the suite proves are the module constants below, so a report can cite them
without the tests printing anything:

- `CONCURRENT_VISITORS` visitors stream at once through the `chat` API while
  `FAULTED_STREAMS` of them hit an upstream fault and one more visitor is rate-limited;
  `STREAMS_HELD` answers arrive whole, in order, each to the visitor who asked.
- `KILL_CYCLES` SIGKILLs: `WORKER_KILL_CYCLES` of a process saving conversations through
  the app's services, `APP_KILL_CYCLES` of the real app mid-answer. `DATA_LOST` is what
  the checks allow to be lost or damaged afterwards.
- `HOSTILE_INPUTS_TRIED` malformed inputs, each followed by a normal chat that still works.

API calls go over raw HTTP to `/gradio_api/call/chat`, which is what `gradio_client` does
underneath: fifty `gradio_client.Client` objects take ~8 s to build here, and their
threads starve the fake OpenRouter (it shares this process) until streams time out for
reasons of the harness, not the app. Raw HTTP also sends what `gradio_client` refuses to
encode (lone surrogates, non-ASCII header bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import errno
import json
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from chatlib.usage import (
    USAGE_COLUMNS,
    UsageLog,
    UsageRecord,
    format_usage_row,
    read_usage,
    summarize_directory,
    utc_timestamp,
)
from tests import stored
from tests.conftest import REPO, TEST_API_KEY, AppServer, start_app
from tests.fakes.openrouter import FakeOpenRouter, expected_reply
from tests.reliability_worker import digest
from tests.ui import INPUT, last_answer, open_app, send, set_model, toast, user_messages
from tests.ui import chat_once as ui_chat_once
from tests.ui import wait_until_idle as ui_wait_until_idle

# ---- the figures -------------------------------------------------------------------------

CONCURRENT_VISITORS = 50
FAULTED_STREAMS = 4  # a mid-stream error, a stall, a dropped connection, a 402
GREEDY_REQUESTS = 3  # one more visitor, limited to 2 per minute, asks 3 times at once
STREAMS_HELD = CONCURRENT_VISITORS - FAULTED_STREAMS + (GREEDY_REQUESTS - 1)  # 48
RATE_LIMITED = 1
WORKER_KILL_CYCLES = 20
APP_KILL_CYCLES = 3
KILL_CYCLES = WORKER_KILL_CYCLES + APP_KILL_CYCLES  # 23
DATA_LOST = 0

OVERSIZE_LENGTHS = (8_001, 1_000_000)
CONTROL_MESSAGES = (
    "ctl \x00\x01\x07\x08\x0b\x0c \x1b[31mred\x1b[0m \x7f\x85 \u200b\u202e\u2066 \u2028\u2029 "
    "\ufeff end [[tokens=8]]",
    "\x00\x00\x00",
)
SURROGATE_POSITIONS = ("message", "system_prompt", "history", "model")
FORWARDED_FOR_JUNK: tuple[bytes, ...] = (
    b"garbage!!",
    b"unknown, _hidden, 1.2.3.4",
    ",".join(f"10.{i // 256}.{i % 256}.9" for i in range(1000)).encode(),
    b"[::1",
    b"[]",
    b"[[::1]]:99999",
    b"[2001:db8::1]:443, 10.0.0.1",
    b"1.2.3.4:99999",
    b"fe80::1%eth0",
    b",,,,",
    b"x" * 8000,
    "\u0661\u0662.1.1.1, \u00e9t\u00e9".encode(),
    b"\xff\xfe\xfd",
)
UPSTREAM_STREAM_FAULTS = ("garbage", "badbytes")
CATALOG_FAULTS = ("invalid_json", "huge")
TEMPERATURE_JUNK: tuple[Any, ...] = (float("nan"), float("inf"), "hot")
BROWSER_HOSTILE_INPUTS = 4  # HTML model name, HTML message, HTML model id, 1 MB paste
HOSTILE_INPUTS_TRIED = (
    len(OVERSIZE_LENGTHS)
    + len(CONTROL_MESSAGES)
    + len(SURROGATE_POSITIONS)
    + len(FORWARDED_FOR_JUNK)
    + 1  # X-Forwarded-For sent as several header lines
    + len(UPSTREAM_STREAM_FAULTS)
    + len(CATALOG_FAULTS)
    + len(TEMPERATURE_JUNK)
    + 1  # a request body that is not UTF-8
    + BROWSER_HOSTILE_INPUTS
)  # 34

HF_TOKEN = "hf_FAKEtoken000000secret0000"
BROWSER_STATE_SECRET = "bss-FAKE-secret-000-0000"
SECRETS = (TEST_API_KEY, HF_TOKEN, BROWSER_STATE_SECRET)
MODEL = "openai/gpt-4o"
HOSTILE_MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
# Anything that runs from page content leaves a trace here; alert() is what the evil model
# name in the fake catalog would call.
ALERT_TRAP = """
window.__pwned = null;
window.alert = (...args) => { window.__pwned = 'alert(' + args.join(',') + ')'; };
"""


# ---- talking to the chat API -------------------------------------------------------------

Headers = Sequence[tuple[str, str | bytes]]


@dataclass
class ApiResult:
    """What an API caller saw: every streamed value in order, then completion or an error."""

    status: int = 200
    outputs: list[str] = field(default_factory=list)
    completed: bool = False
    failed: bool = False
    error: str | None = None  # the message shown to the caller; None when none was given

    @property
    def text(self) -> str:
        """The last text received (the whole answer, or what was kept before an error)."""
        return self.outputs[-1] if self.outputs else ""


def _chat_body(
    message: str, model: str, system_prompt: str, temperature: Any, history: list[Any]
) -> bytes:
    # ensure_ascii turns lone surrogates into JSON escapes, as a browser's JSON.stringify does.
    return json.dumps({"data": [message, model, system_prompt, temperature, history]}).encode()


def _read_events(lines: Iterable[str], result: ApiResult) -> ApiResult:
    """Fold the SSE lines of `/gradio_api/call/chat/<id>` into `result`."""
    event = ""
    for line in lines:
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = json.loads(line.removeprefix("data:"))
            if event in ("generating", "complete") and isinstance(data, list):
                result.outputs.append(data[0])
                result.completed = event == "complete"
            elif event == "error":
                result.failed = True
                result.error = data.get("error") if isinstance(data, dict) else None
    return result


def api_chat(
    url: str,
    message: str,
    *,
    model: str = MODEL,
    system_prompt: str = "",
    temperature: Any = 0.3,
    history: list[Any] | None = None,
    headers: Headers = (),
    body: bytes | None = None,
    timeout: float = 60.0,
) -> ApiResult:
    """One call of the `chat` API, streamed to the end."""
    content = body or _chat_body(message, model, system_prompt, temperature, history or [])
    with httpx.Client(timeout=timeout, trust_env=False) as http:
        response = http.post(
            f"{url}gradio_api/call/chat",
            content=content,
            headers=[("content-type", "application/json"), *headers],
        )
        if response.status_code != 200:
            return ApiResult(status=response.status_code, failed=True, error=response.text)
        event_id = response.json()["event_id"]
        with http.stream("GET", f"{url}gradio_api/call/chat/{event_id}") as stream:
            return _read_events(stream.iter_lines(), ApiResult())


async def api_chat_async(
    http: httpx.AsyncClient, url: str, message: str, headers: Headers
) -> ApiResult:
    """`api_chat` on a shared async client, for many calls at once."""
    response = await http.post(
        f"{url}gradio_api/call/chat",
        content=_chat_body(message, MODEL, "", 0.3, []),
        headers=[("content-type", "application/json"), *headers],
    )
    response.raise_for_status()
    event_id = response.json()["event_id"]
    async with http.stream("GET", f"{url}gradio_api/call/chat/{event_id}") as stream:
        lines = [line async for line in stream.aiter_lines()]
    return _read_events(lines, ApiResult())


def assert_still_serving(app: AppServer, ip: str | None = None) -> None:
    """The app process is alive and a normal chat gets its whole answer."""
    assert app.process.poll() is None, app.logs()[-3000:]
    prompt = f"Still there? {secrets.token_hex(3)}"
    headers = [("X-Forwarded-For", ip)] if ip else []
    result = api_chat(app.url, f"{prompt} [[tokens=4]]", headers=headers)
    assert result.completed, result
    assert result.text == expected_reply(prompt, 4)


def is_growing(outputs: Sequence[str]) -> bool:
    """Each streamed value extends the one before (nothing reordered or replaced)."""
    return all(b.startswith(a) for a, b in zip(outputs, outputs[1:], strict=False))


def fetch_raw(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback only
        return response.read().decode("utf-8")


# ---- checking what is on disk -------------------------------------------------------------


def usage_rows_in(path: Path) -> int:
    """Data rows of one usage CSV; every line parses, except perhaps a torn last one."""
    text = path.read_text(encoding="utf-8")
    if not text:
        return 0  # killed between creating the file and writing its header
    lines = text.split("\n")
    complete = lines[:-1]  # the last element is "" or a line the writer never finished
    rows = list(csv.reader(complete))
    assert rows and rows[0] == list(USAGE_COLUMNS), f"{path}: bad header {rows[:1]}"
    bad = [row for row in rows[1:] if len(row) != len(USAGE_COLUMNS)]
    assert not bad, f"{path}: unparsable rows {bad[:3]}"
    return len(rows) - 1


def check_usage_dir(usage_dir: Path) -> dict[Path, int]:
    """Rows per usage CSV, after checking each parses and `read_usage` drops no row."""
    counts = {path: usage_rows_in(path) for path in sorted(usage_dir.glob("usage-*.csv"))}
    assert sum(1 for _ in read_usage(usage_dir)) == sum(counts.values())
    return counts


def usage_statuses(usage_dir: Path, owner: str | None = None) -> Counter[str]:
    return Counter(r.status for r in read_usage(usage_dir, owner=owner))


def check_conversations(data_dir: Path, expected: dict[tuple[str, str], tuple[int, str]]) -> int:
    """The database is intact, every conversation is whole, no reported save is lost.

    Whole: SQLite's integrity check passes, each conversation's message rows are numbered
    0..n-1 with n the count the sidebar shows, and each message's metadata is JSON (an answer
    cut off mid-stream reads as interrupted, never as still streaming). `expected` maps
    (owner, id) to (message count, digest) as last reported saved: the conversation must
    hold at least that many messages, the first ones unchanged. Returns conversations checked.
    """
    assert stored.integrity(data_dir) == "ok"
    saved = stored.conversations(data_dir)
    for conversation in saved:
        assert conversation.positions == tuple(range(conversation.message_count)), conversation
        for message in conversation.messages:
            assert message.role in ("user", "assistant"), conversation
            assert (message.meta or {}).get("status") != "streaming", conversation
    by_key = {(c.owner_key, c.id): c for c in saved}
    lost = []
    for (owner, conversation_id), (count, fingerprint) in sorted(expected.items()):
        conversation = by_key.get((owner, conversation_id))
        if conversation is None:
            lost.append((conversation_id, "not in the database"))
            continue
        messages = conversation.messages
        if len(messages) < count or digest(messages[:count]) != fingerprint:
            lost.append((conversation_id, f"{len(messages)} messages, {count} were saved"))
    assert len(lost) == DATA_LOST, lost
    return len(saved)


# ---- browser helpers ---------------------------------------------------------------------


def conversation_items(page: Page) -> Any:
    return page.locator("#conversation-list label")


def wait_until_idle(page: Page) -> None:
    ui_wait_until_idle(page, timeout=45_000)


def chat_once(page: Page, text: str) -> None:
    """Send `text` and wait for the whole answer (a busy machine gets longer)."""
    ui_chat_once(page, text, timeout=45_000)


def assert_no_script_ran(page: Page) -> None:
    assert page.evaluate("() => window.__pwned") is None
    expect(page.locator("img[onerror]")).to_have_count(0)
    expect(page.locator("#chat script")).to_have_count(0)


# ---- 1. a crowd streaming through faults -------------------------------------------------


@pytest.fixture(scope="module")
def crowd_app(app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter) -> AppServer:
    """Behind a trusted proxy on loopback, so each simulated visitor has its own IP."""
    return app_factory(
        "crowd",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake_openrouter.base_url,
        STREAM_IDLE_TIMEOUT_SECONDS="2",
        RATE_LIMIT_REQUESTS_PER_MIN="2",
        TRUSTED_PROXIES="127.0.0.1",
    )


@dataclass(frozen=True)
class Visit:
    prompt: str
    ip: str
    fault: str = ""  # a directive, or "" for a normal answer

    @property
    def message(self) -> str:
        return f"{self.prompt} [[tokens=40]] [[rate=20]] {self.fault}".strip()

    @property
    def expected(self) -> str:
        return expected_reply(self.prompt, 40)


def run_crowd(
    url: str, visits: Sequence[Visit], fake: FakeOpenRouter
) -> tuple[list[ApiResult], int]:
    """All visits at once; returns their results and the most upstream streams seen open."""

    async def crowd() -> list[ApiResult]:
        limits = httpx.Limits(max_connections=4 * len(visits), max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as http:
            calls = (
                api_chat_async(http, url, v.message, [("X-Forwarded-For", v.ip)]) for v in visits
            )
            return list(await asyncio.gather(*calls))

    peak = 0
    # A thread of its own: the Playwright fixtures may own this thread's event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(asyncio.run, crowd())
        while not future.done():
            peak = max(peak, fake.active_streams)
            time.sleep(0.01)
        return future.result(), peak


def test_50_visitors_stream_at_once_48_answers_held_4_faults_kept_1_rate_limited(
    crowd_app: AppServer, fake: FakeOpenRouter
) -> None:
    tag = secrets.token_hex(3)
    faults = {
        7: ("[[midstream_error=5]]", "interrupted: Provider disconnected"),
        19: ("[[stall=3]]", "stalled: nothing arrived for 2 s"),
        31: ("[[drop=4]]", "connection to OpenRouter was lost mid-answer"),
        43: ("[[error=402]]", r"out of credits \(402\)"),
    }
    assert len(faults) == FAULTED_STREAMS
    visits = [
        Visit(f"Visitor {n:02d} {tag}", f"203.0.113.{n + 1}", faults.get(n, ("", ""))[0])
        for n in range(CONCURRENT_VISITORS)
    ]
    greedy = [Visit(f"Greedy {n} {tag}", "198.51.100.7") for n in range(GREEDY_REQUESTS)]
    usage_dir = crowd_app.workdir / ".data" / "usage"
    before = usage_statuses(usage_dir, owner="api")

    results, peak_streams = run_crowd(crowd_app.url, [*visits, *greedy], fake)

    by_visit = dict(zip([*visits, *greedy], results, strict=True))
    for n, visit in enumerate(visits):
        result = by_visit[visit]
        assert is_growing(result.outputs), (visit, result.outputs)
        if n not in faults:
            # Its own answer, whole, and streamed: a crossed stream would show another prompt.
            assert result.completed and result.text == visit.expected, (visit, result)
            assert len(result.outputs) >= 3, result.outputs
            continue
        assert result.failed and not result.completed, (visit, result)
        assert re.search(faults[n][1], result.error or ""), (visit, result.error)
        assert visit.expected.startswith(result.text), (visit, result.text)
        if "402" not in visit.fault:  # refused before any text: nothing to keep
            assert result.text.startswith("Echo: Visitor"), result.text
    greedy_results = [by_visit[v] for v in greedy]
    refused = [r for r in greedy_results if r.failed]
    assert len(refused) == RATE_LIMITED, greedy_results
    assert "too fast: the limit is 2 per minute" in (refused[0].error or "")
    held = [(v, r) for v, r in zip(greedy, greedy_results, strict=True) if not r.failed]
    assert all(r.completed and r.text == v.expected for v, r in held), held
    # They really streamed together (generous: arrivals spread out on a busy machine).
    assert peak_streams >= CONCURRENT_VISITORS // 2, peak_streams

    # Every turn reached the usage log with the right outcome, even under load.
    after = usage_statuses(usage_dir, owner="api")
    assert after - before == Counter(
        complete=STREAMS_HELD, interrupted=FAULTED_STREAMS - 1, failed=1, rate_limited=1
    )
    # The stalled and dropped upstream requests were closed, not leaked.
    deadline = time.monotonic() + 20
    while fake.active_streams and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake.active_streams == 0
    assert_still_serving(crowd_app, ip="203.0.113.200")


@pytest.mark.e2e
def test_two_visitors_streaming_at_once_each_see_only_their_own_answer(
    browser: Browser, crowd_app: AppServer, fake: FakeOpenRouter
) -> None:
    tag = secrets.token_hex(3)
    prompts = {"192.0.2.11": f"Alice tulips {tag}", "192.0.2.12": f"Bob volcanoes {tag}"}
    contexts = [
        browser.new_context(
            viewport={"width": 1280, "height": 900}, extra_http_headers={"X-Forwarded-For": ip}
        )
        for ip in prompts
    ]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            open_app(page, crowd_app.url)
        for page, prompt in zip(pages, prompts.values(), strict=True):
            send(page, f"{prompt} [[tokens=60]] [[rate=20]]")
        for page in pages:  # both answers are on their way at the same time
            expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
        for page in pages:
            wait_until_idle(page)
        for page, (mine, theirs) in zip(
            pages, [tuple(prompts.values()), tuple(reversed(prompts.values()))], strict=True
        ):
            expect(last_answer(page)).to_contain_text(expected_reply(mine, 60))
            expect(page.locator("#chat")).not_to_contain_text(theirs.split()[0])
            expect(conversation_items(page)).to_have_count(1)
            expect(conversation_items(page).first).to_contain_text(mine.split()[0])
        data_dir = crowd_app.workdir / ".data"
        alice = stored.find_saved(data_dir, "Alice tulips " + tag)
        bob = stored.find_saved(data_dir, "Bob volcanoes " + tag)
        assert alice.owner_key != bob.owner_key  # two owners, one conversation each
        for owner in (alice, bob):
            assert [c.id for c in stored.conversations(data_dir, owner.owner_key)] == [owner.id]
        assert not alice.contains("Bob") and not bob.contains("Alice")
    finally:
        for context in contexts:
            context.close()


# ---- 2. crash safety ---------------------------------------------------------------------


class Worker:
    """`tests/reliability_worker.py`: one process that forks a chatting child per run."""

    def __init__(self, data_dir: Path, base_url: str, stderr: IO[bytes]) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability_worker",
                str(data_dir),
                base_url,
                TEST_API_KEY,
            ],
            cwd=REPO,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": str(REPO),
                "HOME": str(data_dir.parent),
                "NO_PROXY": "*",
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for("ready", 0)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, start: int, timeout: float = 60.0) -> int:
        """Index of the first line from `start` on that begins with `prefix`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(start, len(self.lines)):
                if self.lines[index].startswith(prefix):
                    return index
            if self.process.poll() is not None:
                break
            time.sleep(0.005)
        raise AssertionError(f"worker never said {prefix!r}; exit code {self.process.poll()}")

    def run_child(self) -> tuple[int, Path, int]:
        """Fork a chatting child; returns its pid, its usage CSV and where its lines start."""
        start = len(self.lines)
        assert self.process.stdin is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        index = self.wait_for("started ", start)
        _, pid, usage_path = self.lines[index].split(" ", 2)
        return int(pid), Path(usage_path), index

    def kill_child(self, pid: int, start: int) -> list[str]:
        """SIGKILL the child; returns the lines it wrote, once its parent has reaped it."""
        os.kill(pid, signal.SIGKILL)
        end = self.wait_for(f"exited {pid} ", start)
        assert self.lines[end] == f"exited {pid} -9", self.lines[end]
        return self.lines[start:end]

    def close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self._reader.join(timeout=30)


def test_20_sigkills_while_saving_conversations_lose_and_damage_nothing(
    fake: FakeOpenRouter, tmp_path: Path
) -> None:
    # The real app saves conversations only for browser turns, and twenty browser-driven
    # restarts would take minutes; the worker runs the same services (ConversationService,
    # ChatService, ConversationStore, UsageLog) against the fake, six turns in flight, and
    # each cycle SIGKILLs a fresh process at a random moment. The real app is killed below.
    data_dir = tmp_path / "data"
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    expected: dict[tuple[str, str], tuple[int, str]] = {}
    saves_reported = 0
    with (tmp_path / "worker.log").open("wb") as log:
        worker = Worker(data_dir, fake.base_url, log)
        try:
            for cycle in range(WORKER_KILL_CYCLES):
                pid, usage_path, start = worker.run_child()
                worker.wait_for("saved ", start)
                time.sleep(rng.uniform(0.0, 0.5))
                saved_now = 0
                for line in worker.kill_child(pid, start):
                    kind, *fields_ = line.split() or [""]
                    if kind == "saved" and len(fields_) == 4 and len(fields_[3]) == 16:
                        owner, conversation_id, count, fingerprint = fields_
                        expected[(owner, conversation_id)] = (int(count), fingerprint)
                        saved_now += 1
                    elif kind == "deleting":
                        expected.pop((fields_[0], fields_[1]), None)
                saves_reported += saved_now
                context = f"cycle {cycle}, seed {seed}"
                assert check_conversations(data_dir, expected) > 0, context
                rows = check_usage_dir(data_dir / "usage")
                # Each reported turn wrote its usage row before its final save.
                assert rows.get(usage_path, 0) >= saved_now, context
        finally:
            worker.close()
    assert saves_reported >= WORKER_KILL_CYCLES


def chat_until_stopped(
    url: str, label: str, stop: threading.Event, completed: list[int], slot: int
) -> None:
    """Chat in a loop, counting whole answers in `completed[slot]`, until the app dies."""
    turn = 0
    while not stop.is_set():
        turn += 1
        prompt = f"{label} {turn}"
        try:
            result = api_chat(url, f"{prompt} [[tokens=12]] [[rate=120]]", timeout=30)
        except httpx.HTTPError:
            return  # the app is gone
        if not (result.completed and result.text == expected_reply(prompt, 12)):
            return  # killed mid-answer
        completed[slot] += 1


@pytest.mark.e2e
def test_3_sigkills_of_the_real_app_mid_answer_lose_no_saved_chat_or_usage_row(
    page: Page, app_factory: Callable[..., AppServer], fake: FakeOpenRouter
) -> None:
    # The real app, killed while a visitor's answer streams in the browser and four API
    # callers chat in a loop; restarted on the same port and data each time.
    app = app_factory("crash", OPENROUTER_API_KEY=TEST_API_KEY, OPENROUTER_BASE_URL=fake.base_url)
    data_dir = app.workdir / ".data"
    usage_dir = data_dir / "usage"
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    tag = secrets.token_hex(3)
    answered = 0
    kept: list[str] = []  # questions of turns that finished before a kill
    try:
        for cycle in range(APP_KILL_CYCLES):
            context = f"cycle {cycle}, seed {seed}"
            files_before = set(usage_dir.glob("usage-*.csv"))
            open_app(page, app.url)
            for question in kept:  # the visitor finds every chat saved before a crash
                expect(conversation_items(page).filter(has_text=question)).to_have_count(1)
            completed = [0] * 4
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=chat_until_stopped,
                    args=(app.url, f"crash {cycle} {n}", stop, completed, n),
                )
                for n in range(4)
            ]
            for thread in threads:
                thread.start()
            finished = f"Finished turn {cycle} {tag}"
            chat_once(page, f"{finished} [[tokens=5]]")
            cut = f"Cut short {cycle} {tag}"
            send(page, f"{cut} [[tokens=300]] [[rate=50]]")
            expect(last_answer(page)).to_contain_text(f"Echo: Cut short {cycle}")
            deadline = time.monotonic() + 60
            while sum(completed) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
            app.process.kill()
            app.process.wait(timeout=30)
            page.goto("about:blank")  # else the tab reloads itself when the app is back
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            answered += sum(completed)

            check_conversations(data_dir, {})
            messages = stored.find_saved(data_dir, finished).messages
            # The finished turn is whole; the question being answered was saved first.
            assert [m.content for m in messages[:2]] == [
                f"{finished} [[tokens=5]]",
                expected_reply(finished, 5),
            ], context
            assert messages[2].content == f"{cut} [[tokens=300]] [[rate=50]]", context
            kept.append(finished)
            rows = check_usage_dir(usage_dir)
            (killed_file,) = set(rows) - files_before  # one CSV per process
            # Every answer a caller received in full had its usage row written first.
            assert rows[killed_file] >= sum(completed) + 1 >= 5, context
            app = app.restart()  # same port and data; reads the server secret it wrote
        open_app(page, app.url)
        for question in kept:
            expect(conversation_items(page).filter(has_text=question)).to_have_count(1)
        assert_still_serving(app)
        total_rows = sum(check_usage_dir(usage_dir).values())
        assert total_rows >= answered + APP_KILL_CYCLES + 1
        assert summarize_directory(usage_dir).totals.requests == total_rows
    finally:
        app.stop()


# ---- 3. a data directory that refuses writes ----------------------------------------------


@dataclass
class TroubledApp:
    server: AppServer
    data_dir: Path
    on_tmpfs: bool
    upstream: FakeOpenRouter


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[bool]:
    """Mount a small tmpfs on `directory` when running as root and `mount` allows it.

    Yields whether it did; unmounts on exit (lazily if something still holds a file).
    """
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount") is not None:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        mounted = done.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            unmounted = subprocess.run(["umount", str(directory)], check=False, timeout=30)
            if unmounted.returncode != 0:
                subprocess.run(["umount", "-l", str(directory)], check=False, timeout=30)


def fill_disk(filler: Path) -> None:
    """Write zeros to `filler` until the filesystem is full."""
    try:
        with filler.open("wb") as handle:
            while True:
                handle.write(b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc


@pytest.fixture(scope="module")
def troubled_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroubledApp]:
    """An app with trouble on both sides (one app start serves both sets of tests).

    Its DATA_DIR is a 4 MB tmpfs when possible, so the disk can fill up. Its upstream is a
    fake of its own whose model catalog answers with broken JSON, so the catalog of the
    other apps stays live.
    """
    upstream = FakeOpenRouter(tokens_per_second=200.0, default_tokens=20)
    upstream.catalog_mode = "invalid_json"
    upstream.start()
    workdir = tmp_path_factory.mktemp("troubled")
    data_dir = workdir / "data"
    data_dir.mkdir()
    with small_tmpfs(data_dir, "4m") as on_tmpfs:
        server = start_app(
            workdir,
            {
                "OPENROUTER_API_KEY": TEST_API_KEY,
                "OPENROUTER_BASE_URL": upstream.base_url,
                "DATA_DIR": str(data_dir),
                "CATALOG_REFRESH_SECONDS": "10",
                # A locked database is given up on after 1 s instead of 5 (the same story,
                # told faster); the URL names the default file, so nothing else changes.
                "DATABASE_URL": f"sqlite:///{data_dir / 'chat.db'}?timeout=1",
                "BROWSER_STATE_SECRET": "reliability-tests-browser-state-secret",
            },
        )
        try:
            yield TroubledApp(server, data_dir, on_tmpfs, upstream)
        finally:
            server.stop()
            upstream.stop()


@contextlib.contextmanager
def data_fault(kind: str, data_dir: Path) -> Iterator[str]:
    """Make the database refuse saves in one way; yields what the visitor should be told.

    Undone on exit. There is no read-only fault: SQLite keeps chat.db and its -wal and
    -shm files open, and `chattr +i` (or a chmod) of them or of the folder reaches only
    connections opened afterwards; the app's pooled connections go on writing (tried by
    hand), and an app started on such a folder does not start at all.
    """
    if kind == "locked":
        # Another process holds SQLite's write lock: each of the app's writes waits its
        # busy_timeout (the app's DATABASE_URL says 1 s), then gives up. Readers are not blocked.
        holder = sqlite3.connect(stored.database_path(data_dir), timeout=1, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield "the database is busy"
        finally:
            holder.close()  # rolls back the empty transaction: the lock is released
    elif kind == "disk_full":
        # The write-ahead log grows with every commit; SQLite gets ENOSPC (SQLITE_FULL).
        filler = data_dir / "filler"
        fill_disk(filler)
        try:
            yield "the disk is full"
        finally:
            filler.unlink()
    else:
        raise ValueError(kind)


@pytest.mark.e2e
@pytest.mark.parametrize("fault", ["locked", "disk_full"])
def test_when_saving_fails_the_chat_goes_on_the_visitor_is_told_and_saved_chats_survive(
    fault: str, page: Page, troubled_app: TroubledApp
) -> None:
    if fault == "disk_full" and not troubled_app.on_tmpfs:
        pytest.skip("filling a disk needs root and a tmpfs mount")
    url, data_dir = troubled_app.server.url, troubled_app.data_dir
    tag = secrets.token_hex(3)
    before_q = f"Before the fault {tag}"
    open_app(page, url)
    chat_once(page, f"{before_q} [[tokens=4]]")
    saved = stored.find_saved(data_dir, before_q)
    owner, conversation_id = saved.owner_key, saved.id
    usage_before = {p: p.read_bytes() for p in (data_dir / "usage").glob("usage-*.csv")}

    with data_fault(fault, data_dir) as reason:
        # Locked, the question's save, the usage row and the answer's save each wait the
        # database's busy_timeout (1 s here) before giving up.
        during = f"During the fault {tag}"
        send(page, f"{during} [[tokens=6]]")
        expect(last_answer(page)).to_contain_text(expected_reply(during, 6), timeout=45_000)
        warning = toast(page, "Could not save the conversation").first
        expect(warning).to_be_visible()
        expect(warning).to_contain_text(reason)
        wait_until_idle(page)
        page.locator("#new-chat").click()
        expect(user_messages(page)).to_have_count(0)
        fresh = f"Fresh during the fault {tag}"
        send(page, f"{fresh} [[tokens=3]]")
        expect(last_answer(page)).to_contain_text(expected_reply(fresh, 3), timeout=45_000)
        wait_until_idle(page)

    # What was saved before the fault is untouched: the same revision, title and messages,
    # each with its metadata; the database is intact and the fresh chat left no trace.
    assert stored.integrity(data_dir) == "ok"
    assert stored.conversation(data_dir, owner, conversation_id) == saved
    assert saved.contents == [f"{before_q} [[tokens=4]]", expected_reply(before_q, 4)]
    assert [c.id for c in stored.conversations(data_dir, owner)] == [conversation_id]
    # After a reload the visitor finds it; saving works again without a restart.
    open_app(page, url)
    expect(conversation_items(page).filter(has_text=before_q)).to_have_count(1)
    expect(page.locator("#conversation-list")).not_to_contain_text(fresh)
    conversation_items(page).filter(has_text=before_q).click()
    expect(user_messages(page)).to_have_count(1)
    after = f"After the fault {tag}"
    chat_once(page, f"{after} [[tokens=3]]")
    assert stored.conversation(data_dir, owner, conversation_id).contents[2:] == [
        f"{after} [[tokens=3]]",
        expected_reply(after, 3),
    ]
    # The usage log only grew, and records turns again.
    for path, before in usage_before.items():
        assert path.read_bytes().startswith(before), path
    rows_before = sum(before.count(b"\n") - 1 for before in usage_before.values())
    assert sum(1 for _ in read_usage(data_dir / "usage")) > rows_before


def _usage_record(model: str) -> UsageRecord:
    return UsageRecord(
        timestamp=utc_timestamp(1_700_000_000),
        request_id="0123456789abcdef",
        owner="f" * 32,
        conversation_id="",
        model=model,
        status="complete",
        prompt_tokens=12,
        completion_tokens=345,
        cost_usd=0.00123,
        ttft_ms=12.5,
        latency_ms=345.6,
        tokens_per_second=67.89,
    )


def test_a_usage_row_cut_short_by_a_full_disk_leaves_no_partial_line(tmp_path: Path) -> None:
    directory = tmp_path / "small"
    directory.mkdir()
    with small_tmpfs(directory, "64k") as mounted:
        if not mounted:
            pytest.skip("filling a disk needs root and a tmpfs mount")
        log = UsageLog(directory / "usage", process_id="disk-full")
        try:
            log.record_sync(_usage_record("openai/gpt-4o"))
            # Grow the file until the next full row would end ~70 bytes into a fresh page,
            # which a full disk cannot give.
            base = len(format_usage_row(_usage_record("")).encode())
            size = log.path.stat().st_size
            while (4096 - size % 4096) > base + 256 + 70:
                log.record_sync(_usage_record("openai/gpt-4o"))
                size = log.path.stat().st_size
            padding = 4096 - size % 4096 - 70 - base
            log.record_sync(_usage_record("m" * padding))
            fill_disk(directory / "filler")
            log.record_sync(_usage_record("openai/gpt-4o"))  # cut short: logged, not raised
            (directory / "filler").unlink()
            log.record_sync(_usage_record("openai/gpt-4o"))
        finally:
            log.close()
        lines = [line for line in log.path.read_text().split("\n") if line]
        widths = [len(row) for row in csv.reader(lines)]
        assert widths == [len(USAGE_COLUMNS)] * len(lines), widths


def catalog_failures(app: AppServer) -> list[tuple[float, str]]:
    """When (Unix time) and why the app's catalog fetches failed, from its JSON log."""
    failures = []
    for line in app.log_path.read_text().splitlines():
        if '"catalog.fetch_failed"' in line:
            with contextlib.suppress(ValueError):  # a line still being written
                event = json.loads(line)
                at = datetime.fromisoformat(event["timestamp"]).timestamp()
                failures.append((at, event.get("error", "")))
    return failures


def wait_for_catalog_failure(app: AppServer, error: str) -> list[tuple[float, str]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        failures = catalog_failures(app)
        if any(why == error for _, why in failures):
            return failures
        time.sleep(0.1)
    raise AssertionError(f"no {error} in {catalog_failures(app)}")


def expect_fallback_models(page: Page, url: str) -> None:
    open_app(page, url)
    expect(page.locator("#catalog-status")).to_contain_text("offline")
    page.locator("#model-picker input").click()
    expect(
        page.get_by_role("option").filter(has_text="anthropic/claude-sonnet-4.5")
    ).to_be_visible()


@pytest.mark.e2e
def test_a_catalog_that_is_not_json_then_gigantic_leaves_the_built_in_model_list(
    page: Page, troubled_app: TroubledApp
) -> None:
    app, upstream = troubled_app.server, troubled_app.upstream
    failures = wait_for_catalog_failure(app, "JSONDecodeError")  # the answer at startup
    expect_fallback_models(page, app.url)
    assert_still_serving(app)

    # On the fallback list the app asks again, on a page load, once the list is
    # CATALOG_REFRESH_SECONDS (10) old; now the answer is 20 MB, over its 8 MB cap.
    upstream.catalog_mode = "huge"
    last_failure = max(at for at, _ in catalog_failures(app))
    time.sleep(max(0.0, last_failure + 10.5 - time.time()))
    expect_fallback_models(page, app.url)
    failures = wait_for_catalog_failure(app, "ValueError")
    assert {why for _, why in failures} == {"JSONDecodeError", "ValueError"}
    expect_fallback_models(page, app.url)
    assert_still_serving(app)


# ---- 4. hostile input --------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_app(
    app_factory: Callable[..., AppServer], fake_openrouter: FakeOpenRouter
) -> AppServer:
    """Behind a trusted proxy, with a (high) rate limit so forwarded junk reaches the limiter.

    It also holds every fake secret: the leak test runs last on it, so it covers what all
    the hostile input before it made the app log, store and answer.
    """
    fake_openrouter.catalog_mode = "ok"  # the picker test needs the live catalog
    return app_factory(
        "hostile",
        OPENROUTER_API_KEY=TEST_API_KEY,
        OPENROUTER_BASE_URL=fake_openrouter.base_url,
        STREAM_IDLE_TIMEOUT_SECONDS="3",
        RATE_LIMIT_REQUESTS_PER_MIN="100000",
        TRUSTED_PROXIES="127.0.0.1",
        HF_TOKEN=HF_TOKEN,
        BROWSER_STATE_SECRET=BROWSER_STATE_SECRET,
    )


def test_oversize_messages_are_refused_with_the_limit_and_the_app_keeps_serving(
    hostile_app: AppServer, fake: FakeOpenRouter
) -> None:
    for length in OVERSIZE_LENGTHS:
        result = api_chat(hostile_app.url, "y" * length)
        assert result.failed, result.outputs[-1:]
        assert f"{length:,} characters long; the limit is 8,000" in (result.error or "")
    assert fake.chat_requests() == []
    assert_still_serving(hostile_app)


def test_control_characters_are_passed_through_and_answered_or_refused_clearly(
    hostile_app: AppServer, fake: FakeOpenRouter
) -> None:
    mixed, only_nul = CONTROL_MESSAGES
    result = api_chat(hostile_app.url, mixed)
    sent = mixed.replace("\x00", "")  # NUL is the one character the app removes
    assert result.completed, result
    assert result.text == expected_reply(sent, 8)
    assert fake.chat_requests()[-1].body["messages"][-1]["content"] == sent
    refused = api_chat(hostile_app.url, only_nul)
    assert refused.failed and refused.error == "Type a message first."
    assert_still_serving(hostile_app)


def _surrogate_call(url: str, position: str) -> ApiResult:
    lone = "\ud800 and \udfff"
    if position == "message":
        return api_chat(url, f"lone {lone} [[tokens=5]]")
    if position == "system_prompt":
        return api_chat(url, "hi [[tokens=5]]", system_prompt=lone)
    if position == "history":
        history = [{"role": "user", "content": lone}, {"role": "assistant", "content": "ok"}]
        return api_chat(url, "hi [[tokens=5]]", history=history)
    return api_chat(url, "hi [[tokens=5]]", model=f"openai/{lone}")


@pytest.mark.parametrize("position", SURROGATE_POSITIONS)
def test_lone_surrogates_never_break_the_app(hostile_app: AppServer, position: str) -> None:
    result = _surrogate_call(hostile_app.url, position)
    assert result.status == 200
    assert result.completed or result.failed  # an answer or an error, never a hang
    assert_still_serving(hostile_app)


def test_lone_surrogates_get_a_clear_error_or_a_sanitised_answer(hostile_app: AppServer) -> None:
    for position in SURROGATE_POSITIONS:
        result = _surrogate_call(hostile_app.url, position)
        assert result.completed or result.error, (position, result)


def test_a_temperature_that_is_not_a_number_is_refused_with_a_reason(
    hostile_app: AppServer,
) -> None:
    for temperature in TEMPERATURE_JUNK:
        result = api_chat(hostile_app.url, "hi [[tokens=3]]", temperature=temperature)
        assert result.completed or "temperature" in (result.error or ""), (temperature, result)


def test_junk_temperatures_never_break_the_app(hostile_app: AppServer) -> None:
    for temperature in TEMPERATURE_JUNK:
        result = api_chat(hostile_app.url, "hi [[tokens=3]]", temperature=temperature)
        assert result.status == 200 and (result.completed or result.failed)
    assert_still_serving(hostile_app)


def test_a_request_body_that_is_not_utf8_gets_a_client_error(hostile_app: AppServer) -> None:
    result = api_chat(hostile_app.url, "", body=b'{"data": ["\xff\xfe", "m", "", 0.3, []]}')
    assert 400 <= result.status < 500, result
    assert_still_serving(hostile_app)


def test_malformed_forwarded_headers_are_still_served(
    hostile_app: AppServer, fake: FakeOpenRouter
) -> None:
    for junk in FORWARDED_FOR_JUNK:
        prompt = f"Forwarded junk {secrets.token_hex(3)}"
        result = api_chat(
            hostile_app.url, f"{prompt} [[tokens=3]]", headers=[("X-Forwarded-For", junk)]
        )
        assert result.completed and result.text == expected_reply(prompt, 3), (junk[:40], result)
    several = [("X-Forwarded-For", "203.0.113.5"), ("X-Forwarded-For", "nonsense, [::1]")]
    result = api_chat(hostile_app.url, "Several lines [[tokens=3]]", headers=several)
    assert result.completed and result.text == expected_reply("Several lines", 3)
    assert_still_serving(hostile_app)


@pytest.mark.parametrize("fault", UPSTREAM_STREAM_FAULTS)
def test_a_malformed_upstream_stream_is_a_clear_error_with_the_partial_kept(
    hostile_app: AppServer, fake: FakeOpenRouter, fault: str
) -> None:
    prompt = f"Broken stream {fault}"
    result = api_chat(hostile_app.url, f"{prompt} [[tokens=20]] [[{fault}=4]]")
    assert result.failed, result
    assert "OpenRouter sent a malformed stream" in (result.error or "")
    assert "The text so far is kept" in (result.error or "")
    assert result.text and expected_reply(prompt, 20).startswith(result.text), result.outputs
    assert_still_serving(hostile_app)


@pytest.mark.e2e
def test_html_in_model_names_messages_and_model_ids_never_runs_and_a_1mb_paste_is_refused(
    page: Page, hostile_app: AppServer, fake: FakeOpenRouter
) -> None:
    page.add_init_script(ALERT_TRAP)
    open_app(page, hostile_app.url)
    expect(page.locator("#catalog-status")).to_contain_text("models from OpenRouter")

    # The fake catalog names a model "<img src=x onerror=alert(1)>Evil <b>Model</b>".
    picker = page.locator("#model-picker input")
    picker.click()
    picker.fill("evil")
    option = page.get_by_role("option").filter(has_text="evil/model")
    expect(option).to_be_visible()
    expect(option).to_contain_text("<img src=x onerror=alert(1)>Evil <b>Model</b>")
    expect(page.locator("[role=option] b, [role=option] img")).to_have_count(0)
    assert_no_script_ran(page)
    picker.press("Enter")
    page.locator("#system-prompt textarea").click()

    chat_once(page, f"{HOSTILE_MARKUP} hello [[tokens=3]]")
    expect(last_answer(page)).to_contain_text("evil/model")
    assert_no_script_ran(page)

    set_model(page, "<img/src=x/onerror=alert(3)>")
    chat_once(page, "custom model id [[tokens=2]]")
    assert fake.chat_requests()[-1].body["model"] == "<img/src=x/onerror=alert(3)>"
    page.wait_for_timeout(300)
    assert_no_script_ran(page)

    # A 1 MB paste is refused with the limit, and stays in the box.
    big = "z" * 1_000_000
    page.locator(INPUT).fill(big)
    page.get_by_role("button", name="Send", exact=True).click()
    refusal = page.locator("#message-counter .refusal")  # in place, before anything is sent
    expect(refusal).to_contain_text("Too long: 1,000,000 of 8,000 characters")
    assert page.locator(INPUT).evaluate("(box) => box.value.length") == len(big)

    set_model(page, MODEL)
    page.locator(INPUT).fill("")
    chat_once(page, "plain again [[tokens=3]]")
    expect(last_answer(page)).to_contain_text(expected_reply("plain again", 3))
    assert_no_script_ran(page)


# ---- 5. secrets ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_no_secret_reaches_logs_files_pages_or_api_responses(
    page: Page, hostile_app: AppServer, fake: FakeOpenRouter, tmp_path: Path
) -> None:
    app = hostile_app  # sync stays off: HF_DATASET_REPO is unset
    seen: dict[str, str] = {}

    # In the browser: a chat, two failing turns, an export, the usage tab.
    open_app(page, app.url)
    chat_once(page, "Tell me a secret [[tokens=5]]")
    send(page, "Out of money [[error=402]]")
    expect(last_answer(page)).to_contain_text("out of credits")
    wait_until_idle(page)
    send(page, "Break midway [[tokens=9]] [[midstream_error=3]]")
    expect(last_answer(page)).to_contain_text("interrupted")
    wait_until_idle(page)
    page.get_by_role("button", name="Actions for Tell me a secret").click()
    with page.expect_download() as download_info:
        page.get_by_role("menuitem", name="Export JSON").click()
    exported = tmp_path / "export.json"
    download_info.value.save_as(exported)
    seen["export download"] = exported.read_text()
    assert "Tell me a secret" in seen["export download"]
    page.get_by_role("tab", name="Usage").click()
    expect(page.locator("#usage-totals-mine")).to_contain_text("3 requests")
    seen["page"] = page.content()

    # Through the API: an answer, a rejected key, a crash inside the SDK (lone surrogate).
    for n, message in enumerate(
        ["api hello [[tokens=4]]", "api no key [[error=401]]", "api \ud800 [[tokens=2]]"]
    ):
        result = api_chat(app.url, message)
        seen[f"api call {n}"] = json.dumps([result.outputs, result.error])
    seen["/config"] = fetch_raw(f"{app.url}config")
    seen["/gradio_api/info"] = fetch_raw(f"{app.url}gradio_api/info")
    seen["logs"] = app.logs()
    for path in sorted(p for p in app.workdir.rglob("*") if p.is_file()):
        seen[str(path.relative_to(app.workdir))] = path.read_bytes().decode("utf-8", "replace")

    assert any(name.startswith(".data/usage/") for name in seen)
    assert any(name.startswith(".data/exports/") for name in seen)
    # The conversations are in the database (its pages, and those still in its write-ahead
    # log), and the scan read them as raw bytes: the chat above is in there.
    database = [seen.get(".data/chat.db", ""), seen.get(".data/chat.db-wal", "")]
    assert any("Tell me a secret" in raw for raw in database)
    leaks = [
        (secret, where) for where, text in seen.items() for secret in SECRETS if secret in text
    ]
    assert leaks == []
