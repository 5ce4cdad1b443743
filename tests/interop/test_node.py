"""Injected pods on a real node: the shipped manifests, the injector, the images built here, a real
kubelet and containerd, real RocketMQ.

tests/node/node.py starts a one-node Kubernetes as plain processes (containerd + runc from Debian;
etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the kubelet built from the Go
module proxy) and imports the images built on this machine: the sidecar and injector images from
the recipe of deploy/Dockerfile, a pause image, and the test app (tests/node/app: the official
RocketMQ Go client, knowing nothing of the sidecar) tagged with the example Deployment's
placeholder image name, so deploy/kubernetes/examples/app-deployment.yaml is applied unmodified.

The injector runs as the shipped Deployment behind its Service (overlays/script-certs, the
certificate from deploy/scripts/gen-webhook-certs.sh --apply, failurePolicy Fail); the only edit
is the one its README asks for: injector.toml's name servers (and the API server's address, as
there is no kube-proxy to carry the in-cluster ClusterIP). The app namespace enforces Pod Security
"restricted". The RocketMQ pair (old 4.9.7, new 5.3.3) runs on this machine and advertises the
node bridge's address, the one address of the machine a pod can reach.

The tests run in file order and share the node: the workload they start is migrated by the
five steps through the injected sidecars' gates, and its messages are accounted at the end.
Figures (times, memory) are printed and written to the test's run directory.
"""

from __future__ import annotations

import calendar
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))
import images  # noqa: E402
import node as node_harness  # noqa: E402

import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
NS = "rocketmq-demo"
TOPIC = "orders"
CONSUMER_GROUP = "orders-consumer"
#: Figures gathered along the way, printed by the last test.
FIGURES: dict[str, object] = {}

CONSUMER_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders-consumer
  namespace: rocketmq-demo
spec:
  replicas: 2
  selector:
    matchLabels: {app: orders-consumer}
  template:
    metadata:
      labels: {app: orders-consumer}
    spec:
      terminationGracePeriodSeconds: 45
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: app
          image: registry.example.com/orders-producer:1.0.0
          env:
            - {name: ROCKETMQ_TOPIC, value: orders}
            - {name: ROCKETMQ_CONSUMER_GROUP, value: orders-consumer}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: ["ALL"]}
"""

JOB = """
apiVersion: batch/v1
kind: Job
metadata:
  name: nightly-export
  namespace: rocketmq-demo
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: app
          image: registry.example.com/orders-producer:1.0.0
          env:
            - {name: ROCKETMQ_TOPIC, value: export}
            - {name: ROCKETMQ_PRODUCER_GROUP, value: export-producer}
            - {name: ROCKETMQ_CONSUMER_GROUP, value: export-consumer}
            - {name: ONE_SHOT, value: "20"}
            - {name: RATE_MS, value: "50"}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: ["ALL"]}
