"""The Usage tab: the visitor's own usage, and the whole app's for the operator."""

from __future__ import annotations

import html
import secrets
from datetime import UTC, datetime
from typing import Any

import gradio as gr
import pandas as pd

from chatlib.hub_sync import SyncStatus
from chatlib.retention import ensure_private_dir
from chatlib.usage import UsageSummary, summarize, summarize_usage_sql, usage_csv_from_table
from chatlib.visitors import is_operator
from ui.context import QUICK, PageContext
from ui.errors import shown_as_toast

Updates = dict[Any, Any]
LATENCY_BUCKETS: list[str] = [
    str(row["bucket"]) for row in summarize([]).as_rows_histogram() if row["metric"] == "latency_ms"
]


class UsagePlots:
    """A totals line plus four plots: cost per day, tokens per day, cost per model, latency."""

    def __init__(self, scope: str) -> None:
        self.totals = gr.Markdown(elem_id=f"usage-totals-{scope}")
        # Two plots side by side on a desktop; one under the other below ~700 px.
        plot: dict[str, Any] = {"height": 240, "y_lim": [0, None], "min_width": 340}
        with gr.Row():
            self.cost_by_day = gr.BarPlot(
                x="date", y="cost_usd", title="Cost per day (USD)", **plot
            )
            self.tokens_by_day = gr.BarPlot(x="date", y="tokens", title="Tokens per day", **plot)
        with gr.Row():
            self.by_model = gr.BarPlot(
                x="model",
                y="cost_usd",
                title="Cost per model (USD)",
                sort="-y",
                x_label_angle=-40,
                **plot,
            )
            self.latency = gr.BarPlot(
                x="bucket",
                y="requests",
                title="Answer time (latency)",
                sort=LATENCY_BUCKETS,
                x_label_angle=-40,
                **plot,
            )

    @property
    def outputs(self) -> list[Any]:
        return [self.totals, self.cost_by_day, self.tokens_by_day, self.by_model, self.latency]

    def show(self, summary: UsageSummary, title: str) -> Updates:
        """Every plot and the totals line for `summary`."""
        by_day = summary.as_rows_by_day()
        histogram = [r for r in summary.as_rows_histogram() if r["metric"] == "latency_ms"]
        return {
            self.totals: totals_line(summary, title),
            self.cost_by_day: pd.DataFrame(by_day, columns=["date", "cost_usd", "tokens"]),
            self.tokens_by_day: pd.DataFrame(by_day, columns=["date", "cost_usd", "tokens"]),
            self.by_model: pd.DataFrame(
                summary.as_rows_by_model(), columns=["model", "cost_usd", "requests"]
            ),
            self.latency: pd.DataFrame(histogram, columns=["bucket", "requests"]),
        }


def totals_line(summary: UsageSummary, title: str) -> str:
    """'**Your usage:** 3 requests · $0.0012 · 120 prompt + 300 completion tokens · …'."""
    totals = summary.totals
    line = (
        f"**{title}:** {totals.requests} request{'' if totals.requests == 1 else 's'} · "
        f"${totals.cost_usd:.4f} · "
        f"{totals.prompt_tokens:,} prompt + {totals.completion_tokens:,} completion tokens"
    )
    if summary.latency_ms.p50 is not None:
        line += f" · median answer {summary.latency_ms.p50 / 1000:.2f} s"
    if summary.ttft_ms.p50 is not None:
        line += f" · median TTFT {summary.ttft_ms.p50 / 1000:.2f} s"
    return line


def sync_line(status: SyncStatus) -> str:
    """One line about the dataset sync for the operator."""
    if not status.enabled:
        return "Dataset sync is off (set HF_DATASET_REPO and HF_TOKEN to keep data on the Hub)."

    def when(at: float | None) -> str:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "never"

    line = f"Dataset sync: last success {when(status.last_success_at)}."
    if status.last_error:
        line += f" ⚠ Last error: {html.escape(status.last_error)}"
    if status.pending:
        line += " Changes waiting to be pushed."
    return line


class UsagePanel:
    """The tab's content; filled in each time the tab is opened."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        gr.Markdown("### Your usage")
        self.mine = UsagePlots("mine")
        with gr.Group(visible=False, elem_id="admin-usage") as self.admin_group:
            gr.Markdown("### Whole app (operator view)")
            self.sync_status = gr.Markdown(elem_id="sync-status")
            self.everyone = UsagePlots("all")
            self.csv_download = gr.File(
                label="Usage CSV files", file_count="multiple", interactive=False
            )

    async def show(
        self,
        browser_value: Any,
        operator_ok: bool,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        ctx = self.ctx
        visitor = ctx.visitor(browser_value, profile, request)
        is_admin = is_operator(
            user_name=visitor.user_name,
            admin_user_names=ctx.settings.admin_user_names,
            token_ok=operator_ok is True,
        )
        engine = ctx.services.store.engine
        updates = self.mine.show(
            await summarize_usage_sql(engine, owner=visitor.owner_key), "Your usage"
        )
        if not is_admin:
            return {**updates, self.admin_group: gr.update(visible=False)}
        # One CSV of every replica's rows, in a private download folder (swept after an hour).
        folder = ensure_private_dir(ctx.services.downloads_dir / secrets.token_hex(8))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        csv_file = await usage_csv_from_table(engine, folder / f"usage-{stamp}.csv")
        return {
            **updates,
            **self.everyone.show(await summarize_usage_sql(engine), "Whole app"),
            self.admin_group: gr.update(visible=True),
            self.sync_status: sync_line(ctx.services.sync_status),
            self.csv_download: gr.update(value=[str(csv_file)]),
        }

    def wire(self, tab: gr.Tab) -> None:
        tab.select(
            shown_as_toast(self.show),
            inputs=[self.ctx.browser_state, self.ctx.operator_ok],
            outputs=[
                *self.mine.outputs,
                self.admin_group,
                self.sync_status,
                *self.everyone.outputs,
                self.csv_download,
            ],
            **QUICK,
        )
