"""The long-lived objects the UI needs, built once from Settings."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy.exc import SQLAlchemyError

from chatlib.catalog import ModelCatalog, http_catalog_fetcher
from chatlib.chat import ChatService
from chatlib.client import ClientPool, attribution_headers
from chatlib.config import Settings
from chatlib.conversations import ConversationService
from chatlib.errors import ConfigError
from chatlib.frames import FrameBudget
from chatlib.hub_sync import HubSync, SyncStatus
from chatlib.identity import browser_state_params, load_or_create_server_secret
from chatlib.keys import SessionKeys
from chatlib.live import LiveAnswers
from chatlib.logging import SecretRedactor
from chatlib.operator import OperatorGate
from chatlib.ratelimit import IPNetwork, RateLimiter, effective_trusted_proxies
from chatlib.retention import RetentionSweeper, ensure_private_dir
from chatlib.snapshot import SNAPSHOT_STATE_NAME, write_snapshot
from chatlib.store import (
    SqlAttachmentStore,
    SqlConversationStore,
    create_engine_for,
    database_url,
    describe_url,
    open_store,
)
from chatlib.store.attachments import unused_files_sweep
from chatlib.transfer import EXPORT_MAX_AGE_SECONDS
from chatlib.usage import SqlUsageLog, UsageLog, UsageSink, import_usage_csv

log = structlog.get_logger(__name__)

# Screen updates of one streaming answer are at least this far apart...
UI_FRAME_INTERVAL_MS = 30
# ...and all streams together share this many per second: the interval stretches as more
# people stream at once.
UI_UPDATES_PER_SECOND = 100
SQLITE_PREFIX = "sqlite:///"


@dataclass(frozen=True)
class Services:
    """Handles shared by every visitor's session."""

    chat: ChatService
    conversations: ConversationService
    live: LiveAnswers
    catalog: ModelCatalog
    clients: ClientPool
    redactor: SecretRedactor
    limiter: RateLimiter
    usage: UsageSink | None
    usage_dir: Path
    exports_dir: Path
    server_secret: str
    browser_storage_key: str
    browser_secret: str
    trusted_proxies: tuple[IPNetwork, ...]
    store: SqlConversationStore
    operator: OperatorGate
    session_keys: SessionKeys
    downloads_dir: Path
    retention: RetentionSweeper
    attachments: SqlAttachmentStore
    sync: HubSync | None = None

    @property
    def sync_status(self) -> SyncStatus:
        """Dataset sync status for the operator view."""
        return self.sync.status if self.sync is not None else SyncStatus.disabled()

    async def aclose(self) -> None:
        """Release network resources and files."""
        await self.live.aclose()  # answers still being written are stopped and saved first
        await self.catalog.aclose()
        await self.clients.aclose()
        await self.limiter.aclose()
        await self.store.aclose()
        self.retention.stop()
        if self.usage is not None:
            self.usage.close()


def _server_secret(settings: Settings, data_dir: Path) -> str:
    """The secret identities derive from; warns when visitors could lose their chats."""
    server_secret, source = load_or_create_server_secret(
        data_dir,
        settings.browser_state_secret,
        hf_token=settings.hf_token,
        sync_enabled=settings.sync_enabled,
    )
    if source == "hf_token":
        log.warning(
            "identity.secret_from_hf_token",
            advice="Set BROWSER_STATE_SECRET as a Space secret so identities do not depend "
            "on HF_TOKEN.",
        )
    elif source == "file" and settings.on_space:
        log.warning(
            "identity.secret_on_ephemeral_disk",
            advice="Set BROWSER_STATE_SECRET as a Space secret: the generated one is lost "
            "when the Space restarts, and visitors lose their conversations with it.",
        )
    return server_secret


def _catalog(settings: Settings) -> ModelCatalog:
    """The live model list, fetched with the app's attribution headers."""
    return ModelCatalog(
        http_catalog_fetcher(
            settings.openrouter_base_url,
            settings.catalog_timeout_seconds,
            headers=attribution_headers(settings),
        ),
        ttl_seconds=settings.catalog_refresh_seconds,
        timeout_seconds=settings.catalog_timeout_seconds,
    )


def _limiter(settings: Settings) -> RateLimiter:
    """Chat turns, key checks and uploads per client, in one (shareable) storage."""
    return RateLimiter(
        settings.rate_limit_storage_uri,
        settings.rate_limit_requests_per_min,
        settings.rate_limit_requests_per_min_logged_in,
        key_checks_per_minute=settings.key_checks_per_min,
        uploads_per_minute=settings.uploads_per_min,
    )


