"""deploy/kubernetes, deploy/Dockerfile and deploy/scripts/gen-webhook-certs.sh.

* Every YAML document under deploy/kubernetes, and the output of `kustomize build` of the base
  and of each overlay, validates against the Kubernetes OpenAPI schemas of K8S_VERSION
  (kubernetes-validate, strict: unknown fields are errors); custom resources (PodMonitor,
  ServiceMonitor, cert-manager Issuer/Certificate) validate against their CRDs' openAPIV3Schema
  (tests/deploy/schemas, see SOURCE.md) with jsonschema, unknown fields rejected likewise.
* The manifests agree with the injector's contract and with each other: injector.toml has
  exactly the contract's keys, the Deployment runs `rmq-injector webhook` with that file, mounts the
  TLS Secret where cert_file/key_file point, probes the health port; the webhook's selectors
  select what they should (evaluated on sample namespaces and pods); RBAC grants exactly the
  contract's verbs; the examples are selected by the webhook and the PodMonitor's job name
  matches the alert rules.
* gen-webhook-certs.sh makes a CA and a serving certificate that `openssl verify` and a real
  TLS handshake accept, for the Service DNS names and every --san, without kubectl; --apply
  drives kubectl (a fake one here) to create the Secret and patch the caBundle.
* The Dockerfile's runtime stage is distroless and non-root, and runs the binary the builder
  stage builds.

kustomize is required (the test FAILS without it): scripts/install-kustomize.sh installs it.
Run: python3 -m pytest tests/deploy/test_manifests.py -v
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_support import DEPLOY, REPO, RULES

#: Kubernetes version the manifests are validated against: the oldest the injector supports
#: (native sidecars, K8s >= 1.29), so a field that only newer API servers know is an error.
K8S_VERSION = "1.29.0"

K8S = DEPLOY / "kubernetes"
KUSTOMIZATIONS = ["base", "overlays/cert-manager", "overlays/script-certs"]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
#: (apiVersion, kind) of each custom resource -> its CRD schema file in tests/deploy/schemas.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_v1_podmonitor.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("cert-manager.io/v1", "Issuer"): "cert-manager.io_v1_issuer.json",
    ("cert-manager.io/v1", "Certificate"): "cert-manager.io_v1_certificate.json",
}
CERT_SCRIPT = DEPLOY / "scripts" / "gen-webhook-certs.sh"
DOCKERFILE = DEPLOY / "Dockerfile"

NAMESPACE = "rocketmq-sidecar"
INJECTOR_CONFIG_PATH = "/etc/rmq-sidecar-injector/injector.toml"
TLS_DIR = "/etc/rmq-sidecar-injector/tls"
STAGES_CONFIGMAP = "rocketmq-sidecar-stages"

#: Every key of injector.toml, from the contract (every key optional; the file lists all).
#: Every key the binary knows (crates/rmq-injector/src/config.rs); the shipped injector.toml lists them all.
CONTRACT_KEYS = {
    "webhook": {"listen", "health_listen", "max_connections", "cert_file", "key_file", "uninjectable"},
    "stages": {"configmap", "kube_api", "ca_file", "token_file", "timeout_ms"},
    "sidecar": {"image", "image_pull_policy", "mode", "old_namesrv", "new_namesrv", "old_namespace", "new_namespace", "default_target",
                "old_credentials_secret", "new_credentials_secret", "java_tool_options", "cpu_request",
                "memory_request", "cpu_limit", "memory_limit", "log_format", "drain_seconds"},
}


# --------------------------------------------------------------------------- loading


def yaml_files() -> list[Path]:
    files = sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    assert files, f"no YAML files under {K8S}"
    return files


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def is_kustomization(doc: dict) -> bool:
    return doc.get("kind") == "Kustomization" and str(doc.get("apiVersion", "")).startswith(
        "kustomize.config.k8s.io/")


def name_of(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


@functools.cache
def kustomize_bin() -> str:
    found = shutil.which("kustomize")
    if found:
        return found
    gopath = ""
    if shutil.which("go"):
        gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip()
    for candidate in [Path(gopath) / "bin" / "kustomize" if gopath else None,
                      Path.home() / "go" / "bin" / "kustomize"]:
        if candidate and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("kustomize is not on PATH nor in $(go env GOPATH)/bin: run scripts/install-kustomize.sh")


@functools.cache
def kustomize_build(rel: str) -> str:
    r = subprocess.run([kustomize_bin(), "build", str(K8S / rel)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"kustomize build deploy/kubernetes/{rel} failed:\n{r.stderr}"
    return r.stdout


def built(rel: str) -> list[dict]:
    docs = load_docs(kustomize_build(rel))
    assert docs, f"kustomize build deploy/kubernetes/{rel} produced nothing"
    return docs


def file_docs(rel: str) -> list[dict]:
    return load_docs((K8S / rel).read_text())


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {[name_of(d) for d in found]}"
    return found[0]


# --------------------------------------------------------------------------- schema validation


def strict_crd_schema(schema: dict) -> dict:
    """The CRD schema with unknown fields rejected, as kubectl's strict field validation does:
    every object schema that lists properties and does not allow others gets
    additionalProperties: false (x-kubernetes-preserve-unknown-fields keeps them allowed)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


