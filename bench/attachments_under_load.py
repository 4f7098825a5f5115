"""Do other people's answers keep their pace while someone sends big attachments?

In one process, the app's own services answer `--streams` concurrent live answers (started and
followed like the chat page does) against the fake OpenRouter (its own process). In the
"with upload" rounds one more visitor, at the same time, sends a 20 MB PDF and a 10 MB photo
the way the page does: sizes checked, each file read and prepared (sniffed, the photo decoded,
downscaled and re-encoded) in a thread (`ui.chat.read_attachments`), then the turn started
with them (stored, base64-encoded into the upstream request) and followed to its end.

The gap is the time between two frames a stream's follower receives. Rounds alternate
(without, with, then with, without, ...) so machine noise hits both alike.

    .venv/bin/python bench/attachments_under_load.py [--streams 20] [--rounds 3]

Prints p50 / p95 / max gap of the 20 streams without and with the upload, the p95 ratio
(target <= 1.5) and how long the upload's turn took to start. Absolute numbers depend on a
shared 2-core machine; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (  # noqa: E402
    MODEL,
    fmt,
    in_process_settings,
    load_bench_main,
    percentile,
    round_order,
    verdict,
)
from bench.live_answers import Phase, live, run_round  # noqa: E402
from chatlib.chat import TurnRequest  # noqa: E402
from chatlib.config import Settings  # noqa: E402
from chatlib.services import Services, create_services  # noqa: E402
from ui.chat import read_attachments  # noqa: E402

P95_RATIO_TARGET = 1.5
PDF_BYTES = 20_000_000
PHOTO_SIDE = (2400, 1400)  # random pixels: about 10 MB as PNG, incompressible


def write_files(folder: Path) -> list[str]:
    """A 20 MB PDF and a ~10 MB photo (noise does not compress), as a visitor would upload."""
    from PIL import Image

    pdf = folder / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%" + os.urandom(PDF_BYTES - 20) + b"\n%%EOF\n")
    photo = folder / "photo.png"
    width, height = PHOTO_SIDE
    Image.frombytes("RGB", PHOTO_SIDE, os.urandom(width * height * 3)).save(photo, compress_level=1)
    return [str(pdf), str(photo)]


async def upload_turn(services: Services, settings: Settings, paths: list[str]) -> float:
    """Send both files like the page does and follow the answer; seconds until it started."""
    started = time.perf_counter()
    attachments = await read_attachments(paths, settings.attachment_limits)
    request = TurnRequest(
        owner_key=secrets.token_hex(16),
        conversation_id=None,
        user_text="Summarise the report and describe the photo [[tokens=20]]",
        model=MODEL,
        system_prompt="",
        temperature=0.3,
        session_key=f"bench-upload-{secrets.token_hex(4)}",
        attachments=attachments,
    )
    answer = await services.live.start(request)
    to_start = time.perf_counter() - started
    async for _ in answer.follow():
        pass
    return to_start


async def round_with_upload(
    services: Services, settings: Settings, phase: Phase, paths: list[str], args: argparse.Namespace
) -> float:
    """The streams, and one upload starting a moment after them; the upload's start time."""
    streams = asyncio.ensure_future(
        run_round(services, phase, streams=args.streams, tokens=args.tokens, rate=args.rate)
    )
    await asyncio.sleep(0.3)  # the streams are flowing when the files arrive
    to_start = await upload_turn(services, settings, paths)
    await streams
    return to_start


def report(phases: tuple[Phase, Phase], upload_starts: list[float], rate: float) -> bool:
    print(f"\ngaps between frames, seconds (one token every {1000 / rate:.0f} ms upstream)\n")
    print("| round | streams | failed | frames | gap p50 | gap p95 | gap max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for phase in phases:
        print(
            f"| {phase.name} | {phase.streams} | {phase.failed} | {len(phase.gaps)} "
            f"| {fmt(percentile(phase.gaps, 50), 3)} | {fmt(percentile(phase.gaps, 95), 3)} "
            f"| {fmt(max(phase.gaps, default=float('nan')), 3)} |"
        )
    base, loaded = phases
    ratio = percentile(loaded.gaps, 95) / percentile(base.gaps, 95)
    print(f"\nupload to turn started, s: {', '.join(fmt(s, 2) for s in upload_starts)}")
    print(f"p95 gap ratio with / without upload: {ratio:.2f} (target <= {P95_RATIO_TARGET})")
    return ratio <= P95_RATIO_TARGET and not base.failed and not loaded.failed


async def bench(args: argparse.Namespace, fake_url: str, workdir: Path) -> int:
    settings = in_process_settings(
        fake_url,
        workdir / "data",
        MAX_ATTACHMENT_BYTES=str(PDF_BYTES + 1_000_000),
        MAX_MESSAGE_ATTACHMENT_BYTES=str(3 * PDF_BYTES),
    )
    paths = await asyncio.to_thread(write_files, workdir)
    services = create_services(settings)
    print(
        f"{args.streams} streams x {args.tokens} tokens @ {args.rate:g} tok/s; {args.rounds} rounds"
    )
    phases = (Phase("without upload", live), Phase("with 20 MB PDF + 10 MB photo", live))
    upload_starts: list[float] = []
    try:
        await run_round(services, Phase("warm-up", live), streams=2, tokens=20, rate=200)
        for number in range(args.rounds):
            for with_upload in round_order([False, True], number):
                if with_upload:
                    upload_starts.append(
                        await round_with_upload(services, settings, phases[1], paths, args)
                    )
                else:
                    await run_round(
                        services,
                        phases[0],
                        streams=args.streams,
                        tokens=args.tokens,
                        rate=args.rate,
                    )
    finally:
        await services.aclose()
    return verdict(report(phases, upload_starts, args.rate))


def main() -> int:
    """Run the benchmark and print the table."""
    return load_bench_main(
        bench, description=__doc__.splitlines()[0], prefix="attach-bench-", streams=20, tokens=300
    )


if __name__ == "__main__":
    sys.exit(main())
