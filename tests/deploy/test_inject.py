"""The injector: `rmq-injector webhook` over HTTPS with AdmissionReview v1 requests
shaped like the API server's (tests/fixtures/inject/reviews), and `rmq-injector inject -f`.

Every JSON patch the webhook returns is applied to the pod with Python's `jsonpatch` (an
implementation independent of ours), the result is validated against the Kubernetes
OpenAPI schema with `kubernetes-validate --strict`, compared with a golden file
(tests/fixtures/inject/golden; regenerate with RMQ_UPDATE_GOLDEN=1 and review the diff),
and sent again to check that a second invocation changes nothing.

The stage lookup goes to a fake Kubernetes API over HTTPS (ConfigMaps from a dict, bearer
token required, namespace "broken" answers 500). Certificates come from
deploy/scripts/gen-webhook-certs.sh, so the plain-script bootstrap is exercised too.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from deploy_support import REPO, free_port
from inject_support import EXAMPLE_APP, TOKEN, FakeKubeApi, Webhook, fake_api_stages, gen_certs, sidecar_of

FIXTURES = REPO / "tests" / "fixtures" / "inject"
REVIEWS = FIXTURES / "reviews"
GOLDEN = FIXTURES / "golden"
#: The oldest Kubernetes the native-sidecar mode supports; the schemas of this version.
K8S_VERSION = "1.29.0"
UPDATE = os.environ.get("RMQ_UPDATE_GOLDEN") == "1"


def load_review(name: str) -> dict:
    return json.loads((REVIEWS / f"{name}.json").read_text())


def patched(review: dict, response: dict) -> dict:
    pod = review["request"]["object"]
    if "patch" not in response:
        return copy.deepcopy(pod)
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(pod, ops)


def validate(obj: dict, what: str):
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(f"{what} is not a valid {obj.get('kind')} for Kubernetes {K8S_VERSION}: "
                             f"{e.message} at {list(e.path)}") from None


def check_golden(name: str, actual: dict):
    path = GOLDEN / f"{name}.json"
    text = json.dumps(actual, indent=2, sort_keys=False) + "\n"
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"no golden file {path}; run with RMQ_UPDATE_GOLDEN=1 and review it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert json.loads(path.read_text()) == actual, (
        f"{name}: the injected pod differs from {path.relative_to(REPO)}; if the change is intended, "
        f"rerun with RMQ_UPDATE_GOLDEN=1 and review the diff")


# === fixtures ===


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return gen_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def kube_api(certs):
    api = FakeKubeApi(certs)
    yield api
    api.close()


@pytest.fixture(scope="module")
def admit_hook(injector_bin, tmp_path_factory, certs, kube_api):
    workdir = tmp_path_factory.mktemp("admit")
    hook = Webhook(injector_bin, workdir, certs, fake_api_stages(kube_api, workdir), "admit")
    yield hook
    hook.stop()


@pytest.fixture(scope="module")
def deny_hook(injector_bin, tmp_path_factory, certs, kube_api):
    workdir = tmp_path_factory.mktemp("deny")
    hook = Webhook(injector_bin, workdir, certs, fake_api_stages(kube_api, workdir), "deny")
    yield hook
    hook.stop()


# === the patch on real-world pods ===

INJECTED_CASES = ["multi-container", "statefulset-no-env", "bare-pod-existing-namesrv", "stage-new"]


@pytest.mark.parametrize("case", INJECTED_CASES)
def test_injection_patch_applies_validates_and_matches_golden(admit_hook, case):
    review = load_review(case)
    response = admit_hook.review(review)
    assert response["allowed"] is True
    pod = patched(review, response)
    validate(pod, f"the injected {case} pod")
    check_golden(case, {"warnings": response.get("warnings", []), "pod": pod})

    original = review["request"]["object"]
    sidecar = sidecar_of(pod)
    assert sidecar is not None, "no rmq-sidecar container"
    # Native sidecar: first init container, restartPolicy Always, probes on the health port.
    assert pod["spec"]["initContainers"][0] is sidecar and sidecar["restartPolicy"] == "Always"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert sidecar[probe]["httpGet"]["port"] == "rmq-health", probe
    assert {"name": "rmq-health", "containerPort": 9879, "protocol": "TCP"} in sidecar["ports"]
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # Every app container now names the sidecar as its name server; the rest is untouched.
    for before, after in zip(original["spec"]["containers"], pod["spec"]["containers"]):
        env = {e["name"]: e for e in after["env"]}
        assert env["NAMESRV_ADDR"] == {"name": "NAMESRV_ADDR", "value": "127.0.0.1:9876"}
        assert "-Drocketmq.namesrv.addr=127.0.0.1:9876" in env["JAVA_TOOL_OPTIONS"]["value"]
        others = [e for e in before.get("env", []) if e["name"] not in ("NAMESRV_ADDR", "JAVA_TOOL_OPTIONS")]
        assert [e for e in after["env"] if e["name"] not in ("NAMESRV_ADDR", "JAVA_TOOL_OPTIONS")] == others
        assert {k: v for k, v in after.items() if k != "env"} == {k: v for k, v in before.items() if k != "env"}
    # Existing volumes and init containers stay, in order, after ours.
    assert pod["spec"]["volumes"][: len(original["spec"].get("volumes", []))] == original["spec"].get("volumes", [])
    assert pod["spec"]["initContainers"][1:] == original["spec"].get("initContainers", [])
    assert pod["metadata"]["labels"]["rocketmq-sidecar/injected"] == "true"


def test_new_pods_start_at_their_workloads_stage(admit_hook, kube_api):
    """deployment.orders-worker is at stage "new" in the shop namespace's ConfigMap."""
    kube_api.requests.clear()
    pod = patched(load_review("stage-new"), admit_hook.review(load_review("stage-new")))
    assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "new"
    status = json.loads(pod["metadata"]["annotations"]["rocketmq-sidecar/status"])
    assert status["workload"] == "deployment.orders-worker" and status["stage"] == "new"
    assert kube_api.requests == [
        ("/api/v1/namespaces/shop/configmaps/rocketmq-sidecar-stages", f"Bearer {TOKEN}")]
    # orders-api is at stage "old": the annotation says so explicitly.
    review = load_review("multi-container")
    pod = patched(review, admit_hook.review(review))
    assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "old"
    # A CronJob's pod (owned by a Job named after the scheduled minute) gets the CronJob's stage.
    review = load_review("cronjob-pod")
    pod = patched(review, admit_hook.review(review))
    validate(pod, "the injected CronJob pod")
    assert pod["metadata"]["annotations"]["rocketmq-sidecar/route"] == "new"
    # A StatefulSet without a key: no route annotation, the sidecar's default target.
    review = load_review("statefulset-no-env")
    pod = patched(review, admit_hook.review(review))
    assert "rocketmq-sidecar/route" not in pod["metadata"].get("annotations", {})


