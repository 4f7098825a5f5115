"""Capacity of one app replica against two behind HAProxy, on this machine.

Starts the fake OpenRouter and `app.py` (like bench/stream_overhead.py, whose Bench it reuses),
then finds, for each setup, the most concurrent streams at `--rate` tokens/s for which every
answer completes and the p95 time to first token stays within `--max-overhead-ms` (250) of the
upstream's own:

* 1 replica: the app alone, reached directly;
* 2 replicas: the same app twice, behind a real haproxy configured from deploy/haproxy.cfg
  (tests/proxy_server.py: cookie affinity, X-Forwarded-For, health checks).

The load doubles from `--start` until a setup fails, then is bisected between its last pass
and first failure; the two setups take turns at each load, so a busy neighbour on a shared
machine slows both. TTFT overhead is the p95 minus that of one stream read straight from the
fake upstream on the idle machine (the median of 10 probes at start: their p95 is one
outlier away from anything on a shared machine).

Capacity is streams x rate (tokens/s); the report prints both, their ratio, the machine's cores
and the CPU each process used at the largest passing load. On a 2-core machine the ratio is
bounded by the cores: the replicas, the proxy, the fake upstream and this load generator share
them. On a bigger machine, run it with `--max-streams` raised (and `--replicas 4` to see more).

    .venv/bin/python bench/replicas.py --quick     # < 3 min: coarse ladder, one refinement
    .venv/bin/python bench/replicas.py             # `make bench`: finer search
    .venv/bin/python bench/replicas.py --replicas 4 --max-streams 3200

Each simulated visitor has its own cookie jar, like a browser: its POST /gradio_api/call/chat
gets the proxy's affinity cookie, and its GET of the event stream must reach the same replica.

The replicas do not share a data store yet: each has its own DATA_DIR. The API endpoint `chat`
stores nothing, so that does not change what is measured; once the SQL store lands, point them
all at one DATABASE_URL (`--app-env DATABASE_URL=...`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench import _harness as h  # noqa: E402
from bench.stream_overhead import API_NAME, Bench, Cell, code_version  # noqa: E402
from tests.fakes.openrouter import expected_reply  # noqa: E402
from tests.proxy_server import PROXY_ADDRESS, ProxyServer, start_proxy  # noqa: E402

SETTLE_S = 1.0


@dataclass
class Step:
    """One load level of one setup."""

    streams: int
    completed: int
    total: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    overhead_p95_ms: float
    wall_s: float
    cores: dict[str, float]  # process name -> CPU seconds per wall second
    errors: list[str]
    passed: bool


@dataclass
class Setup:
    """A way to serve the load: its entry URL and the processes whose CPU counts."""

    label: str
    entry: h.Service
    watched: dict[str, h.Service]
    steps: list[Step] = field(default_factory=list)
    data: Callable[[str], list[Any]] | None = None  # the endpoint's positional values
    passed: int = 0  # most streams that passed so far
    failed: int | None = None  # fewest streams that failed so far

    @property
    def best(self) -> Step | None:
        """The step at the largest load that passed."""
        passed = [s for s in self.steps if s.passed]
        return max(passed, key=lambda s: s.streams) if passed else None


class ReplicaBench(Bench):
    """stream_overhead's Bench with one cookie jar per visitor and several watched processes."""

    def __init__(self, args: argparse.Namespace, workdir: Path, group: h.ProcessGroup) -> None:
        super().__init__(args, workdir, group)
        self.watched: dict[str, h.Service] = {}
        self.reference_ms = math.nan  # the upstream's own TTFT (median), measured at start
        self.transport = httpx.AsyncHTTPTransport(limits=h.FRESH_CONNECTIONS)
        # What every replica must share so a visitor is the same on each (identities).
        self.shared_secret = secrets.token_hex(32)

    def visitor(self) -> httpx.AsyncClient:
        """A client with its own cookies over the shared transport (never closed by itself)."""
        timeout = httpx.Timeout(self.args.timeout, connect=30.0)
        return httpx.AsyncClient(transport=self.transport, timeout=timeout, trust_env=False)

    def start_replica(self, name: str) -> h.Service:
        workdir = self.workdir / name
        env = {
            **self.app_env(),
            "LOG_PATH": str(workdir / "logs" / "app.log"),
            # Own data per replica until the SQL store lands (see the module docstring).
            "DATA_DIR": str(workdir / "data"),
            "BROWSER_STATE_SECRET": self.shared_secret,
            "TRUSTED_PROXIES": PROXY_ADDRESS,
        }
        return h.start_gradio(self.group, name, h.REPO / self.args.app_script, workdir, env)

    async def gradio_phase(
        self,
        cell: Cell,
        app: h.Service,
        data: Callable[[str], list[Any]],
        *,
        burst: bool = False,
    ) -> h.Phase:
        assert self.fake is not None

        async def one(i: int) -> h.StreamResult:
            msg = self.message(cell, i)
            expected = expected_reply(msg, cell.tokens)
            return await h.gradio_stream(self.visitor(), app.url, API_NAME, data(msg), expected)

        watched = {**(self.watched or {"app": app}), "fake": self.fake}
        phase = await h.run_phase(
            cell.streams, one, watched, steady_s=None if burst else self.steady_s(cell)
        )
        for service in watched.values():
            service.check_alive()
        return phase

    async def step(self, setup: Setup, data: Callable[[str], list[Any]], streams: int) -> Step:
        self.watched = setup.watched
        cell = Cell(streams, self.args.rate, max(1, round(self.args.rate * self.args.answer_s)))
        phase = await self.gradio_phase(cell, setup.entry, data)
        await asyncio.sleep(SETTLE_S)
        everything = [*phase.results, *phase.ramp]
        ttfts = [r.ttft_s * 1000 for r in phase.results if r.ttft_s is not None]
        p95 = h.percentile(ttfts, 95)
        overhead = p95 - self.reference_ms
        completed = sum(r.ok for r in everything)
        result = Step(
            streams=streams,
            completed=completed,
            total=len(everything),
            ttft_p50_ms=h.percentile(ttfts, 50),
            ttft_p95_ms=p95,
            overhead_p95_ms=overhead,
            wall_s=phase.wall_s,
            cores={name: cpu / phase.wall_s for name, cpu in phase.cpu_s.items()},
            errors=sorted({r.error for r in everything if r.error})[:3],
            passed=completed == len(everything) and overhead < self.args.max_overhead_ms,
        )
        setup.steps.append(result)
        print_step(result, setup.label)
        return result

    async def prepare(self, setup: Setup) -> None:
        """Read the endpoint's parameters and warm the setup up (imports, connections)."""
        setup.data = self.api_data(setup.entry)
        self.watched = setup.watched
        await self.warm_up(setup.entry, setup.data)

    async def try_load(self, setup: Setup, streams: int) -> None:
        assert setup.data is not None
        if (await self.step(setup, setup.data, streams)).passed:
            setup.passed = max(setup.passed, streams)
        else:
            setup.failed = streams if setup.failed is None else min(setup.failed, streams)

    async def capacities(self, setups: Sequence[Setup]) -> None:
        """Double the load until each setup fails, then bisect between its last pass and fail.

        The setups take turns at every load, so a neighbour's burst of activity on a shared
        machine hits both rather than only whichever ran at the time.
        """
        for setup in setups:
            await self.prepare(setup)
        streams = self.args.start
        while streams <= self.args.max_streams:
            running = [s for s in setups if s.failed is None]
            if not running:
                break
            print(f"\n== {streams} streams x {self.args.rate:g} tok/s ==")
            for setup in running:
                await self.try_load(setup, streams)
            streams *= 2
        for _ in range(self.args.refine):
            middles = {}
            for setup in setups:
                if setup.failed is not None:
                    middle = round((setup.passed + setup.failed) / 2 / 5) * 5
                    if setup.passed < middle < setup.failed:
                        middles[setup.label] = middle
            if not middles:
                break
            print("\n== refining ==")
            for setup in setups:
                if setup.label in middles:
                    await self.try_load(setup, middles[setup.label])
        for setup in setups:
            if setup.failed is None:
                print(f"  ({setup.label} still passes at --max-streams {self.args.max_streams})")


