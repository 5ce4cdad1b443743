"""scripts/rmq-move-workloads against a fake kubectl whose pods are real sidecars.

tests/deploy/fake_kubectl.py keeps one namespace in a JSON file (workloads with selectors,
pods with labels/annotations/phase, ConfigMaps) and logs every call. Each moved pod is
backed by a real rmq-sidecar process (SidecarProcess, RMQ_SIDECAR_ANNOTATIONS_FILE pointing
at the pod's own downward API dir): `kubectl annotate` rewrites that dir the kubelet's way
(timestamped dir, `..data` symlink swap, Go-quoted sorted lines) and `kubectl get --raw
.../pods/P:9879/proxy/route` is a real GET /route on that sidecar's health port. So a pod
"confirms" only when the real sidecar has followed the real file.

What is checked: consumers' pods are annotated before any producer's; each workload's stage
is in the ConfigMap before its first pod is annotated; a batch is annotated together and
every pod of it has confirmed (as seen by the fake, in its log) before the next batch; the
sidecars end up at the target, controlled by the annotation; a re-run only checks; rollback;
a pod that never confirms stops the run with exit 1 naming it, later batches and workloads
untouched; --dry-run changes nothing; usage errors exit 2.

At most 4 sidecars run at a time. Run: python3 -m pytest tests/deploy/test_move_workloads.py -v
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import fake_kubectl
from deploy_support import REPO, FakeRocketMQ, SidecarProcess, free_port

SCRIPT = REPO / "scripts" / "rmq-move-workloads"
FAKE = Path(__file__).resolve().parent / "fake_kubectl.py"
NS = "shop"
CONTEXT = "kind-test"
ROUTE = "rocketmq-sidecar/route"
STAGES = "rocketmq-sidecar-stages"
FAST = ["--poll-interval", "0.5"]

#: Annotations an injected pod carries besides the route: quotes, '=' and a tab exercise the quoting.
OTHER_ANNOTATIONS = {
    "rocketmq-sidecar/status": json.dumps({"injected": True, "mode": "native", "stage": "old"}),
    "kubectl.kubernetes.io/restartedAt": "2026-11-25T10:00:00Z",
    "note": 'a "quoted" = sign\tand a tab',
}


# --------------------------------------------------------------------------- the fake cluster


def pod(labels: dict, *, route: str | None = "old", injected: bool = True, phase: str = "Running",
        podinfo: Path | None = None, port: int | None = None, deleting: bool = False) -> dict:
    labels = dict(labels)
    annotations = dict(OTHER_ANNOTATIONS)
    if injected:
        labels["rocketmq-sidecar/injected"] = "true"
    if route is not None:
        annotations[ROUTE] = route
    return {"labels": labels, "annotations": annotations, "phase": phase, "deleting": deleting,
            "podinfo": str(podinfo) if podinfo else None,
            "ports": {"9879": port} if port else {}}


class FakeCluster:
    def __init__(self, root: Path, workloads: dict, pods: dict, configmaps: dict | None = None,
                 context: str | None = CONTEXT):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state_path = root / "state.json"
        self.log_path = root / "kubectl.log"
        self.kubectl = root / "bin" / "kubectl"
        self.kubectl.parent.mkdir(exist_ok=True)
        self.kubectl.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.kubectl.chmod(0o755)
        state = {"namespace": NS, "workloads": workloads, "pods": pods, "configmaps": configmaps or {}}
        if context:
            state["context"] = context
        self.state_path.write_text(json.dumps(state, indent=1, sort_keys=True))
        for p in pods.values():
            if p["podinfo"]:
                fake_kubectl.write_downward_api(p["podinfo"], p["annotations"])

    def state(self) -> dict:
        return json.loads(self.state_path.read_text())

    def calls(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def run(self, *args: str, kubectl: str | None = "flag", stdin=subprocess.DEVNULL, env_extra=None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, FAKE_KUBE_STATE=str(self.state_path), FAKE_KUBE_LOG=str(self.log_path))
        env.pop("KUBECTL", None)
        env.update(env_extra or {})
        argv = [sys.executable, str(SCRIPT)]
        if kubectl == "flag":
            argv += ["--kubectl", str(self.kubectl)]
        elif kubectl == "env":
            env["KUBECTL"] = str(self.kubectl)
        r = subprocess.run(argv + list(args), capture_output=True, text=True, stdin=stdin, env=env,
                           timeout=timeout)
        print(f"$ {' '.join(args)}\n-- exit {r.returncode}\n-- stdout:\n{r.stdout}\n-- stderr:\n{r.stderr}")
        return r


def annotates(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["verb"] == "annotate" and c["exit"] == 0]


def mutations(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["verb"] in fake_kubectl.MUTATING]


def assert_batches(calls: list[dict], batches: list[list[str]], to: str) -> None:
    """Annotations came in exactly these batches, each annotated together (no route poll in
    between), and every pod of a batch confirmed (a route answer target=<to>,
    controlled_by=annotation, logged by the fake) before the next batch's first annotation."""
    ann = [(i, c["pod"]) for i, c in enumerate(calls) if c["verb"] == "annotate" and c["exit"] == 0]
    assert [p for _, p in ann] == [p for b in batches for p in b], \
        f"annotation order {[p for _, p in ann]}, expected batches {batches}"
    index = dict((p, i) for i, p in ann)
    for k, batch in enumerate(batches):
        first, last = index[batch[0]], index[batch[-1]]
        polls = [c for c in calls[first:last] if c.get("raw")]
        assert not polls, f"batch {batch} was not annotated together: polls in between {polls}"
        end = index[batches[k + 1][0]] if k + 1 < len(batches) else len(calls)
        for p in batch:
            ok = [c for c in calls[last:end] if c.get("raw") and c.get("pod") == p
                  and c.get("target") == to and c.get("controlled_by") == "annotation"]
            assert ok, f"pod {p} of batch {batch} did not confirm {to} before the next batch"