@functools.cache
def crd_validator(file: str) -> jsonschema.protocols.Validator:
    schema = strict_crd_schema(json.loads((SCHEMAS / file).read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(doc: dict) -> list[str]:
    """Why `doc` is not a valid object (empty list: valid). Never silently passes an object
    that has no schema."""
    for field in ("apiVersion", "kind"):
        if not doc.get(field):
            return [f"no {field}"]
    if not (doc.get("metadata") or {}).get("name"):
        return ["no metadata.name"]
    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd:
        return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in crd_validator(crd).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message} (Kubernetes {e.version})"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"no schema: {e.message} (a custom resource needs an entry in CRD_SCHEMAS)"]
    return []


def assert_valid(docs: list[dict], where: str) -> None:
    problems = [f"{where}: {name_of(d)}: {err}" for d in docs for err in schema_errors(d)]
    assert not problems, "invalid Kubernetes objects:\n" + "\n".join(problems)


def test_validators_reject_unknown_fields():
    """The validators are live: a misspelt field fails in a core object and in a custom resource."""
    deployment = copy.deepcopy(one(file_docs("base/deployment.yaml"), "Deployment"))
    assert schema_errors(deployment) == []
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("readinesProbe" in e for e in schema_errors(deployment)), schema_errors(deployment)

    podmonitor = copy.deepcopy(one(file_docs("examples/podmonitor.yaml"), "PodMonitor"))
    assert schema_errors(podmonitor) == []
    podmonitor["spec"]["podMetricEndpoints"] = podmonitor["spec"].pop("podMetricsEndpoints")
    assert any("podMetricEndpoints" in e for e in schema_errors(podmonitor)), schema_errors(podmonitor)

    certificate = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "x"},
                   "spec": {"secretName": "x", "issuerRef": {"name": "i"}, "duration": 5}}
    assert any("duration" in e for e in schema_errors(certificate)), schema_errors(certificate)


def test_crd_schemas_are_documented():
    """Every stored CRD schema is used and named in SOURCE.md (where it came from, its license)."""
    source = (SCHEMAS / "SOURCE.md").read_text()
    stored = {p.name for p in SCHEMAS.glob("*.json")}
    assert stored == set(CRD_SCHEMAS.values()), f"schemas stored {stored} != used {set(CRD_SCHEMAS.values())}"
    for name in stored:
        assert f"`{name}`" in source, f"{name} is not described in tests/deploy/schemas/SOURCE.md"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_yaml_file_validates(path: Path):
    docs = load_docs(path.read_text())
    assert docs, f"{path} has no YAML document"
    if path.name == "kustomization.yaml":
        assert len(docs) == 1 and is_kustomization(docs[0]), f"{path} is not a Kustomization"
        return
    assert not any(is_kustomization(d) for d in docs), f"{path}: a Kustomization must be named kustomization.yaml"
    assert_valid(docs, str(path.relative_to(REPO)))


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_kustomize_build_validates(rel: str):
    assert_valid(built(rel), f"kustomize build deploy/kubernetes/{rel}")


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_kustomization_uses_every_file(rel: str):
    """No manifest in a kustomization directory is left out of its build by mistake."""
    kust = yaml.safe_load((K8S / rel / "kustomization.yaml").read_text())
    used = set(kust.get("resources", []))
    used |= {f for g in kust.get("configMapGenerator", []) for f in g.get("files", [])}
    present = {p.name for p in (K8S / rel).iterdir() if p.is_file() and p.name not in ("kustomization.yaml",)}
    assert present - used == set(), f"deploy/kubernetes/{rel}: files not referenced by kustomization.yaml"


