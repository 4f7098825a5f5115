"""The one door to stored conversations: turns, listing, renames, undo, export and import.

Every call names the owner and looks the conversation up for that owner, so a visitor can
only ever reach their own. A turn is one pass: the question is saved before the upstream
call and the answer when it ends, whether complete, stopped or failed, checked against the
conversation's revision so an answer ending after a delete, a rename or a newer turn in
another tab never undoes them, and a storage failure never costs the visitor their answer.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import structlog

from chatlib import branches
from chatlib.attachments import Attachment, AttachmentLimits
from chatlib.chat import ChatService, TurnFrame, TurnRequest
from chatlib.client import Clock
from chatlib.compare import Column, CompareControl, CompareFrame, check_models, merged
from chatlib.errors import (
    ChatError,
    ConversationChanged,
    ConversationDeleted,
    InputError,
    StorageError,
    StorageUnavailable,
)
from chatlib.frames import TurnControl, run_to_end
from chatlib.messages import (
    ChatMessage,
    History,
    format_cost,
    strip_last_turn,
    user_message_index,
)
from chatlib.options import AnswerOptions
from chatlib.storage import (
    NEW_CHAT_TITLE,
    Conversation,
    ConversationSummary,
    ListResult,
    conversation_title,
)
from chatlib.store import ConversationStoreProtocol, SqlAttachmentStore
from chatlib.transfer import (
    ExportFile,
    ExportFormat,
    build_export,
    gather_files,
    parse_import_file,
    write_export,
)

__all__ = [
    "ConversationFrame",
    "ConversationService",
    "TurnRequest",
    "relative_time",
    "summary_label",
]

log = structlog.get_logger(__name__)

_V = TypeVar("_V")
NO_RETRY = "There is no message to retry yet."
NOT_EDITABLE = "Only your own messages can be edited."
NO_ATTACHMENT_STORE = (
    "This server cannot keep attached files, so none can be sent. Send the message without them."
)
LAST_SEEN_CONVERSATIONS = 256  # kept for a chat to go on while the data folder is unreadable


@dataclass(frozen=True)
class ConversationFrame:
    """The conversation as it should look now, plus what went wrong, if anything.

    `files`, `dropped_attachments` and `notes` are the turn's (see chat.TurnFrame): the bytes
    of this turn's files by SHA-256 (the question's, and the pictures drawn so far, which
    are in the store only once the frame is `done`), older files not sent, and sentences
    for the page to show under the answer.
    """

    conversation: Conversation
    done: bool = False
    error: ChatError | None = None
    save_error: StorageError | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    dropped_attachments: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Prepared:
    """A turn's starting point: where it writes and what it asks after what."""

    conversation: Conversation  # as stored (the replaced versions kept), or new and unsaved
    stored: Conversation | None  # what the question's save expects to find (None: new)
    history: History  # the messages before the question
    request: TurnRequest  # with the question to ask (retry: the last one again)
    ids: tuple[str, str] = ("", "")  # the question's and the answer's, fixed for the turn
    question: ChatMessage | None = None  # retry: the stored question, asked again

    def identified(self, history: History) -> History:
        """`history` with this turn's question and answer under their ids in every frame.

        Retry asks the stored question again: it stays that node, written when it was.
        """
        at = len(self.history)
        turn = list(history[at:])
        if turn and not turn[0].id:
            written = turn[0].created_at if self.question is None else self.question.created_at
            turn[0] = replace(turn[0], id=self.ids[0], created_at=written)
        if len(turn) > 1 and not turn[1].id:
            turn[1] = replace(turn[1], id=self.ids[1])
        return (*history[:at], *turn)


