#!/usr/bin/env python3
"""Demo migration with a chart: what the sidecars' metrics showed while the pods moved.

    python3 -m pip install matplotlib          # only this script needs it
    cargo build --release
    RMQ_SIDECAR_BIN=target/release/rmq-sidecar python3 tests/interop/demo_chart.py

Runs the same migration as demo.py (old cluster 4.9.7, new cluster 5.3.3, pods C1, C2 and P
with the Java client's DEFAULT timers, switched C1 -> P -> C2 through the admin API, via
``harness.run_migration``; ~3-5 minutes) while a background thread scrapes every running
sidecar's ``GET /metrics`` on its health port once a second. At the end it writes

* ``docs/demo-metrics.csv``: the samples, one row per scraped sample (histogram ``_bucket``
  series left out; their ``_sum``/``_count`` are kept): ``unix_time, t_s`` (seconds since the
  first scrape), ``pod``, ``sample``, ``labels`` (``k=v;k=v``), ``value``;
* ``docs/demo-traffic.png``: requests/s to old vs new summed over the pods (from
  ``rmq_sidecar_requests_total``), with a vertical marker at each switch, and below it each
  pod's ``rmq_sidecar_route_target``.

Options: --rate (default 50 msg/s), --keep-producing (default 15 s), --sidecar PATH,
--out-dir (default docs/), --from-csv CSV (only re-render the PNG from an earlier run's CSV).
Exit code 0 when nothing acked was lost and the chart was written.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
POD_OF = {"c1": "C1", "c2": "C2", "p": "P"}
TITLE = ("Migration demo: rmq-sidecar in front of 3 pods (Java client {client}, default timers), "
         "old RocketMQ {old} -> new {new}{rate}\n"
         "dashed: a sidecar switched (PUT /route); its pod moves at its next route poll (default every 30 s)")


class Scraper(threading.Thread):
    """Scrapes GET /metrics of every live sidecar the harness started, once per ``interval``."""

    def __init__(self, interval: float = 1.0):
        super().__init__(name="metrics-scraper", daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.rows: list[tuple] = []  # (unix_time, pod, sample, labels, value)
        self.errors = 0

    def sidecars(self) -> list:
        return [s for s in list(harness.LOG_SOURCES) if isinstance(s, harness.Sidecar) and s.alive()]

    def scrape(self, sc) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", sc.health_port, timeout=0.8)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
            return body if resp.status == 200 else None
        except OSError:
            return None
        finally:
            conn.close()

    def run(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        next_tick = time.time()
        while not self.stop_event.is_set():
            tick = time.time()
            for sc in self.sidecars():
                text = self.scrape(sc)
                if text is None:
                    self.errors += 1
                    continue
                pod = POD_OF.get(sc.name, sc.name)
                for fam in text_string_to_metric_families(text):
                    for s in fam.samples:
                        if s.name.endswith("_bucket"):
                            continue
                        labels = ";".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                        self.rows.append((tick, pod, s.name, labels, s.value))
            next_tick += self.interval
            self.stop_event.wait(max(0.0, next_tick - time.time()))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


def write_csv(rows: list[tuple], t0: float, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unix_time", "t_s", "pod", "sample", "labels", "value"])
        for tick, pod, name, labels, value in rows:
            w.writerow([f"{tick:.3f}", f"{tick - t0:.3f}", pod, name, labels, f"{value:g}"])


def read_csv(path: Path) -> list[tuple]:
    with path.open(newline="") as f:
        return [(float(r["unix_time"]), r["pod"], r["sample"], r["labels"], float(r["value"]))
                for r in csv.DictReader(f)]


def switches_from_rows(rows: list[tuple]) -> list[tuple[float, str]]:
    """(unix time, "<pod> -> <target>") wherever a pod's route generation went up between scrapes."""
    last: dict[str, tuple[float, float]] = {}
    target_at: dict[tuple[float, str], str] = {}
    for tick, pod, name, labels, value in rows:
        if name == "rmq_sidecar_route_target" and value == 1:
            target_at[(tick, pod)] = dict(kv.split("=", 1) for kv in labels.split(";") if kv).get("target", "?")
    out = []
    for tick, pod, name, _, value in rows:
        if name != "rmq_sidecar_route_generation":
            continue
        if pod in last and value > last[pod][1]:
            out.append((tick, f"{pod} -> {target_at.get((tick, pod), '?')}"))
        last[pod] = (tick, value)
    return sorted(out)


