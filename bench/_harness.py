"""Shared pieces of the benchmarks: subprocesses, CPU accounting, load generators, statistics.

Everything talks to loopback only. Subprocesses are registered in a `ProcessGroup` that
terminates them on exit, on Ctrl-C and on SIGTERM; on Linux they also get SIGTERM from the
kernel if the bench process itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import orjson
import structlog

from chatlib.chat import TurnRequest
from chatlib.config import Settings
from chatlib.conversations import ConversationFrame
from chatlib.services import Services
from tests.fakes.openrouter import expected_reply

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Recognizable fake key; the fake accepts any bearer token that does not contain "invalid".
FAKE_API_KEY = "sk-or-v1-BENCHKEY0000notasecret0000cafe"
MODEL = "openai/gpt-4o"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1

# Idle pooled connections are dropped after 2 s, before uvicorn's 5 s keep-alive timeout:
# with equal timeouts the client sometimes reuses a connection the server is closing.
UNLIMITED = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=2.0)
# Towards Gradio, no reuse at all: when this process is overloaded it can hand back a
# connection long after the server sent the response and started its 5 s idle timer.
FRESH_CONNECTIONS = httpx.Limits(max_connections=None, max_keepalive_connections=0)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the bench process dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def base_env(workdir: Path) -> dict[str, str]:
    """A minimal, reproducible environment for a child process (no developer .env, no proxy)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "*",
    }