# --------------------------------------------------------------------------- label selectors


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def ns_labels(name: str, **labels: str) -> dict[str, str]:
    # The API server sets kubernetes.io/metadata.name on every namespace.
    return {"kubernetes.io/metadata.name": name, **labels}


def test_selector_evaluator():
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]}]}
    assert selects(sel, {"a": "1"}) and selects(sel, {"a": "1", "b": "y"})
    assert not selects(sel, {"a": "1", "b": "x"}) and not selects(sel, {"a": "2"})


# --------------------------------------------------------------------------- the injector (base)


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return built("base")


@pytest.fixture(scope="module")
def injector_toml() -> dict:
    return tomllib.loads((K8S / "base" / "injector.toml").read_text())


def injector_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"the injector pod should have one container, has {[c['name'] for c in containers]}"
    return containers[0]


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"port {port!r} is not a named port of container {container['name']}: {named}"
    return named[port]


def test_every_namespaced_object_is_in_the_injector_namespace(base):
    namespaced = [d for d in base if d["kind"] not in
                  ("Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration")]
    wrong = [name_of(d) for d in namespaced if d["metadata"].get("namespace") != NAMESPACE]
    assert not wrong, f"not in namespace {NAMESPACE}: {wrong}"
    assert one(base, "Namespace")["metadata"]["name"] == NAMESPACE


def test_injector_toml_has_the_contract_keys(injector_toml):
    got = {section: set(values) for section, values in injector_toml.items()}
    assert got == CONTRACT_KEYS, f"injector.toml keys differ from the contract: got {got}"
    sc = injector_toml["sidecar"]
    assert sc["old_namesrv"] and sc["new_namesrv"], "old_namesrv/new_namesrv are required"
    assert injector_toml["stages"]["configmap"] == STAGES_CONFIGMAP
    assert injector_toml["webhook"]["uninjectable"] in ("admit", "deny")
    assert sc["mode"] in ("native", "post-start") and sc["default_target"] in ("old", "new")


def test_injector_toml_marks_the_values_to_edit():
    lines = (K8S / "base" / "injector.toml").read_text().splitlines()
    for key in ("old_namesrv", "new_namesrv"):
        [i] = [i for i, line in enumerate(lines) if line.startswith(f"{key} =")]
        assert "EDIT" in lines[i] or "EDIT" in lines[i - 1], f"{key} is not marked EDIT in injector.toml"


def test_injector_deployment(base, injector_toml):
    dep = one(base, "Deployment", "rmq-sidecar-injector")
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    c = injector_container(dep)
    assert spec["replicas"] == 2
    assert c.get("args") == ["webhook", "--config", INJECTOR_CONFIG_PATH] and "command" not in c, \
        f"the image's ENTRYPOINT is the binary; args must be the subcommand: {c.get('args')}"
    assert c["image"].rsplit(":", 1)[0].endswith("/rmq-injector"), \
        f"the injector runs the injector image (deploy/Dockerfile --target injector), not {c['image']}"
    assert c["image"] != injector_toml["sidecar"]["image"], "the injector image is not the sidecar image"

    # injector.toml comes from the generated ConfigMap.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cfg_mount = mounts[INJECTOR_CONFIG_PATH]
    cfg_map = one(base, "ConfigMap", volumes[cfg_mount["name"]]["configMap"]["name"])
    assert tomllib.loads(cfg_map["data"][cfg_mount["subPath"]]) == injector_toml

    # The TLS Secret is mounted (whole volume: rotations arrive) where cert_file/key_file point.
    tls = mounts[TLS_DIR]
    assert "subPath" not in tls and tls.get("readOnly") is True
    assert volumes[tls["name"]]["secret"]["secretName"] == "rmq-sidecar-injector-tls"
    for key, file in (("cert_file", "tls.crt"), ("key_file", "tls.key")):
        assert injector_toml["webhook"][key] == f"{TLS_DIR}/{file}", f"webhook.{key}"

    # Ports and probes follow webhook.listen / webhook.health_listen.
    assert port_number(c, "https") == int(injector_toml["webhook"]["listen"].rsplit(":", 1)[1]) == 8443
    health = int(injector_toml["webhook"]["health_listen"].rsplit(":", 1)[1])
    assert health == 9880
    for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and port_number(c, get["port"]) == health, f"{probe}: {get}"

    assert c["resources"]["requests"].get("cpu") and c["resources"]["requests"].get("memory")
    assert c["resources"]["limits"].get("memory"), "a memory limit is expected"
    assert pod.get("topologySpreadConstraints") or (pod.get("affinity") or {}).get("podAntiAffinity"), \
        "replicas should be spread over nodes"
    assert pod["serviceAccountName"] == "rmq-sidecar-injector"


