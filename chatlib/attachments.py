"""Files in and out of a chat: what a visitor attaches, what a model draws.

The shared vocabulary (this module's types) is used by the store (content-addressed, owned
like conversations), the turn (content parts for OpenRouter) and the page (chips, pictures,
private links). Everything here is pure or CPU-bound and synchronous: callers run `prepare`
off the event loop (`asyncio.to_thread`), since decoding, downscaling and re-encoding a
photo takes tens to hundreds of milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from PIL import Image, ImageOps

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
    # Declared width x height above this is refused before any pixel is decoded.
    max_image_pixels: int = 50_000_000


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


# -- what a file is (by its bytes) ---------------------------------------------------------

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_PDF_HEADER: Final = re.compile(rb"%PDF-\d")
# Control characters that plain text does not contain (tab, newlines, form feed and the
# escape of coloured terminal logs are fine).
_TEXT_CONTROLS: Final = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_UNSUPPORTED: Final = "is not an image (PNG, JPEG, WebP, GIF), a PDF or a text file."
# Pillow's format names, by the MIME type sniffed.
_PIL_FORMATS: Final = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
_SUFFIXES: Final = {
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/webp": (".webp",),
    "image/gif": (".gif",),
}
_IMAGE_SUFFIXES: Final = frozenset(s for suffixes in _SUFFIXES.values() for s in suffixes)
_DEFAULT_NAMES: Final[dict[AttachmentKind, str]] = {
    "image": "image",
    "pdf": "document.pdf",
    "text": "text.txt",
}
_JPEG_QUALITY: Final = 85
_WEBP_QUALITY: Final = 85


def sniff(data: bytes) -> tuple[AttachmentKind, str] | None:
    """What `data` is, from its first bytes and never its name: (kind, MIME type) or None.

    Images are recognised by their magic bytes (PNG, JPEG, WebP, GIF87a/89a), PDFs by a
    `%PDF-<digit>` header at the very start. Anything else is text when it is UTF-8 (a BOM
    is allowed) without NUL bytes and with at most 1% control characters. So an HTML page
    named `.pdf` is text, and a program renamed `.png` is None.
    """
    if data.startswith(_PNG_MAGIC):
        return "image", "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image", "image/jpeg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image", "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image", "image/gif"
    if _PDF_HEADER.match(data):
        return "pdf", PDF_MIME
    if _is_utf8_text(data):
        return "text", TEXT_MIME
    return None


def _is_utf8_text(data: bytes) -> bool:
    if not data or b"\x00" in data:
        return False
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    controls = len(_TEXT_CONTROLS.findall(text))
    return controls * 100 <= len(text)


def _looks_utf16(data: bytes) -> bool:
    """A UTF-16 BOM, or a start where every other byte is NUL (UTF-16 ASCII)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    head = data[:64]
    if len(head) < 4:
        return False
    return not any(head[0::2]) or not any(head[1::2])


# -- names and sizes -------------------------------------------------------------------------


def clean_name(raw: str) -> str:
    """A file name safe to show and store: the last path part, no control characters.

    Both `/` and `\\` count as separators; control and format characters (including bidi
    overrides that make `exe.txt` look like `txt.exe`) are dropped; at most MAX_NAME_CHARS
    characters, keeping the extension. May be empty; `prepare` then picks a name by kind.
    """
    name = unicodedata.normalize("NFC", raw)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Co"})
    name = " ".join(name.split())
    if name in {".", ".."}:
        return ""
    if len(name) > MAX_NAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        if dot and stem and len(suffix) <= 16:
            keep = MAX_NAME_CHARS - len(suffix) - 1
            name = f"{stem[:keep].rstrip()}.{suffix}"
        else:
            name = name[:MAX_NAME_CHARS].rstrip()
    return name


def _image_name(name: str, mime: str) -> str:
    """`name` (or "image") with an extension that matches the image as stored."""
    wanted = _SUFFIXES[mime]
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and f".{suffix.lower()}" in wanted:
        return name
    if dot and stem and f".{suffix.lower()}" in _IMAGE_SUFFIXES:
        return f"{stem}{wanted[0]}"
    base = name or _DEFAULT_NAMES["image"]
    return f"{base[: MAX_NAME_CHARS - len(wanted[0])]}{wanted[0]}"