@pytest.mark.parametrize("case", INJECTED_CASES)
def test_second_invocation_changes_nothing(admit_hook, case):
    review = load_review(case)
    pod = patched(review, admit_hook.review(review))
    again = copy.deepcopy(review)
    again["request"]["object"] = pod
    response = admit_hook.review(again)
    assert response["allowed"] is True
    assert "patch" not in response, f"re-injection patched: {base64.b64decode(response['patch'])}"


def test_reinvocation_completes_a_container_added_by_another_webhook(admit_hook):
    review = load_review("multi-container")
    pod = patched(review, admit_hook.review(review))
    pod["spec"]["containers"].append({"name": "added-later", "image": "example/other:1", "resources": {}})
    again = copy.deepcopy(review)
    again["request"]["object"] = pod
    response = admit_hook.review(again)
    ops = json.loads(base64.b64decode(response["patch"]))
    assert all(op["path"].startswith("/spec/containers/2/env") for op in ops), ops
    done = jsonpatch.apply_patch(pod, ops)
    env = {e["name"]: e.get("value") for e in done["spec"]["containers"][2]["env"]}
    assert env["NAMESRV_ADDR"] == "127.0.0.1:9876"
    assert [c["name"] for c in done["spec"]["initContainers"]].count("rmq-sidecar") == 1


