"""How an answer is asked for beyond model and temperature: web search, reasoning, length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

ReasoningEffort = Literal["off", "low", "medium", "high"]
REASONING_EFFORTS: Final[tuple[ReasoningEffort, ...]] = get_args(ReasoningEffort)
MAX_ANSWER_TOKENS: Final = 1_000_000  # a sanity bound; the model's own cap is applied upstream


@dataclass(frozen=True)
class AnswerOptions:
    """Saved with a conversation; a turn without its own options uses the conversation's.

    `reasoning_effort` reaches upstream only for models whose catalog entry takes
    `reasoning`; `max_tokens` (None: the model's default) for every model.
    """

    web_search: bool = False
    reasoning_effort: ReasoningEffort = "off"
    max_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (every field, so an export says what was asked)."""
        return {
            "web_search": self.web_search,
            "reasoning_effort": self.reasoning_effort,
            "max_tokens": self.max_tokens,
        }
