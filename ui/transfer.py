"""Export this chat or all chats (JSON, Markdown) and import a JSON export."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import gradio as gr

from chatlib.errors import ImportRejected
from chatlib.transfer import write_export
from ui.context import QUICK, PageContext
from ui.errors import refuse, shown_as_toast, unchanged
from ui.sidebar import SidebarPanel

Updates = dict[Any, Any]
Format = Literal["json", "markdown"]
# What each export button asks for: (every chat?, format).
EXPORTS: dict[str, tuple[bool, Format]] = {
    "current": (False, "json"),
    "markdown": (False, "markdown"),
    "all": (True, "json"),
}


class TransferPanel:
    """The "Export / import" accordion of the sidebar."""

    def __init__(self, ctx: PageContext, downloads_dir: Path) -> None:
        self.ctx = ctx
        # Downloads are copied from here into Gradio's cache, which drops files after an hour.
        self.downloads_dir = downloads_dir
        with gr.Accordion("Export / import", open=False, elem_id="transfer"):
            self.export_json_btn = gr.Button("Export this chat (JSON)", size="sm")
            self.export_md_btn = gr.Button("Export this chat (Markdown)", size="sm")
            self.export_all_btn = gr.Button("Export all my chats (JSON)", size="sm")
            self.export_file = gr.File(
                label="Download", visible=False, interactive=False, elem_id="export-file"
            )
            self.import_btn = gr.UploadButton(
                "Import JSON…", file_types=[".json"], size="sm", elem_id="import-button"
            )

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
        return {self.export_file: gr.update(value=str(download), visible=True)}

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

    def wire(self, sidebar: SidebarPanel) -> None:
        """Connect the buttons; an import refreshes `sidebar`'s list."""
        self.sidebar = sidebar
        ctx = self.ctx
        for button, what in (
            (self.export_json_btn, "current"),
            (self.export_md_btn, "markdown"),
            (self.export_all_btn, "all"),
        ):
            button.click(
                shown_as_toast(self.export),
                inputs=[gr.State(what), ctx.conversation_id, ctx.browser_state],
                outputs=[self.export_file],
                **QUICK,
            )
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
