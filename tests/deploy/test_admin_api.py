"""The admin API against its contract, deploy/admin-openapi.yaml, on a live sidecar binary.

* schemathesis (pinned in tests/requirements.txt) generates requests for every operation of
  the spec, valid and schema-violating ones, mutations included (loopback only), and checks
  that every response conforms: documented status code, content type and JSON schema, no
  undocumented 5xx, and schema-violating requests refused (tests/deploy/schemathesis.toml).
  One run per module (~25 examples per operation, fixed seed); one pytest result per
  operation, so a failure names the endpoint.
* Plain tests for what a schema cannot say: 404/405 with an error document, the health
  port's read-only surface, GET / listing exactly the documented operations, the switch,
  log level, drain, shutdown and token semantics, secrets never shown, and GET /metrics
  parsed with prometheus_client (every family `rmq_sidecar_`, counters `_total`, and every
  family declared by `rmq-sidecar list-metrics` with the same type and labels).

No RocketMQ needed: the sidecar points at name servers that do not exist.
Run: python3 -m pytest tests/deploy/test_admin_api.py -v
"""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from deploy_support import ACCESS_KEY, OPENAPI, SCHEMATHESIS_CONFIG, SECRET, SidecarProcess

SPEC = yaml.safe_load(OPENAPI.read_text())
METHODS = ("get", "put", "post", "delete", "patch")
OPERATIONS = [(m.upper(), path) for path, item in SPEC["paths"].items() for m in METHODS if m in item]
HEALTH_PATHS = ("/live", "/ready", "/route", "/metrics")

MAX_EXAMPLES = 25
SEED = 20261125


# --------------------------------------------------------------------------- helpers


def json_body(status_headers_body) -> dict:
    status, headers, body = status_headers_body
    assert headers.get("content-type", "").split(";")[0].strip() == "application/json", \
        f"{status}: content-type {headers.get('content-type')!r}, body {body[:200]!r}"
    return json.loads(body)


def assert_error(resp, status: int, what: str) -> None:
    got, headers, body = resp
    assert got == status, f"{what}: expected {status}, got {got} {body[:300]!r}"
    doc = json_body(resp)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], \
        f"{what}: errors are {{\"error\": \"...\"}}, got {doc!r}"


def frame(code: int, ext: dict | None = None, opaque: int = 1) -> bytes:
    """A RocketMQ remoting request (JSON header, empty body)."""
    header = json.dumps({"code": code, "language": "JAVA", "version": 399, "opaque": opaque, "flag": 0,
                         "extFields": ext or {}}).encode()
    return struct.pack(">ii", 4 + len(header), len(header)) + header


def read_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf
    (length,) = struct.unpack(">i", exactly(4))
    return exactly(length)


@pytest.fixture
def fresh_sidecar(sidecar_bin, tmp_path):
    """A sidecar for one test (for tests that need a pristine, non-drained one)."""
    started = []

    def start(**extra_env) -> SidecarProcess:
        sc = SidecarProcess(sidecar_bin, tmp_path / f"sc{len(started)}", extra_env=extra_env).start()
        started.append(sc)
        return sc
    yield start
    for sc in started:
        sc.stop()


# --------------------------------------------------------------------------- schemathesis


def test_openapi_document_is_valid_openapi_3_0():
    from openapi_spec_validator import validate
    assert SPEC["openapi"].startswith("3.0.")
    validate(SPEC)


@pytest.fixture(scope="module")
def st_run(sidecar, tmp_path_factory):
    """One schemathesis run over every operation: (exit code, output, JSON report)."""
    report_dir = tmp_path_factory.mktemp("schemathesis")
    cmd = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(SCHEMATHESIS_CONFIG),
           "run", str(OPENAPI), "--url", f"http://127.0.0.1:{sidecar.admin_port}",
           "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
           "--request-timeout", "15", "--workers", "1",
           "--report", "json", "--report-dir", str(report_dir)]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    output = r.stdout + r.stderr
    print(f"schemathesis: exit {r.returncode} in {time.monotonic() - t0:.1f}s")
    reports = sorted(report_dir.glob("*.json"))
    assert reports, f"schemathesis wrote no report (exit {r.returncode}):\n{output[-4000:]}"
    return r.returncode, output, json.loads(reports[-1].read_text())


def test_schemathesis_tested_every_operation(st_run):
    rc, output, report = st_run
    assert report["schemathesis_version"], report
    ops = report["operations"]
    assert ops["selected"] == len(OPERATIONS) and ops["tested"] == len(OPERATIONS), (ops, output[-3000:])
    assert not report["errors"], f"schemathesis errors (not response failures):\n{output[-4000:]}"
    assert rc in (0, 1), output[-4000:]


