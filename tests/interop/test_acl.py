"""ACL: the sidecar signs for authenticated clusters (real RocketMQ, official Java client).

Uses the session pair "acl" (conftest.py): an old 4.9.7 cluster with ACL 1.0 (``OLD_ACL``), a
new 5.3.3 cluster with ACL 2.0 (``NEW_ACL``) and a RocketMQ Proxy 5.3.3 in cluster mode with
authentication in front of the new one (how TDMQ 5.x exposes a cluster: clients use the proxy's
remoting port as their name server and every broker address is the proxy's).

Sidecar contract under test (config keys in ``[clusters.old]`` / ``[clusters.new]``:
``access_key``, ``access_key_file``, ``secret_key_file``, ``security_token_file``,
``unique_key_rule = auto|v4|v5``, ``check_topic``; env ``RMQ_SIDECAR_{OLD,NEW}_{ACCESS_KEY,
SECRET_KEY_FILE,...}``; files re-read every ~2 s; ``GET /route`` -> ``credentials``;
``POST /credentials/check``; the SecretKey never in the log, an admin response or a metric).
If the binary does not support it, these tests FAIL (they never skip).

* ``test_server_acl_error_shapes``: no sidecar; raw requests (no AccessKey / unknown AccessKey /
  wrong signature / valid) to both brokers, the proxy and both name servers; asserts the exact
  codes and remarks (written to ``server_facts.json`` in the test directory).
* ``test_java_client_without_credentials_is_refused``: the official 4.9.8 client with no
  credentials, straight at the ACL 2.0 cluster's name server and at the proxy, cannot send.
* ``test_sidecar_signs_for_new[namesrv|proxy]``: a credential-less 4.9.8 app produces and consumes
  through a sidecar that holds the new cluster's credentials; credential check "ok".
* ``test_smoke_533_client_through_sidecar_to_proxy``.
* ``test_migration_to_acl_clusters``: harness.run_migration old(ACL 1.0) -> new(ACL 2.0), apps
  without credentials, sidecars sign for both sides; lost = 0.
* ``test_credential_check_outcomes``: ``unknown_access_key`` / ``signature_rejected`` from the ACL
  1.0 broker and from the proxy, ``unreachable`` for a dead name server, ``no_permission`` for a
  user without permission on ``check_topic`` (ACL 2.0 authorization is on for the new cluster).
* ``test_wrong_secret_then_kubelet_swap``: wrong SecretKey -> check "signature_rejected", sends
  fail; the right secret arrives by a kubelet ``..data`` symlink swap -> sends succeed within a
  bounded wait; a later broken update (empty file) keeps the good credentials; lost = 0; neither
  secret in the log / admin responses / metrics.
* ``test_old_acl10_sidecar_signs`` / ``test_old_acl10_app_signs_itself_then_switch``: ACL 1.0
  signing by the sidecar, and pass-through of an app's own signature (then re-signing for new
  after a switch).
* ``test_query_message_through_sidecar[old-auto|old-v4|new-auto]``: QUERY_MESSAGE (``_UNIQUE_KEY_QUERY``
  rule); for old, the control shows that a self-signing app cannot query a 4.9.x ACL broker.

Run: ``python3 -m pytest tests/interop/test_acl.py -v -rA`` (about 2.5-3 min on 2 cores, cluster
start included).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path

import pytest

import harness
import remoting_probe as rp
from conftest import NEW_ACL, NEW_LIMITED, OLD_ACL

PREFIX = "new~"
CHECK_TOPIC = "AclCheckTopic"
#: a SecretKey that is valid for no account (wrong-secret test); distinct from both real ones
WRONG_SECRET = "wrongSecret-not-valid-7Hq"


# --------------------------------------------------------------------------- helpers


def _tag() -> str:
    return f"{int(time.time()) % 100000}{random.randrange(1000):03d}"


class SecretDir:
    """A Kubernetes Secret volume as the kubelet lays it out: ``..<version>/<files>``,
    ``..data -> ..<version>``, ``<name> -> ..data/<name>``; an update is a new version directory
    plus an atomic rename of the ``..data`` symlink."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.versions = 0

    def write(self, files: dict) -> None:
        self.versions += 1
        vdir = self.root / f"..2026_01_0{self.versions}_12_00_00.{random.randrange(10**9)}"
        vdir.mkdir()
        for name, value in files.items():
            p = vdir / name
            p.write_text(value)
            p.chmod(0o600)
        tmp = self.root / "..data_tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(vdir.name, tmp)
        os.replace(tmp, self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)

    def path(self, name: str) -> str:
        return str(self.root / name)


