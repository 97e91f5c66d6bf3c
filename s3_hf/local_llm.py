"""The embedded local LLM: llama.cpp's OpenAI-compatible server, started and stopped by s3-hf.

:class:`LocalLLMServer` runs ``python -m s3_hf.llama_server`` (llama-cpp-python's server with its logprobs computed in
numpy, :mod:`s3_hf.llama_server`) on 127.0.0.1 with a verified GGUF model from
:func:`s3_hf.assets.gguf_path`, on a free port, waits until it answers, writes its output to a log file and stops it
on :meth:`~LocalLLMServer.close`, on exit of the ``with`` block, or at interpreter exit. The engine then talks to it
through the same ``openai`` code path as to any other server.

llama.cpp's server serves one request at a time (and ignores ``n>1``). To use more than one core on more than one
request, start ``replicas`` servers with ``n_threads`` each; :class:`~s3_hf.llm_engine.LLMEngine` spreads requests
over them. ``benchmarks/llm_throughput.py`` measures which is faster on a given machine.

Example:

```python
>>> with LocalLLMServer("smollm2") as server:
...     print(server.base_urls)   # ['http://127.0.0.1:PORT/v1']
```
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import ctypes.util
import importlib.util
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from .assets import cache_dir, gguf_path
from .errors import S3ConfigError, S3Error

logger = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[LocalLLMServer] = weakref.WeakSet()


class LocalLLMError(S3Error, RuntimeError):
    """The local llama.cpp server could not be started, or died while running."""


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp`` (with its server extra) is importable."""
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalLLMServer:
    """One or more llama.cpp OpenAI-compatible servers for a local GGUF model.

    Args:
        model: ``"qwen2.5-coder-0.5b"`` (default local LLM), ``"smollm2"`` (tiny, for tests), or a path to a GGUF.
        n_ctx: context size per server.
        n_threads: CPU threads per server (``None``: all cores divided among the replicas).
        n_batch: prompt-processing batch size.
        replicas: how many servers to start (each serves one request at a time).
        log_dir: where ``llama-server-<port>.log`` files go (default ``<s3_hf cache>/logs``).
        startup_timeout_s: how long to wait for a server to answer ``GET /v1/models``.
        model_alias: the model name the server answers to.
        logits_all: keep the logits of every prompt token. llama-cpp-python answers requests for ``logprobs`` only
            then, but it also runs the output layer on every prompt token (``benchmarks/local_logits.py``: a round's
            text calls took 0.89x the seconds without it, with the same text);
            :class:`~s3_hf.llm_engine.LLMEngine` starts its servers without it and gives requests with ``logprobs``
            servers of their own.
        fast_logprobs: run :mod:`s3_hf.llama_server` (the same answers; a verification call 0.71x the seconds,
            ``benchmarks/local_logprobs.py``) instead of ``llama_cpp.server`` as installed.
        prefix_reuse: let a server reuse the KV cache of its previous prompt (llama-cpp-python's behaviour, which
            ``llama_cpp.server`` as installed always has). Off by default: a reply then depends on the request alone,
            not on which request the server answered before (``benchmarks/prefix_reuse.py``).
    """

    def __init__(
        self,
        model: str = "qwen2.5-coder-0.5b",
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        replicas: int = 1,
        log_dir: str | Path | None = None,
        startup_timeout_s: float = 180.0,
        model_alias: str = "local",
        logits_all: bool = True,
        fast_logprobs: bool = True,
        prefix_reuse: bool = False,
    ):
        if replicas < 1:
            raise S3ConfigError(f"LocalLLMServer.replicas must be >= 1, got {replicas!r}")
        if n_threads is not None and n_threads < 1:
            raise S3ConfigError(f"LocalLLMServer.n_threads must be >= 1 or None, got {n_threads!r}")
        if n_ctx < 256:
            raise S3ConfigError(f"LocalLLMServer.n_ctx must be >= 256, got {n_ctx!r}")
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, (os.cpu_count() or 1) // replicas)
        self.n_batch = n_batch
        self.replicas = replicas
        self.log_dir = Path(log_dir) if log_dir else cache_dir() / "logs"
        self.startup_timeout_s = startup_timeout_s
        self.model_alias = model_alias
        self.logits_all = logits_all
        self.fast_logprobs = fast_logprobs
        self.prefix_reuse = prefix_reuse
        self._procs: list[tuple[subprocess.Popen, int, Path]] = []

    @property
    def model_path(self) -> Path:
        if self.model.endswith(".gguf") or os.path.sep in self.model:
            path = Path(self.model)
            if not path.is_file():
                raise LocalLLMError(f"local model file {path} does not exist")
            return path
        return gguf_path(self.model)

    @property
    def base_urls(self) -> list[str]:
        """``http://127.0.0.1:PORT/v1`` of each running server."""
        return [f"http://127.0.0.1:{port}/v1" for _, port, _ in self._procs]

    @property
    def log_files(self) -> list[Path]:
        return [log for _, _, log in self._procs]

    def command(self, port: int) -> list[str]:
        """The command line of one server."""
        return [
            sys.executable,
            "-m",
            "s3_hf.llama_server" if self.fast_logprobs else "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--n_batch",
            str(self.n_batch),
            "--logits_all",
            str(self.logits_all),
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
            *(("--prefix_reuse", str(self.prefix_reuse)) if self.fast_logprobs else ()),
        ]

    def start(self) -> LocalLLMServer:
        """Start the servers and wait until each answers; raises :class:`LocalLLMError` with the log tail."""
        if self._procs:
            return self
        if not llama_cpp_available():
            raise LocalLLMError(
                "the local LLM needs llama-cpp-python with its server extra: "
                "pip install 'llama-cpp-python[server]==0.3.36' (or set LLMConfig.base_url to an OpenAI-compatible server)"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.n_threads)}
        for _ in range(self.replicas):
            port = free_port()
            log_path = self.log_dir / f"llama-server-{port}.log"
            with open(log_path, "wb") as log:
                proc = _spawn(
                    self.command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            self._procs.append((proc, port, log_path))
        _LIVE.add(self)
        try:
            for proc, port, log_path in self._procs:
                self._wait_ready(proc, port, log_path)
        except BaseException:
            self.close()
            raise
        logger.info("local LLM %s ready at %s (logs: %s)", self.model, self.base_urls, self.log_dir)
        return self

    def _wait_ready(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://127.0.0.1:{port}/v1/models"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise _exited(proc, port, log_path)
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        raise LocalLLMError(
            f"llama.cpp server on port {port} not ready after {self.startup_timeout_s}s; log {log_path}:\n"
            f"{_tail(log_path)}"
        )

    def close(self) -> None:
        """Stop every server (terminate, then kill after 10 s)."""
        procs, self._procs = self._procs, []
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        _LIVE.discard(self)

    def check_alive(self) -> None:
        """Raise :class:`LocalLLMError` (how the server ended, its log tail) when a started server has exited, e.g.
        killed by the kernel mid-run; a connection error from a dead server is then not worth retrying."""
        for proc, port, log_path in self._procs:
            if proc.poll() is not None:
                raise _exited(proc, port, log_path)

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(proc.poll() is None for proc, _, _ in self._procs)

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort; close() is the API
        try:
            self.close()
        except Exception:
            pass


def _spawn(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` such that the child gets SIGTERM when this process dies, even by SIGKILL or an unhandled
    SIGTERM (neither runs ``atexit``), so no server outlives its run.

    Linux sends the parent-death signal when the *thread* that forked the child ends, and the engine starts its
    servers from a worker thread (``asyncio.to_thread``) that ends long before the run does. So on Linux every server
    is forked by one daemon thread that lives as long as the process; elsewhere this is plain ``Popen``.
    """
    if not sys.platform.startswith("linux"):
        return subprocess.Popen(command, **popen_kwargs)
    done: concurrent.futures.Future[subprocess.Popen] = concurrent.futures.Future()
    _spawner().put((command, popen_kwargs, done))
    return done.result()


_SPAWNER: tuple[int, queue.SimpleQueue] | None = None  # (pid, requests): a forked child starts its own thread
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> queue.SimpleQueue:
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None or _SPAWNER[0] != os.getpid():
            requests: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_serve_spawns, args=(requests,), name="s3-hf-spawner", daemon=True).start()
            _SPAWNER = (os.getpid(), requests)
        return _SPAWNER[1]


def _serve_spawns(requests: queue.SimpleQueue) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        libc = None
    parent = os.getpid()

    def set_death_signal() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    preexec_fn = set_death_signal if libc is not None else None
    while True:
        command, popen_kwargs, done = requests.get()
        try:
            done.set_result(subprocess.Popen(command, preexec_fn=preexec_fn, **popen_kwargs))
        except BaseException as err:  # handed back to the caller of _spawn
            done.set_exception(err)


def _exited(proc: subprocess.Popen, port: int, log_path: Path) -> LocalLLMError:
    """The error for a server that has exited: its exit code or signal (with what to do about SIGILL) and log tail."""
    code = proc.returncode
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
        if code == -signal.SIGILL:
            how += (
                " (illegal instruction: llama-cpp-python was built for CPU features this machine does not run, e.g. "
                "AMX; rebuild it with `make rebuild-llama`, which leaves AMX out and bypasses pip's wheel cache)"
            )
    else:
        how = f"exited with code {code}"
    return LocalLLMError(f"llama.cpp server on port {port} {how}; log {log_path}:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "<no log>"


@atexit.register
def _close_all() -> None:
    for server in list(_LIVE):
        server.close()