def failure_section(output: str, label: str) -> str:
    """The part of schemathesis' output about one operation."""
    m = re.search(rf"_+ {re.escape(label)} _+\n(.*?)(?=\n_{{5,}} |\n={{5,}} )", output, re.S)
    return m.group(1).strip() if m else ""


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms_to_the_spec(method, path, st_run):
    rc, output, report = st_run
    label = f"{method} {path}"
    failures = [f"{f['code']} {f['title']}" for f in report["failures"] if label in f.get("operations", [])]
    assert not failures, f"{label}: {failures}\n\n{failure_section(output, label)[:6000]}"


# --------------------------------------------------------------------------- metrics


def test_metrics_parse_and_follow_the_naming_rules(fresh_sidecar, sidecar_families):
    sc = fresh_sidecar()
    # Traffic so that the request, response, latency and rejected-frame families have samples:
    # a route query (answered SYSTEM_ERROR: the name server 127.0.0.1:1 does not exist) ...
    with socket.create_connection(("127.0.0.1", sc.namesrv_port), timeout=15) as s:
        s.sendall(frame(105, {"topic": "DeployTestTopic"}))
        answer = read_frame(s)
        assert answer, "no answer to GET_ROUTEINFO_BY_TOPIC"
    # ... and a frame that claims 2 GiB.
    with socket.create_connection(("127.0.0.1", sc.namesrv_port), timeout=15) as s:
        s.sendall(struct.pack(">ii", 0x7FFFFFF0, 16))
        with pytest.raises((ConnectionError, OSError)):
            read_frame(s)
    sc.request("PUT", "/route", json.dumps({"target": "new"}), headers={"Content-Type": "application/json"})

    status, headers, body = sc.request("GET", "/metrics", port=sc.health_port)
    assert status == 200
    assert headers.get("content-type", "").replace(" ", "") == "text/plain;version=0.0.4", headers
    text = body.decode()
    parsed = list(text_string_to_metric_families(text))
    assert parsed, text[:500]
    problems = []
    seen = set()
    for fam in parsed:
        if not fam.name.startswith("rmq_sidecar_"):
            problems.append(f"{fam.name}: not prefixed rmq_sidecar_")
        declared_name = fam.name + "_total" if fam.type == "counter" else fam.name
        seen.add(declared_name)
        declared = sidecar_families.get(declared_name)
        if declared is None:
            problems.append(f"{declared_name}: exported but not listed by `rmq-sidecar list-metrics`")
        elif declared.type != fam.type:
            problems.append(f"{declared_name}: exported as {fam.type}, listed as {declared.type}")
        for sample in fam.samples:
            if fam.type == "counter" and not sample.name.endswith(("_total", "_created")):
                problems.append(f"{sample.name}: a counter sample must end in _total")
            if declared is not None:
                extra = set(sample.labels) - set(declared.labels) - ({"le"} if fam.type == "histogram" else set())
                if extra:
                    problems.append(f"{sample.name}: labels {sorted(extra)} not listed by list-metrics")
    # the raw TYPE lines too: the parser strips _total from counter family names
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"# TYPE {name} counter: counters end in _total")
    assert not problems, "\n".join(problems)
    expected = {"rmq_sidecar_requests_total", "rmq_sidecar_responses_total",
                "rmq_sidecar_request_duration_seconds", "rmq_sidecar_frames_rejected_total",
                "rmq_sidecar_route_target", "rmq_sidecar_switch_requests_total", "rmq_sidecar_build_info",
                "rmq_sidecar_connections_refused_total", "rmq_sidecar_accept_failures_total"}
    assert expected <= seen, f"families without samples after traffic: {sorted(expected - seen)}"


