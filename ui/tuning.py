"""Gradio patches that make the server cheaper per visitor; each is logged at startup.

Every patch applies only to the Gradio release it was checked against (`TUNED_FOR_GRADIO`);
tests/test_gradio_tuning.py checks each one on the app's real Blocks.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from typing import Any

import gradio as gr
import structlog
from gradio import state_holder

log = structlog.get_logger(__name__)

TUNED_FOR_GRADIO = "6.31.0"
QUEUE_POLL_S = 0.005
QUEUE_ANALYTICS_EVERY = 100


def skip_missing_matplotlib() -> bool:
    """Make `import matplotlib` fail fast when it is not installed; True if applied.

    Gradio wraps every event in a helper that tries to import matplotlib; when it is absent,
    each attempt rescans sys.path (5-9 % of CPU while streaming, in a profile).
    """
    if "matplotlib" in sys.modules or importlib.util.find_spec("matplotlib") is not None:
        return False
    sys.modules["matplotlib"] = None  # type: ignore[assignment]
    return True


class _BlocksWithoutPage:
    """What `SessionState.__init__` reads from a Blocks, minus the blocks to render."""

    def __init__(self, blocks: gr.Blocks) -> None:
        self.default_config = blocks.default_config
        self.blocks: dict[int, Any] = {}


class _LazySessionState(state_holder.SessionState):
    """A Gradio session that renders a block's config only when something reads it."""

    def __init__(self, blocks: gr.Blocks) -> None:
        super().__init__(_BlocksWithoutPage(blocks))  # type: ignore[arg-type]
        self._page_ids = [k for k in self.blocks_config.blocks if k in blocks.blocks]

    @property
    def components(self) -> Iterator[dict[str, Any]]:
        # Only deep links read every block's config: build the missing ones now.
        for key in self._page_ids:
            if key not in self.config_values:
                block = self.blocks_config.blocks[key]
                self.config_values[key] = self.blocks_config.config_for_block(key, [], block)
        yield from super().components


def lazy_session_config() -> bool:
    """Stop Gradio rendering the whole page's config for every new session; True if applied.

    Each API call is a new session, and Gradio's `SessionState.__init__` renders the config of
    every block (inspect.signature, JSON schemas): ~15 ms of CPU before the handler runs and
    40 % of the server's CPU at 100 concurrent calls (bench/README.md). Sessions only read a
    block's config when it changes (built on demand there) or for a deep link (built above).
    """
    if gr.__version__ != TUNED_FOR_GRADIO:
        return False
    state_holder.SessionState = _LazySessionState  # type: ignore[misc]
    return True


def tune_queue(demo: gr.Blocks) -> bool:
    """Make Gradio's queue cheaper to run; True if applied.

    The queue loop polls for new events even when idle: every 1 ms it burns ~0.09 core all the
    time (a tenth of the server's CPU at 50 streams); every 5 ms, a third of that, for at most
    5 ms more before a new answer starts. Its monitoring summary is refreshed every 100
    events instead of after each one.
    """
    queue: Any = getattr(demo, "_queue", None)
    if gr.__version__ != TUNED_FOR_GRADIO or not hasattr(queue, "sleep_when_free"):
        return False
    queue.sleep_when_free = QUEUE_POLL_S
    if "GRADIO_ANALYTICS_CACHE_FREQUENCY" not in os.environ:
        # After every event Gradio rebuilds its monitoring summary with pandas over the last
        # 10 000 events (8 ms each once full); every 100 events is plenty.
        queue.ANAYLTICS_CACHE_FREQUENCY = QUEUE_ANALYTICS_EVERY
    return True


def before_build() -> dict[str, bool]:
    """Patches to apply before the Blocks are built."""
    return {
        "skip_missing_matplotlib": skip_missing_matplotlib(),
        "lazy_session_config": lazy_session_config(),
    }


def after_queue(demo: gr.Blocks, applied: dict[str, bool]) -> dict[str, bool]:
    """Patches to apply once the queue exists; logs every patch and whether it applied."""
    applied = {**applied, "tune_queue": tune_queue(demo)}
    log.info("gradio.tuning", gradio=gr.__version__, tuned_for=TUNED_FOR_GRADIO, **applied)
    return applied