"""


class LogStream:
    """`kubectl logs -f --timestamps` of one container, kept in a file after the pod is gone."""

    def __init__(self, node: node_harness.Node, pod: str, container: str, out: Path):
        self.path = out
        self.proc = subprocess.Popen(
            [str(node.bins / "kubectl"), "--kubeconfig", str(node.kubeconfig), "-n", NS, "logs", "-f",
             "--timestamps", pod, "-c", container], stdout=out.open("wb"), stderr=subprocess.DEVNULL)

    def lines(self) -> list[str]:
        return self.path.read_text(errors="replace").splitlines() if self.path.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Workload:
    """The node, the injector and the app namespace, with every pod's logs streamed to files."""

    def __init__(self, node: node_harness.Node, workdir: Path):
        self.node, self.workdir = node, workdir
        self.streams: dict[tuple[str, str], LogStream] = {}
        self.lock = threading.Lock()

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.node.kubectl(*args, **kw)

    def pods(self, selector: str) -> list[dict]:
        return json.loads(self.kubectl("-n", NS, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]

    def pod(self, name: str) -> dict | None:
        r = self.kubectl("-n", NS, "get", "pod", name, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_ready(self, selector: str, count: int, timeout: float = 120) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            pods = [p for p in self.pods(selector) if not p["metadata"].get("deletionTimestamp")]
            ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p["status"].get("conditions", []))]
            if len(ready) >= count:
                for p in ready:
                    self.stream(p["metadata"]["name"])
                return ready
            if time.time() > deadline:
                events = self.kubectl("-n", NS, "get", "events", "--sort-by=.lastTimestamp").stdout[-4000:]
                raise AssertionError(f"{selector}: {len(ready)}/{count} pods Ready after {timeout:.0f} s\n"
                                     f"{json.dumps([p['status'] for p in pods])[:3000]}\n{events}")
            time.sleep(0.25)

    def stream(self, pod: str) -> None:
        for container in ("app", "rmq-sidecar"):
            if (pod, container) not in self.streams:
                self.streams[(pod, container)] = LogStream(self.node, pod, container,
                                                           self.workdir / f"{pod}.{container}.log")

    def log_lines(self, prefix: str, container: str = "app") -> list[str]:
        return [line for (pod, c), s in self.streams.items() if c == container and pod.startswith(prefix)
                for line in s.lines()]

    def metrics(self, pod: dict) -> str:
        ip = pod["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:9879/metrics", timeout=5) as r:
            return r.read().decode()

    def route(self, pod: dict) -> dict[str, str]:
        """role -> target, from the sidecar's rmq_sidecar_route_target gauge (pod IP, health port)."""
        found = re.findall(r'^rmq_sidecar_route_target\{role="(\w+)",target="(\w+)"\} 1$', self.metrics(pod), re.M)
        return dict(found)

    def stop(self) -> None:
        for s in self.streams.values():
            s.stop()


def accounting(workload: Workload) -> dict:
    sent = [line.split()[2] for line in workload.log_lines("orders-") if line.split()[1:2] == ["SENT"]]
    received = [line.split()[2] for line in workload.log_lines("orders-consumer") if line.split()[1:2] == ["RECV"]]
    sent_set, received_set = set(sent), set(received)
    return {"sent": len(sent_set), "received": len(received_set), "lost": sorted(sent_set - received_set),
            "duplicates": len(received) - len(received_set)}


@pytest.fixture(scope="module")
def node(sidecar_binary):
    if os.geteuid() != 0:
        pytest.fail("the node test needs root (it runs containerd and a kubelet): scripts/test.sh runs as root in CI")
    t0 = time.time()
    binaries = node_harness.build_binaries()
    n = node_harness.Node()
    n.up(binaries)
    FIGURES["node up (images built and imported, control plane, kubelet Ready) s"] = round(time.time() - t0, 1)
    yield n
    n.down()


