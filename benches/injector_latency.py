#!/usr/bin/env python3
"""Load tool: how long the injector takes to answer an admission review, and its memory.

Starts `rmq-injector webhook` on loopback with the fake Kubernetes API of
tests/deploy (HTTPS, bearer token) for the stage lookup, and sends AdmissionReviews over
one kept-alive HTTPS connection, as the API server does, in alternating rounds:

- baseline: a pod labelled opt-out (parse, assess, answer: no patch, no lookup);
- inject: the multi-container Deployment pod of tests/fixtures/inject (patch + diff);
- inject+stage: the same with its workload's stage read from the fake API server (one
  HTTPS request per review: the injector opens a connection per lookup).

Prints medians, p99s and the ratios against the baseline, plus the injector's RSS.
Timing is measured here, never asserted in tests.

    cargo build --release && python3 benches/injector_latency.py [--rounds 10 --per-round 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "deploy"))

from inject_support import FakeKubeApi, Webhook, fake_api_stages, gen_certs  # noqa: E402

REVIEWS = REPO / "tests" / "fixtures" / "inject" / "reviews"


def percentile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(REPO / "target" / "release" / "rmq-injector"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="injector-bench-"))
    certs = gen_certs(work / "certs")
    api = FakeKubeApi(certs)
    # Two injectors: one without stage lookups (configmap = ""), one with.
    plain = Webhook(Path(args.binary), work / "plain", certs, 'configmap = ""', "admit")
    staged = Webhook(Path(args.binary), work / "staged", certs, fake_api_stages(api, work / "staged"), "admit")
    try:
        opt_out = json.loads((REVIEWS / "opt-out.json").read_text())
        pod = json.loads((REVIEWS / "multi-container.json").read_text())
        cases = {
            "baseline (opt-out)": (plain, json.dumps(opt_out).encode()),
            "inject": (plain, json.dumps(pod).encode()),
            "inject+stage": (staged, json.dumps(pod).encode()),
        }
        conns = {}
        for name, (hook, _) in cases.items():
            ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
            conns[name] = http.client.HTTPSConnection("127.0.0.1", hook.https_port, context=ctx, timeout=10)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        peak = {id(plain): 0, id(staged): 0}

        def one(name: str) -> float:
            _, body = cases[name]
            conn = conns[name]
            start = time.perf_counter()
            conn.request("POST", "/inject", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            elapsed = time.perf_counter() - start
            assert resp.status == 200 and json.loads(data)["response"]["allowed"], data[:200]
            return elapsed

        for name in cases:  # warm-up: TLS handshake, first allocations
            for _ in range(50):
                one(name)
        idle = {"plain": rss_kib(plain.proc.pid), "staged": rss_kib(staged.proc.pid)}
        for _ in range(args.rounds):
            for name in cases:
                for _ in range(args.per_round):
                    samples[name].append(one(name))
            for hook in (plain, staged):
                peak[id(hook)] = max(peak[id(hook)], rss_kib(hook.proc.pid))

        print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
              f"Linux {platform.release()}; {args.rounds} rounds x {args.per_round} reviews per case, one keep-alive connection each")
        base = statistics.median(samples["baseline (opt-out)"])
        base99 = percentile(samples["baseline (opt-out)"], 0.99)
        print(f"{'case':<20} {'median':>10} {'p99':>10} {'ratio median/p99':>18}")
        for name, s in samples.items():
            med, p99 = statistics.median(s), percentile(s, 0.99)
            print(f"{name:<20} {med * 1e6:>8.0f}us {p99 * 1e6:>8.0f}us {med / base:>8.2f}x/{p99 / base99:.2f}x")
        print(f"injector RSS: idle {idle['plain'] / 1024:.1f} MiB (no lookups), {idle['staged'] / 1024:.1f} MiB "
              f"(lookups); peak {peak[id(plain)] / 1024:.1f} / {peak[id(staged)] / 1024:.1f} MiB")
        print(f"fake API server answered {len(api.requests)} stage lookups")
    finally:
        plain.stop()
        staged.stop()
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