@dataclass
class Service:
    """A subprocess serving HTTP on loopback."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    workdir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all threads)."""
        return cpu_seconds(self.pid)

    def output(self) -> str:
        """What the process wrote to stdout/stderr so far."""
        path = self.workdir / f"{self.name}.out"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        """Raise if the process has exited."""
        if self.process.poll() is not None:
            tail = self.output()[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")


class ProcessGroup:
    """Owns the subprocesses of one bench run and always stops them."""

    def __init__(self) -> None:
        self._services: list[Service] = []

    def spawn(self, name: str, argv: Sequence[str], workdir: Path, env: dict[str, str]) -> Service:
        """Start `argv` in `workdir` with output to `<workdir>/<name>.out`."""
        workdir.mkdir(parents=True, exist_ok=True)
        with (workdir / f"{name}.out").open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop children in order
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets the death signal
            )
        service = Service(name=name, process=process, url="", workdir=workdir)
        self._services.append(service)
        return service

    def stop(self, service: Service, timeout: float = 10.0) -> None:
        """Terminate one service (SIGTERM, then SIGKILL) and forget it."""
        process = service.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if service in self._services:
            self._services.remove(service)

    def stop_all(self) -> None:
        """Terminate every service still running, newest first."""
        for service in reversed(list(self._services)):
            with contextlib.suppress(Exception):
                self.stop(service)

    def __enter__(self) -> ProcessGroup:
        def on_sigterm(_signum: int, _frame: object) -> None:
            raise SystemExit(143)

        signal.signal(signal.SIGTERM, on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _wait_for_line(service: Service, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.check_alive()
        for line in service.output().splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        time.sleep(0.05)
    raise RuntimeError(f"{service.name} printed no {prefix!r} within {timeout} s")


def start_fake(group: ProcessGroup, workdir: Path, tokens_per_second: float) -> Service:
    """The fake OpenRouter in its own process (its CLI); `url` is its base URL."""
    argv = [
        PYTHON,
        "-m",
        "tests.fakes.openrouter",
        "--port",
        "0",
        "--tokens-per-second",
        f"{tokens_per_second:g}",
        "--no-record",
    ]
    service = group.spawn("fake", argv, workdir, base_env(workdir))
    service.url = _wait_for_line(service, "READY ", timeout=30.0)
    return service


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def start_gradio(
    group: ProcessGroup,
    name: str,
    script: Path,
    workdir: Path,
    env_overrides: dict[str, str],
    timeout: float = 90.0,
) -> Service:
    """Start a Gradio script on a free loopback port and wait until its API answers."""
    port = free_port()
    env = {**base_env(workdir), "HOST": "127.0.0.1", "PORT": str(port), **env_overrides}
    service = group.spawn(name, [PYTHON, str(script)], workdir, env)
    service.url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.check_alive()
        if _http_ok(service.url + "gradio_api/info"):
            return service
        time.sleep(0.2)
    group.stop(service)
    raise RuntimeError(f"{name} did not start within {timeout} s:\n{service.output()[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat, in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; fields after it are space-separated.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def idle_cpu_rate(service: Service, seconds: float) -> float:
    """CPU seconds per wall second the service burns while nobody uses it."""
    before, started = service.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (service.cpu_seconds() - before) / (time.monotonic() - started)


def api_parameters(app_url: str, api_name: str) -> list[dict[str, Any]]:
    """The parameter list of a named endpoint, from the app's /gradio_api/info."""
    with urllib.request.urlopen(app_url + "gradio_api/info", timeout=10) as response:  # noqa: S310
        info = json.load(response)
    endpoint = info["named_endpoints"].get("/" + api_name)
    if endpoint is None:
        raise RuntimeError(f"no /{api_name} endpoint; have {sorted(info['named_endpoints'])}")
    return list(endpoint["parameters"])


def build_api_data(
    parameters: Sequence[dict[str, Any]], values: dict[str, Any]
) -> Callable[[str], list[Any]]:
    """A function message -> the positional `data` list the endpoint takes.

    `message` is filled per call; other parameters take `values[name]`, else their default.
    """
    names = [p["parameter_name"] for p in parameters]
    if "message" not in names:
        raise RuntimeError(f"endpoint takes {names}, none of them 'message'")
    fixed: list[Any] = []
    for parameter in parameters:
        name = parameter["parameter_name"]
        if name == "message":
            fixed.append(None)
        elif name in values:
            fixed.append(values[name])
        elif parameter.get("parameter_has_default"):
            fixed.append(parameter.get("parameter_default"))
        else:
            raise RuntimeError(f"no value for required parameter {name!r}")
    slot = names.index("message")

    def data(message: str) -> list[Any]:
        row = list(fixed)
        row[slot] = message
        return row

    return data


# ------------------------------------------------------------------------ load generators


@dataclass
class StreamResult:
    """What one client saw of one streamed answer."""

    ok: bool
    ttft_s: float | None
    total_s: float
    text: str
    events: int
    error: str | None = None
    # Gradio only: when the POST returned its event id, and when the first SSE event arrived.
    queued_s: float | None = None
    first_event_s: float | None = None

    @property
    def tokens(self) -> int:
        """Tokens delivered: the fake streams one word per token."""
        return len(self.text.split())


async def gradio_stream(
    client: httpx.AsyncClient,
    app_url: str,
    api_name: str,
    data: list[Any],
    expected: str,
) -> StreamResult:
    """One answer through Gradio's queue API: POST /call/<api>, then GET its SSE stream."""
    started = time.perf_counter()
    ttft: float | None = None
    text = ""
    events = 0
    error: str | None = None
    completed = False
    queued: float | None = None
    first_event: float | None = None
    try:
        response = await client.post(f"{app_url}gradio_api/call/{api_name}", json={"data": data})
        response.raise_for_status()
        event_id = response.json()["event_id"]
        queued = time.perf_counter() - started
        url = f"{app_url}gradio_api/call/{api_name}/{event_id}"
        async with client.stream("GET", url) as stream:
            stream.raise_for_status()
            event = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if first_event is None and event != "heartbeat":
                        first_event = time.perf_counter() - started
                elif line.startswith("data:"):
                    payload = json.loads(line[5:])
                    if event in ("generating", "complete"):
                        value = payload[0] if isinstance(payload, list) and payload else None
                        if isinstance(value, str):
                            text = value
                            if ttft is None and value:
                                ttft = time.perf_counter() - started
                        if event == "generating":
                            events += 1
                        else:
                            completed = True
                            break
                    elif event == "error":
                        error = f"error event: {str(payload)[:200]}"
                        break
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        where = (
            "POST" if queued is None else "GET before any event" if first_event is None else "GET"
        )
        error = f"{type(exc).__name__} during {where}: {exc!r}"[:300]
    total = time.perf_counter() - started
    if error is None and not completed:
        error = "stream ended without a complete event"
    if error is None and text != expected:
        error = f"text mismatch: got {len(text)} chars, expected {len(expected)}"
    return StreamResult(error is None, ttft, total, text, events, error, queued, first_event)


async def direct_stream(client: openai.AsyncOpenAI, message: str, expected: str) -> StreamResult:
    """One answer read straight from the upstream with the openai SDK."""
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    chunks = 0
    error: str | None = None
    try:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": message}],
            temperature=0.3,
            stream=True,
        )
        async for chunk in stream:
            chunks += 1
            for choice in chunk.choices:
                content = choice.delta.content if choice.delta is not None else None
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(content)
    except openai.APIError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    total = time.perf_counter() - started
    text = "".join(parts)
    if error is None and text != expected:
        error = f"text mismatch: got {len(text)} chars, expected {len(expected)}"
    return StreamResult(error is None, ttft, total, text, chunks, error)


async def raw_direct_stream(
    client: httpx.AsyncClient, base_url: str, message: str, expected: str
) -> StreamResult:
    """One answer read straight from the upstream with httpx + orjson (no SDK models)."""
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    chunks = 0
    error: str | None = None
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": message}],
        "temperature": 0.3,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {FAKE_API_KEY}"}
    try:
        url = f"{base_url}/chat/completions"
        async with client.stream("POST", url, json=body, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunks += 1
                for choice in orjson.loads(line[6:]).get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        parts.append(content)
    except (httpx.HTTPError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc!r}"[:300]
    total = time.perf_counter() - started
    text = "".join(parts)
    if error is None and text != expected:
        error = f"text mismatch: got {len(text)} chars, expected {len(expected)}"
    return StreamResult(error is None, ttft, total, text, chunks, error)


def direct_client(base_url: str, timeout: float) -> openai.AsyncOpenAI:
    """An SDK client with no retries and no connection cap, like the app's but unlimited."""
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=FAKE_API_KEY,
        max_retries=0,
        timeout=timeout,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=UNLIMITED, timeout=timeout, trust_env=False
        ),
    )


def gradio_client(timeout: float) -> httpx.AsyncClient:
    """An httpx client for many concurrent SSE connections to a Gradio app."""
    return httpx.AsyncClient(
        limits=FRESH_CONNECTIONS, timeout=httpx.Timeout(timeout, connect=30.0), trust_env=False
    )


@dataclass
class Phase:
    """N concurrent streams against one target, with the CPU each process spent.

    `results` are the measured streams; `ramp` the ones that only built up the load (steady
    arrivals), which still count for completion and for CPU per token.
    """

    results: list[StreamResult]
    wall_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    ramp: list[StreamResult] = field(default_factory=list)


async def run_phase(
    n: int,
    one: Callable[[int], Awaitable[StreamResult]],
    watched: dict[str, Service],
    *,
    steady_s: float | None = None,
) -> Phase:
    """Run `n` concurrent streams, wait for all, and read the CPU of the watched processes.

    Burst (`steady_s=None`): all `n` start at the same instant. Steady: `n` clients start
    evenly spread over `steady_s` (one answer's duration) and each runs two answers back to
    back; the second answers are measured, so each starts while about `n` others stream.
    """
    before = {name: s.cpu_seconds() for name, s in watched.items()}
    own_before = _own_cpu()
    started = time.perf_counter()
    ramp: list[StreamResult] = []
    if steady_s is None:
        results = await asyncio.gather(*(one(i) for i in range(n)))
    else:

        async def client(i: int) -> StreamResult:
            await asyncio.sleep(i * steady_s / n)
            ramp.append(await one(i))
            return await one(n + i)

        results = await asyncio.gather(*(client(i) for i in range(n)))
    wall = time.perf_counter() - started
    cpu = {name: s.cpu_seconds() - before[name] for name, s in watched.items()}
    cpu["bench"] = _own_cpu() - own_before
    return Phase(list(results), wall, cpu, ramp)


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


# ------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table; 'n/a' for NaN."""
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


@contextlib.contextmanager
def py_spy_record(pid: int, output: Path, *, rate: int = 250) -> Iterator[Path | None]:
    """Sample `pid` with py-spy (collapsed stacks) for the duration of the block, if installed."""
    exe = Path(PYTHON).parent / "py-spy"
    if not exe.exists():
        sys.stderr.write("py-spy is not installed in the venv; skipping the profile\n")
        yield None
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            str(exe),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )
    time.sleep(0.5)  # let it attach
    try:
        yield output
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Top functions by self and by inclusive samples from a py-spy raw (collapsed) file."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(f) for f in stack.split(";")[1:]]  # drop the thread name
        if frames:
            self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if total == 0:
        return "(no samples)"
    lines = [f"{total} samples (active threads only)", "", "Top by self time:"]
    for frame, count in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines += ["", "Top by inclusive time:"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


# Where app CPU goes, by the first rule (in this order) that matches a sampled stack.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "socket I/O: h11/httpcore/anyio/asyncio transports",
        (
            "h11/",
            "httpcore/",
            "anyio/_backends",
            "selector_events.py",
            "anyio/streams",
        ),
    ),
    ("openai SDK: SSE decode + chunk models", ("openai/_streaming.py", "openai/_models.py")),
    ("openai SDK: request setup", ("openai/",)),
    ("Gradio: new SessionState per call (config of every block)", ("gradio/state_holder.py",)),
    ("Gradio queue/events/postprocess", ("gradio/",)),
    ("HTTP server: uvicorn/starlette/fastapi", ("uvicorn/", "starlette/", "fastapi/")),
    (
        "chatlib usage log / storage / rate limit",
        (
            "chatlib/usage.py",
            "chatlib/storage.py",
            "chatlib/ratelimit.py",
            "limits/",
        ),
    ),
    ("chatlib (stream_chat, coalesce, run_turn)", ("chatlib/",)),
    ("structlog/logging", ("structlog/", "logging/")),
    ("asyncio scheduling (timers, tasks)", ("asyncio/",)),
    ("threads other than the event loop", ("threading.py",)),
)