def print_step(step: Step, label: str) -> None:
    cores = ", ".join(f"{name} {value:.2f}" for name, value in step.cores.items())
    verdict = "PASS" if step.passed else "FAIL"
    print(
        f"  {label:22} {step.streams:4d} streams: TTFT p50 {h.fmt(step.ttft_p50_ms)} ms, "
        f"p95 {h.fmt(step.ttft_p95_ms)} ms (+{h.fmt(step.overhead_p95_ms)}) | "
        f"completed {step.completed}/{step.total} | cores: {cores} | {verdict}"
    )
    for error in step.errors:
        print(f"       ! {error}")


def cores_line() -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc {os.cpu_count()} (usable {affinity}), load {load}"


def report(setups: Sequence[Setup], args: argparse.Namespace, reference: float) -> str:
    """The summary table (markdown) and the capacity ratio."""
    lines = [
        f"Capacity: most streams x {args.rate:g} tok/s with every answer complete and p95 TTFT "
        f"< {args.max_overhead_ms:g} ms over the upstream's ({h.fmt(reference)} ms median); "
        f"{args.arrival} arrivals; {cores_line()}.",
        "",
        "| setup | streams | tokens/s | TTFT p95 (ms) | CPU per process at that load (cores) |",
        "|---|---:|---:|---:|---|",
    ]
    capacities: list[float] = []
    for setup in setups:
        best = setup.best
        capacity = best.streams * args.rate if best else 0.0
        capacities.append(capacity)
        if best is None:
            lines.append(f"| {setup.label} | 0 | 0 | n/a | (failed at {args.start}) |")
            continue
        cpu = ", ".join(f"{name} {value:.2f}" for name, value in best.cores.items())
        lines.append(
            f"| {setup.label} | {best.streams} | {capacity:,.0f} | "
            f"{h.fmt(best.ttft_p95_ms)} | {cpu} |"
        )
    base = capacities[0]
    for setup, capacity in zip(setups[1:], capacities[1:], strict=True):
        ratio = capacity / base if base else math.nan
        lines.append("")
        lines.append(f"Capacity ratio, {setup.label} / {setups[0].label}: x{h.fmt(ratio, 2)}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="coarse search, < 3 min")
    parser.add_argument("--replicas", type=int, default=2, help="replicas behind the proxy")
    parser.add_argument("--rate", type=float, default=100.0, help="tokens/s of each stream")
    parser.add_argument("--answer-s", type=float, default=2.0, help="answer length, seconds")
    parser.add_argument("--start", type=int, default=25, help="first load, streams")
    parser.add_argument("--max-streams", type=int, default=1600, help="stop doubling here")
    parser.add_argument("--refine", type=int, help="bisection steps (default 3; --quick 1)")
    parser.add_argument("--max-overhead-ms", type=float, default=250.0)
    parser.add_argument("--arrival", choices=("steady", "burst"), default="steady")
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every replica (e.g. DATABASE_URL=...)",
    )
    parser.add_argument("--app-script", default="app.py")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-stream timeout, s")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs in the temp dir")
    args = parser.parse_args(argv)
    if args.refine is None:
        args.refine = 1 if args.quick else 3
    if args.quick:
        args.max_streams = min(args.max_streams, 400)
    # What stream_overhead's Bench reads from its own arguments.
    args.first_token_delay = 0.0
    args.raw_baseline = False
    return args


