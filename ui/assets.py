"""The page's CSS, its small scripts and its fixed texts."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"


def _static(suffix: str) -> str:
    """Every `ui/static/*<suffix>` file, in name order, joined (one per feature)."""
    return "\n".join(p.read_text("utf-8") for p in sorted(STATIC_DIR.glob(f"*{suffix}")))


def head_html() -> str:
    """The page's <head> additions: each static script, run once when the page opens.

    Scripts use event delegation on `document` (Gradio renders the app after they run).
    """
    return "".join(f"<script>\n{script}\n</script>" for script in _scripts())


def _scripts() -> list[str]:
    return [p.read_text("utf-8") for p in sorted(STATIC_DIR.glob("*.js"))]


CSS = """
#app-header h1 { margin: 0; font-size: 1.6rem; }
#app-header p { margin: 0.2rem 0 0; opacity: 0.75; }
#composer textarea { font-size: 1rem; }
#key-notice { border-left: 4px solid var(--color-accent); padding-left: 0.75rem; }
#conversation-list label { width: 100%; }
#session-ready { display: none; }
#conversation-list .wrap { flex-direction: column; gap: 4px; }
#chat .bubble-wrap { padding-top: 2.75rem; }
/* Gradio's trash icon only starts a new chat (the chat stays saved): "+ New chat" does that. */
#chat .icon-button-wrapper button[aria-label="Clear"] { display: none; }
#chat table { display: block; max-width: 100%; overflow-x: auto; word-break: normal; }
#chat th, #chat td { overflow-wrap: normal; word-break: normal; }
#export-file .stem { white-space: normal; word-break: break-all; }
#model-picker input { padding-right: 2.5rem; text-overflow: ellipsis; }
/* On a phone the message box must be on screen without scrolling. */
@media (max-width: 640px) {
  #app-header p { display: none; }
  #chat { height: 56vh !important; }
}
"""
CSS += _static(".css")

OPERATOR_KEY_HELP = """- **Operator:** put `OPENROUTER_API_KEY=sk-or-...` in a `.env` file next to
  `app.py` (or add it as a Space secret: *Settings → Variables and secrets*) and restart."""
NO_KEY_NOTICE_BYOK = f"""**No OpenRouter API key is configured yet, so messages cannot be sent.**

- **Visitor:** paste your own key under *Your OpenRouter key* in the settings (beside the
  chat; below it on a phone). It stays in your browser and is only used for your messages.
{OPERATOR_KEY_HELP}

Get a key at [openrouter.ai/keys](https://openrouter.ai/keys)."""

# On phones the sidebar would cover the whole chat: start with it closed there.
CLOSE_SIDEBAR_ON_PHONES_JS = """
() => {
  const close = (tries) => {
    const sidebar = document.querySelector('#sidebar.open');
    if (sidebar && window.innerWidth < 900) {
      sidebar.querySelector('.toggle-button')?.click();
    } else if (!sidebar && tries > 0) {
      setTimeout(() => close(tries - 1), 100);
    }
  };
  close(20);
}
"""

# On a phone the open sidebar covers the chat: close it once a chat is picked or started.
CLOSE_SIDEBAR_IF_NARROW_JS = """
(...inputs) => {
  if (window.innerWidth < 900) {
    document.querySelector('#sidebar.open')?.querySelector('.toggle-button')?.click();
  }
  return inputs;
}
"""

# The open chat's id reached the page: show it in the address bar (see static/chat.js).
SHOW_ADDRESS_JS = "(shown) => { window.orchat?.showAddress?.(shown); return []; }"
# The page opened at a chat's address is settled: "" means it was not found (see chat.js).
SETTLE_ADDRESS_JS = "(shown) => { window.orchat?.settleAddress?.(shown); return []; }"
