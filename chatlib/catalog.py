"""The model catalog: fetched live from OpenRouter, cached, with a curated fallback."""

from __future__ import annotations

import asyncio
import contextlib
import math
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
_MAX_NAME = 40  # a modality or parameter name
_MAX_NAMES = 64
_MAX_PRICE_PER_TOKEN = 1.0  # USD; anything above is a mistake, not a price


@dataclass(frozen=True)
class ModelInfo:
    """One model as the picker shows it, with what the catalog says it can do."""

    id: str
    name: str
    context_length: int | None = None
    prompt_price_per_m: float | None = None  # USD per million input tokens
    completion_price_per_m: float | None = None  # USD per million output tokens
    input_modalities: tuple[str, ...] = ("text",)
    output_modalities: tuple[str, ...] = ("text",)
    supported_parameters: tuple[str, ...] = ()
    max_completion_tokens: int | None = None  # the top provider's cap on an answer's length

    @property
    def is_free(self) -> bool:
        """Both prices are zero, or the id is a `:free` variant."""
        both_zero = self.prompt_price_per_m == 0 and self.completion_price_per_m == 0
        return both_zero or self.id.endswith(":free")

    @property
    def vision(self) -> bool:
        """It reads images."""
        return "image" in self.input_modalities

    @property
    def reasoning(self) -> bool:
        """It can think before answering (takes the `reasoning` parameter)."""
        return "reasoning" in self.supported_parameters

    @property
    def image_output(self) -> bool:
        """It can draw images."""
        return "image" in self.output_modalities

    @property
    def label(self) -> str:
        """'OpenAI: GPT-4o (openai/gpt-4o) · 128K ctx · $2.50/$10 per M', as plain text.

        The id is in the label because the picker's own search matches labels only.
        """
        parts = [f"{self.name} ({self.id})" if self.name != self.id else self.id]
        if self.context_length:
            parts.append(f"{format_context(self.context_length)} ctx")
        if self.is_free:
            parts.append("free")
        elif self.prompt_price_per_m is not None and self.completion_price_per_m is not None:
            parts.append(
                f"${format_price(self.prompt_price_per_m)}/"
                f"${format_price(self.completion_price_per_m)} per M"
            )
        return " · ".join(parts)


def format_context(tokens: int) -> str:
    """128000 -> '128K', 1048576 -> '1M', 2000000 -> '2M'."""
    if tokens >= 1_000_000:
        return f"{round(tokens / 1_000_000, 1):g}M"
    if tokens >= 1000:
        return f"{round(tokens / 1000):g}K"
    return str(tokens)


def format_price(per_m: float) -> str:
    """USD per million tokens: '10', '2.50', '0.15', '0.075'."""
    if per_m >= 1 and abs(per_m - round(per_m)) < 1e-9:
        return f"{round(per_m)}"
    if per_m >= 0.1:
        return f"{per_m:.2f}"
    return f"{per_m:.3g}"


def _fallback(
    model_id: str,
    name: str,
    context: int,
    prices: tuple[float, float],
    *,
    vision: bool = False,
    reasoning: bool = False,
) -> ModelInfo:
    return ModelInfo(
        model_id,
        name,
        context,
        prompt_price_per_m=prices[0],
        completion_price_per_m=prices[1],
        input_modalities=("text", "image") if vision else ("text",),
        supported_parameters=("temperature", "reasoning") if reasoning else ("temperature",),
    )


# Shown when the live catalog cannot be fetched; prices (USD per million tokens) are indicative.
FALLBACK_MODELS: tuple[ModelInfo, ...] = (
    _fallback("openai/gpt-4o", "OpenAI: GPT-4o", 128_000, (2.5, 10), vision=True),
    _fallback("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", 128_000, (0.15, 0.6), vision=True),
    _fallback(
        "anthropic/claude-sonnet-4.5",
        "Anthropic: Claude Sonnet 4.5",
        1_000_000,
        (3, 15),
        vision=True,
        reasoning=True,
    ),
    _fallback(
        "anthropic/claude-3.5-haiku", "Anthropic: Claude 3.5 Haiku", 200_000, (0.8, 4), vision=True
    ),
    _fallback(
        "google/gemini-2.5-flash",
        "Google: Gemini 2.5 Flash",
        1_048_576,
        (0.3, 2.5),
        vision=True,
        reasoning=True,
    ),
    _fallback(
        "google/gemini-2.5-pro",
        "Google: Gemini 2.5 Pro",
        1_048_576,
        (1.25, 10),
        vision=True,
        reasoning=True,
    ),
    _fallback(
        "meta-llama/llama-3.3-70b-instruct", "Meta: Llama 3.3 70B Instruct", 131_072, (0.13, 0.4)
    ),
    _fallback("deepseek/deepseek-r1", "DeepSeek: R1", 163_840, (0.4, 2), reasoning=True),
    _fallback(
        "mistralai/mistral-small-3.2-24b-instruct",
        "Mistral: Small 3.2 24B",
        131_072,
        (0.05, 0.1),
        vision=True,
    ),
    _fallback(
        "qwen/qwen3-235b-a22b", "Qwen: Qwen3 235B A22B", 131_072, (0.13, 0.6), reasoning=True
    ),
)