def test_existing_name_server_settings_are_replaced_with_a_warning(admit_hook):
    review = load_review("bare-pod-existing-namesrv")
    response = admit_hook.review(review)
    pod = patched(review, response)
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["NAMESRV_ADDR"] == "127.0.0.1:9876"
    assert env["JAVA_TOOL_OPTIONS"] == "-Xmx512m -Drocketmq.namesrv.addr=127.0.0.1:9876"
    assert any("NAMESRV_ADDR was 'rocketmq-namesrv.rocketmq.svc:9876'" in w for w in response["warnings"])


def test_host_network_pods_are_skipped_and_labelled(admit_hook, deny_hook):
    for hook in (admit_hook, deny_hook):  # not a policy matter: such pods never get a sidecar
        review = load_review("host-network")
        response = hook.review(review)
        assert response["allowed"] is True
        pod = patched(review, response)
        assert sidecar_of(pod) is None
        assert pod["metadata"]["labels"]["rocketmq-sidecar/inject-skipped"] == "host-network"
        validate(pod, "the skipped host-network pod")


def test_opted_out_pods_are_left_alone(admit_hook):
    response = admit_hook.review(load_review("opt-out"))
    assert response["allowed"] is True and "patch" not in response


@pytest.mark.parametrize("case,reason,message", [
    ("port-conflict", "port-conflict", "declares port 9876"),
    ("stage-lookup-fails", "stage-lookup-failed", "HTTP 500: etcdserver: request timed out"),
])
def test_uninjectable_pods_follow_the_policy(admit_hook, deny_hook, case, reason, message):
    review = load_review(case)
    admitted = admit_hook.review(review)
    assert admitted["allowed"] is True
    pod = patched(review, admitted)
    assert sidecar_of(pod) is None
    assert pod["metadata"]["labels"]["rocketmq-sidecar/inject-skipped"] == reason
    assert message in pod["metadata"]["annotations"]["rocketmq-sidecar/inject-skipped-detail"]
    assert any(message in w for w in admitted["warnings"]), admitted
    validate(pod, f"the admitted {case} pod")

    denied = deny_hook.review(review)
    assert denied["allowed"] is False and "patch" not in denied
    assert denied["status"]["code"] == 403 and message in denied["status"]["message"], denied


def test_post_start_mode_puts_the_sidecar_first_with_a_wait_ready_hook(injector_bin, tmp_path, certs, kube_api):
    hook = Webhook(injector_bin, tmp_path, certs, fake_api_stages(kube_api, tmp_path), "admit", sidecar_extra='mode = "post-start"\n')
    try:
        review = load_review("multi-container")
        pod = patched(review, hook.review(review))
        validate(pod, "the post-start injected pod")
        first = pod["spec"]["containers"][0]
        assert first["name"] == "rmq-sidecar" and "restartPolicy" not in first
        assert first["lifecycle"]["postStart"]["exec"]["command"][:2] == ["/rmq-sidecar", "wait-ready"]
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["migrate-schema"]
        assert pod["spec"]["containers"][1]["env"][-2]["value"] == "127.0.0.1:9876"
    finally:
        hook.stop()


# === malformed input: a clear answer, never a crash ===


