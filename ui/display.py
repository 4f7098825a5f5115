"""How stored messages look in the chat component."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

from chatlib.attachments import AttachmentRef, human_bytes
from chatlib.branches import versions_of
from chatlib.messages import ChatMessage, format_answer_footer
from chatlib.sources import Source
from chatlib.storage import Conversation

# Starts every footer we add under an answer: the page's copy button leaves the footer out
# (static/chat.js), and nothing a model writes is mistaken for it.
FOOTER_MARK = "\u2063"
UNANSWERED = (
    "> ⚠️ No answer was saved for this question: the server stopped while answering. "
    "Retry to ask again."
)
# Shown until the first token: three dots that pulse (see static/chat.css).
TYPING = (
    '<span class="typing-indicator" role="status" aria-label="Waiting for the answer">'
    "<span>•</span><span>•</span><span>•</span></span>"
)
Versions = Sequence[tuple[int, int]]  # per message: (this version, how many), 1-based
# A private, expiring URL for one of the viewer's files (built per request by the chat panel).
Link = Callable[[AttachmentRef], str]
# Starts the line of a message's files, so an edited question can leave it out.
ATTACHMENTS_MARK = "\u2064"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")
# Characters of untrusted text (a source's title or address) written as numeric entities:
# HTML, Markdown and the LaTeX delimiters then all read them as plain text.
_INERT = re.compile(r"[^\w\s]|_")
# Kept out of a link's address as percent escapes: quotes, angle brackets and the LaTeX
# delimiters would otherwise end the attribute or be rendered as formulas.
_URL_ESCAPES = {c: f"%{ord(c):02X}" for c in "\"'<>`\\$ "}
# Starts the sources list under an answer (static/chat.js leaves it out of a copy).
SOURCES_MARK = "\u2062"
# The other-model retry link in an answer's footer (see static/chat.js).
OTHER_MODEL = "↻ Other model"
# Between the footer's parts: a line may break after the dot, never inside "answer ‹ 2/3 ›"
# or before a dot (a narrow bubble would strand "‹" or "·" at a line's end).
NBSP = "\u00a0"
FOOTER_SEPARATOR = f"{NBSP}· "


def conversation_display(
    conversation: Conversation, link: Link | None = None
) -> list[dict[str, Any]]:
    """A conversation's active branch, with "‹ 2/3 ›" where there are other versions."""
    return to_display(conversation.messages, versions_of(conversation), link)


def to_display(
    history: Sequence[ChatMessage], versions: Versions | None = None, link: Link | None = None
) -> list[dict[str, Any]]:
    """Messages in the chat component's format (role/content/metadata dicts).

    Reasoning becomes a "Thinking" block before its answer, open while it streams; the
    web sources it cites are listed under it; the footer line (model, cost, speed,
    "‹ 2/3 ›" where a question or an answer has other versions and, for a stored chat
    (`versions` given), "↻ Other model") sits under the answer. Raw HTML typed by anyone
    is escaped by the component (sanitize_html); the only markup we add is our own, and
    text from the web inside it is inert (`inert_text`).
    """
    shown: list[dict[str, Any]] = []
    question_versions = ""
    questions = 0
    for index, message in enumerate(history):
        arrows = _arrows(index, versions)
        if message.role == "system":
            continue
        if message.role == "user":
            content = message.content + attachments_markdown(message.attachments, link)
            shown.append({"role": "user", "content": content})
            question_versions = arrows and f"question{NBSP}{arrows}"
            questions += 1
            continue
        answer_versions = arrows and f"answer{NBSP}{arrows}"
        # Only an answer to a question of this history can be asked again (not the API's).
        other = _other_model_link(questions - 1) if versions is not None and questions else ""
        extra = _footer_extra(question_versions, answer_versions, other)
        shown.extend(_answer(message, extra, link))
        question_versions = ""
    if history and history[-1].role == "user":
        # Saved without its answer: the server stopped mid-answer (a crash, a replica gone).
        body = f"{UNANSWERED}\n\n<sub>{FOOTER_MARK}interrupted"
        body += f"{FOOTER_SEPARATOR}{question_versions}</sub>" if question_versions else "</sub>"
        shown.append({"role": "assistant", "content": body})
    return shown


