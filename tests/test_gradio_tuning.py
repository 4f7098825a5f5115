"""The Gradio tuning (ui/tuning.py), checked on the app's real page: lazy sessions, slower poll."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from ui import tuning

REPO = Path(__file__).resolve().parent.parent

# Run in a child process: building Blocks here would leave Gradio's event loop behind, and the
# patch changes a Gradio module global.
CHECK = textwrap.dedent(
    """
    import json
    import tempfile

    from gradio import state_holder

    from chatlib.config import Settings
    from chatlib.services import create_services
    from ui import page, tuning

    settings = Settings.from_env(
        {"DATA_DIR": tempfile.mkdtemp(), "OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1"},
        env_file=None,
    )
    demo = page.build(settings, create_services(settings))
    demo.queue()
    eager = state_holder.SessionState(demo)
    applied = tuning.after_queue(demo, tuning.before_build())
    poll = demo._queue.sleep_when_free
    analytics_every = demo._queue.ANAYLTICS_CACHE_FREQUENCY
    holder = state_holder.StateHolder()
    holder.set_blocks(demo)
    lazy = holder["visitor"]
    built_at_start = len(lazy.config_values)
    print(json.dumps({
        "applied": applied["lazy_session_config"],
        "built_at_start": built_at_start,
        "same_components": list(lazy.components) == list(eager.components),
        "count": len(list(eager.components)),
        "tuned": applied["tune_queue"],
        "poll": poll,
        "analytics_every": analytics_every,
    }))
    """
)


def test_the_patch_targets_the_installed_gradio() -> None:
    # Upgrading Gradio turns the patch off; this fails so that someone re-checks it.
    assert gr.__version__ == tuning.TUNED_FOR_GRADIO


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    checked: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    checked["startup_log"] = result.stdout + result.stderr
    return checked


def test_a_new_session_renders_nothing_until_asked_and_then_the_same_configs(
    report: dict[str, Any],
) -> None:
    assert report["applied"] is True
    assert report["built_at_start"] == 0
    assert report["count"] >= 50  # the real page, not a toy
    assert report["same_components"] is True


def test_startup_says_which_patches_were_applied(report: dict[str, Any]) -> None:
    assert "gradio.tuning" in report["startup_log"]
    assert "lazy_session_config" in report["startup_log"]


def test_the_queue_polls_and_summarizes_less_often(report: dict[str, Any]) -> None:
    assert report["tuned"] is True
    assert report["poll"] == tuning.QUEUE_POLL_S
    assert report["analytics_every"] == tuning.QUEUE_ANALYTICS_EVERY


def test_the_server_gets_uvicorn_c_speedups() -> None:
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    loop = auto_loop_factory()()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
    assert AutoHTTPProtocol is HttpToolsProtocol
