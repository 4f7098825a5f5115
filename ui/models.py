"""The model picker: a wide, searchable list of OpenRouter's models with filters under it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import gradio as gr

from chatlib.catalog import ModelCatalog, ModelFilter, filter_models, model_choices
from chatlib.messages import MAX_IDENTIFIER_CHARS
from ui.context import QUICK, STREAMING, PageContext

Updates = dict[Any, Any]
CATALOG_WAIT_ON_LOAD_S = 2.0
FREE, VISION, REASONING = "Free", "Vision", "Reasoning"
# (label, value) pairs; the values come back from the browser and are checked against these.
CONTEXT_CHOICES: list[tuple[str, str]] = [
    ("any", "0"),
    ("8K", "8000"),
    ("32K", "32000"),
    ("128K", "128000"),
    ("1M", "1000000"),
]
PRICE_CHOICES: list[tuple[str, str]] = [
    ("any", "any"),
    ("$0.50", "0.5"),
    ("$1", "1"),
    ("$5", "5"),
    ("$20", "20"),
]


def model_filter(
    flags: Sequence[str] | None, min_context: str | None, max_price: str | None
) -> ModelFilter:
    """The filter the controls describe; unknown values (from a tampered page) mean "any"."""
    chosen = set(flags or ())
    contexts = {value for _, value in CONTEXT_CHOICES}
    prices = {value for _, value in PRICE_CHOICES if value != "any"}
    return ModelFilter(
        free=FREE in chosen,
        vision=VISION in chosen,
        reasoning=REASONING in chosen,
        min_context=int(min_context) if min_context in contexts else 0,
        max_price_per_m=float(max_price) if max_price in prices else None,
    )


def catalog_status(catalog: ModelCatalog, wanted: ModelFilter) -> str:
    """One line under the picker: live list or built-in fallback, and how many pass."""
    total = len(catalog.models)
    matching = len(filter_models(catalog.models, wanted))
    if catalog.is_live:
        line = f"✓ {total} models from OpenRouter"
    else:
        line = "⚠ The live model list is offline; showing a built-in list"
    if wanted != ModelFilter():
        line += f"; {matching} match the filters" if matching else "; none matches the filters"
    return line + ". You can also type any model id."


class ModelPicker:
    """The Model dropdown (full column width), its filters, and the catalog's status line."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        default = ctx.settings.default_model
        catalog = ctx.services.catalog
        with gr.Column(elem_id="model-panel"):
            self.dropdown = gr.Dropdown(
                choices=model_choices(catalog.models, ModelFilter(), [default]),
                value=default,
                label="Model",
                info="Type to search names and ids; any OpenRouter model id works.",
                allow_custom_value=True,
                filterable=True,
                elem_id="model-picker",
            )
            with gr.Row(elem_id="model-filters", equal_height=True):
                self.flags = gr.CheckboxGroup(
                    [FREE, VISION, REASONING],
                    value=[],
                    label="Only",
                    container=False,
                    elem_id="model-flags",
                    min_width=200,
                )
                self.min_context = gr.Dropdown(
                    CONTEXT_CHOICES,
                    value="0",
                    label="Context ≥",
                    filterable=False,
                    min_width=90,
                    elem_id="model-min-context",
                )
                self.max_price = gr.Dropdown(
                    PRICE_CHOICES,
                    value="any",
                    label="Price ≤ $/M",
                    info=None,
                    filterable=False,
                    min_width=90,
                    elem_id="model-max-price",
                )
            self.status = gr.Markdown(
                catalog_status(catalog, ModelFilter()), elem_id="catalog-status"
            )

    @property
    def inputs(self) -> list[Any]:
        """The filters, then the chosen model (it stays in the list whatever the filters)."""
        return [self.flags, self.min_context, self.max_price, self.dropdown]

    @property
    def outputs(self) -> list[Any]:
        return [self.dropdown, self.status]

    def takes_reasoning(self, model_id: str | None) -> bool:
        """Whether the catalog says this model can think (a custom id not in it: no)."""
        wanted = model_id.strip() if isinstance(model_id, str) else ""
        return any(m.id == wanted and m.reasoning for m in self.ctx.services.catalog.models)

    def shown(
        self,
        flags: Sequence[str] | None,
        min_context: str | None,
        max_price: str | None,
        chosen: str | None,
    ) -> Updates:
        """The list for these filters, the chosen model first if they leave it out."""
        catalog = self.ctx.services.catalog
        wanted = model_filter(flags, min_context, max_price)
        keep = [chosen] if isinstance(chosen, str) and len(chosen) <= MAX_IDENTIFIER_CHARS else []
        return {
            self.dropdown: gr.update(choices=model_choices(catalog.models, wanted, keep)),
            self.status: catalog_status(catalog, wanted),
        }

    async def load(
        self,
        flags: Sequence[str] | None,
        min_context: str | None,
        max_price: str | None,
        chosen: str | None,
    ) -> Updates:
        """A page opens: refresh a stale catalog (waiting briefly for it), then list it."""
        catalog = self.ctx.services.catalog
        catalog.refresh_in_background()
        task = catalog.pending_refresh
        if task is not None:
            await asyncio.wait({task}, timeout=CATALOG_WAIT_ON_LOAD_S)
        return self.shown(flags, min_context, max_price, chosen)

    def wire(self, demo: gr.Blocks) -> None:
        """Filters re-list the models at once; the page's load lists the fresh catalog."""
        gr.on(
            [self.flags.input, self.min_context.input, self.max_price.input],
            self.shown,
            inputs=self.inputs,
            outputs=self.outputs,
            **QUICK,
        )
        demo.load(self.load, inputs=self.inputs, outputs=self.outputs, **STREAMING)