def _secret_file(d: Path, name: str, value: str) -> str:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(value + "\n")
    p.chmod(0o600)
    return str(p)


def _sidecar(name: str, pair, test_dir: Path, binary: Path, *, target: str, new_creds: bool = True,
             old_creds: bool = False, via_proxy: bool = False, new_secret_path: str | None = None,
             old_rule: str | None = None, new_rule: str | None = None,
             new_extra: dict | None = None, new_namesrv: str | None = None,
             old_account: tuple | None = None) -> harness.Sidecar:
    """A sidecar for the "acl" pair. New credentials go in the TOML (inline AccessKey, SecretKey
    file); old credentials through the environment (AccessKey value, SecretKey file), so both
    configuration paths of the contract are exercised."""
    secrets = test_dir / f"secrets-{name}"
    cluster_toml: dict = {"old": {}, "new": {}}
    env = {}
    if new_creds:
        cluster_toml["new"].update(access_key=NEW_ACL.access_key,
                                   secret_key_file=new_secret_path or _secret_file(secrets, "new-secretKey",
                                                                                   NEW_ACL.secret_key),
                                   check_topic=CHECK_TOPIC)
    if new_rule:
        cluster_toml["new"]["unique_key_rule"] = new_rule
    cluster_toml["new"].update(new_extra or {})
    if old_creds:
        ak, sk = old_account or (OLD_ACL.access_key, OLD_ACL.secret_key)
        env["RMQ_SIDECAR_OLD_ACCESS_KEY"] = ak
        env["RMQ_SIDECAR_OLD_SECRET_KEY_FILE"] = _secret_file(secrets, "old-secretKey", sk)
        cluster_toml["old"]["check_topic"] = CHECK_TOPIC
    if old_rule:
        cluster_toml["old"]["unique_key_rule"] = old_rule
    new_ns = new_namesrv or (pair.proxy.addr if via_proxy else pair.new.namesrv_addr)
    return harness.Sidecar(name, old_namesrv=pair.old.namesrv_addr, new_namesrv=new_ns, workdir=test_dir,
                           target=target, binary=binary, broker_name_prefix=PREFIX,
                           cluster_toml=cluster_toml, env=env)


class AdminLog:
    """Calls the sidecar's admin API and keeps every raw answer (for the secret-leak check)."""

    def __init__(self, sc: harness.Sidecar):
        self.sc = sc
        self.texts: list[str] = []

    def route(self) -> dict:
        status, body = self.sc._http("GET", "/route")
        self.texts.append(json.dumps(body))
        assert status == 200 and isinstance(body, dict), f"GET /route -> {status} {body!r}"
        return body

    def check(self) -> dict:
        status, body = self.sc._http("POST", "/credentials/check", timeout=30)
        self.texts.append(json.dumps(body))
        assert status == 200 and isinstance(body, dict), f"POST /credentials/check -> {status} {body!r}"
        return body

    def sweep(self) -> None:
        """GET every read endpoint the admin port lists at ``GET /`` (plus /metrics and /route on
        the health port) and keep the answers, whatever their status."""
        paths = {"/", "/route", "/metrics", "/config", "/listeners", "/connections", "/log-level"}
        try:
            status, index = self.sc._http("GET", "/")
            for ep in (index or {}).get("endpoints", []) if isinstance(index, dict) else []:
                if isinstance(ep, dict) and ep.get("method") == "GET" and isinstance(ep.get("path"), str):
                    paths.add(ep["path"])
        except OSError:
            pass
        targets = [(self.sc.admin_port, p) for p in sorted(paths)]
        targets += [(self.sc.health_port, "/metrics"), (self.sc.health_port, "/route")]
        for port, path in targets:
            try:
                status, body = self.sc._http("GET", path, port=port)
            except OSError:
                continue
            self.texts.append(f"{port}{path} {status}: " + (body if isinstance(body, str) else json.dumps(body)))


def _outcome(doc: dict, side: str) -> str | None:
    """credentials.<side>.check.outcome of a /route or /credentials/check document."""
    creds = doc.get("credentials", doc)
    return ((creds.get(side) or {}).get("check") or {}).get("outcome")


