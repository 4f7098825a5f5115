"""Attachments: what a file is, whether it may be sent, and what OpenRouter receives."""

from __future__ import annotations

import base64
import io
import struct
import time
import unicodedata
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from chatlib.attachments import (
    MAX_NAME_CHARS,
    PDF_MIME,
    TEXT_MIME,
    Attachment,
    AttachmentLimits,
    AttachmentRef,
    AttachmentRejected,
    check_sizes,
    clean_name,
    content_parts,
    data_url,
    file_parser_plugins,
    human_bytes,
    image_from_data_url,
    prepare,
    sniff,
    upstream_size,
)

LIMITS = AttachmentLimits()
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + bytes(200)
WINDOWS_EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(200)
HTML = b"<!DOCTYPE html>\n<html><head><title>Invoice</title></head><body>Pay now</body></html>\n"


def picture(
    fmt: str,
    size: tuple[int, int] = (32, 16),
    mode: str = "RGB",
    color: Any = "red",
    **save: Any,
) -> bytes:
    """A real image file, made by Pillow, in `fmt`."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt, **save)
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height`, with one tiny compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * 8)))
        + chunk(b"IEND", b"")
    )


# -- what a file is ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "make", "expected"),
    [
        ("PNG", lambda: picture("PNG"), ("image", "image/png")),
        ("JPEG", lambda: picture("JPEG"), ("image", "image/jpeg")),
        ("WebP", lambda: picture("WEBP"), ("image", "image/webp")),
        ("GIF89a", lambda: picture("GIF"), ("image", "image/gif")),
        ("GIF87a", lambda: b"GIF87a" + picture("GIF")[6:], ("image", "image/gif")),
        ("PDF header", lambda: PDF, ("pdf", PDF_MIME)),
        ("UTF-8 text", lambda: "déjà vu, naïve café\n".encode(), ("text", TEXT_MIME)),
        ("UTF-8 with BOM", lambda: "\ufeffname,city\nZoë,Köln\n".encode(), ("text", TEXT_MIME)),
        ("HTML named .pdf", lambda: HTML, ("text", TEXT_MIME)),
        ("UTF-16 text", lambda: "hello, world\n".encode("utf-16"), None),
        ("Linux program (ELF)", lambda: ELF, None),
        ("Windows program (MZ)", lambda: WINDOWS_EXE, None),
        ("Latin-1 text", lambda: "café crème".encode("latin-1"), None),
        ("mostly control bytes", lambda: bytes(range(1, 32)) * 4, None),
        ("empty", lambda: b"", None),
    ],
)
def test_the_type_comes_from_the_bytes(
    label: str, make: Callable[[], bytes], expected: tuple[str, str] | None
) -> None:
    assert sniff(make()) == expected, label


def test_a_program_renamed_png_is_refused_by_name() -> None:
    with pytest.raises(AttachmentRejected) as refused:
        prepare("holiday.png", ELF, LIMITS)
    assert str(refused.value) == (
        "holiday.png is not an image (PNG, JPEG, WebP, GIF), a PDF or a text file."
    )


def test_an_html_page_named_pdf_is_attached_as_text_not_as_a_pdf() -> None:
    attachment = prepare("invoice.pdf", HTML, LIMITS)
    assert (attachment.ref.kind, attachment.ref.mime) == ("text", TEXT_MIME)
    assert attachment.data == HTML


def test_utf16_text_is_refused_with_a_way_out() -> None:
    with pytest.raises(AttachmentRejected, match=r"notes\.txt looks like UTF-16 .* UTF-8"):
        prepare("notes.txt", "Shopping list\nmilk\n".encode("utf-16"), LIMITS)


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(AttachmentRejected, match=r"^empty\.txt is empty\.$"):
        prepare("empty.txt", b"", LIMITS)


def test_pdf_and_text_are_kept_byte_for_byte() -> None:
    pdf = prepare("paper.pdf", PDF, LIMITS)
    text = prepare("notes.md", b"# Notes\n", LIMITS)
    assert pdf.data == PDF and pdf.ref.kind == "pdf" and pdf.ref.size == len(PDF)
    assert text.data == b"# Notes\n" and text.ref.mime == TEXT_MIME
    assert pdf.ref.width is None and text.ref.height is None


def test_the_reference_names_the_stored_bytes() -> None:
    import hashlib

    attachment = prepare("wide.png", picture("PNG", (4000, 1000)), LIMITS)
    assert attachment.ref.sha256 == hashlib.sha256(attachment.data).hexdigest()
    assert attachment.ref.size == len(attachment.data)


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("C:\\Users\\ana\\Desktop\\report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("line\nbreak\t.txt", "linebreak.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),
        ("  spaced   out .md ", "spaced out .md"),
        ("..", ""),
        ("dir/", ""),
    ],
)
def test_names_lose_paths_and_control_characters(raw: str, shown: str) -> None:
    assert clean_name(raw) == shown


def test_a_long_name_is_cut_but_keeps_its_extension() -> None:
    name = clean_name("a" * 500 + ".py")
    assert len(name) == MAX_NAME_CHARS and name.endswith("a.py")


def test_a_nameless_file_gets_a_name_by_kind() -> None:
    assert prepare("", PDF, LIMITS).ref.name == "document.pdf"
    assert prepare("/", b"hello\n", LIMITS).ref.name == "text.txt"
    assert prepare("", picture("JPEG"), LIMITS).ref.name == "image.jpg"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400))
def test_any_name_becomes_a_plain_name(raw: str) -> None:
    name = prepare(raw, b"hello\n", LIMITS).ref.name
    assert name and len(name) <= MAX_NAME_CHARS
    assert "/" not in name and "\\" not in name
    hidden = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}  # controls, bidi overrides, line breaks
    assert not any(unicodedata.category(ch) in hidden for ch in name)


# -- images ---------------------------------------------------------------------------------


def test_a_wide_picture_is_downscaled_to_the_long_side_limit() -> None:
    attachment = prepare("panorama.png", picture("PNG", (4000, 1000)), LIMITS)
    assert (attachment.ref.width, attachment.ref.height) == (1568, 392)
    assert opened(attachment.data).size == (1568, 392)
    assert attachment.ref.mime == "image/png"


def test_a_tall_jpeg_is_downscaled_and_stays_jpeg() -> None:
    attachment = prepare("receipt.jpg", picture("JPEG", (1000, 4000)), LIMITS)
    assert opened(attachment.data).size == (392, 1568)
    assert (attachment.ref.mime, opened(attachment.data).format) == ("image/jpeg", "JPEG")


def test_the_long_side_follows_the_server_setting() -> None:
    limits = AttachmentLimits(image_max_side=512)
    attachment = prepare("wide.webp", picture("WEBP", (2048, 1024)), limits)
    assert opened(attachment.data).size == (512, 256)
    assert opened(attachment.data).format == "WEBP"


def test_a_small_picture_keeps_its_size() -> None:
    attachment = prepare("icon.png", picture("PNG", (300, 200)), LIMITS)
    assert (attachment.ref.width, attachment.ref.height) == (300, 200)
    assert opened(attachment.data).size == (300, 200)


def _photo_with_exif(orientation: int) -> bytes:
    """A 40x20 JPEG, left half red and right half blue, with orientation and GPS tags."""
    image = Image.new("RGB", (40, 20), "blue")
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "PhoneMaker"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 24.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=95, comment=b"shot at home")
    return buffer.getvalue()


def test_a_phone_photo_is_turned_upright_and_loses_its_exif_and_location() -> None:
    original = _photo_with_exif(orientation=6)  # "rotate 90 degrees clockwise to view"
    assert opened(original).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the test's own premise

    attachment = prepare("IMG_0001.jpg", original, LIMITS)

    upright = opened(attachment.data).convert("RGB")
    assert upright.size == (20, 40) == (attachment.ref.width, attachment.ref.height)
    top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # the red half is on top now
    assert bottom[2] > 200 and bottom[0] < 60
    assert not opened(attachment.data).getexif()
    assert b"Exif" not in attachment.data and b"PhoneMaker" not in attachment.data
    assert b"shot at home" not in attachment.data


def test_png_text_and_exif_chunks_are_not_kept() -> None:
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Jane Secret")
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    attachment = prepare("shot.png", picture("PNG", (10, 10), pnginfo=text, exif=exif), LIMITS)
    assert b"Jane Secret" not in attachment.data and b"PhoneMaker" not in attachment.data


def test_a_transparent_png_keeps_its_transparency() -> None:
    attachment = prepare("logo.png", picture("PNG", (8, 8), "RGBA", (0, 0, 0, 0)), LIMITS)
    assert opened(attachment.data).getpixel((0, 0)) == (0, 0, 0, 0)


def test_an_animated_gif_becomes_its_first_frame_as_png() -> None:
    frames = [Image.new("RGB", (12, 12), color) for color in ("red", "lime", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)

    attachment = prepare("dance.gif", buffer.getvalue(), LIMITS)

    still = opened(attachment.data)
    assert (attachment.ref.name, attachment.ref.mime, still.format) == (
        "dance.png",
        "image/png",
        "PNG",
    )
    assert getattr(still, "n_frames", 1) == 1
    assert still.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_a_phones_multi_picture_jpeg_is_sent_as_its_main_picture() -> None:
    buffer = io.BytesIO()
    main, preview = Image.new("RGB", (2000, 1000), "red"), Image.new("RGB", (200, 100), "blue")
    main.save(buffer, "MPO", save_all=True, append_images=[preview])

    attachment = prepare("IMG_0002.jpg", buffer.getvalue(), LIMITS)

    stored = opened(attachment.data)
    assert (stored.format, stored.size, attachment.ref.mime) == ("JPEG", (1568, 784), "image/jpeg")
    assert getattr(stored, "n_frames", 1) == 1


def test_pictures_prepared_in_parallel_threads_all_come_out_right() -> None:
    photos = [picture("JPEG", (2000 + 100 * i, 1000)) for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        sizes = list(pool.map(lambda data: prepare("p.jpg", data, LIMITS).ref.width, photos))
    assert sizes == [1568] * 6
    with pytest.raises(AttachmentRejected, match="too large in pixels"):
        prepare("bomb.png", png_declaring(10_000, 10_000), LIMITS)


def test_an_image_whose_name_lies_is_named_after_its_content() -> None:
    assert prepare("photo.jpg", picture("PNG"), LIMITS).ref.name == "photo.png"
    assert prepare("scan", picture("WEBP"), LIMITS).ref.name == "scan.webp"


def test_a_truncated_photo_is_refused_clearly() -> None:
    photo = picture("JPEG", (400, 300), color="orange")
    with pytest.raises(AttachmentRejected, match=r"^cut\.jpg could not be read as an image"):
        prepare("cut.jpg", photo[: len(photo) // 2], LIMITS)


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    bomb = png_declaring(100_000, 100_000)
    started = time.perf_counter()
    with pytest.raises(AttachmentRejected, match=r"^bomb\.png is too large in pixels; .* 50 mega"):
        prepare("bomb.png", bomb, LIMITS)
    assert time.perf_counter() - started < 0.5


def test_the_pixel_cap_is_a_setting_below_pillows_own() -> None:
    with pytest.raises(AttachmentRejected, match="the limit is 1 megapixels"):
        prepare("big.png", png_declaring(2000, 1000), AttachmentLimits(max_image_pixels=1_000_000))


# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("photo.jpg", 12_300_000)], "photo.jpg is 12.3 MB; the limit is 10 MB per file."),
        ([(f"{i}.txt", 10) for i in range(6)], "6 files; the limit is 5 per message."),
        (
            [("a.pdf", 10_000_000), ("b.pdf", 10_000_000), ("c.pdf", 10_000_000), ("d", 1_000_000)],
            "Attachments add up to 31 MB; the limit is 25 MB per message.",
        ),
        (
            [("/home/ana/big.png", 10_000_001)],
            "big.png is 10,000,001 bytes; the limit is 10 MB per file.",
        ),
        ([("scan.pdf", 10_040_000)], "scan.pdf is 10.04 MB; the limit is 10 MB per file."),
    ],
)
def test_size_limits_are_said_in_human_units(files: list[tuple[str, int]], message: str) -> None:
    with pytest.raises(AttachmentRejected) as refused:
        check_sizes(files, LIMITS)
    assert str(refused.value) == message


def test_attachments_can_be_turned_off() -> None:
    with pytest.raises(AttachmentRejected, match=r"^Attachments are turned off on this server\.$"):
        check_sizes([("a.txt", 1)], AttachmentLimits(max_files=0))
    check_sizes([], AttachmentLimits(max_files=0))  # a message without files is fine


def test_files_within_the_limits_pass() -> None:
    check_sizes([("a.png", 10_000_000), ("b.pdf", 10_000_000), ("c.txt", 5_000_000)], LIMITS)


def test_prepare_checks_the_size_too() -> None:
    with pytest.raises(AttachmentRejected, match=r"^log\.txt is 2 KB; the limit is 1 KB per file"):
        prepare("log.txt", b"x" * 2000, AttachmentLimits(max_file_bytes=1000))


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1, "1 byte"), (999, "999 bytes"), (1500, "1.5 KB"), (25_000_000, "25 MB")],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


# -- what OpenRouter receives -----------------------------------------------------------------


def _ref(attachment: Attachment) -> tuple[AttachmentRef, bytes]:
    return attachment.ref, attachment.data


def test_a_message_without_files_is_a_plain_string() -> None:
    assert content_parts("Hello", []) == "Hello"


def test_files_become_text_then_images_then_pdfs() -> None:
    image = prepare("cat.jpg", picture("JPEG", (64, 48)), LIMITS)
    pdf = prepare("paper.pdf", PDF, LIMITS)
    code = prepare("src/main.py", b"print('hi')\n", LIMITS)

    parts = content_parts("What do these say?", [_ref(pdf), _ref(image), _ref(code)])

    assert isinstance(parts, list)
    assert [p["type"] for p in parts] == ["text", "image_url", "file"]
    assert parts[0]["text"] == "What do these say?\n\n```main.py\nprint('hi')\n```"
    image_url = parts[1]["image_url"]["url"]
    assert image_url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(image_url.split(",", 1)[1]) == image.data
    assert parts[2]["file"]["filename"] == "paper.pdf"
    pdf_url = parts[2]["file"]["file_data"]
    assert pdf_url.startswith("data:application/pdf;base64,")
    assert base64.b64decode(pdf_url.split(",", 1)[1]) == PDF


def test_a_fence_is_longer_than_any_backtick_run_in_the_file() -> None:
    readme = prepare("README.md", b"Use ```python blocks``` or ````` five.\n", LIMITS)
    parts = content_parts("Check this", [_ref(readme)])
    assert isinstance(parts, list)
    assert parts[0]["text"] == (
        "Check this\n\n``````README.md\nUse ```python blocks``` or ````` five.\n``````"
    )


def test_a_text_file_without_a_message_is_the_only_text_and_loses_its_bom() -> None:
    notes = prepare("notes.txt", "\ufeffmilk".encode(), LIMITS)
    assert content_parts("", [_ref(notes)]) == [{"type": "text", "text": "```notes.txt\nmilk\n```"}]


def test_an_image_without_a_message_sends_no_empty_text_part() -> None:
    image = prepare("cat.png", picture("PNG"), LIMITS)
    parts = content_parts("", [_ref(image)])
    assert isinstance(parts, list) and [p["type"] for p in parts] == ["image_url"]


def test_data_url() -> None:
    text = prepare("a.txt", b"hi", LIMITS)
    assert data_url(text.ref, text.data) == "data:text/plain;base64,aGk="


def test_the_pdf_engine_plugin_goes_only_with_a_pdf_and_an_engine() -> None:
    pdf = prepare("paper.pdf", PDF, LIMITS).ref
    text = prepare("a.txt", b"hi", LIMITS).ref
    assert file_parser_plugins("mistral-ocr", [text, pdf]) == [
        {"id": "file-parser", "pdf": {"engine": "mistral-ocr"}}
    ]
    assert file_parser_plugins("", [pdf]) == []
    assert file_parser_plugins("cloudflare-ai", [text]) == []


def test_upstream_size_counts_text_and_data_urls() -> None:
    image = prepare("cat.png", picture("PNG"), LIMITS)
    pdf = prepare("paper.pdf", PDF, LIMITS)
    parts = content_parts("Hi", [_ref(image), _ref(pdf)])
    expected = len("Hi") + len(data_url(image.ref, image.data)) + len(data_url(pdf.ref, pdf.data))
    assert upstream_size(parts) == expected
    assert upstream_size("Hello") == 5


# -- images a model drew ----------------------------------------------------------------------


def _as_data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_a_drawn_image_is_stored_like_an_upload() -> None:
    drawn = image_from_data_url(_as_data_url(picture("PNG", (2000, 1000))), LIMITS, "drawn-1.png")
    assert (drawn.ref.kind, drawn.ref.mime, drawn.ref.width, drawn.ref.height) == (
        "image",
        "image/png",
        1568,
        784,
    )


def test_a_drawn_image_is_judged_by_its_bytes_not_its_url() -> None:
    drawn = image_from_data_url(_as_data_url(picture("PNG"), "image/jpeg"), LIMITS, "x.jpg")
    assert (drawn.ref.mime, drawn.ref.name) == ("image/png", "x.png")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/cat.png", "is not a base64 image data URL"),
        ("data:image/png,rawbytes", "is not a base64 image data URL"),
        ("data:text/plain;base64,aGk=", "is not a base64 image data URL"),
        ("data:image/png;base64,not base64!", "is not valid base64"),
        (_as_data_url(PDF, "image/png"), "is not an image"),
        (_as_data_url(HTML, "image/png"), "is not an image"),
    ],
)
def test_a_bad_drawn_image_is_refused(url: str, message: str) -> None:
    with pytest.raises(AttachmentRejected, match=message):
        image_from_data_url(url, LIMITS, "drawn.png")


def test_a_huge_data_url_is_refused_before_decoding() -> None:
    limits = AttachmentLimits(max_file_bytes=1000)
    with pytest.raises(AttachmentRejected, match=r"^drawn\.png is 1\.5 KB; the limit is 1 KB"):
        image_from_data_url("data:image/png;base64," + "A" * 2000, limits, "drawn.png")


# -- hostile files ------------------------------------------------------------------------------

SMALL_PNG = picture("PNG", (24, 24), color=(10, 200, 30))
SMALL_JPEG = picture("JPEG", (24, 24), color=(10, 200, 30))
MAGIC_NUMBERS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\0\0\0\0WEBP", b"%PDF-1"]


def _prepares_or_is_refused(name: str, data: bytes) -> Attachment | None:
    try:
        return prepare(name, data, LIMITS)
    except AttachmentRejected as refused:
        assert str(refused)
        return None


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([SMALL_PNG, SMALL_JPEG]), st.data())
def test_every_prefix_of_a_picture_prepares_or_is_refused(source: bytes, data: Any) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(source)))
    attachment = _prepares_or_is_refused("cut.img", source[:cut])
    if attachment is not None and attachment.ref.kind == "image":
        assert opened(attachment.data).size == (24, 24)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([SMALL_PNG, SMALL_JPEG]), st.integers(min_value=0), st.integers(0, 255))
def test_a_damaged_picture_prepares_or_is_refused(source: bytes, where: int, byte: int) -> None:
    damaged = bytearray(source)
    damaged[where % len(damaged)] = byte
    _prepares_or_is_refused("damaged.img", bytes(damaged))


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(st.sampled_from(MAGIC_NUMBERS), st.binary(max_size=300)).map(b"".join),
    )
)
def test_random_bytes_are_never_more_than_a_refusal(blob: bytes) -> None:
    _prepares_or_is_refused("random.bin", blob)


@settings(max_examples=25, deadline=None)
@given(st.integers(7072, 1_000_000), st.integers(7072, 1_000_000))
def test_a_png_declaring_huge_dimensions_is_refused_fast(width: int, height: int) -> None:
    started = time.perf_counter()
    with pytest.raises(AttachmentRejected, match="too large in pixels"):
        prepare("bomb.png", png_declaring(width, height), LIMITS)
    assert time.perf_counter() - started < 0.5


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["<html>", "<!DOCTYPE html>", "  <HTML lang=en>"]))
def test_html_named_pdf_is_never_a_pdf(body: str, opening: str) -> None:
    data = f"{opening}{body}</html>".encode()
    assert sniff(data) in {("text", TEXT_MIME), None}
    attachment = _prepares_or_is_refused("statement.pdf", data)
    assert attachment is None or attachment.ref.kind == "text"
