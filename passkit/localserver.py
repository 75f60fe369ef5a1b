"""A small HTTP server on a loopback address, served from a daemon thread.

The demo catalog and the folder source both serve images to the fetch stage over real HTTP; this is
the server they share. Subclass it to give the request handler typed state (`self.server.<attr>`).
"""

from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

LOOPBACK = "127.0.0.1"


class LoopbackServer(ThreadingHTTPServer):
    """Bound at construction (an OSError if the port is taken), serving between start() and stop()."""

    daemon_threads = True

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        port: int = 0,
        host: str = LOOPBACK,
        *,
        name: str = "passkit-localserver",
    ) -> None:
        super().__init__((host, port), handler)
        self.thread_name = name
        self._thread: threading.Thread | None = None

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        """The bound port: the one asked for, or the free one the OS chose for port 0."""
        return int(self.server_address[1])

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; waits (5 s at most) for the serving thread."""
        thread, self._thread = self._thread, None
        if thread is not None:  # shutdown() waits for serve_forever, so only once it runs
            self.shutdown()
        self.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