class ConversationService:
    """Stored conversations of every owner, and which one each page is viewing."""

    def __init__(
        self,
        store: ConversationStoreProtocol,
        chat: ChatService,
        *,
        exports_dir: Path,
        max_import_bytes: int,
        clock: Clock = time.time,
        max_sessions: int = 20_000,
        attachments: SqlAttachmentStore | None = None,
    ) -> None:
        self._store = store
        self._attachments = attachments
        self._chat = chat
        self._exports_dir = exports_dir
        self._max_import_bytes = max_import_bytes
        self._clock = clock
        self._viewing: OrderedDict[str, str | None] = OrderedDict()
        # The last state of recently answered conversations, used only while the data folder
        # cannot be read (see _load_for_turn); never to decide what is deleted or renamed.
        self._last_seen: OrderedDict[tuple[str, str], Conversation] = OrderedDict()
        self._max_sessions = max_sessions
        # The comparison each page is running: a newer one from the same page stops it, as a
        # newer turn stops an older one (one page never has more than three answers going).
        self._comparing: dict[str, CompareControl] = {}

    # -- turns -------------------------------------------------------------------------------

    def turn(
        self, request: TurnRequest, control: TurnControl | None = None
    ) -> AsyncGenerator[ConversationFrame]:
        """Answer in the owner's conversation (a new one without an id), saving as it goes.

        Raises ChatError before the first frame when the turn is refused (nothing is saved
        then): the chat's checks, a conversation this owner does not have, nothing to
        retry, a message that cannot be edited. "retry" asks the last question again in
        place of its answer; "edit" asks `user_text` in place of the `edit_index`th question
        and everything after it. If the consumer leaves mid-answer (closes the iterator, or
        its task is cancelled), the answer is stopped and saved in the background.
        `control` lets its owner stop the turn (`control.stop()`); a request without a
        `session_key` is then reachable only through it.
        """
        control = control or TurnControl()
        return run_to_end(self._turn(request, control), control)

    def stop(self, session_key: str) -> bool:
        """Stop the answer streaming for `session_key`; True if there was one."""
        return self._chat.stop(session_key)

    async def _turn(
        self, request: TurnRequest, control: TurnControl
    ) -> AsyncIterator[ConversationFrame]:
        start = await self._prepare(request)
        conversation, request = start.conversation, start.request
        owner_key = request.owner_key
        frames = self._chat.frames(
            replace(request, conversation_id=conversation.id),
            start.history,
            control,
            files=self._attachments,
            asked_files=() if start.question is None else start.question.attachments,
        )
        first = await anext(frames)  # the chat's refusals are raised here
        # The files go in before the question that refers to them: a saved message never
        # points at a missing file.
        await self._store_question_files(owner_key, request.attachments, frames)
        # A conversation without a question yet is titled from this one (the one rule).
        title = conversation.title if _has_question(start.history) else NEW_CHAT_TITLE
        base = replace(
            conversation,
            title=conversation_title(title, first.history),
            model=request.model.strip(),
            system_prompt=request.system_prompt,
            temperature=float(request.temperature),
            # What this turn asked with (see _prepare): a later retry asks the same way.
            options=request.options or conversation.options,
        )
        shown = start.identified(first.history)
        saved, save_error = await self._save(
            owner_key, replace(base, messages=shown[:-1]), start.stored
        )
        # What the answer's save expects to find: the question as saved, else what was.
        expected = start.stored if save_error is not None else saved
        self.view(request.session_key, conversation.id)  # a turn starts where the visitor is
        yield _frame(replace(base, messages=shown), first, save_error=save_error)
        async for frame in frames:
            current = replace(base, messages=start.identified(frame.history))
            if not frame.done:
                yield _frame(current, frame)
                continue
            current, files_error = await self._store_answer_files(owner_key, current, frame)
            final, final_error = await self._save_answer(owner_key, current, expected, save_error)
            self._seen(owner_key, final)
            yield _frame(
                final, frame, save_error=final_error or files_error or save_error, done=True
            )

    async def _store_question_files(
        self, owner_key: str, files: tuple[Attachment, ...], frames: AsyncGenerator[TurnFrame]
    ) -> None:
        """Store the question's files; on failure the turn is refused (nothing was sent)."""
        if not files or self._attachments is None:
            return
        try:
            for attachment in files:
                await self._attachments.put(owner_key, attachment)
        except StorageError as exc:
            log.warning("conversation.files_not_stored", error=type(exc).__name__)
            await frames.aclose()
            raise

    async def _store_answer_files(
        self, owner_key: str, conversation: Conversation, frame: TurnFrame
    ) -> tuple[Conversation, StorageError | None]:
        """Store the pictures the model drew, before the answer's save refers to them.

        A picture that cannot be stored is left out of the saved answer (the failure is
        returned, to be said like a failed save).
        """
        answer = conversation.messages[-1]
        if not answer.attachments:
            return conversation, None
        kept, error = [], None
        for ref in answer.attachments:
            data = frame.files.get(ref.sha256)
            try:
                if self._attachments is None or data is None:
                    continue  # nowhere to keep it: shown while streaming, not saved
                kept.append(await self._attachments.put(owner_key, Attachment(ref, data)))
            except StorageError as exc:
                log.warning("conversation.files_not_stored", error=type(exc).__name__)
                error = exc
        if len(kept) == len(answer.attachments):
            return conversation, error
        answer = replace(answer, attachments=tuple(kept))
        return replace(conversation, messages=(*conversation.messages[:-1], answer)), error

    async def _save_answer(
        self,
        owner_key: str,
        conversation: Conversation,
        expected: Conversation | None,
        question_error: StorageError | None,
    ) -> tuple[Conversation, StorageError | None]:
        """The turn's final save; after a delete or a newer turn was seen, nothing is saved."""
        if isinstance(question_error, ConversationDeleted | ConversationChanged):
            return conversation, question_error  # never undo what happened meanwhile
        return await self._save(owner_key, conversation, expected)

    async def _prepare(self, request: TurnRequest) -> _Prepared:
        """Load the owner's conversation and apply the action; InputError when it cannot be."""
        if request.attachments and self._attachments is None:
            raise InputError(NO_ATTACHMENT_STORE)
        if request.conversation_id is None:
            if request.action == "retry":
                raise InputError(NO_RETRY)
            if request.action == "edit":
                raise InputError(NOT_EDITABLE)
            # A new conversation starts from the defaults unless the turn says otherwise.
            options = request.options or AnswerOptions()
            fresh = replace(
                self._store.new_conversation(
                    request.model.strip(), request.system_prompt, request.temperature
                ),
                options=options,
            )
            return _Prepared(fresh, None, (), replace(request, options=options), _new_ids(fresh))
        stored = await self._load_for_turn(request.owner_key, request.conversation_id)
        messages = stored.messages
        ids = _new_ids(stored)
        # A turn without its own options (a retry, the API's defaults) asks as the chat did.
        request = replace(request, options=request.options or stored.options)
        if request.action == "retry":
            # The nth question (None: the last); its answer and all after it are asked again.
            nth = request.edit_index
            if nth is None:
                history, question = strip_last_turn(messages)
                at = None if question is None else len(history)
            else:
                at = user_message_index(messages, nth) if nth >= 0 else None
            if at is None:
                raise InputError(NO_RETRY)
            asked = messages[at]
            # The old answers stay, as other versions of the answer to this question.
            forked = branches.fork(stored, at + 1)
            retried = replace(request, user_text=asked.content)
            return _Prepared(forked, stored, messages[:at], retried, (asked.id, ids[1]), asked)
        if request.action == "edit":
            index = None
            if request.edit_index is not None and request.edit_index >= 0:
                index = user_message_index(messages, request.edit_index)
            if index is None:
                raise InputError(NOT_EDITABLE)
            # The old question and all after it stay, as another version of the question.
            forked = branches.fork(stored, index)
            return _Prepared(forked, stored, messages[:index], request, ids)
        return _Prepared(stored, stored, messages, request, ids)

    async def _load_for_turn(self, owner_key: str, conversation_id: str) -> Conversation:
        """The owner's conversation; while the data folder cannot be read, the last one seen.

        A broken data folder must not stop a chat that is open on a page: it goes on from
        what this process last saw of it, and every save tells the visitor it failed.
        """
        key = (owner_key, conversation_id)
        try:
            stored = await self._store.load(owner_key, conversation_id)
        except StorageUnavailable:
            known = self._last_seen.get(key)
            if known is None:
                raise
            return known
        self._seen(owner_key, stored)
        return stored

    def _seen(self, owner_key: str, conversation: Conversation) -> None:
        self._last_seen[(owner_key, conversation.id)] = conversation
        self._last_seen.move_to_end((owner_key, conversation.id))
        while len(self._last_seen) > LAST_SEEN_CONVERSATIONS:
            self._last_seen.popitem(last=False)

    async def _save(
        self, owner_key: str, conversation: Conversation, expected: Conversation | None
    ) -> tuple[Conversation, StorageError | None]:
        """Save (checked against `expected`, see the store); a failure is returned, not raised."""
        try:
            return await self._store.save(owner_key, conversation, expected=expected), None
        except StorageError as exc:
            log.warning("conversation.save_failed", error=type(exc).__name__)
            return conversation, exc

    # -- comparing models --------------------------------------------------------------------

    def compare(
        self,
        request: TurnRequest,
        models: Sequence[str],
        control: CompareControl | None = None,
    ) -> AsyncGenerator[CompareFrame]:
        """Ask one question of two or three models at once, the answers streaming together.

        `request` is a "send" (its `model` is not used: `models` are asked); the question goes
        into the owner's conversation (a new one without an id) and is saved at the start.
        Each model is a request of its own (the rate limit counts each; each writes its usage
        row), tied to no page. When every answer has ended they are saved as the versions of
        one answer, the first model's active, or the one `control.keep` chose meanwhile.
        Raises ChatError before the first frame when refused (InputError for the models,
        RateLimited...; nothing is saved then). `control.columns[i].stop()` stops one
        answer; `control.stop()`, or the consumer leaving, stops all, and what arrived is
        saved in the background.
        """
        chosen = check_models(models)
        if request.action != "send":
            raise InputError("Only a new message can be compared across models.")
        control = control or CompareControl.for_columns(len(chosen))
        if len(control.columns) != len(chosen):
            raise ValueError("the control needs one column per model")
        return run_to_end(self._compare(request, chosen, control), control)

    async def _compare(
        self, request: TurnRequest, models: tuple[str, ...], control: CompareControl
    ) -> AsyncIterator[CompareFrame]:
        start = await self._prepare(replace(request, model=models[0]))
        started = await self._start_columns(start, models, control)
        compared = self._compared(start, models, control, started)
        with self._comparing_as(request.session_key, control):
            async with contextlib.aclosing(compared) as frames:
                async for frame in frames:
                    yield frame

    @contextlib.contextmanager
    def _comparing_as(self, session_key: str | None, control: CompareControl) -> Iterator[None]:
        """Let a newer comparison of the same page stop this one (what arrived is saved)."""
        if session_key is None:
            yield
            return
        previous = self._comparing.get(session_key)
        if previous is not None:
            previous.stop()
        self._comparing[session_key] = control
        try:
            yield
        finally:
            if self._comparing.get(session_key) is control:
                del self._comparing[session_key]

    async def _compared(
        self,
        start: _Prepared,
        models: tuple[str, ...],
        control: CompareControl,
        started: builtins.list[tuple[TurnFrame, AsyncGenerator[TurnFrame]]],
    ) -> AsyncGenerator[CompareFrame]:
        """The comparison's frames once every column has started (see `compare`)."""
        request, owner_key = start.request, start.request.owner_key
        streams = [frames for _, frames in started]
        try:
            await self._store_question_files(owner_key, start.request.attachments, streams[0])
        except StorageError:
            for frames in streams[1:]:
                await frames.aclose()
            raise
        first = started[0][0]
        title = start.conversation.title if _has_question(start.history) else NEW_CHAT_TITLE
        base = replace(
            start.conversation,
            title=conversation_title(title, first.history),
            model=models[0],
            system_prompt=start.request.system_prompt,
            temperature=float(start.request.temperature),
            options=start.request.options or start.conversation.options,
        )
        asked = start.identified(first.history)[:-1]
        saved, save_error = await self._save(owner_key, replace(base, messages=asked), start.stored)
        expected = start.stored if save_error is not None else saved
        self.view(request.session_key, base.id)
        shape = _ColumnShape(models, _column_ids(asked, base, len(models)), first.answer)
        columns = [shape.column(i, frame) for i, (frame, _) in enumerate(started)]
        last = [frame for frame, _ in started]
        files = dict(first.files)
        question = replace(base, messages=asked)
        yield CompareFrame(question, tuple(columns), len(asked), False, save_error, files)
        async for index, frame in merged(streams):
            last[index], columns[index] = frame, shape.column(index, frame)
            files.update(frame.files)
            if not all(column.done for column in columns):
                yield CompareFrame(question, tuple(columns), len(asked), False, save_error, files)
        final, files_error = await self._save_comparison(
            owner_key, question, columns, last, control.chosen or 0
        )
        final, final_error = await self._save_answer(owner_key, final, expected, save_error)
        self._seen(owner_key, final)
        error = final_error or files_error or save_error
        yield CompareFrame(final, tuple(columns), len(asked), True, error, files)

    async def _start_columns(
        self, start: _Prepared, models: tuple[str, ...], control: CompareControl
    ) -> builtins.list[tuple[TurnFrame, AsyncGenerator[TurnFrame]]]:
        """Each model's checked request and its first frame (nothing streams before all pass).

        A refusal of any (its checks, the rate limit) is raised; the others are let go.
        """
        started: builtins.list[tuple[TurnFrame, AsyncGenerator[TurnFrame]]] = []
        try:
            for model, column in zip(models, control.columns, strict=True):
                # No session: a newer turn of a page stops its older one, never a sister column.
                asked = replace(
                    start.request,
                    model=model,
                    conversation_id=start.conversation.id,
                    session_key=None,
                )
                frames = self._chat.frames(asked, start.history, column, files=self._attachments)
                started.append((await anext(frames), frames))
        except BaseException:
            for _, frames in started:
                await frames.aclose()
            raise
        return started

    async def _save_comparison(
        self,
        owner_key: str,
        asked: Conversation,
        columns: Sequence[Column],
        last: Sequence[TurnFrame],
        active: int,
    ) -> tuple[Conversation, StorageError | None]:
        """`asked` with every answer as a version of one answer (`active` on the path).

        The pictures each model drew are stored first; one that cannot be is left out.
        """
        answers: builtins.list[ChatMessage] = []
        error: StorageError | None = None
        for column, frame in zip(columns, last, strict=True):
            one = replace(asked, messages=(*asked.messages, column.answer))
            one, files_error = await self._store_answer_files(owner_key, one, frame)
            answers.append(one.messages[-1])
            error = error or files_error
        question_id = asked.messages[-1].id
        others = (
            branches.BranchNode(question_id, answer)
            for index, answer in enumerate(answers)
            if index != active
        )
        return replace(
            asked,
            messages=(*asked.messages, answers[active]),
            branches=(*asked.branches, *others),
        ), error

    async def keep_answer(
        self, owner_key: str, conversation_id: str, message_index: int, version: int
    ) -> Conversation:
        """Make version `version` (1-based, as written) of `messages[message_index]` active.

        What "Continue with this answer" does after a comparison: the others stay as
        versions. The result is saved and returned; InputError when there is no such
        version, ConversationChanged if another tab changed the chat meanwhile.
        """
        stored = await self._store.load(owner_key, conversation_id)
        numbered = branches.versions_of(stored)
        if not 0 <= message_index < len(numbered) or not 1 <= version <= numbered[message_index][1]:
            raise InputError(branches.NO_OTHER_VERSION)
        step = version - numbered[message_index][0]
        switched = stored if step == 0 else branches.switch(stored, message_index, step)
        # The chat goes on with the model whose answer was kept (as after a retry with it).
        kept = switched.messages[message_index].meta
        model = kept.model if kept is not None and kept.model else switched.model
        if step == 0 and model == stored.model:
            return stored
        switched = replace(switched, model=model)
        saved = await self._store.save(owner_key, switched, touch=False, expected=stored)
        self._seen(owner_key, saved)
        return saved

    # -- the owner's conversations -----------------------------------------------------------

    async def open(self, owner_key: str, conversation_id: str) -> Conversation:
        """The owner's conversation; ConversationNotFound / ConversationCorrupt otherwise."""
        return await self._store.load(owner_key, conversation_id)

    async def list(
        self, owner_key: str, query: str = "", *, limit: int | None = None
    ) -> ListResult:
        """The owner's conversations, newest first; with `query`, those that contain it.

        `limit` keeps a list of thousands cheap to read and to show: only the most recent.
        """
        if query.strip():
            found = await self._store.search(owner_key, query.strip())
            return ListResult(conversations=found[:limit] if limit is not None else found)
        return await self._store.list(owner_key, limit=limit)

    async def rename(self, owner_key: str, conversation_id: str | None, title: str) -> Conversation:
        """Give the owner's conversation a new title; its place in the list is kept.

        InputError for a chat not saved yet (no id) or a blank title; ConversationNotFound
        when this owner has no such conversation.
        """
        if not conversation_id:
            raise InputError("Send a message first, then rename the chat.")
        if not title.strip():
            raise InputError("Type the new name first.")
        return await self._store.rename(owner_key, conversation_id, title)

    async def delete(self, owner_key: str, conversation_id: str) -> bool:
        """Delete the owner's conversation; an answer still streaming into it is not saved.

        Its files go too, unless another of the owner's messages still refers to them.
        """
        deleted = await self._store.delete(owner_key, conversation_id)
        if deleted and self._attachments is not None:
            with contextlib.suppress(StorageError):  # logged; swept at the next delete
                await self._attachments.delete_unused(owner_key)
        return deleted

    async def undo(self, owner_key: str, conversation_id: str) -> tuple[Conversation, str | None]:
        """Remove the last question and its answer; returns the result and that question.

        Raises ConversationChanged if another tab changed the chat meanwhile, StorageError
        when the disk refuses (nothing is changed then).
        """
        stored = await self._store.load(owner_key, conversation_id)
        earlier, question = strip_last_turn(stored.messages)
        if question is None:
            return stored, None
        updated = branches.drop_from(stored, len(earlier))
        return await self._store.save(owner_key, updated, expected=stored), question

    async def switch_version(
        self, owner_key: str, conversation_id: str, message_index: int, step: int
    ) -> Conversation:
        """Show another version of `messages[message_index]` (step -1: previous, +1: next).

        The active path then follows that version down to where it was last seen; the
        result is saved and returned. InputError when the message has no such version,
        ConversationNotFound for a conversation this owner does not have,
        ConversationChanged if another tab changed the chat meanwhile (nothing is changed).
        Switching does not move the chat up the list.
        """
        stored = await self._store.load(owner_key, conversation_id)
        switched = branches.switch(stored, message_index, step)
        saved = await self._store.save(owner_key, switched, touch=False, expected=stored)
        self._seen(owner_key, saved)
        return saved

    async def export(
        self, owner_key: str, conversation_id: str | None, fmt: ExportFormat
    ) -> ExportFile:
        """One conversation as JSON or Markdown, or (no id) all of the owner's, as JSON.

        A copy is kept in the exports folder (removed after an hour) when the disk allows.
        """
        now = datetime.now(UTC)
        if conversation_id is None:
            chosen = await self._all(owner_key)
            if not chosen:
                raise InputError("You have no saved conversations yet.")
            fmt = "json"
        else:
            conversation = await self._store.load(owner_key, conversation_id)
            if not conversation.messages:
                raise InputError("This chat is empty: nothing to export.")
            chosen = [conversation]
        files: dict[str, Attachment] = {}
        if self._attachments is not None:
            store = self._attachments
            chosen, files = await gather_files(chosen, lambda sha: store.get(owner_key, sha))
        export = await asyncio.to_thread(build_export, chosen, fmt, now, files)
        with contextlib.suppress(OSError):  # a full disk still gets its download
            await asyncio.to_thread(
                write_export, self._exports_dir, export.data, now, name=export.name
            )
        return export

    async def _all(self, owner_key: str) -> builtins.list[Conversation]:
        """Every readable conversation of the owner, newest first."""
        chosen: builtins.list[Conversation] = []
        for summary in (await self._store.list(owner_key)).conversations:
            try:
                chosen.append(await self._store.load(owner_key, summary.id))
            except StorageError:
                continue  # deleted meanwhile, or damaged: the rest still go out
        return chosen

    async def import_file(self, owner_key: str, data: bytes) -> int:
        """Store every conversation of an uploaded file, all or nothing; returns how many.

        Raises ImportRejected naming what is wrong with the file, StorageError when the disk
        refuses; the owner's conversations are as they were in both cases.
        """
        files = self._attachments
        max_file_bytes = files.max_file_bytes if files else AttachmentLimits.max_file_bytes
        parsed = await asyncio.to_thread(
            parse_import_file, data, max_bytes=self._max_import_bytes, max_file_bytes=max_file_bytes
        )
        # Files first: a failure below leaves only unused files, swept by delete_unused.
        for file in parsed.files:
            if files is not None:
                await files.put(owner_key, file)
        now = self._clock()  # the sidebar marks imported chats
        marked = [replace(conversation, imported_at=now) for conversation in parsed.conversations]
        return len(await self._store.save_all(owner_key, marked))

    async def has_conversations(self, owner_key: str) -> bool:
        """Whether the owner has any conversation (offer to move them at login)."""
        return bool((await self._store.list(owner_key)).conversations)

    async def move_all(self, from_owner_key: str, to_owner_key: str) -> int:
        """Give every conversation of one owner to another (logging in); returns how many."""
        return await self._store.move_all(from_owner_key, to_owner_key)

    # -- what each page is viewing -----------------------------------------------------------

    def view(self, session_key: str | None, conversation_id: str | None) -> None:
        """Record which conversation `session_key` is looking at now."""
        if session_key is None:
            return
        _remember(self._viewing, session_key, conversation_id, self._max_sessions)

    def viewed(self, session_key: str | None) -> str | None:
        """The conversation `session_key` is looking at (None: a new, empty chat)."""
        return None if session_key is None else self._viewing.get(session_key)

    def is_viewing(self, session_key: str | None, conversation_id: str) -> bool:
        """False once the session has switched to another conversation."""
        if session_key is None or session_key not in self._viewing:
            return True
        return self._viewing[session_key] == conversation_id


