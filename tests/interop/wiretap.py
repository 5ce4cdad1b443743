"""Records the remoting requests clients send to a real broker, for comparing two clients'
requests field by field (tests/interop/test_namespace.py).

* ``BrokerTap``: listens on a port, forwards every connection to the real broker both ways
  untouched, and records each request frame (code, ext fields, body) under a label.
* ``NamesrvRewriter``: a name server in front of the real one that forwards every request and
  replaces the broker's address in the answers by the tap's, so clients that use it (directly,
  or through a sidecar) send their broker traffic through the tap.

Frames: ``int32 length | int32 (serialize type << 24 | header length) | header | body``; the
clients under test use JSON headers (the Java client's default).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass
class Request:
    label: str
    code: int
    ext: dict
    body: bytes


def _read_exact(s: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(s: socket.socket) -> bytes | None:
    head = _read_exact(s, 4)
    if head is None:
        return None
    (length,) = struct.unpack(">i", head)
    rest = _read_exact(s, length)
    return None if rest is None else head + rest


def _split(frame: bytes) -> tuple[dict | None, bytes, int]:
    (mark,) = struct.unpack(">i", frame[4:8])
    header_len = mark & 0xFFFFFF
    raw = frame[8:8 + header_len]
    body = frame[8 + header_len:]
    try:
        header = json.loads(raw) if (mark >> 24) == 0 else None
    except ValueError:
        header = None
    return header, body, mark


def _with_body(frame: bytes, body: bytes) -> bytes:
    (mark,) = struct.unpack(">i", frame[4:8])
    header = frame[8:8 + (mark & 0xFFFFFF)]
    return struct.pack(">ii", 4 + len(header) + len(body), mark) + header + body


class _Server:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                frame = _read_frame(src)
                if frame is None:
                    break
                dst.sendall(self.on_frame(frame, from_client))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def on_frame(self, frame: bytes, from_client: bool) -> bytes:
        return frame

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class BrokerTap(_Server):
    """Forwards to ``broker`` and records the requests of every connection under ``label``
    (set ``label`` before the clients connect; connections are told apart by nothing else)."""

    def __init__(self, broker: str):
        host, port = broker.rsplit(":", 1)
        super().__init__((host, int(port)))
        self.requests: list[Request] = []
        self.label = ""
        self._lock = threading.Lock()

    def on_frame(self, frame: bytes, from_client: bool) -> bytes:
        if from_client:
            header, body, _ = _split(frame)
            if header is not None and not (header.get("flag", 0) & 1):
                with self._lock:
                    self.requests.append(Request(self.label, header.get("code"), header.get("extFields") or {}, body))
        return frame

    def by(self, label: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.label == label]


class NamesrvRewriter(_Server):
    """A name server that answers as ``namesrv`` does, with ``broker`` replaced by ``tap``."""

    def __init__(self, namesrv: str, broker: str, tap: str):
        host, port = namesrv.rsplit(":", 1)
        super().__init__((host, int(port)))
        self.broker, self.tap = broker.encode(), tap.encode()

    def on_frame(self, frame: bytes, from_client: bool) -> bytes:
        if from_client or self.broker not in frame:
            return frame
        _, body, _ = _split(frame)
        return _with_body(frame, body.replace(self.broker, self.tap))
