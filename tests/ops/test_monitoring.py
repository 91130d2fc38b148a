"""memzone's alert and recording rules and its Grafana dashboard, checked without a cluster:
promtool check rules / test rules, each alert's labels, annotations and runbook section, the
dashboard's queries (valid PromQL, only recorded names that exist) and its README lines.

The metric names they use are checked against the real binaries in test_metrics_exist.py.
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

import monitoring

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args):
    return subprocess.run([PROMTOOL] + list(args), capture_output=True, text=True, timeout=120)


def readme():
    with open(monitoring.README) as f:
        return f.read()


def section(text, heading):
    """The body of a Markdown section, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index("\n" + heading + "\n") + len(heading) + 2
    m = re.compile(r"^#{1,%d} " % level, re.M).search(text, start)
    return text[start:m.start() if m else len(text)]


@unittest.skipUnless(os.path.exists(PROMTOOL), "promtool (Debian package prometheus) is needed")
class PromtoolTest(unittest.TestCase):
    def test_rules_pass_promtool_check_rules(self):
        r = promtool("check", "rules", monitoring.RULES)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_rule_unit_tests_pass(self):
        r = promtool("test", "rules", monitoring.RULE_TESTS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_dashboard_queries_are_valid_promql(self):
        # promtool parses each query as a recording rule; a typo fails here, not in Grafana.
        queries = monitoring.dashboard_queries()
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": "dashboard:query_%d" % i, "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(rules, f)
        self.addCleanup(os.unlink, f.name)
        r = promtool("check", "rules", f.name)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertGreaterEqual(len(queries), 20)


class AlertsTest(unittest.TestCase):
    def test_every_alert_has_severity_summary_description_and_runbook(self):
        headings = set(re.findall(r"^### (Memzone\w+)$", section(readme(), "## Runbook"), re.M))
        alerts = monitoring.alerts()
        self.assertGreaterEqual(len({a["alert"] for a in alerts}), 12)
        for a in alerts:
            with self.subTest(alert=a["alert"], severity=a["labels"].get("severity")):
                self.assertIn(a["labels"]["severity"], ("warning", "critical"))
                ann = a["annotations"]
                self.assertEqual(set(ann), {"summary", "description", "runbook_url"})
                self.assertTrue(ann["summary"].endswith("."))
                self.assertIn("$labels.namespace", ann["description"])
                self.assertEqual(ann["runbook_url"], monitoring.RUNBOOK_BASE + monitoring.github_anchor(a["alert"]))
                self.assertIn(a["alert"], headings, "README ## Runbook has no section for it")

    def test_every_runbook_section_is_an_alert(self):
        headings = re.findall(r"^### (.+)$", section(readme(), "## Runbook"), re.M)
        self.assertEqual(sorted(headings), sorted({a["alert"] for a in monitoring.alerts()}))
        for h in headings:
            body = section(readme(), "### " + h)
            with self.subTest(alert=h):
                for part in ("**Confirm:**", "**Do:**"):
                    self.assertIn(part, body)
                self.assertRegex(body.strip(), r"^\*(warning|critical)", "the section starts with the severity")

    def test_every_alert_is_tested_firing_and_quiet(self):
        with open(monitoring.RULE_TESTS) as f:
            tests = yaml.safe_load(f)
        self.assertEqual(tests["rule_files"], ["../../deploy/monitoring/memzone-rules.yaml"])
        fired, quiet = set(), set()
        for t in tests["tests"]:
            for case in t.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
        names = {a["alert"] for a in monitoring.alerts()}
        self.assertEqual(names - fired, set(), "alerts no test makes fire")
        self.assertEqual(names - quiet, set(), "alerts no test shows quiet")
        # Every severity of every alert is seen firing.
        seen = set()
        for t in tests["tests"]:
            for case in t.get("alert_rule_test", []):
                for exp in case.get("exp_alerts") or []:
                    seen.add((case["alertname"], exp["exp_labels"]["severity"]))
        self.assertEqual({(a["alert"], a["labels"]["severity"]) for a in monitoring.alerts()} - seen, set())

    def test_descriptions_name_what_the_alert_labels_say(self):
        # Every identifying label an alert carries when it fires (per the unit tests) is
        # named in its description: the pool, zone, backend, proxy, file or kind affected.
        identifying = {"namespace", "pool", "zone", "address", "instance", "pod", "file", "kind"}
        descriptions = {(a["alert"], a["labels"]["severity"]): a["annotations"]["description"]
                        for a in monitoring.alerts()}
        with open(monitoring.RULE_TESTS) as f:
            tests = yaml.safe_load(f)
        for t in tests["tests"]:
            for case in t.get("alert_rule_test", []):
                for exp in case.get("exp_alerts") or []:
                    labels = exp["exp_labels"]
                    description = descriptions[(case["alertname"], labels["severity"])]
                    for label in identifying & set(labels):
                        with self.subTest(alert=case["alertname"], label=label):
                            self.assertIn("$labels." + label, description)

    def test_recorded_names_used_are_recorded(self):
        recorded = monitoring.recorded_names()
        for where, expr in monitoring.all_queries():
            _, used = monitoring.names_in(expr)
            with self.subTest(where=where):
                self.assertEqual(used - recorded, set(), "not defined by a recording rule")
        for name in recorded:
            self.assertRegex(name, r"^[a-z_]+:memzone_[a-z0-9_]+:[a-z0-9_]+$", "level:metric:operations")

    def test_not_yet_exported_names_are_used(self):
        # The excuse list stays short: a name that is no longer used leaves it.
        used = monitoring.used_metric_names()
        for name in monitoring.NOT_YET_EXPORTED:
            self.assertIn(name, used)


class DashboardTest(unittest.TestCase):
    def test_structure(self):
        d = monitoring.load_dashboard()
        self.assertEqual(d["uid"], "memzone")
        variables = [v["name"] for v in d["templating"]["list"]]
        self.assertEqual(variables, ["datasource", "namespace", "pool", "zone"])
        ids = [p["id"] for p in monitoring.panels()]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        rows = [p["title"] for p in monitoring.panels() if p["type"] == "row"]
        self.assertEqual(rows, ["Requests", "Replication per zone", "Reads: failover and repair", "Backends",
                                "Topology and control plane"])
        for p in monitoring.panels():
            if p["type"] == "row":
                continue
            with self.subTest(panel=p["title"]):
                self.assertEqual(p["datasource"]["uid"], "${datasource}")
                self.assertTrue(p.get("description"))
                for t in p["targets"]:
                    self.assertEqual(t["datasource"]["uid"], "${datasource}")
                    self.assertIn('namespace=~"$namespace"', t["expr"], "every query follows the namespace variable")
                    for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                        self.assertIn(var, variables + ["__rate_interval"])
        # The heatmap reads the histogram's buckets, as a heatmap.
        heatmap = [p for p in monitoring.panels() if p["type"] == "heatmap"][0]
        self.assertEqual(heatmap["targets"][0]["format"], "heatmap")
        self.assertIn("_bucket", heatmap["targets"][0]["expr"])

    def test_every_panel_has_one_readme_line(self):
        text = section(readme(), "### Dashboard")
        described = re.findall(r"\*([^*]+)\*:", text)
        titles = [p["title"] for p in monitoring.panels() if p["type"] != "row"]
        self.assertEqual(sorted(described), sorted(titles))
        rows = re.findall(r"^- \*\*([^*]+)\*\*", text, re.M)
        self.assertEqual(rows, [p["title"] for p in monitoring.panels() if p["type"] == "row"])


if __name__ == "__main__":
    unittest.main()