def pod_env(podinfo: Path) -> dict:
    """A pod sidecar's settings: its annotations file, and an old cluster that answers too
    (a fake), so rollbacks to old pass the sidecar's target_reachable gate."""
    return {"RMQ_SIDECAR_ANNOTATIONS_FILE": str(podinfo / "annotations"),
            "RMQ_SIDECAR_OLD_NAMESRV": FakeRocketMQ.shared("old").addr}


def sidecar_route(sc: SidecarProcess) -> dict:
    status, _, body = sc.request("GET", "/route", port=sc.health_port)
    assert status == 200, body
    return json.loads(body)


# --------------------------------------------------------------------------- the fleet: 4 real sidecars

CONSUMERS = {"deployment/orders-consumer": ["orders-consumer-a", "orders-consumer-b"],
             "statefulset/ledger": ["ledger-0"]}
PRODUCERS = {"deployment/orders-api": ["orders-api-a"]}
WITH_SIDECAR = [p for pods in (*CONSUMERS.values(), *PRODUCERS.values()) for p in pods]
STAGE_KEY = {p: w.replace("/", ".") for w, pods in {**CONSUMERS, **PRODUCERS}.items() for p in pods}


@pytest.fixture(scope="class")
def fleet(sidecar_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    consumer = {"app": "orders", "role": "consumer"}
    pods, sidecars = {}, {}
    labels = {"orders-consumer-a": consumer, "orders-consumer-b": consumer,
              "ledger-0": {"app": "ledger", "tier": "backend"},
              "orders-api-a": {"app": "orders", "role": "api"}}
    try:
        for name in WITH_SIDECAR:
            podinfo = root / "pods" / name / "podinfo"
            fake_kubectl.write_downward_api(podinfo, pod(labels[name])["annotations"])
            sc = SidecarProcess(sidecar_bin, root / "pods" / name / "sidecar",
                                extra_env=pod_env(podinfo))
            sidecars[name] = sc.start()
            pods[name] = pod(labels[name], podinfo=podinfo, port=sc.health_port)
        # Selected by orders-consumer but not moved: Pending, not injected, terminating.
        pods["orders-consumer-pending"] = pod(consumer, phase="Pending", port=free_port())
        pods["orders-consumer-plain"] = pod(consumer, route=None, injected=False, port=free_port())
        pods["orders-consumer-old"] = pod(consumer, deleting=True, port=free_port())
        # Selected by nobody listed.
        pods["orders-admin-x"] = pod({"app": "orders", "role": "admin"}, port=free_port())
        workloads = {
            "deployment/orders-consumer": {"selector": {"matchLabels": consumer}},
            "statefulset/ledger": {"selector": {"matchLabels": {"app": "ledger"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["backend", "batch"]}]}},
            "deployment/orders-api": {"selector": {"matchLabels": {"app": "orders", "role": "api"}}},
            "deployment/orders-admin": {"selector": {"matchLabels": {"app": "orders", "role": "admin"}}},
        }
        cluster = FakeCluster(root / "cluster", workloads, pods,
                              configmaps={STAGES: {"data": {"deployment.unrelated": "new"}}})
        cluster.sidecars = sidecars
        # Every sidecar follows its file before the test starts: route old, owned by the annotation.
        for name, sc in sidecars.items():
            wait_for(lambda: sidecar_route(sc)["controlled_by"] == "annotation", f"{name} follows its annotation")
            assert sidecar_route(sc)["target"] == "old"
        yield cluster
    finally:
        for sc in sidecars.values():
            sc.stop()


