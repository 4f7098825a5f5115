"""Streaming overhead of the app against reading the same fake upstream directly.

Starts the fake OpenRouter (tests/fakes/openrouter.py CLI) and `app.py` as subprocesses, then,
from this process, opens N concurrent streams:

* direct: `openai.AsyncOpenAI(base_url=fake)` streaming (the in-run baseline);
* app: Gradio's queue API of the `chat` endpoint, POST /gradio_api/call/chat then the SSE
  stream GET /gradio_api/call/chat/<event_id>.

Each cell reports TTFT and total-time percentiles for both, their difference and ratio, how many
streams completed with exactly the expected text, SSE `generating` events per stream, and the
app process's CPU seconds (utime+stime from /proc) per streamed token. At 50 streams x 100 tok/s
the same is measured for `bench/bare_chatinterface.py` (one Gradio update per token), in Gradio's
default queue mode and with `default_concurrency_limit=None`.

    .venv/bin/python bench/stream_overhead.py --quick     # 1 and 50 streams @ 100 tok/s
    .venv/bin/python bench/stream_overhead.py             # default grid
    .venv/bin/python bench/stream_overhead.py --full      # + 100 and 500 streams

Every number that is compared is a ratio or difference against a baseline from the same run;
the machine is shared, so absolute values are for information only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h  # noqa: E402
from tests.fakes.openrouter import expected_reply  # noqa: E402

RESULTS_DIR = h.REPO / "bench" / "results"
BARE_SCRIPT = h.REPO / "bench" / "bare_chatinterface.py"
APP_SCRIPT = h.REPO / "app.py"
API_NAME = "chat"
# streams x tokens/s; answers last --answer-seconds, except the fast upstream (FIXED_TOKENS).
DEFAULT_GRID = "1x100,10x100,50x100,200x100,500x50,1x1000,10x1000,50x1000,1x20000"
FULL_EXTRA = "100x100,500x100,100x1000,200x1000"
FIXED_TOKENS = {20000.0: 4000}
IDLE_MEASURE_S = 3.0
REQUEST_COST_ROUNDS = 3
SETTLE_S = 0.5
UNLOADED_PROBES = 10
# (streams, tok/s) -> app TTFT p95 limit in seconds; every stream must also complete.
CAPACITY_TARGETS: dict[tuple[int, float], float] = {(200, 100.0): 1.0, (500, 50.0): 2.0}
ARRIVALS = {
    "steady": "Arrivals are steady: the N clients start spread over one answer's duration and "
    "each asks twice; the second answers, each started while about N others stream, are "
    "measured (completion and CPU count both).",
    "burst": "Arrivals are a burst: all N streams start at the same instant.",
}


@dataclass(frozen=True)
class Cell:
    """One grid point: N concurrent streams of `tokens` tokens at `rate` tokens/s each."""

    streams: int
    rate: float
    tokens: int

    @property
    def label(self) -> str:
        return f"{self.streams}x{self.rate:g}"


@dataclass
class Summary:
    """Pooled statistics of one target at one cell (all repeats together)."""

    n: int
    completed: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    total_p50_s: float
    total_p95_s: float
    events_per_stream: float
    tokens: int
    wall_s: float
    cpu_s: dict[str, float]
    errors: list[str] = field(default_factory=list)
    queued_p50_ms: float = math.nan
    first_event_p50_ms: float = math.nan

    @property
    def cpu_us_per_token(self) -> float:
        """CPU of the served process (app or bare) per delivered token, microseconds."""
        cpu = self.cpu_s.get("app", math.nan)
        return cpu / self.tokens * 1e6 if self.tokens else math.nan


def summarize(phases: Sequence[h.Phase]) -> Summary:
    """Pool the streams of several phases into one summary."""
    results = [r for p in phases for r in p.results]
    ramp = [r for p in phases for r in p.ramp]
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s * 1000 for r in results if r.ttft_s is not None]
    cpu: dict[str, float] = {}
    for phase in phases:
        for name, value in phase.cpu_s.items():
            cpu[name] = cpu.get(name, 0.0) + value
    errors = sorted({r.error for r in (*results, *ramp) if r.error})
    return Summary(
        n=len(results) + len(ramp),
        completed=len(ok) + sum(r.ok for r in ramp),
        ttft_p50_ms=h.percentile(ttfts, 50),
        ttft_p95_ms=h.percentile(ttfts, 95),
        total_p50_s=h.percentile([r.total_s for r in ok], 50),
        total_p95_s=h.percentile([r.total_s for r in ok], 95),
        events_per_stream=sum(r.events for r in results) / len(results) if results else math.nan,
        tokens=sum(r.tokens for r in (*results, *ramp)),
        wall_s=sum(p.wall_s for p in phases),
        cpu_s=cpu,
        errors=errors[:5],
        queued_p50_ms=h.percentile([r.queued_s * 1000 for r in results if r.queued_s], 50),
        first_event_p50_ms=h.percentile(
            [r.first_event_s * 1000 for r in results if r.first_event_s], 50
        ),
    )


@dataclass
class CellResult:
    """Direct and app summaries of one cell, and what follows from them."""

    cell: Cell
    direct: Summary
    app: Summary
    idle_cpu_rate: float  # app CPU s per wall s when idle, measured at start
    # TTFT p50/p95 of one direct stream on an idle machine. From ~50 streams the direct
    # baseline is CPU-bound in this process (the SDK parses every chunk) and its TTFT grows
    # far above the upstream's; TTFT overhead is taken against the lower of the two.
    unloaded_ttft_ms: tuple[float, float] = (math.inf, math.inf)

    @property
    def ttft_reference_ms(self) -> tuple[float, float]:
        """Direct TTFT p50/p95 that overheads are measured from."""
        return (
            min(self.direct.ttft_p50_ms, self.unloaded_ttft_ms[0]),
            min(self.direct.ttft_p95_ms, self.unloaded_ttft_ms[1]),
        )

    @property
    def ttft_overhead_p50_ms(self) -> float:
        return self.app.ttft_p50_ms - self.ttft_reference_ms[0]

    @property
    def ttft_overhead_p95_ms(self) -> float:
        return self.app.ttft_p95_ms - self.ttft_reference_ms[1]

    @property
    def total_ratio_p50(self) -> float:
        return self.app.total_p50_s / self.direct.total_p50_s

    @property
    def total_ratio_p95(self) -> float:
        return self.app.total_p95_s / self.direct.total_p95_s

    @property
    def cpu_us_per_token_idle_corrected(self) -> float:
        busy = self.app.cpu_s.get("app", math.nan) - self.idle_cpu_rate * self.app.wall_s
        return busy / self.app.tokens * 1e6 if self.app.tokens else math.nan


@dataclass
class Target:
    """A pass/fail line of the report."""

    name: str
    measured: str
    passed: bool


class Bench:
    """One run: a fake upstream, the app, the load generator and the report."""

    def __init__(self, args: argparse.Namespace, workdir: Path, group: h.ProcessGroup) -> None:
        self.args = args
        self.workdir = workdir
        self.group = group
        self.fake: h.Service | None = None
        self.seq = 0
        self.raw_results: dict[Cell, Summary] = {}
        self.idle_rates: dict[str, float] = {}

    # ------------------------------------------------------------------ processes

    def start_fake(self) -> h.Service:
        self.fake = h.start_fake(self.group, self.workdir / "fake", tokens_per_second=100)
        return self.fake

    def app_env(self) -> dict[str, str]:
        assert self.fake is not None
        env = {
            "OPENROUTER_BASE_URL": self.fake.url,
            "OPENROUTER_API_KEY": h.FAKE_API_KEY,
            "LOG_LEVEL": "WARNING",
            "LOG_JSON": "true",
            # Every stream comes from 127.0.0.1; a per-IP limit would refuse the load itself.
            "RATE_LIMIT_REQUESTS_PER_MIN": "0",
        }
        for item in self.args.app_env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def start_app(self) -> h.Service:
        workdir = self.workdir / "app"
        env = {**self.app_env(), "LOG_PATH": str(workdir / "logs" / "app.log")}
        script = h.REPO / self.args.app_script
        return h.start_gradio(self.group, "app", script, workdir, env)

    def start_bare(self, unlimited: bool) -> h.Service:
        assert self.fake is not None
        name = "bare-unlimited" if unlimited else "bare-default"
        env = {
            "OPENROUTER_BASE_URL": self.fake.url,
            "OPENROUTER_API_KEY": h.FAKE_API_KEY,
            "BARE_UNLIMITED": "1" if unlimited else "0",
        }
        return h.start_gradio(self.group, name, BARE_SCRIPT, self.workdir / name, env)

    # ------------------------------------------------------------------ load

    def message(self, cell: Cell, index: int) -> str:
        self.seq += 1
        directives = (
            f"[[tokens={cell.tokens}]] [[rate={cell.rate:g}]] "
            f"[[delay={self.args.first_token_delay:g}]]"
        )
        return f"bench {cell.label} {self.seq}-{index} {directives}"

    async def direct_phase(self, cell: Cell) -> h.Phase:
        assert self.fake is not None
        client = h.direct_client(self.fake.url, self.args.timeout)
        try:

            async def one(i: int) -> h.StreamResult:
                msg = self.message(cell, i)
                return await h.direct_stream(client, msg, expected_reply(msg, cell.tokens))

            return await h.run_phase(
                cell.streams, one, {"fake": self.fake}, steady_s=self.steady_s(cell)
            )
        finally:
            await client.close()

    async def raw_direct_phase(self, cell: Cell) -> h.Phase:
        assert self.fake is not None
        fake = self.fake
        async with h.gradio_client(self.args.timeout) as client:

            async def one(i: int) -> h.StreamResult:
                msg = self.message(cell, i)
                expected = expected_reply(msg, cell.tokens)
                return await h.raw_direct_stream(client, fake.url, msg, expected)

            return await h.run_phase(
                cell.streams, one, {"fake": fake}, steady_s=self.steady_s(cell)
            )

    def steady_s(self, cell: Cell) -> float | None:
        """Arrival spread for steady cells (one answer's duration); None: a burst."""
        if self.args.arrival == "burst" or cell.streams == 1:
            return None
        return cell.tokens / cell.rate

    async def gradio_phase(
        self,
        cell: Cell,
        app: h.Service,
        data: Callable[[str], list[Any]],
        *,
        burst: bool = False,
    ) -> h.Phase:
        assert self.fake is not None
        async with h.gradio_client(self.args.timeout) as client:

            async def one(i: int) -> h.StreamResult:
                msg = self.message(cell, i)
                expected = expected_reply(msg, cell.tokens)
                return await h.gradio_stream(client, app.url, API_NAME, data(msg), expected)

            phase = await h.run_phase(
                cell.streams,
                one,
                {"app": app, "fake": self.fake},
                steady_s=None if burst else self.steady_s(cell),
            )
        app.check_alive()
        return phase

    def api_data(self, app: h.Service) -> Callable[[str], list[Any]]:
        parameters = h.api_parameters(app.url, API_NAME)
        values = {"model": h.MODEL, "system_prompt": "", "temperature": 0.3, "history": []}
        return h.build_api_data(parameters, values)

    async def warm_up(self, app: h.Service, data: Callable[[str], list[Any]]) -> None:
        """Open connections, fill caches and import lazily loaded modules before measuring."""
        cell = Cell(streams=3, rate=1000, tokens=10)
        await self.direct_phase(cell)
        phase = await self.gradio_phase(cell, app, data, burst=True)
        failed = [r.error for r in phase.results if not r.ok]
        if failed:
            raise RuntimeError(f"warm-up against {app.name} failed: {failed[:3]}")

    async def run_cell(
        self, cell: Cell, app: h.Service, data: Callable[[str], list[Any]], repeats: int
    ) -> tuple[list[h.Phase], list[h.Phase]]:
        direct: list[h.Phase] = []
        served: list[h.Phase] = []
        for _ in range(repeats):
            direct.append(await self.direct_phase(cell))
            await asyncio.sleep(SETTLE_S)
            served.append(await self.gradio_phase(cell, app, data))
            await asyncio.sleep(SETTLE_S)
        if self.args.raw_baseline:
            raw = await self.raw_direct_phase(cell)
            await asyncio.sleep(SETTLE_S)
            self.raw_results[cell] = summarize([raw])
        return direct, served

    async def request_cost(self, server: h.Service, data: Callable[[str], list[Any]]) -> float:
        """Server CPU milliseconds per API call, from one-token answers (idle burn removed)."""
        cell = Cell(streams=self.args.request_cost, rate=1000, tokens=1)
        phases = [
            await self.gradio_phase(cell, server, data, burst=True)
            for _ in range(REQUEST_COST_ROUNDS)
        ]
        idle = self.idle_rates.get(server.name, 0.0)
        cpu = sum(p.cpu_s["app"] - idle * p.wall_s for p in phases)
        calls = sum(r.ok for p in phases for r in p.results)
        return cpu / calls * 1000 if calls else math.nan

    async def unloaded_ttft(self) -> tuple[float, float]:
        """Direct TTFT p50/p95 of single short streams, one at a time."""
        cell = Cell(streams=1, rate=1000, tokens=5)
        phases = [await self.direct_phase(cell) for _ in range(UNLOADED_PROBES)]
        summary = summarize(phases)
        return summary.ttft_p50_ms, summary.ttft_p95_ms

    def repeats_for(self, cell: Cell) -> int:
        if cell.streams == 1:
            return max(self.args.repeats, self.args.single_stream_repeats)
        return self.args.repeats


# ------------------------------------------------------------------------ reporting


def print_cell(result: CellResult, name: str = "app") -> None:
    d, a = result.direct, result.app
    c = result.cell
    print(
        f"\n== {c.streams} streams x {c.rate:g} tok/s x {c.tokens} tokens "
        f"({d.n // max(c.streams, 1)} repeat(s)) =="
    )
    print(
        f"  direct : TTFT p50 {h.fmt(d.ttft_p50_ms)} ms  p95 {h.fmt(d.ttft_p95_ms)} ms | "
        f"total p50 {h.fmt(d.total_p50_s, 3)} s  p95 {h.fmt(d.total_p95_s, 3)} s | "
        f"completed {d.completed}/{d.n} | bench CPU {d.cpu_s['bench'] / d.wall_s:.2f} core = "
        f"{h.fmt(d.cpu_s['bench'] / max(d.tokens, 1) * 1e6)} us/token, "
        f"fake CPU {d.cpu_s['fake'] / d.wall_s:.2f} core"
    )
    nominal = c.tokens / c.rate + 0.0
    if d.total_p50_s > 1.2 * nominal:
        print(
            f"  note: direct total p50 is x{d.total_p50_s / nominal:.2f} the nominal "
            f"{nominal:g} s: the baseline itself was CPU-bound (SDK parsing in this process, "
            "or a busy machine)"
        )
    print(
        f"  {name:7}: TTFT p50 {h.fmt(a.ttft_p50_ms)} ms  p95 {h.fmt(a.ttft_p95_ms)} ms | "
        f"total p50 {h.fmt(a.total_p50_s, 3)} s  p95 {h.fmt(a.total_p95_s, 3)} s | "
        f"completed {a.completed}/{a.n} | {a.events_per_stream:.1f} events/stream | "
        f"{name} CPU {a.cpu_s['app'] / a.wall_s:.2f} core = {h.fmt(a.cpu_us_per_token)} us/token "
        f"({h.fmt(result.cpu_us_per_token_idle_corrected)} us/token without idle burn), "
        f"bench CPU {a.cpu_s['bench'] / a.wall_s:.2f} core, fake {a.cpu_s['fake'] / a.wall_s:.2f}"
    )
    print(
        f"  {name} - direct: TTFT +{h.fmt(result.ttft_overhead_p50_ms)} ms p50, "
        f"+{h.fmt(result.ttft_overhead_p95_ms)} ms p95 | total x{result.total_ratio_p50:.3f} p50, "
        f"x{result.total_ratio_p95:.3f} p95"
    )
    if not math.isnan(a.queued_p50_ms):
        print(
            f"  {name} timeline p50: event id after {h.fmt(a.queued_p50_ms)} ms, first SSE event "
            f"after {h.fmt(a.first_event_p50_ms)} ms, first text after {h.fmt(a.ttft_p50_ms)} ms"
        )
    for error in a.errors + d.errors:
        print(f"  ! {error}")


def print_raw(raw: Summary) -> None:
    print(
        f"  raw    : (httpx + orjson, no SDK models) TTFT p50 {h.fmt(raw.ttft_p50_ms)} ms "
        f"p95 {h.fmt(raw.ttft_p95_ms)} ms | total p50 {h.fmt(raw.total_p50_s, 3)} s "
        f"p95 {h.fmt(raw.total_p95_s, 3)} s | completed {raw.completed}/{raw.n} | bench CPU "
        f"{raw.cpu_s['bench'] / raw.wall_s:.2f} core = "
        f"{h.fmt(raw.cpu_s['bench'] / max(raw.tokens, 1) * 1e6)} us/token"
    )


def evaluate(
    cells: Sequence[CellResult], bare: dict[str, CellResult], cpu_cell: Cell
) -> list[Target]:
    targets: list[Target] = []
    for r in cells:
        c = r.cell
        if c.streams == 1:
            targets.append(
                Target(
                    f"1 stream @ {c.rate:g} tok/s: TTFT overhead p50 < 20 ms",
                    f"{r.ttft_overhead_p50_ms:+.1f} ms",
                    r.ttft_overhead_p50_ms < 20,
                )
            )
            targets.append(
                Target(
                    f"1 stream @ {c.rate:g} tok/s: total p50 <= 1.05x direct",
                    f"x{r.total_ratio_p50:.3f}",
                    r.total_ratio_p50 <= 1.05,
                )
            )
        if c.streams == 50 and c.rate == 100:
            targets.append(
                Target(
                    "50 streams @ 100 tok/s: TTFT overhead p95 < 150 ms",
                    f"{r.ttft_overhead_p95_ms:+.1f} ms",
                    r.ttft_overhead_p95_ms < 150,
                )
            )
            targets.append(
                Target(
                    "50 streams @ 100 tok/s: total p95 <= 1.2x direct",
                    f"x{r.total_ratio_p95:.3f} (p50 x{r.total_ratio_p50:.3f})",
                    r.total_ratio_p95 <= 1.2,
                )
            )
        ttft_limit_s = CAPACITY_TARGETS.get((c.streams, c.rate))
        if ttft_limit_s is not None:
            cell_name = f"{c.streams} streams @ {c.rate:g} tok/s"
            targets.append(
                Target(
                    f"{cell_name}: every stream completes",
                    f"{r.app.completed}/{r.app.n}",
                    r.app.completed == r.app.n,
                )
            )
            targets.append(
                Target(
                    f"{cell_name}: app TTFT p95 < {ttft_limit_s:g} s",
                    f"{h.fmt(r.app.ttft_p95_ms)} ms",
                    r.app.ttft_p95_ms < ttft_limit_s * 1000,
                )
            )
    ours = next((r for r in cells if r.cell == cpu_cell), None)
    unlimited = bare.get("unlimited")
    if ours is not None and unlimited is not None:
        ratio = unlimited.app.cpu_us_per_token / ours.app.cpu_us_per_token
        targets.append(
            Target(
                f"CPU/token at {cpu_cell.label}: bare (no concurrency limit) / ours >= 10",
                f"x{ratio:.1f} ({h.fmt(unlimited.app.cpu_us_per_token)} vs "
                f"{h.fmt(ours.app.cpu_us_per_token)} us/token)",
                ratio >= 10,
            )
        )
    return targets


def markdown(
    meta: dict[str, str],
    cells: Sequence[CellResult],
    bare: dict[str, CellResult],
    cpu_cell: Cell,
    targets: Sequence[Target],
    request_ms: dict[str, float],
) -> str:
    out = [
        f"Measured {meta['date']} on {meta['nproc']} cores (shared; load average at start "
        f"{meta['loadavg']}), Python {meta['python']}, Gradio {meta['gradio']}, "
        f"openai {meta['openai']}, code {meta['code']} (HEAD + digest of app.py and chatlib/ "
        f"on disk). Command: `{meta['command']}`.",
        "",
        "Direct = the same fake upstream read with `openai.AsyncOpenAI` in the bench process. "
        "TTFT overhead = app percentile - direct percentile (direct: the lower of this cell's "
        "and one stream's on an idle machine, since from ~50 streams the direct reader is "
        "CPU-bound in the bench process); ratios are app / direct. "
        + ARRIVALS[meta.get("arrival", "steady")],
        "",
        "| streams | tok/s | tokens | TTFT p50 direct / app (ms) | TTFT p95 direct / app (ms) "
        "| TTFT overhead p50 / p95 (ms) | total p50 direct / app (s) | total p95 direct / app (s) "
        "| total ratio p50 / p95 | completed | updates/stream (per s) | app CPU us/token |",
        "|---:|---:|---:|---|---|---|---|---|---|---|---:|---:|",
    ]
    for r in cells:
        d, a = r.direct, r.app
        out.append(
            f"| {r.cell.streams} | {r.cell.rate:g} | {r.cell.tokens} "
            f"| {h.fmt(d.ttft_p50_ms)} / {h.fmt(a.ttft_p50_ms)} "
            f"| {h.fmt(d.ttft_p95_ms)} / {h.fmt(a.ttft_p95_ms)} "
            f"| {h.fmt(r.ttft_overhead_p50_ms)} / {h.fmt(r.ttft_overhead_p95_ms)} "
            f"| {h.fmt(d.total_p50_s, 2)} / {h.fmt(a.total_p50_s, 2)} "
            f"| {h.fmt(d.total_p95_s, 2)} / {h.fmt(a.total_p95_s, 2)} "
            f"| {r.total_ratio_p50:.2f} / {r.total_ratio_p95:.2f} "
            f"| {a.completed}/{a.n} | {a.events_per_stream:.1f} "
            f"({a.events_per_stream / a.total_p50_s:.0f}) | {h.fmt(a.cpu_us_per_token)} |"
        )
    ours = next((r for r in cells if r.cell == cpu_cell), None)
    if bare and ours is not None:
        out += [
            "",
            f"CPU per streamed token at {cpu_cell.streams} streams x {cpu_cell.rate:g} tok/s "
            "(bare = `bench/bare_chatinterface.py`, one update per token):",
            "",
            "| server | CPU us/token | bare / this | TTFT p95 (ms) | total p95 (s) "
            "| total p95 / direct | completed | events/stream |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        bare_labels = {
            "unlimited": "bare ChatInterface, `default_concurrency_limit=None`",
            "default": "bare ChatInterface, Gradio defaults",
        }
        rows = [("this app", ours)] + [(bare_labels[mode], r) for mode, r in bare.items()]
        reference = bare.get("unlimited")
        for label, r in rows:
            vs = (
                f"{reference.app.cpu_us_per_token / r.app.cpu_us_per_token:.1f}x"
                if reference is not None
                else "n/a"
            )
            out.append(
                f"| {label} | {h.fmt(r.app.cpu_us_per_token)} | {vs} "
                f"| {h.fmt(r.app.ttft_p95_ms)} | {h.fmt(r.app.total_p95_s, 2)} "
                f"| {r.total_ratio_p95:.2f} | {r.app.completed}/{r.app.n} "
                f"| {r.app.events_per_stream:.1f} |"
            )
    if request_ms:
        out += [
            "",
            f"Server CPU per API call ({REQUEST_COST_ROUNDS} rounds of `--request-cost` "
            "concurrent one-token answers; the per-request part of the cost: queue, session "
            "state, upstream request; idle burn removed):",
            "",
            "| server | CPU ms per call |",
            "|---|---:|",
        ]
        out += [f"| {name} | {h.fmt(ms)} |" for name, ms in request_ms.items()]
    out += ["", "| target | measured | result |", "|---|---|---|"]
    for t in targets:
        out.append(f"| {t.name} | {t.measured} | {'PASS' if t.passed else 'FAIL'} |")
    return "\n".join(out)


# ------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--quick", action="store_true", help="only 1 and 50 streams @ 100 tok/s")
    grid.add_argument("--full", action="store_true", help="also 100 and 500 streams")
    grid.add_argument("--cells", help="explicit cells, e.g. '50x100,200x1000' (streams x tokens/s)")
    parser.add_argument("--concurrency", help="comma-separated stream counts (overrides grid)")
    parser.add_argument("--rates", default="100,1000", help="comma-separated tokens/s")
    parser.add_argument(
        "--answer-seconds",
        type=float,
        default=2.0,
        help="answer length in seconds of streaming: tokens = rate x this (default 2)",
    )
    parser.add_argument(
        "--tokens",
        action="append",
        default=[],
        metavar="RATE=TOKENS",
        help="answer length for a rate, e.g. --tokens 100=200 (overrides --answer-seconds)",
    )
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="[[delay=...]] s")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell (pooled)")
    parser.add_argument(
        "--single-stream-repeats",
        type=int,
        default=5,
        help="runs of the 1-stream cells (pooled; one stream is a small sample)",
    )
    parser.add_argument(
        "--bare",
        choices=("both", "unlimited", "default", "none"),
        help="bare ChatInterface modes to compare CPU/token with "
        "(default: both; --quick: unlimited)",
    )
    parser.add_argument("--cpu-cell", default="50x100", help="cell for the bare comparison")
    parser.add_argument(
        "--arrival",
        choices=("steady", "burst"),
        default="steady",
        help="steady: N clients spread over one answer, each asking twice, the second answers "
        "measured (N in flight); burst: all N start at the same instant",
    )
    parser.add_argument(
        "--raw-baseline",
        action="store_true",
        help="also read each cell directly with httpx + orjson (no SDK models), for information",
    )
    parser.add_argument(
        "--profile",
        metavar="CELL",
        help="after the grid, run CELL (e.g. 50x100; comma-separated for several) once more "
        "with py-spy sampling the app, and print its hot spots",
    )
    parser.add_argument(
        "--request-cost",
        type=int,
        default=10,
        metavar="N",
        help="measure server CPU per API call with N concurrent one-token answers (0: skip)",
    )
    parser.add_argument(
        "--profile-bare",
        action="store_true",
        help="also sample the bare ChatInterface (no concurrency limit) at the CPU cell",
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for app.py (e.g. MAX_CONCURRENT_STREAMS=200)",
    )
    parser.add_argument(
        "--app-script",
        default="app.py",
        help="script to serve as 'the app' (e.g. a patched copy, to measure a change)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per-stream timeout, s")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs in the temp dir")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    return parser.parse_args(argv)


