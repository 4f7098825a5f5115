"""Web sources an answer cites (OpenRouter's `url_citation` annotations), kept safe to show."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

MAX_SOURCES: Final = 50  # per answer: a runaway stream cannot fill the page or the store
MAX_SOURCE_URL_CHARS: Final = 2048
MAX_SOURCE_TITLE_CHARS: Final = 300
LINK_SCHEMES: Final = ("http", "https")


@dataclass(frozen=True)
class Source:
    """One cited page: its address and title, as the upstream said them (unchecked).

    Whatever the URL is, it is kept (it is what the model cited); only `link` decides
    whether a page may make it clickable.
    """

    url: str
    title: str = ""

    @property
    def link(self) -> str | None:
        """The URL when it may be a link (http or https with a host), else None: show as text."""
        return safe_link(self.url)

    @property
    def domain(self) -> str:
        """The host of a linkable URL ("" otherwise), without a leading `www.`."""
        if self.link is None:
            return ""
        host = urlsplit(self.url).hostname or ""
        return host.removeprefix("www.")

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict (`title` left out when empty)."""
        return {"url": self.url, "title": self.title} if self.title else {"url": self.url}


def safe_link(url: str) -> str | None:
    """`url` if it is a plain http(s) URL with a host; else None (shown as text, not a link).

    Refused too, because a browser would go elsewhere than the shown domain says: a
    backslash (browsers read it as `/`, Python does not), a user name or password before
    the host, a percent-escape in the host, and any space, control, format (bidi, zero
    width) or separator character, which can hide or reorder what is shown.
    """
    if not url or len(url) > MAX_SOURCE_URL_CHARS:
        return None
    if "\\" in url or any(c == " " or not c.isprintable() for c in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in LINK_SCHEMES or not host:
        return None
    if "@" in parts.netloc or "%" in parts.netloc:
        return None
    return url


def sources_from_annotations(annotations: object) -> list[Source]:
    """The `url_citation` sources in an `annotations` list; other or odd entries skipped."""
    if not isinstance(annotations, list):
        return []
    found: list[Source] = []
    for item in annotations:
        if not isinstance(item, Mapping) or item.get("type") != "url_citation":
            continue
        citation = item.get("url_citation")
        inner: Mapping[str, Any] = citation if isinstance(citation, Mapping) else item
        url, title = inner.get("url"), inner.get("title")
        if not isinstance(url, str) or not url.strip():
            continue
        found.append(
            Source(
                url=url.strip()[:MAX_SOURCE_URL_CHARS],
                title=title.strip()[:MAX_SOURCE_TITLE_CHARS] if isinstance(title, str) else "",
            )
        )
    return found


def merged(known: Iterable[Source], more: Iterable[Source]) -> tuple[Source, ...]:
    """`known` then the new ones of `more`, one per URL, at most MAX_SOURCES (first kept)."""
    out: dict[str, Source] = {}
    for source in (*known, *more):
        if len(out) >= MAX_SOURCES:
            break
        kept = out.get(source.url)
        if kept is None or (not kept.title and source.title):
            out[source.url] = source
    return tuple(out.values())
