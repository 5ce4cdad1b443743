"""The namespace known answers (tests/fixtures/namespace-vectors.tsv, read by the Rust unit
test of src/protocol/namespace.rs) are what Apache RocketMQ's own NamespaceUtil answers:
regenerated here from the official 5.3.3 client jars and compared with the checked-in file.
Regenerate it with ``python3 tests/interop/test_namespace_vectors.py --write``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import harness

SOURCE = Path(__file__).resolve().parent / "namespace" / "NamespaceVectors.java"
FIXTURE = harness.REPO / "tests" / "fixtures" / "namespace-vectors.tsv"


def generate() -> str:
    build = harness.ensure_client(harness.NEW_CLIENT_VERSION)
    out = harness.OUT / "namespace-vectors"
    out.mkdir(parents=True, exist_ok=True)
    cp = f"{build.lib}/*"
    subprocess.run([harness._require_tool("javac"), "-d", str(out), "-cp", cp, str(SOURCE)], check=True,
                   capture_output=True, timeout=120)
    r = subprocess.run([harness._require_tool("java"), "-cp", f"{out}:{cp}", "NamespaceVectors"],
                       check=True, capture_output=True, text=True, timeout=120)
    return r.stdout


def test_fixture_is_what_the_official_namespace_util_answers():
    generated = generate()
    assert generated.count("\n") > 20
    assert FIXTURE.read_text() == generated, "tests/fixtures/namespace-vectors.tsv is stale: regenerate it"


if __name__ == "__main__":
    if "--write" in sys.argv:
        FIXTURE.write_text(generate())
        print(f"wrote {FIXTURE}")
