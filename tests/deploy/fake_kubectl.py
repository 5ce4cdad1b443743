#!/usr/bin/env python3
"""A fake `kubectl` for tests/deploy/test_move_workloads.py: one namespace's tiny cluster in a JSON file.

State file ($FAKE_KUBE_STATE):

    {"namespace": "shop", "context": "kind-test" (optional: then --context must say it),
     "workloads": {"deployment/orders": {"selector": {"matchLabels": {...}, "matchExpressions": [...]}}},
     "pods": {"orders-a": {"labels": {...}, "annotations": {...}, "phase": "Running",
                           "deleting": false,
                           "podinfo": "/dir" or null,     # the pod's downward API volume
                           "ports": {"9879": 43121}}},    # pod port -> a real sidecar's port
     "configmaps": {"rocketmq-sidecar-stages": {"data": {...}}}}

Verbs, exactly those scripts/rmq-move-workloads uses (anything else exits 1):

    get deployment/NAME|statefulset/NAME -o json [--ignore-not-found]
    get pods -l SELECTOR -o json          (=, ==, !=, in, notin, exists, !exists)
    get pod NAME -o json [--ignore-not-found]
    get configmap NAME -o json [--ignore-not-found]
    get --raw /api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH [--request-timeout=...]
    create configmap NAME --from-literal=K=V...
    patch configmap NAME --type merge -p JSON
    annotate pod NAME K=V... [--overwrite]

Global flags: --context, --namespace/-n, --request-timeout. `annotate` rewrites the pod's
downward API volume the way the kubelet's atomic writer does (see write_downward_api), and
`get --raw .../proxy/...` is a real HTTP GET to the sidecar behind the pod's port.

Every call is appended to $FAKE_KUBE_LOG (JSON lines: argv, verb, and what it saw or did;
an annotate records the stage ConfigMap's data at that moment).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import http.client
import json
import os
import re
import sys
import time
from pathlib import Path

MUTATING = ("annotate", "create", "patch")


# --------------------------------------------------------------------------- the kubelet's writer


def go_quote(s: str) -> str:
    """Go's %q (strconv.Quote) for the strings annotations hold."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_annotations(annotations: dict) -> str:
    """The kubelet's formatMap: sorted `key="value"` lines, no trailing newline."""
    return "\n".join(f"{k}={go_quote(v)}" for k, v in sorted(annotations.items()))


def write_downward_api(podinfo: str | os.PathLike, annotations: dict) -> None:
    """Like the kubelet's AtomicWriter: files go to a new `..<timestamp>` dir, the `..data`
    symlink is swapped to it with one rename, the user-visible `annotations` is a symlink to
    `..data/annotations` (made once), and the previous timestamped dir is removed."""
    root = Path(podinfo)
    root.mkdir(parents=True, exist_ok=True)
    data = root / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.")
    for i in range(1000):
        ts_dir = root / f"{stamp}{time.monotonic_ns() % 10**9:09d}{i}"
        try:
            ts_dir.mkdir()
            break
        except FileExistsError:
            continue
    (ts_dir / "annotations").write_text(format_annotations(annotations))
    tmp = root / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(ts_dir.name, tmp)
    os.replace(tmp, data)  # rename(2): readers see the old or the new dir, never neither
    visible = root / "annotations"
    if not visible.is_symlink():
        os.symlink("..data/annotations", visible)
    if old and old != ts_dir.name:
        old_dir = root / old
        for f in old_dir.iterdir():
            f.unlink()
        old_dir.rmdir()


# --------------------------------------------------------------------------- selectors