def request_rates(rows: list[tuple], t0: float) -> dict[str, tuple[list[float], list[float]]]:
    """target -> (times, requests/s summed over the pods), from rmq_sidecar_requests_total."""
    totals: dict[tuple, float] = defaultdict(float)  # (tick, pod, target) -> sum over codes/peers
    ticks: set[float] = set()
    pods_at: dict[float, set] = defaultdict(set)
    for tick, pod, name, labels, value in rows:
        ticks.add(tick)
        pods_at[tick].add(pod)
        if name == "rmq_sidecar_requests_total":
            target = dict(kv.split("=", 1) for kv in labels.split(";") if kv).get("target", "?")
            totals[(tick, pod, target)] += value
    order = sorted(ticks)
    out: dict[str, tuple[list[float], list[float]]] = {}
    for target in ("old", "new"):
        xs, ys = [], []
        for prev, cur in zip(order, order[1:]):
            dt = cur - prev
            rate = 0.0
            for pod in pods_at[cur] & pods_at[prev]:
                d = totals.get((cur, pod, target), 0.0) - totals.get((prev, pod, target), 0.0)
                rate += max(d, 0.0) / dt  # a reset (restart) counts as 0, not negative
            xs.append(cur - t0)
            ys.append(rate)
        out[target] = (xs, ys)
    return out


def route_states(rows: list[tuple], t0: float) -> dict[str, list[tuple[float, int]]]:
    """pod -> [(t, 1 if on new else 0)], from rmq_sidecar_route_target{target="new"}."""
    out: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for tick, pod, name, labels, value in rows:
        parts = labels.split(";")
        # One series per role since per-role routing; the demo moves whole pods, so the
        # consumers' series says where the pod is (older CSVs have no role label).
        if name == "rmq_sidecar_route_target" and "target=new" in parts and "role=producer" not in parts:
            out[pod].append((tick - t0, int(value)))
    return out


