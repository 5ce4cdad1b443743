"""The guarded five-step migration of a small fleet, for the demo (and its interop test).

Pods (each a real Java client behind its own sidecar, keyed load throughout):

* topic A: producer pod ``PA``; consumer group GA on pods ``CA1``, ``CA2`` and ``X``;
* topic B: producer pods ``PB`` and ``X``; consumer group GB on pods ``CB1``, ``CB2``.

``X`` does both: it consumes A and produces B (two JVMs behind one sidecar), so it moves its
consumers with A's consumers and its producers with B's producers.

Safe mode, with the gates on: it first tries to move ``PA``'s producers (refused: GA is not on
new yet); then (1) preflight, (2) some consumers of every group (``CA1``, ``X``, ``CB1``),
(3) some producers (``PB``), (4) all producers (``PA``, ``X``), (5) the remaining consumers
(``CA2``, ``CB2``) once their gate passes (old drained, no recent write). Unsafe mode forces
the wrong order: every producer first, the consumers after, and counts what was lost.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Callable

import harness

PREFIX = "new~"


@dataclasses.dataclass
class Step:
    step: str
    pod: str
    role: str
    took_s: float
    gate: str


@dataclasses.dataclass
class GuardedReport:
    mode: str
    refusal: str = ""
    steps: list = dataclasses.field(default_factory=list)
    topics: dict = dataclasses.field(default_factory=dict)
    error: str | None = None

    @property
    def lost(self) -> int:
        return sum(len(t["lost"]) for t in self.topics.values())

    def format(self) -> str:
        lines = [f"== {self.mode} migration =="]
        if self.refusal:
            lines.append(f"first attempt, producers before consumers: REFUSED: {self.refusal}")
        lines.append("")
        lines.append("took: from the switch until the pod's role acts on new (its consumers online there, "
                     "its producers acked by it); a gate's wait comes before that")
        lines.append(f"{'step':<26}{'pod':<6}{'role':<10}{'took':>8}  gate")
        for s in self.steps:
            lines.append(f"{s.step:<26}{s.pod:<6}{s.role:<10}{s.took_s:>7.1f}s  {s.gate}")
        lines.append("")
        lines.append(f"{'topic':<8}{'sent':>7}{'to new':>8}{'received':>10}{'lost':>7}{'duplicated':>12}")
        for name, t in self.topics.items():
            lines.append(f"{name:<8}{t['sent']:>7}{t['sent_new']:>8}{t['received']:>10}{len(t['lost']):>7}"
                         f"{t['duplicates']:>12}")
        for name, t in self.topics.items():
            if t["lost"]:
                lines.append(f"lost on {name} ({len(t['lost'])}, first 10): {', '.join(t['lost'][:10])}")
        if self.error:
            lines.append(f"ERROR: {self.error}")
        return "\n".join(lines)


def run_guarded(old: harness.Cluster, new: harness.Cluster, workdir: Path, *, unsafe: bool = False,
                timers: harness.ClientTimers = harness.DEFAULT_TIMERS, rate: float = 20,
                keep_producing: float = 10.0, sidecar_binary: Path | None = None,
                say: Callable[[str], None] = harness.log) -> GuardedReport:
    workdir = Path(workdir)
    tag = random.randrange(10**6)
    topic_a, topic_b = f"DemoA{tag}", f"DemoB{tag}"
    ga, gb = f"DemoGroupA{tag}", f"DemoGroupB{tag}"
    report = GuardedReport("UNSAFE (forced: producers first)" if unsafe else "guarded")
    sidecars: dict[str, harness.Sidecar] = {}
    pods: dict[str, harness.Pod] = {}
    wait_s = max(60.0, 3 * timers.poll_s + 30)

    def sidecar(name: str) -> harness.Sidecar:
        sc = harness.Sidecar(f"demo-{name}", old_namesrv=old.namesrv_addr, new_namesrv=new.namesrv_addr,
                             workdir=workdir, target="old", binary=sidecar_binary, broker_name_prefix=PREFIX)
        sidecars[name] = sc
        return sc.start()

    def pod(name: str, sc: str, mode: str, topic: str, group: str) -> harness.Pod:
        p = harness.Pod(f"{name}-{tag}", mode, namesrv=sidecars[sc].namesrv_addr, topic=topic, group=group,
                        workdir=workdir, timers=timers, rate=rate if mode == "producer" else None)
        pods[name] = p
        return p.start()

    def moved(name: str, role: str) -> bool:
        """The pod's role acts on new: its consumers are online there, its producers acked by it."""
        if role == "producer":
            p = pods["XP" if name == "X" else name]
            return any(r[1].startswith(PREFIX) for r in p.records())
        p = pods["XC" if name == "X" else name]
        return new.consumer_online(ga if p.topic == topic_a else gb, p.name)

    def settle(first: int) -> None:
        """Waits until every pod of the steps from `first` on acts on new; each step's time
        runs from its switch to that moment (client timers decide most of it)."""
        pending = {i: report.steps[i] for i in range(first, len(report.steps))}
        deadline = time.monotonic() + wait_s
        while pending:
            for i, st in list(pending.items()):
                if moved(st.pod, st.role):
                    st.took_s = time.monotonic() - started[i]
                    del pending[i]
            if pending and time.monotonic() > deadline:
                raise harness.HarnessError(f"not on new after {wait_s:.0f}s: "
                                           + ", ".join(f"{st.pod} {st.role}s" for st in pending.values()))
            time.sleep(0.5)

    started: list[float] = []

    def switch(step: str, name: str, role: str, *, force: bool = False, gated_wait: bool = False) -> None:
        t = time.monotonic()
        started.append(t)
        gate = "passed"
        if gated_wait:
            _, waited, refused = sidecars[name].switch_when_gates_pass(wait_s * 3, **{role: "new"})
            if waited > 0.5 and refused:
                reasons = [c["reason"] for c in refused.get("gates", {}).get("checks", []) if not c["passed"]]
                gate = f"waited {waited:.0f}s: {'; '.join(reasons)[:140]}"
        else:
            status, doc = sidecars[name].put_route({role: "new", **({"force": True} if force else {})})
            if status != 200:
                raise harness.HarnessError(f"{step}: {name} {role} -> new: {status} {doc}")
            if force and doc["gates"]["last"]["refused_by"]:
                gate = f"FORCED past {', '.join(doc['gates']['last']['refused_by'])}"
        report.steps.append(Step(step, name, role, time.monotonic() - t, gate))
        if gated_wait:
            started[-1] = time.monotonic()  # its time on new runs from the switch itself
        say(f"{step}: {name} {role}s -> new ({gate})")

    def online(cluster: harness.Cluster, group: str, *names: str) -> None:
        harness.wait_until(lambda: all(cluster.consumer_online(group, pods[n].name) for n in names), wait_s,
                           f"{', '.join(names)} online in {group} on {cluster.name}", 1.0)

    try:
        for c in (old, new):
            for t in (topic_a, topic_b):
                c.update_topic(t, 4)
            for g in (ga, gb):
                c.update_sub_group(g)
        say(f"step 1 (metadata): topics {topic_a}, {topic_b} and groups {ga}, {gb} created on both clusters")
        for name in ("PA", "PB", "CA1", "CA2", "CB1", "CB2", "X"):
            sidecar(name)
        for name, sc, topic, group in (("CA1", "CA1", topic_a, ga), ("CA2", "CA2", topic_a, ga),
                                       ("XC", "X", topic_a, ga), ("CB1", "CB1", topic_b, gb),
                                       ("CB2", "CB2", topic_b, gb)):
            pod(name, sc, "consumer", topic, group)
        online(old, ga, "CA1", "CA2", "XC")
        online(old, gb, "CB1", "CB2")
        pod("PA", "PA", "producer", topic_a, f"DemoProducerA{tag}")
        pod("PB", "PB", "producer", topic_b, f"DemoProducerB{tag}")
        pod("XP", "X", "producer", topic_b, f"DemoProducerX{tag}")
        harness.wait_until(lambda: all(len(pods[n].records()) >= 5 for n in ("CA1", "CA2", "CB1", "CB2")),
                           wait_s, "every consumer receiving on old", 0.5)
        say("7 pods on old under keyed load: PA -> A -> CA1, CA2, X; PB, X -> B -> CB1, CB2")

        status, pre = sidecars["X"]._http("GET", "/preflight?to=new")
        say(f"preflight of X to new: {len(pre['topics'])} topics, missing on new: {pre['missing'] or 'none'}")

        status, doc = sidecars["PA"].put_route({"producer": "new"})
        if status == 409:
            report.refusal = doc["error"]
            say(f"PA producers -> new first: REFUSED ({doc['refused_by']}): {doc['error']}")
        else:
            raise harness.HarnessError(f"the producers-first switch was not refused: {status} {doc}")

        if unsafe:
            for name in ("PA", "PB", "X"):
                switch("forced: producers first", name, "producer", force=True)
            harness.wait_until(lambda: all(any(r[1].startswith(PREFIX) for r in pods[n].records())
                                           for n in ("PA", "PB", "XP")),
                               wait_s, "every producer sending to new", 1.0)
            say("every producer sends to new; no consumer is there yet")
            time.sleep(keep_producing)
            for name in ("CA1", "X", "CB1", "CA2", "CB2"):
                switch("forced: consumers after", name, "consumer", force=True)
        else:
            for name in ("CA1", "X", "CB1"):
                switch("2: some consumers", name, "consumer")
            settle(0)
            switch("3: some producers", "PB", "producer")
            settle(3)
            for name in ("PA", "X"):
                switch("4: all producers", name, "producer")
            settle(4)
            first = len(report.steps)
            for name in ("CA2", "CB2"):
                switch("5: remaining consumers", name, "consumer", gated_wait=True)
            settle(first)
        online(new, ga, "CA1", "CA2", "XC")
        online(new, gb, "CB1", "CB2")
        time.sleep(keep_producing)
    except harness.HarnessError as e:
        report.error = str(e)
        say(f"ABORTED: {str(e)[:300]}")
    finally:
        for n in ("PA", "PB", "XP"):
            if n in pods:
                pods[n].stop()
        for group, topic in ((ga, topic_a), (gb, topic_b)):
            try:
                harness.wait_until(lambda: new.consumer_lag(group, topic) == 0, wait_s, f"{group} drained on new", 2.0)
            except harness.HarnessError as e:
                report.error = report.error or str(e)
        time.sleep(2 * timers.persist_s + 1)
        for p in pods.values():
            p.stop()
        for sc in sidecars.values():
            sc.stop()

    def account(producers: list[str], consumers: list[str]) -> dict:
        sent = {r[0] for n in producers for r in pods[n].records()}
        sent_new = {r[0] for n in producers for r in pods[n].records() if r[1].startswith(PREFIX)}
        received: dict[str, int] = {}
        for n in consumers:
            for r in pods[n].records():
                received[r[0]] = received.get(r[0], 0) + 1
        return {"sent": len(sent), "sent_new": len(sent_new), "received": len(set(received) & sent),
                "lost": sorted(sent - set(received)), "duplicates": sum(1 for v in received.values() if v > 1)}

    report.topics = {"A": account(["PA"], ["CA1", "CA2", "XC"]), "B": account(["PB", "XP"], ["CB1", "CB2"])}
    return report