def test_injector_security_context_is_restricted(base):
    dep = one(base, "Deployment", "rmq-sidecar-injector")
    pod = dep["spec"]["template"]["spec"]
    c = injector_container(dep)
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})

    def effective(key):
        return csc.get(key, psc.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == 65532
    assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault"
    assert csc.get("readOnlyRootFilesystem") is True
    assert csc.get("allowPrivilegeEscalation") is False
    assert csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc["capabilities"].get("add")
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not csc.get("privileged")


def test_service_and_pdb_select_the_injector(base):
    dep = one(base, "Deployment", "rmq-sidecar-injector")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    c = injector_container(dep)
    svc = one(base, "Service", "rmq-sidecar-injector")
    assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels)
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["https"]["port"] == 443 and port_number(c, ports["https"]["targetPort"]) == 8443
    assert ports["metrics"]["port"] == 9880 and port_number(c, ports["metrics"]["targetPort"]) == 9880

    pdb = one(base, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], pod_labels)
    assert 1 <= pdb["spec"]["minAvailable"] < dep["spec"]["replicas"], "the PDB must allow one disruption"


def test_injector_rbac(base):
    role = one(base, "ClusterRole", "rocketmq-sidecar-injector")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": [STAGES_CONFIGMAP], "verbs": ["get"]}], role["rules"]
    binding = one(base, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "rocketmq-sidecar-injector"}
    sa = one(base, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]