def tokens_for(rate: float, args: argparse.Namespace) -> int:
    for item in args.tokens:
        key, _, value = item.partition("=")
        if float(key) == rate:
            return int(value)
    return FIXED_TOKENS.get(rate) or max(1, round(rate * args.answer_seconds))


def parse_cell(text: str, args: argparse.Namespace) -> Cell:
    streams, _, rate = text.strip().partition("x")
    return Cell(int(streams), float(rate), tokens_for(float(rate), args))


def grid_cells(args: argparse.Namespace) -> list[Cell]:
    if args.cells:
        return [parse_cell(t, args) for t in args.cells.split(",") if t.strip()]
    if args.quick:
        return [parse_cell("1x100", args), parse_cell("50x100", args)]
    if args.concurrency:
        concurrency = [int(c) for c in args.concurrency.split(",")]
        rates = [float(r) for r in args.rates.split(",")]
        return [Cell(c, r, tokens_for(r, args)) for r in rates for c in concurrency]
    grid = DEFAULT_GRID + ("," + FULL_EXTRA if args.full else "")
    return sorted((parse_cell(t, args) for t in grid.split(",")), key=lambda c: (c.rate, c.streams))


def run_meta(argv: Sequence[str], arrival: str) -> dict[str, str]:
    import gradio
    import openai

    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "gradio": gradio.__version__,
        "openai": openai.__version__,
        "command": " ".join([".venv/bin/python", "bench/stream_overhead.py", *argv]),
        "code": code_version(),
        "arrival": arrival,
    }


