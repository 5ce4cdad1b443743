"""A real one-node Kubernetes on this machine, as plain processes, for tests/node.

    python3 tests/node/node.py up      # start (or restart) it; prints the kubeconfig path
    python3 tests/node/node.py down    # stop everything it started and undo its changes

What runs: containerd and runc (Debian), etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and a kubelet (built from the Go module proxy by
scripts/install-k8s-test-bins.sh: the last three are one binary, `k8s-node`). No container
registry is involved: every image is built here (tests/node/images.py) and imported into
containerd; pods never pull.

The machine is changed as little as possible and put back by `down`:
- one Linux bridge, `rmqnode0`, with 10.244.77.1/24 and nothing else: pods get addresses in
  that /24 from the CNI bridge plugin with no default route, no masquerading and no IP
  forwarding, so a pod reaches this machine's 10.244.77.1 and nothing beyond it;
- the sysctls the kubelet sets (vm.overcommit_memory, kernel.panic, ...) are recorded before it
  starts and restored;
- every process is stopped by the PID recorded in /run/rmq-sidecar-node, every mount under
  the node's directory is unmounted, the pods' network namespaces are removed.
`up` runs `down` first, so a run that died half-way is cleaned up by the next one.

Pitfalls of these machines (cgroup v1, root without CAP_SYS_RESOURCE) are settings here:
containerd `restrict_oom_score_adj`, kubelet `oomScoreAdj: 0`, `cgroupDriver: cgroupfs`,
`failCgroupV1: false`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import images  # noqa: E402

STATE = Path("/run/rmq-sidecar-node")
DATA = Path("/var/lib/rmq-sidecar-node")
BRIDGE = "rmqnode0"
GATEWAY = "10.244.77.1"
SUBNET = "10.244.77.0/24"
NODE_NAME = "rmq-node"
ADMIN_TOKEN = "node-test-admin-token"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
SIDECAR_IMAGE = "ghcr.io/rocketmq-sidecar/rmq-sidecar:0.1.0"
INJECTOR_IMAGE = "ghcr.io/rocketmq-sidecar/rmq-injector:0.1.0"
#: The example Deployment's placeholder image (deploy/kubernetes/examples/app-deployment.yaml):
#: the test app is tagged with it so the manifest is applied unmodified.
APP_IMAGE = "registry.example.com/orders-producer:1.0.0"
API_PORT = 16443
KUBELET_PORT = 10250
#: What the kubelet writes at start (pkg/kubelet/cm: setupKernelTunables) and what CNI may touch.
SYSCTLS = ["vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
           "net.ipv6.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables"]
CONTAINERD_SOCK = STATE / "containerd.sock"


def log(msg: str) -> None:
    print(f"node: {msg}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    return {k: sysctl_path(k).read_text().strip() for k in SYSCTLS if sysctl_path(k).exists()}


def bins_dir() -> Path:
    out = run("bash", str(REPO / "scripts" / "install-k8s-test-bins.sh"), timeout=3600).stdout
    return Path(out.strip().splitlines()[-1])


class Node:
    """The node's processes and files. `up()` starts them all; `down()` undoes everything."""

    def __init__(self, bins: Path | None = None):
        self.bins = bins
        self.kubeconfig = DATA / "kubeconfig"
        self.certs = DATA / "apiserver-certs"
        self.logs = DATA / "logs"

    # ------------------------------------------------------------------ processes
    def _start(self, name: str, argv: list[str], env: dict | None = None) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True)
        (STATE / f"{name}.pid").write_text(str(p.pid))
        return p.pid

    def _alive(self, name: str) -> bool:
        pid_file = STATE / f"{name}.pid"
        if not pid_file.exists():
            return False
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (exited, not reaped) is not alive.
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"

    def _stop(self, name: str, timeout: float = 20) -> None:
        pid_file = STATE / f"{name}.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while time.time() < deadline and self._alive(name):
                time.sleep(0.2)
            if self._alive(name):
                log(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        pid_file.unlink(missing_ok=True)

    def _wait(self, what: str, ready, name: str, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while True:
            if name and not self._alive(name):
                raise RuntimeError(f"{name} exited:\n{self.tail(name)}")
            if ready():
                return
            if time.time() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{self.tail(name)}")
            time.sleep(0.3)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bins / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                           input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: exit {r.returncode}\n{r.stderr}")
        return r

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ctr", "--address", str(CONTAINERD_SOCK), "-n", "k8s.io", *args, check=check)

    # ------------------------------------------------------------------ up
    def up(self, image_binaries: dict[str, Path]) -> None:
        """Starts the node. `image_binaries`: rmq-sidecar, rmq-injector, app and pause binaries."""
        if os.geteuid() != 0:
            raise RuntimeError("the node needs root (network namespaces, mounts, cgroups)")
        for tool in ("containerd", "runc", "ctr", "containerd-shim-runc-v2", "ip", "openssl"):
            run("sh", "-c", f"command -v {tool}")
        if not Path("/usr/lib/cni/bridge").exists():
            raise RuntimeError("CNI plugins missing: apt-get install containernetworking-plugins")
        self.bins = self.bins or bins_dir()
        self.down()
        STATE.mkdir(parents=True, exist_ok=True)
        DATA.mkdir(parents=True, exist_ok=True)
        started = time.time()
        (STATE / "sysctls.json").write_text(json.dumps(read_sysctls()))
        (STATE / "netns-before.json").write_text(json.dumps(sorted(os.listdir("/var/run/netns"))
                                                            if Path("/var/run/netns").exists() else []))
        self._network()
        self._containerd()
        self._images(image_binaries)
        self._control_plane()
        self._kubelet()
        self.kubectl("wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=120s", timeout=130)
        log(f"node {NODE_NAME} Ready {time.time() - started:.1f} s after `up` began")

    def _network(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        cni = DATA / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-rmq-node.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "rmq-node", "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(DATA / "cni-ipam"),
                         "ranges": [[{"subnet": SUBNET, "rangeStart": "10.244.77.10"}]]}}]}))

    def _containerd(self) -> None:
        conf = DATA / "containerd.toml"
        conf.write_text(f"""version = 2
root = "{DATA / 'containerd'}"
state = "{STATE / 'containerd'}"
[grpc]
  address = "{CONTAINERD_SOCK}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc cannot lower its own oom_score_adj without CAP_SYS_RESOURCE, which root lacks here.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{DATA / 'cni'}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
""")
        self._start("containerd", ["containerd", "--config", str(conf)])
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, "containerd", 30)

    def _images(self, binaries: dict[str, Path]) -> None:
        t0 = time.time()
        built = [
            images.static_image(PAUSE_IMAGE, binaries["pause"], "/pause", "65535:65535"),
            images.from_dockerfile("sidecar", SIDECAR_IMAGE, {"/rmq-sidecar": binaries["rmq-sidecar"]}),
            images.from_dockerfile("injector", INJECTOR_IMAGE, {"/rmq-injector": binaries["rmq-injector"]}),
            images.static_image(APP_IMAGE, binaries["app"], "/app"),
        ]
        for image in built:
            archive = image.write_oci_archive(archive_path(image.name))
            self.ctr("images", "import", str(archive))
        log(f"{len(built)} images built and imported in {time.time() - t0:.1f} s")

    def _control_plane(self) -> None:
        etcd_data = DATA / "etcd"
        self._start("etcd", [str(self.bins / "etcd"), "--data-dir", str(etcd_data),
                             "--listen-client-urls", "http://127.0.0.1:12379",
                             "--advertise-client-urls", "http://127.0.0.1:12379",
                             "--listen-peer-urls", "http://127.0.0.1:12380",
                             "--initial-advertise-peer-urls", "http://127.0.0.1:12380",
                             "--initial-cluster", "default=http://127.0.0.1:12380",
                             "--listen-metrics-urls", "http://127.0.0.1:12381"])
        sa_key, sa_pub = DATA / "sa.key", DATA / "sa.pub"
        run("openssl", "genrsa", "-out", str(sa_key), "2048")
        run("openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
        (DATA / "tokens.csv").write_text(f"{ADMIN_TOKEN},admin,admin,system:masters\n")
        self._start("kube-apiserver", [
            str(self.bins / "kube-apiserver"), "--etcd-servers=http://127.0.0.1:12379",
            f"--secure-port={API_PORT}", f"--bind-address={GATEWAY}", f"--advertise-address={GATEWAY}",
            f"--cert-dir={self.certs}", "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            "--authorization-mode=Node,RBAC", f"--token-auth-file={DATA / 'tokens.csv'}",
            # Webhooks (and aggregated APIs) are called at the Service's endpoint, a pod address:
            # there is no kube-proxy to carry a ClusterIP.
            "--enable-aggregator-routing=true",
            # `kubectl logs` reaches the kubelet at the node's address (no DNS for "rmq-node").
            "--kubelet-preferred-address-types=InternalIP"])
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "node", "cluster": {"server": f"https://{GATEWAY}:{API_PORT}",
                                                      "certificate-authority": str(self.certs / "apiserver.crt")}}],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [{"name": "node", "context": {"cluster": "node", "user": "admin"}}]}))
        self._wait("kube-apiserver", lambda: (self.certs / "apiserver.crt").exists() and self.kubectl(
            "get", "--raw", "/readyz", check=False).returncode == 0, "kube-apiserver")
        node_bin = str(self.bins / "k8s-node")
        self._start("kube-controller-manager", [
            node_bin, "kube-controller-manager", f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            f"--service-account-private-key-file={sa_key}", f"--root-ca-file={self.certs / 'apiserver.crt'}",
            "--secure-port=0", "--use-service-account-credentials=false"])
        self._start("kube-scheduler", [node_bin, "kube-scheduler", f"--kubeconfig={self.kubeconfig}",
                                       "--leader-elect=false", "--secure-port=0"])

    def _kubelet(self) -> None:
        root = DATA / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        conf = DATA / "kubelet.json"
        conf.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
            # cgroup v1 on these machines; no systemd.
            "cgroupDriver": "cgroupfs", "failCgroupV1": False,
            # Root lacks CAP_SYS_RESOURCE: the kubelet must not lower its own oom_score_adj.
            "oomScoreAdj": 0, "failSwapOn": False,
            "address": GATEWAY, "port": KUBELET_PORT, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10258,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(DATA / "pod-logs"), "resolvConf": "",
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        }))
        self._start("kubelet", [str(self.bins / "k8s-node"), "kubelet", f"--config={conf}",
                                f"--kubeconfig={self.kubeconfig}", f"--root-dir={root}",
                                f"--cert-dir={DATA / 'kubelet-pki'}", f"--hostname-override={NODE_NAME}",
                                f"--node-ip={GATEWAY}", "--v=1"])
        self._wait("kubelet registered", lambda: self.kubectl(
            "get", "node", NODE_NAME, check=False).returncode == 0, "kubelet", 90)

    # ------------------------------------------------------------------ down
    def down(self) -> None:
        """Stops everything `up` started (in any state) and puts the machine back."""
        if not STATE.exists():
            return
        self.bins = self.bins or bins_dir()
        if self._alive("kubelet") and self._alive("kube-apiserver"):
            # Let the kubelet stop the pods the CRI way, so CNI releases their addresses.
            r = self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=5",
                             "--wait=true", "--timeout=60s", check=False, timeout=70)
            if r.returncode != 0:
                log(f"pods not deleted in time: {r.stderr.strip()}")
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
            self._stop(name)
        if self._alive("containerd"):
            tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
            for task in tasks:
                self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            time.sleep(0.5 if tasks else 0)
            for task in tasks:
                self.ctr("tasks", "delete", "-f", task, check=False)
        self._stop("containerd")
        # Shims outlive containerd; ours name our socket.
        run("pkill", "-KILL", "-f", f"containerd-shim-runc-v2 .*-address {CONTAINERD_SOCK}", check=False)
        for name in ("kube-apiserver", "etcd"):
            self._stop(name)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in reversed(mounts):
            if mount.startswith(str(DATA)) or mount.startswith(str(STATE)):
                run("umount", "-l", mount, check=False)
        before = set(json.loads((STATE / "netns-before.json").read_text())) \
            if (STATE / "netns-before.json").exists() else set()
        netns_dir = Path("/var/run/netns")
        for ns in (sorted(os.listdir(netns_dir)) if netns_dir.exists() else []):
            if ns.startswith("cni-") and ns not in before:
                run("umount", "-l", str(netns_dir / ns), check=False)
                (netns_dir / ns).unlink(missing_ok=True)
        run("ip", "link", "del", BRIDGE, check=False)
        saved = STATE / "sysctls.json"
        if saved.exists():
            for key, value in json.loads(saved.read_text()).items():
                if sysctl_path(key).read_text().strip() != value:
                    log(f"restoring {key} = {value}")
                    sysctl_path(key).write_text(value)
        run("rm", "-rf", str(STATE), str(DATA / "etcd"), str(DATA / "kubelet"), str(DATA / "cni-ipam"),
            str(DATA / "pod-logs"), check=False)


def archive_path(image: str) -> Path:
    """Where `up` writes the OCI archive of `image` before importing it."""
    return DATA / "images" / (image.replace("/", "_").replace(":", "_") + ".tar")


def build_binaries() -> dict[str, Path]:
    """The binaries the images hold, in target/node-images: the release sidecar and injector
    (`cargo build --release` beforehand), stripped as deploy/Dockerfile strips them, and the
    test app and pause (Go, static)."""
    out = REPO / "target" / "node-images"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0")
    for name in ("app", "pause"):
        run("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / name), f"./{name}",
            cwd=HERE, env=env, timeout=900)
    # The Dockerfile's builder step: the release binaries, stripped as it strips them.
    release = REPO / "target" / "release"
    for name in ("rmq-sidecar", "rmq-injector"):
        run("strip", *images.builder_strip_flags(), "-o", str(out / name), str(release / name))
    return {name: out / name for name in ("rmq-sidecar", "rmq-injector", "app", "pause")}


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    node = Node()
    if command == "up":
        node.up(build_binaries())
        print(node.kubeconfig)
    elif command == "down":
        node.down()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