def _private_sqlite_file(url: str) -> None:
    """An SQLite database holds every visitor's chats: only the app's user may read it.

    SQLite gives its -wal and -shm files the main file's mode, so creating that one 0600
    (before SQLite creates it 0644 under the usual umask) covers all three.
    """
    if not url.startswith(SQLITE_PREFIX):
        return
    path = Path(url.removeprefix(SQLITE_PREFIX))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    path.chmod(0o600)


def _prepared_database(settings: Settings, usage_dir: Path) -> str:
    """Migrate the schema and import a JSON data folder (and usage CSV files) once; the URL.

    With the dataset sync on, the conversation files it pushes are brought up to date with
    the database first (a chat deleted before this start must not come back from them).

    Done with an engine of its own on an event loop of its own (in a worker thread, so it
    works whether or not a loop runs here): the serving engine's connections then belong to
    the server's loop alone.
    """
    url = database_url(settings, settings.database_url)

    async def prepare() -> None:
        store = await open_store(url, data_dir=settings.data_dir)
        try:
            await import_usage_csv(store.engine, usage_dir)
            if settings.sync_enabled:
                state = settings.data_dir / SNAPSHOT_STATE_NAME
                await write_snapshot(store, settings.data_dir, state)
        finally:
            await store.aclose()

    try:
        _private_sqlite_file(url)
        with ThreadPoolExecutor(max_workers=1) as worker:
            worker.submit(asyncio.run, prepare()).result()
    except (SQLAlchemyError, OSError) as exc:
        raise ConfigError(
            [
                f"The database {describe_url(url)} could not be opened or migrated "
                f"({type(exc).__name__}). Check that DATA_DIR is writable, or DATABASE_URL."
            ]
        ) from None
    return url


def _secrets(settings: Settings, redactor: SecretRedactor | None) -> tuple[SecretRedactor, str]:
    """The log redactor, knowing every secret, and the server secret (DATA_DIR is created)."""
    redactor = redactor or SecretRedactor([settings.openrouter_api_key or ""])
    for secret in (settings.browser_state_secret, settings.hf_token):
        redactor.add(secret)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server_secret = _server_secret(settings, settings.data_dir)
    redactor.add(server_secret)
    return redactor, server_secret


def create_services(
    settings: Settings,
    redactor: SecretRedactor | None = None,
    *,
    sync: HubSync | None = None,
    swept_dirs: tuple[Path, ...] = (),
) -> Services:
    """Wire the default implementations together (creates DATA_DIR if needed).

    `swept_dirs` are emptied of files older than an hour along with exports and downloads
    (Gradio's upload and cache folder) once `services.retention` is started; so are attached
    files no message uses any more.
    """
    redactor, server_secret = _secrets(settings, redactor)
    data_dir = settings.data_dir
    storage_key, browser_secret = browser_state_params(server_secret)
    clients = ClientPool(settings)
    budget = FrameBudget(
        updates_per_second=UI_UPDATES_PER_SECOND, min_interval_s=UI_FRAME_INTERVAL_MS / 1000
    )
    catalog = _catalog(settings)
    limiter = _limiter(settings)
    usage_dir = data_dir / "usage"
    url = _prepared_database(settings, usage_dir)
    store = SqlConversationStore(create_engine_for(url))
    attachments = SqlAttachmentStore(store.engine, max_file_bytes=settings.max_attachment_bytes)
    usage = SqlUsageLog(store.engine, UsageLog(usage_dir)) if settings.enable_analytics else None
    chat = ChatService(settings, clients, budget, limiter=limiter, usage=usage, catalog=catalog)
    exports_dir = data_dir / "exports"
    conversations = ConversationService(
        store,
        chat,
        exports_dir=exports_dir,
        max_import_bytes=settings.max_import_bytes,
        attachments=attachments,
    )
    operator = OperatorGate.from_settings(settings)
    redactor.add(operator.token)
    downloads_dir = ensure_private_dir(data_dir / "downloads")
    return Services(
        operator=operator,
        session_keys=SessionKeys(),
        downloads_dir=downloads_dir,
        retention=RetentionSweeper(
            [exports_dir, downloads_dir, *swept_dirs],
            max_age_seconds=EXPORT_MAX_AGE_SECONDS,
            jobs=[unused_files_sweep(url)],  # files uploaded or left behind, used by no message
        ),
        chat=chat,
        conversations=conversations,
        live=LiveAnswers(conversations, max_unattended_per_owner=settings.max_unattended_answers),
        store=store,
        attachments=attachments,
        catalog=catalog,
        clients=clients,
        redactor=redactor,
        limiter=limiter,
        usage=usage,
        usage_dir=usage_dir,
        exports_dir=exports_dir,
        server_secret=server_secret,
        browser_storage_key=storage_key,
        browser_secret=browser_secret,
        trusted_proxies=effective_trusted_proxies(settings.trusted_proxies, settings.on_space),
        sync=sync,
    )