def _answer(message: ChatMessage, extra: str, link: Link | None) -> list[dict[str, Any]]:
    meta = message.meta
    streaming = meta is not None and meta.status == "streaming"
    shown: list[dict[str, Any]] = []
    if message.reasoning:
        thinking_meta: dict[str, Any] = {"title": "Thinking"}
        thinking_meta["status"] = "pending" if streaming and not message.content else "done"
        shown.append({"role": "assistant", "content": message.reasoning, "metadata": thinking_meta})
    body = message.content
    if streaming and not body and not message.reasoning and not message.attachments:
        body = TYPING
    body += attachments_markdown(message.attachments, link)
    if meta is not None and meta.error and not streaming:
        body += f"\n\n> ⚠️ {meta.error}"
    if meta is not None and meta.sources:  # listed as they arrive, and kept
        body += "\n\n" + sources_html(meta.sources)
    if meta is not None and not streaming:
        footer = html.escape(format_answer_footer(meta))
        more = FOOTER_SEPARATOR + extra if extra else ""
        body += f"\n\n<sub>{FOOTER_MARK}{footer}{more}</sub>"
    shown.append({"role": "assistant", "content": body})
    return shown


def sources_html(sources: Sequence[Source]) -> str:
    """An answer's web sources as one line of HTML: a numbered list, quiet under the answer.

    Titles and addresses come from the web: every character that HTML, Markdown or LaTeX
    could read as markup is written as an entity, and only an http(s) address
    (`Source.link`) becomes a link, opened in a new tab without a referrer. Others are text.
    """
    items = "".join(f"<li>{_source_item(source)}</li>" for source in sources)
    return (
        f'<div class="answer-sources" role="group" aria-label="Sources">{SOURCES_MARK}'
        f'<span class="sources-title">Sources</span><ol>{items}</ol></div>'
    )


def _source_item(source: Source) -> str:
    link = source.link
    if link is None:
        title = f"{inert_text(source.title)} " if source.title else ""
        return f'{title}<span class="source-url">{inert_text(source.url)}</span>'
    href = html.escape("".join(_URL_ESCAPES.get(c, c) for c in link), quote=True)
    label = inert_text(source.title or source.domain)
    anchor = f'<a href="{href}" target="_blank" rel="noopener noreferrer">{label}</a>'
    return f'{anchor} <span class="source-domain">{inert_text(source.domain)}</span>'


def inert_text(text: str) -> str:
    """Untrusted text that every renderer of the chat shows as written (one line)."""
    return _INERT.sub(lambda found: f"&#{ord(found[0])};", " ".join(text.split()))


def attachments_markdown(refs: Sequence[AttachmentRef], link: Link | None) -> str:
    """A message's files as one Markdown paragraph after its text ('' when it has none)."""
    if not refs:
        return ""
    shown = [_attachment(ref, link) for ref in refs]
    return f"\n\n{ATTACHMENTS_MARK}" + " ".join(shown)


def without_attachments(text: str) -> str:
    """A shown question without its files' line (what the visitor edits)."""
    return text.split(f"\n\n{ATTACHMENTS_MARK}", 1)[0]


def _attachment(ref: AttachmentRef, link: Link | None) -> str:
    name = _MARKDOWN_SPECIAL.sub(r"\\\1", ref.name) or "file"
    label = f"{name} ({human_bytes(ref.size)})"
    if link is None:
        return f"📎 {label}"
    url = link(ref)
    if ref.kind == "image":
        return f"[![{name}]({url})]({url})"
    icon = "📄" if ref.kind == "pdf" else "📝"
    return f"{icon} [{label}]({url})"


def _footer_extra(*parts: str) -> str:
    return FOOTER_SEPARATOR.join(p for p in parts if p)


def _other_model_link(nth_question: int) -> str:
    """A link the page's script turns into "ask this question again with another model"."""
    return f"[{OTHER_MODEL}](#other-model:{nth_question})"


def _arrows(index: int, versions: Versions | None) -> str:
    """'‹ 2/3 ›' as links the page's script turns into a switch; '' for a single version."""
    if versions is None or index >= len(versions):
        return ""
    number, count = versions[index]
    if count <= 1:
        return ""
    back = f"[‹](#version:{index}:-1)" if number > 1 else "‹"
    forward = f"[›](#version:{index}:1)" if number < count else "›"
    return f"{back}{NBSP}{number}/{count}{NBSP}{forward}"
