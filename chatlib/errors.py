"""The error hierarchy: every failure a user can see, with a message they can act on."""

from __future__ import annotations


class ChatError(Exception):
    """Base class of every error this app shows to a user."""

    @property
    def user_message(self) -> str:
        """The text shown in the page."""
        return str(self)


class ConfigError(ChatError):
    """One or more settings are invalid; the message names each variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("Invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))


class InputError(ChatError):
    """The user's input was refused before anything was sent upstream."""


class MissingApiKey(ChatError):
    """Neither the operator nor the visitor configured an OpenRouter key."""

    def __init__(self) -> None:
        super().__init__(
            "No OpenRouter API key yet. Paste your own under “Your OpenRouter key” in the "
            "settings (it stays in your browser), or the operator can set "
            "OPENROUTER_API_KEY (in .env or as a Space secret). Get a key at "
            "https://openrouter.ai/keys."
        )


class UpstreamError(ChatError):
    """OpenRouter (or the provider behind it) failed the request."""

    status: int | None
    code: str

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "upstream_error",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class BadRequest(UpstreamError):
    """400: the request was malformed, e.g. the model id does not exist."""


class AuthenticationFailed(UpstreamError):
    """401: the API key is missing, wrong or revoked."""


class InsufficientCredits(UpstreamError):
    """402: the account behind the key has no credits left (before or during an answer)."""


# Every out-of-credit message says this, so an answer saved with one (status "interrupted",
# the stored schema's own word) can be told apart for its footer without a new stored field.
OUT_OF_CREDITS = "out of credits (402)"
ADD_CREDITS_URL = "https://openrouter.ai/settings/credits"


def is_out_of_credits(error_text: str | None) -> bool:
    """True when an answer's saved error says the OpenRouter account ran out of credit."""
    return error_text is not None and OUT_OF_CREDITS in error_text


class ModerationFlagged(UpstreamError):
    """403: the input was flagged by the provider's moderation."""


class UpstreamTimeout(UpstreamError):
    """408 or a client-side timeout before the answer started."""


class UpstreamRateLimited(UpstreamError):
    """429: OpenRouter's own rate limit (not this app's)."""


class ProviderUnavailable(UpstreamError):
    """5xx: the provider is down or no provider is available."""


class StreamInterrupted(UpstreamError):
    """The answer started but broke off (mid-stream error or dropped connection)."""


class StreamStalled(StreamInterrupted):
    """No token arrived within STREAM_IDLE_TIMEOUT_SECONDS."""


class RateLimited(ChatError):
    """This app's own per-visitor limit refused the turn (not OpenRouter's 429)."""

    code = "rate_limited"

    def __init__(self, retry_after: float, limit: int, *, doing: str = "sending messages") -> None:
        self.retry_after = retry_after
        self.limit = limit
        wait = max(1, -int(-retry_after // 1))  # whole seconds, rounded up
        super().__init__(
            f"You're {doing} too fast: the limit is {limit} per minute. Try again in {wait} s."
        )


class StorageError(ChatError):
    """A conversation could not be saved, loaded or deleted; the chat itself goes on."""


class ConversationNotFound(StorageError):
    """No such conversation for this visitor (whether it exists for another is not revealed)."""

    def __init__(self) -> None:
        super().__init__("This conversation does not exist (it may have been deleted).")


class ConversationDeleted(StorageError):
    """A turn ended in a conversation deleted meanwhile (perhaps from another tab)."""

    def __init__(self) -> None:
        super().__init__(
            "This chat was deleted (perhaps in another tab), so this message is not saved. "
            "Start a new chat to keep your messages."
        )


class ConversationChanged(StorageError):
    """A turn ended in a conversation that got newer messages meanwhile (another tab)."""

    def __init__(self) -> None:
        super().__init__(
            "This answer was not saved: the chat got newer messages meanwhile (perhaps in "
            "another tab), which are kept."
        )


class ConversationCorrupt(StorageError):
    """The conversation's file exists but cannot be read."""

    def __init__(self) -> None:
        super().__init__(
            "This conversation could not be read: its file is damaged. "
            "Your other conversations are not affected."
        )


class StorageUnavailable(StorageError):
    """The data folder cannot be read right now (it is damaged or was replaced)."""

    def __init__(self) -> None:
        super().__init__(
            "Your conversations cannot be read right now: the server's data folder has a "
            "problem. The operator should check DATA_DIR."
        )


class ImportRejected(ChatError):
    """An imported file was refused; `reason` names the element and the rule it broke."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Import refused: {reason}. Nothing was imported.")


class AttachmentNotFound(StorageError):
    """No such file for this visitor (whether another visitor has it is not revealed)."""

    def __init__(self) -> None:
        super().__init__("This file does not exist (the chat it was in may have been deleted).")
