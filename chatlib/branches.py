"""Versions of messages: a conversation is a tree, and `Conversation.messages` its active path.

Editing a question or retrying an answer keeps the old one as another *version* of that
message: a sibling (same parent, same role). `Conversation.messages` stays the flat active
path that everything else reads (upstream history, display, search, exports), and
`Conversation.branches` holds every other node, each with its parent's id (None: a version
of the first message). The parent of `messages[i]` is `messages[i - 1]`.

`branches` is kept least recently active first: a path that leaves the active path goes to
the end. Switching to a version descends into its most recently active child at each level,
so switching back and forth returns to where the visitor was. Versions are numbered in the
order they were written (`created_at`, then id).

Every function here is pure: it returns a new conversation and never mutates one.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from chatlib.errors import InputError
from chatlib.messages import ChatMessage, History

if TYPE_CHECKING:
    from chatlib.storage import Conversation

__all__ = [
    "NO_OTHER_VERSION",
    "BranchNode",
    "Branches",
    "drop_from",
    "fork",
    "new_id",
    "prune",
    "same_tree",
    "switch",
    "versions_of",
    "with_ids",
]

NO_OTHER_VERSION = "This message has no other version."
_ID_BYTES = 6  # 12 hex digits: unique enough within one conversation, and checked anyway


@dataclass(frozen=True)
class BranchNode:
    """An inactive message: a version that is not on the active path, under its parent."""

    parent_id: str | None  # None: a version of the conversation's first message
    message: ChatMessage

    @property
    def id(self) -> str:
        """The node's id is its message's."""
        return self.message.id

    def to_dict(self) -> dict[str, Any]:
        """The message's dict plus `parent_id` (how exports and stored rows carry it)."""
        return {**self.message.to_dict(), "parent_id": self.parent_id}


Branches = tuple[BranchNode, ...]


def new_id(taken: Collection[str]) -> str:
    """A short random hex id that is not in `taken`."""
    while True:
        candidate = secrets.token_hex(_ID_BYTES)
        if candidate not in taken:
            return candidate


def default_id(position: int) -> str:
    """The id of a message stored before ids existed: its position + 1 in 12 hex digits.

    Deterministic, so such a message reads with the same id every time (migration 0002
    gives the database's rows the same ones).
    """
    return f"{position + 1:012x}"


def with_ids(messages: History, branches: Sequence[BranchNode] = ()) -> History:
    """`messages` where each one without an id has its default id (a random one if taken)."""
    if all(m.id for m in messages):
        return messages
    taken = {m.id for m in messages if m.id} | {n.id for n in branches}
    identified: list[ChatMessage] = []
    for position, message in enumerate(messages):
        if not message.id:
            candidate = default_id(position)
            if candidate in taken:
                candidate = new_id(taken)
            taken.add(candidate)
            message = replace(message, id=candidate)
        identified.append(message)
    return tuple(identified)


def parent_of(messages: Sequence[ChatMessage], index: int) -> str | None:
    """The id of the active message before `index` (None for the first)."""
    return messages[index - 1].id if index > 0 else None


def _by_parent(branches: Sequence[BranchNode]) -> dict[str | None, list[BranchNode]]:
    children: dict[str | None, list[BranchNode]] = {}
    for node in branches:
        children.setdefault(node.parent_id, []).append(node)
    return children


def _written_order(message: ChatMessage) -> tuple[float, str]:
    created = -math.inf if message.created_at is None else message.created_at
    return created, message.id


def _versions(
    messages: Sequence[ChatMessage], index: int, children: dict[str | None, list[BranchNode]]
) -> list[ChatMessage]:
    """Every version of `messages[index]`, the active one included, in the order written."""
    active = messages[index]
    others = [
        n.message
        for n in children.get(parent_of(messages, index), ())
        if n.message.role == active.role
    ]
    return sorted([active, *others], key=_written_order)


def versions_of(conversation: Conversation) -> tuple[tuple[int, int], ...]:
    """(k, n) for each active message: it is version k (1-based) of n; (1, 1) when alone."""
    children = _by_parent(conversation.branches)
    messages = conversation.messages
    numbered: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        versions = _versions(messages, index, children)
        ids = [v.id for v in versions]
        numbered.append((ids.index(message.id) + 1, len(versions)))
    return tuple(numbered)