def _assert_check(admin: AdminLog, side: str, expected: str, timeout: float = 20.0) -> dict:
    """POST /credentials/check until ``side``'s outcome is ``expected`` (bounded); then the same
    outcome must show in GET /route."""
    seen = []

    def ok():
        doc = admin.check()
        seen.append(_outcome(doc, side))
        return seen[-1] == expected

    try:
        harness.wait_until(ok, timeout, f"credential check of {side} == {expected}", 1.0)
    except harness.HarnessError:
        pytest.fail(f"credential check of {side}: expected {expected!r}, got {seen[-5:]}; "
                    f"last document: {admin.texts[-1][:2000]}")
    route = admin.route()
    assert _outcome(route, side) == expected, f"GET /route credentials: {route.get('credentials')}"
    entry = route["credentials"][side]
    assert entry.get("configured") is True, route.get("credentials")
    assert isinstance(entry["check"].get("detail"), str) and isinstance(entry["check"].get("at_ms"), int), entry
    return route


def _assert_no_secret_leak(sc: harness.Sidecar, admin: AdminLog, secrets: list[str]) -> None:
    admin.sweep()
    sources = {"sidecar log": harness.tail(sc.log_path, 10**6)}
    sources.update({f"admin response #{i}": t for i, t in enumerate(admin.texts)})
    for label, text in sources.items():
        for s in secrets:
            assert s not in text, f"a SecretKey ({len(s)} chars, starts {s[:3]!r}) appears in the {label}"


def _prepare(cluster: harness.Cluster, topic: str, group: str) -> None:
    cluster.update_topic(topic, 4)
    cluster.update_sub_group(group)


def _pod_failures(pod: harness.Pod) -> list[str]:
    return [ln for ln in pod.output().splitlines() if " failed: " in ln]


@pytest.fixture
def acl(pair_acl):
    """The "acl" pair with the credential-check topic present on both clusters."""
    if not getattr(pair_acl, "_check_topic_ready", False):
        for c in (pair_acl.old, pair_acl.new):
            _prepare(c, CHECK_TOPIC, "AclCheckGroup")
        pair_acl._check_topic_ready = True
    return pair_acl


# --------------------------------------------------------------------------- server facts (no sidecar)