def parse_selector(text: str) -> list[tuple[str, str, list[str]]]:
    reqs = []
    for part in re.findall(r"(?:[^,(]|\([^)]*\))+", text):
        part = part.strip()
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            reqs.append((m[1], m[2], [v.strip() for v in m[3].split(",") if v.strip()]))
            continue
        m = re.fullmatch(r"([\w./-]+)\s*(==|!=|=)\s*([\w./-]*)", part)
        if m:
            reqs.append((m[1], "!=" if m[2] == "!=" else "=", [m[3]]))
            continue
        m = re.fullmatch(r"(!?)([\w./-]+)", part)
        if m:
            reqs.append((m[2], "!exists" if m[1] else "exists", []))
            continue
        fail(f'error: unable to parse requirement: "{part}"')
    if not reqs:
        fail("error: empty selector")
    return reqs


def matches(labels: dict, reqs) -> bool:
    for key, op, values in reqs:
        v = labels.get(key)
        if op == "=":
            ok = v == values[0]
        elif op == "!=":
            ok = v != values[0]
        elif op == "in":
            ok = v in values
        elif op == "notin":
            ok = v not in values
        else:
            ok = (key in labels) == (op == "exists")
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------- plumbing


def fail(msg: str, code: int = 1) -> None:
    print(msg, file=sys.stderr)
    raise SystemExit(code)


