"""Save conversations in a tight loop until killed (used by the SIGKILL test).

Usage: python tests/storage_crash_worker.py DATA_DIR OWNER_KEY

Prints "saving" once the first save is on disk, then keeps saving: a few conversations that
grow by one message per save, a new conversation now and then, an occasional rename and
deletion. It exits by itself after a while, so it never outlives a test that died.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from chatlib.messages import AnswerMeta, ChatMessage
from chatlib.storage import Conversation, ConversationStore

GIVE_UP_AFTER_SECONDS = 30.0


def main(root: Path, owner_key: str) -> None:
    """Save until killed."""
    store = ConversationStore(root)
    rng = random.Random()
    existing = store.list(owner_key).conversations
    conversations: list[Conversation] = [store.load(owner_key, s.id) for s in existing[:4]]
    while len(conversations) < 4:
        conversations.append(store.new_conversation("openai/gpt-4o", "Be brief.", 0.3))
    conversations[0] = store.save(owner_key, conversations[0])
    print("saving", flush=True)  # noqa: T201 - the test waits for this line
    deadline = time.monotonic() + GIVE_UP_AFTER_SECONDS
    step = 0
    while time.monotonic() < deadline:
        step += 1
        slot = rng.randrange(len(conversations))
        conversation = conversations[slot]
        role = "user" if len(conversation.messages) % 2 == 0 else "assistant"
        meta = AnswerMeta(model="openai/gpt-4o", status="complete", cost_usd=0.001)
        message = ChatMessage(
            role=role,
            content=f"step {step} " + "lorem ipsum " * rng.randrange(1, 400),
            meta=meta if role == "assistant" else None,
        )
        conversation = replace(conversation, messages=(*conversation.messages, message))
        conversations[slot] = store.save(owner_key, conversation)
        if step % 50 == 0:
            conversations[slot] = store.rename(owner_key, conversation.id, f"Renamed {step}")
        if step % 97 == 0:
            store.delete(owner_key, conversations[slot].id)
            conversations[slot] = store.new_conversation("openai/gpt-4o", "", 0.7)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
