"""A fault-injecting HTTP/1.1 proxy on loopback, in front of the test S3 server.

Clients (obstore, s3fs) talk to :attr:`FaultProxy.endpoint` instead of the
server. Each request is read whole, then, by a seeded draw, one of

``reset``
    the connection is reset (RST) before anything reaches the server;
``500`` / ``503``
    the proxy answers ``500 InternalError`` / ``503 SlowDown`` itself;
``slow``
    the request waits (:attr:`FaultProxy.slow`, seconds) and then goes through;
``lost``
    the request goes to the server, which handles it, and its whole answer is
    read; then the client's connection is reset: the client cannot tell a
    request that landed from one that did not (a conditional ``PUT`` included);
``pass``
    the request goes through untouched.

Connections are handled in lockstep (one request, then its answer: clients
do not pipeline). ``Expect: 100-continue`` is answered by the proxy itself.
:attr:`FaultProxy.counts` holds the requests seen and the faults injected,
by kind. Faults are off until :meth:`FaultProxy.arm` (so a test can set up
and check its collection through the proxy or beside it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["FAULTS", "FaultProxy"]

#: Kinds of fault, in the order of :attr:`FaultProxy.rates`.
FAULTS = ("reset", "500", "503", "slow", "lost")

_ERRORS = {
    "500": (
        "500 Internal Server Error",
        b"<Error><Code>InternalError</Code><Message>injected</Message></Error>",
    ),
    "503": ("503 Slow Down", b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"),
}


class FaultProxy:
    """Loopback proxy injecting faults into a seeded fraction of requests.

    Parameters
    ----------
    upstream
        ``http://host:port`` of the server.
    rates
        Probability of each fault kind per request (see :data:`FAULTS`).
    seed
        Seed of the draws (the sequence of decisions is fixed; which request
        gets which decision depends on the order requests arrive).
    slow
        Delay range, seconds, of a ``slow`` request.
    """

    def __init__(
        self,
        upstream: str,
        rates: Mapping[str, float],
        *,
        seed: int = 0,
        slow: tuple[float, float] = (0.05, 0.4),
    ) -> None:
        unknown = set(rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rates = dict(rates)
        self.slow = slow
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._armed = False
        #: ``requests`` (every request seen), ``faults`` and one entry per fault kind.
        self.counts: collections.Counter[str] = collections.Counter()
        #: Requests that reached the server but whose answer was lost, by method.
        self.lost_methods: collections.Counter[str] = collections.Counter()
        #: Planned faults: (fault, method, substring of the request line, times left).
        self._planned: list[list[object]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        start = asyncio.start_server(self._client, "127.0.0.1", 0, limit=1 << 22)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()
        self.endpoint = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    # -- control -------------------------------------------------------------------------------
    def arm(self, armed: bool = True) -> None:
        """Start (or stop) injecting faults."""
        with self._lock:
            self._armed = armed

    @contextlib.contextmanager
    def calm(self) -> collections.abc.Iterator[None]:
        """No faults inside the block (e.g. while a test checks what the store holds)."""
        with self._lock:
            was, self._armed = self._armed, False
        try:
            yield
        finally:
            self.arm(was)

    def plan(self, fault: str, *, method: str, contains: str = "", times: int = 1) -> None:
        """Inject ``fault`` into the next ``times`` requests ``method`` whose request line
        (method, path and query, URL-quoted) contains ``contains``, armed or not."""
        if fault not in FAULTS:
            raise ValueError(fault)
        with self._lock:
            self._planned.append([fault, method, contains, times])

    def planned_left(self) -> int:
        """Planned faults not injected yet."""
        with self._lock:
            return sum(int(p[3]) for p in self._planned)  # type: ignore[call-overload]

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _draw(self, line: str) -> str:
        with self._lock:
            self.counts["requests"] += 1
            method = line.split(" ", 1)[0]
            for planned in self._planned:
                fault, want, contains, left = planned
                if left and method == want and str(contains) in line:
                    planned[3] = int(left) - 1  # type: ignore[call-overload]
                    self.counts["faults"] += 1
                    self.counts[str(fault)] += 1
                    return str(fault)
            if not self._armed:
                return "pass"
            x = self._rng.random()
            for kind in FAULTS:
                x -= self.rates.get(kind, 0.0)
                if x < 0:
                    self.counts["faults"] += 1
                    self.counts[kind] += 1
                    return kind
            return "pass"

    # -- the proxy -----------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *fields = head.decode("latin-1").split("\r\n")
                method = line.split(" ", 1)[0]
                headers = [f for f in fields if f]
                names = {f.partition(":")[0].strip().lower(): f for f in headers}
                if "100-continue" in names.get("expect", "").lower():
                    headers.remove(names["expect"])
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                body = await _read_body(reader, names)
                request = "\r\n".join([line, *headers]).encode("latin-1") + b"\r\n\r\n" + body
                fault = self._draw(line)
                if fault == "reset":
                    _reset(writer)
                    return
                if fault in _ERRORS:
                    status, payload = _ERRORS[fault]
                    writer.write(
                        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                        f"Content-Length: {len(payload)}\r\n\r\n".encode("latin-1")
                        + payload
                    )
                    await writer.drain()
                    continue
                if fault == "slow":
                    await asyncio.sleep(self._rng.uniform(*self.slow))
                if upstream is None:
                    upstream = await asyncio.open_connection(*self._upstream, limit=1 << 22)
                up_reader, up_writer = upstream
                up_writer.write(request)
                await up_writer.drain()
                answer, keep = await _read_response(up_reader, method)
                if fault == "lost":  # the server did it; the client never hears of it
                    with self._lock:
                        self.lost_methods[method] += 1
                    _reset(writer)
                    return
                writer.write(answer)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if upstream is not None:
                upstream[1].close()
            if not writer.is_closing():
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (``SO_LINGER`` 0): the client sees ``connection reset``."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    def value(name: str) -> str:
        return headers.get(name, ":").partition(":")[2].strip()

    if "chunked" in value("transfer-encoding").lower():
        out = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            out += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    out += trailer
                out += b"\r\n"
                return bytes(out)
            out += await reader.readexactly(size + 2)
    length = int(value("content-length") or 0)
    return await reader.readexactly(length) if length else b""


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[bytes, bool]:
    """One whole response (head and body) and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    status = int(line.split(" ", 2)[1])
    names = {f.partition(":")[0].strip().lower(): f for f in fields if f}
    keep = "close" not in names.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304) or status < 200:
        return head, keep
    if "content-length" in names or "transfer-encoding" in names:
        return head + await _read_body(reader, names), keep
    return head + await reader.read(), False  # delimited by the end of the connection