class Cluster:
    def __init__(self):
        self.path = Path(os.environ["FAKE_KUBE_STATE"])
        self.log_path = Path(os.environ.get("FAKE_KUBE_LOG") or str(self.path) + ".log")
        self._lock = open(str(self.path) + ".lock", "a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.state = json.loads(self.path.read_text())

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def log(self, entry: dict) -> None:
        entry["t"] = time.time()
        with open(self.log_path, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")


def split_flags(argv: list[str]) -> tuple[dict, list[str], dict]:
    """(global flags, positionals, verb flags)."""
    glob: dict = {}
    flags: dict = {}
    pos: list[str] = []
    with_value = {"--context", "--namespace", "-n", "--request-timeout", "-o", "--output", "-l",
                  "--selector", "--type", "-p", "--patch", "--raw", "--from-literal"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=")
            if name in with_value and not eq:
                if i + 1 >= len(argv):
                    fail(f"error: flag needs an argument: {name}")
                value = argv[i + 1]
                i += 1
            elif name not in with_value and name not in ("--ignore-not-found", "--overwrite"):
                fail(f"error: unknown flag: {name}")
            name = {"-n": "--namespace", "--output": "-o", "--selector": "-l", "--patch": "-p"}.get(name, name)
            if name in ("--context", "--namespace", "--request-timeout"):
                glob[name] = value
            elif name == "--from-literal":
                flags.setdefault(name, []).append(value)
            else:
                flags[name] = value if (eq or name in with_value) else True
        else:
            pos.append(a)
        i += 1
    return glob, pos, flags


KIND_NAMES = {"deployment": "deployment", "deployments": "deployment", "deploy": "deployment",
              "deployment.apps": "deployment", "statefulset": "statefulset", "statefulsets": "statefulset",
              "sts": "statefulset", "statefulset.apps": "statefulset",
              "pod": "pod", "pods": "pod", "po": "pod", "configmap": "configmap", "configmaps": "configmap",
              "cm": "configmap"}


def kind_and_name(pos: list[str]) -> tuple[str, str | None]:
    if not pos:
        fail("error: you must specify the type of resource to get")
    first, _, name = pos[0].partition("/")
    kind = KIND_NAMES.get(first.lower())
    if kind is None:
        fail(f'error: the server doesn\'t have a resource type "{first}"')
    if not name:
        name = pos[1] if len(pos) > 1 else None
    return kind, name


def need_json(flags: dict) -> None:
    if flags.get("-o") != "json":
        fail("fake kubectl: only -o json is implemented for get")


def pod_doc(ns: str, name: str, pod: dict) -> dict:
    meta = {"name": name, "namespace": ns, "labels": pod.get("labels", {}),
            "annotations": pod.get("annotations", {})}
    if pod.get("deleting"):
        meta["deletionTimestamp"] = "2026-11-25T10:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {"phase": pod.get("phase", "Running")}}


# --------------------------------------------------------------------------- verbs


def cmd_get(c: Cluster, ns_ok: bool, ns: str, pos: list[str], flags: dict, entry: dict) -> None:
    if "--raw" in flags:
        return cmd_raw(c, flags["--raw"], entry)
    kind, name = kind_and_name(pos)
    need_json(flags)
    entry.update(kind=kind, name=name)
    st = c.state
    if kind == "pod" and name is None:
        reqs = parse_selector(flags.get("-l") or fail("fake kubectl: get pods needs -l"))
        items = [pod_doc(ns, n, p) for n, p in sorted(st["pods"].items())
                 if ns_ok and matches(p.get("labels", {}), reqs)]
        entry["pods"] = [i["metadata"]["name"] for i in items]
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
        return
    if name is None:
        fail("fake kubectl: get KIND needs a NAME here")
    found = None
    if ns_ok and kind == "pod" and name in st["pods"]:
        found = pod_doc(ns, name, st["pods"][name])
    elif ns_ok and kind == "configmap" and name in st.get("configmaps", {}):
        found = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                 "data": st["configmaps"][name].get("data", {})}
    elif ns_ok and kind in ("deployment", "statefulset") and f"{kind}/{name}" in st["workloads"]:
        w = st["workloads"][f"{kind}/{name}"]
        found = {"apiVersion": "apps/v1", "kind": kind.capitalize().replace("set", "Set"),
                 "metadata": {"name": name, "namespace": ns}, "spec": {"selector": w["selector"]}}
    entry["found"] = found is not None
    if found is None:
        if "--ignore-not-found" in flags:
            return
        plural = {"pod": "pods", "configmap": "configmaps", "deployment": "deployments.apps",
                  "statefulset": "statefulsets.apps"}[kind]
        fail(f'Error from server (NotFound): {plural} "{name}" not found')
    print(json.dumps(found, indent=2))


def cmd_raw(c: Cluster, path: str, entry: dict) -> None:
    entry["raw"] = path
    m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/:]+):(\d+)/proxy(/.*)", path)
    if not m:
        fail(f"fake kubectl: raw path not implemented: {path}")
    ns, name, port, sub = m[1], m[2], m[3], m[4]
    entry.update(pod=name, port=int(port))
    pod = c.state["pods"].get(name) if ns == c.state["namespace"] else None
    if pod is None:
        fail(f'Error from server (NotFound): pods "{name}" not found')
    real = (pod.get("ports") or {}).get(port)
    if pod.get("phase", "Running") != "Running" or real is None:
        entry["result"] = "unreachable"
        fail(f"Error from server (ServiceUnavailable): error trying to reach service: dial tcp "
             f"10.244.0.7:{port}: connect: connection refused")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(real), timeout=5)
        conn.request("GET", sub)
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
    except OSError as e:
        entry["result"] = "unreachable"
        why = "connect: connection refused" if isinstance(e, ConnectionRefusedError) else str(e)
        fail(f"Error from server (ServiceUnavailable): error trying to reach service: dial tcp "
             f"10.244.0.7:{port}: {why}")
    entry["status"] = resp.status
    if resp.status >= 300:
        entry["result"] = "http-error"
        fail(f"Error from server: the server responded with the status code {resp.status}: {body[:200]}")
    with contextlib.suppress(ValueError, AttributeError):
        doc = json.loads(body)
        entry.update(target=doc.get("target"), controlled_by=doc.get("controlled_by"))
    entry["result"] = "ok"
    sys.stdout.write(body)


