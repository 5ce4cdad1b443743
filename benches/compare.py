#!/usr/bin/env python3
"""The sidecar against the L4 floor, side by side, in one run on loopback.

    cargo build --release && python3 benches/compare.py [--seconds 3] [--rounds 3] [--real]

Paths, each measured with the same load generator (`benches/load.rs`, SEND_MESSAGE_V2 frames
as a producer writes them) and interleaved round by round so they see the same machine:

    direct     the load generator straight to the broker
    haproxy    haproxy 2.6 (Debian) in TCP mode in front of the broker: the L4 floor
    plain      the sidecar, old cluster: nothing to change, frames relayed as bytes
    rename     the sidecar, new cluster: broker names mapped (`new~` prefix)
    sign       the sidecar, new cluster with credentials: every request renamed and re-signed

against a minimal broker (`load serve`: answers every send at once) and, with `--real`, against
a real Apache RocketMQ 5.3.3 broker started by the interop harness (messages are stored).

Printed per shape (connections x requests in flight x body): throughput, p50/p99/p999 latency,
the proxy's CPU per message (utime + stime of its process over the run, from /proc), its RSS
after the run, and the ratios to direct and to haproxy. haproxy and the sidecar run with their
defaults (both use every core). Nothing is asserted: these are figures to publish with the
machine they came from (README "Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODES = ["direct", "haproxy", "plain", "rename", "sign"]
#: (label, connections, in flight per connection, body bytes)
SHAPES_MINIMAL = [("sync 100 B", 1, 1, 100), ("sync 1 KiB", 1, 1, 1024), ("8x16 1 KiB", 8, 16, 1024),
                  ("64x4 1 KiB", 64, 4, 1024), ("4x4 64 KiB", 4, 4, 65536), ("1x2 4 MiB", 1, 2, 4 << 20)]
#: What the flood of --scrape-storm asks for (RMQ_STORM_PATH=/live compares a cheap answer).
STORM_PATH = os.environ.get("RMQ_STORM_PATH", "/metrics")
SHAPES_REAL = [("sync 1 KiB", 1, 1, 1024), ("8x16 1 KiB", 8, 16, 1024), ("4x4 64 KiB", 4, 4, 65536)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_binary() -> Path:
    out = subprocess.run(["cargo", "bench", "--bench", "load", "--no-run", "--message-format=json"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "load" and msg.get("executable"):
            return Path(msg["executable"])
    raise SystemExit("compare.py: cargo did not report the load bench's executable")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_port(addr: str, timeout: float = 15, log: Path | None = None) -> None:
    host, port = addr.rsplit(":", 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"compare.py: nothing listens on {addr}" + (f":\n{log.read_text()[-2000:]}" if log else ""))


class Paths:
    """The proxies in front of one broker, and where each path's traffic goes."""

    def __init__(self, load: Path, broker: str, namesrv: str, topic: str, workdir: Path, idle: int = 0):
        self.load, self.procs, self.addr, self.pid = load, [], {}, {}
        #: each sidecar's health port (for the scrape storm)
        self.health: dict[str, str] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        self.addr["direct"] = broker
        port = free_port()
        cfg = workdir / "haproxy.cfg"
        cfg.write_text(f"""global
  maxconn {max(1000, idle + 100)}
defaults
  mode tcp
  timeout connect 3s
  timeout client 1h
  timeout server 1h
listen broker
  bind 127.0.0.1:{port}
  server b {broker}
""")
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        p = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                             stderr=(workdir / "haproxy.log").open("wb"))
        self.procs.append(p)
        self.addr["haproxy"], self.pid["haproxy"] = f"127.0.0.1:{port}", p.pid
        wait_port(self.addr["haproxy"], log=workdir / "haproxy.log")
        sidecar = REPO / "target" / "release" / "rmq-sidecar"
        for i, mode in enumerate(("plain", "rename", "sign")):
            ns_port, admin, health = free_port(), free_port(), free_port()
            (workdir / mode).mkdir(parents=True, exist_ok=True)
            secret = workdir / mode / "secret-key"
            secret.write_text("benchSecretKey-0")
            credentials = (f'access_key = "benchAccessKey"\nsecret_key_file = "{secret}"\n'
                           if mode == "sign" else "")
            config = workdir / mode / "sidecar.toml"
            config.write_text(f"""target = "{'old' if mode == 'plain' else 'new'}"
state_dir = "{workdir / mode}"
log = "warn"
[listen]
namesrv = "127.0.0.1:{ns_port}"
admin = "127.0.0.1:{admin}"
health = "127.0.0.1:{health}"
broker_bind = "127.{81 + i}.0.0/16"
[limits]
broker_connections = {max(1024, idle + 16)}
[gates]
enabled = false
[clusters.old]
namesrv = "{namesrv}"
[clusters.new]
namesrv = "{namesrv}"
{credentials}""")
            p = subprocess.Popen([str(sidecar), "--config", str(config)], stdout=subprocess.DEVNULL,
                                 stderr=(workdir / f"{mode}.log").open("wb"))
            self.procs.append(p)
            wait_port(f"127.0.0.1:{ns_port}", log=workdir / f"{mode}.log")
            route = subprocess.run([str(load), "route", f"namesrv=127.0.0.1:{ns_port}", f"topic={topic}"],
                                   capture_output=True, text=True, timeout=30)
            if route.returncode != 0:
                raise SystemExit(f"compare.py: {mode}: no route through the sidecar:\n{route.stderr}")
            self.addr[mode], self.pid[mode] = route.stdout.strip(), p.pid
            self.health[mode] = f"127.0.0.1:{health}"
        time.sleep(1)
        self.idle_rss = {mode: rss_mib(pid) for mode, pid in self.pid.items()}

    def hold(self, mode: str, conns: int) -> dict:
        """RSS of the proxy idle, with `conns` idle connection pairs held, and 5 s and 30 s
        after they closed (what the allocator gave back)."""
        pid = self.pid[mode]
        before = rss_mib(pid)
        p = subprocess.Popen([str(self.load), "hold", f"addr={self.addr[mode]}", f"conns={conns}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline().strip()
        if line != f"held {conns}":
            raise SystemExit(f"compare.py: {mode}: could not hold {conns} connections ({line!r})")
        time.sleep(1)
        held = rss_mib(pid)
        p.stdin.close()
        p.wait(60)
        time.sleep(5)
        after5 = rss_mib(pid)
        time.sleep(25)
        return {"path": mode, "pairs": conns, "rss_before_mib": before, "rss_held_mib": held,
                "kib_per_pair": (held - before) * 1024 / conns, "rss_5s_after_mib": after5,
                "rss_30s_after_mib": rss_mib(pid)}

    def run(self, mode: str, conns: int, depth: int, body: int, seconds: float, topic: str) -> dict:
        pid = self.pid.get(mode)
        before = cpu_ticks(pid) if pid else 0
        out = subprocess.run([str(self.load), "run", f"addr={self.addr[mode]}", f"conns={conns}", f"depth={depth}",
                              f"body={body}", f"seconds={seconds}", f"topic={topic}"],
                             capture_output=True, text=True, timeout=seconds + 60)
        if out.returncode != 0:
            raise SystemExit(f"compare.py: load run {mode} failed:\n{out.stderr}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if pid:
            used = (cpu_ticks(pid) - before) / CLK_TCK
            result["cpu_us_per_msg"] = used / max(result["msgs"], 1) * 1e6
            result["rss_mib"] = rss_mib(pid)
        return result

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def scrape_storm(paths: Paths, seconds: float, rounds: int, rate: int) -> None:
    """Sync 1 KiB sends through the plain sidecar, alone and while `load scrape` asks its
    health port for /metrics `rate` times a second (4 keep-alive connections)."""
    print(f"\n## Relay latency during a scrape storm ({rate} GET {STORM_PATH} per second; "
          "plain sidecar, sync 1 KiB)\n")
    print("| | msgs/s | p50 µs | p99 µs | p99.9 µs | /metrics answered per s | sidecar CPU µs/msg |")
    print("|---|---|---|---|---|---|---|")
    quiet, storm, scrapes = [], [], []
    for _ in range(rounds):
        quiet.append(paths.run("plain", 1, 1, 1024, seconds, "BenchTopic"))
        floods = [subprocess.Popen([str(paths.load), "scrape", f"addr={paths.health['plain']}",
                                    f"path={STORM_PATH}", f"rate={rate / 4}", f"seconds={seconds + 2}"],
                                   stdout=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(1)
        storm.append(paths.run("plain", 1, 1, 1024, seconds, "BenchTopic"))
        answered = sum(int(p.communicate(timeout=seconds + 30)[0].split()[-1]) for p in floods)
        scrapes.append(answered / (seconds + 2))
    for label, results, rate in (("alone", quiet, ""), ("during the flood", storm,
                                                         f"{statistics.median(scrapes):,.0f}")):
        r = median_result(results)
        print(f"| {label} | {r['msgs_per_s']:,.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['p999_us']:.0f} "
              f"| {rate} | {r['cpu_us_per_msg']:.1f} |", flush=True)


def median_result(results: list[dict]) -> dict:
    keys = results[0].keys()
    return {k: statistics.median(r[k] for r in results) for k in keys}


def report(title: str, paths: Paths, shapes, seconds: float, rounds: int, topic: str) -> list[dict]:
    print(f"\n## {title}\n")
    print("| shape | path | msgs/s | p50 µs | p99 µs | p99.9 µs | errors / unanswered | CPU µs/msg | RSS MiB "
          "| thr vs direct | thr vs haproxy | CPU vs haproxy | added p50 / p99 over direct µs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for label, conns, depth, body in shapes:
        per_mode: dict[str, list[dict]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for mode in MODES:
                per_mode[mode].append(paths.run(mode, conns, depth, body, seconds, topic))
        med = {m: median_result(rs) for m, rs in per_mode.items()}
        d, h = med["direct"], med["haproxy"]
        for mode in MODES:
            r = med[mode]
            cpu = r.get("cpu_us_per_msg")
            row = {"shape": label, "path": mode, **r}
            rows.append(row)
            added = (f"{r['p50_us'] - d['p50_us']:+.0f} / {r['p99_us'] - d['p99_us']:+.0f}"
                     if mode != "direct" else "")
            cpu_text = "" if cpu is None else f"{cpu:.1f}"
            cpu_ratio = "" if cpu is None else f"{cpu / h['cpu_us_per_msg']:.2f}"
            rss = r.get("rss_mib")
            rss_text = "" if rss is None else f"{rss:.1f}"
            print(f"| {label} | {mode} | {r['msgs_per_s']:,.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} "
                  f"| {r['p999_us']:.0f} | {r['errors']:.0f} / {r['unanswered']:.0f} | {cpu_text} | {rss_text} "
                  f"| {r['msgs_per_s'] / d['msgs_per_s']:.2f} | {r['msgs_per_s'] / h['msgs_per_s']:.2f} "
                  f"| {cpu_ratio} | {added} |", flush=True)
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    haproxy = subprocess.run([shutil.which("haproxy") or "/usr/sbin/haproxy", "-v"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, {haproxy}, {time.strftime('%Y-%m-%d')}"


def ensure_haproxy() -> None:
    if shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists():
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", "haproxy"], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--real", action="store_true", help="also against a real RocketMQ 5.3.3 broker")
    ap.add_argument("--idle", type=int, default=0, metavar="N",
                    help="also hold N idle connection pairs through haproxy and the plain sidecar: RSS")
    ap.add_argument("--idle-only", action="store_true", help="only the idle pairs (with --idle)")
    ap.add_argument("--scrape-storm", type=int, default=0, metavar="RATE",
                    help="also the relay's latency while /metrics is asked RATE times a second")
    ap.add_argument("--json", type=Path, help="write every row here")
    args = ap.parse_args()
    ensure_haproxy()
    load = load_binary()
    print(f"Machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rmq-compare-") as tmp:
        workdir = Path(tmp)
        server = subprocess.Popen([str(load), "serve"], stdout=subprocess.PIPE, text=True)
        fields = dict(kv.split("=", 1) for kv in server.stdout.readline().split())
        paths = Paths(load, fields["broker"], fields["namesrv"], "BenchTopic", workdir / "minimal", args.idle)
        try:
            print("\nIdle RSS after start (MiB): " + ", ".join(f"{m} {v:.1f}" for m, v in paths.idle_rss.items()))
            if args.idle:
                print(f"\n## {args.idle} idle connection pairs held, then closed\n")
                print("| path | RSS before MiB | held MiB | KiB per pair | 5 s after close MiB | 30 s after MiB |")
                print("|---|---|---|---|---|---|")
                for mode in ("haproxy", "plain"):
                    r = paths.hold(mode, args.idle)
                    rows.append(r)
                    print(f"| {mode} | {r['rss_before_mib']:.1f} | {r['rss_held_mib']:.1f} | {r['kib_per_pair']:.1f} "
                          f"| {r['rss_5s_after_mib']:.1f} | {r['rss_30s_after_mib']:.1f} |", flush=True)
            if args.scrape_storm:
                scrape_storm(paths, args.seconds, args.rounds, args.scrape_storm)
            if not args.idle_only:
                rows += report("Minimal broker (answers every send at once)", paths, SHAPES_MINIMAL,
                               args.seconds, args.rounds, "BenchTopic")
        finally:
            paths.stop()
            server.terminate()
        if args.real:
            sys.path.insert(0, str(REPO / "tests" / "interop"))
            import harness
            harness.ensure_rocketmq(harness.NEW_SERVER_VERSION)
            harness.ensure_admin_runner()
            ns_port = harness.reserve_port_block(29976, (0,), step=10)
            br_port = harness.reserve_port_block(30991, harness.BROKER_PORT_OFFSETS, step=10)
            cluster = harness.Cluster(harness.NEW_SERVER_VERSION, "bench", ns_port, br_port, "bench-broker-a",
                                      "BenchCluster", workdir / "cluster")
            cluster.start(150)
            try:
                cluster.update_topic("BenchTopic")
                paths = Paths(load, cluster.broker_addr, cluster.namesrv_addr, "BenchTopic", workdir / "real")
                try:
                    rows += report("Real Apache RocketMQ 5.3.3 broker (messages stored)", paths, SHAPES_REAL,
                                   args.seconds, args.rounds, "BenchTopic")
                finally:
                    paths.stop()
            finally:
                cluster.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