def _as_nodes(messages: Sequence[ChatMessage], start: int) -> Branches:
    """`messages[start:]` as inactive nodes, each under the message before it."""
    return tuple(
        BranchNode(parent_of(messages, i), messages[i]) for i in range(start, len(messages))
    )


def fork(conversation: Conversation, index: int) -> Conversation:
    """Move `messages[index:]` off the active path, kept as versions (edit and retry).

    The caller puts the new version at `index`; until then the old one waits under the
    last active message.
    """
    messages = conversation.messages
    return replace(
        conversation,
        messages=messages[:index],
        branches=(*conversation.branches, *_as_nodes(messages, index)),
    )


def switch(conversation: Conversation, message_index: int, step: int) -> Conversation:
    """Make the version `step` away (-1: previous, +1: next) of `messages[message_index]` active.

    The active path then continues down that version's most recently active children; the
    path it replaces is kept, so switching back returns to it. InputError when there is
    no such version.
    """
    messages = conversation.messages
    if not 0 <= message_index < len(messages) or step == 0:
        raise InputError(NO_OTHER_VERSION)
    versions = _versions(messages, message_index, _by_parent(conversation.branches))
    wanted = [v.id for v in versions].index(messages[message_index].id) + step
    if not 0 <= wanted < len(versions):
        raise InputError(NO_OTHER_VERSION)
    target = versions[wanted]
    rest = [n for n in conversation.branches if n.id != target.id]
    children = _by_parent(rest)
    path, chosen = [target], {target.id}
    while children.get(path[-1].id):
        latest = children[path[-1].id][-1]  # the most recently active child
        path.append(latest.message)
        chosen.add(latest.id)
    switched = replace(
        conversation,
        messages=(*messages[:message_index], *path),
        branches=(
            *(n for n in rest if n.id not in chosen),
            *_as_nodes(messages, message_index),  # now the most recently active
        ),
    )
    return prune(switched)


def drop_from(conversation: Conversation, index: int) -> Conversation:
    """Remove `messages[index:]`, the other versions of `messages[index]` and all below them.

    What undo does: the last turn goes, with every version that hung only off it.
    """
    messages = conversation.messages
    parent = parent_of(messages, index)
    return prune(
        replace(
            conversation,
            messages=messages[:index],
            branches=tuple(n for n in conversation.branches if n.parent_id != parent),
        )
    )


def prune(conversation: Conversation) -> Conversation:
    """Keep only the inactive nodes a visitor can reach by switching versions.

    Reachable: a version of an active message (same parent, same role), a node waiting
    under the last active message (an edit or retry whose new version is not saved yet),
    and anything below those. Nodes with an unknown parent, in a cycle, or repeating an
    id are dropped.
    """
    messages = conversation.messages
    role_under = {parent_of(messages, i): m.role for i, m in enumerate(messages)}
    last = parent_of(messages, len(messages))
    active_ids = {m.id for m in messages}
    unique: dict[str, BranchNode] = {}
    for node in conversation.branches:
        if node.id not in active_ids and node.id not in unique:
            unique[node.id] = node
    children = _by_parent(list(unique.values()))
    stack = [
        n.id
        for n in unique.values()
        if n.parent_id == last
        or (n.parent_id in role_under and role_under[n.parent_id] == n.message.role)
    ]
    reachable: set[str] = set()
    while stack:
        node_id = stack.pop()
        if node_id not in reachable:
            reachable.add(node_id)
            stack.extend(child.id for child in children.get(node_id, ()))
    kept = tuple(n for n in unique.values() if n.id in reachable)
    if len(kept) == len(conversation.branches):
        return conversation
    return replace(conversation, branches=kept)


def same_tree(one: Conversation, other: Conversation) -> bool:
    """Whether both hold the same messages under the same ids (message equality skips ids)."""
    return (
        one.messages == other.messages
        and [m.id for m in one.messages] == [m.id for m in other.messages]
        and one.branches == other.branches
        and [n.id for n in one.branches] == [n.id for n in other.branches]
    )
