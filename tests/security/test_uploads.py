"""Break 3: uploads are limited by rate and size; hostile file names stay in Gradio's folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AppServer
from tests.security.conftest import (
    MAX_IMPORT_BYTES,
    UPLOADS_PER_MIN,
    LogTail,
    http_from,
    new_client_address,
)

UPLOAD = "gradio_api/upload"
TOO_BIG = b"x" * (2 * MAX_IMPORT_BYTES + 70_000)  # past the cap and the envelope's room
SMALL_FILE = {"files": ("import.json", b'{"conversations": []}', "application/json")}


def upload_folder(app: AppServer) -> Path:
    """Where the app tells Gradio to keep uploads (GRADIO_TEMP_DIR = DATA_DIR/gradio)."""
    return app.workdir / ".data" / "gradio"


def everything_under(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*")} if folder.exists() else set()


def test_a_client_uploading_too_often_is_told_to_wait_and_a_forged_header_does_not_help(
    security_app: AppServer,
) -> None:
    with http_from(security_app.url) as http:
        answers = [http.post(UPLOAD, files=SMALL_FILE) for _ in range(UPLOADS_PER_MIN)]
        assert [a.status_code for a in answers] == [200] * UPLOADS_PER_MIN
        refused = http.post(UPLOAD, files=SMALL_FILE)
        # The peer is loopback, which is no trusted proxy: its X-Forwarded-For is not believed.
        forged = http.post(UPLOAD, files=SMALL_FILE, headers={"X-Forwarded-For": "198.51.100.23"})
    for answer in (refused, forged):
        assert answer.status_code == 429
        assert int(answer.headers["retry-after"]) >= 1
        assert f"limit is {UPLOADS_PER_MIN} per minute" in answer.json()["error"]
    with http_from(security_app.url) as another_client:
        assert another_client.post(UPLOAD, files=SMALL_FILE).status_code == 200


def test_a_file_declared_over_the_cap_is_refused_before_it_is_stored(
    security_app: AppServer,
) -> None:
    before = everything_under(upload_folder(security_app))
    with http_from(security_app.url) as http:
        answer = http.post(UPLOAD, files={"files": ("big.json", TOO_BIG)})
    assert answer.status_code == 413
    assert "too large" in answer.json()["error"]
    assert everything_under(upload_folder(security_app)) - before == set()


def over_the_cap_without_a_length() -> Iterator[bytes]:
    """A multipart body sent in chunks with no Content-Length: only counting can stop it."""
    yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="s.json"\r\n\r\n'
    for start in range(0, len(TOO_BIG), 30_000):
        yield TOO_BIG[start : start + 30_000]
    yield b"\r\n--b--\r\n"


def stream_over_the_cap(app: AppServer) -> int:
    with http_from(app.url) as http:
        answer = http.post(
            UPLOAD,
            content=over_the_cap_without_a_length(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert "too large" in answer.json()["error"]
    return answer.status_code


def test_a_file_that_does_not_say_its_size_is_cut_off_at_the_cap(security_app: AppServer) -> None:
    assert stream_over_the_cap(security_app) == 413


@pytest.mark.xfail(
    strict=True,
    reason="DEFECT: an upload stopped at the cap (413) leaves the part Gradio already "
    "received in DATA_DIR/gradio/tmpXXXX (NamedTemporaryFile(delete=False) in "
    "gradio/route_utils.py) until the hourly sweep.",
)
def test_a_file_cut_off_at_the_cap_leaves_nothing_on_disk(security_app: AppServer) -> None:
    before = everything_under(upload_folder(security_app))
    assert stream_over_the_cap(security_app) == 413
    assert everything_under(upload_folder(security_app)) - before == set()


HOSTILE_NAMES = [
    "../../etc/passwd.json",
    "/etc/cron.d/evil.json",
    "..\\..\\windows.json",
    "a/../../b.json",
    "nul\x00byte.json",
    "new\nline.json",
    "%2e%2e%2fencoded.json",
    "\u202egnp.json",
    "x" * 300 + ".json",
    "..",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:24])
def test_a_hostile_file_name_never_puts_a_file_outside_gradios_upload_folder(
    security_app: AppServer, name: str
) -> None:
    workdir = security_app.workdir.resolve()
    outside_before = everything_under(workdir) - everything_under(upload_folder(security_app))
    tail = LogTail(security_app)
    with http_from(security_app.url, new_client_address()) as http:
        answer = http.post(UPLOAD, files={"files": (name, b"{}", "application/json")})
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 200:
            (stored,) = answer.json()
            path = (security_app.workdir / stored).resolve()
            assert path.is_relative_to(upload_folder(security_app).resolve()), stored
            assert path.read_bytes() == b"{}"
        assert http.get("config").status_code == 200  # the server is still serving
    outside_after = everything_under(workdir) - everything_under(upload_folder(security_app))
    new_outside = {p for p in outside_after - outside_before if "logs" not in p.parts}
    assert new_outside == set()
    assert not Path("/etc/cron.d/evil.json").exists()
    assert "Traceback" not in tail.new()


def test_a_files_part_that_is_no_file_is_refused_without_a_traceback(
    security_app: AppServer,
) -> None:
    tail = LogTail(security_app)
    with http_from(security_app.url) as http:
        answer = http.post(UPLOAD, files={"files": ("", b"{}", "application/json")})
        assert http.get("config").status_code == 200  # it survives either way
    assert "Traceback" not in tail.settled()
    assert answer.status_code == 400


def test_an_uploaded_file_is_served_back_to_its_uploader_only(security_app: AppServer) -> None:
    seat = "uploader-seat-0123456789abcdef"
    with http_from(security_app.url, cookies={"orc_seat": seat}) as uploader:
        answer = uploader.post(UPLOAD, files={"files": ("photo.txt", b"private words")})
        assert answer.status_code == 200
        (path,) = answer.json()
        assert uploader.get(f"gradio_api/file={path}").content == b"private words"
    with http_from(security_app.url, cookies={"orc_seat": "another-seat-0123456789abcdef"}) as b:
        assert b.get(f"gradio_api/file={path}").status_code == 404
        # Another spelling of the same path is the same file.
        assert b.get(f"gradio_api/file={path.replace('/gradio/', '/gradio/./')}").status_code == 404
    with http_from(security_app.url) as no_cookie:
        assert no_cookie.get(f"gradio_api/file={path}").status_code == 404
        assert no_cookie.head(f"gradio_api/file={path}").status_code == 404