def test_malformed_reviews_get_clear_answers_and_the_webhook_carries_on(admit_hook, deny_hook):
    good = load_review("statefulset-no-env")
    not_a_pod = copy.deepcopy(good)
    not_a_pod["request"]["object"] = "definitely not a pod"
    no_containers = copy.deepcopy(good)
    no_containers["request"]["object"]["spec"]["containers"] = []
    cases = [
        (b"{not json", 400, "not JSON"),
        (b"", 400, "not JSON"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                     "request": good["request"]}).encode(), 400, "admission.k8s.io/v1"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), 400, "no request"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "request": {"kind": {"kind": "Pod"}}}).encode(), 400, "uid"),
        (b"[1,2,3]", 400, "admission.k8s.io/v1"),
    ]
    for body, status, message in cases:
        got, answer = admit_hook.post(body)
        assert got == status and message in json.dumps(answer), f"{body[:60]!r}: {got} {answer}"
    # A review with a uid always gets a review back; the object decides allow/deny per policy.
    for review, reason in ((not_a_pod, None), (no_containers, "invalid-pod")):
        admitted = admit_hook.review(review)
        assert admitted["allowed"] is True and any("admitted without" in w for w in admitted["warnings"])
        if reason:
            assert patched(review, admitted)["metadata"]["labels"]["rocketmq-sidecar/inject-skipped"] == reason
        else:
            assert "patch" not in admitted
        denied = deny_hook.review(review)
        assert denied["allowed"] is False and "cannot inject" in denied["status"]["message"]
    # Too large, wrong method, wrong path.
    got, answer = admit_hook.post(b" " * (9 << 20))
    assert got == 413, answer
    assert admit_hook.post(b"", method="GET")[0] == 405
    assert admit_hook.post(b"{}", path="/mutate")[0] == 404
    # Other review kinds and operations pass untouched.
    update = copy.deepcopy(good)
    update["request"]["operation"] = "UPDATE"
    assert "patch" not in admit_hook.review(update)
    # Still serving, and every refusal was counted.
    assert admit_hook.review(good)["allowed"] is True
    status, metrics = admit_hook.health("/metrics")
    assert status == 200
    assert 'rmq_sidecar_injector_malformed_reviews_total{reason="not_json"} 2' in metrics
    assert 'rmq_sidecar_injector_malformed_reviews_total{reason="too_large"} 1' in metrics
    assert admit_hook.proc.poll() is None


def test_plain_http_to_the_tls_port_does_not_disturb_it(admit_hook):
    with socket.create_connection(("127.0.0.1", admit_hook.https_port), timeout=5) as s:
        s.sendall(b"POST /inject HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            s.recv(100)
        except (ConnectionResetError, TimeoutError, socket.timeout):
            pass
    assert admit_hook.review(load_review("opt-out"))["allowed"] is True


# === certificate rotation ===


def test_certificate_rotation_is_picked_up_and_a_broken_one_is_refused(injector_bin, tmp_path, kube_api):
    first = gen_certs(tmp_path / "first")
    second = gen_certs(tmp_path / "second")  # a different CA
    live = tmp_path / "live"
    shutil.copytree(first, live)
    hook = Webhook(injector_bin, tmp_path / "hook", live, fake_api_stages(kube_api, tmp_path / "hook"), "admit")
    try:
        review = load_review("opt-out")
        assert hook.post(json.dumps(review).encode(), cafile=first / "ca.crt")[0] == 200
        # Rotate the way a Secret volume does: new contents behind the same paths.
        for name in ("tls.crt", "tls.key"):
            tmp = live / f".{name}.new"
            shutil.copy(second / name, tmp)
            os.replace(tmp, live / name)
        deadline = time.time() + 10
        while True:
            try:
                if hook.post(json.dumps(review).encode(), cafile=second / "ca.crt")[0] == 200:
                    break
            except ssl.SSLError:
                pass
            assert time.time() < deadline, "the rotated certificate was not served within 10 s"
            time.sleep(0.3)
        # A broken certificate keeps the one in use and is counted.
        (live / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        deadline = time.time() + 10
        while 'rmq_sidecar_injector_cert_reloads_total{result="error"}' not in hook.health("/metrics")[1]:
            assert time.time() < deadline, "the broken certificate was not noticed within 10 s"
            time.sleep(0.3)
        assert hook.post(json.dumps(review).encode(), cafile=second / "ca.crt")[0] == 200
        assert hook.health("/ready")[0] == 200
    finally:
        hook.stop()


# === offline: rmq-injector inject -f ===


def run_inject(binary: Path, config: Path, manifest: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), "inject", "-f", "-", "--config", str(config), *args],
                          input=manifest, capture_output=True, text=True, timeout=30)


