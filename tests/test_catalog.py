"""The model catalog as the picker sees it: parsed defensively, labelled, filtered."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlib.catalog import (
    FALLBACK_MODELS,
    ModelFilter,
    ModelInfo,
    filter_models,
    format_context,
    format_price,
    model_choices,
    parse_catalog,
    parse_model,
)
from tests.fakes.openrouter import CATALOG
from ui.models import CONTEXT_CHOICES, PRICE_CHOICES, model_filter


def _live() -> dict[str, ModelInfo]:
    return {m.id: m for m in parse_catalog(orjson.dumps({"data": list(CATALOG)}))}


def test_each_model_carries_what_the_catalog_says_it_can_do() -> None:
    models = _live()
    gpt4o = models["openai/gpt-4o"]
    assert gpt4o.name == "OpenAI: GPT-4o"
    assert gpt4o.context_length == 128_000
    assert (gpt4o.prompt_price_per_m, gpt4o.completion_price_per_m) == (2.5, 10)
    assert gpt4o.vision and not gpt4o.reasoning and not gpt4o.is_free
    assert not gpt4o.image_output
    assert "file" in gpt4o.input_modalities
    assert models["deepseek/deepseek-r1"].reasoning
    assert models["deepseek/deepseek-r1:free"].is_free
    assert models["google/gemini-2.5-flash-image"].image_output
    assert models["google/gemma-3-27b-it:free"].vision
    assert models["google/gemma-3-27b-it:free"].is_free


def test_labels_are_readable_and_name_the_id_prices_per_million_or_free() -> None:
    models = _live()
    assert (
        models["openai/gpt-4o"].label
        == "OpenAI: GPT-4o (openai/gpt-4o) · 128K ctx · $2.50/$10 per M"
    )
    assert models["openai/gpt-4o-mini"].label.endswith("· 128K ctx · $0.15/$0.60 per M")
    assert models["google/gemini-2.5-pro"].label.endswith("· 1M ctx · $1.25/$10 per M")
    assert models["deepseek/deepseek-r1:free"].label.endswith("· 164K ctx · free")


@pytest.mark.parametrize(
    ("tokens", "shown"),
    [(8192, "8K"), (128_000, "128K"), (131_072, "131K"), (1_048_576, "1M"), (2_000_000, "2M")],
)
def test_context_lengths_read_like_people_say_them(tokens: int, shown: str) -> None:
    assert format_context(tokens) == shown


@pytest.mark.parametrize(
    ("per_m", "shown"),
    [(10, "10"), (2.5, "2.50"), (0.15, "0.15"), (0.6, "0.60"), (0.05, "0.05"), (0.075, "0.075")],
)
def test_prices_per_million_are_short(per_m: float, shown: str) -> None:
    assert format_price(per_m) == shown


def test_a_free_variant_is_free_by_its_id_even_without_prices() -> None:
    model = parse_model({"id": "vendor/m:free", "name": "M", "pricing": {}})
    assert model is not None and model.is_free


@pytest.mark.parametrize(
    "entry",
    [
        None,
        "openai/gpt-4o",
        {"name": "no id"},
        {"id": "has space/model"},
        {"id": 42},
    ],
)
def test_an_unusable_entry_is_skipped(entry: Any) -> None:
    assert parse_model(entry) is None


def test_bad_fields_are_dropped_and_the_entry_kept() -> None:
    model = parse_model(
        {
            "id": "vendor/odd",
            "name": ["not", "text"],
            "context_length": True,
            "pricing": {"prompt": "-1", "completion": "nan"},
            "architecture": {"input_modalities": "image", "output_modalities": [1, None]},
            "supported_parameters": {"reasoning": True},
        }
    )
    assert model is not None
    assert model.name == "vendor/odd" and model.context_length is None
    assert model.prompt_price_per_m is None and model.completion_price_per_m is None
    assert model.input_modalities == ("text",) and not model.vision
    assert not model.reasoning and not model.is_free
    assert model.label == "vendor/odd"


def test_a_catalog_with_one_good_entry_among_bad_ones_lists_it() -> None:
    payload = orjson.dumps({"data": [1, None, {"id": "a/b", "context_length": 1000}, []]})
    assert [m.id for m in parse_catalog(payload)] == ["a/b"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
entry_keys = st.sampled_from(
    ["id", "name", "context_length", "pricing", "architecture", "supported_parameters"]
)


@given(st.lists(st.dictionaries(entry_keys, json_values), max_size=8))
def test_any_entries_parse_or_are_skipped_never_crash(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        model = parse_model(entry)
        if model is not None:
            assert model.label and not any(c.isspace() for c in model.id)
            assert model.prompt_price_per_m is None or model.prompt_price_per_m >= 0


def test_the_fallback_list_has_prices_context_and_capabilities() -> None:
    assert all(m.context_length and m.prompt_price_per_m is not None for m in FALLBACK_MODELS)
    assert any(m.vision for m in FALLBACK_MODELS) and any(m.reasoning for m in FALLBACK_MODELS)
    assert any(not m.vision for m in FALLBACK_MODELS)


def test_filters_leave_only_what_was_asked_for() -> None:
    models = list(_live().values())
    vision = filter_models(models, ModelFilter(vision=True))
    assert vision and all(m.vision for m in vision) and len(vision) < len(models)
    free = filter_models(models, ModelFilter(free=True))
    assert {m.id for m in free} >= {"deepseek/deepseek-r1:free", "google/gemma-3-27b-it:free"}
    both = filter_models(models, ModelFilter(free=True, reasoning=True))
    assert [m.id for m in both] == ["deepseek/deepseek-r1:free"]
    long_context = filter_models(models, ModelFilter(min_context=1_000_000))
    assert long_context and all((m.context_length or 0) >= 1_000_000 for m in long_context)
    cheap = filter_models(models, ModelFilter(max_price_per_m=1))
    assert "openai/gpt-4o-mini" in {m.id for m in cheap}
    assert "openai/gpt-4o" not in {m.id for m in cheap}
    assert [m.id for m in filter_models(models, ModelFilter(query="GPT 4o mini"))] == [
        "openai/gpt-4o-mini"
    ]


def test_the_chosen_model_stays_in_the_list_whatever_the_filters() -> None:
    models = list(_live().values())
    choices = model_choices(models, ModelFilter(free=True), ["openai/gpt-4o", "my/custom-id"])
    assert choices[0] == (_live()["openai/gpt-4o"].label, "openai/gpt-4o")
    assert choices[1] == ("my/custom-id", "my/custom-id")
    assert all(_live()[value].is_free for _, value in choices[2:])


def test_the_controls_values_become_a_filter_and_unknown_values_mean_any() -> None:
    assert model_filter(["Vision", "Free"], "128000", "5") == ModelFilter(
        free=True, vision=True, min_context=128_000, max_price_per_m=5.0
    )
    assert model_filter(None, "7", "1e9") == ModelFilter()
    assert [label for label, _ in CONTEXT_CHOICES] == ["any", "8K", "32K", "128K", "1M"]
    assert PRICE_CHOICES[0] == ("any", "any")


def test_an_answer_length_cap_is_read_from_the_top_provider_and_odd_ones_are_ignored() -> None:
    live = _live()
    assert live["evil/model"].max_completion_tokens == 1024
    assert live["deepseek/deepseek-chat-v3.1"].max_completion_tokens is None  # null upstream
    base = {"id": "a/b", "name": "A"}
    for odd in ({"max_completion_tokens": "4096"}, {"max_completion_tokens": -1}, "x", None):
        assert parse_model({**base, "top_provider": odd}) == ModelInfo("a/b", "A")
    assert parse_model({**base, "top_provider": {"max_completion_tokens": True}}) == ModelInfo(
        "a/b", "A"
    )
