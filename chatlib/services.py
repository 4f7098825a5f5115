"""The long-lived objects the UI needs, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from chatlib.catalog import ModelCatalog, http_catalog_fetcher
from chatlib.chat import ChatService
from chatlib.client import ClientPool
from chatlib.config import Settings
from chatlib.frames import FrameBudget
from chatlib.logging import SecretRedactor


@dataclass(frozen=True)
class Services:
    """Handles shared by every visitor's session."""

    chat: ChatService
    catalog: ModelCatalog
    clients: ClientPool
    redactor: SecretRedactor

    async def aclose(self) -> None:
        """Release network resources."""
        await self.catalog.aclose()
        await self.clients.aclose()


def create_services(settings: Settings, redactor: SecretRedactor | None = None) -> Services:
    """Wire the default implementations together."""
    clients = ClientPool(settings)
    budget = FrameBudget(
        updates_per_second=settings.ui_updates_per_second,
        min_interval_s=settings.ui_frame_interval_ms / 1000,
    )
    catalog = ModelCatalog(
        http_catalog_fetcher(settings.openrouter_base_url, settings.catalog_timeout_seconds),
        ttl_seconds=settings.catalog_refresh_seconds,
        timeout_seconds=settings.catalog_timeout_seconds,
    )
    return Services(
        chat=ChatService(settings, clients, budget),
        catalog=catalog,
        clients=clients,
        redactor=redactor or SecretRedactor([settings.openrouter_api_key or ""]),
    )
