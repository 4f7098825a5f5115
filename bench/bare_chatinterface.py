"""The ~20-line app a user would otherwise write: one Gradio update per streamed token.

Baseline for `bench/stream_overhead.py`. Reads OPENROUTER_BASE_URL, OPENROUTER_API_KEY and PORT;
BARE_UNLIMITED=1 lifts Gradio's default concurrency limit of 1 with
`demo.queue(default_concurrency_limit=None)`. Everything else is Gradio's defaults, including
what `pip install gradio openai` installs: uvicorn without uvloop and httptools (this app's
requirements add them), unless BARE_UVLOOP=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

if os.environ.get("BARE_UVLOOP") != "1":
    sys.modules["uvloop"] = None  # type: ignore[assignment]
    sys.modules["httptools"] = None  # type: ignore[assignment]

import gradio as gr  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

client = AsyncOpenAI(
    base_url=os.environ["OPENROUTER_BASE_URL"], api_key=os.environ.get("OPENROUTER_API_KEY", "")
)


async def respond(message: str, history: list[dict[str, str]]) -> AsyncIterator[str]:
    messages = [{"role": m["role"], "content": m["content"]} for m in history]
    stream = await client.chat.completions.create(
        model="openai/gpt-4o",
        messages=[*messages, {"role": "user", "content": message}],  # type: ignore[list-item]
        stream=True,
    )
    text = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            yield text


demo = gr.ChatInterface(respond, api_name="chat")  # Gradio 6 would name it "respond"

if __name__ == "__main__":
    if os.environ.get("BARE_UNLIMITED") == "1":
        demo.queue(default_concurrency_limit=None)
    demo.launch(server_name="127.0.0.1", server_port=int(os.environ["PORT"]))