def _clean_text(value: Any, limit: int = _MAX_FIELD) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = "".join(c for c in value if c.isprintable()).strip()
    return cleaned[:limit] or None


def _price_per_m(pricing: Any, key: str) -> float | None:
    """USD per million tokens from a per-token price string; None if absent or nonsense.

    (OpenRouter marks variable pricing, e.g. its auto router, with "-1": unknown here.)
    """
    if not isinstance(pricing, dict):
        return None
    raw = pricing.get(key)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or value > _MAX_PRICE_PER_TOKEN:
        return None
    return round(value * 1_000_000, 6)


def _names(value: Any, limit: int = _MAX_NAMES) -> tuple[str, ...]:
    """A list of short names (modalities, parameters); anything else is dropped."""
    if not isinstance(value, list):
        return ()
    names = (_clean_text(v, _MAX_NAME) for v in value[:limit])
    return tuple(dict.fromkeys(n.lower() for n in names if n))


def parse_model(item: Any) -> ModelInfo | None:
    """One `/models` entry, or None when it is unusable (no id, an id with spaces)."""
    if not isinstance(item, dict):
        return None
    model_id = _clean_text(item.get("id"))
    if model_id is None or any(c.isspace() for c in model_id):
        return None
    context = item.get("context_length")
    architecture = item.get("architecture")
    if not isinstance(architecture, dict):
        architecture = {}
    inputs = _names(architecture.get("input_modalities")) or ("text",)
    outputs = _names(architecture.get("output_modalities")) or ("text",)
    valid_context = isinstance(context, int) and not isinstance(context, bool) and context > 0
    top_provider = item.get("top_provider")
    cap = top_provider.get("max_completion_tokens") if isinstance(top_provider, dict) else None
    valid_cap = isinstance(cap, int) and not isinstance(cap, bool) and cap > 0
    return ModelInfo(
        id=model_id,
        name=_clean_text(item.get("name")) or model_id,
        context_length=context if valid_context else None,
        prompt_price_per_m=_price_per_m(item.get("pricing"), "prompt"),
        completion_price_per_m=_price_per_m(item.get("pricing"), "completion"),
        input_modalities=inputs,
        output_modalities=outputs,
        supported_parameters=_names(item.get("supported_parameters")),
        max_completion_tokens=cap if valid_cap else None,
    )


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
        model = parse_model(item)
        if model is not None:
            models[model.id] = model
    if not models:
        raise ValueError("catalog lists no usable model")
    return tuple(sorted(models.values(), key=lambda m: m.name.lower()))


# -- filtering, for the picker ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelFilter:
    """What a visitor asked the picker for; the defaults let every model through."""

    free: bool = False
    vision: bool = False
    reasoning: bool = False
    min_context: int = 0
    max_price_per_m: float | None = None  # both input and output at most this
    query: str = ""

    def accepts(self, model: ModelInfo) -> bool:
        """True when `model` passes every filter that is set."""
        if (self.free and not model.is_free) or (self.vision and not model.vision):
            return False
        if self.reasoning and not model.reasoning:
            return False
        if self.min_context and (model.context_length or 0) < self.min_context:
            return False
        if self.max_price_per_m is not None and not _within_price(model, self.max_price_per_m):
            return False
        words = self.query.lower().split()
        haystack = f"{model.id} {model.name}".lower()
        return all(word in haystack for word in words)


def _within_price(model: ModelInfo, max_per_m: float) -> bool:
    if model.is_free:
        return True
    prices = (model.prompt_price_per_m, model.completion_price_per_m)
    return all(p is not None and p <= max_per_m for p in prices)


def filter_models(models: Sequence[ModelInfo], wanted: ModelFilter) -> list[ModelInfo]:
    """The models that pass `wanted`, in the order given."""
    return [m for m in models if wanted.accepts(m)]


def model_choices(
    models: Sequence[ModelInfo], wanted: ModelFilter, keep: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(label, id) pairs of the models passing `wanted`; the ids in `keep` always stay.

    `keep` is the chosen model and the default: filtered out, or a custom id that is in no
    catalog, they still show (first) so the current choice is never lost.
    """
    shown = filter_models(models, wanted)
    shown_ids = {m.id for m in shown}
    by_id = {m.id: m for m in models}
    kept: list[tuple[str, str]] = []
    for model_id in dict.fromkeys(i for i in keep if i and i not in shown_ids):
        known = by_id.get(model_id)
        kept.append((known.label if known else model_id, model_id))
    return kept + [(m.label, m.id) for m in shown]


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