def wait_for(cond, what: str, timeout: float = 10) -> None:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting: {what}")


def move_args(to: str, *extra: str) -> list[str]:
    # Producers first on the command line: the order must come from the roles, not from argv.
    return ["--namespace", NS, "--context", CONTEXT, "--to", to,
            "--producers", ",".join(PRODUCERS), "--consumers", ",".join(CONSUMERS),
            "--timeout", "20", *FAST, "--yes", *extra]


def assert_fleet_at(cluster: FakeCluster, to: str) -> None:
    for name, sc in cluster.sidecars.items():
        doc = sidecar_route(sc)
        assert (doc["target"], doc["controlled_by"], doc["annotation"]["value"]) == (to, "annotation", to), \
            f"{name}: {doc['target']} {doc['controlled_by']} {doc['annotation']}\n{sc.log_tail()}"
    state = cluster.state()
    for name in WITH_SIDECAR:
        assert state["pods"][name]["annotations"][ROUTE] == to
    for key in {*STAGE_KEY.values()}:
        assert state["configmaps"][STAGES]["data"][key] == to


def assert_stage_first(calls: list[dict], to: str) -> None:
    for c in annotates(calls):
        key = STAGE_KEY[c["pod"]]
        assert c["stages"].get(key) == to, \
            f"pod {c['pod']} was annotated while stage {key} was {c['stages'].get(key)!r}, not {to!r}"