@pytest.fixture(scope="module")
def workload(node, cluster_pairs, tmp_path_factory):
    pair = cluster_pairs.get("node")
    for cluster in (pair.old, pair.new):
        cluster.update_topic(TOPIC)
        cluster.update_topic("export")
    workdir = tmp_path_factory.mktemp("node")
    # The injector, installed as its README says: the plain-script overlay with injector.toml's
    # EDIT lines set (name servers, image as built here) and, for want of kube-proxy, kube_api.
    overlay = workdir / "overlay"
    overlay.mkdir()
    toml = (K8S / "base" / "injector.toml").read_text()
    gateway = node_harness.GATEWAY
    edits = {r'^old_namesrv = .*$': f'old_namesrv = "{gateway}:{pair.old.namesrv_port}"',
             r'^new_namesrv = .*$': f'new_namesrv = "{gateway}:{pair.new.namesrv_port}"',
             r'^kube_api = .*$': f'kube_api = "https://{gateway}:{node_harness.API_PORT}"'}
    for pattern, value in edits.items():
        toml, n = re.subn(pattern, value, toml, flags=re.M)
        assert n == 1, pattern
    (overlay / "injector.toml").write_text(toml)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S / 'overlays' / 'script-certs', overlay)}\n"
        "configMapGenerator:\n  - name: rmq-sidecar-injector\n    namespace: rocketmq-sidecar\n"
        "    behavior: replace\n    files:\n      - injector.toml\n")
    t0 = time.time()
    node.kubectl("apply", "-k", str(overlay), timeout=120)
    env = dict(os.environ, KUBECONFIG=str(node.kubeconfig), PATH=f"{node.bins}:{os.environ['PATH']}")
    r = subprocess.run(["bash", str(K8S.parent / "scripts" / "gen-webhook-certs.sh"), "--out-dir",
                        str(workdir / "certs"), "--apply"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"gen-webhook-certs.sh --apply:\n{r.stdout}\n{r.stderr}"
    node.kubectl("-n", "rocketmq-sidecar", "rollout", "status", "deployment/rmq-sidecar-injector",
                 "--timeout=180s", timeout=190)
    FIGURES["injector: kubectl apply -k, certificate script, 2 replicas available s"] = round(time.time() - t0, 1)
    # Opt the app namespace in as the example does, and enforce Pod Security "restricted" there.
    node.kubectl("apply", "-f", str(K8S / "examples" / "app-namespace.yaml"))
    node.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted",
                 "pod-security.kubernetes.io/enforce-version=latest")
    node.kubectl("apply", "-f", str(K8S / "examples" / "stages-configmap.yaml"))
    w = Workload(node, workdir)
    yield w
    w.stop()


def image_contents(archive: Path) -> tuple[dict, dict[str, bytes]]:
    """(image config, {path: file content}) of a single-layer OCI archive."""
    with tarfile.open(archive) as outer:
        blob = lambda digest: outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}").read()  # noqa: E731
        index = json.loads(outer.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        files = {}
        with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"]))) as inner:
            for member in inner.getmembers():
                files["/" + member.name] = inner.extractfile(member).read() if member.isfile() else None
    return config, files


@pytest.mark.parametrize("stage,image,binary", [("sidecar", node_harness.SIDECAR_IMAGE, "rmq-sidecar"),
                                                 ("injector", node_harness.INJECTOR_IMAGE, "rmq-injector")])
def test_the_images_run_here_follow_deploy_dockerfile(node, tmp_path, stage, image, binary):
    recipe = images.runtime_recipe(stage)
    config, files = image_contents(node_harness.archive_path(image))
    assert recipe.user == "65532:65532" and config["config"]["User"] == recipe.user
    assert recipe.entrypoint == [f"/{binary}"] and config["config"]["Entrypoint"] == recipe.entrypoint
    # Same binary: the release build, stripped as the Dockerfile's builder strips it.
    stripped = tmp_path / binary
    subprocess.run(["strip", *images.builder_strip_flags(), "-o", str(stripped),
                    str(REPO / "target" / "release" / binary)], check=True)
    assert files[f"/{binary}"] == stripped.read_bytes()
    # Same layout as the distroless cc base gives: the binary at /, glibc and libgcc, the
    # nonroot user, a world-writable /tmp; nothing else.
    libs = {p for p in files if p.startswith(("/lib/", "/lib64/", "/usr/lib/")) and files[p] is not None}
    assert {os.path.basename(p).split(".so")[0] for p in libs} >= {"libc", "libgcc_s", "ld-linux-x86-64"}, libs
    other = {p for p in files if files[p] is not None} - libs
    assert other == {f"/{binary}", "/etc/passwd", "/etc/group"}, other
    assert "nonroot:x:65532:65532:" in files["/etc/passwd"].decode()
    assert "/tmp" in files


def stamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time with up to nanoseconds (kubectl --timestamps)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{frac or 0}")


def sidecar_ready_at(workload: Workload, pod: str) -> float:
    # Each container's `kubectl logs -f` starts on its own, so the app's stream may have lines
    # before the sidecar's has caught up: wait for it, as for the app's first line.
    deadline = time.time() + 30
    while time.time() < deadline:
        for line in workload.streams[(pod, "rmq-sidecar")].lines():
            when, _, text = line.partition(" ")
            if text.startswith("{") and '"message":"ready"' in text.replace(" ", ""):
                return stamp(when)
        time.sleep(0.2)
    raise AssertionError(f"{pod}: the sidecar never logged 'ready':\n"
                         + "\n".join(workload.streams[(pod, 'rmq-sidecar')].lines()[-20:]))


def test_an_unmodified_workload_starts_injected_and_its_app_waits_for_the_sidecar(workload):
    t0 = time.time()
    workload.kubectl("apply", "-f", str(K8S / "examples" / "app-deployment.yaml"))
    workload.kubectl("apply", "-f", "-", input=CONSUMER_DEPLOYMENT)
    producers = workload.wait_ready("app.kubernetes.io/name=orders", 2)
    consumers = workload.wait_ready("app=orders-consumer", 2)
    FIGURES["kubectl apply to 4 injected pods Ready s"] = round(time.time() - t0, 1)
    for pod in producers + consumers:
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        sidecar = spec["initContainers"][0]
        assert sidecar["name"] == "rmq-sidecar" and sidecar["restartPolicy"] == "Always", spec
        assert sidecar["image"] == node_harness.SIDECAR_IMAGE
        assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "NAMESRV_ADDR", "value": "127.0.0.1:9876"} in spec["containers"][0]["env"]
        # Admitted under "restricted" (enforced on the namespace) and running as non-root.
        assert pod["status"]["phase"] == "Running"
        # The app container started only after the sidecar's /ready answered (startup probe):
        # its first log line comes after the sidecar logged "ready".
        deadline = time.time() + 30
        while not workload.streams[(name, "app")].lines():
            assert time.time() < deadline, f"{name}: the app logged nothing"
            time.sleep(0.2)
        app_first = stamp(workload.streams[(name, "app")].lines()[0].split()[0])
        ready = sidecar_ready_at(workload, name)
        assert ready < app_first, f"{name}: app started at {app_first}, sidecar ready at {ready}"
        assert workload.route(pod) == {"consumer": "old", "producer": "old"}
    # The sidecar processes run as the image's user, 65532 (the kubelet, runc and this kernel agree).
    uids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "exe").endswith("/rmq-sidecar"):
                uids.add(re.search(r"^Uid:\s+(\d+)", (proc / "status").read_text(), re.M).group(1))
        except OSError:
            continue
    assert uids == {"65532"}, uids
    # The webhook was called through the shipped Service (endpoint routing) with failurePolicy Fail.
    hook = json.loads(workload.kubectl("get", "mutatingwebhookconfiguration", "rocketmq-sidecar-injector",
                                       "-o", "json").stdout)["webhooks"][0]
    assert hook["clientConfig"]["service"]["name"] == "rmq-sidecar-injector" and hook["failurePolicy"] == "Fail"
    # Pod Security "restricted" is enforced there: a pod without the restricted context is refused.
    r = workload.kubectl("-n", NS, "run", "unrestricted", f"--image={node_harness.APP_IMAGE}", check=False)
    assert r.returncode != 0 and "violates PodSecurity \"restricted:latest\"" in r.stderr, r.stderr