def render(rows: list[tuple], t0: float, switches: list[tuple[float, str]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = {"old": "#e8871e", "new": "#2e9e44"}
    rates = request_rates(rows, t0)
    states = route_states(rows, t0)
    pods = [p for p in ("C1", "P", "C2") if p in states] + sorted(set(states) - {"C1", "P", "C2"})
    end = max((r[0] for r in rows), default=t0) - t0

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1.3]})
    for target in ("old", "new"):
        xs, ys = rates[target]
        ax1.plot(xs, ys, color=colors[target], lw=1.4, label=f"to {target} cluster")
    ax1.set_ylabel("requests/s (sum over pods)")
    peak = max([y for target in rates for y in rates[target][1]] or [1.0])
    ax1.set_ylim(0, peak * 1.3)  # headroom for the legend and the switch labels
    ax1.grid(alpha=0.3)
    ax1.set_title(title, fontsize=11)

    for t, label in switches:
        for ax in (ax1, ax2):
            ax.axvline(t - t0, color="#555555", ls="--", lw=1)
        ax1.annotate(label, xy=(t - t0, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -14),
                     textcoords="offset points", fontsize=9, color="#333333", rotation=0)
    ax1.legend(loc="upper center", ncol=2, bbox_to_anchor=(0.5, 0.93))

    for i, pod in enumerate(pods):
        pts = states[pod]
        for (ta, va), (tb, _) in zip(pts, pts[1:] + [(end, None)]):
            ax2.broken_barh([(ta, max(tb - ta, 0.5))], (i - 0.35, 0.7),
                            facecolors=colors["new" if va else "old"], edgecolor="none")
    ax2.set_yticks(range(len(pods)))
    ax2.set_yticklabels([f"pod {p}" for p in pods])
    ax2.set_ylim(-0.6, len(pods) - 0.4)
    ax2.invert_yaxis()
    ax2.set_xlabel("seconds since the first scrape")
    ax2.set_title("rmq_sidecar_route_target per pod", fontsize=10)
    ax2.legend(handles=[Patch(color=colors["old"], label="old"), Patch(color=colors["new"], label="new")],
               loc="lower right", fontsize=8, ncol=2)
    ax2.set_xlim(0, end)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50, help="producer messages per second (default 50)")
    ap.add_argument("--keep-producing", type=float, default=15,
                    help="seconds to keep producing after the last switch (default 15)")
    ap.add_argument("--sidecar", type=Path, help="sidecar binary (default: $RMQ_SIDECAR_BIN or newest target/*)")
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs", help="where the CSV and the PNG go")
    ap.add_argument("--from-csv", type=Path, metavar="CSV",
                    help="do not run anything: re-render the PNG from an earlier run's CSV (switch markers "
                         "then come from rmq_sidecar_route_generation changes, to the second)")
    args = ap.parse_args(argv)
    if args.from_csv:
        rows = read_csv(args.from_csv)
        png_path = args.out_dir / "demo-traffic.png"
        render(rows, rows[0][0], switches_from_rows(rows), png_path, TITLE.format(
            client=harness.OLD_CLIENT_VERSION, old=harness.OLD_SERVER_VERSION, new=harness.NEW_SERVER_VERSION,
            rate=""))
        print(f"demo_chart: wrote {png_path} from {args.from_csv}")
        return 0

    try:
        import matplotlib  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as e:
        print(f"demo_chart: {e}; run `python3 -m pip install matplotlib prometheus_client`", file=sys.stderr)
        return 2
    binary = args.sidecar or harness.find_sidecar_binary()
    if binary is None or not binary.exists():
        print("demo_chart: no rmq-sidecar binary; run `cargo build --release` (or pass --sidecar)", file=sys.stderr)
        return 2

    timers = harness.DEFAULT_TIMERS
    t_start = time.monotonic()
    marks: list[tuple[float, str]] = []

    def say(msg: str) -> None:
        marks.append((time.time(), msg))
        print(f"[demo_chart {time.monotonic() - t_start:6.1f}s] {msg}", flush=True)

    say(f"sidecar binary: {binary}")
    harness.ensure_admin_runner()
    for v in (harness.OLD_SERVER_VERSION, harness.NEW_SERVER_VERSION):
        harness.ensure_rocketmq(v)
    harness.ensure_client(harness.OLD_CLIENT_VERSION)

    run = harness.new_run_dir()
    old = harness.Cluster(
        harness.OLD_SERVER_VERSION, "old",
        harness.reserve_port_block(29876, (0,)), harness.reserve_port_block(30911, harness.BROKER_PORT_OFFSETS),
        "old-broker-a", "OldCluster", run / "old")
    new = harness.Cluster(
        harness.NEW_SERVER_VERSION, "new",
        harness.reserve_port_block(39876, (0,)), harness.reserve_port_block(40911, harness.BROKER_PORT_OFFSETS),
        "new-broker-a", "NewCluster", run / "new")
    scraper = Scraper()
    report = None
    try:
        say(f"starting the OLD cluster (RocketMQ {old.version}) and the NEW one (RocketMQ {new.version})")
        harness.start_clusters(old, new)
        say(f"both clusters are up; client timers: {timers.describe()}")
        scraper.start()
        report = harness.run_migration(
            old, new, run / "demo", label="demo with metrics chart", timers=timers, rate=args.rate, say=say,
            sidecar_binary=binary,
            bounds=harness.MigrationBounds.for_timers(timers, keep_producing=args.keep_producing))
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    except harness.HarnessError as e:
        say(f"FAILED: {e}")
        print(harness.dump_all_logs(lines=30))
        return 1
    finally:
        scraper.stop()
        harness.stop_clusters(old, new)
        harness.kill_all_live()

    print()
    print(report.format())
    rows = scraper.rows
    if not rows:
        say("no metrics were scraped; nothing to chart")
        return 1
    t0 = rows[0][0]
    switches = []
    for sc in (s for s in harness.LOG_SOURCES if isinstance(s, harness.Sidecar)):
        for when, target, status, _ in sc.switches:
            if status == 200:
                switches.append((when, f"{POD_OF.get(sc.name, sc.name)} -> {target}"))
    switches.sort()
    csv_path = args.out_dir / "demo-metrics.csv"
    png_path = args.out_dir / "demo-traffic.png"
    write_csv(rows, t0, csv_path)
    title = TITLE.format(client=harness.OLD_CLIENT_VERSION, old=old.version, new=new.version,
                         rate=f", producer {args.rate:g} msg/s")
    render(rows, t0, switches, png_path, title)
    say(f"wrote {csv_path} ({len(rows)} samples, {scraper.errors} failed scrapes) and {png_path}")
    for when, label in switches:
        say(f"switch at {when - t0:6.1f}s: {label}")
    ok = report.error is None and not report.lost and report.sent_new > 0
    say("OK: nothing acked was lost" if ok else f"NOT OK: lost={len(report.lost)} error={report.error!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