def test_server_acl_error_shapes(acl, test_dir):
    """What the real servers answer (protocol notes 6.2), measured, so the sidecar's credential
    check and error mapping rest on facts: ACL 2.0 broker -> 16, proxy -> 1, ACL 1.0 -> 1 with
    an AclException text; name servers never check; the proxy checks routes and has no QUERY_MESSAGE."""
    topic = CHECK_TOPIC
    O, N = OLD_ACL, NEW_ACL

    def variants(ext: dict, auth) -> dict:
        return {
            "no_access_key": dict(ext),
            "unknown_access_key": rp.sign(ext, None, "nobodyAccess", "nobodySecret-123"),
            "bad_signature": rp.sign(ext, None, auth.access_key, WRONG_SECRET),
            "valid": rp.sign(ext, None, auth.access_key, auth.secret_key),
        }

    route = {"topic": topic}
    offset = {"topic": topic, "queueId": "0"}
    targets = {
        "old_namesrv_4.9.7": (acl.old.namesrv_addr, 105, route, O),
        "new_namesrv_5.3.3": (acl.new.namesrv_addr, 105, route, N),
        "old_broker_4.9.7_acl1": (acl.old.broker_addr, 30, offset, O),
        "new_broker_5.3.3_acl2": (acl.new.broker_addr, 30, offset, N),
        "proxy_5.3.3_route": (acl.proxy.addr, 105, route, N),
        "proxy_5.3.3_get_max_offset": (acl.proxy.addr, 30, dict(offset, bname=acl.new.broker_name), N),
    }
    facts: dict = {}
    for name, (addr, code, ext, auth) in targets.items():
        for v, fields in variants(ext, auth).items():
            r = rp.invoke(addr, code, fields)
            facts[f"{name}/{v}"] = {"code": r.code, "remark": r.remark, "version": r.version}
    q = {"topic": topic, "key": "none", "maxNum": "32", "beginTimestamp": "0",
         "endTimestamp": "9223372036854775807", "_UNIQUE_KEY_QUERY": "false"}
    for name, addr, auth in (("old_broker_4.9.7_acl1", acl.old.broker_addr, O),
                             ("new_broker_5.3.3_acl2", acl.new.broker_addr, N)):
        for version in (399, 400, 409):
            for signed_flag in (True, False):
                fields = rp.sign(q, None, auth.access_key, auth.secret_key,
                                 leave_out=() if signed_flag else ("_UNIQUE_KEY_QUERY",))
                r = rp.invoke(addr, 12, fields, version=version)
                facts[f"{name}/query_v{version}_flag_{'signed' if signed_flag else 'unsigned'}"] = {
                    "code": r.code, "remark": r.remark}
    r = rp.invoke(acl.proxy.addr, 12, rp.sign(q, None, N.access_key, N.secret_key))
    facts["proxy_5.3.3/query_message"] = {"code": r.code, "remark": r.remark}
    # authorization (ACL 2.0): a NORMAL user without any policy
    L = NEW_LIMITED
    hb = json.dumps({"clientID": "127.0.0.1@probe", "consumerDataSet": [],
                     "producerDataSet": [{"groupName": "ProbeProducer"}]}).encode()
    for name, addr, code, ext, body in (
            ("new_broker_5.3.3_acl2/limited_get_max_offset", acl.new.broker_addr, 30, offset, None),
            ("new_broker_5.3.3_acl2/limited_heartbeat_no_groups", acl.new.broker_addr, 34, {}, hb),
            ("proxy_5.3.3_route/limited", acl.proxy.addr, 105, route, None)):
        r = rp.invoke(addr, code, rp.sign(ext, body, L.access_key, L.secret_key), body)
        facts[name] = {"code": r.code, "remark": r.remark}
    (test_dir / "server_facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))

    def f(key):
        return facts[key]["code"], facts[key]["remark"]

    for side in ("old_namesrv_4.9.7", "new_namesrv_5.3.3"):  # no ACL on name servers
        assert {facts[f"{side}/{v}"]["code"] for v in ("no_access_key", "unknown_access_key",
                                                        "bad_signature", "valid")} == {0}, facts
    assert facts["old_namesrv_4.9.7/valid"]["version"] == 407
    assert facts["new_namesrv_5.3.3/valid"]["version"] == 479
    b = "new_broker_5.3.3_acl2"
    assert f(f"{b}/no_access_key") == (16, "username cannot be null.")
    assert f(f"{b}/unknown_access_key") == (16, "User:nobodyAccess is not found.")
    assert f(f"{b}/bad_signature") == (16, "check signature failed.")
    assert f(f"{b}/valid")[0] == 0
    for p in ("proxy_5.3.3_route", "proxy_5.3.3_get_max_offset"):  # the proxy answers SYSTEM_ERROR
        assert f(f"{p}/no_access_key") == (1, "username cannot be null.")
        assert f(f"{p}/unknown_access_key") == (1, "User:nobodyAccess is not found.")
        assert f(f"{p}/bad_signature") == (1, "check signature failed.")
        assert f(f"{p}/valid")[0] == 0
    assert facts["proxy_5.3.3_route/valid"]["version"] == 479
    o = "old_broker_4.9.7_acl1"
    acl_exc = "org.apache.rocketmq.acl.common.AclException: "
    assert f(f"{o}/no_access_key")[0] == 1 and f(f"{o}/no_access_key")[1].startswith(
        acl_exc + "No accessKey is configured, ")
    assert f(f"{o}/unknown_access_key")[0] == 1 and f(f"{o}/unknown_access_key")[1].startswith(
        acl_exc + "No acl config for nobodyAccess, ")
    assert f(f"{o}/bad_signature")[0] == 1 and f(f"{o}/bad_signature")[1].startswith(
        acl_exc + f"Check signature failed for accessKey={O.access_key}, ")
    assert f(f"{o}/valid")[0] == 0
    # _UNIQUE_KEY_QUERY: 4.9.7 never verifies it; 5.3.3 verifies it when version > 399 (V4_9_3)
    for v in (399, 400, 409):
        assert f(f"{o}/query_v{v}_flag_signed")[0] == 1 and "Check signature failed" in f(f"{o}/query_v{v}_flag_signed")[1]
        assert f(f"{o}/query_v{v}_flag_unsigned")[0] == 22  # passed ACL: "can not find message"
    assert f(f"{b}/query_v399_flag_signed")[0] == 16 and f(f"{b}/query_v399_flag_unsigned")[0] == 22
    for v in (400, 409):
        assert f(f"{b}/query_v{v}_flag_signed")[0] == 22 and f(f"{b}/query_v{v}_flag_unsigned")[0] == 16
    assert f("proxy_5.3.3/query_message") == (3, " request type 12 not supported")
    denied = f"User:{NEW_LIMITED.access_key} has no permission to access Topic:{topic} from 127.0.0.1, no matched policies."
    assert f(f"{b}/limited_get_max_offset") == (16, denied)
    assert f(f"{b}/limited_heartbeat_no_groups")[0] == 0  # nothing to authorize: a bare heartbeat passes
    assert f("proxy_5.3.3_route/limited") == (1, denied)


def test_java_client_without_credentials_is_refused(acl, test_dir):
    """Proves the checks are on for the official client: no credentials -> no acked send, both
    straight at the ACL 2.0 cluster's name server and at the proxy."""
    tag = _tag()
    topic, group = f"AclRefused{tag}", f"AclRefusedPG{tag}"
    _prepare(acl.new, topic, group)
    pods = [harness.Pod(f"nocreds-{where}", "producer", namesrv=addr, topic=topic, group=group,
                        workdir=test_dir, count=1, rate=0, timers=harness.FAST_TIMERS, send_timeout_ms=2000)
            for where, addr in (("namesrv", acl.new.namesrv_addr), ("proxy", acl.proxy.addr))]
    try:
        for p in pods:
            p.start()
        harness.wait_until(lambda: all(len(_pod_failures(p)) >= 2 for p in pods), 60,
                           "two failed sends in each credential-less producer", 0.5)
    finally:
        for p in pods:
            p.stop(10)
    direct, via_proxy = pods
    assert direct.records() == [] and via_proxy.records() == []
    assert "username cannot be null" in direct.output(), _pod_failures(direct)[:3]
    # through the proxy even the route is refused; the client reports a missing route
    assert any("route" in ln.lower() for ln in _pod_failures(via_proxy)), _pod_failures(via_proxy)[:3]
    # and with the account, the same client works straight at the proxy (the setup is sound)
    res = harness.run_smoke(acl.proxy.addr, topic, f"AclRefusedCG{tag}", 10, test_dir,
                            extra_args=NEW_ACL.pod_args(), name="selfsigned-proxy")
    assert res.ok, f"self-signed smoke through the proxy: {res.summary}\n{res.output[-3000:]}"


# --------------------------------------------------------------------------- through the sidecar


@pytest.mark.parametrize("via", ["namesrv", "proxy"])
def test_sidecar_signs_for_new(via, acl, test_dir, sidecar_binary):
    tag = _tag()
    topic, group = f"AclNew{via}{tag}", f"AclNewCG{via}{tag}"
    _prepare(acl.new, topic, group)
    sc = _sidecar(f"new-{via}", acl, test_dir, sidecar_binary, target="new", via_proxy=(via == "proxy"))
    admin = AdminLog(sc)
    try:
        sc.start()
        route = admin.route()
        creds = route.get("credentials")
        assert isinstance(creds, dict), f"GET /route has no credentials section: {route}"
        assert creds["new"]["configured"] is True and creds["old"]["configured"] is False, creds
        _assert_check(admin, "new", "ok")
        res = harness.run_smoke(sc.namesrv_addr, topic, group, 30, test_dir, name=f"smoke-new-{via}")
        assert res.ok, f"{res.summary}\n{res.output[-3000:]}"
        _assert_no_secret_leak(sc, admin, [NEW_ACL.secret_key, OLD_ACL.secret_key])
    finally:
        rc = sc.stop()
    assert rc == 0, f"sidecar exit code after SIGTERM: {rc}"
    assert {r[1] for r in res.records} == {PREFIX + acl.new.broker_name}
    check = acl.new.keys_stored(topic, [r[0] for r in res.records], sample=5)
    assert check.all_found, check
    assert set(check.store_hosts.values()) == {acl.new.broker_addr}


def test_smoke_533_client_through_sidecar_to_proxy(acl, test_dir, sidecar_binary):
    """Also configures a SecurityToken: ACL 2.0 does not use it, but it is on the wire and must be
    signed exactly as Java's AclClientRPCHook signs it (see the ``security_token`` vector)."""
    tag = _tag()
    topic, group = f"AclNew533{tag}", f"AclNew533CG{tag}"
    _prepare(acl.new, topic, group)
    token = _secret_file(test_dir / "secrets-new533", "securityToken", "STS.interop-token-0001")
    sc = _sidecar("new533", acl, test_dir, sidecar_binary, target="new", via_proxy=True,
                  new_extra={"security_token_file": token})
    try:
        sc.start()
        res = harness.run_smoke(sc.namesrv_addr, topic, group, 30, test_dir,
                                client_version=harness.NEW_CLIENT_VERSION, name="smoke533-proxy")
        assert res.ok, f"{res.summary}\n{res.output[-3000:]}"
    finally:
        sc.stop()
    assert {r[1] for r in res.records} == {PREFIX + acl.new.broker_name}
    assert acl.new.keys_stored(topic, [r[0] for r in res.records], sample=5).all_found


def test_migration_to_acl_clusters(acl, test_dir, sidecar_binary, record_migration):
    """run_migration with credential-less apps: every sidecar signs for old (ACL 1.0; AccessKey and
    SecretKey files named in the TOML) and for new (ACL 2.0; AccessKey file and SecretKey value
    from the environment)."""
    secrets = test_dir / "secrets"
    options = dict(  # the other configuration paths: old from TOML files, new from the environment
        cluster_toml={"old": {"access_key_file": _secret_file(secrets, "old-accessKey", OLD_ACL.access_key),
                              "secret_key_file": _secret_file(secrets, "old-secretKey", OLD_ACL.secret_key),
                              "check_topic": CHECK_TOPIC}},
        env={"RMQ_SIDECAR_NEW_ACCESS_KEY_FILE": _secret_file(secrets, "new-accessKey", NEW_ACL.access_key),
             "RMQ_SIDECAR_NEW_SECRET_KEY": NEW_ACL.secret_key},
    )
    report = harness.run_migration(acl.old, acl.new, test_dir, label="acl: 4.9.7 ACL 1.0 -> 5.3.3 ACL 2.0",
                                   timers=harness.FAST_TIMERS, rate=50, broker_name_prefix=PREFIX,
                                   sidecar_binary=sidecar_binary, sidecar_options=options)
    record_migration(report)
    for sc_dir in test_dir.glob("sidecar-*"):
        log_text = harness.tail(sc_dir / "sidecar.log", 10**6)
        assert NEW_ACL.secret_key not in log_text and OLD_ACL.secret_key not in log_text, sc_dir


#: (old account, new account, new name server: "proxy" | "namesrv" | "dead", expected old, expected new)
CHECK_CASES = {
    "old-unknown-ak_new-bad-signature-proxy": (("nobodyOldAccess", OLD_ACL.secret_key),
                                               (NEW_ACL.access_key, WRONG_SECRET), "proxy",
                                               "unknown_access_key", "signature_rejected"),
    "old-bad-signature_new-unknown-ak-proxy": ((OLD_ACL.access_key, WRONG_SECRET),
                                               ("nobodyNewAccess", NEW_ACL.secret_key), "proxy",
                                               "signature_rejected", "unknown_access_key"),
    "new-unreachable": ((OLD_ACL.access_key, OLD_ACL.secret_key), (NEW_ACL.access_key, NEW_ACL.secret_key),
                        "dead", "ok", "unreachable"),
    # a valid ACL 2.0 user without any permission (authorization is on for the new cluster)
    "new-no-permission-proxy": ((OLD_ACL.access_key, OLD_ACL.secret_key),
                                (NEW_LIMITED.access_key, NEW_LIMITED.secret_key), "proxy", "ok", "no_permission"),
    "new-no-permission-namesrv": ((OLD_ACL.access_key, OLD_ACL.secret_key),
                                  (NEW_LIMITED.access_key, NEW_LIMITED.secret_key), "namesrv", "ok", "no_permission"),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_credential_check_outcomes(case, acl, test_dir, sidecar_binary):
    """POST /credentials/check classifies what the servers answer: unknown AccessKey and wrong
    signature, from the ACL 1.0 broker (code 1 + AclException text) and from the proxy (code 1,
    ACL 2.0 texts); an unreachable name server; a valid user without permission on ``check_topic``
    (answered by the proxy with code 1, by the broker with code 16; a bare heartbeat does not
    reveal it). No app traffic."""
    old_acc, new_acc, where, want_old, want_new = CHECK_CASES[case]
    dead = None
    if where == "dead":
        dead = harness.reserve_port_block(41990, (0,), step=7)  # reserved; nothing listens there
        new_ns = f"127.0.0.1:{dead}"
    else:
        new_ns = acl.proxy.addr if where == "proxy" else acl.new.namesrv_addr
    name = "chk-" + case[:24]
    secret = _secret_file(test_dir / f"secrets-{name}", "new-secretKey", new_acc[1])
    sc = _sidecar(name, acl, test_dir, sidecar_binary, target="old", old_creds=True, old_account=old_acc,
                  new_secret_path=secret, new_extra={"access_key": new_acc[0]}, new_namesrv=new_ns)
    admin = AdminLog(sc)
    want = {"old": want_old, "new": want_new}
    try:
        sc.start()
        got = {}
        for _ in range(3):  # a check may need a moment (connection set-up); bounded
            doc = admin.check()
            got = {"old": _outcome(doc, "old"), "new": _outcome(doc, "new")}
            if got == want:
                break
            time.sleep(1)
        assert got == want, f"expected {want}, got {got}; last document: {admin.texts[-1][:2000]}"
        route = admin.route()
        assert {s: _outcome(route, s) for s in ("old", "new")} == got, route.get("credentials")
        _assert_no_secret_leak(sc, admin, [WRONG_SECRET, OLD_ACL.secret_key, NEW_ACL.secret_key,
                                           NEW_LIMITED.secret_key])
    finally:
        sc.stop()
        if dead is not None:
            harness.release_ports([dead])


def test_wrong_secret_then_kubelet_swap(acl, test_dir, sidecar_binary):
    tag = _tag()
    topic, group, pgroup = f"AclSwap{tag}", f"AclSwapCG{tag}", f"AclSwapPG{tag}"
    _prepare(acl.new, topic, group)
    secret = SecretDir(test_dir / "secret-volume")
    secret.write({"secretKey": WRONG_SECRET})
    sc = _sidecar("swap", acl, test_dir, sidecar_binary, target="new", old_creds=True,
                  new_secret_path=secret.path("secretKey"))
    admin = AdminLog(sc)
    pods: list[harness.Pod] = []
    try:
        sc.start()
        _assert_check(admin, "new", "signature_rejected")
        assert _outcome(admin.route(), "old") == "ok", admin.texts[-1]

        consumer = harness.Pod("C", "consumer", namesrv=sc.namesrv_addr, topic=topic, group=group,
                               workdir=test_dir, timers=harness.FAST_TIMERS,
                               extra_args=["--consume-from", "first"]).start()
        producer = harness.Pod("P", "producer", namesrv=sc.namesrv_addr, topic=topic, group=pgroup,
                               workdir=test_dir, rate=20, timers=harness.FAST_TIMERS,
                               send_timeout_ms=2000).start()
        pods += [consumer, producer]
        harness.wait_until(lambda: len(_pod_failures(producer)) >= 3, 60,
                           "three failed sends while the SecretKey is wrong", 0.5, producer.proc.exited_reason)
        assert producer.records() == [], "a send was acked although the SecretKey is wrong"
        log_text = harness.tail(sc.log_path, 10**6)
        assert re.search(r"signature", log_text, re.I), "the sidecar log does not name the signature failure"

        t_swap = time.monotonic()
        secret.write({"secretKey": NEW_ACL.secret_key})  # kubelet: new ..<ts> dir, atomic ..data swap
        harness.wait_until(lambda: producer.records(), 30, "an acked send after the SecretKey swap", 0.25,
                           producer.proc.exited_reason)
        recovered_s = time.monotonic() - t_swap
        harness.log(f"first acked send {recovered_s:.1f}s after the secret swap")
        _assert_check(admin, "new", "ok")
        time.sleep(2)
        # a broken update (an empty secretKey) must keep the previous, good credentials
        acked_before = len(producer.records())
        secret.write({"secretKey": ""})
        time.sleep(5)  # > 2 reload periods
        acked_after = len(producer.records())
        assert acked_after > acked_before + 20, \
            f"sends stopped after a broken secret update ({acked_before} -> {acked_after} acks in 5 s)"
        _assert_check(admin, "new", "ok")
        producer.stop()
        sent = {r[0] for r in producer.records()}
        assert sent
        harness.wait_until(lambda: sent <= set(consumer.keys()), 60, "the consumer to receive every acked key",
                           1.0, consumer.proc.exited_reason)
        consumer.stop()
        lost = sorted(sent - set(consumer.keys()))
        assert lost == [], f"{len(lost)} acked keys never consumed: {lost[:10]}"
        _assert_no_secret_leak(sc, admin, [WRONG_SECRET, NEW_ACL.secret_key, OLD_ACL.secret_key])
    finally:
        for p in pods:
            p.stop(10)
        sc.stop()


def test_old_acl10_sidecar_signs(acl, test_dir, sidecar_binary):
    tag = _tag()
    topic, group = f"AclOld{tag}", f"AclOldCG{tag}"
    _prepare(acl.old, topic, group)
    sc = _sidecar("old-signs", acl, test_dir, sidecar_binary, target="old", old_creds=True, new_creds=False)
    admin = AdminLog(sc)
    try:
        sc.start()
        route = admin.route()
        assert route["credentials"]["old"]["configured"] is True
        assert route["credentials"]["new"]["configured"] is False
        _assert_check(admin, "old", "ok")
        res = harness.run_smoke(sc.namesrv_addr, topic, group, 30, test_dir, name="smoke-old-sidecar-signs")
        assert res.ok, f"{res.summary}\n{res.output[-3000:]}"
        _assert_no_secret_leak(sc, admin, [OLD_ACL.secret_key])
    finally:
        sc.stop()
    assert {r[1] for r in res.records} == {acl.old.broker_name}


def test_old_acl10_app_signs_itself_then_switch(acl, test_dir, sidecar_binary):
    """No old credentials in the sidecar: an app that signs for old itself passes through
    untouched. After a switch to new, the sidecar replaces the app's old signature by its own."""
    tag = _tag()
    topic, group = f"AclSelf{tag}", f"AclSelfCG{tag}"
    _prepare(acl.old, topic, group)
    _prepare(acl.new, topic, group)
    sc = _sidecar("app-signs", acl, test_dir, sidecar_binary, target="old", old_creds=False, new_creds=True)
    try:
        sc.start()
        res = harness.run_smoke(sc.namesrv_addr, topic, group, 20, test_dir, name="smoke-old-app-signs",
                                extra_args=OLD_ACL.pod_args())
        assert res.ok, f"app-signed traffic through the sidecar to ACL 1.0: {res.summary}\n{res.output[-3000:]}"
        assert {r[1] for r in res.records} == {acl.old.broker_name}
        sc.switch("new", force=True)  # the app stopped first: a signing test, not an order test
        res2 = harness.run_smoke(sc.namesrv_addr, topic, group + "N", 20, test_dir, name="smoke-new-app-signs-old",
                                 extra_args=OLD_ACL.pod_args())
        assert res2.ok, f"app signs with OLD credentials, sidecar must re-sign for new: {res2.summary}\n" \
                        f"{res2.output[-3000:]}"
        assert {r[1] for r in res2.records} == {PREFIX + acl.new.broker_name}
        log_text = harness.tail(sc.log_path, 10**6)
        assert OLD_ACL.secret_key not in log_text and NEW_ACL.secret_key not in log_text
    finally:
        sc.stop()


@pytest.mark.parametrize("side,rule", [("old", "auto"), ("old", "v4"), ("new", "auto")],
                         ids=["old-auto", "old-v4", "new-auto"])
def test_query_message_through_sidecar(side, rule, acl, test_dir, sidecar_binary):
    """The pod's query-keys mode (QUERY_MESSAGE with _UNIQUE_KEY_QUERY) through a sidecar that
    signs; the app has no credentials."""
    cluster = acl.old if side == "old" else acl.new
    auth = OLD_ACL if side == "old" else NEW_ACL
    tag = _tag()
    topic, pgroup = f"AclQuery{side}{tag}", f"AclQueryPG{tag}"
    _prepare(cluster, topic, pgroup)
    producer = harness.Pod(f"qp-{side}-{rule}", "producer", namesrv=cluster.namesrv_addr, topic=topic,
                           group=pgroup, workdir=test_dir, count=5, rate=0, extra_args=auth.pod_args())
    producer.start()
    rc = producer.wait_exit(60)
    producer.stop(5)
    keys = producer.keys()
    assert rc == 0 and len(keys) == 5, f"self-signed producer (direct): rc={rc}\n{producer.output()[-2000:]}"
    time.sleep(1.5)  # the key index is built asynchronously (ReputMessageService)

    if side == "old":  # control: the official client signing for itself cannot query a 4.9.x ACL broker
        direct, out = harness.query_keys(cluster.namesrv_addr, topic, keys[:2], test_dir, auth=auth,
                                         name=f"q-direct-{rule}")
        assert direct.found == [], f"expected the 4.9.x _UNIQUE_KEY_QUERY signature bug, got {direct}"
        assert "Check signature failed" in out, out[-2000:]

    kwargs = dict(old_creds=True, new_creds=False, old_rule=rule) if side == "old" else \
        dict(old_creds=False, new_creds=True, new_rule=rule)
    sc = _sidecar(f"query-{side}-{rule}", acl, test_dir, sidecar_binary, target=side, **kwargs)
    try:
        sc.start()
        check, out = harness.query_keys(sc.namesrv_addr, topic, keys, test_dir, name=f"q-sidecar-{side}-{rule}")
    finally:
        sc.stop()
    assert check.all_found and len(check.found) == len(keys), f"{check}\n{out[-3000:]}"
    assert set(check.store_hosts.values()) == {cluster.broker_addr}