def test_the_app_sends_and_consumes_through_the_sidecar(workload):
    deadline = time.time() + 90
    while True:
        acc = accounting(workload)
        if acc["received"] >= 50:
            break
        assert time.time() < deadline, f"no traffic through the sidecars: {acc}\n" + "\n".join(
            workload.log_lines("orders")[-20:])
        time.sleep(1)
    brokers = {line.split()[3] for line in workload.log_lines("orders-") if line.split()[1:2] == ["SENT"]}
    assert brokers == {"node-old-a"}, brokers
    fails = [line for line in workload.log_lines("orders-") if " FAIL " in line]
    assert not fails, fails[:5]
    # The sidecar containers' memory as the kubelet reports it (cAdvisor), under traffic.
    summary = json.loads(workload.kubectl("get", "--raw",
                                          f"/api/v1/nodes/{node_harness.NODE_NAME}/proxy/stats/summary").stdout)
    sidecars = [c["memory"] for p in summary["pods"] if p["podRef"]["namespace"] == NS
                for c in p.get("containers", []) if c["name"] == "rmq-sidecar"]
    assert len(sidecars) == 4, summary["pods"]
    FIGURES["sidecar container memory under traffic, kubelet stats summary (rss, working set) MiB"] = [
        (round(m["rssBytes"] / 2**20, 1), round(m["workingSetBytes"] / 2**20, 1)) for m in sidecars]