class TestMoveAndRollback:
    def test_move_consumers_then_producers_to_new(self, fleet: FakeCluster):
        r = fleet.run(*move_args("new", "--batch-size", "1"))
        assert r.returncode == 0, r.stderr
        calls = fleet.calls()
        # Consumers' pods, every one, before any producer's pod; one pod per batch, each confirmed first.
        assert_batches(calls, [["orders-consumer-a"], ["orders-consumer-b"], ["ledger-0"], ["orders-api-a"]], "new")
        order = [c["pod"] for c in annotates(calls)]
        consumer_pods = [p for pods in CONSUMERS.values() for p in pods]
        assert max(order.index(p) for p in consumer_pods) < order.index("orders-api-a")
        assert_stage_first(calls, "new")
        # The producer's stage was set only after every consumer pod had been annotated.
        api_stage = next(i for i, c in enumerate(calls)
                         if c["verb"] in ("patch", "create") and c["data"].get("deployment.orders-api") == "new")
        last_consumer = max(i for i, c in enumerate(calls) if c["verb"] == "annotate" and c["pod"] in consumer_pods)
        assert api_stage > last_consumer
        # The real sidecars followed the real files.
        assert_fleet_at(fleet, "new")
        state = fleet.state()
        assert state["configmaps"][STAGES]["data"]["deployment.unrelated"] == "new", "other stages kept"
        # Not moved: Pending, not injected, terminating pods, and a workload nobody listed.
        for name in ("orders-consumer-pending", "orders-consumer-plain", "orders-consumer-old", "orders-admin-x"):
            assert ROUTE not in state["pods"][name]["annotations"] or \
                state["pods"][name]["annotations"][ROUTE] == "old", name
            assert name not in order
        out = r.stdout
        assert "skip pod orders-consumer-pending: phase Pending" in out
        assert "WARNING: it carries rocketmq-sidecar/route=old" in out
        assert "skip pod orders-consumer-plain: not injected" in out
        assert "skip pod orders-consumer-old: terminating" in out
        assert "why: consumers move before producers" in out
        assert "reminder:" in out and "backlog" in out
        for p in WITH_SIDECAR:
            assert f"pod {p} confirmed target=new controlled_by=annotation" in out
        # --context and --namespace went to every kubectl call.
        assert calls and all(c["context"] == CONTEXT and c["namespace"] == NS for c in calls)

    def test_annotations_file_is_written_the_kubelet_way(self, fleet: FakeCluster):
        podinfo = Path(fleet.state()["pods"]["ledger-0"]["podinfo"])
        visible, data = podinfo / "annotations", podinfo / "..data"
        assert visible.is_symlink() and os.readlink(visible) == "..data/annotations"
        assert data.is_symlink() and os.readlink(data).startswith("..20")
        assert [d.name for d in podinfo.iterdir() if d.name.startswith("..20")] == [os.readlink(data)], \
            "the previous timestamped dir is removed"
        text = visible.read_text()
        lines = text.split("\n")
        assert not text.endswith("\n") and lines == sorted(lines)
        assert 'rocketmq-sidecar/route="new"' in lines
        assert 'note="a \\"quoted\\" = sign\\tand a tab"' in lines

    def test_rerun_only_checks_then_rollback_to_old(self, fleet: FakeCluster):
        before = len(fleet.calls())
        r = fleet.run(*move_args("new", "--batch-size", "1"))
        assert r.returncode == 0, r.stderr
        again = fleet.calls()[before:]
        assert not mutations(again), f"a re-run changed something: {mutations(again)}"
        assert {c["pod"] for c in again if c.get("raw") and c.get("target") == "new"} == set(WITH_SIDECAR)
        assert "already annotated rocketmq-sidecar/route=new" in r.stdout

        before = len(fleet.calls())
        r = fleet.run(*move_args("old", "--batch-percent", "60"))
        assert r.returncode == 0, r.stderr
        calls = fleet.calls()[before:]
        # 60 % of 2 running pods rounds up to a batch of 2; of 1 pod, to 1.
        assert_batches(calls, [["orders-consumer-a", "orders-consumer-b"], ["ledger-0"], ["orders-api-a"]], "old")
        assert_stage_first(calls, "old")
        assert_fleet_at(fleet, "old")
        assert "reminder:" in r.stdout and "new's backlog" in r.stdout


# --------------------------------------------------------------------------- a pod that never confirms


def test_unconfirmed_pod_stops_the_run(sidecar_bin, tmp_path):
    # flaky-a: a real sidecar that does not follow any annotations file (stays old, admin-controlled).
    # flaky-b: its sidecar is stopped (nothing listens). flaky-c would be the next batch.
    deaf = SidecarProcess(sidecar_bin, tmp_path / "deaf").start()
    try:
        labels = {"app": "flaky"}
        pods = {
            "flaky-a": pod(labels, podinfo=tmp_path / "flaky-a", port=deaf.health_port),
            "flaky-b": pod(labels, podinfo=tmp_path / "flaky-b", port=free_port()),
            "flaky-c": pod(labels, podinfo=tmp_path / "flaky-c", port=free_port()),
            "api-a": pod({"app": "api"}, podinfo=tmp_path / "api-a", port=free_port()),
        }
        workloads = {"deployment/flaky": {"selector": {"matchLabels": labels}},
                     "deployment/api": {"selector": {"matchLabels": {"app": "api"}}}}
        cluster = FakeCluster(tmp_path / "cluster", workloads, pods, context=None)
        r = cluster.run("--namespace", NS, "--to", "new", "--consumers", "deployment/flaky",
                        "--producers", "deployment/api", "--batch-size", "2", "--timeout", "3", *FAST, "--yes")
        assert r.returncode == 1, r.stderr
        err = r.stderr
        assert "STOPPED: 2 pod(s) of deployment/flaky did not confirm rocketmq-sidecar/route=new" in err
        assert "pod flaky-a: last reported target=old controlled_by=admin annotation=(none)" in err
        assert "pod flaky-b: last reported the route query failed" in err and "connection refused" in err
        assert "pods of deployment/flaky not annotated: flaky-c" in err
        assert "workloads not touched: deployment/api" in err
        assert "rmq-move-workloads --namespace shop --to old --consumers deployment/flaky" in err
        # Later batches and the producer were not touched; the ConfigMap was created for flaky only.
        calls = cluster.calls()
        assert [c["pod"] for c in annotates(calls)] == ["flaky-a", "flaky-b"]
        state = cluster.state()
        assert state["configmaps"][STAGES]["data"] == {"deployment.flaky": "new"}
        assert state["pods"]["flaky-c"]["annotations"][ROUTE] == "old"
        assert state["pods"]["api-a"]["annotations"][ROUTE] == "old"
        assert 'rocketmq-sidecar/route="old"' in (tmp_path / "flaky-c" / "annotations").read_text()
        # The deaf sidecar really did not move.
        doc = sidecar_route(deaf)
        assert (doc["target"], doc["controlled_by"]) == ("old", "admin")
    finally:
        deaf.stop()


