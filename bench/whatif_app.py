"""`app.py` with experimental patches applied from outside, to measure suggested fixes.

Bench-only: nothing here is used by the app. Run through the bench, e.g.

    .venv/bin/python bench/stream_overhead.py --quick --app-script bench/whatif_app.py \
        --app-env WHATIF=lazy_session

WHATIF is a comma-separated list of:

* (raw_sse, measured here first, is now how `chatlib.client.stream_chat` works.)
* lazy_session: make Gradio build a session's per-block config on demand. Every API call is a
  new session, and `SessionState.__init__` renders the config of every block of the page
  (inspect.signature, JSON schemas) although a streaming API call needs none of it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from copy import copy
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app  # noqa: E402


def patch_lazy_session() -> None:
    from gradio import state_holder

    cls = state_holder.SessionState

    def __init__(self: Any, blocks: Any) -> None:  # noqa: N807
        self.blocks_config = copy(blocks.default_config)
        self._lazy_block_ids = [k for k in self.blocks_config.blocks if k in blocks.blocks]
        self.config_values = {}
        self.state_data = {}
        self._state_ttl = {}
        self.is_closed = False
        self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600

    def components(self: Any) -> Iterator[dict[str, Any]]:
        # Deep links need every block's config: build the ones not built yet, in block order.
        for key in self._lazy_block_ids:
            if key not in self.config_values:
                block = self.blocks_config.blocks[key]
                self.config_values[key] = self.blocks_config.config_for_block(key, [], block)
        for config in self.config_values.values():
            if config:
                yield config

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.components = property(components)  # type: ignore[attr-defined]


PATCHES = {"lazy_session": patch_lazy_session}


def main() -> None:
    for name in filter(None, (n.strip() for n in os.environ.get("WHATIF", "").split(","))):
        PATCHES[name]()
        sys.stderr.write(f"whatif: applied {name}\n")
    app.main()


if __name__ == "__main__":
    main()
