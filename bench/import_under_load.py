"""Do 20 streaming answers keep their pace while a 5 MB, 1 000-chat import runs?

In one process, the app's own services (`chatlib.services.create_services`: ChatService,
ConversationService, the store, the frame budget, the usage log) answer N concurrent turns
against the fake OpenRouter (its own process, `tests.fakes.openrouter`). Each answer streams
`--tokens` tokens at `--rate` tokens/s. The time between two frames a turn yields is its
"gap"; an import that blocks the event loop shows up as long gaps in every stream at once.

Rounds alternate (so machine noise hits both alike):

* baseline: N streams, nothing else;
* import: the same N streams, and `ConversationService.import_file` of a ~4.9 MB file with
  1 000 conversations started `--import-delay` seconds into the answers.

    .venv/bin/python bench/import_under_load.py [--streams 20] [--rounds 3] [--tokens 400]

Prints p50 / p95 / max gap per phase, the import's duration, and the p95 and max ratios
import / baseline (targets: p95 ratio <= 1.5, max ratio <= 2). Absolute numbers depend on
a shared 2-core machine, where the baseline's own longest gap moves a lot; compare within
one run.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (  # noqa: E402
    MODEL,
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
from chatlib.messages import AnswerMeta, ChatMessage  # noqa: E402
from chatlib.services import Services, create_services  # noqa: E402
from chatlib.storage import Conversation  # noqa: E402
from chatlib.transfer import export_json  # noqa: E402

IMPORT_CONVERSATIONS = 1000
IMPORT_TARGET_BYTES = 4_900_000
MAX_IMPORT_BYTES = 5_000_000
P95_RATIO_TARGET = 1.5
# A frozen event loop (the issue saw ~1 s) stretches the longest gap several times over.
MAX_RATIO_TARGET = 2.0


def _conversation(n: int, now: float, filler: int) -> Conversation:
    messages: list[ChatMessage] = []
    for turn in range(3):
        messages.append(ChatMessage("user", f"Question {turn} of chat {n}: why is the sky blue?"))
        messages.append(
            ChatMessage(
                "assistant",
                "Because " + "light scatters off the air. " * filler,
                meta=AnswerMeta(
                    model=MODEL,
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
        title=f"Imported chat {n}",
        created_at=now - n,
        updated_at=now - n,
        model=MODEL,
        system_prompt="Be brief.",
        temperature=0.3,
        messages=tuple(messages),
    )


def import_file_bytes(
    count: int = IMPORT_CONVERSATIONS, target: int = IMPORT_TARGET_BYTES
) -> bytes:
    """An export of `count` conversations, padded to about `target` bytes."""
    now = time.time()
    probe = len(export_json([_conversation(n, now, 10) for n in range(count)]))
    per_unit = (len(export_json([_conversation(n, now, 20) for n in range(count)])) - probe) / 10
    filler = max(1, 10 + int((target - probe) / per_unit))
    data = export_json([_conversation(n, now, filler) for n in range(count)])
    while len(data) > MAX_IMPORT_BYTES and filler > 1:
        filler -= 1
        data = export_json([_conversation(n, now, filler) for n in range(count)])
    return data


@dataclass
class Phase:
    """Every frame gap of every stream in all rounds of one phase."""

    name: str
    gaps: list[float] = field(default_factory=list)
    failed: int = 0
    streams: int = 0
    import_seconds: list[float] = field(default_factory=list)


def _turn(services: Services, request: TurnRequest) -> AsyncIterator[ConversationFrame]:
    return services.conversations.turn(request)


async def run_round(
    services: Services,
    phase: Phase,
    *,
    streams: int,
    tokens: int,
    rate: float,
    import_data: bytes | None,
    import_delay: float,
) -> None:
    """N concurrent streams; with `import_data`, an import starts `import_delay` s in."""

    async def importer() -> None:
        await asyncio.sleep(import_delay)
        started = time.perf_counter()
        saved = await services.conversations.import_file(secrets.token_hex(16), import_data or b"")
        phase.import_seconds.append(time.perf_counter() - started)
        assert saved == IMPORT_CONVERSATIONS, saved

    tasks = [answer_gaps(services, _turn, n, tokens, rate) for n in range(streams)]
    if import_data is None:
        results = await asyncio.gather(*tasks)
    else:
        results, _ = await asyncio.gather(asyncio.gather(*tasks), importer())
    for gaps in results:
        phase.streams += 1
        if gaps is None:
            phase.failed += 1
        else:
            phase.gaps.extend(gaps)


async def bench(args: argparse.Namespace, fake_url: str, workdir: Path) -> int:
    settings = in_process_settings(
        fake_url, workdir / "data", MAX_IMPORT_BYTES=str(MAX_IMPORT_BYTES)
    )
    services = create_services(settings)
    data = await asyncio.to_thread(import_file_bytes)
    print(
        f"import file: {len(data) / 1e6:.2f} MB, {IMPORT_CONVERSATIONS} conversations; "
        f"{args.streams} streams x {args.tokens} tokens @ {args.rate:g} tok/s; "
        f"{args.rounds} rounds"
    )
    baseline, loaded = Phase("baseline"), Phase("with import")
    try:
        # Warm up: clients, connections, the store's first writes.
        await run_round(
            services,
            Phase("warm-up"),
            streams=2,
            tokens=20,
            rate=200,
            import_data=None,
            import_delay=0,
        )
        for round_number in range(args.rounds):
            for phase, import_data in round_order([(baseline, None), (loaded, data)], round_number):
                await run_round(
                    services,
                    phase,
                    streams=args.streams,
                    tokens=args.tokens,
                    rate=args.rate,
                    import_data=import_data,
                    import_delay=args.import_delay,
                )
    finally:
        await services.aclose()

    nominal = 1 / args.rate
    print(f"\ngaps between frames, seconds (one token every {nominal * 1000:.0f} ms upstream)\n")
    print("| phase | streams | failed | frames | gap p50 | gap p95 | gap max | import s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for phase in (baseline, loaded):
        imports = (
            f"{fmt(min(phase.import_seconds), 2)}-{fmt(max(phase.import_seconds), 2)}"
            if phase.import_seconds
            else "-"
        )
        print(
            f"| {phase.name} | {phase.streams} | {phase.failed} | {len(phase.gaps)} "
            f"| {fmt(percentile(phase.gaps, 50), 3)} | {fmt(percentile(phase.gaps, 95), 3)} "
            f"| {fmt(max(phase.gaps), 3)} | {imports} |"
        )
    p95_ratio = percentile(loaded.gaps, 95) / percentile(baseline.gaps, 95)
    max_ratio = max(loaded.gaps) / max(baseline.gaps)
    ok = (
        p95_ratio <= P95_RATIO_TARGET
        and max_ratio <= MAX_RATIO_TARGET
        and not baseline.failed
        and not loaded.failed
    )
    print(f"\np95 gap ratio import / baseline: {p95_ratio:.2f} (target <= {P95_RATIO_TARGET})")
    print(f"max gap ratio import / baseline: {max_ratio:.2f} (target <= {MAX_RATIO_TARGET})")
    return verdict(ok)


def _import_delay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--import-delay", type=float, default=0.5, help="seconds into the answers")


def main() -> int:
    """Run the benchmark and print the table."""
    return load_bench_main(
        bench,
        description=__doc__.splitlines()[0],
        prefix="import-bench-",
        streams=20,
        tokens=400,
        more_arguments=_import_delay,
    )


if __name__ == "__main__":
    sys.exit(main())
