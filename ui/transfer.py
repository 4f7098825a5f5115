"""Export a chat or all chats (JSON, Markdown), downloaded in one click; import a JSON export.

One chat is exported from its ⋯ menu in the list (ui/sidebar.py); "Export all" and "Import"
are the buttons at the bottom of the sidebar.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import gradio as gr

from chatlib.errors import ImportRejected
from chatlib.transfer import write_export
from ui.context import QUICK, PageContext
from ui.errors import refuse, shown_as_toast, unchanged

if TYPE_CHECKING:
    from gradio.events import Dependency

    from ui.sidebar import SidebarPanel

Updates = dict[Any, Any]
Format = Literal["json", "markdown"]
# What each export button asks for: (every chat?, format).
EXPORTS: dict[str, tuple[bool, Format]] = {
    "current": (False, "json"),
    "markdown": (False, "markdown"),
    "all": (True, "json"),
}
# Runs in the browser after an export: download the file just made, then forget it, so that
# an export that was refused (nothing new here) downloads nothing.
DOWNLOAD_JS = """
(file) => {
  if (file && file.url) {
    const link = document.createElement("a");
    link.href = file.url;
    link.download = file.orig_name || "";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }
  return null;
}
"""


class TransferPanel:
    """ "Export all" and "Import" at the bottom of the sidebar, and every export's download."""

    def __init__(self, ctx: PageContext, downloads_dir: Path) -> None:
        self.ctx = ctx
        # Downloads are copied from here into Gradio's cache, which drops files after an hour.
        self.downloads_dir = downloads_dir
        with gr.Row(elem_id="transfer", equal_height=True):
            self.export_all_btn = gr.Button(
                "Export all", size="sm", min_width=0, elem_id="export-all"
            )
            self.import_btn = gr.UploadButton(
                "Import…", file_types=[".json"], size="sm", min_width=0, elem_id="import-button"
            )
        # Never shown: DOWNLOAD_JS hands the file to the browser as soon as it is written.
        self.export_file = gr.File(visible="hidden", interactive=False, elem_id="export-file")

    async def export(
        self,
        what: str,
        conversation_id: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        visitor = self.ctx.visitor(browser_value, profile, request)
        everything, fmt = EXPORTS[what]
        if not everything and conversation_id is None:
            refuse("This chat is empty: nothing to export.")
        await self.ctx.count_request(visitor, "exporting")
        exported = await self.ctx.services.conversations.export(
            visitor.owner_key, None if everything else conversation_id, fmt
        )
        # Offer a private copy: Gradio serves it from its cache under an unguessable path.
        try:
            download = await asyncio.to_thread(
                write_export,
                self.downloads_dir,
                exported.data,
                datetime.now(UTC),
                name=exported.name,
            )
        except OSError:
            refuse("The download could not be prepared: the server's disk refused the file.")
        return {self.export_file: gr.update(value=str(download))}

    async def import_file(
        self,
        upload: str | None,
        browser_value: Any,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Updates:
        if not upload:
            return unchanged()
        visitor = self.ctx.visitor(browser_value, profile, request)
        await self.ctx.count_request(visitor, "importing")
        data = await asyncio.to_thread(
            _read_capped, Path(upload), self.ctx.settings.max_import_bytes
        )
        saved = await self.ctx.services.conversations.import_file(visitor.owner_key, data)
        gr.Info(f"Imported {saved} conversation(s).")
        return await self.sidebar.refreshed(visitor.owner_key, None)

    def download_when_ready(self, event: Dependency) -> None:
        """After `event` (which may write `export_file`), the browser downloads the file."""
        event.then(
            None,
            inputs=[self.export_file],
            outputs=[self.export_file],
            js=DOWNLOAD_JS,
            **QUICK,
        )

    def wire(self, sidebar: SidebarPanel) -> None:
        """Connect the buttons and the chats' menus; an import refreshes `sidebar`'s list."""
        self.sidebar = sidebar
        ctx = self.ctx
        exported = self.export_all_btn.click(
            shown_as_toast(self.export),
            inputs=[gr.State("all"), gr.State(None), ctx.browser_state],
            outputs=[self.export_file],
            **QUICK,
        )
        self.download_when_ready(exported)
        sidebar.wire_menu(self)
        self.import_btn.upload(
            shown_as_toast(self.import_file),
            inputs=[self.import_btn, ctx.browser_state],
            outputs=sidebar.list_outputs,
            **QUICK,
        )


def _read_capped(path: Path, max_bytes: int) -> bytes:
    """The upload's bytes, and the upload removed; refused when over the import limit."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImportRejected(
                f"file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB"
            )
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)  # it holds private text: no need to wait for the sweep