def cmd_create(c: Cluster, ns_ok: bool, ns: str, pos: list[str], flags: dict, entry: dict) -> None:
    kind, name = kind_and_name(pos)
    if kind != "configmap" or not name:
        fail("fake kubectl: only `create configmap NAME --from-literal=K=V` is implemented")
    if not ns_ok:
        fail(f'error: failed to create configmap: namespaces "{ns}" not found')
    cms = c.state.setdefault("configmaps", {})
    if name in cms:
        fail(f'error: failed to create configmap: configmaps "{name}" already exists (AlreadyExists)')
    data = {}
    for lit in flags.get("--from-literal", []):
        k, eq, v = lit.partition("=")
        if not eq or not k:
            fail(f"error: invalid literal source {lit}, expected key=value")
        data[k] = v
    cms[name] = {"data": data}
    c.save()
    entry.update(kind=kind, name=name, data=data)
    print(f"configmap/{name} created")


def cmd_patch(c: Cluster, ns_ok: bool, ns: str, pos: list[str], flags: dict, entry: dict) -> None:
    kind, name = kind_and_name(pos)
    if kind != "configmap" or not name or flags.get("--type") != "merge":
        fail("fake kubectl: only `patch configmap NAME --type merge -p JSON` is implemented")
    cm = c.state.get("configmaps", {}).get(name) if ns_ok else None
    if cm is None:
        fail(f'Error from server (NotFound): configmaps "{name}" not found')
    try:
        patch = json.loads(flags.get("-p", ""))
    except ValueError as e:
        fail(f"error: unable to parse the patch: {e}")
    for k, v in (patch.get("data") or {}).items():
        if v is None:
            cm["data"].pop(k, None)
        else:
            cm["data"][k] = str(v)
    c.save()
    entry.update(kind=kind, name=name, data=dict(cm["data"]))
    print(f"configmap/{name} patched")


def cmd_annotate(c: Cluster, ns_ok: bool, ns: str, pos: list[str], flags: dict, entry: dict) -> None:
    kind, name = kind_and_name(pos)
    rest = pos[1:] if "/" in pos[0] else pos[2:]
    if kind != "pod" or not name or not rest:
        fail("fake kubectl: only `annotate pod NAME K=V... [--overwrite]` is implemented")
    pod = c.state["pods"].get(name) if ns_ok else None
    if pod is None:
        fail(f'Error from server (NotFound): pods "{name}" not found')
    ann = pod.setdefault("annotations", {})
    for kv in rest:
        k, eq, v = kv.partition("=")
        if not eq:
            fail(f"fake kubectl: annotation removal is not implemented: {kv}")
        if k in ann and ann[k] != v and "--overwrite" not in flags:
            fail(f"error: --overwrite is false but found the following declared annotation(s): "
                 f"'{k}' already has a value ({ann[k]})")
        ann[k] = v
        entry.setdefault("set", {})[k] = v
    c.save()
    # Write the volume after the state: a kubelet acts on what the API server already holds.
    if pod.get("podinfo"):
        write_downward_api(pod["podinfo"], ann)
    entry.update(pod=name, stages=dict(c.state.get("configmaps", {}).get("rocketmq-sidecar-stages", {})
                                       .get("data", {})))
    print(f"pod/{name} annotated")


def main(argv: list[str]) -> None:
    c = Cluster()
    glob, pos, flags = split_flags(argv)
    entry = {"argv": argv, "context": glob.get("--context"), "namespace": glob.get("--namespace"),
             "verb": pos[0] if pos else None}
    try:
        want_ctx = c.state.get("context")
        if want_ctx and glob.get("--context", want_ctx) != want_ctx:
            fail(f'error: context "{glob["--context"]}" does not exist')
        ns = glob.get("--namespace", "default")
        ns_ok = ns == c.state["namespace"]
        verbs = {"get": cmd_get, "create": cmd_create, "patch": cmd_patch, "annotate": cmd_annotate}
        if not pos or pos[0] not in verbs:
            fail(f"fake kubectl: verb not implemented: {argv}")
        verbs[pos[0]](c, ns_ok, ns, pos[1:], flags, entry)
        entry["exit"] = 0
    except SystemExit as e:
        entry["exit"] = e.code
        raise
    finally:
        c.log(entry)


if __name__ == "__main__":
    main(sys.argv[1:])