def test_list_metrics_follows_the_naming_rules(families):
    problems = []
    for f in families.values():
        if not f.name.startswith("rmq_sidecar_"):
            problems.append(f"{f.name}: not prefixed rmq_sidecar_")
        if f.type == "counter" and not f.name.endswith("_total"):
            problems.append(f"{f.name}: counter without _total")
        if f.type != "counter" and f.name.endswith("_total"):
            problems.append(f"{f.name}: only counters end in _total")
        if f.type not in ("counter", "gauge", "histogram"):
            problems.append(f"{f.name}: unexpected type {f.type}")
        if not f.help:
            problems.append(f"{f.name}: no help text")
        if set(f.labels) & {"job", "instance", "namespace", "pod", "le"}:
            problems.append(f"{f.name}: labels that Prometheus sets: {f.labels}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- HTTP surface


def test_admin_unknown_path_is_404(sidecar):
    for path in ("/nope", "/route/extra", "/metrics2", "/admin"):
        assert_error(sidecar.request("GET", path), 404, f"GET {path}")


def test_admin_wrong_method_on_a_known_path_is_405(sidecar):
    problems = []
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                continue
            resp = sidecar.request(method.upper(), path, body="{}" if method in ("put", "post", "patch") else None,
                                   headers={"Content-Type": "application/json"})
            try:
                assert_error(resp, 405, f"{method.upper()} {path}")
            except AssertionError as e:
                problems.append(str(e).splitlines()[0])
    assert not problems, "\n".join(problems)


def test_health_port_is_read_only(sidecar):
    hp = sidecar.health_port
    assert sidecar.request("GET", "/live", port=hp)[0] == 200
    assert sidecar.request("GET", "/ready", port=hp)[0] in (200, 503)
    route = json_body(sidecar.request("GET", "/route", port=hp))
    # null while producers and consumers are apart (the contract test may have split them)
    assert route["target"] in ("old", "new", None), route
    assert {route["roles"][r]["target"] for r in ("producer", "consumer")} <= {"old", "new"}, route
    assert sidecar.request("GET", "/metrics", port=hp)[0] == 200
    problems = []
    for path in HEALTH_PATHS:
        for method in ("PUT", "POST", "DELETE", "PATCH"):
            try:
                assert_error(sidecar.request(method, path, body="{}", port=hp), 405, f"health {method} {path}")
            except AssertionError as e:
                problems.append(str(e).splitlines()[0])
    for path in ("/", "/listeners", "/config", "/connections", "/log-level", "/credentials/check", "/drain",
                 "/shutdown", "/nope"):
        for method in ("GET", "POST"):
            try:
                assert_error(sidecar.request(method, path, port=hp), 404, f"health {method} {path}")
            except AssertionError as e:
                problems.append(str(e).splitlines()[0])
    assert not problems, "\n".join(problems)


def test_index_lists_exactly_the_documented_operations(sidecar):
    doc = json_body(sidecar.request("GET", "/"))
    listed = {(e["method"], e["path"]) for e in doc["endpoints"]}
    documented = set(OPERATIONS)
    assert listed == documented, (f"GET / lists but the spec lacks: {sorted(listed - documented)}; "
                                  f"the spec has but GET / does not list: {sorted(documented - listed)}")


# --------------------------------------------------------------------------- semantics


def test_put_route_switches_and_refuses_anything_invalid(fresh_sidecar):
    sc = fresh_sidecar()
    h = {"Content-Type": "application/json"}
    before = json_body(sc.request("GET", "/route"))
    assert before["target"] == "old"
    moved = json_body(sc.request("PUT", "/route", json.dumps({"target": "new"}), headers=h))
    assert moved["target"] == "new" and moved["generation"] > before["generation"]
    again = json_body(sc.request("PUT", "/route", json.dumps({"target": "new"}), headers=h))
    assert again["target"] == "new" and again["generation"] == moved["generation"], "idempotent"
    problems = []
    for bad in ('{"target":"elsewhere"}', '{"target":"old","extra":1}', '{}', '{"target":null}', "not json",
                '["old"]', '"old"', ""):
        try:
            assert_error(sc.request("PUT", "/route", bad, headers=h), 400, f"PUT /route {bad!r}")
        except AssertionError as e:
            problems.append(str(e).splitlines()[0][:160])
        after = json_body(sc.request("GET", "/route"))
        if after["target"] != "new" or after["generation"] != moved["generation"]:
            problems.append(f"PUT /route {bad!r} changed the route to {after['target']} "
                            f"(generation {after['generation']}); refusals must change nothing")
            sc.request("PUT", "/route", json.dumps({"target": "new"}), headers=h)
            moved = json_body(sc.request("GET", "/route"))
    assert not problems, "\n".join(problems)
    assert json_body(sc.request("GET", "/route", port=sc.health_port))["target"] == "new"


def test_log_level_reads_changes_and_refuses_bad_filters(fresh_sidecar):
    sc = fresh_sidecar()
    h = {"Content-Type": "application/json"}
    assert json_body(sc.request("GET", "/log-level")) == {"filter": "info"}
    new = "warn,rocketmq_sidecar=debug"
    assert json_body(sc.request("PUT", "/log-level", json.dumps({"filter": new}), headers=h)) == {"filter": new}
    assert json_body(sc.request("GET", "/log-level")) == {"filter": new}
    problems = []
    for bad in ('{"filter":"rocketmq_sidecar=loudest"}', '{"filter":7}', "{}", "nope", '["info"]'):
        try:
            assert_error(sc.request("PUT", "/log-level", bad, headers=h), 400, f"PUT /log-level {bad!r}")
        except AssertionError as e:
            problems.append(str(e).splitlines()[0][:160])
        shown = json_body(sc.request("GET", "/log-level"))
        if shown != {"filter": new}:
            problems.append(f"PUT /log-level {bad!r} changed the filter to {shown}")
            sc.request("PUT", "/log-level", json.dumps({"filter": new}), headers=h)
    # An empty filter is either refused or reported as what it means: GET /log-level must
    # always say what is logged.
    status = sc.request("PUT", "/log-level", '{"filter":"  "}', headers=h)[0]
    if status != 400:
        shown = json_body(sc.request("GET", "/log-level"))["filter"]
        if status != 200 or not shown.strip():
            problems.append(f"PUT /log-level with a blank filter -> {status}, then GET /log-level says "
                            f"{shown!r}: refuse it (400) or report the filter in force")
    assert not problems, "\n".join(problems)


def test_connections_counts_app_connections_and_drain_stops_new_ones(fresh_sidecar):
    sc = fresh_sidecar()
    with socket.create_connection(("127.0.0.1", sc.namesrv_port), timeout=10) as app:
        app.sendall(frame(105, {"topic": "DeployTestTopic"}))
        read_frame(app)
        conns = json_body(sc.request("GET", "/connections"))
        assert conns["client_connections"] >= 1 and conns["by_listener"]["namesrv"] >= 1, conns
        first = sc.request("POST", "/drain")
        assert first[0] == 202, first
        doc = json_body(first)
        assert doc["draining"] is True and isinstance(doc["client_connections"], int)
        second = sc.request("POST", "/drain")
        assert second[0] == 202 and json_body(second)["draining"] is True, "drain is idempotent"
    # no new app connections: refused, or accepted and closed without an answer
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", sc.namesrv_port), timeout=5) as late:
                late.sendall(frame(105, {"topic": "DeployTestTopic"}, opaque=2))
                read_frame(late)
            answered = True
        except (ConnectionError, OSError):
            answered = False
        if not answered:
            break
        assert time.monotonic() < deadline, "a new app connection was still served after POST /drain"
        time.sleep(0.5)
    assert sc.request("GET", "/live")[0] == 200, "the admin port keeps serving while draining"


def test_shutdown_is_refused_unless_enabled(sidecar):
    assert_error(sidecar.request("POST", "/shutdown"), 403, "POST /shutdown (disabled by default)")
    assert sidecar.proc.poll() is None and sidecar.request("GET", "/live")[0] == 200


def test_shutdown_when_enabled_exits_the_process(fresh_sidecar):
    sc = fresh_sidecar(RMQ_SIDECAR_ENABLE_SHUTDOWN="true")
    resp = sc.request("POST", "/shutdown")
    assert resp[0] == 202 and json_body(resp) == {"shutting_down": True}, resp
    try:
        rc = sc.proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 15 s after POST /shutdown:\n{sc.log_tail()}")
    assert rc == 0, f"exit code {rc}:\n{sc.log_tail()}"


def test_mutations_need_the_bearer_token_when_one_is_configured(fresh_sidecar, tmp_path):
    token = tmp_path / "admin-token"
    token.write_text("tok-123456\n")
    sc = fresh_sidecar(RMQ_SIDECAR_ADMIN_TOKEN_FILE=str(token))
    body = json.dumps({"target": "new"})
    h = {"Content-Type": "application/json"}
    assert_error(sc.request("PUT", "/route", body, headers=h), 401, "PUT /route without a token")
    assert_error(sc.request("PUT", "/route", body, headers={**h, "Authorization": "Bearer wrong"}), 401,
                 "PUT /route with a wrong token")
    assert_error(sc.request("POST", "/drain", headers={"Authorization": "Bearer wrong"}), 401,
                 "POST /drain with a wrong token")
    ok = sc.request("PUT", "/route", body, headers={**h, "Authorization": "Bearer tok-123456"})
    assert ok[0] == 200 and json_body(ok)["target"] == "new", ok
    assert sc.request("GET", "/route")[0] == 200, "reads need no token"


def test_secrets_never_appear_in_admin_output(fresh_sidecar):
    sc = fresh_sidecar()
    responses = {
        "GET /config": sc.request("GET", "/config"),
        "GET /route": sc.request("GET", "/route"),
        "POST /credentials/check": sc.request("POST", "/credentials/check"),
        "GET /metrics": sc.request("GET", "/metrics", port=sc.health_port),
        "GET /connections": sc.request("GET", "/connections"),
    }
    for what, (status, _, body) in responses.items():
        assert status == 200, f"{what}: {status} {body[:200]!r}"
        assert SECRET.encode() not in body, f"{what} shows the SecretKey"
        assert SECRET[:12].encode() not in body, f"{what} shows part of the SecretKey"
    assert isinstance(json.loads(responses["GET /config"][2]), dict)
    creds = json.loads(responses["POST /credentials/check"][2])
    assert creds["new"]["configured"] is True and creds["old"]["configured"] is False
    assert ACCESS_KEY.encode() not in responses["GET /route"][2], "GET /route shows a hint, not the AccessKey"
