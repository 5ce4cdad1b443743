"""The Grafana dashboard and the Prometheus rules against what the sidecar really exports.

* Every PromQL expression (dashboard targets, annotations, template variables; rule exprs)
  is parsed with a real PromQL parser (promql-parser) and names only metric families that
  `rmq-sidecar list-metrics` declares (plus the histogram series _bucket/_sum/_count and
  `up`), and only label names the family really has (plus the labels Prometheus adds at
  scrape time: job, instance, namespace, pod). Label sets are followed through aggregations,
  joins, label_replace and histogram_quantile, so `sum by (target) (...)` of a family without
  `target`, an `on (pod)` join, or a legend/annotation `{{ $labels.x }}` that the expression
  aggregated away is caught too. Equality matchers on labels with a known value set
  (target, peer, group, direction, ...) must use one of those values.
* `promtool check rules` and `promtool test rules` pass; promtool is required (the test
  FAILS without it: `apt-get install prometheus`, as scripts/test.sh does).
* Every alert has `for`, a severity label and summary/description annotations, and the
  unit-test file makes it fire at least once and checks it quiet at least once.

Run: python3 -m pytest tests/deploy/test_observability.py -v
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import promql_parser as pp
import pytest
import yaml

from deploy_support import DASHBOARD, RULES, RULES_TEST

#: Labels a Kubernetes scrape adds to every series.
SCRAPE_LABELS = frozenset({"job", "instance", "namespace", "pod"})

#: Known label values (the sidecar's bounded label sets).
CHECK_OUTCOMES = {"ok", "unknown_access_key", "signature_rejected", "no_permission", "unreachable",
                  "unexpected", "not_checked"}
LABEL_VALUES = {
    "target": {"old", "new"},
    "cluster": {"old", "new"},
    "peer": {"namesrv", "broker"},
    "group": {"send", "pull", "heartbeat", "offset", "consumer", "query", "namesrv", "other"},
    "direction": {"to_upstream", "to_client"},
    "listener": {"namesrv", "broker"},
    "cause": {"client_closed", "upstream_closed", "bad_frame", "io_error", "retired",
              "upstream_unreachable", "error"},
}
OUTCOME_VALUES = {
    "rmq_sidecar_switch_requests_total": {"applied", "unchanged", "invalid", "refused", "failed"},
    "rmq_sidecar_credential_check": CHECK_OUTCOMES,
    "rmq_sidecar_signature_refusals_total": CHECK_OUTCOMES,
    "rmq_sidecar_credential_reloads_total": {"updated", "failed"},
}
RESPONSE_CODE = re.compile(r"^(\d+|other)$")

SEVERITIES = {"critical", "warning", "info"}


# --------------------------------------------------------------------------- PromQL label sets


def series_index(families) -> dict[str, tuple[str, frozenset[str]]]:
    """Selectable series name -> (family name, label names including scrape labels)."""
    out = {"up": ("up", SCRAPE_LABELS)}
    for f in families.values():
        labels = frozenset(f.labels) | SCRAPE_LABELS
        if f.type == "histogram":
            out[f.name + "_bucket"] = (f.name, labels | {"le"})
            out[f.name + "_sum"] = (f.name, labels)
            out[f.name + "_count"] = (f.name, labels)
        elif f.type == "summary":
            out[f.name] = (f.name, labels | {"quantile"})
            out[f.name + "_sum"] = (f.name, labels)
            out[f.name + "_count"] = (f.name, labels)
        else:
            out[f.name] = (f.name, labels)
    return out


class LabelChecker:
    """Infers which labels each PromQL sub-expression can carry and records every misuse."""

    def __init__(self, families):
        self.index = series_index(families)
        self.problems: list[str] = []
        self.metrics: set[str] = set()

    def problem(self, msg: str) -> None:
        if msg not in self.problems:
            self.problems.append(msg)

    # -- selectors
    def selector(self, vs) -> frozenset[str]:
        matchers = list(vs.matchers.matchers) + [m for group in vs.matchers.or_matchers for m in group]
        name = vs.name
        if name is None:
            names = [m.value for m in matchers if m.name == "__name__" and str(m.op).endswith("Equal")]
            name = names[0] if names else None
        if name is None:
            self.problem(f"selector {vs} has no metric name")
            return SCRAPE_LABELS
        if name not in self.index:
            self.problem(f"unknown metric {name!r} (not in `rmq-sidecar list-metrics`)")
            labels = SCRAPE_LABELS
            family = name
        else:
            family, labels = self.index[name]
        self.metrics.add(name)
        for m in matchers:
            if m.name == "__name__":
                continue
            if m.name not in labels:
                self.problem(f"{name} has no label {m.name!r} (it has {sorted(labels)})")
                continue
            self.matcher_value(family, name, m)
        return labels

    def matcher_value(self, family: str, series: str, m) -> None:
        known = OUTCOME_VALUES.get(family) if m.name == "outcome" else LABEL_VALUES.get(m.name)
        op = str(m.op)
        if m.name == "response_code" and op in ("MatchOp.Equal", "MatchOp.NotEqual"):
            if not RESPONSE_CODE.match(m.value):
                self.problem(f"{series}: response_code={m.value!r} is never exported (numeric or 'other')")
            return
        if not known:
            return
        if op in ("MatchOp.Equal", "MatchOp.NotEqual"):
            if m.value not in known:
                self.problem(f"{series}: {m.name}={m.value!r} is never exported (values: {sorted(known)})")
        elif op in ("MatchOp.Re", "MatchOp.NotRe"):
            try:
                rx = re.compile(f"^(?:{m.value})$")
            except re.error as e:
                self.problem(f"{series}: bad regex for {m.name}: {e}")
                return
            if not any(rx.match(v) for v in known):
                self.problem(f"{series}: {m.name}=~{m.value!r} matches none of {sorted(known)}")

    # -- expressions
    def labels(self, e) -> frozenset[str] | None:
        """Label names the result can carry; None for scalars and strings."""
        if isinstance(e, pp.VectorSelector):
            return self.selector(e)
        if isinstance(e, pp.MatrixSelector):
            return self.selector(e.vector_selector)
        if isinstance(e, (pp.SubqueryExpr, pp.ParenExpr, pp.UnaryExpr)):
            return self.labels(e.expr)
        if isinstance(e, (pp.NumberLiteral, pp.StringLiteral)):
            return None
        if isinstance(e, pp.Call):
            return self.call(e)
        if isinstance(e, pp.AggregateExpr):
            return self.aggregate(e)
        if isinstance(e, pp.BinaryExpr):
            return self.binary(e)
        self.problem(f"unsupported PromQL node {type(e).__name__}: {e}")
        return None

    def call(self, e) -> frozenset[str] | None:
        name = e.func.name
        args = list(e.args)
        arg_labels = [self.labels(a) for a in args]
        if name == "label_replace":
            base = arg_labels[0] or frozenset()
            dst, src = args[1].val, args[3].val
            if src not in base:
                self.problem(f"label_replace reads label {src!r}, which the expression does not have")
            return base | {dst}
        if name == "label_join":
            base = arg_labels[0] or frozenset()
            for s in args[3:]:
                if s.val not in base:
                    self.problem(f"label_join reads label {s.val!r}, which the expression does not have")
            return base | {args[1].val}
        if name == "histogram_quantile":
            v = arg_labels[1] or frozenset()
            if "le" not in v:
                self.problem("histogram_quantile over an expression without 'le' "
                             "(use the _bucket series and keep le in the aggregation)")
            return v - {"le"}
        if str(e.func.return_type) == "ValueType.Scalar":
            return None
        if name == "vector":
            return frozenset()
        return next((x for x in arg_labels if x is not None), frozenset())

    def aggregate(self, e) -> frozenset[str]:
        inner = self.labels(e.expr) or frozenset()
        op = str(e.op)
        if e.param is not None:
            self.labels(e.param)
        keeps_all = op in ("topk", "bottomk", "limitk", "limit_ratio")
        mod = e.modifier
        if mod is None:
            result = inner if keeps_all else frozenset()
        else:
            names = list(mod.labels)
            for n in names:
                if n not in inner:
                    self.problem(f"{op} {str(mod.type).split('.')[-1].lower()} ({n}): "
                                 f"the expression has no label {n!r} (it has {sorted(inner)})")
            if str(mod.type).endswith("By"):
                result = inner if keeps_all else frozenset(names)
            else:
                result = inner if keeps_all else inner - set(names)
        if op == "count_values" and isinstance(e.param, pp.StringLiteral):
            result = result | {e.param.val}
        return result

    def binary(self, e) -> frozenset[str] | None:
        lhs, rhs = self.labels(e.lhs), self.labels(e.rhs)
        if lhs is None or rhs is None:
            return lhs if rhs is None else rhs
        op = str(e.op)
        mod = e.modifier
        matching = getattr(mod, "matching", None) if mod is not None else None
        card = str(getattr(mod, "card", "")) if mod is not None else ""
        group = list(getattr(mod, "group_labels", None) or []) if mod is not None else []
        on_labels: list[str] | None = None
        if matching is not None:
            names = list(matching.labels)
            if str(matching.type).endswith("Include"):
                on_labels = names
                for n in names:
                    if n not in lhs or n not in rhs:
                        side = "left" if n not in lhs else "right"
                        self.problem(f"on ({n}): the {side} side of '{op}' has no label {n!r}")
            else:
                for n in names:
                    if n not in lhs and n not in rhs:
                        self.problem(f"ignoring ({n}): neither side of '{op}' has label {n!r}")
        elif op != "or" and lhs != rhs:
            self.problem(f"'{op}' without on()/ignoring() between different label sets "
                         f"{sorted(lhs)} and {sorted(rhs)}: the sides never match")
        if card.endswith("ManyToOne"):
            for n in group:
                if n not in rhs:
                    self.problem(f"group_left ({n}): the right side has no label {n!r}")
            return lhs | set(group)
        if card.endswith("OneToMany"):
            for n in group:
                if n not in lhs:
                    self.problem(f"group_right ({n}): the left side has no label {n!r}")
            return rhs | set(group)
        if op in ("and", "unless"):
            return lhs
        if op == "or":
            return lhs | rhs
        if on_labels is not None:
            return frozenset(on_labels)
        if matching is not None:
            return lhs - set(matching.labels)
        return lhs


GRAFANA_INTERVALS = re.compile(r"\$\{?__(rate_interval|interval|range)\}?(?!_)")
GRAFANA_NUMBERS = re.compile(r"\$\{?__(range_s|range_ms|interval_ms)\}?")
GRAFANA_VARS = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def substitute_grafana(expr: str) -> str:
    expr = GRAFANA_INTERVALS.sub("5m", expr)
    expr = GRAFANA_NUMBERS.sub("300", expr)
    return GRAFANA_VARS.sub("x", expr)


def check_promql(expr: str, families, *, label_refs: list[str] = ()) -> tuple[list[str], frozenset | None]:
    """Problems of one expression; ``label_refs``: label names a legend/annotation uses."""
    checker = LabelChecker(families)
    try:
        ast = pp.parse(expr)
    except Exception as e:  # the parser raises its own exception types
        return [f"does not parse: {e}"], None
    result = checker.labels(ast)
    for ref in label_refs:
        if result is None or ref not in result:
            checker.problem(f"uses label {ref!r}, which the expression's result does not have "
                            f"(it has {sorted(result or [])})")
    return checker.problems, result


# --------------------------------------------------------------------------- collecting expressions


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows keep their panels inside


def dashboard_exprs() -> list[tuple[str, str, list[str]]]:
    """(id, PromQL, label names used by its legend) for every query in the dashboard."""
    dash = load_dashboard()
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                legend = t.get("legendFormat") or ""
                refs = re.findall(r"\{\{\s*(\w+)\s*\}\}", legend) if legend != "__auto" else []
                out.append((f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"], refs))
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" in a:
            refs = re.findall(r"\{\{\s*(\w+)\s*\}\}", a.get("titleFormat", "") + a.get("textFormat", ""))
            out.append((f"annotation {a.get('name')!r}", a["expr"], refs))
    return out


def dashboard_variable_queries() -> list[tuple[str, str]]:
    dash = load_dashboard()
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        out.append((v["name"], q))
    return out


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def rule_list() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"]]


def alert_rules() -> list[dict]:
    return [r for r in rule_list() if "alert" in r]


def rule_id(r: dict) -> str:
    return r.get("alert") or r.get("record")


def substitute_params(params):
    return [pytest.param(*p[1:], id=p[0]) for p in params]


# --------------------------------------------------------------------------- dashboard


def test_dashboard_json_parses_and_is_a_grafana_model():
    dash = load_dashboard()
    assert dash.get("uid") and dash.get("title") and isinstance(dash.get("schemaVersion"), int)
    panels = list(all_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert {"h", "w", "x", "y"} <= set(p.get("gridPos", {})), f"panel {p.get('title')!r} has no gridPos"
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, f"panel {p.get('title')!r} is wider than the grid"
        if p.get("type") == "row":
            continue
        assert p.get("title"), f"panel {p['id']} has no title"
        assert p.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, p.get("title")
        assert p.get("targets"), f"panel {p['title']!r} has no queries"
        for t in p["targets"]:
            assert t.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert t.get("expr", "").strip(), f"panel {p['title']!r} has an empty query"


def test_dashboard_template_variables():
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("namespace", "pod"):
        v = variables.get(name)
        assert v and v["type"] == "query", f"no query variable {name}"
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert re.search(rf",\s*{name}\)\s*$", q), f"${name} must list the '{name}' label values: {q}"
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert v.get("includeAll") and v.get("multi"), f"${name} must allow All (fleet-wide) and several values"
    pod_query = variables["pod"]["query"]
    pod_query = pod_query["query"] if isinstance(pod_query, dict) else pod_query
    assert "$namespace" in pod_query, "the pod list must follow the namespace selection"
    for ident, expr, _ in dashboard_exprs():
        assert "$namespace" in expr and "$pod" in expr, f"{ident} ignores the namespace/pod selection: {expr}"


def test_dashboard_shows_the_required_views():
    exprs = [e for _, e, _ in dashboard_exprs()]

    def has(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    required = {
        "requests/s by target": r"sum by \(target\) \(rate\(rmq_sidecar_requests_total",
        "bytes/s by target": r"sum by \(target, direction\) \(rate\(rmq_sidecar_bytes_total",
        "non-zero response codes by code": r"sum by \(code, response_code\) \(rate\(rmq_sidecar_responses_total\{response_code!=\"0\"",
        "latency percentiles per group": r"histogram_quantile\(0\.99, sum by \(group, le\) \(rate\(rmq_sidecar_request_duration_seconds_bucket\{group!=\"pull\"",
        "pull latency separately": r"histogram_quantile\(0\.99, sum by \(target, le\) \(rate\(rmq_sidecar_request_duration_seconds_bucket\{group=\"pull\"",
        "route state per pod and role": r"max by \(pod, role\) \(rmq_sidecar_route_target\{target=\"new\"",
        "consumers on new": r"sum\(rmq_sidecar_route_target\{role=\"consumer\", target=\"new\"",
        "producers on new": r"sum\(rmq_sidecar_route_target\{role=\"producer\", target=\"new\"",
        "roles per target": r"sum by \(role, target\) \(rmq_sidecar_route_target",
        "role switches": r"rmq_sidecar_role_switches_total",
        "composed answers missing a cluster": r"rmq_sidecar_route_partial_answers_total",
        "route answers by answering cluster": r"sum by \(cluster\) \(rate\(rmq_sidecar_route_answers_total",
        "signature refusals": r"rmq_sidecar_signature_refusals_total",
        "credential check != ok": r"rmq_sidecar_credential_check\{outcome!~\"ok\|not_checked\"",
        "credential reload failures": r"rmq_sidecar_credential_reloads_total",
        "active connections": r"rmq_sidecar_client_connections_active",
        "connect failures": r"rmq_sidecar_upstream_connect_failures_total",
        "frames rejected": r"rmq_sidecar_frames_rejected_total",
        "sidecars down": r"up\{job=~",
    }
    missing = [what for what, pattern in required.items() if not has(pattern)]
    assert not missing, f"the dashboard lacks: {missing}"


@pytest.mark.parametrize("expr,label_refs", substitute_params(dashboard_exprs()))
def test_dashboard_promql_uses_only_declared_metrics_and_labels(expr, label_refs, families):
    problems, _ = check_promql(substitute_grafana(expr), families, label_refs=label_refs)
    assert not problems, f"{expr}\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name,query", dashboard_variable_queries())
def test_dashboard_variable_queries_use_declared_metrics_and_labels(name, query, families):
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    assert m, f"${name}: expected label_values(<selector>, <label>), got {query!r}"
    problems, result = check_promql(substitute_grafana(m.group(1)), families, label_refs=[m.group(2)])
    assert not problems, f"${name}: {query}\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- rules


def test_rules_file_structure():
    rules = load_rules()
    assert set(rules) == {"groups"}
    names = [rule_id(r) for r in rule_list()]
    assert len(names) == len(set(names)), "rule names must be unique"
    for r in alert_rules():
        where = r["alert"]
        assert r.get("for"), f"{where} needs a `for` duration"
        assert r.get("labels", {}).get("severity") in SEVERITIES, f"{where} needs severity in {SEVERITIES}"
        ann = r.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), f"{where} needs summary and description"
        assert len(ann["description"]) >= 120, f"{where}: the description must say what to check"


def test_rules_cover_the_required_alerts():
    by_expr = {r["alert"]: r["expr"] for r in alert_rules()}

    def alert_on(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in by_expr.values())

    required = {
        "signature refusals rising": r"increase\(rmq_sidecar_signature_refusals_total",
        "credential check not ok": r"rmq_sidecar_credential_check\{outcome!~",
        "credential reload failures": r"rmq_sidecar_credential_reloads_total\{outcome=\"failed\"",
        "connect failures rising": r"rate\(rmq_sidecar_upstream_connect_failures_total",
        "name-server failures": r"rmq_sidecar_namesrv_failovers_total",
        "frames rejected": r"rmq_sidecar_frames_rejected_total",
        "target vs answering cluster": r"rmq_sidecar_route_answers_total(.|\n)*rmq_sidecar_route_target",
        "sidecar down": r"up\{job=~\"[^\"]*rmq-sidecar\"\} == 0",
        "composed routes without a cluster": r"rmq_sidecar_route_partial_answers_total",
    }
    missing = [what for what, pattern in required.items() if not alert_on(pattern)]
    assert not missing, f"no alert for: {missing}"


@pytest.mark.parametrize("rule", [pytest.param(r, id=rule_id(r)) for r in rule_list()])
def test_rule_promql_uses_only_declared_metrics_and_labels(rule, families):
    refs = []
    for text in list(rule.get("annotations", {}).values()) + list(rule.get("labels", {}).values()):
        refs += re.findall(r"\$labels\.(\w+)", str(text))
    problems, result = check_promql(rule["expr"], families, label_refs=sorted(set(refs)))
    assert not problems, f"{rule_id(rule)}: {rule['expr']}\n  " + "\n  ".join(problems)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `apt-get install -y prometheus` "
                    "(scripts/test.sh installs tests/apt-packages.txt)")
    return path


def test_promtool_version_recorded():
    r = subprocess.run([promtool(), "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    print((r.stdout or r.stderr).splitlines()[0])


def test_promtool_check_rules():
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules():
    r = subprocess.run([promtool(), "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_promql_parses_with_promtool(tmp_path):
    """Prometheus' own parser on every dashboard query (as recording rules of a scratch file)."""
    rules = [{"record": f"dashboard:query_{i}:check", "expr": substitute_grafana(expr)}
             for i, (_, expr, _) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    fires, quiet = set(), set()
    for case in tests["tests"]:
        for a in case.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts - fires == set(), f"alerts never shown to fire: {sorted(alerts - fires)}"
    assert alerts - quiet == set(), f"alerts never shown quiet: {sorted(alerts - quiet)}"
    assert (fires | quiet) - alerts == set(), f"tests of unknown alerts: {sorted((fires | quiet) - alerts)}"
    records = {r["record"] for r in rule_list() if "record" in r}
    tested = {t["expr"] for case in tests["tests"] for t in case.get("promql_expr_test", [])}
    assert records <= tested, f"recording rules without a test: {sorted(records - tested)}"


# --------------------------------------------------------------------------- the checker itself


@pytest.mark.parametrize("expr,needle", [
    ("rate(rmq_sidecar_no_such_total[5m])", "unknown metric"),
    ('rmq_sidecar_route_target{cluster="old"}', "has no label 'cluster'"),
    ("sum by (peer) (rmq_sidecar_route_answers_total)", "no label 'peer'"),
    ("histogram_quantile(0.9, sum by (group) (rate(rmq_sidecar_request_duration_seconds_bucket[5m])))",
     "without 'le'"),
    ("sum by (pod) (rmq_sidecar_route_target) / on (target) sum by (pod) (rmq_sidecar_route_target)",
     "on (target)"),
    ("sum by (target) (rmq_sidecar_bytes_total) / sum by (direction) (rmq_sidecar_bytes_total)", "never match"),
    ('rmq_sidecar_route_target{target="neww"}', "never exported"),
    ('rmq_sidecar_switch_requests_total{outcome="ok"}', "never exported"),
    ('rmq_sidecar_requests_total{peer=~"brokers?x"}', "matches none"),
])
def test_the_label_checker_catches_mistakes(expr, needle, families):
    problems, _ = check_promql(expr, families)
    assert any(needle in p for p in problems), problems


def test_the_label_checker_accepts_joins_and_legends(families):
    expr = ('sum by (namespace, pod, cluster) (increase(rmq_sidecar_route_answers_total[5m])) > 0 '
            'and on (namespace, pod, cluster) '
            'label_replace(rmq_sidecar_route_target == 0, "cluster", "$1", "target", "(.*)")')
    problems, result = check_promql(expr, families, label_refs=["pod", "cluster"])
    assert not problems and result == {"namespace", "pod", "cluster"}
    problems, _ = check_promql("sum by (target) (rate(rmq_sidecar_requests_total[5m]))", families,
                               label_refs=["pod"])
    assert any("'pod'" in p for p in problems)