def test_a_pod_whose_gates_refuse_stops_the_run_with_the_reason(sidecar_bin, tmp_path):
    # api-a's sidecar has seen its app produce to topic Orders (restored from its state dir),
    # and old answers nothing (a closed port; new is the fake that answers): its
    # consumers_on_target gate cannot read who consumes Orders on old, so it refuses (fails
    # closed) and keeps the annotation pending.
    podinfo = tmp_path / "api-a" / "podinfo"
    labels = {"app": "api"}
    fake_kubectl.write_downward_api(podinfo, pod(labels)["annotations"])
    state = tmp_path / "api-a" / "sidecar" / "state"
    state.mkdir(parents=True)
    (state / "usage.json").write_text(json.dumps(
        {"produced": {"Orders": ["orders-producer"]}, "consumed": {}, "overflow": 0}))
    sc = SidecarProcess(sidecar_bin, tmp_path / "api-a" / "sidecar",
                        extra_env={"RMQ_SIDECAR_ANNOTATIONS_FILE": str(podinfo / "annotations")}).start()
    try:
        wait_for(lambda: sidecar_route(sc)["controlled_by"] == "annotation", "api-a follows its annotation")
        pods = {"api-a": pod(labels, podinfo=podinfo, port=sc.health_port),
                "api-b": pod(labels, podinfo=tmp_path / "api-b", port=free_port())}
        workloads = {"deployment/api": {"selector": {"matchLabels": labels}}}
        cluster = FakeCluster(tmp_path / "cluster", workloads, pods, context=None)
        r = cluster.run("--namespace", NS, "--to", "new", "--producers", "deployment/api",
                        "--batch-size", "1", "--timeout", "60", *FAST, "--yes")
        assert r.returncode == 1, r.stderr
        err = r.stderr
        assert "STOPPED: the migration gates of pod api-a of deployment/api refuse" in err, err
        assert "REFUSED by the migration gates: new refused by consumers_on_target" in err, err
        assert "fails closed" in err and "rocketmq-sidecar/route-force=true" in err, err
        assert "pods of deployment/api not annotated: api-b" in err, err
        assert [c["pod"] for c in annotates(cluster.calls())] == ["api-a"]
        # Its first batch was refused: the stage it had been given is put back (it was unset).
        assert "stage of deployment/api was put back to (unset)" in err, err
        assert cluster.state()["configmaps"][STAGES]["data"].get("deployment.api") is None
        doc = sidecar_route(sc)
        assert doc["target"] == "old" and doc["annotation"]["pending"]["target"] == "new", doc
    finally:
        sc.stop()


# --------------------------------------------------------------------------- dry run


def small_cluster(root: Path, **kw) -> FakeCluster:
    c, a = {"app": "c"}, {"app": "a"}
    pods = {"c-1": pod(c, podinfo=root / "c-1"), "c-2": pod(c, podinfo=root / "c-2"),
            "c-3": pod(c, route="new", podinfo=root / "c-3"), "a-1": pod(a, podinfo=root / "a-1")}
    workloads = {"deployment/c": {"selector": {"matchLabels": c}},
                 "statefulset/a": {"selector": {"matchLabels": a}}}
    return FakeCluster(root / "cluster", workloads, pods, **kw)


