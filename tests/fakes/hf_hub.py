"""Local stand-in for the Hugging Face Hub (real HTTP on loopback) for tests.

It serves the part of the Hub API that `huggingface_hub` 2.4 uses to create a repo, read its
info and tree, download files (`/resolve`) and commit small files (preupload + NDJSON commit,
every file inline as base64: the preupload answer is always `uploadMode: "regular"`, so no LFS
or Xet transfer is ever attempted). Repos live in memory, one snapshot per commit.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes._server import BackgroundServer, Fake

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_USER",
    "ROUTES",
    "FakeCommit",
    "FakeHfHub",
    "FakeRepo",
    "RecordedRequest",
    "git_blob_oid",
]

DEFAULT_TOKEN = "hf_fakeWriteToken0000000000000000000"
DEFAULT_USER = "fake-user"
# Names accepted by `fail_next(route=...)`.
ROUTES = ("whoami", "create", "delete", "info", "tree", "preupload", "commit", "resolve")
_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
)
_INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
_SERVER_ERROR = "Internal Error - We're working hard to fix this as soon as possible!"
_JSON = "application/json"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def git_blob_oid(data: bytes) -> str:
    """The git blob id of `data` (what the Hub reports as a regular file's oid and ETag)."""
    header = b"blob %d\0" % len(data)
    return hashlib.sha1(header + data, usedforsecurity=False).hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class FakeCommit:
    """One commit: its id, message and the full file snapshot it produced."""

    oid: str
    message: str
    files: Mapping[str, bytes]
    parent: str | None
    created_at: str


@dataclass
class FakeRepo:
    """An in-memory repository and its history."""

    repo_id: str
    repo_type: str
    private: bool
    commits: list[FakeCommit] = field(default_factory=list)
    created_at: str = field(default_factory=_now_iso)

    @property
    def head(self) -> FakeCommit:
        """The latest commit on main."""
        return self.commits[-1]

    @property
    def files(self) -> dict[str, bytes]:
        """Path -> content at the head of main."""
        return dict(self.head.files)

    def text(self, path: str) -> str:
        """A file's content at head, decoded as UTF-8."""
        return self.head.files[path].decode("utf-8")

    def at(self, revision: str) -> FakeCommit | None:
        """The commit a revision (`main` or a commit id) points at."""
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake answered."""

    method: str
    path: str
    route: str
    status: int
    token: str | None


@dataclass
class _Failure:
    remaining: int
    status: int
    route: str | None


class _Reject(Exception):
    """Raised inside a handler to answer with an error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type=_JSON)


def _error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    commit: str | None = None,
) -> Response:
    """A Hub-style error: JSON body plus the X-Error-* headers huggingface_hub reads."""
    headers = {"X-Error-Message": message}
    if code is not None:
        headers["X-Error-Code"] = code
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return _json({"error": message}, status=status, headers=headers)


def _valid_repo_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..") for p in parts) and "\\" not in path


