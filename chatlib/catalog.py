"""The model catalog: fetched live from OpenRouter, cached, with a curated fallback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog

from chatlib.client import Clock

log = structlog.get_logger(__name__)

MAX_CATALOG_BYTES = 8 * 1024 * 1024
MAX_MODELS = 5000
_MAX_FIELD = 200


@dataclass(frozen=True)
class ModelInfo:
    """One model as the picker shows it."""

    id: str
    name: str
    context_length: int | None = None
    prompt_price_per_m: float | None = None
    completion_price_per_m: float | None = None

    @property
    def is_free(self) -> bool:
        """True when both input and output are priced at zero."""
        return self.prompt_price_per_m == 0 and self.completion_price_per_m == 0

    @property
    def label(self) -> str:
        """Name, context length and price, as one line of plain text."""
        parts = [f"{self.name} ({self.id})" if self.name != self.id else self.id]
        if self.context_length:
            parts.append(_format_context(self.context_length))
        if self.is_free:
            parts.append("free")
        elif self.prompt_price_per_m is not None and self.completion_price_per_m is not None:
            parts.append(
                f"${_format_price(self.prompt_price_per_m)} in / "
                f"${_format_price(self.completion_price_per_m)} out per 1M"
            )
        return " · ".join(parts)


def _format_context(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:g}M ctx"
    return f"{round(tokens / 1000):g}K ctx"


def _format_price(per_m: float) -> str:
    return f"{per_m:.2f}" if per_m >= 0.1 else f"{per_m:.3f}".rstrip("0").rstrip(".")


# Shown when the live catalog cannot be fetched; prices are indicative only.
FALLBACK_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("openai/gpt-4o", "OpenAI: GPT-4o", 128_000),
    ModelInfo("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", 128_000),
    ModelInfo("anthropic/claude-sonnet-4.5", "Anthropic: Claude Sonnet 4.5", 1_000_000),
    ModelInfo("anthropic/claude-3.5-haiku", "Anthropic: Claude 3.5 Haiku", 200_000),
    ModelInfo("google/gemini-2.5-flash", "Google: Gemini 2.5 Flash", 1_048_576),
    ModelInfo("google/gemini-2.5-pro", "Google: Gemini 2.5 Pro", 1_048_576),
    ModelInfo("meta-llama/llama-3.3-70b-instruct", "Meta: Llama 3.3 70B Instruct", 131_072),
    ModelInfo("deepseek/deepseek-r1", "DeepSeek: R1", 163_840),
    ModelInfo("mistralai/mistral-small-3.2-24b-instruct", "Mistral: Small 3.2 24B", 131_072),
    ModelInfo("qwen/qwen3-235b-a22b", "Qwen: Qwen3 235B A22B", 131_072),
)


def _clean_text(value: Any, limit: int = _MAX_FIELD) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable()).strip()
    return cleaned[:limit] or None


def _price_per_m(pricing: Any, key: str) -> float | None:
    if not isinstance(pricing, dict):
        return None
    raw = pricing.get(key)
    try:
        value = float(raw) if isinstance(raw, str | int | float) else None
    except ValueError:
        return None
    if value is None or value < 0 or value != value:
        return None
    return value * 1_000_000


def parse_catalog(payload: bytes) -> tuple[ModelInfo, ...]:
    """Parse `/models` JSON into ModelInfo, skipping malformed entries.

    Raises ValueError when the payload is not a catalog at all.
    """
    document = orjson.loads(payload)
    items = document.get("data") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ValueError("catalog has no 'data' list")
    models: dict[str, ModelInfo] = {}
    for item in items[:MAX_MODELS]:
        if not isinstance(item, dict):
            continue
        model_id = _clean_text(item.get("id"))
        if model_id is None or any(c.isspace() for c in model_id):
            continue
        context = item.get("context_length")
        models[model_id] = ModelInfo(
            id=model_id,
            name=_clean_text(item.get("name")) or model_id,
            context_length=context if isinstance(context, int) and context > 0 else None,
            prompt_price_per_m=_price_per_m(item.get("pricing"), "prompt"),
            completion_price_per_m=_price_per_m(item.get("pricing"), "completion"),
        )
    if not models:
        raise ValueError("catalog lists no usable model")
    return tuple(sorted(models.values(), key=lambda m: m.name.lower()))


def http_catalog_fetcher(
    base_url: str,
    timeout: float,
    *,
    max_bytes: int = MAX_CATALOG_BYTES,
    headers: Mapping[str, str] | None = None,
) -> Callable[[], Awaitable[bytes]]:
    """A fetch function for ModelCatalog that GETs `{base_url}/models` with a size cap.

    `headers` go with every fetch (the app's attribution: `client.attribution_headers`).
    """

    async def fetch() -> bytes:
        async with (
            httpx.AsyncClient(timeout=timeout, headers=headers) as http,
            http.stream("GET", f"{base_url}/models") as response,
        ):
            response.raise_for_status()
            body = bytearray()
            async for piece in response.aiter_bytes():
                body.extend(piece)
                if len(body) > max_bytes:
                    raise ValueError(f"catalog larger than {max_bytes} bytes")
            return bytes(body)

    return fetch


class ModelCatalog:
    """Cached model list; refreshed in the background, never blocking the page."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[bytes]],
        *,
        ttl_seconds: float,
        timeout_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._models: tuple[ModelInfo, ...] = FALLBACK_MODELS
        self._live = False
        self._fetched_at: float | None = None
        self._task: asyncio.Task[bool] | None = None

    @property
    def models(self) -> tuple[ModelInfo, ...]:
        """The current list (live, or the fallback)."""
        return self._models

    @property
    def is_live(self) -> bool:
        """False while the fallback list is in use."""
        return self._live

    def choices(self, extra_ids: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(label, id) pairs for the picker; `extra_ids` (e.g. custom ids) are kept."""
        pairs = [(m.label, m.id) for m in self._models]
        known = {m.id for m in self._models}
        pairs.extend((model_id, model_id) for model_id in extra_ids if model_id not in known)
        return pairs

    def is_stale(self) -> bool:
        """True when the cache is older than its TTL (or the fallback is in use)."""
        if self._fetched_at is None:
            return True
        # While on the fallback list, try again every minute rather than every TTL.
        max_age = self._ttl if self._live else min(self._ttl, 60.0)
        return self._clock() - self._fetched_at >= max_age

    async def refresh(self) -> bool:
        """Fetch the catalog now; on any failure keep what we have. Returns success."""
        try:
            async with asyncio.timeout(self._timeout):
                payload = await self._fetch()
            models = parse_catalog(payload)
        except Exception as exc:  # noqa: BLE001 - any failure means "use the fallback"
            log.warning("catalog.fetch_failed", error=type(exc).__name__)
            if not self._live:
                self._fetched_at = self._clock()
            return False
        self._models, self._live, self._fetched_at = models, True, self._clock()
        log.info("catalog.fetched", models=len(models))
        return True

    def refresh_in_background(self) -> None:
        """Start a refresh unless one is running or the cache is fresh."""
        if self._task is not None and not self._task.done():
            return
        if not self.is_stale():
            return
        self._task = asyncio.get_running_loop().create_task(self.refresh())

    @property
    def pending_refresh(self) -> asyncio.Task[bool] | None:
        """The background refresh still running, if any."""
        return self._task if self._task is not None and not self._task.done() else None

    def prefetch_in_thread(self) -> threading.Thread:
        """Fetch once on a daemon thread, so startup never waits for the network."""
        thread = threading.Thread(
            target=lambda: asyncio.run(self.refresh()), name="catalog-prefetch", daemon=True
        )
        thread.start()
        return thread

    async def aclose(self) -> None:
        """Cancel a running refresh."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