def test_webhook_configuration(base):
    mwc = one(base, "MutatingWebhookConfiguration")
    [hook] = mwc["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] in ("Fail", "Ignore")
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["timeoutSeconds"] == 10
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    svc = one(base, "Service", "rmq-sidecar-injector")
    https = [p for p in svc["spec"]["ports"] if p["name"] == "https"][0]
    assert hook["clientConfig"] == {"service": {"name": "rmq-sidecar-injector", "namespace": NAMESPACE,
                                                "path": "/inject", "port": https["port"]}}, \
        "the webhook must call the Service's https port at /inject, with no caBundle in the base"


def test_webhook_failure_policy_is_explained():
    text = (K8S / "base" / "mutatingwebhookconfiguration.yaml").read_text()
    comment = " ".join(line.strip().lstrip("#") for line in text.splitlines() if line.strip().startswith("#"))
    for word in ("Fail", "Ignore", "uninjectable"):
        assert word in comment, f"the failurePolicy comment should mention {word}"


@pytest.mark.parametrize("labels,injected", [
    (ns_labels("shop", **{"rocketmq-sidecar/inject": "enabled"}), True),
    (ns_labels("shop"), False),
    (ns_labels("shop", **{"rocketmq-sidecar/inject": "disabled"}), False),
    (ns_labels("kube-system", **{"rocketmq-sidecar/inject": "enabled"}), False),
    (ns_labels(NAMESPACE, **{"rocketmq-sidecar/inject": "enabled"}), False),
], ids=["opted-in", "unlabelled", "disabled", "kube-system", "injector-namespace"])
def test_webhook_namespace_selector(base, labels, injected):
    [hook] = one(base, "MutatingWebhookConfiguration")["webhooks"]
    assert selects(hook["namespaceSelector"], labels) is injected, f"namespace labels {labels}"


@pytest.mark.parametrize("labels,injected", [
    ({}, True), ({"app": "x"}, True), ({"rocketmq-sidecar/inject": "disabled"}, False),
], ids=["no-labels", "other-labels", "opted-out"])
def test_webhook_object_selector(base, labels, injected):
    [hook] = one(base, "MutatingWebhookConfiguration")["webhooks"]
    assert selects(hook["objectSelector"], labels) is injected, f"pod labels {labels}"


def test_injector_pods_are_never_injected(base):
    [hook] = one(base, "MutatingWebhookConfiguration")["webhooks"]
    pod_labels = one(base, "Deployment", "rmq-sidecar-injector")["spec"]["template"]["metadata"]["labels"]
    assert not selects(hook["objectSelector"], pod_labels)


# --------------------------------------------------------------------------- overlays


def test_cert_manager_overlay():
    docs = built("overlays/cert-manager")
    mwc = one(docs, "MutatingWebhookConfiguration")
    target = mwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from")
    assert target, "cert-manager.io/inject-ca-from is missing"
    ns, name = target.split("/")
    cert = one(docs, "Certificate", name)
    assert cert["metadata"]["namespace"] == ns == NAMESPACE
    assert set(cert["spec"]["dnsNames"]) >= {f"rmq-sidecar-injector.{NAMESPACE}.svc",
                                              f"rmq-sidecar-injector.{NAMESPACE}.svc.cluster.local"}
    dep = one(docs, "Deployment", "rmq-sidecar-injector")
    secrets = [v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert cert["spec"]["secretName"] in secrets, "the Certificate's Secret is not the one the injector mounts"
    issuers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Issuer"}
    # Every Certificate's issuer exists; the chain ends at a self-signed Issuer.
    for c in (d for d in docs if d["kind"] == "Certificate"):
        assert c["spec"]["issuerRef"].get("kind", "Issuer") == "Issuer"
        assert c["spec"]["issuerRef"]["name"] in issuers, f"{name_of(c)}: issuer not found"
    assert any("selfSigned" in i["spec"] for i in issuers.values())
    ca_issuers = [i for i in issuers.values() if "ca" in i["spec"]]
    for i in ca_issuers:
        assert any(c["spec"]["secretName"] == i["spec"]["ca"]["secretName"] and c["spec"].get("isCA")
                   for c in docs if c["kind"] == "Certificate"), f"{name_of(i)}: no CA Certificate for it"


def test_script_certs_overlay_leaves_ca_bundle_to_the_script():
    docs = built("overlays/script-certs")
    assert not [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]
    [hook] = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    # Absent, so `kubectl apply -k` after the script does not undo its caBundle.
    assert "caBundle" not in hook["clientConfig"]


# --------------------------------------------------------------------------- mover RBAC and examples


def rule_set(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_mover_clusterrole():
    role = one(file_docs("rbac/mover-clusterrole.yaml"), "ClusterRole", "rocketmq-sidecar-mover")
    expected = ({("", "configmaps", v) for v in ("get", "patch", "create")}
                | {("", "pods", v) for v in ("get", "list", "patch")}
                | {("", "pods/proxy", "get")}
                | {("apps", r, "get") for r in ("deployments", "statefulsets", "daemonsets", "replicasets")})
    got = rule_set(role["rules"])
    assert got == expected, f"missing: {expected - got}, extra: {got - expected}"


def test_example_app_is_injected_and_has_a_stage(base, injector_toml):
    [hook] = one(base, "MutatingWebhookConfiguration")["webhooks"]
    ns = one(file_docs("examples/app-namespace.yaml"), "Namespace")
    app = one(file_docs("examples/app-deployment.yaml"), "Deployment")
    assert app["metadata"]["namespace"] == ns["metadata"]["name"]
    assert selects(hook["namespaceSelector"], ns_labels(ns["metadata"]["name"], **ns["metadata"]["labels"]))
    assert selects(hook["objectSelector"], app["spec"]["template"]["metadata"].get("labels", {}))

    stages = one(file_docs("examples/stages-configmap.yaml"), "ConfigMap")
    assert stages["metadata"]["name"] == injector_toml["stages"]["configmap"]
    assert stages["metadata"]["namespace"] == ns["metadata"]["name"]
    assert f"deployment.{app['metadata']['name']}" in stages["data"]
    for key, value in stages["data"].items():
        assert re.fullmatch(r"(deployment|statefulset|daemonset|replicaset|job|cronjob|pod)\.[a-z0-9.-]+", key), key
        assert value in ("old", "new"), f"{key}: stage must be old or new, got {value!r}"


def test_example_credentials_secret_is_a_placeholder():
    text = (K8S / "examples" / "credentials-secret.yaml").read_text()
    assert re.search(r"never commit real keys", text, re.I), "the template must warn against committing keys"
    secret = one(load_docs(text), "Secret")
    assert set(secret["stringData"]) == {"access-key", "secret-key"} and "data" not in secret
    for k, v in secret["stringData"].items():
        assert "REPLACE" in v, f"{k} must be a placeholder, got {v!r}"


def test_no_real_secret_anywhere():
    for path in yaml_files():
        for doc in load_docs(path.read_text()):
            if doc.get("kind") == "Secret":
                values = list((doc.get("stringData") or {}).values()) + list((doc.get("data") or {}).values())
                assert all("REPLACE" in str(v) for v in values), f"{path}: {name_of(doc)} holds a non-placeholder value"


def test_podmonitor_scrapes_the_sidecars_as_the_rules_expect():
    pm = one(file_docs("examples/podmonitor.yaml"), "PodMonitor")
    assert pm["spec"]["selector"] == {"matchLabels": {"rocketmq-sidecar/injected": "true"}}
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    [ep] = pm["spec"]["podMetricsEndpoints"]
    assert ep["port"] == "rmq-health" and ep["path"] == "/metrics"
    # Without jobLabel the operator names the job <namespace>/<name>; RmqSidecarDown matches on it.
    assert "jobLabel" not in pm["spec"]
    job = f"{pm['metadata']['namespace']}/{pm['metadata']['name']}"
    matchers = [m for m in re.findall(r'job=~"([^"]+)"', RULES.read_text()) if "injector" not in m]
    assert matchers, f"no job=~ matcher for the sidecars in {RULES}"
    for m in matchers:
        assert re.fullmatch(m, job), f"the PodMonitor's job {job!r} does not match job=~{m!r} of the rules"


def test_servicemonitor_scrapes_the_injector(base):
    sm = one(file_docs("examples/servicemonitor.yaml"), "ServiceMonitor")
    svc = one(base, "Service", "rmq-sidecar-injector")
    assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"]
    assert selects(sm["spec"]["selector"], svc["metadata"]["labels"])
    [ep] = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]} and ep["port"] != "https"
    assert ep["path"] == "/metrics"
    # Without jobLabel the job is the Service's name; the injector alerts match on it.
    assert "jobLabel" not in sm["spec"]
    matchers = [m for m in re.findall(r'job=~"([^"]+)"', RULES.read_text()) if "injector" in m]
    assert matchers, f"no job=~ matcher for the injector in {RULES}"
    for m in matchers:
        assert re.fullmatch(m, svc["metadata"]["name"]), f"job {svc['metadata']['name']!r} does not match {m!r}"


# --------------------------------------------------------------------------- gen-webhook-certs.sh


SERVICE_NAMES = [f"rmq-sidecar-injector.{NAMESPACE}.svc", f"rmq-sidecar-injector.{NAMESPACE}.svc.cluster.local"]


def fake_kubectl(bin_dir: Path, log: Path) -> None:
    """A kubectl that logs its arguments (and stdin of `apply`) and knows one webhook."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "kubectl"
    script.write_text(f"""#!/usr/bin/env bash
printf '%s\\n' "$*" >> {shlex.quote(str(log))}
case "$1" in
  create) echo 'kind: Secret' ;;
  apply) cat >> {shlex.quote(str(log))} ;;
  get) printf x ;;