class FakeHfHub(Fake):
    """A Hugging Face Hub look-alike served over real HTTP on 127.0.0.1.

    Controls for tests: `valid_tokens` (write access), `read_only_tokens` (403 on writes),
    `fail_next(n, status, route=...)`, and inspection through `repos`, `repo()`, `commits`
    and `requests`.
    """

    def __init__(
        self,
        *,
        valid_tokens: Iterable[str] = (DEFAULT_TOKEN,),
        read_only_tokens: Iterable[str] = (),
        user: str = DEFAULT_USER,
        orgs: Iterable[str] = (),
        port: int = 0,
    ) -> None:
        """Configure the fake; call start() (or use it as a context manager) to serve."""
        self.valid_tokens: set[str] = set(valid_tokens)
        self.read_only_tokens: set[str] = set(read_only_tokens)
        self.user = user
        self.orgs: set[str] = set(orgs)
        self.port = port
        self.endpoint = ""
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.commits: list[FakeCommit] = []
        self.requests: list[RecordedRequest] = []
        self._failures: list[_Failure] = []
        self._counter = itertools.count(1)
        self._cond = threading.Condition()
        api = "/api/{kind}/{namespace}/{name}"
        resolve = "/{namespace}/{name}/resolve/{revision}/{path:path}"
        self.app = Starlette(
            routes=[
                Route("/api/whoami-v2", self._whoami, methods=["GET"]),
                Route("/api/repos/create", self._create, methods=["POST"]),
                Route("/api/repos/delete", self._delete, methods=["DELETE"]),
                Route(api, self._info, methods=["GET"]),
                Route(api + "/revision/{revision}", self._info, methods=["GET"]),
                Route(api + "/tree/{revision}", self._tree, methods=["GET"]),
                Route(api + "/tree/{revision}/{path:path}", self._tree, methods=["GET"]),
                Route(api + "/preupload/{revision}", self._preupload, methods=["POST"]),
                Route(api + "/commit/{revision}", self._commit, methods=["POST"]),
                Route("/datasets" + resolve, self._resolve, methods=["GET", "HEAD"]),
                Route("/spaces" + resolve, self._resolve, methods=["GET", "HEAD"]),
                Route(resolve, self._resolve, methods=["GET", "HEAD"]),
            ],
            exception_handlers={HTTPException: self._http_exception},
        )
        self._server = BackgroundServer(self.app, name="fake-hf-hub", port=port)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Serve in a background thread and return the endpoint URL once it accepts connections."""
        if self._server.running:
            raise RuntimeError("FakeHfHub is already running")
        self.port = self._server.start(self.port)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and wait for the server thread."""
        self._server.stop()

    # ------------------------------------------------------------ test helpers

    def reset(self) -> None:
        """Forget every repo, commit, recorded request and pending failure."""
        with self._cond:
            self.repos.clear()
            self.commits.clear()
            self.requests.clear()
            self._failures.clear()

    def fail_next(self, n: int, status: int = 500, *, route: str | None = None) -> None:
        """Answer the next `n` requests (optionally only those to one of ROUTES) with `status`."""
        if route is not None and route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        with self._cond:
            self._failures.append(_Failure(remaining=n, status=status, route=route))

    def clear_failures(self) -> None:
        """Stop injecting failures: the Hub has recovered."""
        with self._cond:
            self._failures.clear()

    @property
    def pending_failures(self) -> int:
        """How many injected failures are still to be served."""
        with self._cond:
            return sum(f.remaining for f in self._failures)

    def repo(self, repo_id: str, repo_type: str = "dataset") -> FakeRepo:
        """The repo with this id (KeyError if it does not exist)."""
        with self._cond:
            return self.repos[(repo_type, repo_id)]

    def has_repo(self, repo_id: str, repo_type: str = "dataset") -> bool:
        """Whether the repo exists."""
        with self._cond:
            return (repo_type, repo_id) in self.repos

    def add_repo(
        self,
        repo_id: str,
        *,
        repo_type: str = "dataset",
        private: bool = True,
        files: Mapping[str, bytes] | None = None,
    ) -> FakeRepo:
        """Create a repo directly (no HTTP), optionally with a first commit of `files`."""
        with self._cond:
            repo = self._new_repo(repo_id, repo_type, private)
        if files:
            self.put_files(repo_id, files, repo_type=repo_type)
        return repo

    def put_files(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        repo_type: str = "dataset",
        message: str = "Seed files",
    ) -> str:
        """Commit `files` directly (no HTTP, not counted in `commits`); return the commit id."""
        with self._cond:
            repo = self.repos[(repo_type, repo_id)]
            snapshot = {**repo.head.files, **files}
            return self._append_commit(repo, message, snapshot, record=False).oid

    def delete_files(
        self, repo_id: str, paths: Iterable[str], *, repo_type: str = "dataset"
    ) -> str:
        """Remove files directly (no HTTP, not counted in `commits`); return the commit id."""
        with self._cond:
            repo = self.repos[(repo_type, repo_id)]
            gone = set(paths)
            snapshot = {p: data for p, data in repo.head.files.items() if p not in gone}
            return self._append_commit(repo, "Delete files", snapshot, record=False).oid

    def wait_for_commits(self, n: int, timeout: float = 10.0) -> list[FakeCommit]:
        """Wait until at least `n` commits were made through the API; return them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.commits) >= n, timeout=timeout):
                raise TimeoutError(f"expected {n} commits, got {len(self.commits)}")
            return list(self.commits)

    # ---------------------------------------------------------------- internals

    def _new_repo(self, repo_id: str, repo_type: str, private: bool) -> FakeRepo:
        repo = FakeRepo(repo_id=repo_id, repo_type=repo_type, private=private)
        self.repos[(repo_type, repo_id)] = repo
        self._append_commit(
            repo, "initial commit", {".gitattributes": _GITATTRIBUTES}, record=False
        )
        return repo

    def _append_commit(
        self, repo: FakeRepo, message: str, files: Mapping[str, bytes], *, record: bool
    ) -> FakeCommit:
        parent = repo.commits[-1].oid if repo.commits else None
        seed = f"{repo.repo_type}/{repo.repo_id}/{next(self._counter)}/{parent}/{message}"
        oid = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()
        commit = FakeCommit(
            oid=oid, message=message, files=dict(files), parent=parent, created_at=_now_iso()
        )
        repo.commits.append(commit)
        if record:
            self.commits.append(commit)
            self._cond.notify_all()
        return commit

    def _repo_url(self, repo: FakeRepo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo.repo_id}"

    def _take_failure(self, route: str) -> int | None:
        with self._cond:
            for failure in self._failures:
                if failure.route in (None, route) and failure.remaining > 0:
                    failure.remaining -= 1
                    status = failure.status
                    self._failures = [f for f in self._failures if f.remaining > 0]
                    return status
        return None

    def _token(self, request: Request) -> str | None:
        """The caller's valid token, None if anonymous; invalid tokens are rejected (401)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        if token in self.valid_tokens or token in self.read_only_tokens:
            return token
        raise _Reject(_error(401, _INVALID_CREDENTIALS))

    def _writer(self, request: Request, what: str) -> str:
        token = self._token(request)
        if token is None:
            raise _Reject(_error(401, "You must be authenticated to " + what))
        if token not in self.valid_tokens:
            raise _Reject(_error(403, "You don't have the rights to " + what))
        return token

    def _find_repo(self, request: Request, kind: str, *, write: bool = False) -> FakeRepo:
        """The repo named in the path, enforcing visibility the way the Hub does."""
        repo_type = _KINDS.get(kind)
        if repo_type is None:
            raise _Reject(_error(404, "Not Found"))
        namespace = request.path_params["namespace"]
        repo_id = f"{namespace}/{request.path_params['name']}"
        if write:
            self._writer(request, f"write to {repo_id}")
            token: str | None = "writer"
        else:
            token = self._token(request)
        with self._cond:
            repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token is None):
            # The Hub answers 401 for a private repo seen anonymously, 404 for a missing one.
            status = 404 if repo is None or token is not None else 401
            raise _Reject(_error(status, "Repository not found", code="RepoNotFound"))
        return repo

    def _record(self, request: Request, route: str, status: int) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._cond:
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    route=route,
                    status=status,
                    token=token.strip() if scheme.lower() == "bearer" else None,
                )
            )

    async def _answer(self, request: Request, route: str, handler: Any) -> Response:
        """Run one handler with failure injection, rejections and recording."""
        status = self._take_failure(route)
        if status is not None:
            response = _error(status, _SERVER_ERROR if status >= 500 else "Injected failure")
        else:
            try:
                response = await handler()
            except _Reject as reject:
                response = reject.response
        self._record(request, route, response.status_code)
        return response

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _error(status, "Not Found" if status == 404 else "Error")

    # ------------------------------------------------------------------ routes

    async def _whoami(self, request: Request) -> Response:
        async def handle() -> Response:
            token = self._token(request)
            if token is None:
                return _error(401, _INVALID_CREDENTIALS)
            role = "write" if token in self.valid_tokens else "read"
            return _json(
                {
                    "type": "user",
                    "id": "0" * 24,
                    "name": self.user,
                    "fullname": "Fake User",
                    "isPro": False,
                    "orgs": [{"name": org, "type": "org"} for org in sorted(self.orgs)],
                    "auth": {"type": "access_token", "accessToken": {"role": role}},
                }
            )

        return await self._answer(request, "whoami", handle)

    async def _create(self, request: Request) -> Response:
        async def handle() -> Response:
            body = orjson.loads(await request.body())
            repo_type = body.get("type") or "model"
            if repo_type not in _KINDS.values():
                return _error(400, f"Invalid repo type {repo_type!r}")
            namespace = body.get("organization") or self.user
            self._writer(request, f"create a {repo_type} under the namespace {namespace}")
            if namespace != self.user and namespace not in self.orgs:
                return _error(
                    403, f"You don't have the rights to create a {repo_type} under {namespace}"
                )
            repo_id = f"{namespace}/{body['name']}"
            with self._cond:
                existing = self.repos.get((repo_type, repo_id))
                if existing is not None:
                    url = self._repo_url(existing)
                    message = f"You already created this {repo_type} repo"
                    return _json({"error": message, "url": url}, status=409)
                private = body.get("visibility", "public") == "private" or body.get("private")
                repo = self._new_repo(repo_id, repo_type, bool(private))
            return _json({"url": self._repo_url(repo), "name": repo_id, "id": "0" * 24})

        return await self._answer(request, "create", handle)

    async def _delete(self, request: Request) -> Response:
        async def handle() -> Response:
            body = orjson.loads(await request.body())
            repo_type = body.get("type") or "model"
            namespace = body.get("organization") or self.user
            self._writer(request, f"delete repos under {namespace}")
            with self._cond:
                removed = self.repos.pop((repo_type, f"{namespace}/{body['name']}"), None)
            if removed is None:
                return _error(404, "Repository not found", code="RepoNotFound")
            return Response(b"", status_code=200)

        return await self._answer(request, "delete", handle)

    async def _info(self, request: Request) -> Response:
        async def handle() -> Response:
            repo = self._find_repo(request, request.path_params["kind"])
            revision = request.path_params.get("revision", "main")
            with self._cond:
                commit = repo.at(revision)
            if commit is None:
                return _error(404, "Invalid rev id: " + revision, code="RevisionNotFound")
            return _json(
                {
                    "_id": "0" * 24,
                    "id": repo.repo_id,
                    "author": repo.repo_id.split("/")[0],
                    "sha": commit.oid,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "createdAt": repo.created_at,
                    "lastModified": commit.created_at,
                    "siblings": [{"rfilename": path} for path in sorted(commit.files)],
                }
            )

        return await self._answer(request, "info", handle)

    async def _tree(self, request: Request) -> Response:
        async def handle() -> Response:
            repo = self._find_repo(request, request.path_params["kind"])
            revision = request.path_params["revision"]
            with self._cond:
                commit = repo.at(revision)
            if commit is None:
                return _error(404, "Invalid rev id: " + revision, code="RevisionNotFound")
            base = request.path_params.get("path", "").strip("/")
            recursive = request.query_params.get("recursive", "false").lower() == "true"
            prefix = f"{base}/" if base else ""
            entries: dict[str, dict[str, Any]] = {}
            for path, data in commit.files.items():
                if not path.startswith(prefix):
                    continue
                parts = path[len(prefix) :].split("/")
                depth = len(parts) if recursive else 1
                for i in range(1, min(depth, len(parts) - 1) + 1):
                    folder = prefix + "/".join(parts[:i])
                    oid = hashlib.sha1(folder.encode(), usedforsecurity=False).hexdigest()
                    entries[folder] = {"type": "directory", "oid": oid, "size": 0, "path": folder}
                if recursive or len(parts) == 1:
                    entries[path] = {
                        "type": "file",
                        "oid": git_blob_oid(data),
                        "size": len(data),
                        "path": path,
                    }
            if base and not entries:
                return _error(404, f"{base} does not exist", code="EntryNotFound")
            return _json([entries[key] for key in sorted(entries)])

        return await self._answer(request, "tree", handle)

    async def _preupload(self, request: Request) -> Response:
        async def handle() -> Response:
            repo = self._find_repo(request, request.path_params["kind"], write=True)
            body = orjson.loads(await request.body())
            with self._cond:
                head = repo.head
            files = []
            for item in body.get("files", []):
                existing = head.files.get(item["path"])
                files.append(
                    {
                        "path": item["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_oid(existing) if existing is not None else None,
                    }
                )
            return _json({"files": files, "commitOid": head.oid})

        return await self._answer(request, "preupload", handle)

    async def _commit(self, request: Request) -> Response:
        async def handle() -> Response:
            repo = self._find_repo(request, request.path_params["kind"], write=True)
            if request.path_params["revision"] != "main":
                return _error(404, "Only main exists here", code="RevisionNotFound")
            header: dict[str, Any] = {}
            additions: dict[str, bytes] = {}
            deletions: list[tuple[str, bool]] = []
            for line in (await request.body()).splitlines():
                if not line.strip():
                    continue
                item = orjson.loads(line)
                key, value = item.get("key"), item.get("value", {})
                path = value.get("path", "")
                if key == "header":
                    header = value
                elif key == "file":
                    if not _valid_repo_path(path) or value.get("encoding") != "base64":
                        return _error(400, f"Invalid file entry {path!r}")
                    additions[path] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    deletions.append((path.rstrip("/"), key == "deletedFolder"))
                elif key == "lfsFile":
                    return _error(422, "The fake Hub does not store LFS files")
                else:
                    return _error(400, f"Unknown commit operation {key!r}")
            message = header.get("summary") or ""
            if not message:
                return _error(400, "A commit summary is required")
            with self._cond:
                head = repo.head
                parent = header.get("parentCommit")
                if parent is not None and parent != head.oid:
                    return _error(412, "A commit has happened since. Please refresh and try again.")
                snapshot = dict(head.files)
                for path, is_folder in deletions:
                    if is_folder:
                        for name in [p for p in snapshot if p.startswith(path + "/")]:
                            del snapshot[name]
                    elif snapshot.pop(path, None) is None:
                        return _error(
                            404, "A file with this name doesn't exist", code="EntryNotFound"
                        )
                snapshot.update(additions)
                commit = self._append_commit(repo, message, snapshot, record=True)
            return _json(
                {
                    "success": True,
                    "commitOid": commit.oid,
                    "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                    "hookOutput": "",
                    "pullRequestUrl": None,
                }
            )

        return await self._answer(request, "commit", handle)

    async def _resolve(self, request: Request) -> Response:
        async def handle() -> Response:
            first = request.url.path.split("/")[1]
            kind = first if first in ("datasets", "spaces") else "models"
            repo = self._find_repo(request, kind)
            revision = request.path_params["revision"]
            with self._cond:
                commit = repo.at(revision)
            if commit is None:
                return _error(404, "Invalid rev id: " + revision, code="RevisionNotFound")
            path = request.path_params["path"]
            data = commit.files.get(path)
            if data is None:
                return _error(404, "Entry not found", code="EntryNotFound", commit=commit.oid)
            headers = {
                "X-Repo-Commit": commit.oid,
                "ETag": f'"{git_blob_oid(data)}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            status = 200
            match = _RANGE.match(request.headers.get("range", ""))
            if match and request.method == "GET":
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(data) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data = data[start : end + 1]
                status = 206
            headers["Content-Length"] = str(len(data))
            body = b"" if request.method == "HEAD" else data
            return Response(body, status_code=status, headers=headers)

        return await self._answer(request, "resolve", handle)
