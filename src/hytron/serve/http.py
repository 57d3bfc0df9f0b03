"""The uvicorn server for the app: a read deadline per request and a bounded graceful shutdown.

uvicorn only times out idle keep-alive connections, so a client that sends half a request (headers, or part
of a body) held its connection, and on SIGTERM the server waited for it forever. Here every request must
arrive whole (headers and body) within `read_timeout` seconds of the connection opening or the previous
response ending, or the connection is closed; on SIGTERM, requests in flight get `shutdown_timeout` seconds.
Request heads stay capped by h11 (16 KiB), bodies by the app (`max_body_bytes`).
"""

from __future__ import annotations

import functools

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for receiving each whole request (headers and body)."""

    def __init__(self, *args, read_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.read_deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._disarm()  # the request is in (DONE), or the connection is over either way

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this keep-alive connection has its own deadline

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_timed_out(self) -> None:
        self.read_deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        self.logger.info("closing a connection whose request did not arrive within %ss", self.read_timeout)
        # closing makes a handler waiting for the rest of the body receive http.disconnect
        self.transport.close()


def options(read_timeout: float, shutdown_timeout: float) -> dict:
    """`uvicorn.Config` keyword arguments: the deadline protocol and the graceful-shutdown bound."""
    return dict(http=functools.partial(DeadlineH11Protocol, read_timeout=read_timeout), timeout_keep_alive=5,
                timeout_graceful_shutdown=shutdown_timeout)


def run(app, host: str, port: int, read_timeout: float, shutdown_timeout: float, log_level: str = "warning") -> None:
    """Serve `app` until SIGINT/SIGTERM; then finish (or, after `shutdown_timeout` s, cancel) requests in flight."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, **options(read_timeout, shutdown_timeout))