async def main_async(args: argparse.Namespace, workdir: Path) -> int:
    date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"# replicas - {date}, {cores_line()}, code {code_version()}")
    with h.ProcessGroup() as group:
        bench = ReplicaBench(args, workdir, group)
        fake = bench.start_fake()
        bench.reference_ms, p95 = await bench.unloaded_ttft()
        print(
            f"fake pid {fake.pid}; upstream TTFT of one idle stream: p50 {bench.reference_ms:.1f}"
            f" ms, p95 {p95:.1f} ms"
        )

        replicas = [bench.start_replica(f"app-{i}") for i in range(1, args.replicas + 1)]
        proxy = start_proxy([r.url for r in replicas], workdir / "haproxy", check_interval_ms=2000)
        try:
            entry = proxy_service(proxy)
            # The lone replica is the first of the pair, reached directly; the others idle
            # meanwhile (Gradio's queue polling: a few hundredths of a core each).
            single = Setup("1 replica", replicas[0], {replicas[0].name: replicas[0]})
            watched = {r.name: r for r in replicas} | {"haproxy": entry}
            several = Setup(f"{args.replicas} replicas + haproxy", entry, watched)
            await bench.capacities([single, several])
        finally:
            proxy.stop()
        await bench.transport.aclose()

    table = report([single, several], args, bench.reference_ms)
    print("\n# Summary (markdown)\n")
    print(table)
    return 0


def proxy_service(proxy: ProxyServer) -> h.Service:
    """The proxy seen as a bench Service (for its URL, CPU and liveness)."""
    return h.Service(name="haproxy", process=proxy.process, url=proxy.url, workdir=proxy.workdir)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if shutil.which("haproxy") is None:
        print("haproxy is not installed: `make system-deps` (or apt-get install haproxy)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    try:
        return asyncio.run(main_async(args, workdir))
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