esac
""")
    script.chmod(0o755)


def run_script(*args: str, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path_prefix:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run(["bash", str(CERT_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def openssl(*args: str) -> str:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"openssl {' '.join(args)} failed:\n{r.stdout}{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("certs")
    log = tmp / "kubectl.log"
    fake_kubectl(tmp / "bin", log)  # on PATH, to prove the script does not call it without --apply
    out = tmp / "out"
    r = run_script("--out-dir", str(out), "--san", "IP:127.0.0.1", "--san", "DNS:localhost", path_prefix=tmp / "bin")
    assert r.returncode == 0, f"gen-webhook-certs.sh exited {r.returncode}:\n{r.stderr}"
    assert not log.exists(), f"kubectl was called without --apply: {log.read_text()}"
    for f in ("ca.crt", "tls.crt", "tls.key"):
        assert (out / f).is_file(), f"{f} was not written"
    assert (out / "tls.key").stat().st_mode & 0o077 == 0, "tls.key must be readable by its owner only"
    return out


def test_certs_verify_against_the_ca(certs):
    out = openssl("verify", "-CAfile", str(certs / "ca.crt"), "-purpose", "sslserver", str(certs / "tls.crt"))
    assert out.strip().endswith(": OK"), out
    ca = openssl("x509", "-in", str(certs / "ca.crt"), "-noout", "-ext", "basicConstraints")
    assert "CA:TRUE" in ca
    # The key is the certificate's key.
    assert openssl("x509", "-in", str(certs / "tls.crt"), "-noout", "-pubkey") == \
        openssl("pkey", "-in", str(certs / "tls.key"), "-pubout")


def test_certs_have_the_service_names_and_extra_sans(certs):
    text = openssl("x509", "-in", str(certs / "tls.crt"), "-noout", "-ext", "subjectAltName,basicConstraints")
    sans = {s.strip() for s in text.split("Subject Alternative Name:")[1].strip().splitlines()[0].split(",")}
    expected = {f"DNS:{n}" for n in SERVICE_NAMES} | {"IP Address:127.0.0.1", "DNS:localhost"}
    assert sans == expected, f"SANs {sans}, expected {expected}"
    assert "CA:FALSE" in text


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1", SERVICE_NAMES[0]])
def test_certs_work_in_a_tls_handshake(certs, server_name):
    """A real TLS server with tls.crt/tls.key, a client that trusts only ca.crt and checks the name."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "tls.crt", certs / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        errors: list[BaseException] = []

        def serve():
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except BaseException as e:  # reported by the client side's assertion
                errors.append(e)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            assert tls.recv(2) == b"ok"
        t.join(10)
        assert not errors, errors