def test_dry_run_changes_nothing(tmp_path):
    cluster = small_cluster(tmp_path, configmaps={STAGES: {"data": {"deployment.c": "old"}}})
    state_before = cluster.state_path.read_text()
    files_before = {p: (tmp_path / p / "annotations").read_text() for p in ("c-1", "c-2", "c-3", "a-1")}
    r = cluster.run("--namespace", NS, "--context", CONTEXT, "--to", "new", "--producers", "sts/a",
                    "--consumers", "deployment/c", "--batch-size", "2", "--dry-run", kubectl="env")
    assert r.returncode == 0, r.stderr
    assert cluster.state_path.read_text() == state_before
    assert {p: (tmp_path / p / "annotations").read_text() for p in files_before} == files_before
    calls = cluster.calls()
    assert calls and not mutations(calls), mutations(calls)
    assert not [c for c in calls if c.get("raw")], "a dry run does not poll"
    kubectl = f"{cluster.kubectl} --context {CONTEXT} --namespace {NS}"
    lines = r.stdout.splitlines()
    expected = [
        f"dry run, would run: {kubectl} patch configmap {STAGES} --type merge -p "
        """'{"data":{"deployment.c":"new"}}'""",
        f"dry run, would run: {kubectl} annotate pod c-1 {ROUTE}=new --overwrite",
        f"dry run, would run: {kubectl} annotate pod c-2 {ROUTE}=new --overwrite",
        f"dry run, would run: {kubectl} patch configmap {STAGES} --type merge -p "
        """'{"data":{"statefulset.a":"new"}}'""",
        f"dry run, would run: {kubectl} annotate pod a-1 {ROUTE}=new --overwrite",
    ]
    got = [line.split(": ", 1)[1] if line.startswith("[") else line for line in lines if "would run" in line]
    got = [g[g.index("dry run, would run"):] for g in got]
    assert got == expected
    assert "[deployment/c] batch 1/1: c-1, c-2" in r.stdout, "c-3 is already at new; c-1 and c-2 form one batch"
    assert "c-3" not in "".join(got)
    assert "dry run: done, nothing was changed" in r.stdout


# --------------------------------------------------------------------------- usage errors


BASE = ["--namespace", NS, "--to", "new"]