def categorize_collapsed(path: Path) -> str:
    """Share of samples per category (see CATEGORIES) from a py-spy raw file."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        if "EpollSelector.select" in leaf or "Condition.wait" in leaf or "block_thread" in leaf:
            name = "waiting (select / thread wait / main thread sleep)"
        else:
            name = next(
                (label for label, keys in CATEGORIES if any(k in stack for k in keys)), "other"
            )
        counts[name] = counts.get(name, 0) + count
    if total == 0:
        return "(no samples)"
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    return "\n".join(f"  {100 * n / total:5.1f}%  {name}" for name, n in rows)


def _short_frame(frame: str) -> str:
    # py-spy frames look like "function (path/to/module.py:123)"; keep function + file tail.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file, _, _line = where.rpartition(":")
    parts = Path(file).parts
    tail = "/".join(parts[-2:]) if parts else file
    return f"{name} ({tail})"


# -- the in-process load benchmarks (live_answers, import_under_load, attachments_under_load) --

T = TypeVar("T")
LoadBench = Callable[[argparse.Namespace, str, Path], Awaitable[int]]
# How a benchmark consumes one turn: directly, or as a live answer it follows.
Consume = Callable[[Services, TurnRequest], AsyncIterator[ConversationFrame]]


def in_process_settings(fake_url: str, data_dir: Path, **more: str) -> Settings:
    """The app's settings for services built in this process: the fake upstream, no rate
    limit, quiet logs; `more` adds or overrides variables (MAX_IMPORT_BYTES="...")."""
    environ = {
        "OPENROUTER_API_KEY": FAKE_API_KEY,
        "OPENROUTER_BASE_URL": fake_url,
        "DATA_DIR": str(data_dir),
        "RATE_LIMIT_REQUESTS_PER_MIN": "0",
        "LOG_LEVEL": "WARNING",
        **more,
    }
    return Settings.from_env(environ, env_file=None)


async def answer_gaps(
    services: Services, consume: Consume, n: int, tokens: int, rate: float
) -> list[float] | None:
    """Answer one new chat; the gaps between its frames, or None if the answer was wrong."""
    message = f"Stream {n} {secrets.token_hex(3)} [[tokens={tokens}]] [[rate={rate:g}]]"
    request = TurnRequest(
        owner_key=secrets.token_hex(16),
        conversation_id=None,
        user_text=message,
        model=MODEL,
        system_prompt="",
        temperature=0.3,
        session_key=f"bench-{n}-{secrets.token_hex(4)}",
    )
    gaps: list[float] = []
    last: float | None = None
    final = None
    async for frame in consume(services, request):
        now = time.perf_counter()
        if last is not None:
            gaps.append(now - last)
        last = now
        final = frame
    if final is None or not final.done or final.error is not None:
        return None
    answer = final.conversation.messages[-1].content
    return gaps if answer == expected_reply(message, tokens) else None


def round_order(phases: Sequence[T], round_number: int) -> list[T]:
    """The phases of one round: reversed every other round, so machine noise hits all alike."""
    return list(phases) if round_number % 2 == 0 else list(reversed(phases))


def verdict(ok: bool) -> int:
    """Print PASS or FAIL; the exit status."""
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def load_bench_main(
    bench: LoadBench,
    *,
    description: str,
    prefix: str,
    streams: int,
    tokens: int,
    more_arguments: Callable[[argparse.ArgumentParser], object] | None = None,
) -> int:
    """The command line of a load benchmark: parse --streams/--rounds/--tokens/--rate (and
    `more_arguments`), start the fake upstream, run `bench(args, fake_url, workdir)` in a
    temporary folder (the services write logs/ and data only there) and print the total time.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--streams", type=int, default=streams)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=tokens, help="tokens per answer")
    parser.add_argument("--rate", type=float, default=100.0, help="tokens per second upstream")
    if more_arguments is not None:
        more_arguments(parser)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, ProcessGroup() as group:
        workdir = Path(tmp)
        fake = start_fake(group, workdir / "fake", tokens_per_second=args.rate)
        os.chdir(workdir)
        status = asyncio.run(bench(args, fake.url, workdir))
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    return status
