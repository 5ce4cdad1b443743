"""Shared by tests/deploy: file locations and a sidecar process on free loopback ports."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "rmq-sidecar.json"
RULES = DEPLOY / "prometheus" / "rmq-sidecar-rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rmq-sidecar-rules.test.yaml"
OPENAPI = DEPLOY / "admin-openapi.yaml"
SCHEMATHESIS_CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"

#: A secret the test sidecar is configured with; it must never appear in admin output.
SECRET = "s3cr3t-Never-Shown-7f0c"
ACCESS_KEY = "AKIDdeployTestAccessKey01"


@dataclass
class Family:
    name: str
    type: str
    labels: tuple[str, ...]
    help: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeRocketMQ:
    """A RocketMQ name server and broker in one loopback listener, enough for the sidecar's
    `target_reachable` gate: a route query is answered TOPIC_NOT_EXIST (it has no topic),
    GET_BROKER_CLUSTER_INFO with a cluster whose one master is this listener, everything
    else SUCCESS. Shared by every test sidecar as its `new`
    cluster, so switches to new pass; `old` stays a name server that does not exist."""

    _shared: "dict[str, FakeRocketMQ]" = {}

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def shared(cls, name: str = "new") -> "FakeRocketMQ":
        """One per name for the whole test session."""
        if name not in cls._shared:
            cls._shared[name] = cls()
        return cls._shared[name]

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        info = json.dumps({"brokerAddrTable": {"fake-a": {"cluster": "Fake", "brokerName": "fake-a",
                                                          "brokerAddrs": {"0": self.addr}}},
                           "clusterAddrTable": {"Fake": ["fake-a"]}}).encode()
        with conn, contextlib.suppress(OSError, ValueError, struct.error):
            stream = conn.makefile("rb")
            while True:
                length = struct.unpack(">i", stream.read(4))[0]
                frame = stream.read(length)
                header_len = struct.unpack(">i", frame[:4])[0] & 0xFFFFFF
                request = json.loads(frame[4:4 + header_len])
                if request.get("flag", 0) & 2:  # oneway
                    continue
                code = request.get("code")
                body = info if code == 106 else b""
                reply = {"code": 0, "flag": 1, "opaque": request.get("opaque", 0), "language": "JAVA",
                         "version": 0, "serializeTypeCurrentRPC": "JSON"}
                if code == 105:  # it has no topic
                    reply.update(code=17, remark="No topic route info in name server for the topic")
                reply = json.dumps(reply).encode()
                conn.sendall(struct.pack(">ii", 4 + len(reply) + len(body), len(reply)) + reply + body)


@dataclass
class SidecarProcess:
    """One rmq-sidecar process on free loopback ports, configured through RMQ_SIDECAR_* only."""

    binary: Path
    workdir: Path
    extra_env: dict = field(default_factory=dict)
    namesrv_port: int = 0
    admin_port: int = 0
    health_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "sidecar.log"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RMQ_SIDECAR_")}
        env.pop("RUST_LOG", None)
        (self.workdir / "secret-key").write_text(SECRET + "\n")
        env.update({
            "RMQ_SIDECAR_OLD_NAMESRV": "127.0.0.1:1",
            "RMQ_SIDECAR_NEW_NAMESRV": FakeRocketMQ.shared().addr,
            "RMQ_SIDECAR_LISTEN": f"127.0.0.1:{self.namesrv_port}",
            "RMQ_SIDECAR_ADMIN": f"127.0.0.1:{self.admin_port}",
            "RMQ_SIDECAR_METRICS": f"127.0.0.1:{self.health_port}",
            "RMQ_SIDECAR_BROKER_BIND": "127.61.0.0/16",
            "RMQ_SIDECAR_STATE_DIR": str(self.workdir / "state"),
            "RMQ_SIDECAR_NEW_ACCESS_KEY": ACCESS_KEY,
            "RMQ_SIDECAR_NEW_SECRET_KEY_FILE": str(self.workdir / "secret-key"),
            "RMQ_SIDECAR_DRAIN_SECONDS": "1",
            "RMQ_SIDECAR_LOG": "info",
        })
        env.update(self.extra_env)
        return env

    def start(self, attempts: int = 3) -> "SidecarProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        last = ""
        for _ in range(attempts):  # a port taken between free_port() and bind: try others
            self.namesrv_port, self.admin_port, self.health_port = free_port(), free_port(), free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([str(self.binary)], cwd=self.workdir, env=self.env(),
                                         stdout=log, stderr=subprocess.STDOUT)
            log.close()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    if self.request("GET", "/live")[0] == 200 and \
                            self.request("GET", "/live", port=self.health_port)[0] == 200:
                        return self
                time.sleep(0.1)
            last = self.log_tail()
            self.stop()
        raise AssertionError(f"the sidecar did not serve GET /live on its admin and health ports:\n{last}")

    def request(self, method: str, path: str, body: bytes | str | None = None, port: int | None = None,
                headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.admin_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode
