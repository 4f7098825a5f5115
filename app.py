"""OpenRouter Chat: the Gradio UI. Wiring only; all behaviour lives in chatlib."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from chatlib.chat import TurnRequest
from chatlib.config import TEMPERATURE_SLIDER_MAX, Settings
from chatlib.errors import ChatError, ConfigError
from chatlib.logging import configure_logging
from chatlib.messages import (
    History,
    history_from_dicts,
    strip_last_turn,
    to_display,
    user_message_index,
)
from chatlib.services import Services, create_services

CATALOG_WAIT_ON_LOAD_S = 2.0

CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#app-header h1 { margin: 0; font-size: 1.6rem; }
#app-header p { margin: 0.2rem 0 0; opacity: 0.75; }
#chat { flex-grow: 1; }
#composer textarea { font-size: 1rem; }
#key-notice { border-left: 4px solid var(--color-accent); padding-left: 0.75rem; }
"""

NO_KEY_NOTICE = """**No OpenRouter API key is configured, so messages cannot be sent yet.**

- Running locally: put `OPENROUTER_API_KEY=sk-or-...` in a `.env` file next to `app.py` and restart.
- On a Hugging Face Space: *Settings → Variables and secrets → New secret*, name
  `OPENROUTER_API_KEY`, then restart the Space.

Get a key at [openrouter.ai/keys](https://openrouter.ai/keys)."""

Outputs = tuple[Any, ...]


def _catalog_status(services: Services) -> str:
    catalog = services.catalog
    if catalog.is_live:
        return f"✓ {len(catalog.models)} models from OpenRouter. You can also type any model id."
    return (
        "⚠ The live model list is offline; showing a built-in list. "
        "You can still type any model id."
    )


