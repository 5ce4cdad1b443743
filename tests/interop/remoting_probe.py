"""A tiny raw RocketMQ remoting client for the interop tests (JSON headers only).

Used to record and assert what real servers answer to crafted requests -- no AccessKey, an
unknown AccessKey, a wrong signature, a valid signature -- without a Java client in between,
so the exact response ``code``/``remark``/``version`` can be compared with what the sidecar's
credential check and error handling expect (protocol notes 1.1, 6.2).

Frame: ``int32 total length | int32 (serialize type << 24 | header length) | header JSON | body``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import json
import socket
import struct

_OPAQUE = itertools.count(1000)


@dataclasses.dataclass
class Reply:
    code: int
    remark: str | None
    version: int | None
    language: str | None
    ext: dict
    body: bytes
    flag: int

    def short(self) -> str:
        return f"code={self.code} remark={self.remark!r} version={self.version}"


def sign(ext: dict, body: bytes | None, access_key: str, secret_key: str, token: str | None = None,
         leave_out: tuple = ()) -> dict:
    """extFields with AccessKey (+SecurityToken) and a Signature computed as protocol notes 6.1
    describe (the same algorithm test_acl_vectors.py proves against Apache's hook). Keys in
    ``leave_out`` stay on the wire but are not signed (a 4.9.x view of _UNIQUE_KEY_QUERY)."""
    fields = {k: v for k, v in ext.items() if k != "Signature"}
    fields["AccessKey"] = access_key
    if token is not None:
        fields["SecurityToken"] = token
    keys = sorted((k for k in fields if k not in leave_out), key=lambda k: k.encode("utf-16-be"))
    content = "".join(fields[k] for k in keys).encode("utf-8") + (body or b"")
    fields["Signature"] = base64.b64encode(
        hmac.new(secret_key.encode("utf-8"), content, hashlib.sha1).digest()).decode()
    return fields


def _read_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def invoke(addr: str, code: int, ext: dict | None = None, body: bytes | None = None, *,
           version: int = 409, language: str = "JAVA", timeout: float = 10.0) -> Reply:
    """Send one request and return the response (``addr`` = "host:port")."""
    host, port = addr.rsplit(":", 1)
    opaque = next(_OPAQUE)
    header = {"code": code, "language": language, "version": version, "opaque": opaque, "flag": 0,
              "serializeTypeCurrentRPC": "JSON"}
    if ext is not None:
        header["extFields"] = ext
    hb = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    body = body or b""
    frame = struct.pack(">II", 4 + len(hb) + len(body), len(hb)) + hb + body
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(frame)
        while True:
            (total,) = struct.unpack(">I", _read_exact(s, 4))
            data = _read_exact(s, total)
            (mark,) = struct.unpack(">I", data[:4])
            if mark >> 24 != 0:
                raise ValueError(f"response header is not JSON (serialize type {mark >> 24})")
            hlen = mark & 0xFFFFFF
            h = json.loads(data[4:4 + hlen].decode("utf-8"))
            if h.get("opaque") != opaque or not (h.get("flag", 0) & 1):
                continue  # a server-initiated request or another response: not ours
            return Reply(h.get("code"), h.get("remark"), h.get("version"), h.get("language"),
                         h.get("extFields") or {}, data[4 + hlen:], h.get("flag", 0))