def test_offline_inject_of_the_example_app(injector_bin, admit_hook):
    manifest = EXAMPLE_APP.read_text()
    r = run_inject(injector_bin, admit_hook.config, manifest, "--route", "new")
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    before = [d for d in yaml.safe_load_all(manifest) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        (d["kind"], d["metadata"]["name"]) for d in before]
    injected = 0
    for doc, orig in zip(docs, before):
        validate(doc, f"inject output {doc['kind']}/{doc['metadata']['name']}")
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            template = doc["spec"]["template"]
            assert sidecar_of(template) is not None
            assert template["metadata"]["annotations"]["rocketmq-sidecar/route"] == "new"
            injected += 1
        else:
            assert doc == orig, f"{doc['kind']} was changed"
    assert injected >= 1, "the example has no workload to inject"
    assert "injected" in r.stderr
    # Idempotent, and --route changes only the route annotation.
    again = run_inject(injector_bin, admit_hook.config, r.stdout, "--route", "new")
    assert again.returncode == 0 and again.stdout == r.stdout
    back = run_inject(injector_bin, admit_hook.config, r.stdout, "--route", "old")
    assert back.returncode == 0, back.stderr
    changed = [(a, b) for a, b in zip(yaml.safe_load_all(r.stdout), yaml.safe_load_all(back.stdout)) if a != b]
    assert len(changed) == injected, "--route old did not change every injected template"
    for a, b in changed:
        assert b["spec"]["template"]["metadata"]["annotations"]["rocketmq-sidecar/route"] == "old"
        a["spec"]["template"]["metadata"]["annotations"]["rocketmq-sidecar/route"] = "old"
        assert a == b, "--route changed more than the route annotation"
    # One role at a time: the per-role value, in the sidecar's own spelling (either order given).
    split = run_inject(injector_bin, admit_hook.config, r.stdout, "--route", "consumer=new,producer=old")
    assert split.returncode == 0, split.stderr
    for doc in yaml.safe_load_all(split.stdout):
        if doc and doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            route = doc["spec"]["template"]["metadata"]["annotations"]["rocketmq-sidecar/route"]
            assert route == "producer=old,consumer=new", route
    bad = run_inject(injector_bin, admit_hook.config, r.stdout, "--route", "consumer=new")
    assert bad.returncode == 64 and "does not name both roles" in bad.stderr, bad.stderr


def test_offline_inject_refuses_clearly(injector_bin, admit_hook, deny_hook, tmp_path):
    r = run_inject(injector_bin, admit_hook.config, "kind: Deployment\n  bad: [indent\n")
    assert r.returncode == 1 and "document 1: not valid YAML" in r.stderr, r.stderr
    conflict = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 9879}]}]}})
    r = run_inject(injector_bin, deny_hook.config, conflict)
    assert r.returncode == 1 and "Pod/p" in r.stderr and "port 9879" in r.stderr, r.stderr
    r = run_inject(injector_bin, admit_hook.config, conflict)
    assert r.returncode == 0 and "rocketmq-sidecar/inject-skipped: port-conflict" in r.stdout, r.stdout
    missing = tmp_path / "injector.toml"
    missing.write_text("[sidecar]\nimage = \"x\"\n")
    r = run_inject(injector_bin, missing, conflict)
    assert r.returncode == 64 and "sidecar.old_namesrv" in r.stderr, r.stderr


