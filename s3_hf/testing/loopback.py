"""What every loopback test server shares: a threaded HTTP server on 127.0.0.1 run in a daemon thread."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` with a deep listen backlog that stays quiet about clients hanging up."""

    daemon_threads = True
    request_queue_size = 1024  # listen() backlog: the default 5 drops bursts of new connections (1 s SYN retry)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that hung up (timeouts, cancelled runs) is part of the game
        super().handle_error(request, client_address)


class LoopbackServer:
    """Start/stop/context-manager life cycle of a server on ``127.0.0.1:port`` (0: a free port).

    Subclasses pass their request handler class to ``__init__`` and may override :attr:`url`.
    """

    thread_name = "loopback-server"

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, port: int = 0):
        self._httpd = LoopbackHTTPServer(("127.0.0.1", port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
