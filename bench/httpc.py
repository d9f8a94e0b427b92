"""A small HTTP/1.1 client for the benchmark: keep-alive, bodies sent with sendfile(2), bodies
received with recv_into() into one large buffer and handed to a sink (a hash) without copies.

The general-purpose clients (requests, http.client) read and write in 8-64 KiB pieces through
Python; at several hundred MB/s that is what would be measured. Here a blob upload is a few
sendfile calls, and a download is one recv_into per socket read, hashed by OpenSSL (hashlib drops
the GIL), so the client costs far less CPU than the servers it measures.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Union
from urllib.parse import urlsplit

RECV_BUFFER = 4 * 1024 * 1024
SOCKET_TIMEOUT = 180.0


class HttpError(RuntimeError):
    pass


@dataclass
class FileSlice:
    """`length` bytes of an open file from `offset`, sent with sendfile(2)."""

    path: str
    offset: int
    length: int


@dataclass
class Chunked:
    """A body of unknown length: the slices in order, each framed as one HTTP/1.1 chunk."""

    pieces: Iterable[FileSlice]


Body = Union[None, bytes, FileSlice, Chunked]


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_len: int = 0

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name.lower(), default)


def location_target(location: str) -> str:
    """A Location header (absolute URL or absolute path) as a request target."""
    parts = urlsplit(location)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def with_query(target: str, **params: str) -> str:
    from urllib.parse import quote

    sep = "&" if "?" in target else "?"
    return target + sep + "&".join(f"{k}={quote(v, safe=':')}" for k, v in params.items())


class Connection:
    """One keep-alive connection to 127.0.0.1:port (reconnects when the server closed it)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = SOCKET_TIMEOUT):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock: Optional[socket.socket] = None
        self._buf = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buf)
        self._pending = bytearray()  # bytes read past the end of the previous headers

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self._pending.clear()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> socket.socket:
        if self.sock is None:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            self.sock = s
        return self.sock

    # -- sending -------------------------------------------------------------

    def _send_slice(self, sock: socket.socket, piece: FileSlice) -> None:
        with open(piece.path, "rb") as f:
            # socket.sendfile: sendfile(2) in large blocks, waiting for writability with the
            # socket's timeout, so a server that stops reading cannot hang the benchmark.
            sent = sock.sendfile(f, piece.offset, piece.length)
            if sent != piece.length:
                raise HttpError(f"{piece.path}: sent {sent} of {piece.length} bytes")

    def _send(self, sock: socket.socket, head: bytes, body: Body) -> None:
        if body is None or isinstance(body, (bytes, bytearray)):
            sock.sendall(head + (body or b""))
        elif isinstance(body, FileSlice):
            sock.sendall(head)
            self._send_slice(sock, body)
        elif isinstance(body, Chunked):
            sock.sendall(head)
            for piece in body.pieces:
                if piece.length == 0:
                    continue
                sock.sendall(b"%x\r\n" % piece.length)
                self._send_slice(sock, piece)
                sock.sendall(b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        else:
            raise TypeError(f"unsupported body {type(body)}")

    # -- receiving -----------------------------------------------------------

    def _recv_some(self, sock: socket.socket) -> int:
        n = sock.recv_into(self._view)
        if n == 0:
            raise HttpError("connection closed by the server")
        return n

    def _read_head(self, sock: socket.socket) -> tuple[int, str, dict[str, str]]:
        data = self._pending
        while True:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(data) > 1 << 20:
                raise HttpError("response headers larger than 1 MiB")
            n = self._recv_some(sock)
            data += self._view[:n]
        head = bytes(data[:end]).decode("latin-1")
        del data[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers and key != "location" else value
        return status, reason, headers

    def _read_exact(self, sock: socket.socket, length: int, sink: Callable[[memoryview], None]) -> None:
        left = length
        if self._pending:
            take = min(left, len(self._pending))
            sink(memoryview(bytes(self._pending[:take])))
            del self._pending[:take]
            left -= take
        while left > 0:
            n = sock.recv_into(self._view, min(left, RECV_BUFFER))
            if n == 0:
                raise HttpError(f"connection closed with {left} body bytes missing")
            sink(self._view[:n])
            left -= n

    def _read_line(self, sock: socket.socket) -> bytes:
        while True:
            end = self._pending.find(b"\r\n")
            if end >= 0:
                line = bytes(self._pending[:end])
                del self._pending[: end + 2]
                return line
            n = self._recv_some(sock)
            self._pending += self._view[:n]

    def _read_chunked(self, sock: socket.socket, sink: Callable[[memoryview], None]) -> int:
        total = 0
        while True:
            size = int(self._read_line(sock).split(b";")[0].strip(), 16)
            if size == 0:
                while self._read_line(sock):  # trailers
                    pass
                return total
            self._read_exact(sock, size, sink)
            total += size
            if self._read_line(sock) != b"":
                raise HttpError("malformed chunked encoding")

    # -- the request ---------------------------------------------------------

    def request(
        self,
        method: str,
        target: str,
        headers: Optional[dict[str, str]] = None,
        body: Body = None,
        sink: Optional[Callable[[memoryview], None]] = None,
    ) -> Response:
        """Sends one request and reads the whole response. With `sink`, the response body is
        handed to it piece by piece instead of being kept (Response.body stays empty)."""
        sock = self._connect()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        hdrs = dict(headers or {})
        if isinstance(body, Chunked):
            hdrs["Transfer-Encoding"] = "chunked"
        elif body is not None or method in ("PUT", "POST", "PATCH"):
            length = 0 if body is None else (body.length if isinstance(body, FileSlice) else len(body))
            hdrs.setdefault("Content-Length", str(length))
        for k, v in hdrs.items():
            lines.append(f"{k}: {v}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self._send(sock, head, body)
            status, reason, rheaders = self._read_head(sock)
            while 100 <= status < 200:  # 100 Continue and friends
                status, reason, rheaders = self._read_head(sock)
            kept = bytearray()
            body_len = 0

            def keep(view: memoryview) -> None:
                kept.extend(view)

            out = sink or keep
            if method == "HEAD" or status in (204, 304):
                pass
            elif rheaders.get("transfer-encoding", "").lower() == "chunked":
                body_len = self._read_chunked(sock, out)
            elif "content-length" in rheaders:
                body_len = int(rheaders["content-length"])
                self._read_exact(sock, body_len, out)
            else:  # until close
                while True:
                    n = sock.recv_into(self._view)
                    if n == 0:
                        break
                    out(self._view[:n])
                    body_len += n
                self.close()
            if rheaders.get("connection", "").lower() == "close":
                self.close()
            return Response(status, reason, rheaders, bytes(kept), body_len)
        except BaseException:
            self.close()
            raise
