"""ACL signing known-answer vectors: tests/fixtures/acl_vectors.json is Apache's own output.

The fixture is written by ``tests/interop/acl/generate_vectors.py``: a Java program
(``tests/interop/acl``) that signs fixed RemotingCommands with the OFFICIAL
``org.apache.rocketmq.acl.common.AclClientRPCHook`` + ``SessionCredentials`` (and, for
``signature_without_unique_key``, Apache's ``AclUtils.combineRequestContent``/``calSignature``).

* ``test_fixture_is_apache_output[acl-4.9.8|client-5.3.3]``: rebuild + rerun the program against
  rocketmq-acl 4.9.8 and against rocketmq-client 5.3.3; both must print the committed fixture
  byte for byte (so CI proves the fixture is Apache's output, and that 5.3.3's copy of the classes
  signs identically).
* ``test_fixture_shape``: every case has the documented fields and covers what it claims.
* ``test_protocol_notes_algorithm_matches``: the algorithm of protocol notes 6.1, written out in
  a few lines of Python, reproduces every Apache signature (a readable spec for the Rust side).

No clusters and no sidecar needed; ~15 s (Maven builds cached under target/interop/acl-vectors).
Run: ``python3 -m pytest tests/interop/test_acl_vectors.py -v``
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

import harness

REQUIRED = ("name", "secret_key", "access_key", "security_token", "code", "version", "ext_fields_in",
            "body_base64", "signature", "ext_fields_out")


def _fixture_bytes() -> bytes:
    path = harness.ACL_VECTORS_FIXTURE
    assert path.exists(), f"{path} missing: run python3 tests/interop/acl/generate_vectors.py"
    return path.read_bytes()


def _cases() -> list[dict]:
    return json.loads(_fixture_bytes().decode("utf-8"))


@pytest.mark.parametrize("profile", harness.ACL_VECTOR_PROFILES)
def test_fixture_is_apache_output(profile):
    data, origin = harness.generate_acl_vectors(profile)
    jar = "rocketmq-acl-4.9.8.jar" if profile == "acl-4.9.8" else "rocketmq-client-5.3.3.jar"
    assert jar in origin, f"AclClientRPCHook was not loaded from {jar}: {origin}"
    fixture = _fixture_bytes()
    if data != fixture:
        fresh = {c["name"]: c for c in json.loads(data.decode("utf-8"))}
        diffs = [c["name"] for c in json.loads(fixture.decode("utf-8")) if fresh.get(c["name"]) != c]
        pytest.fail(f"{harness.ACL_VECTORS_FIXTURE} differs from the {profile} output (cases: {diffs}); "
                    "regenerate with python3 tests/interop/acl/generate_vectors.py")


def test_fixture_shape():
    cases = _cases()
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    for c in cases:
        missing = [k for k in REQUIRED if k not in c]
        assert not missing, f"{c.get('name')}: missing {missing}"
        out, inp = c["ext_fields_out"], c["ext_fields_in"]
        assert all(isinstance(v, str) for v in list(out.values()) + list(inp.values())), c["name"]
        added = {"AccessKey": c["access_key"], "Signature": c["signature"]}
        if c["security_token"] is not None:
            added["SecurityToken"] = c["security_token"]
        assert out == {**inp, **added}, f"{c['name']}: ext_fields_out != ext_fields_in + credentials"
        assert len(c["secret_key"]) > 6 and len(c["access_key"]) > 6
    by = {c["name"]: c for c in cases}
    codes = {c["code"] for c in cases}
    assert {105, 310, 320, 11, 34, 12} <= codes
    uni = by["send_message_v2_unicode"]
    props = uni["ext_fields_in"]["i"]
    assert "\u0001" in props and "\u0002" in props and any(ord(ch) > 0xFFFF for ch in props)
    assert any(ord(ch) > 0x7F for ch in base64.b64decode(uni["body_base64"]).decode("utf-8"))
    hb = by["heart_beat"]
    assert json.loads(base64.b64decode(hb["body_base64"]))["consumerDataSet"], "heartbeat body is HeartbeatData JSON"
    for name in ("query_message_unique_key", "query_message_key_v4_9_3"):
        q = by[name]
        assert "_UNIQUE_KEY_QUERY" in q["ext_fields_in"]
        assert q["signature_without_unique_key"] != q["signature"]
    cpp = by["cpp_json_numbers"]
    raw = json.loads(cpp["ext_json_in"])["extFields"]
    assert any(isinstance(v, bool) for v in raw.values()) and any(type(v) is int for v in raw.values())
    as_java = {k: (("true" if v else "false") if isinstance(v, bool) else str(v)) for k, v in raw.items()}
    assert as_java == cpp["ext_fields_in"], "Java's decoding of JSON numbers/booleans = their decimal/text form"
    assert by["security_token"]["ext_fields_out"]["SecurityToken"]


def _sign(fields: dict, body: bytes, secret_key: str) -> str:
    """Protocol notes 6.1: values (not keys) of all fields but Signature, in Java String order
    (UTF-16 code units), UTF-8, then the body; HmacSHA1 with the SecretKey; standard Base64."""
    keys = sorted((k for k in fields if k != "Signature"), key=lambda k: k.encode("utf-16-be"))
    content = "".join(fields[k] for k in keys).encode("utf-8") + body
    return base64.b64encode(hmac.new(secret_key.encode("utf-8"), content, hashlib.sha1).digest()).decode()


def test_protocol_notes_algorithm_matches():
    for c in _cases():
        body = base64.b64decode(c["body_base64"]) if c["body_base64"] is not None else b""
        assert _sign(c["ext_fields_out"], body, c["secret_key"]) == c["signature"], c["name"]
        if "signature_without_unique_key" in c:
            fields = {k: v for k, v in c["ext_fields_out"].items() if k != "_UNIQUE_KEY_QUERY"}
            assert _sign(fields, body, c["secret_key"]) == c["signature_without_unique_key"], c["name"]
