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
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (  # noqa: E402
    FAKE_API_KEY,
    MODEL,
    ProcessGroup,
    fmt,
    percentile,
    start_fake,
)
from chatlib.chat import TurnRequest  # noqa: E402
from chatlib.config import Settings  # noqa: E402
from chatlib.conversations import ConversationFrame  # noqa: E402
from chatlib.services import Services, create_services  # noqa: E402
from tests.fakes.openrouter import expected_reply  # noqa: E402

P95_RATIO_TARGET = 1.2
CPU_RATIO_TARGET = 1.2

Consume = Callable[[Services, TurnRequest], AsyncIterator[ConversationFrame]]


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


async def one_stream(
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


async def run_round(
    services: Services, phase: Phase, *, streams: int, tokens: int, rate: float
) -> None:
    """N concurrent streams consumed the phase's way; adds their gaps and CPU."""
    cpu_before = time.process_time()
    results = await asyncio.gather(
        *(one_stream(services, phase.consume, n, tokens, rate) for n in range(streams))
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


async def bench(args: argparse.Namespace, fake_url: str, data_dir: Path) -> int:
    settings = Settings.from_env(
        {
            "OPENROUTER_API_KEY": FAKE_API_KEY,
            "OPENROUTER_BASE_URL": fake_url,
            "DATA_DIR": str(data_dir),
            "RATE_LIMIT_REQUESTS_PER_MIN": "0",
            "LOG_LEVEL": "WARNING",
        },
        env_file=None,
    )
    services = create_services(settings)
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
            order = list(phases) if round_number % 2 == 0 else list(reversed(phases))
            for phase in order:
                await run_round(
                    services, phase, streams=args.streams, tokens=args.tokens, rate=args.rate
                )
    finally:
        await services.aclose()
    ok = report(args, phases)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per answer")
    parser.add_argument("--rate", type=float, default=100.0, help="tokens per second upstream")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="live-bench-") as tmp, ProcessGroup() as group:
        workdir = Path(tmp)
        fake = start_fake(group, workdir / "fake", tokens_per_second=args.rate)
        os.chdir(workdir)  # the services write logs/ and data only under the temp directory
        status = asyncio.run(bench(args, fake.url, workdir / "data"))
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
