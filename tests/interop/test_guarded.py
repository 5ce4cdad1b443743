"""The guarded five-step migration of a fleet on real clusters (old 4.9.7, new 5.3.3; official
Java client 4.9.8, fast timers): seven pods, one of which both consumes and produces, each
behind its own sidecar with the migration gates on. The producers-first attempt is refused;
the five steps then pass their gates (the last consumers wait for theirs); nothing acknowledged
is lost. It is the demo (``scripts/demo.sh``) with shorter client timers.
"""

from __future__ import annotations

import guarded
import harness


def test_the_five_steps_pass_their_gates_and_lose_nothing(pair_distinct, test_dir, sidecar_binary):
    report = guarded.run_guarded(pair_distinct.old, pair_distinct.new, test_dir, timers=harness.FAST_TIMERS,
                                 rate=20, keep_producing=6, sidecar_binary=sidecar_binary)
    harness.log("\n" + report.format())
    assert report.error is None, report.error
    assert "consumers_on_target" in report.refusal and "DemoGroupA" in report.refusal, report.refusal
    assert [s.step[:1] for s in report.steps] == ["2", "2", "2", "3", "4", "4", "5", "5"], report.steps
    assert all(s.gate == "passed" or s.gate.startswith("waited") for s in report.steps), report.steps
    for name, t in report.topics.items():
        assert t["sent_new"] > 0, f"topic {name}: nothing went to new"
        assert t["lost"] == [], f"topic {name}: lost {len(t['lost'])}: {t['lost'][:20]}"