def test_rerun_keeps_the_ca_and_renews_the_serving_cert(tmp_path):
    out = tmp_path / "out"
    assert run_script("--out-dir", str(out)).returncode == 0
    ca, cert = (out / "ca.crt").read_bytes(), (out / "tls.crt").read_bytes()
    r = run_script("--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "ca.crt").read_bytes() == ca, "a rerun must keep the CA (the caBundle stays valid)"
    assert (out / "tls.crt").read_bytes() != cert, "a rerun must issue a new serving certificate"
    openssl("verify", "-CAfile", str(out / "ca.crt"), str(out / "tls.crt"))


def test_apply_creates_the_secret_and_patches_the_ca_bundle(tmp_path):
    log = tmp_path / "kubectl.log"
    fake_kubectl(tmp_path / "bin", log)
    out = tmp_path / "out"
    r = run_script("--out-dir", str(out), "--apply", path_prefix=tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    calls = log.read_text()
    assert re.search(rf"^create secret tls rmq-sidecar-injector-tls --namespace {NAMESPACE} "
                     rf"--cert {re.escape(str(out))}/tls.crt --key {re.escape(str(out))}/tls.key", calls, re.M), calls
    assert re.search(r"^apply -f -$", calls, re.M), calls
    [patch_line] = [line for line in calls.splitlines() if line.startswith("patch ")]
    assert patch_line.startswith("patch mutatingwebhookconfiguration rocketmq-sidecar-injector --type=json -p ")
    patch = json.loads(patch_line.split(" -p ", 1)[1])
    assert [p["path"] for p in patch] == ["/webhooks/0/clientConfig/caBundle"]
    assert base64.b64decode(patch[0]["value"]) == (out / "ca.crt").read_bytes()


@pytest.mark.parametrize("args", [[], ["--out-dir", "x", "--san", "localhost"], ["--out-dir", "x", "--days", "0"],
                                  ["--bogus"]], ids=["no-out-dir", "bad-san", "bad-days", "unknown-option"])
def test_script_rejects_bad_arguments(tmp_path, args):
    args = [str(tmp_path / a) if a == "x" else a for a in args]
    r = run_script(*args)
    assert r.returncode != 0 and r.stderr.strip(), f"{args}: exit {r.returncode}"


def test_scripts_pass_shellcheck():
    assert shutil.which("shellcheck"), (
        "shellcheck is not installed (tests/apt-packages.txt lists it; scripts/test.sh installs it)")
    scripts = [CERT_SCRIPT, *(REPO / "scripts").glob("*.sh"), REPO / ".ci" / "run"]
    r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[dict]:
    """[{from, as, instructions: [(KEYWORD, args)]}], line continuations joined, comments dropped."""
    lines, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        buf += raw
        if buf.strip():
            lines.append(buf.strip())
        buf = ""
    stages: list[dict] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, f"cannot parse FROM {args}"
            stages.append({"from": m.group(1), "as": m.group(2), "instructions": []})
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1]["instructions"].append((keyword, args.strip()))
    return stages


def test_dockerfile_says_how_ci_builds_its_images():
    head = DOCKERFILE.read_text().split("FROM", 1)[0]
    assert "tests/node/images.py" in head and "tests/interop/test_node.py" in head, \
        "the Dockerfile's top comment must say that CI builds its images without docker, and where"


def workspace_bins() -> dict[str, Path]:
    """[[bin]] name -> package directory, over every member of the Cargo workspace."""
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    out = {}
    for member in root["workspace"]["members"]:
        cargo = tomllib.loads((REPO / member / "Cargo.toml").read_text())
        for b in cargo.get("bin", []):
            out[b["name"]] = REPO / member
    return out


@pytest.mark.parametrize("target,binary", [("sidecar", "rmq-sidecar"), ("injector", "rmq-injector")])
def test_dockerfile_target_is_distroless_nonroot_and_runs_its_built_binary(target, binary):
    stages = dockerfile_stages()
    builder = stages[0]
    by_name = {s["as"]: s for s in stages if s["as"]}
    assert target in by_name, f"no stage `AS {target}` (build it with --target {target})"
    runtime = by_name[target]
    assert builder["from"] == "rust:1.95-bookworm" and builder["as"]
    assert runtime["from"].startswith("gcr.io/distroless/") and runtime["from"].endswith(":nonroot"), runtime["from"]
    # Same Debian release (glibc) in both stages.
    assert "bookworm" in builder["from"] and "debian12" in runtime["from"]
    ins = dict(runtime["instructions"])  # last of each keyword
    users = [a for k, a in runtime["instructions"] if k == "USER"]
    assert users and users[-1].split(":")[0] in ("65532", "nonroot"), f"USER {users}"
    entry = json.loads(ins["ENTRYPOINT"])
    assert isinstance(entry, list) and entry[0].startswith("/"), "ENTRYPOINT must be exec form with an absolute path"
    assert Path(entry[0]).name == binary, f"the {target} image runs {entry[0]}, not {binary}"

    # The builder builds the [[bin]] that ENTRYPOINT runs.
    bins = workspace_bins()
    runs = " ".join(a for k, a in builder["instructions"] if k == "RUN")
    m = re.search(r"cargo build --release --locked((?: --bin \S+)+)", runs)
    assert m, f"the builder must run `cargo build --release --locked --bin NAME...`: {runs}"
    built = m.group(1).split()[1::2]
    assert binary in built, f"the builder does not build {binary}: {built}"
    assert binary in bins, f"--bin {binary} is not a [[bin]] of the workspace ({sorted(bins)})"
    assert f"target/release/{binary}" in runs
    copies = [a.split() for k, a in runtime["instructions"] if k == "COPY"]
    assert any(c[0] == f"--from={builder['as']}" and Path(c[-2]).name == binary and c[-1] == entry[0]
               for c in copies), f"the {target} stage must COPY --from={builder['as']} the binary to {entry[0]}"
    # The image holds one binary: the other one stays out of it.
    assert len(copies) == 1, f"the {target} stage copies more than its binary: {copies}"


def test_dockerfile_default_target_is_the_sidecar():
    assert dockerfile_stages()[-1]["as"] == "sidecar", "a plain `docker build` must give the sidecar image"


def test_dockerignore_keeps_what_cargo_needs():
    patterns = [p.strip().rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    needed = (["Cargo.toml", "Cargo.lock", "src"] + [f"benches/{b['name']}.rs" for b in cargo.get("bench", [])]
              + [f"{m}/Cargo.toml" for m in cargo["workspace"]["members"] if m != "."]
              + [f"{m}/src" for m in cargo["workspace"]["members"] if m != "."])
    for path in needed:
        parts = Path(path).parts
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert not any(p in prefixes for p in patterns), \
            f".dockerignore excludes {path}, which the build needs"
        assert (REPO / path).exists(), f"{path} does not exist"
    for path in ("target", ".git"):
        assert path in patterns, f".dockerignore should exclude {path}"
