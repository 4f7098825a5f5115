"""Break 6: exports and their download copies are gone after an hour without another export."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.security.conftest import PageFactory, request, send, visitor_state
from ui.page import Page

HOUR = 3600


def age(path: Path, seconds: float) -> None:
    """Make `path` (and everything in it) look `seconds` old."""
    when = time.time() - seconds
    for item in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(item, (when, when))


async def export_one(page: Page) -> tuple[Path, set[Path]]:
    """Export a new chat; its download copy and the export folders it added."""
    exports_dir = page.ctx.services.exports_dir
    before = set(exports_dir.iterdir()) if exports_dir.exists() else set()
    me = visitor_state()
    chat_id = await send(page, me, "Private words [[tokens=2]]")
    exported = await page.transfer.export("current", chat_id, me, request(), None)
    download = Path(exported[page.transfer.export_file]["value"])
    return download, set(exports_dir.iterdir()) - before


async def test_an_export_older_than_an_hour_is_swept_without_another_export(
    make_page: PageFactory,
) -> None:
    page = await make_page()
    services = page.ctx.services
    old_download, old_exports = await export_one(page)
    young_download, young_exports = await export_one(page)
    assert old_download.is_relative_to(services.downloads_dir) and old_exports
    # An hour passes for the first export only; nobody exports again.
    for folder in [*old_exports, old_download.parent]:
        age(folder, HOUR + 60)

    removed = await asyncio.to_thread(services.retention.sweep_once)  # as its timer does

    assert removed == 2
    assert not old_download.exists()
    assert not any(p.exists() for p in old_exports)
    assert young_download.read_bytes()  # a younger export stays for its hour
    assert all(p.exists() for p in young_exports)


async def test_the_sweeper_runs_on_its_own_once_started(make_page: PageFactory) -> None:
    page = await make_page()
    services = page.ctx.services
    download, exports = await export_one(page)
    for folder in [*exports, download.parent]:
        age(folder, 2 * HOUR)
    services.retention.start()
    try:
        deadline = time.monotonic() + 10
        while download.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        services.retention.stop()
    assert not download.exists()
    assert not any(p.exists() for p in exports)