@pytest.mark.parametrize("args, message", [
    (["--namespace", NS, "--consumers", "deployment/c"], "the following arguments are required: --to"),
    (["--namespace", NS, "--to", "newer", "--consumers", "deployment/c"], "invalid choice: 'newer'"),
    (["--to", "new", "--consumers", "deployment/c"], "the following arguments are required: --namespace"),
    (BASE, "nothing to move: give --consumers and/or --producers"),
    (BASE + ["--consumers", "daemonset/x"], "kind 'daemonset' is not supported"),
    (BASE + ["--consumers", "orders"], "'orders' is not KIND/NAME"),
    (BASE + ["--consumers", "deployment/Bad_Name"], "is not a valid object name"),
    (BASE + ["--consumers", "deployment/c", "--producers", "deploy/c"], "listed as both consumer and producer"),
    (BASE + ["--consumers", "deployment/c", "--batch-size", "2", "--batch-percent", "50"], "not allowed with"),
    (BASE + ["--consumers", "deployment/c", "--batch-size", "0"], "--batch-size must be at least 1"),
    (BASE + ["--consumers", "deployment/c", "--batch-percent", "150"], "--batch-percent must be more than 0"),
    (BASE + ["--consumers", "deployment/c", "--timeout", "0"], "--timeout must be more than 0"),
    (BASE + ["--consumers", "deployment/c", "--health-port", "70000"], "--health-port must be 1..65535"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    cluster = small_cluster(tmp_path)
    r = cluster.run(*args, "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "usage: rmq-move-workloads" in r.stderr
    assert not cluster.calls(), "nothing may reach kubectl on a usage error"


def test_cluster_errors_exit_2_before_any_change(tmp_path):
    cluster = small_cluster(tmp_path)
    ctx = ["--context", CONTEXT]
    # A typo in the second workload: nothing is changed, the first workload included.
    r = cluster.run(*BASE, *ctx, "--consumers", "deployment/c", "--producers", "statefulset/nope", "--yes")
    assert r.returncode == 2
    assert "statefulset/nope not found in namespace shop; nothing was changed" in r.stderr
    assert cluster.calls() and not mutations(cluster.calls())
    # No confirmation possible (stdin is not a terminal) and no --yes.
    r = cluster.run(*BASE, *ctx, "--consumers", "deployment/c")
    assert r.returncode == 2 and "pass --yes" in r.stderr
    # kubectl missing.
    r = cluster.run(*BASE, *ctx, "--consumers", "deployment/c", "--yes", "--kubectl", str(tmp_path / "nope"),
                    kubectl=None)
    assert r.returncode == 2 and "kubectl not found" in r.stderr
    # kubectl failing (a context that does not exist): its message is shown.
    r = cluster.run(*BASE, "--context", "elsewhere", "--consumers", "deployment/c", "--yes")
    assert r.returncode == 2 and 'context "elsewhere" does not exist' in r.stderr
    assert not mutations(cluster.calls())
    assert cluster.state()["configmaps"] == {}


def test_script_is_an_executable_python3_script():
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    assert SCRIPT.stat().st_mode & stat.S_IXUSR
    r = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--batch-percent" in r.stdout


# --------------------------------------------------------------------------- one role at a time


def test_a_service_moves_its_consumers_first_and_its_producers_later(sidecar_bin, tmp_path):
    """A service that consumes and produces: --role consumer moves its consumers (annotation and
    stage become producer=old,consumer=new, the real sidecars report it), --role producer then
    completes the move (both `new`); a re-run changes nothing."""
    labels = {"app": "svc"}
    sidecars, pods = {}, {}
    try:
        for name in ("svc-1", "svc-2"):
            podinfo = tmp_path / name / "podinfo"
            fake_kubectl.write_downward_api(podinfo, pod(labels)["annotations"])
            sc = SidecarProcess(sidecar_bin, tmp_path / name / "sidecar",
                                extra_env=pod_env(podinfo))
            sidecars[name] = sc.start()
            pods[name] = pod(labels, podinfo=podinfo, port=sc.health_port)
        cluster = FakeCluster(tmp_path / "cluster", {"deployment/svc": {"selector": {"matchLabels": labels}}},
                              pods, configmaps={STAGES: {"data": {}}})
        for name, sc in sidecars.items():
            wait_for(lambda: sidecar_route(sc)["controlled_by"] == "annotation", f"{name} follows its annotation")

        def move(role: str) -> subprocess.CompletedProcess:
            return cluster.run("--namespace", NS, "--context", CONTEXT, "--to", "new", "--role", role,
                               "--consumers", "deployment/svc", "--batch-size", "2", "--timeout", "20",
                               *FAST, "--yes")

        r = move("consumer")
        assert r.returncode == 0, r.stderr
        assert "move consumers to new" in r.stdout
        state = cluster.state()
        assert state["configmaps"][STAGES]["data"]["deployment.svc"] == "producer=old,consumer=new"
        for name, sc in sidecars.items():
            assert state["pods"][name]["annotations"][ROUTE] == "producer=old,consumer=new"
            doc = sidecar_route(sc)
            assert (doc["target"], doc["roles"]["consumer"]["target"], doc["roles"]["producer"]["target"],
                    doc["controlled_by"]) == (None, "new", "old", "annotation"), doc

        again = len(cluster.calls())
        r = move("consumer")
        assert r.returncode == 0 and not mutations(cluster.calls()[again:]), "a re-run changed something"

        r = move("producer")
        assert r.returncode == 0, r.stderr
        state = cluster.state()
        assert state["configmaps"][STAGES]["data"]["deployment.svc"] == "new"
        for name, sc in sidecars.items():
            assert state["pods"][name]["annotations"][ROUTE] == "new"
            doc = sidecar_route(sc)
            assert (doc["target"], doc["controlled_by"]) == ("new", "annotation"), doc
    finally:
        for sc in sidecars.values():
            sc.stop()