def build_demo(settings: Settings, services: Services) -> gr.Blocks:
    """Build the Gradio app around the given settings and services."""
    chat = services.chat

    async def stream_turn(
        history: History,
        user_text: str,
        model: str,
        system_prompt: str,
        temperature: float,
        request: gr.Request | None,
        *,
        clear_input: bool,
    ) -> AsyncIterator[Outputs]:
        turn = TurnRequest(
            history=history,
            user_text=user_text,
            model=(model or settings.default_model).strip(),
            system_prompt=system_prompt or "",
            temperature=float(temperature),
            session_key=request.session_hash if request is not None else None,
        )
        frames = chat.run_turn(turn)
        try:
            first = await anext(frames)
        except ChatError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        yield (
            to_display(first.history),
            first.history,
            "" if clear_input else gr.skip(),
            gr.update(visible=False),
            gr.update(visible=True),
        )
        async for frame in frames:
            if not frame.done:
                yield to_display(frame.history), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                continue
            if frame.error is not None:
                gr.Warning(frame.error.user_message)
            yield (
                to_display(frame.history),
                frame.history,
                gr.skip(),
                gr.update(visible=True),
                gr.update(visible=False),
            )

    async def respond(
        message: str,
        history: History,
        model: str,
        system_prompt: str,
        temperature: float,
        request: gr.Request,
    ) -> AsyncIterator[Outputs]:
        async for outputs in stream_turn(
            history, message, model, system_prompt, temperature, request, clear_input=True
        ):
            yield outputs

    async def retry(
        history: History,
        model: str,
        system_prompt: str,
        temperature: float,
        request: gr.Request,
    ) -> AsyncIterator[Outputs]:
        earlier, last_text = strip_last_turn(history)
        if last_text is None:
            raise gr.Error("There is no message to retry yet.", print_exception=False)
        async for outputs in stream_turn(
            earlier, last_text, model, system_prompt, temperature, request, clear_input=False
        ):
            yield outputs

    async def edit(
        history: History,
        model: str,
        system_prompt: str,
        temperature: float,
        edit_data: gr.EditData,
        request: gr.Request,
    ) -> AsyncIterator[Outputs]:
        shown = to_display(history)
        position = edit_data.index if isinstance(edit_data.index, int) else edit_data.index[0]
        nth_user = sum(1 for m in shown[: position + 1] if m["role"] == "user") - 1
        index = user_message_index(history, nth_user)
        if index is None:
            raise gr.Error("Only your own messages can be edited.", print_exception=False)
        new_text = edit_data.value if isinstance(edit_data.value, str) else str(edit_data.value)
        async for outputs in stream_turn(
            history[:index],
            new_text,
            model,
            system_prompt,
            temperature,
            request,
            clear_input=False,
        ):
            yield outputs

    def undo(history: History) -> Outputs:
        earlier, last_text = strip_last_turn(history)
        return to_display(earlier), earlier, last_text or gr.skip()

    def clear() -> Outputs:
        return [], ()

    def stop(request: gr.Request) -> None:
        chat.stop(request.session_hash or "")

    async def load_catalog() -> Outputs:
        services.catalog.refresh_in_background()
        task = services.catalog.pending_refresh
        if task is not None:
            await asyncio.wait({task}, timeout=CATALOG_WAIT_ON_LOAD_S)
        return (
            gr.update(choices=services.catalog.choices([settings.default_model])),
            _catalog_status(services),
        )

    async def chat_api(
        message: str,
        model: str = settings.default_model,
        system_prompt: str = "",
        temperature: float = settings.slider_temperature,
        history: list[dict[str, str]] | None = None,
    ) -> AsyncIterator[str]:
        """Stream an answer to `message`; `history` is an optional list of prior messages."""
        try:
            prior = history_from_dicts(history)
        except (ValueError, TypeError, AttributeError) as exc:
            raise gr.Error(f"Invalid history: {exc}", print_exception=False) from None
        turn = TurnRequest(
            history=prior,
            user_text=message,
            model=(model or settings.default_model).strip(),
            system_prompt=system_prompt or "",
            temperature=min(max(float(temperature), 0.0), 2.0),
        )
        frames = chat.run_turn(turn)
        try:
            await anext(frames)
        except ChatError as exc:
            raise gr.Error(exc.user_message, print_exception=False) from None
        async for frame in frames:
            yield frame.answer.content
            if frame.done and frame.error is not None:
                raise gr.Error(frame.error.user_message, print_exception=False)

    demo: gr.Blocks
    with gr.Blocks(title=settings.app_title, fill_height=True) as demo:
        gr.HTML(
            f"<div id='app-header'><h1>{_escape(settings.app_title)}</h1>"
            "<p>Chat with any model on OpenRouter. Answers stream live; cost is shown per "
            "message.</p></div>"
        )
        gr.Markdown(NO_KEY_NOTICE, elem_id="key-notice", visible=not settings.openrouter_api_key)
        history_state = gr.State(())
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                chatbot = gr.Chatbot(
                    elem_id="chat",
                    show_label=False,
                    height="68vh",
                    editable="user",
                    buttons=["copy", "copy_all"],
                    feedback_options=None,
                    placeholder="**Ask anything.** Pick a model on the right.",
                    latex_delimiters=[
                        {"left": "$$", "right": "$$", "display": True},
                        {"left": "\\(", "right": "\\)", "display": False},
                    ],
                    group_consecutive_messages=False,
                )
                with gr.Row(elem_id="composer", equal_height=True):
                    textbox = gr.Textbox(
                        show_label=False,
                        placeholder="Message… (Enter to send, Shift+Enter for a new line)",
                        lines=1,
                        max_lines=12,
                        scale=8,
                        autofocus=True,
                        elem_id="message-input",
                    )
                    send_btn = gr.Button("Send", variant="primary", scale=1, min_width=80)
                    stop_btn = gr.Button(
                        "Stop", variant="stop", scale=1, min_width=80, visible=False
                    )
                with gr.Row():
                    clear_btn = gr.Button("New chat", size="sm", variant="secondary")
            with gr.Column(scale=1, min_width=280):
                model = gr.Dropdown(
                    choices=services.catalog.choices([settings.default_model]),
                    value=settings.default_model,
                    label="Model",
                    info="Type to search; any OpenRouter model id works.",
                    allow_custom_value=True,
                    filterable=True,
                    elem_id="model-picker",
                )
                catalog_status = gr.Markdown(_catalog_status(services), elem_id="catalog-status")
                system_prompt = gr.Textbox(
                    label="System prompt",
                    placeholder="e.g. You are a concise assistant.",
                    lines=3,
                    max_lines=12,
                    elem_id="system-prompt",
                )
                temperature = gr.Slider(
                    minimum=0.0,
                    maximum=TEMPERATURE_SLIDER_MAX,
                    step=0.05,
                    value=settings.slider_temperature,
                    label="Temperature",
                    info="Lower is more focused, higher more creative.",
                    elem_id="temperature",
                )

        turn_outputs = [chatbot, history_state, textbox, send_btn, stop_btn]
        settings_inputs = [model, system_prompt, temperature]
        common: dict[str, Any] = {
            "concurrency_limit": None,
            "show_progress": "hidden",
            "api_visibility": "private",
        }
        gr.on(
            [textbox.submit, send_btn.click],
            respond,
            inputs=[textbox, history_state, *settings_inputs],
            outputs=turn_outputs,
            **common,
        )
        chatbot.retry(
            retry, inputs=[history_state, *settings_inputs], outputs=turn_outputs, **common
        )
        chatbot.edit(edit, inputs=[history_state, *settings_inputs], outputs=turn_outputs, **common)
        chatbot.undo(
            undo,
            inputs=[history_state],
            outputs=[chatbot, history_state, textbox],
            queue=False,
            api_visibility="private",
        )
        gr.on(
            [clear_btn.click, chatbot.clear],
            clear,
            outputs=[chatbot, history_state],
            queue=False,
            api_visibility="private",
        )
        stop_btn.click(stop, queue=False, api_visibility="private")
        demo.load(
            load_catalog,
            outputs=[model, catalog_status],
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
        gr.api(chat_api, api_name="chat", concurrency_limit=None)  # type: ignore[attr-defined]
    return demo


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _skip_missing_matplotlib() -> None:
    """Make `import matplotlib` fail fast when it is not installed.

    Gradio wraps every event in a helper that tries to import matplotlib; when it is absent,
    each attempt rescans sys.path (5-9 % of CPU while streaming, in a profile).
    """
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def launch_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments for `demo.launch()` derived from settings."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "max_threads": settings.max_concurrent_streams,
        "theme": gr.themes.Soft(primary_hue="indigo", neutral_hue="slate"),
        "css": CSS,
        "ssr_mode": False,
        "footer_links": ["api"],
    }


def main() -> None:
    """Read settings, set up logging and services, and serve."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
    redactor = configure_logging(settings)
    services = create_services(settings, redactor)
    services.catalog.prefetch_in_thread()
    _skip_missing_matplotlib()
    demo = build_demo(settings, services)
    demo.queue(default_concurrency_limit=None, max_size=None)
    demo.launch(**launch_kwargs(settings))


if __name__ == "__main__":
    main()
