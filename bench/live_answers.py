"""What does running each answer in a server task (`LiveAnswers`) cost against a direct turn?

In one process, the app's own services (`chatlib.services.create_services`) answer N
concurrent turns against the fake OpenRouter (its own process, `tests.fakes.openrouter`),
each streaming `--tokens` tokens at `--rate` tokens/s, consumed two ways:

* direct: `ConversationService.turn(request)` iterated by the caller, as the chat handler
  did before answers outlived the page;
* live: `LiveAnswers.start(request)`, then `answer.follow()` iterated by the caller (the
  answer itself runs in a background task that publishes each frame).

The time between two frames the consumer receives is its "gap"; CPU is this process's
(`time.process_time`: the services, the event loop and the consumers; the fake runs
elsewhere) per answer. Rounds alternate (direct, live, then live, direct, ...) so machine
noise hits both alike.

    .venv/bin/python bench/live_answers.py [--streams 50] [--rounds 3] [--tokens 200]

Prints p50 / p95 / max gap and CPU ms per answer for each way, and the ratios live /
direct (targets: p95 gap ratio <= 1.2, CPU ratio <= 1.2). Absolute numbers depend on a
shared 2-core machine; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (  # noqa: E402
    Consume,
    answer_gaps,
    fmt,
    in_process_settings,
    load_bench_main,
    percentile,
    round_order,
    verdict,
)
from chatlib.chat import TurnRequest  # noqa: E402
from chatlib.conversations import ConversationFrame  # noqa: E402
from chatlib.services import Services, create_services  # noqa: E402

P95_RATIO_TARGET = 1.2
CPU_RATIO_TARGET = 1.2


async def direct(services: Services, request: TurnRequest) -> AsyncIterator[ConversationFrame]:
    """The turn's frames straight from the conversation service."""
    async for frame in services.conversations.turn(request):
        yield frame


async def live(services: Services, request: TurnRequest) -> AsyncIterator[ConversationFrame]:
    """The same turn started as a live answer and followed."""
    answer = await services.live.start(request)
    async for frame in answer.follow():
        yield frame


@dataclass
class Phase:
    """Every frame gap of every stream, and the CPU, over all rounds of one way."""

    name: str
    consume: Consume
    gaps: list[float] = field(default_factory=list)
    failed: int = 0
    streams: int = 0
    cpu_seconds: float = 0.0

    @property
    def cpu_ms_per_answer(self) -> float:
        return self.cpu_seconds * 1000 / max(self.streams, 1)


async def run_round(
    services: Services, phase: Phase, *, streams: int, tokens: int, rate: float
) -> None:
    """N concurrent streams consumed the phase's way; adds their gaps and CPU."""
    cpu_before = time.process_time()
    results = await asyncio.gather(
        *(answer_gaps(services, phase.consume, n, tokens, rate) for n in range(streams))
    )
    phase.cpu_seconds += time.process_time() - cpu_before
    for gaps in results:
        phase.streams += 1
        if gaps is None:
            phase.failed += 1
        else:
            phase.gaps.extend(gaps)


def report(args: argparse.Namespace, phases: tuple[Phase, Phase]) -> bool:
    """Print the table and the ratios; True when both targets are met and nothing failed."""
    nominal = 1 / args.rate
    print(f"\ngaps between frames, seconds (one token every {nominal * 1000:.0f} ms upstream)\n")
    print("| way | streams | failed | frames | gap p50 | gap p95 | gap max | CPU ms/answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for phase in phases:
        print(
            f"| {phase.name} | {phase.streams} | {phase.failed} | {len(phase.gaps)} "
            f"| {fmt(percentile(phase.gaps, 50), 3)} | {fmt(percentile(phase.gaps, 95), 3)} "
            f"| {fmt(max(phase.gaps, default=float('nan')), 3)} "
            f"| {fmt(phase.cpu_ms_per_answer, 2)} |"
        )
    base, measured = phases
    p95_ratio = percentile(measured.gaps, 95) / percentile(base.gaps, 95)
    cpu_ratio = measured.cpu_ms_per_answer / base.cpu_ms_per_answer
    print(f"\np95 gap ratio live / direct: {p95_ratio:.2f} (target <= {P95_RATIO_TARGET})")
    print(f"CPU per answer ratio live / direct: {cpu_ratio:.2f} (target <= {CPU_RATIO_TARGET})")
    return (
        p95_ratio <= P95_RATIO_TARGET
        and cpu_ratio <= CPU_RATIO_TARGET
        and not base.failed
        and not measured.failed
    )


async def bench(args: argparse.Namespace, fake_url: str, workdir: Path) -> int:
    services = create_services(in_process_settings(fake_url, workdir / "data"))
    print(
        f"{args.streams} streams x {args.tokens} tokens @ {args.rate:g} tok/s; "
        f"{args.rounds} rounds of each way"
    )
    phases = (
        Phase("direct (ConversationService.turn)", direct),
        Phase("live (start + follow)", live),
    )
    try:
        for consume in (direct, live):  # warm up: clients, connections, the store's first writes
            await run_round(services, Phase("warm-up", consume), streams=2, tokens=20, rate=200)
        for round_number in range(args.rounds):
            for phase in round_order(phases, round_number):
                await run_round(
                    services, phase, streams=args.streams, tokens=args.tokens, rate=args.rate
                )
    finally:
        await services.aclose()
    return verdict(report(args, phases))


def main() -> int:
    """Run the benchmark and print the table."""
    return load_bench_main(
        bench, description=__doc__.splitlines()[0], prefix="live-bench-", streams=50, tokens=200
    )


if __name__ == "__main__":
    sys.exit(main())
