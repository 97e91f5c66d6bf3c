"""Publish each S3 round as a version of a dataset: one commit per round, tagged ``round-<k>``, idempotently.

A target is either a Hub dataset repo, spelled ``hf://datasets/<namespace>/<name>`` (``HF_ENDPOINT`` picks the
server), or a local folder (any other path; the default), versioned with ``git``. Both hold the Hub layout written
by :mod:`s3_hf.export` (``<config>/train-00000-of-00001.parquet`` per config, a README.md with YAML ``configs:``), so
``load_dataset(target, "round_1", revision="round-1")`` (or :func:`load_round`) reads any round back.

```python
>>> publish_round("hf://datasets/me/rte-s3", "rte", "round_1", "staging/")   # or "runs/rte" for a local folder
PublishResult(target='hf://datasets/me/rte-s3', round_name='round_1', tag='round-1', commit='3f2a...', ...)
>>> load_round("hf://datasets/me/rte-s3", "all", revision="round-1")          # the data as of round 1
```

What makes it safe to re-run (a crashed or interrupted pipeline just calls it again):

- the files are compared by content hash with the target first (sha256 against LFS oids, git blob ids against
  regular files, via ``paths-info``): only changed files are committed, and nothing at all when the round is there;
- a round's files have fixed paths, so re-uploading a half-pushed round overwrites, never duplicates rows;
- transient failures (HTTP 5xx, 429 honouring ``Retry-After``, dropped connections) retry the whole step with
  backoff, recomputing the diff first, so a commit whose response was lost is not made twice
  (``huggingface_hub`` itself retries preupload, LFS batch and LFS uploads, not the commit call);
- bad input fails before anything is written: a target holding another task or format, a tag ``round-k`` that already
  points to different data, a missing repo or folder with ``create=False``.

The README.md card is merged with the one already there (:func:`s3_hf.card.merge_card`): prose the user wrote
survives, configs and row counts update.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .card import merge_card, split_card
from .errors import S3ConfigError, S3Error
from .tasks import TaskSpec, get_task

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://datasets/"
CARD = "README.md"
GIT_IDENTITY = {"name": "s3-hf", "email": "s3-hf@localhost"}
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_T = TypeVar("_T")


class PublishError(S3Error):
    """A round cannot be published to this target; nothing was written."""


@dataclass
class PublishResult:
    """What :func:`publish_round` did.

    Attributes:
        target: the target as given.
        round_name: ``seed``, ``round_1``, ...
        tag: the tag of the round (``round-0`` for the seed, ``round-<k>``).
        commit: the commit the tag points to (Hub commit oid or git commit sha).
        pushed: whether a new commit was made (``False``: the round was already there).
        changed: the files the new commit changed.
        attempts: how many times the commit step ran (more than 1 after transient failures).
    """

    target: str
    round_name: str
    tag: str
    commit: str
    pushed: bool
    changed: list[str] = field(default_factory=list)
    attempts: int = 1


def round_tag(round_name: str) -> str:
    """The tag of a round: ``seed`` -> ``round-0``, ``round_<k>`` -> ``round-<k>``."""
    if round_name == "seed":
        return "round-0"
    if m := re.fullmatch(r"round_(\d+)", round_name):
        return f"round-{int(m.group(1))}"
    raise S3ConfigError(f"round_name must be 'seed' or 'round_<k>', got {round_name!r}")


def hub_repo_id(target: str | Path) -> str | None:
    """The repo id of a Hub target (``hf://datasets/<ns>/<name>``), ``None`` for a local folder."""
    if isinstance(target, str) and target.startswith("hf://"):
        if not target.startswith(HUB_PREFIX) or not re.fullmatch(r"[\w.-]+/[\w.-]+", target[len(HUB_PREFIX) :]):
            raise S3ConfigError(f"a Hub target is spelled hf://datasets/<namespace>/<name>, got {target!r}")
        return target[len(HUB_PREFIX) :]
    return None


def git_blob_oid(data: bytes) -> str:
    """git's object id of a blob (the Hub's oid of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _staged_payload(staged_dir: Path, files: Iterable[str] | None) -> dict[str, bytes]:
    if not staged_dir.is_dir():
        raise PublishError(f"staged folder {staged_dir} does not exist")
    if files is None:
        paths = sorted(
            p.relative_to(staged_dir).as_posix()
            for p in staged_dir.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(staged_dir).parts)
        )
    else:
        paths = sorted({Path(f).as_posix() for f in files})
    if not paths:
        raise PublishError(f"nothing to publish in {staged_dir}")
    payload = {}
    for rel in paths:
        path = staged_dir / rel
        if not path.is_file():
            raise PublishError(f"{path}: staged file missing")
        payload[rel] = path.read_bytes()
    return payload


def _check_compatible(target: str, spec: TaskSpec, card: str | None, other_files: Iterable[str]) -> None:
    """Refuse a target that holds another task's data, another format, or a dataset not written by s3-hf."""
    meta = split_card(card)[0] if card else {}
    s3 = meta.get("s3_hf")
    if isinstance(s3, dict):
        if s3.get("task") != spec.name:
            raise PublishError(
                f"{target} holds S3 data of task {s3.get('task')!r} (card metadata s3_hf.task), not {spec.name!r}; "
                "nothing was pushed. Use another target."
            )
        if s3.get("format", "parquet") != "parquet":
            raise PublishError(f"{target} stores format {s3.get('format')!r}, not parquet; nothing was pushed")
        return
    data = [f for f in other_files if f not in (".gitattributes", CARD, ".gitignore")]
    if meta.get("configs") or data:
        shown = ", ".join(data[:3]) + (" ..." if len(data) > 3 else "")
        raise PublishError(
            f"{target} already holds a dataset that s3-hf did not write (no s3_hf metadata in its README.md; "
            f"files: {shown or 'configs only'}); nothing was pushed. Use another target."
        )


def _merged_payload(payload: dict[str, bytes], existing_card: str | None) -> dict[str, bytes]:
    if CARD in payload and existing_card:
        merged = dict(payload)
        merged[CARD] = merge_card(existing_card, payload[CARD].decode("utf-8")).encode("utf-8")
        return merged
    return payload


def _data_files(payload: dict[str, bytes]) -> dict[str, bytes]:
    return {p: b for p, b in payload.items() if p.endswith(".parquet")}


class RoundPublisher:
    """Publishes rounds of one task to one target (Hub repo or local git folder).

    Args:
        target: ``hf://datasets/<namespace>/<name>`` or a local folder.
        task: the task (name or spec); a target holding another task is refused.
        token: Hub token (default: the ``huggingface_hub`` one). Never logged.
        private: make a new Hub repo private (only counts at creation, like the Hub).
        create: create the repo or folder when missing; ``False`` raises :class:`PublishError` instead.
        max_attempts: attempts of each Hub step on transient failures.
        backoff_s: first wait between attempts (doubles, capped at 30 s; a ``Retry-After`` wins when longer).
    """

    def __init__(
        self,
        target: str | Path,
        task: str | TaskSpec,
        *,
        token: str | None = None,
        private: bool | None = None,
        create: bool = True,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
    ):
        if max_attempts < 1:
            raise S3ConfigError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if backoff_s < 0:
            raise S3ConfigError(f"backoff_s must be >= 0, got {backoff_s!r}")
        self.target = str(target)
        self.repo_id = hub_repo_id(target)
        self.spec = get_task(task)
        self.token = token
        self.private = private
        self.create = create
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._git_env: dict[str, str] | None = None

    def publish(
        self,
        round_name: str,
        staged_dir: str | Path,
        files: Iterable[str] | None = None,
        *,
        commit_message: str | None = None,
    ) -> PublishResult:
        """Commit the staged files of a round and tag the commit (see the module docstring).

        Args:
            round_name: ``seed`` or ``round_<k>``.
            staged_dir: a Hub-layout folder holding the files to publish.
            files: paths relative to ``staged_dir`` (default: every file in it but hidden ones): the round's config,
                the updated ``all``, README.md, run_config.json, ...
            commit_message: defaults to ``S3 <task>: <round_name>``.
        """
        tag = round_tag(round_name)
        payload = _staged_payload(Path(staged_dir), files)
        message = commit_message or f"S3 {self.spec.name}: {round_name}"
        if self.repo_id is not None:
            return self._publish_hub(round_name, tag, payload, message)
        return self._publish_local(round_name, tag, payload, message)

    # ---- retries ------------------------------------------------------------------------------------------------
    def _retry(self, what: str, fn: Callable[[], _T]) -> tuple[_T, int]:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        wait = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn(), attempt
            except (HfHubHTTPError, httpx2.TransportError) as err:
                response = getattr(err, "response", None)
                status = response.status_code if response is not None else None
                transient = status is None or status in RETRY_STATUS or status == 412
                if isinstance(err, HfHubHTTPError) and response is None:
                    transient = False
                if not transient or attempt == self.max_attempts:
                    raise
                retry_after = response.headers.get("Retry-After") if response is not None else None
                delay = max(wait, float(retry_after)) if retry_after and retry_after.isdigit() else wait
                logger.warning(
                    "%s failed (%s); retry %d/%d in %.1fs",
                    what,
                    status or type(err).__name__,
                    attempt,
                    self.max_attempts - 1,
                    delay,
                )
                time.sleep(delay)
                wait = min(30.0, wait * 2 if wait else 0.0)
        raise AssertionError("unreachable")

    # ---- Hub -------------------------------------------------------------------------------------------------
    def _read_remote(self, api, revision: str, path: str) -> bytes | None:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            local = api.hf_hub_download(self.repo_id, path, repo_type="dataset", revision=revision)
        except EntryNotFoundError:
            return None
        return Path(local).read_bytes()

    def _remote_changes(self, api, revision: str, payload: dict[str, bytes]) -> list[str]:
        """The payload paths whose content differs from ``revision`` (missing ones included)."""
        from huggingface_hub.hf_api import RepoFile

        infos = api.get_paths_info(self.repo_id, list(payload), revision=revision, repo_type="dataset")
        remote = {i.path: i for i in infos if isinstance(i, RepoFile)}
        changed = []
        for path, data in payload.items():
            info = remote.get(path)
            if info is None:
                changed.append(path)
            elif info.lfs is not None:
                if info.lfs.sha256 != hashlib.sha256(data).hexdigest():
                    changed.append(path)
            elif info.blob_id != git_blob_oid(data):
                changed.append(path)
        return changed

    def _publish_hub(self, round_name: str, tag: str, payload: dict[str, bytes], message: str) -> PublishResult:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        api = HfApi(token=self.token)
        repo_id = self.repo_id
        try:
            self._retry("repo_info", lambda: api.repo_info(repo_id, repo_type="dataset"))
        except RepositoryNotFoundError:
            if not self.create:
                raise PublishError(
                    f"Hub dataset repo {repo_id} does not exist (or the token cannot see it) and create=False"
                ) from None
            self._retry(
                "create_repo",
                lambda: api.create_repo(repo_id, repo_type="dataset", private=self.private, exist_ok=True),
            )
        refs, _ = self._retry("list_repo_refs", lambda: api.list_repo_refs(repo_id, repo_type="dataset"))
        tags = {t.name: t.target_commit for t in refs.tags}
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        if head is None:
            raise PublishError(
                f"Hub dataset repo {repo_id} has no 'main' branch (branches: {sorted(b.name for b in refs.branches)}); "
                "S3 publishes each round as a commit on main: create it, or publish to another repo"
            )
        card = self._read_remote(api, head, CARD)
        files, _ = self._retry(
            "list_repo_files", lambda: api.list_repo_files(repo_id, repo_type="dataset", revision=head)
        )
        _check_compatible(self.target, self.spec, card.decode("utf-8") if card else None, files)

        if tag in tags:
            differing = self._remote_changes(api, tags[tag], _data_files(payload))
            if differing:
                raise PublishError(
                    f"tag {tag} of {self.target} already points to commit {tags[tag]}, whose {', '.join(differing)} "
                    "differ from the staged round; nothing was pushed. Publish under another round or target."
                )
            logger.info("%s of %s is already published at %s; nothing to push", round_name, self.target, tags[tag])
            return PublishResult(self.target, round_name, tag, tags[tag], pushed=False)

        changed_box: list[str] = []

        def commit_once() -> str:
            head = api.repo_info(repo_id, repo_type="dataset").sha
            card = self._read_remote(api, head, CARD)
            merged = _merged_payload(payload, card.decode("utf-8") if card else None)
            changed = self._remote_changes(api, head, merged)
            if not changed:
                return head
            operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=merged[p]) for p in changed]
            changed_box[:] = changed
            info = api.create_commit(
                repo_id, operations, commit_message=message, repo_type="dataset", parent_commit=head
            )
            return info.oid

        commit, attempts = self._retry(f"commit of {round_name}", commit_once)
        try:
            self._retry("create_tag", lambda: api.create_tag(repo_id, tag=tag, revision=commit, repo_type="dataset"))
        except HfHubHTTPError as err:
            if err.response is None or err.response.status_code != 409:
                raise
            # The tag exists: a retried request whose first answer was lost, or a concurrent publisher.
            refs = api.list_repo_refs(repo_id, repo_type="dataset")
            current = {t.name: t.target_commit for t in refs.tags}.get(tag)
            if current != commit:
                raise PublishError(f"tag {tag} of {self.target} was set to {current} meanwhile, not {commit}") from err
        pushed = commit != head
        return PublishResult(
            self.target,
            round_name,
            tag,
            commit,
            pushed=pushed,
            changed=changed_box if pushed else [],
            attempts=attempts,
        )

    # ---- local git folder ----------------------------------------------------------------------------------
    def _git(self, folder: Path, *args: str, check: bool = True) -> str:
        """Run git in ``folder``; commits use the user's git identity, or ``s3-hf`` when none is configured."""
        if self._git_env is None:
            configured = subprocess.run(["git", "config", "--get", "user.email"], capture_output=True, cwd=folder)
            self._git_env = dict(os.environ)
            if not configured.stdout.strip():
                for who in ("AUTHOR", "COMMITTER"):
                    self._git_env.setdefault(f"GIT_{who}_NAME", GIT_IDENTITY["name"])
                    self._git_env.setdefault(f"GIT_{who}_EMAIL", GIT_IDENTITY["email"])
        proc = subprocess.run(
            ["git", "-C", str(folder), "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
            capture_output=True,
            env=self._git_env,
        )
        if check and proc.returncode != 0:
            raise PublishError(f"git {' '.join(args)} failed in {folder}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode(errors="replace").strip()

    def _publish_local(self, round_name: str, tag: str, payload: dict[str, bytes], message: str) -> PublishResult:
        folder = Path(self.target)
        if not folder.exists():
            if not self.create:
                raise PublishError(f"local dataset folder {folder} does not exist and create=False")
            folder.mkdir(parents=True)
        if not (folder / ".git").exists():
            card_path = folder / CARD
            existing = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
            _check_compatible(
                self.target, self.spec, card_path.read_text("utf-8") if card_path.exists() else None, existing
            )
            self._git(folder, "init", "-q", "-b", "main")
        tracked = self._git(folder, "ls-files").splitlines()
        card_path = folder / CARD
        card = card_path.read_text("utf-8") if card_path.exists() else None
        _check_compatible(self.target, self.spec, card, tracked)

        tag_commit = self._git(folder, "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False)
        if tag_commit:
            differing = [
                p
                for p, data in _data_files(payload).items()
                if self._git(folder, "rev-parse", "-q", "--verify", f"{tag_commit}:{p}", check=False)
                != git_blob_oid(data)
            ]
            if differing:
                raise PublishError(
                    f"tag {tag} of {folder} already points to commit {tag_commit}, whose {', '.join(differing)} "
                    "differ from the staged round; nothing was written. Publish under another round or target."
                )
            return PublishResult(self.target, round_name, tag, tag_commit, pushed=False)

        merged = _merged_payload(payload, card)
        for rel, data in merged.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        paths = sorted(merged)
        self._git(folder, "add", "--", *paths)
        has_head = bool(self._git(folder, "rev-parse", "-q", "--verify", "HEAD", check=False))
        staged = self._git(folder, "diff", "--cached", "--name-only", *(["HEAD"] if has_head else []), "--", *paths)
        changed = sorted(staged.splitlines())
        if changed:
            self._git(folder, "commit", "-q", "-m", message, "--", *paths)
        commit = self._git(folder, "rev-parse", "HEAD")
        self._git(folder, "tag", tag, commit)
        return PublishResult(self.target, round_name, tag, commit, pushed=bool(changed), changed=changed)


def publish_round(
    target: str | Path,
    task: str | TaskSpec,
    round_name: str,
    staged_dir: str | Path,
    files: Iterable[str] | None = None,
    **kwargs: Any,
) -> PublishResult:
    """Publish one round: ``RoundPublisher(target, task, **kwargs).publish(round_name, staged_dir, files)``."""
    commit_message = kwargs.pop("commit_message", None)
    return RoundPublisher(target, task, **kwargs).publish(round_name, staged_dir, files, commit_message=commit_message)


def materialize_revision(folder: str | Path, revision: str) -> Path:
    """The files of a local dataset folder at ``revision`` (tag, branch or sha), extracted once per commit.

    They go to ``<folder>/.git/s3_hf_revisions/<sha>/`` (inside ``.git``, so git ignores them) and are reused.
    """
    folder = Path(folder)
    proc = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "-q", "--verify", f"{revision}^{{commit}}"], capture_output=True
    )
    sha = proc.stdout.decode().strip()
    if proc.returncode != 0 or not sha:
        raise S3Error(f"revision {revision!r} not found in the git history of {folder}")
    out = folder / ".git" / "s3_hf_revisions" / sha
    if not out.is_dir():
        archive = subprocess.run(
            ["git", "-C", str(folder), "archive", "--format=tar", sha], capture_output=True, check=True
        ).stdout
        tmp = out.with_name(f".{sha}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.replace(tmp, out)
        except OSError:  # another process extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_round(
    target: str | Path,
    config: str,
    revision: str | None = None,
    *,
    split: str | None = "train",
    token: str | None = None,
    streaming: bool = False,
    **load_kwargs: Any,
):
    """Load a config of a published dataset, as of ``revision`` (a tag such as ``round-1``, a branch or a commit).

    A Hub target calls ``load_dataset(repo_id, config, revision=...)``; a local folder is read from its working tree
    (``revision=None``, prepared afresh each time) or from :func:`materialize_revision`.
    """
    import datasets

    repo_id = hub_repo_id(target)
    if repo_id is not None:
        return datasets.load_dataset(
            repo_id, config, revision=revision, split=split, token=token, streaming=streaming, **load_kwargs
        )
    if revision is None:
        # datasets keys the cache of a local folder by its name and card, not by its files' contents: the working
        # tree of a folder published to again would load the rows of the previous round
        load_kwargs.setdefault("download_mode", "force_redownload")
        source = Path(target)
    else:
        source = materialize_revision(target, revision)  # one folder per commit: its cache cannot go stale
    return datasets.load_dataset(str(source), config, split=split, streaming=streaming, **load_kwargs)
