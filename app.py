"""OpenRouter Chat, the Space's entry point: settings -> services -> ui -> launch."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import structlog

from chatlib.config import Settings
from chatlib.errors import ConfigError
from chatlib.hub_sync import HubSync, install_signal_flush
from chatlib.logging import configure_logging
from chatlib.operator import local_base_url, startup_line
from chatlib.services import Services, create_services
from chatlib.snapshot import snapshot_hook
from chatlib.store import database_url

SYNC_FLUSH_TIMEOUT_S = 20.0
NO_KEY_LINE = (
    "No OPENROUTER_API_KEY is set: messages can only be sent with a visitor's own key "
    "(visitors can paste theirs under 'Your OpenRouter key'). To set the operator key, put "
    "OPENROUTER_API_KEY=sk-or-... in a .env file next to app.py (on a Space: a secret in "
    "Settings -> Variables and secrets) and restart."
)
log = structlog.get_logger("app")


def read_settings() -> Settings:
    """Settings from the environment (and .env); exit with every problem named."""
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None


def warn_if_no_key(settings: Settings, out: TextIO) -> bool:
    """With no operator key: a warning event, and one line for whoever started the app."""
    if settings.openrouter_api_key:
        return False
    log.warning(
        "startup.no_api_key",
        effect="messages need a visitor's own key",
        fix="set OPENROUTER_API_KEY (.env or a Space secret) and restart",
    )
    out.write(f"{NO_KEY_LINE}\n")
    return True


def start_services(settings: Settings) -> Services:
    """Logging, the dataset sync (restored before serving) and the shared services."""
    # Gradio keeps uploads and download copies here; files older than an hour are swept.
    gradio_dir = Path(os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.data_dir / "gradio")))
    redactor = configure_logging(settings)
    warn_if_no_key(settings, sys.stdout)
    # Before each push, the conversation files it sends are brought up to date with the database.
    url = database_url(settings, settings.database_url)
    sync = HubSync.from_settings(settings, before_push=snapshot_hook(url, settings.data_dir))
    if sync is not None:
        sync.restore()  # before serving: restored conversations must be there on first load
    try:
        services = create_services(settings, redactor, sync=sync, swept_dirs=(gradio_dir,))
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
    if sync is not None:
        # Only now: the first push runs `before_push` at once, which reads the database that
        # create_services has just migrated and filled from the restored files.
        sync.start()
        install_signal_flush(sync, SYNC_FLUSH_TIMEOUT_S)
    services.catalog.prefetch_in_thread()
    services.retention.start()
    return services


def main() -> None:
    """Read settings, set up logging and services, and serve."""
    settings = read_settings()
    # Uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 and rewrite the client
    # address; the app resolves the client IP itself against TRUSTED_PROXIES.
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    services = start_services(settings)

    from ui import page, tuning  # Gradio is imported only once settings are known to be good

    applied = tuning.before_build()
    demo = page.build(settings, services)
    # Queue positions are sent once a second rather than to every waiting visitor each time
    # an event starts (Gradio's "auto": O(waiting) work per start, 7 % of the CPU in a burst).
    demo.queue(default_concurrency_limit=None, max_size=None, status_update_rate=1)
    tuning.after_queue(demo, applied)
    # Printed, not logged: the log redacts the token, and only the operator reads the console.
    line = startup_line(services.operator, local_base_url(settings.host, settings.port))
    if line:
        sys.stdout.write(f"{line}\n")
    demo.launch(**page.launch_kwargs(settings, services))


if __name__ == "__main__":
    main()
