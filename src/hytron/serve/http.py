"""The uvicorn server for the app: a read deadline per request and a bounded graceful shutdown.

uvicorn only times out idle keep-alive connections, so a client that sends half a request (headers, or part
of a body) held its connection, and on SIGTERM the server waited for it forever. Here every request must
arrive whole (headers and body) within `read_timeout` seconds of the connection opening or the previous
response ending, or the connection is closed; on SIGTERM, requests in flight get `shutdown_timeout` seconds.
Request heads are capped at 16 KiB (h11 while they arrive, the app's guard once whole), bodies by the app
(`max_body_bytes`).

Connections are capped below the process's open-file limit (`connection_limit`): past the cap the oldest
connection that has not started a request is closed to make room (slow sockets cannot lock clients out), or,
when every connection is busy, the new one gets a 503 and is closed. Without the cap, 1,100 slow sockets
against 1,024 descriptors made `/health` unreachable and logged 107,681 "Too many open files" tracebacks in
30 s; repeated errors are now logged at most once per `LOG_EVERY` seconds each.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import sys
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

FD_RESERVE = 64  # descriptors kept for the process itself (model files, logs, pipes) beyond those open at start
# asyncio accepts up to `backlog` connections in one go before a closed one's descriptor is released, so the
# listen backlog is kept small and reserved too (uvicorn's 2048 let a burst run the process out of descriptors)
BACKLOG = 128
LOG_EVERY = 10.0  # seconds between two log records of the same message
_BUSY_BODY = (b'{"error":{"message":"too many connections: retry later","type":"service_unavailable",'
              b'"param":null,"code":503}}')
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"retry-after: 1\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


def connection_limit(requested: int | None) -> tuple[int, int]:
    """(max connections, the soft open-file limit): `requested`, or by default the limit less the descriptors
    open now and a reserve. A request above that is a ValueError (it would run out of descriptors)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 32
    allowed = max(1, soft - open_now - FD_RESERVE - BACKLOG) if soft != resource.RLIM_INFINITY else 1 << 16
    if requested is None:
        return allowed, soft
    if requested < 1 or requested > allowed:
        raise ValueError(f"--max-connections must be between 1 and {allowed} (the open-file limit {soft} less "
                         f"{soft - allowed} for the process's own files; raise it with `ulimit -n`), got {requested}")
    return requested, soft


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for receiving each whole request (headers and body) and a cap on
    connections."""

    def __init__(self, *args, read_timeout: float, max_connections: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.read_deadline = None
        self.waiting_since: float | None = None  # when it began waiting for a request it has sent nothing of

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        """Over the cap: close the longest-waiting connection that has sent nothing, else refuse this one."""
        live = [c for c in self.connections if not c.transport.is_closing()]  # closed ones leave next iteration
        if len(live) <= self.max_connections:
            return
        idle = [c for c in live if c is not self and getattr(c, "waiting_since", None) is not None]
        victim = min(idle, key=lambda c: c.waiting_since) if idle else None
        if victim is None:
            self.logger.warning("refusing a connection: %d connections are busy (--max-connections)", len(live) - 1)
            self.transport.write(BUSY)
            victim = self
        victim._disarm()
        victim.waiting_since = None
        victim.transport.close()

    def data_received(self, data: bytes) -> None:
        self.waiting_since = None
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
        self.waiting_since = time.monotonic()
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


class _RateLimit(logging.Filter):
    """Lets each message (by its format string) through at most once per LOG_EVERY seconds, then says how many
    were left out."""

    def __init__(self):
        super().__init__()
        self.last: dict[str, list] = {}  # message -> [time logged, records left out since]

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError):  # out of descriptors, buffers, memory: one line, no traceback
            record.msg, record.args, record.exc_info = f"{record.getMessage()}: {error}", None, None
        key = str(record.msg)[:200]
        now = time.monotonic()
        seen = self.last.get(key)
        if seen is not None and now - seen[0] < LOG_EVERY:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} ({seen[1]} more like it in the last {now - seen[0]:.0f} s)"
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = [now, 0]
        return True


def rate_limit_logs() -> None:
    """Rate-limit the loggers a flood of bad connections writes to (asyncio's accept errors, uvicorn's)."""
    for name in ("asyncio", "uvicorn.error", "hytron.serve"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimit) for f in logger.filters):
            logger.addFilter(_RateLimit())


def options(read_timeout: float, shutdown_timeout: float, max_connections: int | None = None) -> dict:
    """`uvicorn.Config` keyword arguments: the deadline protocol, the connection cap and the graceful-shutdown
    bound."""
    rate_limit_logs()
    limit, _ = connection_limit(max_connections)
    return dict(http=functools.partial(DeadlineH11Protocol, read_timeout=read_timeout, max_connections=limit),
                timeout_keep_alive=5, timeout_graceful_shutdown=shutdown_timeout, backlog=BACKLOG)


def run(app, host: str, port: int, read_timeout: float, shutdown_timeout: float, log_level: str = "warning",
        max_connections: int | None = None) -> None:
    """Serve `app` until SIGINT/SIGTERM; then finish (or, after `shutdown_timeout` s, cancel) requests in flight."""
    # the event loop waits for the GIL whenever a template render or tokenization holds it: a 1 ms switch
    # interval (Python's default is 5 ms) keeps /health and streaming answering promptly under such load
    sys.setswitchinterval(0.001)
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                **options(read_timeout, shutdown_timeout, max_connections))
