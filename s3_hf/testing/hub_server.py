"""A loopback Hugging Face Hub (stdlib only) that the real ``huggingface_hub`` and ``datasets`` clients can push to.

It stores real repos with real history in memory: content-addressed blobs (git sha1 for regular files, sha256 for
LFS objects), commits with parents, branches and tags. Tests and benchmarks point the clients at it with
``HF_ENDPOINT`` (and ``HF_HUB_DISABLE_XET=1``); both are read when ``huggingface_hub`` / ``datasets`` are
*imported*, so start the server (or at least choose its port) and set the variables before importing them, as
``tests/conftest.py`` does in ``pytest_configure``:

```python
>>> server = HubServer(tokens={"hf_user_token": "user"}).start()
>>> os.environ.update(server.client_env())          # before `import datasets`
>>> import datasets                                 # now talks to server.url
```

Endpoints modelled (``{type}`` is ``model``/``dataset``/``space``; repo URLs take the ``datasets/``, ``spaces/``
prefixes like the Hub):

- ``GET /api/whoami-v2``; ``POST /api/validate-yaml``
- ``POST /api/repos/create`` (``private`` / ``visibility``; 409 when it exists), ``POST /api/repos/delete``,
  ``PUT /api/{type}s/{repo}/settings`` (``private``)
- ``GET /api/{type}s/{repo}`` and ``.../revision/{rev}``: ``id, sha, private, siblings (+ size, blobId, lfs with
  ?blobs=1), cardData, tags, lastModified``
- ``POST /api/{type}s/{repo}/preupload/{rev}``: ``uploadMode`` (``lfs`` for binary samples, data/model file
  extensions or files over 10 MB; else ``regular``) and the current ``oid`` of the path
- ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (basic transfer: single PUT + verify),
  ``PUT /_lfs/{repo}/{oid}`` (sha256 and size checked), ``POST /_lfs/{repo}/verify``
- ``POST /api/{type}s/{repo}/commit/{branch}``: NDJSON ``header`` (``parentCommit`` -> 412 when stale), ``file``
  (base64), ``lfsFile`` (422 when the object was never uploaded), ``deletedFile``, ``deletedFolder``
- ``GET /api/{type}s/{repo}/refs``; ``POST``/``DELETE .../tag/{rev|tag}`` (409 on an existing tag);
  ``POST``/``DELETE .../branch/{branch}``
- ``GET /api/{type}s/{repo}/commits/{rev}`` (first-parent history, newest first, ``?p=`` pages + ``Link`` header)
- ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``recursive``, cursor pages + ``Link`` header);
  ``POST .../paths-info/{rev}`` (form ``paths``)
- ``GET``/``HEAD /{prefix}{repo}/resolve/{rev}/{path}``: ``ETag`` (git oid), ``X-Linked-Etag`` / ``X-Linked-Size``
  (sha256 and size of LFS files), ``X-Repo-Commit``, ``Range`` (206/416), served directly (no CDN redirect)

Revisions: a branch, a tag, ``refs/heads/x``, ``refs/tags/x`` or a full 40-hex commit id. Errors carry the Hub's
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the clients raise their usual
exceptions. Auth: ``Authorization: Bearer <token>`` with ``tokens`` (token -> user name); an unknown token gets 401
``Invalid credentials in Authorization header``; a private repo is visible only to its namespace's user (401/404
``RepoNotFound`` otherwise, like the Hub); writes need the namespace's user (403 otherwise).

Not modelled: Xet storage (clients must run with ``HF_HUB_DISABLE_XET=1``), multipart LFS uploads, pull requests
and ``create_pr``, ``refs/convert/parquet`` and the dataset viewer API, gated repos, organisations, discussions,
search/listing (``/api/datasets?search=``), likes, spaces runtime, buckets, ``super-squash``, ``lfs-files``
listing, ``.gitattributes`` / ``.gitignore`` rules (upload modes come from the rule above), ``expand=`` fields
(``lastCommit`` / security are omitted), ``/api/agent-harnesses``. Any other route answers 404 ``not modelled``.
Repos live in memory for the life of the server.

Fault injection (seeded, deterministic): :meth:`HubServer.inject_faults` fails a share of the requests to some
targets (``commit``, ``preupload``, ``lfs_batch``, ``lfs_upload``, ``lfs_verify``, ``tag``, ``create_repo``,
``read`` = repo info, tree and resolve)
with :data:`FAULTS`; :meth:`HubServer.fail_next` scripts exact faults. ``"drop"`` closes the connection without a
response before the request takes effect, ``"drop_after"`` after it took effect (a lost response).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .faults import FaultPlan
from .loopback import LoopbackServer

FAULTS = ("500", "503", "429", "drop", "drop_after")
FAULT_TARGETS = ("commit", "preupload", "lfs_batch", "lfs_upload", "lfs_verify", "tag", "create_repo", "read")
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_EXTENSIONS = (".parquet", ".arrow", ".bin", ".safetensors", ".pt", ".pth", ".gguf", ".zip", ".gz", ".npy", ".h5")
LFS_SIZE = 10 * 1024 * 1024
INITIAL_GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's ``oid``/``ETag``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file committed in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class FileEntry:
    """A file in a commit's tree: its git oid, size and (for LFS files) the sha256 of the content."""

    oid: str
    size: int
    lfs_sha256: str | None = None

    def to_json(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": path}
        if self.lfs_sha256 is not None:
            pointer = len(lfs_pointer(self.lfs_sha256, self.size))
            out["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": pointer}
        return out


@dataclass
class Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    author: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Drop(Exception):
    """Close the connection without answering."""


class HubServer(LoopbackServer):
    """A Hub-compatible HTTP server on 127.0.0.1 (see the module docstring for what it models).

    Args:
        tokens: token -> user name. A token grants its user read/write access to the repos of its namespace.
        port: port to bind (0: a free one).
        tree_page_size: entries per page of ``tree`` listings (the Hub uses 1000).
        commits_page_size: commits per page of ``commits`` listings (the Hub uses 50).
    """

    thread_name = "hub-server"

    def __init__(
        self,
        *,
        tokens: dict[str, str] | None = None,
        port: int = 0,
        tree_page_size: int = 1000,
        commits_page_size: int = 50,
    ):
        self.tokens = dict(tokens or {})
        self.tree_page_size = tree_page_size
        self.commits_page_size = commits_page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status); status 0 = dropped
        self.faults_injected: list[tuple[str, str]] = []  # (target, kind)
        self._plan: FaultPlan | None = None
        self._draws: Counter[str] = Counter()
        self._plan_retry_after = 0
        self._scripted: dict[str, deque[str]] = {}
        self._retry_after = 0
        super().__init__(_make_handler(self), port=port)

    # ---- life cycle -------------------------------------------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        """The environment the clients need (set it before importing ``huggingface_hub`` / ``datasets``)."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1"}

    # ---- faults ----------------------------------------------------------------------------------------------
    def inject_faults(self, plan: FaultPlan | None, *, retry_after: int = 0) -> None:
        """Draw faults with ``plan`` (its ``targets`` from :data:`FAULT_TARGETS`, faults from :data:`FAULTS`) from
        now on, each target's requests counted from 0; a ``429`` carries ``Retry-After: retry_after``. ``None``: no
        more random faults."""
        with self.lock:
            self._plan = plan.check(FAULTS, FAULT_TARGETS) if plan is not None else None
            self._draws = Counter()
            self._plan_retry_after = retry_after

    def fail_next(self, target: str, *kinds: str, retry_after: int = 0) -> None:
        """Fail the next ``len(kinds)`` requests to ``target`` with these faults, in order."""
        if target not in FAULT_TARGETS or any(k not in FAULTS for k in kinds):
            raise ValueError(f"bad target/kinds {target!r} {kinds!r}; targets {FAULT_TARGETS}, kinds {FAULTS}")
        with self.lock:
            self._scripted.setdefault(target, deque()).extend(kinds)
            self._retry_after = retry_after

    def clear_faults(self) -> None:
        with self.lock:
            self._plan, self._scripted = None, {}
            self.faults_injected.clear()

    def _draw_fault(self, target: str) -> str | None:
        with self.lock:
            queue = self._scripted.get(target)
            kind = None
            if queue:
                kind = queue.popleft()
            elif self._plan is not None:
                kind = self._plan.draw(self._draws[target], target)
                self._draws[target] += 1
            if kind is not None:
                self.faults_injected.append((target, kind))
            return kind

    def _retry_after_for(self) -> int:
        return self._plan_retry_after if self._plan is not None else self._retry_after

    # ---- state helpers (for tests) ----------------------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def history(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list[Commit]:
        """First-parent history of ``revision``, newest first."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            return _history(repo, _resolve(repo, revision))

    def count_requests(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and re.search(pattern, p))

    # ---- auth ------------------------------------------------------------------------------------------------
    def _user(self, headers) -> str | None:
        auth = headers.get("Authorization") or ""
        if not auth:
            return None
        token = auth.split(" ", 1)[1].strip() if " " in auth else auth
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _get_repo(self, repo_type: str, repo_id: str, user: str | None, *, write: bool = False) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo.namespace):
            status = 401 if user is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        if write and user != repo.namespace:
            raise HubError(403 if user else 401, f"You don't have the rights to write to {repo_id}")
        return repo

    # ---- repo operations -------------------------------------------------------------------------------------
    def create_repo(self, repo_type: str, repo_id: str, *, private: bool, author: str) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, "You already created this repo", headers={"X-Error-Message": "repo exists"})
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now_iso())
            entry = FileEntry(git_blob_oid(INITIAL_GITATTRIBUTES), len(INITIAL_GITATTRIBUTES))
            repo.lfs[f"git:{entry.oid}"] = INITIAL_GITATTRIBUTES
            commit = _make_commit(repo, [], "initial commit", "", author, {".gitattributes": entry})
            repo.branches["main"] = commit.oid
            self.repos[(repo_type, repo_id)] = repo
            return repo


def _make_commit(repo: Repo, parents: list[str], title: str, message: str, author: str, files) -> Commit:
    date = _now_iso()
    body = json.dumps(
        {
            "parents": parents,
            "title": title,
            "message": message,
            "author": author,
            "date": date,
            "files": {p: [e.oid, e.size, e.lfs_sha256] for p, e in sorted(files.items())},
        },
        sort_keys=True,
    )
    oid = hashlib.sha1(body.encode()).hexdigest()
    commit = Commit(oid, parents, title, message, author, date, dict(files))
    repo.commits[oid] = commit
    return commit


def _resolve(repo: Repo, revision: str) -> str:
    rev = revision
    if rev.startswith("refs/heads/") and rev[11:] in repo.branches:
        return repo.branches[rev[11:]]
    if rev.startswith("refs/tags/") and rev[10:] in repo.tags:
        return repo.tags[rev[10:]]
    if rev in repo.branches:
        return repo.branches[rev]
    if rev in repo.tags:
        return repo.tags[rev]
    if _SHA1.match(rev) and rev in repo.commits:
        return rev
    raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _history(repo: Repo, oid: str) -> list[Commit]:
    out = []
    while oid:
        commit = repo.commits[oid]
        out.append(commit)
        oid = commit.parents[0] if commit.parents else ""
    return out


def _blob(repo: Repo, entry: FileEntry) -> bytes:
    return repo.lfs[entry.lfs_sha256] if entry.lfs_sha256 else repo.lfs[f"git:{entry.oid}"]


def _folder_oid(files: dict[str, FileEntry], prefix: str) -> str:
    listing = "".join(f"{p}:{e.oid}\n" for p, e in sorted(files.items()) if p.startswith(prefix))
    return hashlib.sha1(listing.encode()).hexdigest()


def _tree_entries(files: dict[str, FileEntry], path: str, recursive: bool) -> list[dict[str, Any]]:
    """Entries under folder ``path`` ("" = root): folders first then files, like the Hub."""
    prefix = f"{path}/" if path else ""
    dirs: set[str] = set()
    entries: list[dict[str, Any]] = []
    for p in sorted(files):
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix) :].split("/")
        for depth in range(1, len(rest)):
            if not recursive and depth > 1:
                break
            dirs.add(prefix + "/".join(rest[:depth]))
        if recursive or len(rest) == 1:
            entries.append(files[p].to_json(p))
    folders = [{"type": "directory", "oid": _folder_oid(files, d + "/"), "size": 0, "path": d} for d in sorted(dirs)]
    return folders + entries


def _path_info(files: dict[str, FileEntry], path: str) -> dict[str, Any] | None:
    path = path.strip("/")
    if path in files:
        return files[path].to_json(path)
    if any(p.startswith(path + "/") for p in files):
        return {"type": "directory", "oid": _folder_oid(files, path + "/"), "size": 0, "path": path}
    return None


def _card_data(repo: Repo, files: dict[str, FileEntry]) -> dict[str, Any] | None:
    entry = files.get("README.md")
    if entry is None:
        return None
    text = _blob(repo, entry).decode("utf-8", errors="replace")
    if not text.startswith("---\n") or (end := text.find("\n---", 4)) == -1:
        return None
    try:
        import yaml

        meta = yaml.safe_load(text[4:end])
    except Exception:  # noqa: BLE001 - a broken card has no card data, as on the Hub
        return None
    return meta if isinstance(meta, dict) else None


def _upload_mode(path: str, size: int, sample: bytes) -> str:
    if size > LFS_SIZE or path.lower().endswith(LFS_EXTENSIONS) or b"\0" in sample:
        return "lfs"
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return "lfs"
    return "regular"


def _make_handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "s3-hf-hub/1.0"

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            pass

        # -- plumbing ------------------------------------------------------------------------------------------
        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head=False):
            self.send_response(status)
            headers = dict(headers or {})
            headers.setdefault("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and body:
                self.wfile.write(body)
            hub.requests.append((self.command, self.path, status))

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None, head=False):
            self._send(status, json.dumps(obj).encode(), headers, head)

        def _drop(self):
            hub.requests.append((self.command, self.path, 0))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _dispatch(self):
            body = self._body()
            try:
                self._route(body)
            except _Drop:
                self._drop()
            except HubError as err:
                headers = dict(err.headers)
                if err.code:
                    headers["X-Error-Code"] = err.code
                headers.setdefault("X-Error-Message", err.message)
                self._json(err.status, {"error": err.message}, headers, head=self.command == "HEAD")
            except Exception as err:  # noqa: BLE001 - a server bug must answer, not hang the client
                self._json(500, {"error": f"{type(err).__name__}: {err}"})

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

        def _fault(self, target: str) -> str | None:
            """Apply a fault drawn for ``target``; returns ``"drop_after"`` for the caller to apply after success."""
            kind = hub._draw_fault(target)
            if kind in ("500", "503"):
                raise HubError(int(kind), f"injected {kind}")
            if kind == "429":
                raise HubError(429, "injected rate limit", headers={"Retry-After": str(hub._retry_after_for())})
            if kind == "drop":
                raise _Drop()
            return kind

        # -- routing ------------------------------------------------------------------------------------------
        def _route(self, body: bytes):
            split = urlsplit(self.path)
            query = parse_qs(split.query)
            parts = [unquote(p) for p in split.path.split("/")[1:]]
            method = self.command
            with hub.lock:
                user = hub._user(self.headers)
            if parts[:1] == ["api"]:
                return self._api(method, parts[1:], query, body, user)
            if parts[:1] == ["_lfs"]:
                return self._lfs_object(method, parts[1:], body, user)
            repo_type = "model"
            if parts and parts[0] in ("datasets", "spaces"):
                repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
            if len(parts) >= 2 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}", body, user)
            if len(parts) >= 4 and parts[2] == "resolve":
                return self._resolve_file(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), user)
            raise HubError(404, f"not modelled: {method} {split.path}")

        def _api(self, method: str, parts: list[str], query, body: bytes, user: str | None):
            if parts == ["whoami-v2"]:
                if user is None:
                    raise HubError(401, "Invalid username or password.")
                return self._json(
                    200,
                    {
                        "type": "user",
                        "name": user,
                        "fullname": user,
                        "orgs": [],
                        "auth": {"type": "access_token", "accessToken": {"role": "write"}},
                    },
                )
            if parts == ["validate-yaml"]:
                return self._validate_yaml(json.loads(body or b"{}"))
            if parts == ["repos", "create"]:
                return self._create_repo(json.loads(body or b"{}"), user)
            if parts == ["repos", "delete"]:
                payload = json.loads(body or b"{}")
                repo_id = f"{payload.get('organization') or user}/{payload['name']}"
                with hub.lock:
                    hub._get_repo(payload.get("type") or "model", repo_id, user, write=True)
                    del hub.repos[(payload.get("type") or "model", repo_id)]
                return self._json(200, {})
            if len(parts) < 3 or parts[0] not in REPO_TYPES:
                raise HubError(404, f"not modelled: {method} /api/{'/'.join(parts)}")
            repo_type, repo_id, rest = REPO_TYPES[parts[0]], f"{parts[1]}/{parts[2]}", parts[3:]
            if method in ("GET", "HEAD") and (not rest or rest[0] == "revision"):
                return self._repo_info(repo_type, repo_id, rest[1] if len(rest) > 1 else "main", query, user)
            action = rest[0] if rest else ""
            arg = "/".join(rest[1:])
            if action == "settings" and method == "PUT":
                payload = json.loads(body or b"{}")
                with hub.lock:
                    repo = hub._get_repo(repo_type, repo_id, user, write=True)
                    if "private" in payload:
                        repo.private = bool(payload["private"])
                return self._json(200, {"private": repo.private})
            if action == "preupload" and method == "POST":
                return self._preupload(repo_type, repo_id, arg, json.loads(body or b"{}"), query, user)
            if action == "commit" and method == "POST":
                return self._commit(repo_type, repo_id, arg, body, query, user)
            if action == "refs" and method == "GET":
                return self._refs(repo_type, repo_id, user)
            if action == "tag":
                return self._tag(method, repo_type, repo_id, arg, json.loads(body or b"{}"), user)
            if action == "branch":
                return self._branch(method, repo_type, repo_id, arg, json.loads(body or b"{}"), user)
            if action == "commits" and method == "GET":
                return self._commits(repo_type, repo_id, arg, query, user)
            if action == "tree" and method == "GET":
                return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), query, user)
            if action == "paths-info" and method == "POST":
                return self._paths_info(repo_type, repo_id, arg, parse_qs(body.decode()), user)
            raise HubError(404, f"not modelled: {method} /api/{'/'.join(parts)}")

        # -- endpoints ---------------------------------------------------------------------------------------
        def _validate_yaml(self, payload: dict[str, Any]):
            content = payload.get("content") or ""
            if content.startswith("---\n") and (end := content.find("\n---", 4)) != -1:
                import yaml

                try:
                    meta = yaml.safe_load(content[4:end])
                except yaml.YAMLError as err:
                    return self._json(400, {"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []})
                if meta is not None and not isinstance(meta, dict):
                    return self._json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
            return self._json(200, {"errors": [], "warnings": []})

        def _create_repo(self, payload: dict[str, Any], user: str | None):
            if self._fault("create_repo") == "drop_after":
                raise _Drop()
            if user is None:
                raise HubError(401, "You must be authenticated to create a repo")
            namespace = payload.get("organization") or user
            if namespace != user:
                raise HubError(403, f"You don't have the rights to create a repo under {namespace!r}")
            repo_type = payload.get("type") or "model"
            repo_id = f"{namespace}/{payload['name']}"
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            hub.create_repo(repo_type, repo_id, private=private, author=user)
            self._json(200, {"url": f"{hub.url}/{URL_PREFIXES[repo_type]}{repo_id}", "name": repo_id})

        def _repo_info(self, repo_type, repo_id, revision, query, user):
            if self._fault("read") == "drop_after":
                raise _Drop()
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user)
                commit = repo.commits[_resolve(repo, revision)]
                blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
                siblings = []
                for path, entry in sorted(commit.files.items()):
                    sib: dict[str, Any] = {"rfilename": path}
                    if blobs:
                        sib.update(size=entry.size, blobId=entry.oid)
                        if entry.lfs_sha256:
                            sib["lfs"] = entry.to_json(path)["lfs"] | {"sha256": entry.lfs_sha256}
                    siblings.append(sib)
                info = {
                    "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                    "id": repo_id,
                    "author": repo.namespace,
                    "sha": commit.oid,
                    "lastModified": commit.date,
                    "createdAt": repo.created_at,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                    "cardData": _card_data(repo, commit.files),
                }
            self._json(200, info, head=self.command == "HEAD")

        def _preupload(self, repo_type, repo_id, revision, payload, query, user):
            if self._fault("preupload") == "drop_after":
                raise _Drop()
            if query.get("create_pr"):
                raise HubError(400, "create_pr is not modelled by this server")
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user, write=True)
                commit = repo.commits[_resolve(repo, unquote(revision))]
                files = []
                for item in payload.get("files", []):
                    sample = base64.b64decode(item.get("sample") or "")
                    mode = _upload_mode(item["path"], int(item.get("size") or 0), sample)
                    existing = commit.files.get(item["path"])
                    oid = None
                    if existing is not None:
                        oid = existing.lfs_sha256 if existing.lfs_sha256 else existing.oid
                        mode = "lfs" if existing.lfs_sha256 else mode
                    files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            self._json(200, {"files": files, "commitOid": commit.oid})

        def _lfs_batch(self, repo_type, repo_id, body, user):
            if self._fault("lfs_batch") == "drop_after":
                raise _Drop()
            payload = json.loads(body or b"{}")
            if payload.get("operation") != "upload":
                raise HubError(400, "only the upload operation is modelled")
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user, write=True)
                objects = []
                for obj in payload.get("objects", []):
                    oid, size = obj["oid"], int(obj["size"])
                    out: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                    if oid not in repo.lfs:
                        base = f"{hub.url}/_lfs/{URL_PREFIXES[repo_type]}{repo_id}"
                        out["actions"] = {
                            "upload": {"href": f"{base}/{oid}?size={size}", "header": {}},
                            "verify": {"href": f"{base}/verify", "header": {}},
                        }
                    objects.append(out)
            self._json(
                200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}
            )

        def _lfs_object(self, method, parts, body, user):
            repo_type = "model"
            if parts and parts[0] in ("datasets", "spaces"):
                repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
            repo_id, rest = f"{parts[0]}/{parts[1]}", parts[2:]
            if method == "PUT" and len(rest) == 1:
                # Like a pre-signed S3 URL: the PUT carries no token, the oid in the URL is the authorisation.
                after = self._fault("lfs_upload")
                oid = rest[0]
                if hashlib.sha256(body).hexdigest() != oid:
                    raise HubError(400, f"sha256 mismatch for LFS object {oid}")
                with hub.lock:
                    hub.repos[(repo_type, repo_id)].lfs[oid] = body
                if after == "drop_after":
                    raise _Drop()
                return self._send(200, b"", {"ETag": f'"{oid}"'})
            if method == "POST" and rest == ["verify"]:
                after = self._fault("lfs_verify")
                payload = json.loads(body or b"{}")
                with hub.lock:
                    repo = hub._get_repo(repo_type, repo_id, user, write=True)
                    data = repo.lfs.get(payload.get("oid", ""))
                if data is None or len(data) != int(payload.get("size", -1)):
                    raise HubError(404, f"LFS object {payload.get('oid')} not found")
                if after == "drop_after":
                    raise _Drop()
                return self._json(200, {"message": "verified"})
            raise HubError(404, "not modelled")

        def _commit(self, repo_type, repo_id, revision, body, query, user):
            after = self._fault("commit")
            if query.get("create_pr"):
                raise HubError(400, "create_pr is not modelled by this server")
            branch = unquote(revision)
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next((item["value"] for item in lines if item["key"] == "header"), {})
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user, write=True)
                if branch not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
                head = repo.branches[branch]
                parent = header.get("parentCommit")
                if parent is not None and parent != head:
                    raise HubError(412, f"A commit has happened since {parent}. Please refresh and try again.")
                files = dict(repo.commits[head].files)
                pending_blobs: dict[str, bytes] = {}
                for item in lines:
                    key, value = item["key"], item.get("value", {})
                    if key == "file":
                        data = (
                            base64.b64decode(value["content"])
                            if value.get("encoding") == "base64"
                            else (value["content"].encode())
                        )
                        entry = FileEntry(git_blob_oid(data), len(data))
                        pending_blobs[f"git:{entry.oid}"] = data
                        files[value["path"]] = entry
                    elif key == "lfsFile":
                        oid = value["oid"]
                        if oid not in repo.lfs:
                            raise HubError(422, f"LFS object {oid} for {value['path']} was never uploaded")
                        size = len(repo.lfs[oid])
                        files[value["path"]] = FileEntry(git_blob_oid(lfs_pointer(oid, size)), size, oid)
                    elif key == "deletedFile":
                        if value["path"] not in files:
                            raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                        del files[value["path"]]
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        for path in [p for p in files if p.startswith(prefix)]:
                            del files[path]
                    elif key != "header":
                        raise HubError(400, f"unknown commit operation {key!r}")
                repo.lfs.update(pending_blobs)
                commit = _make_commit(
                    repo, [head], header.get("summary") or "update", header.get("description") or "", user, files
                )
                repo.branches[branch] = commit.oid
            if after == "drop_after":
                raise _Drop()
            url = f"{hub.url}/{URL_PREFIXES[repo_type]}{repo_id}/commit/{commit.oid}"
            self._json(200, {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

        def _refs(self, repo_type, repo_id, user):
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user)
                out = {
                    "branches": [
                        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c}
                        for n, c in sorted(repo.branches.items())
                    ],
                    "tags": [
                        {"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in sorted(repo.tags.items())
                    ],
                    "converts": [],
                    "pullRequests": [],
                }
            self._json(200, out)

        def _tag(self, method, repo_type, repo_id, arg, payload, user):
            after = self._fault("tag")
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user, write=True)
                if method == "POST":
                    target = _resolve(repo, arg)
                    tag = payload["tag"]
                    if tag in repo.tags:
                        raise HubError(409, f"Tag {tag} already exists (at {repo.tags[tag]})")
                    repo.tags[tag] = target
                elif method == "DELETE":
                    if arg not in repo.tags:
                        raise HubError(404, f"Tag {arg} not found", "RevisionNotFound")
                    del repo.tags[arg]
                else:
                    raise HubError(405, "method not allowed")
            if after == "drop_after":
                raise _Drop()
            self._json(200, {})

        def _branch(self, method, repo_type, repo_id, branch, payload, user):
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user, write=True)
                if method == "POST":
                    if branch in repo.branches:
                        raise HubError(409, f"Branch {branch} already exists")
                    repo.branches[branch] = _resolve(repo, payload.get("startingPoint") or "main")
                elif method == "DELETE":
                    if branch == "main" or branch not in repo.branches:
                        raise HubError(403 if branch == "main" else 404, f"cannot delete branch {branch}")
                    del repo.branches[branch]
                else:
                    raise HubError(405, "method not allowed")
            self._json(200, {})

        def _page_link(self, **params) -> dict[str, str]:
            split = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(split.query).items()} | {k: str(v) for k, v in params.items()}
            qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
            return {"Link": f'<{hub.url}{split.path}?{qs}>; rel="next"'}

        def _commits(self, repo_type, repo_id, revision, query, user):
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user)
                history = _history(repo, _resolve(repo, unquote(revision)))
            page = int(query.get("p", ["0"])[0])
            size = hub.commits_page_size
            items = [
                {
                    "id": c.oid,
                    "title": c.title,
                    "message": c.message,
                    "date": c.date,
                    "authors": [{"user": c.author}],
                    "parents": c.parents,
                }
                for c in history[page * size : (page + 1) * size]
            ]
            more = (page + 1) * size < len(history)
            self._json(200, items, self._page_link(p=page + 1) if more else None)

        def _tree(self, repo_type, repo_id, revision, path, query, user):
            if self._fault("read") == "drop_after":
                raise _Drop()
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user)
                commit = repo.commits[_resolve(repo, revision)]
                path = path.strip("/")
                if path and _path_info(commit.files, path) is None:
                    raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
                entries = _tree_entries(commit.files, path, recursive)
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start : start + hub.tree_page_size]
            more = start + hub.tree_page_size < len(entries)
            self._json(200, page, self._page_link(cursor=start + hub.tree_page_size) if more else None)

        def _paths_info(self, repo_type, repo_id, revision, form, user):
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user)
                commit = repo.commits[_resolve(repo, unquote(revision))]
                infos = [info for p in form.get("paths", []) if (info := _path_info(commit.files, p)) is not None]
            self._json(200, infos)

        def _resolve_file(self, repo_type, repo_id, revision, path, user):
            head = self.command == "HEAD"
            if self._fault("read") == "drop_after":
                raise _Drop()
            with hub.lock:
                repo = hub._get_repo(repo_type, repo_id, user)
                commit = repo.commits[_resolve(repo, revision)]
                entry = commit.files.get(path)
                if entry is None:
                    raise HubError(
                        404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid}
                    )
                data = _blob(repo, entry)
            headers = {
                "Content-Type": "application/octet-stream",
                "X-Repo-Commit": commit.oid,
                "ETag": f'"{entry.oid}"',
                "Accept-Ranges": "bytes",
            }
            if entry.lfs_sha256:
                headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)})
            status = 200
            if (rng := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())):
                total = len(data)
                if m.group(1):
                    start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else total - 1
                else:
                    start, end = max(0, total - int(m.group(2) or 0)), total - 1
                if start >= total:
                    return self._send(416, b"", {"Content-Range": f"bytes */{total}"}, head=head)
                end = min(end, total - 1)
                data, status = data[start : end + 1], 206
                headers["Content-Range"] = f"bytes {start}-{end}/{total}"
            self._send(status, data, headers, head=head)

    return Handler
