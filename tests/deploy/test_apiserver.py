"""The injector against a real Kubernetes API server.

kube-apiserver, kubectl (both 1.34) and etcd are built from the Go module proxy by
scripts/install-k8s-test-bins.sh and run on loopback. There is no kubelet, scheduler or
controller manager: pods are created directly (with the ownerReferences a ReplicaSet
would give them) and never run. What is real is everything admission does: the shipped
MutatingWebhookConfiguration's selectors, failurePolicy and reinvocation, the API server
calling our webhook over TLS with its caBundle, the ServiceAccount plugin and defaulting
around our patch, full pod validation of the result, the shipped RBAC for the stage
ConfigMap with a real service-account token from the TokenRequest API, and kubectl
rendering our warnings and denials.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fake_kubectl
from deploy_support import REPO, FakeRocketMQ, free_port
from inject_support import CERT_SCRIPT, EXAMPLE_APP, Webhook, sidecar_of

K8S = REPO / "deploy" / "kubernetes"
INSTALL = REPO / "scripts" / "install-k8s-test-bins.sh"
ADMIN_TOKEN = "test-admin-token"
WEBHOOK = "rocketmq-sidecar-injector"
APP_NS = "shop"


class ApiServer:
    """etcd + kube-apiserver on free loopback ports, an admin token, kubectl."""

    def __init__(self, bins: Path, workdir: Path):
        self.bins, self.workdir = bins, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        etcd_client, etcd_peer, self.port = free_port(), free_port(), free_port()
        self.etcd = subprocess.Popen(
            [str(bins / "etcd"), "--data-dir", str(workdir / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
             "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}"],
            stdout=subprocess.DEVNULL, stderr=(workdir / "etcd.log").open("wb"))
        subprocess.run(["openssl", "genrsa", "-out", str(workdir / "sa.key"), "2048"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(workdir / "sa.key"), "-pubout",
                        "-out", str(workdir / "sa.pub")], check=True, capture_output=True)
        (workdir / "tokens.csv").write_text(f"{ADMIN_TOKEN},admin,admin,system:masters\n")
        self.certs = workdir / "apiserver-certs"
        self.log = workdir / "kube-apiserver.log"
        self.apiserver = subprocess.Popen(
            [str(bins / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_client}",
             f"--secure-port={self.port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--cert-dir={self.certs}", "--service-cluster-ip-range=10.0.0.0/24",
             "--service-account-issuer=https://kubernetes.default.svc",
             f"--service-account-key-file={workdir / 'sa.pub'}",
             f"--service-account-signing-key-file={workdir / 'sa.key'}",
             "--authorization-mode=RBAC", f"--token-auth-file={workdir / 'tokens.csv'}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": f"https://127.0.0.1:{self.port}",
                "certificate-authority": str(self.certs / "apiserver.crt")}}],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}]}))
        deadline = time.time() + 90
        while True:
            assert self.apiserver.poll() is None, f"kube-apiserver exited:\n{self.log.read_text()[-3000:]}"
            if (self.certs / "apiserver.crt").exists() and self.kubectl(
                    "get", "--raw", "/readyz", check=False).returncode == 0:
                break
            assert time.time() < deadline, f"kube-apiserver not ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bins / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                           input=input, capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, f"kubectl {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
        return r

    def stop(self):
        for p in (self.apiserver, self.etcd):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def k8s_bins() -> Path:
    r = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"scripts/install-k8s-test-bins.sh failed:\n{r.stderr[-4000:]}"
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def api(k8s_bins, tmp_path_factory):
    server = ApiServer(k8s_bins, tmp_path_factory.mktemp("apiserver"))
    yield server
    server.stop()


class Cluster:
    """The shipped script-certs overlay applied to the API server, the injector running with a real
    service-account token, and the webhook pointed at it (only clientConfig changed)."""

    def __init__(self, api: ApiServer, binary: Path, workdir: Path):
        self.api, self.binary, self.workdir = api, binary, workdir
        # The plain-script overlay (the base, plus what gen-webhook-certs.sh --apply expects).
        api.kubectl("apply", "-k", str(K8S / "overlays" / "script-certs"))
        # The plain-script bootstrap, for real: Secret created, caBundle patched in.
        self.certs = workdir / "webhook-certs"
        env = dict(os.environ, KUBECONFIG=str(api.kubeconfig), PATH=f"{api.bins}:{os.environ['PATH']}")
        r = subprocess.run(["bash", str(CERT_SCRIPT), "--out-dir", str(self.certs), "--san", "IP:127.0.0.1",
                            "--apply"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"gen-webhook-certs.sh --apply failed:\n{r.stdout}\n{r.stderr}"
        secret = json.loads(api.kubectl("-n", "rocketmq-sidecar", "get", "secret", "rmq-sidecar-injector-tls",
                                        "-o", "json").stdout)
        assert base64.b64decode(secret["data"]["tls.crt"]) == (self.certs / "tls.crt").read_bytes()
        ca = base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()
        mwc = json.loads(api.kubectl("get", "mutatingwebhookconfiguration", WEBHOOK, "-o", "json").stdout)
        assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == ca, "the script did not patch the caBundle"
        self.token_file = workdir / "sa-token"
        self.token_file.write_text(api.kubectl(
            "create", "token", "rmq-sidecar-injector", "-n", "rocketmq-sidecar", "--duration", "1h").stdout)
        self.https_port = free_port()
        self.hook: Webhook | None = None
        self.start_injector("admit")
        # No Service endpoints without a kubelet: point the webhook at the injector directly.
        api.kubectl("patch", "mutatingwebhookconfiguration", WEBHOOK, "--type=json", "-p", json.dumps([
            {"op": "remove", "path": "/webhooks/0/clientConfig/service"},
            {"op": "add", "path": "/webhooks/0/clientConfig/url",
             "value": f"https://127.0.0.1:{self.https_port}/inject"}]))
        api.kubectl("create", "namespace", APP_NS)
        api.kubectl("label", "namespace", APP_NS, "rocketmq-sidecar/inject=enabled")
        # The controller manager would create these; there is none.
        api.kubectl("-n", APP_NS, "create", "serviceaccount", "default")
        api.kubectl("-n", APP_NS, "create", "configmap", "rocketmq-sidecar-stages",
                    "--from-literal=deployment.orders=new", "--from-literal=deployment.billing=old")

    def start_injector(self, policy: str, sidecar_extra: str = ""):
        if self.hook:
            self.hook.stop()
        stages = (f'kube_api = "https://127.0.0.1:{self.api.port}"\n'
                  f'ca_file = "{self.api.certs / "apiserver.crt"}"\n'
                  f'token_file = "{self.token_file}"\ntimeout_ms = 3000')
        self.hook = Webhook(self.binary, self.workdir / f"injector-{policy}-{time.time_ns()}", self.certs,
                            stages, policy, sidecar_extra=sidecar_extra, https_port=self.https_port)

    def admissions(self) -> int:
        """Reviews the injector answered so far (any outcome)."""
        text = self.hook.health("/metrics")[1]
        return sum(int(float(v)) for v in re.findall(
            r'^rmq_sidecar_injector_admissions_total\{[^}]*\} (\S+)$', text, re.M))

    def create_pod(self, name: str, namespace: str = APP_NS, owner: tuple[str, str] | None = None,
                   labels: dict | None = None, spec: dict | None = None, check: bool = True):
        """Creates a pod as a controller would; returns (pod as stored, kubectl stderr)."""
        metadata = {"namespace": namespace, "labels": dict(labels or {})}
        if owner:
            kind, owner_name = owner
            metadata["generateName"] = f"{name}-"
            group = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
            metadata["ownerReferences"] = [{"apiVersion": group, "kind": kind, "name": owner_name,
                                            "uid": "0d4f1c55-8f0b-4f7e-b2c1-3f6a2b1e9d10", "controller": True}]
            if kind == "ReplicaSet":
                metadata["labels"]["pod-template-hash"] = owner_name.rsplit("-", 1)[1]
        else:
            metadata["name"] = name
        pod_spec = {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}
        pod_spec.update(spec or {})
        manifest = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec})
        r = self.api.kubectl("create", "-f", "-", "-o", "json", input=manifest, check=check)
        return (json.loads(r.stdout) if r.returncode == 0 else None), r.stderr


@pytest.fixture(scope="module")
def cluster(api, injector_bin, tmp_path_factory):
    c = Cluster(api, injector_bin, tmp_path_factory.mktemp("cluster"))
    yield c
    c.hook.stop()


def test_a_deployments_new_pod_is_injected_at_its_stage(cluster):
    pod, stderr = cluster.create_pod("orders-7d9f8c7b5", owner=("ReplicaSet", "orders-7d9f8c7b5"), spec={
        "containers": [{"name": "app", "image": "registry.example.com/orders:1",
                        "env": [{"name": "NAMESRV_ADDR", "value": "10.0.0.5:9876"}]}]})
    sidecar = sidecar_of(pod)
    assert sidecar is not None, f"not injected: {json.dumps(pod['spec'])[:500]}\n{cluster.hook.log.read_text()}"
    assert pod["spec"]["initContainers"][0]["name"] == "rmq-sidecar" and sidecar["restartPolicy"] == "Always"
    # The stage came from the ConfigMap, read with the service account's token under the shipped RBAC.
    assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "new"
    assert json.loads(pod["metadata"]["annotations"]["rocketmq-sidecar/status"])["workload"] == "deployment.orders"
    assert {"name": "NAMESRV_ADDR", "value": "127.0.0.1:9876"} in pod["spec"]["containers"][0]["env"]
    # kubectl shows our warning; the API server's own admission ran around our patch.
    assert "NAMESRV_ADDR was '10.0.0.5:9876'" in stderr, stderr
    volumes = [v["name"] for v in pod["spec"]["volumes"]]
    assert any(v.startswith("kube-api-access-") for v in volumes) and "rmq-sidecar-podinfo" in volumes
    assert pod["metadata"]["labels"]["rocketmq-sidecar/injected"] == "true"


def test_a_workload_without_a_stage_starts_at_the_default(cluster):
    pod, _ = cluster.create_pod("ledger-0", owner=("StatefulSet", "ledger"))
    assert sidecar_of(pod) is not None
    assert "rocketmq-sidecar/route" not in pod["metadata"].get("annotations", {})
    pod, _ = cluster.create_pod("billing-6c8d9f7b4", owner=("ReplicaSet", "billing-6c8d9f7b4"))
    assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "old"


def test_a_cronjobs_pods_start_at_the_cronjobs_stage(cluster):
    cluster.api.kubectl("-n", APP_NS, "patch", "configmap", "rocketmq-sidecar-stages", "--type=merge",
                        "-p", json.dumps({"data": {"cronjob.nightly-export": "new"}}))
    pod, _ = cluster.create_pod("nightly-export-29361440", owner=("Job", "nightly-export-29361440"),
                                spec={"restartPolicy": "OnFailure"})
    assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "new"


def test_the_shipped_selectors_decide_who_is_sent_to_the_webhook(cluster):
    api = cluster.api
    before = cluster.admissions()
    pod, _ = cluster.create_pod("opted-out", labels={"rocketmq-sidecar/inject": "disabled"})
    assert sidecar_of(pod) is None
    api.kubectl("create", "namespace", "not-opted-in")
    api.kubectl("-n", "not-opted-in", "create", "serviceaccount", "default")
    pod, _ = cluster.create_pod("plain", namespace="not-opted-in")
    assert sidecar_of(pod) is None
    # kube-system stays excluded even when someone labels it.
    api.kubectl("label", "namespace", "kube-system", "rocketmq-sidecar/inject=enabled")
    api.kubectl("-n", "kube-system", "create", "serviceaccount", "default", check=False)
    pod, _ = cluster.create_pod("system", namespace="kube-system")
    assert sidecar_of(pod) is None
    assert cluster.admissions() == before, "the webhook was called for a pod its selectors exclude"


def test_host_network_pods_are_admitted_without_the_sidecar(cluster):
    pod, _ = cluster.create_pod("node-agent", spec={"hostNetwork": True})
    assert sidecar_of(pod) is None
    assert pod["metadata"]["labels"]["rocketmq-sidecar/inject-skipped"] == "host-network"


def test_without_its_rbac_the_injector_refuses_to_guess_a_stage(cluster):
    api = cluster.api
    api.kubectl("delete", "clusterrolebinding", "rocketmq-sidecar-injector")
    try:
        pod, stderr = cluster.create_pod("orders-7d9f8c7b5", owner=("ReplicaSet", "orders-7d9f8c7b5"))
        assert sidecar_of(pod) is None
        assert pod["metadata"]["labels"]["rocketmq-sidecar/inject-skipped"] == "stage-lookup-failed"
        detail = pod["metadata"]["annotations"]["rocketmq-sidecar/inject-skipped-detail"]
        assert "HTTP 403" in detail and "configmaps/rocketmq-sidecar-stages" in detail, detail
        assert "admitted without the rocketmq-sidecar" in stderr, stderr
    finally:
        api.kubectl("apply", "-f", str(K8S / "base" / "rbac.yaml"))
    pod, _ = cluster.create_pod("orders-7d9f8c7b5", owner=("ReplicaSet", "orders-7d9f8c7b5"))
    assert sidecar_of(pod) is not None


def test_deny_policy_and_failure_policy_as_the_api_server_applies_them(cluster):
    conflict = {"containers": [{"name": "namesrv", "image": "apache/rocketmq:4.9.7",
                                "ports": [{"containerPort": 9876}]}]}
    try:
        pod, _ = cluster.create_pod("embedded-namesrv-a", spec=conflict)
        assert pod["metadata"]["labels"]["rocketmq-sidecar/inject-skipped"] == "port-conflict"

        cluster.start_injector("deny")
        pod, stderr = cluster.create_pod("embedded-namesrv-b", spec=conflict, check=False)
        assert pod is None
        assert 'admission webhook "inject.rocketmq-sidecar.io" denied the request' in stderr, stderr
        assert "declares port 9876" in stderr, stderr

        # Injector unreachable: failurePolicy Fail refuses the pod instead of starting it bare.
        cluster.hook.stop()
        pod, stderr = cluster.create_pod("orders-7d9f8c7b5", owner=("ReplicaSet", "orders-7d9f8c7b5"),
                                         check=False)
        assert pod is None and 'failed calling webhook "inject.rocketmq-sidecar.io"' in stderr, stderr
    finally:
        cluster.start_injector("admit")


def test_post_start_mode_output_passes_pod_validation(cluster):
    try:
        cluster.start_injector("admit", sidecar_extra='mode = "post-start"\n')
        pod, _ = cluster.create_pod("orders-7d9f8c7b5", owner=("ReplicaSet", "orders-7d9f8c7b5"))
        assert pod["spec"]["containers"][0]["name"] == "rmq-sidecar"
        assert pod["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"][1] == "wait-ready"
    finally:
        cluster.start_injector("admit")


def test_offline_inject_output_and_the_examples_are_accepted_by_the_api_server(cluster, injector_bin):
    api = cluster.api
    api.kubectl("apply", "-f", str(K8S / "examples" / "app-namespace.yaml"))
    out = subprocess.run([str(injector_bin), "inject", "-f", str(EXAMPLE_APP), "--config",
                          str(cluster.hook.config), "--route", "new"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # Server-side dry run: full validation of the injected Deployment; the webhook sees no pod.
    r = api.kubectl("apply", "--dry-run=server", "-f", "-", input=out.stdout)
    assert "created (server dry run)" in r.stdout, r.stdout
    for example in ("stages-configmap.yaml", "credentials-secret.yaml"):
        api.kubectl("apply", "--dry-run=server", "-f", str(K8S / "examples" / example))
    api.kubectl("apply", "--dry-run=server", "-f", str(K8S / "rbac" / "mover-clusterrole.yaml"))


# === the batch mover against the real API server ===

#: Pod IPs for the mover test: the API server's pod proxy refuses loopback addresses, so
#: each pod's sidecar listens on an address of the benchmarking range (RFC 2544) added to lo.
POD_IPS = ["198.18.99.2", "198.18.99.3", "198.18.99.4"]
HEALTH_PORT = 9879


class PodSidecar:
    """A real sidecar standing in for one pod's container: health port on the pod IP, route
    annotation read from a downward API directory that a kubelet stand-in keeps current."""

    def __init__(self, binary: Path, workdir: Path, pod_ip: str):
        self.podinfo = workdir / "podinfo"
        self.pod_ip = pod_ip
        env = {k: v for k, v in os.environ.items() if not k.startswith("RMQ_SIDECAR_")}
        env.update({
            # Fake clusters that answer: moves both ways pass the target_reachable gate.
            "RMQ_SIDECAR_OLD_NAMESRV": FakeRocketMQ.shared("old").addr,
            "RMQ_SIDECAR_NEW_NAMESRV": FakeRocketMQ.shared("new").addr,
            "RMQ_SIDECAR_LISTEN": f"127.0.0.1:{free_port()}", "RMQ_SIDECAR_ADMIN": f"127.0.0.1:{free_port()}",
            "RMQ_SIDECAR_METRICS": f"{pod_ip}:{HEALTH_PORT}", "RMQ_SIDECAR_STATE_DIR": str(workdir / "state"),
            "RMQ_SIDECAR_BROKER_BIND": f"127.63.{POD_IPS.index(pod_ip)}.0/24",
            "RMQ_SIDECAR_ANNOTATIONS_FILE": str(self.podinfo / "annotations"),
        })
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=(workdir / "sidecar.log").open("wb"))

    def route(self) -> dict:
        import http.client
        c = http.client.HTTPConnection(self.pod_ip, HEALTH_PORT, timeout=2)
        c.request("GET", "/route")
        return json.loads(c.getresponse().read())

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)


def kubelet_stand_in(api: ApiServer, sidecars: dict, stop: threading.Event):
    """What the kubelet does for the downward API volume: the pod's annotations, written
    atomically into each pod's directory whenever they change (the real kubelet takes up to
    its sync period; this one polls every 0.3 s)."""
    written: dict[str, dict] = {}
    while not stop.is_set():
        r = api.kubectl("-n", APP_NS, "get", "pods", "-o", "json", check=False)
        if r.returncode == 0:
            for pod in json.loads(r.stdout)["items"]:
                name, annotations = pod["metadata"]["name"], pod["metadata"].get("annotations", {})
                if name in sidecars and written.get(name) != annotations:
                    fake_kubectl.write_downward_api(sidecars[name].podinfo, annotations)
                    written[name] = annotations
        stop.wait(0.3)


def test_the_batch_mover_moves_a_fleet_through_the_real_api_server(cluster, sidecar_bin, tmp_path):
    api = cluster.api
    added = []
    sidecars: dict[str, PodSidecar] = {}
    stop = threading.Event()
    try:
        for ip in POD_IPS:
            r = subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], capture_output=True, text=True)
            assert r.returncode == 0, f"cannot add the pod address {ip} to lo (needs CAP_NET_ADMIN): {r.stderr}"
            added.append(ip)
        # Two workloads as their controllers would leave them: Deployments, and pods owned by
        # their ReplicaSets, injected by the webhook at the workloads' stage (old).
        workloads = {"orders-consumer": ("5d6f7c8b9", {"app": "orders", "role": "consumer"}),
                     "orders-api": ("7b8c9d6f5", {"app": "orders", "role": "api"})}
        api.kubectl("-n", APP_NS, "patch", "configmap", "rocketmq-sidecar-stages", "--type=merge", "-p",
                    json.dumps({"data": {"deployment.orders-consumer": "old", "deployment.orders-api": "old"}}))
        for name, (_, labels) in workloads.items():
            api.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": APP_NS},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}}))
        plan = [("orders-consumer", POD_IPS[0]), ("orders-consumer", POD_IPS[1]), ("orders-api", POD_IPS[2])]
        pod_names = []
        for workload, ip in plan:
            pod_hash, labels = workloads[workload]
            pod, _ = cluster.create_pod(f"{workload}-{pod_hash}", owner=("ReplicaSet", f"{workload}-{pod_hash}"),
                                        labels=labels)
            assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "old"
            name = pod["metadata"]["name"]
            api.kubectl("-n", APP_NS, "patch", "pod", name, "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}))
            sidecars[name] = PodSidecar(sidecar_bin, tmp_path / name, ip)
            pod_names.append(name)
        threading.Thread(target=kubelet_stand_in, args=(api, sidecars, stop), daemon=True).start()
        deadline = time.time() + 20
        for name, sc in sidecars.items():
            while True:
                try:
                    route = sc.route()
                    if route["controlled_by"] == "annotation":
                        break
                except OSError:
                    pass
                assert time.time() < deadline, f"{name}'s sidecar never followed its annotation"
                time.sleep(0.2)
            assert route["target"] == "old"

        env = dict(os.environ, KUBECONFIG=str(api.kubeconfig))

        def mover(to: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, str(REPO / "scripts" / "rmq-move-workloads"), "-n", APP_NS, "--to", to,
                 "--consumers", "deployment/orders-consumer", "--producers", "deployment/orders-api",
                 "--batch-size", "1", "--timeout", "30", "--poll-interval", "0.5", "--yes",
                 "--kubectl", str(api.bins / "kubectl")],
                env=env, capture_output=True, text=True, timeout=300)

        r = mover("new")
        assert r.returncode == 0, f"mover failed:\n{r.stdout}\n{r.stderr}"
        stages = json.loads(api.kubectl("-n", APP_NS, "get", "configmap", "rocketmq-sidecar-stages",
                                        "-o", "json").stdout)["data"]
        assert stages["deployment.orders-consumer"] == "new" and stages["deployment.orders-api"] == "new"
        assert stages["deployment.orders"] == "new", "the mover dropped another workload's stage"
        routes = {name: sc.route() for name, sc in sidecars.items()}
        for name, route in routes.items():
            assert route["target"] == "new" and route["controlled_by"] == "annotation", (name, route)
        # Consumers moved (and confirmed) before the producer.
        consumers = [routes[n]["changed_at_ms"] for n in pod_names[:2]]
        assert max(consumers) <= routes[pod_names[2]]["changed_at_ms"], routes

        # A pod created after the move (a rollout, a reschedule) starts at the new stage.
        pod_hash, labels = workloads["orders-api"]
        pod, _ = cluster.create_pod(f"orders-api-{pod_hash}", owner=("ReplicaSet", f"orders-api-{pod_hash}"),
                                    labels=labels)
        assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "new"
        api.kubectl("-n", APP_NS, "delete", "pod", pod["metadata"]["name"], "--wait=false")

        # Roll back the same way.
        r = mover("old")
        assert r.returncode == 0, f"rollback failed:\n{r.stdout}\n{r.stderr}"
        for name, sc in sidecars.items():
            assert sc.route()["target"] == "old", name
    finally:
        stop.set()
        for sc in sidecars.values():
            sc.stop()
        for ip in added:
            subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", "lo"], capture_output=True)