def human_bytes(size: int, decimals: int = 1) -> str:
    """A size as people say it, in decimal units: "812 bytes", "12.3 MB", "10 MB"."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            number = f"{size / scale:.{decimals}f}"
            if "." in number:
                number = number.rstrip("0").rstrip(".")
            return f"{number} {unit}"
    return "1 byte" if size == 1 else f"{size:,} bytes"


def _over(size: int, limit: int) -> str:
    """`size` in human units, precise enough not to read as equal to `limit`."""
    for decimals in (1, 2, 3):
        text = human_bytes(size, decimals)
        if text != human_bytes(limit):
            return text
    return f"{size:,} bytes"


def _display(name: str) -> str:
    return clean_name(name) or "The file"


def check_sizes(files: Sequence[tuple[str, int]], limits: AttachmentLimits) -> None:
    """Refuse a set of (name, size) before reading it: count, size per file, size in all.

    Raises AttachmentRejected naming the file and the limit in human units, e.g.
    "photo.jpg is 12.3 MB; the limit is 10 MB per file.".
    """
    if not files:
        return
    if limits.max_files <= 0:
        raise AttachmentRejected("Attachments are turned off on this server.")
    if len(files) > limits.max_files:
        raise AttachmentRejected(
            f"{len(files)} files; the limit is {limits.max_files} per message."
        )
    for name, size in files:
        _check_file_size(name, size, limits)
    total = sum(size for _, size in files)
    if total > limits.max_message_bytes:
        raise AttachmentRejected(
            f"Attachments add up to {_over(total, limits.max_message_bytes)}; "
            f"the limit is {human_bytes(limits.max_message_bytes)} per message."
        )


def _check_file_size(name: str, size: int, limits: AttachmentLimits) -> None:
    if size > limits.max_file_bytes:
        raise AttachmentRejected(
            f"{_display(name)} is {_over(size, limits.max_file_bytes)}; "
            f"the limit is {human_bytes(limits.max_file_bytes)} per file."
        )


# -- preparing a file to store and send ----------------------------------------------------


def prepare(name: str, data: bytes, limits: AttachmentLimits) -> Attachment:
    """Check a visitor's file and turn it into what is stored and sent.

    Synchronous and CPU-bound: run it in a thread. The type comes from the bytes (`sniff`).
    Images are decoded by Pillow after a pixel-count check on the declared size (a
    decompression bomb is refused before decoding), turned upright by their EXIF
    orientation, downscaled so the long side is at most `limits.image_max_side`, and
    re-encoded without any metadata (EXIF, GPS, comments, ICC profiles): JPEG stays JPEG,
    PNG stays PNG, WebP stays WebP, and a GIF becomes its first frame as a PNG (an
    animated GIF is not sent animated). PDFs are checked by header only and kept as they
    are; text must be UTF-8 and is kept as it is.

    Raises AttachmentRejected with a message that names the file.
    """
    name = clean_name(name)
    shown = name or "The file"
    if not data:
        raise AttachmentRejected(f"{shown} is empty.")
    _check_file_size(shown, len(data), limits)
    sniffed = sniff(data)
    if sniffed is None:
        if _looks_utf16(data):
            raise AttachmentRejected(
                f"{shown} looks like UTF-16 text; only UTF-8 text can be attached. "
                "Save it as UTF-8 and attach it again."
            )
        raise AttachmentRejected(f"{shown} {_UNSUPPORTED}")
    kind, mime = sniffed
    if kind != "image":
        return _attachment(name or _DEFAULT_NAMES[kind], kind, mime, data)
    return _prepare_image(name, data, mime, limits)


def _attachment(
    name: str,
    kind: AttachmentKind,
    mime: str,
    data: bytes,
    size: tuple[int, int] | None = None,
) -> Attachment:
    width, height = size if size else (None, None)
    ref = AttachmentRef(
        sha256=hashlib.sha256(data).hexdigest(),
        name=name,
        mime=mime,
        size=len(data),
        kind=kind,
        width=width,
        height=height,
    )
    return Attachment(ref=ref, data=data)


def _prepare_image(name: str, data: bytes, mime: str, limits: AttachmentLimits) -> Attachment:
    """Decode, turn upright, downscale and re-encode an image without its metadata."""
    out_mime = "image/png" if mime == "image/gif" else mime
    name = _image_name(name, out_mime)
    try:
        # Pillow warns about images above its own cap (and raises above twice that); a
        # warning here is a refusal. The filter is process-wide while it lasts (Python
        # 3.11's catch_warnings is not thread-local), so the pixel check below is the
        # guard that counts, and it runs before any pixel is decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime]]) as image:
                _check_pixels(name, image.size, limits)
                frame = _decode_upright(image, out_mime, limits.image_max_side)
    except AttachmentRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AttachmentRejected(_too_many_pixels(name, limits)) from exc
    except Exception as exc:  # noqa: BLE001 - hostile bytes make Pillow raise almost anything
        raise AttachmentRejected(
            f"{name} could not be read as an image; it may be truncated or damaged."
        ) from exc
    stored = _encode(frame, out_mime)
    if len(stored) > limits.max_file_bytes:
        raise AttachmentRejected(
            f"{name} is still {_over(len(stored), limits.max_file_bytes)} after downscaling; "
            f"the limit is {human_bytes(limits.max_file_bytes)} per file."
        )
    return _attachment(name, "image", out_mime, stored, frame.size)


def _too_many_pixels(name: str, limits: AttachmentLimits) -> str:
    cap = f"{limits.max_image_pixels / 1e6:.1f}".removesuffix(".0")
    return f"{name} is too large in pixels; the limit is {cap} megapixels."


def _check_pixels(name: str, size: tuple[int, int], limits: AttachmentLimits) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise AttachmentRejected(f"{name} has no pixels.")
    if width * height > limits.max_image_pixels:
        raise AttachmentRejected(_too_many_pixels(name, limits))


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down (never up) so its long side is at most `max_side`."""
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return size
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode_upright(image: Image.Image, out_mime: str, max_side: int) -> Image.Image:
    """The first frame, decoded, upright, in a mode `out_mime` can hold, at most `max_side`."""
    if image.format in {"JPEG", "MPO"}:
        # libjpeg can decode at 1/2, 1/4 or 1/8 scale: much less work for a big photo,
        # and draft never goes below the size asked for.
        image.draft(None, _fit(image.size, max_side))
    image.load()  # the full decode: a truncated or damaged file fails here
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a damaged EXIF block should not cost the picture
        upright = image.copy()
    frame = _normalise_mode(upright, out_mime)
    target = _fit(frame.size, max_side)
    if frame.size != target:
        frame = frame.resize(target, Image.Resampling.LANCZOS)
    # `frame` is our own copy (exif_transpose copies): everything Pillow read besides
    # pixels (EXIF, XMP, ICC, comments, text chunks) stays behind.
    frame.info = {}
    return frame


