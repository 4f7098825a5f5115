"""The Usage tab: the visitor's own usage, and the whole app's for the operator."""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
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
NO_USAGE_YET = "No usage yet — send a message and it will show here."
# Column names are what the charts show (axis titles and tooltips), so they are human words.
DAY, MODEL, COST, TOKENS, REQUESTS = "Day (UTC)", "Model", "Cost (USD)", "Tokens", "Requests"
ANSWER_TIME, FIRST_TOKEN = "Answer time", "Time to first token"
TIME_BUCKETS: list[str] = [
    str(row["bucket"]) for row in summarize([]).as_rows_histogram() if row["metric"] == "latency_ms"
]


@dataclass(frozen=True)
class Chart:
    """One plot: its data columns, title and axis titles (units in the titles or ticks)."""

    x: str
    y: str
    title: str
    x_title: str
    y_title: str


CHARTS: dict[str, Chart] = {
    "cost_by_day": Chart(DAY, COST, "Cost per day", "Day (UTC)", "Cost (USD)"),
    "tokens_by_day": Chart(DAY, TOKENS, "Tokens per day", "Day (UTC)", "Tokens"),
    "cost_by_model": Chart(MODEL, COST, "Cost per model", "Model", "Cost (USD)"),
    # The buckets' own labels carry their unit ("250-500 ms", "1-2 s").
    "latency": Chart(ANSWER_TIME, REQUESTS, "Answer time", "Whole answer (ms / s)", "Requests"),
    "ttft": Chart(
        FIRST_TOKEN, REQUESTS, "Time to first token", "Time to first token (ms / s)", "Requests"
    ),
}


def chart_frames(summary: UsageSummary) -> dict[str, pd.DataFrame]:
    """Each chart's table, with the human column names the chart shows."""
    by_day = [
        {DAY: r["date"], COST: r["cost_usd"], TOKENS: r["tokens"]} for r in summary.as_rows_by_day()
    ]
    by_model = [
        {MODEL: r["model"], COST: r["cost_usd"], REQUESTS: r["requests"]}
        for r in summary.as_rows_by_model()
    ]
    histogram = summary.as_rows_histogram()

    def times(metric: str, column: str) -> pd.DataFrame:
        picked = [r for r in histogram if r["metric"] == metric]
        rows = [{column: r["bucket"], REQUESTS: r["requests"]} for r in picked]
        return pd.DataFrame(rows, columns=[column, REQUESTS])

    return {
        "cost_by_day": pd.DataFrame(by_day, columns=[DAY, COST, TOKENS]),
        "tokens_by_day": pd.DataFrame(by_day, columns=[DAY, COST, TOKENS]),
        "cost_by_model": pd.DataFrame(by_model, columns=[MODEL, COST, REQUESTS]),
        "latency": times("latency_ms", ANSWER_TIME),
        "ttft": times("ttft_ms", FIRST_TOKEN),
    }


def _plot(name: str, **extra: Any) -> gr.BarPlot:
    chart = CHARTS[name]
    return gr.BarPlot(
        x=chart.x,
        y=chart.y,
        title=chart.title,
        x_title=chart.x_title,
        y_title=chart.y_title,
        height=240,
        y_lim=[0, None],
        min_width=340,  # two side by side on a desktop; one under the other below ~700 px
        **extra,
    )


class UsagePlots:
    """A totals line and five plots, or one line saying there is no usage yet."""

    def __init__(self, scope: str) -> None:
        self.totals = gr.Markdown(elem_id=f"usage-totals-{scope}")
        self.empty = gr.Markdown(NO_USAGE_YET, visible=False, elem_id=f"usage-empty-{scope}")
        with gr.Column(visible=False, elem_id=f"usage-charts-{scope}") as self.charts:
            with gr.Row():
                self.cost_by_day = _plot("cost_by_day")
                self.tokens_by_day = _plot("tokens_by_day")
            with gr.Row():
                self.by_model = _plot("cost_by_model", sort="-y", x_label_angle=-40)
                self.latency = _plot("latency", sort=TIME_BUCKETS, x_label_angle=-40)
            with gr.Row():
                self.ttft = _plot("ttft", sort=TIME_BUCKETS, x_label_angle=-40)

    @property
    def plots(self) -> dict[str, gr.BarPlot]:
        return {
            "cost_by_day": self.cost_by_day,
            "tokens_by_day": self.tokens_by_day,
            "cost_by_model": self.by_model,
            "latency": self.latency,
            "ttft": self.ttft,
        }

    @property
    def outputs(self) -> list[Any]:
        return [self.totals, self.empty, self.charts, *self.plots.values()]

    def show(self, summary: UsageSummary, title: str) -> Updates:
        """The totals line and every plot for `summary`; the empty note when it has none."""
        if summary.totals.requests == 0:
            return {
                self.totals: gr.update(value="", visible=False),
                self.empty: gr.update(visible=True),
                self.charts: gr.update(visible=False),
            }
        frames = chart_frames(summary)
        return {
            self.totals: gr.update(value=totals_line(summary, title), visible=True),
            self.empty: gr.update(visible=False),
            self.charts: gr.update(visible=True),
            **{plot: frames[name] for name, plot in self.plots.items()},
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
