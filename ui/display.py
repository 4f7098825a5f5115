"""How stored messages look in the chat component."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from chatlib.messages import ChatMessage, format_answer_footer

UNANSWERED = (
    "> ⚠️ No answer was saved for this question: the server stopped while answering. "
    "Retry to ask again.\n\n<sub>interrupted</sub>"
)


def to_display(history: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages in the chat component's format (role/content/metadata dicts).

    Reasoning becomes a collapsible "Thinking" message before its answer; the stats line
    and any error sit under the answer. Raw HTML typed by anyone is escaped by the component
    (sanitize_html); the only markup we add is our own footer.
    """
    shown: list[dict[str, Any]] = []
    for message in history:
        if message.role == "system":
            continue
        if message.role == "user":
            shown.append({"role": "user", "content": message.content})
            continue
        meta = message.meta
        streaming = meta is not None and meta.status == "streaming"
        if message.reasoning:
            thinking_meta: dict[str, Any] = {"title": "Thinking"}
            thinking_meta["status"] = "pending" if streaming and not message.content else "done"
            shown.append(
                {"role": "assistant", "content": message.reasoning, "metadata": thinking_meta}
            )
        body = message.content
        if streaming and not body and not message.reasoning:
            body = "…"
        if meta is not None and not streaming:
            if meta.error:
                body += f"\n\n> ⚠️ {meta.error}"
            body += f"\n\n<sub>{html.escape(format_answer_footer(meta))}</sub>"
        shown.append({"role": "assistant", "content": body})
    if history and history[-1].role == "user":
        # Saved without its answer: the server stopped mid-answer (a crash, a replica gone).
        shown.append({"role": "assistant", "content": UNANSWERED})
    return shown
