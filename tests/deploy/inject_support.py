"""Shared by the injector tests (test_inject.py, test_apiserver.py): webhook certificates
from deploy/scripts/gen-webhook-certs.sh and one `rmq-injector webhook` process."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

from deploy_support import REPO, free_port

CERT_SCRIPT = REPO / "deploy" / "scripts" / "gen-webhook-certs.sh"
EXAMPLE_APP = REPO / "deploy" / "kubernetes" / "examples" / "app-deployment.yaml"

INJECTOR_TOML = """
[webhook]
listen = "127.0.0.1:{https_port}"
health_listen = "127.0.0.1:{health_port}"
cert_file = "{certs}/tls.crt"
key_file = "{certs}/tls.key"
uninjectable = "{policy}"

[stages]
{stages}

[sidecar]
image = "registry.example.com/rmq-sidecar:0.1.0"
old_namesrv = "rocketmq-namesrv.rocketmq.svc:9876"
new_namesrv = "rmq-cn-example.rocketmq.tencenttdmq.com:8080"
new_credentials_secret = "rocketmq-sidecar-new"
java_tool_options = true
"""


def gen_certs(out: Path) -> Path:
    r = subprocess.run(
        ["bash", str(CERT_SCRIPT), "--out-dir", str(out), "--service", "rmq-sidecar-injector",
         "--namespace", "rocketmq-sidecar", "--san", "IP:127.0.0.1", "--san", "DNS:localhost"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"gen-webhook-certs.sh failed:\n{r.stdout}\n{r.stderr}"
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert (out / name).is_file(), f"gen-webhook-certs.sh wrote no {name}"
    return out


class Webhook:
    """One `rmq-injector webhook` process."""

    def __init__(self, binary: Path, workdir: Path, certs: Path, stages: str, policy: str,
                 sidecar_extra: str = "", https_port: int | None = None):
        """`stages`: the body of the [stages] section; `sidecar_extra`: lines added to [sidecar]."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.certs = certs
        self.https_port, self.health_port = https_port or free_port(), free_port()
        self.config = workdir / "injector.toml"
        self.config.write_text(INJECTOR_TOML.format(
            https_port=self.https_port, health_port=self.health_port, certs=certs,
            stages=stages, policy=policy) + sidecar_extra)
        self.log = workdir / "webhook.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RMQ_SIDECAR_")}
        self.proc = subprocess.Popen([str(binary), "webhook", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            assert self.proc.poll() is None, f"webhook exited:\n{self.log.read_text()}"
            try:
                if self.health("/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"webhook not ready:\n{self.log.read_text()}")

    def health(self, path: str) -> tuple[int, str]:
        c = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()

    def post(self, body: bytes, path: str = "/inject", method: str = "POST",
             cafile: Path | None = None) -> tuple[int, dict | str]:
        ctx = ssl.create_default_context(cafile=str(cafile or self.certs / "ca.crt"))
        c = http.client.HTTPSConnection("127.0.0.1", self.https_port, context=ctx, timeout=10)
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read().decode()
        try:
            return r.status, json.loads(data)
        except json.JSONDecodeError:
            return r.status, data

    def review(self, review: dict) -> dict:
        status, answer = self.post(json.dumps(review).encode())
        assert status == 200, f"HTTP {status}: {answer}"
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == review["request"]["uid"], "the response must echo the uid"
        return answer["response"]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)  # at once (SIGTERM keeps answering for 5 s)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def sidecar_of(pod: dict) -> dict | None:
    for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        if c["name"] == "rmq-sidecar":
            return c
    return None


#: The bearer token the fake API server requires.
TOKEN = "fake-service-account-token"
#: ConfigMap rocketmq-sidecar-stages per namespace in the fake API.
STAGES = {"shop": {"deployment.orders-worker": "new", "deployment.orders-api": "old",
                  "cronjob.nightly-export": "new"}}


def fake_api_stages(api: "FakeKubeApi", workdir: Path) -> str:
    """The [stages] section pointing at the fake API server, with its bearer token."""
    workdir.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "token"
    token_file.write_text(TOKEN + "\n")
    return (f'kube_api = "https://127.0.0.1:{api.port}"\nca_file = "{api.certs}/ca.crt"\n'
            f'token_file = "{token_file}"\ntimeout_ms = 2000')


class FakeKubeApi:
    """GET /api/v1/namespaces/NS/configmaps/NAME over HTTPS, like the API server."""

    def __init__(self, certs: Path):
        self.certs = certs
        self.requests: list[tuple[str, str]] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 (http.server's naming)
                api.requests.append((self.path, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.reply(401, {"kind": "Status", "message": "Unauthorized"})
                parts = self.path.strip("/").split("/")
                if len(parts) != 6 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "configmaps":
                    return self.reply(404, {"kind": "Status", "message": "not found"})
                ns, name = parts[3], parts[5]
                if ns == "broken":
                    return self.reply(500, {"kind": "Status", "message": "etcdserver: request timed out"})
                if name != "rocketmq-sidecar-stages" or ns not in STAGES:
                    return self.reply(404, {"kind": "Status", "message": f'configmaps "{name}" not found'})
                return self.reply(200, {"kind": "ConfigMap", "apiVersion": "v1",
                                        "metadata": {"name": name, "namespace": ns}, "data": STAGES[ns]})

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs / "tls.crt", certs / "tls.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