def test_the_shipped_injector_config_is_accepted(injector_bin):
    """deploy/kubernetes/base/injector.toml names only keys the binary knows, with valid values."""
    config = REPO / "deploy" / "kubernetes" / "base" / "injector.toml"
    r = subprocess.run([str(injector_bin), "inject", "-f", str(EXAMPLE_APP), "--config", str(config)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    workloads = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Deployment"]
    assert workloads and all(sidecar_of(d["spec"]["template"]) for d in workloads), r.stdout


def test_wait_ready_waits_for_the_sidecars_readiness(sidecar_bin, sidecar):
    """The post-start hook: exits 0 once the URL answers 200, 1 with the last answer on timeout."""
    base = f"http://127.0.0.1:{sidecar.health_port}"
    ok = subprocess.run([str(sidecar_bin), "wait-ready", "--url", f"{base}/live", "--timeout-seconds", "5"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    # The test sidecar's name servers do not exist, so /ready stays 503.
    late = subprocess.run([str(sidecar_bin), "wait-ready", "--url", f"{base}/ready", "--timeout-seconds", "1"],
                          capture_output=True, text=True, timeout=30)
    assert late.returncode == 1 and "not ready after 1s (last: HTTP 503)" in late.stderr, late.stderr
    gone = subprocess.run([str(sidecar_bin), "wait-ready", "--url", f"http://127.0.0.1:{free_port()}/ready",
                           "--timeout-seconds", "0"], capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "refused" in gone.stderr.lower(), gone.stderr


def test_the_injected_container_is_a_working_sidecar(sidecar_bin, tmp_path):
    """The env and mounts the injector writes, run as the kubelet would run them: the
    configuration is valid, the credentials come from the Secret's files, and the route
    annotation the stage put on the pod is followed from the downward API file."""
    pod = json.loads((GOLDEN / "stage-new.json").read_text())["pod"]
    sidecar = sidecar_of(pod)
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in sidecar["volumeMounts"]}
    for directory in mounts.values():
        directory.mkdir()
    creds = mounts["/var/run/secrets/rocketmq-sidecar/new"]
    (creds / "access-key").write_text("AKIDinjectedPodTest")
    (creds / "secret-key").write_text("injected-pod-secret-never-shown")
    annotations = pod["metadata"]["annotations"]
    # The kubelet's format: key="Go-quoted value", one per line, sorted.
    quoted = {k: v.replace("\\", "\\\\").replace('"', '\\"') for k, v in annotations.items()}
    (mounts["/etc/rmq-sidecar/podinfo"] / "annotations").write_text(
        "".join(f'{k}="{v}"\n' for k, v in sorted(quoted.items())))

    def local(value: str) -> str:
        for mount_path, directory in mounts.items():
            if value.startswith(mount_path + "/") or value == mount_path:
                return str(directory) + value[len(mount_path):]
        return value

    env = {k: v for k, v in os.environ.items() if not k.startswith("RMQ_SIDECAR_")}
    env.update({e["name"]: local(e["value"]) for e in sidecar["env"]})
    checked = subprocess.run([str(sidecar_bin), "check"], env=env, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "credentials of cluster 'new'" in checked.stdout and "file" in checked.stdout, checked.stdout
    assert "injected-pod-secret-never-shown" not in checked.stdout + checked.stderr

    # Run it, on free loopback ports instead of the pod's fixed ones.
    health = free_port()
    env.update({"RMQ_SIDECAR_LISTEN": f"127.0.0.1:{free_port()}", "RMQ_SIDECAR_ADMIN": f"127.0.0.1:{free_port()}",
                "RMQ_SIDECAR_METRICS": f"127.0.0.1:{health}", "RMQ_SIDECAR_BROKER_BIND": "127.62.0.0/16",
                "RMQ_SIDECAR_OLD_NAMESRV": "127.0.0.1:1", "RMQ_SIDECAR_NEW_NAMESRV": "127.0.0.1:2"})
    proc = subprocess.Popen([str(sidecar_bin)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 20
        route = None
        while time.time() < deadline and route is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", health, timeout=2)
                c.request("GET", "/route")
                route = json.loads(c.getresponse().read())
            except OSError:
                time.sleep(0.1)
        assert route is not None, "the injected sidecar never served GET /route"
        assert route["target"] == "new" and route["controlled_by"] == "annotation", route
        assert (mounts["/var/run/rmq-sidecar"] / "route.json").is_file(), "state not kept in the emptyDir"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_sigterm_keeps_answering_briefly_then_exits_cleanly(injector_bin, tmp_path, certs, kube_api):
    hook = Webhook(injector_bin, tmp_path, certs, fake_api_stages(kube_api, tmp_path), "admit")
    started = time.time()
    hook.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert hook.review(load_review("opt-out"))["allowed"] is True, "no answer right after SIGTERM"
    assert hook.proc.wait(timeout=15) == 0, hook.log.read_text()
    assert time.time() - started >= 4, "exited before the endpoints could drop it"
    assert "SIGTERM: still answering" in hook.log.read_text()
