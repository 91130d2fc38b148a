"""What memzone's monitoring files use: the rules (deploy/monitoring/memzone-rules.yaml) and the
Grafana dashboard (deploy/monitoring/memzone-dashboard.json). Shared by test_monitoring.py
(static checks, promtool) and test_metrics_exist.py (the real binaries' /metrics)."""
import json
import os
import re

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
RULES = os.path.join(ROOT, "deploy/monitoring/memzone-rules.yaml")
DASHBOARD = os.path.join(ROOT, "deploy/monitoring/memzone-dashboard.json")
RULE_TESTS = os.path.join(ROOT, "tests/ops/memzone-rules.test.yaml")
README = os.path.join(ROOT, "README.md")
RUNBOOK_BASE = "https://github.com/memzone/memzone/blob/main/README.md#"

# Metric names the rules or the dashboard use that no binary exports yet, with the reason.
# This is the only place a name may be excused from test_metrics_exist.py.
NOT_YET_EXPORTED = {}

# What Grafana substitutes before a query reaches Prometheus.
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$pool": ".*", "$zone": ".*"}

_IDENTIFIER = re.compile(r'"(?:[^"\\]|\\.)*"|[a-zA-Z_:][a-zA-Z0-9_:]*')


def load_rules():
    with open(RULES) as f:
        return yaml.safe_load(f)


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def rules():
    """Every rule, each a dict with alert or record, in file order."""
    return [r for g in load_rules()["groups"] for r in g["rules"]]


def alerts():
    return [r for r in rules() if "alert" in r]


def recorded_names():
    return {r["record"] for r in rules() if "record" in r}


def panels():
    """Every panel, rows' nested panels included."""
    out = []
    for p in load_dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_queries():
    """(panel title, PromQL as Grafana sends it) for every target of every panel."""
    out = []
    for p in panels():
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in DASHBOARD_VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((p["title"], expr))
    return out


def dashboard_variable_queries():
    """(variable, metric selector, label) for every label_values() template variable."""
    out = []
    for v in load_dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        if not m:
            raise ValueError("variable %s: unsupported query %r" % (v["name"], query))
        selector = m.group(1)
        for var, value in DASHBOARD_VARIABLES.items():
            selector = selector.replace(var, value)
        out.append((v["name"], selector, m.group(2)))
    return out


def names_in(expr):
    """(raw metric names, recorded names) an expression reads. Raw names are memzone_*;
    recorded ones follow level:metric:operations. String literals are skipped."""
    raw, recorded = set(), set()
    for token in _IDENTIFIER.findall(expr):
        if token.startswith('"'):
            continue
        if ":" in token and "memzone_" in token:
            recorded.add(token)
        elif token.startswith("memzone_"):
            raw.add(token)
    return raw, recorded


def all_queries():
    """(where, expr) for every query of the rules (expressions and annotation templates'
    query calls) and of the dashboard (panels and template variables)."""
    out = []
    for r in rules():
        out.append(("rule " + r.get("alert", r.get("record")), r["expr"]))
    for title, expr in dashboard_queries():
        out.append(("dashboard panel " + title, expr))
    for name, selector, _ in dashboard_variable_queries():
        out.append(("dashboard variable " + name, selector))
    return out


def used_metric_names():
    """{raw metric name: [where it is used]} over the rules and the dashboard. A histogram's
    _bucket/_sum/_count series are names of their own in the exposition, and are kept so."""
    used = {}
    for where, expr in all_queries():
        raw, _ = names_in(expr)
        for name in raw:
            used.setdefault(name, []).append(where)
    return used


def github_anchor(heading):
    """The id GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")
