"""OpenRouter Chat, the Space's entry point: settings -> services -> ui -> launch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from chatlib.config import Settings
from chatlib.errors import ConfigError
from chatlib.hub_sync import HubSync, install_signal_flush
from chatlib.logging import configure_logging
from chatlib.operator import local_base_url, startup_line
from chatlib.services import Services, create_services
from chatlib.snapshot import snapshot_hook
from chatlib.store import database_url

SYNC_FLUSH_TIMEOUT_S = 20.0


def read_settings() -> Settings:
    """Settings from the environment (and .env); exit with every problem named."""
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None


def start_services(settings: Settings) -> Services:
    """Logging, the dataset sync (restored before serving) and the shared services."""
    # Gradio keeps uploads and download copies here; files older than an hour are swept.
    gradio_dir = Path(os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.data_dir / "gradio")))
    redactor = configure_logging(settings)
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
