"""Files in and out of a chat: what a visitor attaches, what a model draws.

The shared vocabulary (this module's types) is used by the store (content-addressed, owned
like conversations), the turn (content parts for OpenRouter) and the page (chips, pictures,
private links). Everything here is pure or CPU-bound and synchronous: callers run `prepare`
off the event loop (`asyncio.to_thread`), since decoding and downscaling a photo takes
tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from chatlib.errors import InputError

AttachmentKind = Literal["image", "pdf", "text"]
ATTACHMENT_KINDS: Final[tuple[AttachmentKind, ...]] = get_args(AttachmentKind)
# What is kept and sent, by kind (decided from the bytes, never from the file name).
IMAGE_MIMES: Final = ("image/png", "image/jpeg", "image/webp", "image/gif")
PDF_MIME: Final = "application/pdf"
TEXT_MIME: Final = "text/plain"
MAX_NAME_CHARS = 200
SHA256_HEX_CHARS = 64


class AttachmentRejected(InputError):
    """A file that cannot be attached; the message names the file and the rule it broke."""


@dataclass(frozen=True)
class AttachmentLimits:
    """How much a visitor may attach (settings MAX_ATTACHMENTS_PER_MESSAGE and friends)."""

    max_files: int = 5
    max_file_bytes: int = 10_000_000
    max_message_bytes: int = 25_000_000
    image_max_side: int = 1568


@dataclass(frozen=True)
class AttachmentRef:
    """A stored file as a message refers to it: by the SHA-256 of its stored bytes.

    The bytes live once per owner in the attachment store; a message carries only this.
    """

    sha256: str  # hex of the bytes as stored (after downscaling and EXIF removal)
    name: str  # shown to the visitor; a plain name, no path
    mime: str  # one of IMAGE_MIMES, PDF_MIME, TEXT_MIME
    size: int  # bytes as stored
    kind: AttachmentKind
    width: int | None = None  # images only
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored with the message; exports add the bytes beside it)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Attachment:
    """A file ready to store and send: its reference and its bytes."""

    ref: AttachmentRef
    data: bytes