def _new_ids(conversation: Conversation) -> tuple[str, str]:
    """Ids for a turn's question and answer that no message of `conversation` has."""
    taken = {m.id for m in conversation.messages} | {n.id for n in conversation.branches}
    question_id = branches.new_id(taken)
    return question_id, branches.new_id({*taken, question_id})


# Compared answers are written this far apart, in the order the models were picked: their
# versions are numbered in that order (branches number versions by when they were written).
_COMPARED_GAP_S = 0.001


def _column_ids(asked: History, conversation: Conversation, count: int) -> tuple[str, ...]:
    """Ids for `count` compared answers that no message of the conversation has."""
    taken = {m.id for m in (*conversation.messages, *asked)} | {n.id for n in conversation.branches}
    ids: builtins.list[str] = []
    for _ in range(count):
        ids.append(branches.new_id(taken | set(ids)))
    return tuple(ids)


@dataclass(frozen=True)
class _ColumnShape:
    """How a compared answer's frames become its column: its model, id and written time."""

    models: tuple[str, ...]
    ids: tuple[str, ...]
    first: ChatMessage  # the first model's answer as it started

    def column(self, index: int, frame: TurnFrame) -> Column:
        written = (self.first.created_at or 0.0) + index * _COMPARED_GAP_S
        answer = replace(frame.answer, id=self.ids[index], created_at=written)
        return Column(self.models[index], answer, done=frame.done, error=frame.error)


def _frame(
    conversation: Conversation,
    frame: TurnFrame,
    *,
    save_error: StorageError | None = None,
    done: bool = False,
) -> ConversationFrame:
    """The page's frame: `conversation` with the turn's files, notes and outcome."""
    return ConversationFrame(
        conversation,
        done=done,
        error=frame.error if done else None,
        save_error=save_error,
        files=frame.files,
        dropped_attachments=frame.dropped_attachments,
        notes=frame.notes,
    )


def _has_question(history: History) -> bool:
    return any(m.role == "user" for m in history)


def _remember(cache: OrderedDict[str, _V], key: str, value: _V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def relative_time(then: float, now: float) -> str:
    """'just now', '5 min ago', '3 h ago', 'yesterday', '4 days ago', or a date."""
    seconds = max(0.0, now - then)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    if days == 1:
        return "yesterday"
    if days < 7:
        return f"{days} days ago"
    return datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d")


def summary_label(summary: ConversationSummary, now: float) -> str:
    """One line for the sidebar: title, when, and what it cost."""
    parts = [summary.title, relative_time(summary.updated_at, now)]
    if summary.total_cost_usd > 0:
        parts.append(format_cost(summary.total_cost_usd))
    return " · ".join(parts)