def _normalise_mode(image: Image.Image, out_mime: str) -> Image.Image:
    """RGB or L (JPEG), or RGBA when the picture has transparency (PNG, WebP)."""
    has_alpha = image.mode in {"RGBA", "RGBa", "LA", "La", "PA"} or "transparency" in image.info
    if has_alpha and out_mime != "image/jpeg":
        return image if image.mode == "RGBA" else image.convert("RGBA")
    if image.mode in {"RGB", "L"}:
        return image
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I"):
        # 16-bit grey (PNG): Pillow's conversion to L clips at 255; scale it instead.
        return image.convert("I").point(lambda value: value / 257).convert("L")
    return image.convert("RGB")


def _encode(frame: Image.Image, mime: str) -> bytes:
    buffer = io.BytesIO()
    if mime == "image/jpeg":
        frame.save(buffer, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    elif mime == "image/webp":
        frame.save(buffer, "WEBP", quality=_WEBP_QUALITY)
    else:
        frame.save(buffer, "PNG")
    return buffer.getvalue()


# -- images a model drew ------------------------------------------------------------------

_IMAGE_DATA_URL: Final = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,")


def image_from_data_url(url: str, limits: AttachmentLimits, name: str) -> Attachment:
    """An image a model drew, from its `data:image/...;base64,` URL, checked like `prepare`.

    The URL is parsed strictly (no other parameters, no whitespace in the base64) and its
    length is capped before decoding; the decoded bytes must sniff as an image, whatever
    the URL's MIME type says.
    """
    shown = clean_name(name) or "The model's image"
    match = _IMAGE_DATA_URL.match(url)
    if match is None:
        raise AttachmentRejected(f"{shown} is not a base64 image data URL.")
    payload = url[match.end() :]
    if len(payload) > -(-4 * limits.max_file_bytes // 3) + 4:
        raise AttachmentRejected(
            f"{shown} is {_over(len(payload) * 3 // 4, limits.max_file_bytes)}; "
            f"the limit is {human_bytes(limits.max_file_bytes)} per file."
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttachmentRejected(f"{shown} is not valid base64.") from exc
    sniffed = sniff(data)
    if sniffed is None or sniffed[0] != "image":
        raise AttachmentRejected(f"{shown} is not an image (PNG, JPEG, WebP, GIF).")
    return prepare(name, data, limits)


# -- what is sent to OpenRouter -----------------------------------------------------------


def data_url(ref: AttachmentRef, data: bytes) -> str:
    """`data` as a `data:<mime>;base64,...` URL, the way OpenRouter takes images and PDFs."""
    return f"data:{ref.mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fenced(name: str, body: str) -> str:
    """`body` in a Markdown code fence labelled `name`, longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    label = name.replace("`", "'")
    ending = "" if body.endswith("\n") else "\n"
    return f"{fence}{label}\n{body}{ending}{fence}"


def content_parts(
    text: str, files: Sequence[tuple[AttachmentRef, bytes]]
) -> str | list[dict[str, Any]]:
    """A user message's `content` for OpenRouter: `text` alone, or content parts with files.

    Without files it is the plain string. With files: one text part (the message, then
    each text file as a fenced block labelled with its name; left out when there is no
    text at all, since some providers refuse empty text parts), then each image as an
    `image_url` part and each PDF as a `file` part, both carrying data URLs.
    """
    if not files:
        return text
    blocks = [text] if text else []
    for ref, data in files:
        if ref.kind == "text":
            blocks.append(_fenced(ref.name, data.decode("utf-8-sig", errors="replace")))
    parts: list[dict[str, Any]] = []
    if blocks:
        parts.append({"type": "text", "text": "\n\n".join(blocks)})
    for ref, data in files:
        if ref.kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": data_url(ref, data)}})
    for ref, data in files:
        if ref.kind == "pdf":
            parts.append(
                {"type": "file", "file": {"filename": ref.name, "file_data": data_url(ref, data)}}
            )
    return parts


def file_parser_plugins(engine: str, files: Sequence[AttachmentRef]) -> list[dict[str, Any]]:
    """OpenRouter's `plugins` for the PDF engine: only with a PDF and an engine chosen.

    An empty engine leaves the choice to OpenRouter (the model's own file input if it has
    one, else its default parser).
    """
    engine = engine.strip()
    if engine and any(ref.kind == "pdf" for ref in files):
        return [{"id": "file-parser", "pdf": {"engine": engine}}]
    return []


def upstream_size(content: str | Sequence[dict[str, Any]]) -> int:
    """What a `content` value adds to a request: characters of text plus of data URLs.

    Data URLs are ASCII, so for them characters are bytes. Parts of other types count
    nothing.
    """
    if isinstance(content, str):
        return len(content)
    total = 0
    for part in content:
        kind = part.get("type")
        if kind == "text":
            total += len(str(part.get("text", "")))
        elif kind == "image_url":
            total += len(str((part.get("image_url") or {}).get("url", "")))
        elif kind == "file":
            total += len(str((part.get("file") or {}).get("file_data", "")))
    return total