def code_version() -> str:
    """HEAD plus a digest of app.py and chatlib/ as they are on disk (the tree is shared)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=h.REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "unknown"
    digest = hashlib.sha256()
    for path in [APP_SCRIPT, *sorted((h.REPO / "chatlib").glob("*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{head}+tree:{digest.hexdigest()[:10]}"


async def main_async(args: argparse.Namespace, argv: Sequence[str], workdir: Path) -> int:
    meta = run_meta(argv, args.arrival)
    print(
        f"# stream overhead - {meta['date']}, nproc {meta['nproc']}, load {meta['loadavg']}, "
        f"Python {meta['python']}, Gradio {meta['gradio']}, openai {meta['openai']}, "
        f"code {meta['code']}"
    )
    cells = grid_cells(args)
    cpu_cell = parse_cell(args.cpu_cell, args)
    bare_modes = args.bare or ("unlimited" if args.quick else "both")
    modes = {"both": ["unlimited", "default"], "none": []}.get(bare_modes, [bare_modes])
    if modes and cpu_cell not in cells:
        cells.append(cpu_cell)

    with h.ProcessGroup() as group:
        bench = Bench(args, workdir, group)
        fake = bench.start_fake()
        app = bench.start_app()
        print(f"fake pid {fake.pid} at {fake.url}; app pid {app.pid} at {app.url}")
        data = bench.api_data(app)
        print(f"app /{API_NAME} takes {len(data('x'))} positional values: {data('<message>')}")
        await bench.warm_up(app, data)
        idle = await asyncio.to_thread(h.idle_cpu_rate, app, IDLE_MEASURE_S)
        bench.idle_rates[app.name] = idle
        print(f"app idle CPU: {idle:.3f} core (Gradio's queue polling)")
        request_ms: dict[str, float] = {}
        unloaded = await bench.unloaded_ttft()
        print(f"direct TTFT of one stream, idle: p50 {unloaded[0]:.1f} / p95 {unloaded[1]:.1f} ms")

        results: list[CellResult] = []
        for cell in cells:
            direct, served = await bench.run_cell(cell, app, data, bench.repeats_for(cell))
            result = CellResult(cell, summarize(direct), summarize(served), idle, unloaded)
            results.append(result)
            print_cell(result)
            raw = bench.raw_results.get(cell)
            if raw is not None:
                print_raw(raw)

        if args.request_cost:
            request_ms["this app"] = await bench.request_cost(app, data)
            print(f"\napp CPU per API call (1-token answers): {request_ms['this app']:.1f} ms")

        bare: dict[str, CellResult] = {}
        profiles: list[str] = []
        for mode in modes:
            server = bench.start_bare(unlimited=mode == "unlimited")
            bare_data = bench.api_data(server)
            print(
                f"\nbare ChatInterface ({mode}) pid {server.pid}: /{API_NAME} takes "
                f"{bare_data('<message>')}"
            )
            await bench.warm_up(server, bare_data)
            bare_idle = await asyncio.to_thread(h.idle_cpu_rate, server, IDLE_MEASURE_S)
            bench.idle_rates[server.name] = bare_idle
            direct, served = await bench.run_cell(cpu_cell, server, bare_data, 1)
            bare[mode] = CellResult(
                cpu_cell, summarize(direct), summarize(served), bare_idle, unloaded
            )
            print_cell(bare[mode], name=f"bare-{mode[:3]}")
            if args.request_cost:
                request_ms[f"bare ChatInterface ({mode})"] = ms = await bench.request_cost(
                    server, bare_data
                )
                print(f"  bare-{mode[:3]} CPU per API call (1-token answers): {ms:.1f} ms")
            if args.profile_bare and mode == "unlimited":
                profiles.append(await run_profile(bench, server, bare_data, cpu_cell))
            group.stop(server)

        for text in (args.profile or "").split(","):
            if text.strip():
                profiles.append(await run_profile(bench, app, data, parse_cell(text, args)))
        profile_text = "\n".join(profiles)

        targets = evaluate(results, bare, cpu_cell)
        print("\n# Targets")
        for t in targets:
            print(f"  {'PASS' if t.passed else 'FAIL'}  {t.name}: {t.measured}")
        table = markdown(meta, results, bare, cpu_cell, targets, request_ms)
        print("\n# Summary (markdown)\n")
        print(table)
        if not args.no_save:
            save(meta, results, bare, targets, table, profile_text, request_ms)
    return 0 if all(t.passed for t in targets) else 1


async def run_profile(
    bench: Bench, app: h.Service, data: Callable[[str], list[Any]], cell: Cell
) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = RESULTS_DIR / f"profile-{app.name}-{cell.label}-{stamp}.txt"
    with h.py_spy_record(app.pid, output, rate=250) as path:
        phase = await bench.gradio_phase(cell, app, data)
    if path is None or not path.exists():
        return ""
    summary = h.categorize_collapsed(path) + "\n\n" + h.summarize_collapsed(path)
    ok = sum(r.ok for r in phase.results)
    for error in sorted({r.error for r in phase.results if r.error})[:5]:
        print(f"  ! {error}")
    title = f"py-spy profile of {app.name} at {cell.label} ({ok}/{cell.streams} ok)"
    print(f"\n# {title}; raw stacks: {path.relative_to(h.REPO)}")
    print(summary)
    return f"## {title}\n{summary}\n"


def save(
    meta: dict[str, str],
    results: Sequence[CellResult],
    bare: dict[str, CellResult],
    targets: Sequence[Target],
    table: str,
    profile_text: str,
    request_ms: dict[str, float],
) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def cell_json(r: CellResult) -> dict[str, Any]:
        return {
            "cell": asdict(r.cell),
            "direct": asdict(r.direct),
            "app": {**asdict(r.app), "cpu_us_per_token": r.app.cpu_us_per_token},
            "idle_cpu_rate": r.idle_cpu_rate,
            "ttft_overhead_ms": [r.ttft_overhead_p50_ms, r.ttft_overhead_p95_ms],
            "total_ratio": [r.total_ratio_p50, r.total_ratio_p95],
        }

    payload = {
        "meta": meta,
        "cells": [cell_json(r) for r in results],
        "bare": {mode: cell_json(r) for mode, r in bare.items()},
        "targets": [asdict(t) for t in targets],
        "request_cpu_ms": request_ms,
        "profile": profile_text,
    }
    (RESULTS_DIR / f"stream_overhead-{stamp}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS_DIR / f"stream_overhead-{stamp}.md").write_text(table + "\n")
    print(f"\nsaved bench/results/stream_overhead-{stamp}.{{json,md}}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # Progress shows up as it happens even when redirected to a file, and Ctrl-C / kill -INT
    # work even if a non-interactive shell started us in the background with SIGINT ignored.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="stream-overhead-"))
    try:
        return asyncio.run(main_async(args, argv, workdir))
    except (KeyboardInterrupt, SystemExit) as exc:
        print("\ninterrupted; subprocesses stopped", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 143
    finally:
        if args.keep_workdir:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