def wait_route(workload: Workload, pod: dict, want: dict, timeout: float, since: float | None = None) -> float:
    """Seconds from `since` (default: now) until the pod's sidecar serves `want`."""
    t0 = since or time.time()
    while workload.route(pod) != want:
        assert time.time() - t0 < timeout, f"{pod['metadata']['name']}: route {workload.route(pod)} after " \
                                           f"{timeout:.0f} s, want {want}"
        time.sleep(0.1)
    return time.time() - t0


def annotate(workload: Workload, pod: dict, route: str) -> None:
    workload.kubectl("-n", NS, "annotate", "--overwrite", "pod", pod["metadata"]["name"],
                     f"rocketmq-sidecar/route={route}")


def test_pods_move_by_annotation_through_the_real_kubelet_in_the_safe_order(workload):
    new = {"consumer": "new", "producer": "new"}
    consumers = workload.wait_ready("app=orders-consumer", 2)
    producers = workload.wait_ready("app.kubernetes.io/name=orders", 2)
    # Step 2: one consumer pod. The annotation reaches the sidecar through the kubelet's
    # downward-API volume update; the delay is measured from `kubectl annotate`.
    t0 = time.time()
    annotate(workload, consumers[0], "new")
    delay = wait_route(workload, consumers[0], new, 120, since=t0)
    FIGURES["kubectl annotate to route switched in the sidecar (kubelet downward-API refresh) s"] = round(delay, 2)
    # Steps 3-4: the producers. Their gate holds them until the consumer group is online on new
    # (the moved consumer's client finds the new cluster at its next route poll, 30 s at most).
    t0 = time.time()
    for pod in producers:
        annotate(workload, pod, "new")
    waited = max(wait_route(workload, pod, new, 120, since=t0) for pod in producers)
    FIGURES["producers held until their consumer group was online on new s"] = round(waited, 1)
    # A new pod of a workload whose stage is new starts on new (the injector sets its annotation).
    workload.kubectl("-n", NS, "patch", "configmap", "rocketmq-sidecar-stages", "--type=merge",
                     "-p", json.dumps({"data": {"deployment.orders": "new"}}))
    workload.kubectl("-n", NS, "scale", "deployment", "orders", "--replicas=3")
    names = {p["metadata"]["name"] for p in producers}
    fresh = [p for p in workload.wait_ready("app.kubernetes.io/name=orders", 3) if p["metadata"]["name"] not in names]
    assert fresh and fresh[0]["metadata"]["annotations"]["rocketmq-sidecar/route"] == "new"
    assert workload.route(fresh[0]) == new
    # Step 5: the last consumer. Its gate holds it until the old cluster's backlog is drained and
    # quiet (30 s by default); the annotation waits as pending and is retried.
    t0 = time.time()
    annotate(workload, consumers[1], "new")
    waited = wait_route(workload, consumers[1], new, 150)
    FIGURES["last consumer held by its gate s"] = round(waited, 1)
    sidecar_log = "\n".join(workload.streams[(consumers[1]["metadata"]["name"], "rmq-sidecar")].lines())
    assert "RouteRefused" in sidecar_log, "the last consumer moved without its gate holding it"
    assert time.time() - t0 >= 5
    # Each producer's latest sends went to the new cluster's broker (renamed by the sidecar).
    time.sleep(3)
    for pod in producers + fresh:
        sent = [line.split()[3] for line in workload.streams[(pod["metadata"]["name"], "app")].lines()
                if line.split()[1:2] == ["SENT"]]
        assert sent[-5:] == ["new~node-new-a"] * 5, (pod["metadata"]["name"], sent[-5:])


