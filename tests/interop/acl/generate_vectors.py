#!/usr/bin/env python3
"""(Re)generate tests/fixtures/acl_vectors.json with Apache's own ACL signing code.

Builds tests/interop/acl (AclVectors.java) against rocketmq-acl 4.9.8 and against
rocketmq-client 5.3.3, runs both, refuses to write unless both outputs are identical, then writes
the 4.9.8 output to the fixture. ``tests/interop/test_acl_vectors.py`` checks the committed
fixture against a fresh run.

Run: ``python3 tests/interop/acl/generate_vectors.py [--check]``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402


def main() -> int:
    check_only = "--check" in sys.argv[1:]
    outputs = {}
    for profile in harness.ACL_VECTOR_PROFILES:
        data, origin = harness.generate_acl_vectors(profile)
        harness.log(f"{profile}: {len(data)} bytes ({origin})")
        outputs[profile] = data
    first, *rest = harness.ACL_VECTOR_PROFILES
    for other in rest:
        if outputs[other] != outputs[first]:
            print(f"ERROR: {other} and {first} disagree; fixture not written", file=sys.stderr)
            return 1
    fixture = harness.ACL_VECTORS_FIXTURE
    if check_only:
        same = fixture.exists() and fixture.read_bytes() == outputs[first]
        print(f"{fixture}: {'up to date' if same else 'DIFFERS from Apache output'}")
        return 0 if same else 1
    fixture.parent.mkdir(parents=True, exist_ok=True)
    fixture.write_bytes(outputs[first])
    print(f"wrote {fixture} ({len(outputs[first])} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