def test_deleting_a_pod_stops_the_app_first_and_drains_the_sidecar_after_it(workload):
    pod = workload.wait_ready("app.kubernetes.io/name=orders", 3)[0]
    name = pod["metadata"]["name"]
    workload.kubectl("-n", NS, "delete", "pod", name, "--wait=false")
    last, deadline = None, time.time() + 90
    while time.time() < deadline:
        current = workload.pod(name)
        if current is None:
            break
        last = current
        time.sleep(0.1)
    assert last is not None
    states = {c["name"]: c.get("state", {}).get("terminated") or c.get("lastState", {}).get("terminated")
              for c in last["status"].get("containerStatuses", []) + last["status"].get("initContainerStatuses", [])}
    app_log = workload.streams[(name, "app")].lines()
    sidecar_log = "\n".join(workload.streams[(name, "rmq-sidecar")].lines())
    assert app_log and app_log[-1].split()[1] == "STOP", app_log[-5:]
    # The kubelet stops a native sidecar after the app: the sidecar's SIGTERM comes after the
    # app's, when the app's connections are already closed, so it exits at once.
    sigterm = [line for line in workload.streams[(name, "rmq-sidecar")].lines() if '"message":"SIGTERM' in line]
    assert sigterm, sidecar_log[-2000:]
    assert stamp(sigterm[0].split()[0]) >= stamp(app_log[-1].split()[0]), (sigterm[0], app_log[-1])
    assert '"open_connections":0' in sigterm[0], sigterm[0]
    assert "no client connection left; exiting" in sidecar_log
    if states.get("app") and states.get("rmq-sidecar"):
        assert states["app"]["finishedAt"] <= states["rmq-sidecar"]["finishedAt"], states
        assert states["app"]["exitCode"] == 0 and states["rmq-sidecar"]["exitCode"] == 0, states


def test_a_jobs_pod_completes_with_the_native_sidecar(workload):
    workload.kubectl("apply", "-f", "-", input=JOB)
    r = workload.kubectl("-n", NS, "wait", "--for=condition=complete", "job/nightly-export", "--timeout=150s",
                         check=False, timeout=160)
    pods = workload.pods("job-name=nightly-export")
    assert r.returncode == 0, f"{r.stderr}\n{json.dumps([p['status'] for p in pods])[:3000]}"
    assert pods and pods[0]["status"]["phase"] == "Succeeded"
    logs = workload.kubectl("-n", NS, "logs", pods[0]["metadata"]["name"], "-c", "app").stdout
    assert "DONE sent=20" in logs, logs[-2000:]


def test_every_acknowledged_message_was_consumed_and_the_figures(workload, node, request):
    # The ReplicaSet replaced the deleted pod: its log is part of the accounting too.
    workload.wait_ready("app.kubernetes.io/name=orders", 3)
    workload.kubectl("-n", NS, "scale", "deployment", "orders", "--replicas=0")
    deadline = time.time() + 90
    while workload.pods("app.kubernetes.io/name=orders") and time.time() < deadline:
        time.sleep(0.5)
    deadline = time.time() + 60
    while (acc := accounting(workload))["lost"] and time.time() < deadline:
        time.sleep(1)
    FIGURES["messages"] = {k: (len(v) if isinstance(v, list) else v) for k, v in acc.items()}
    # The node stack's memory: each process's RSS.
    rss = {}
    for pid_file in sorted(node_harness.STATE.glob("*.pid")):
        status = Path(f"/proc/{pid_file.read_text().strip()}/status")
        if status.exists():
            rss[pid_file.stem] = int(re.search(r"VmRSS:\s+(\d+)", status.read_text()).group(1)) // 1024
    FIGURES["node stack RSS MiB"] = dict(rss, total=sum(rss.values()))
    text = json.dumps(FIGURES, indent=2)
    print(text)
    (workload.workdir / "figures.json").write_text(text)
    assert acc["sent"] > 100, acc
    assert acc["lost"] == [], f"{len(acc['lost'])} acknowledged messages never consumed: {acc['lost'][:10]}"
