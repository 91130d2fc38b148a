"""Every metric name the alert rules, the recording rules and the Grafana dashboard use exists in
the real binaries' /metrics, so a renamed metric breaks the build, not the pager.

Runs memzone-controller (Kubernetes source, against the API double of tests/integration), a
memzone-proxy subscribed to it with --metrics-per-backend, and real memcached in two zones of a
ReplicatedPool that lists a third, empty zone; sends traffic; scrapes both. Then a real
Prometheus (Debian's prometheus package) scrapes them with the rules loaded: every rule
evaluates without error, every recorded series and every dashboard query has data, and the
empty zone's alert is pending.

Which API server, and why: the double (fake_kube_api.py), since this test is about metric
names, not Kubernetes; it starts in milliseconds and needs no network namespace (the real one,
test_kubernetes_real.py, refuses the loopback backends this test uses).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import yaml

import monitoring

sys.path.insert(0, os.path.join(monitoring.ROOT, "tests/integration"))
from fake_kube_api import FakeKubeApi, endpoint, endpoint_slice, node, replicated_pool, service  # noqa: E402
from harness import (Controller, Memcached, Proxy, free_port, stop_process,  # noqa: E402
                     wait_for_port, wait_until)
from tls_certs import CertAuthority  # noqa: E402

NS = "cache"
IPS = ["127.0.0.2", "127.0.0.3"]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def http_get(port, path, timeout=5):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text):
    """[(name, {label: value}, value)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        out.append((m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or "")), float(m.group(4))))
    return out


def common_free_port(hosts):
    """A port free on every one of `hosts` (loopback addresses)."""
    for _ in range(50):
        port = free_port()
        try:
            for h in hosts:
                with socket.socket() as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


class MetricsExistTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        port = common_free_port(IPS)
        cls.servers = [Memcached(port=port, host=ip).start() for ip in IPS]
        for s in cls.servers:
            cls.addClassCleanup(s.kill)
        cls.backends = {"%s:%d" % (ip, port) for ip in IPS}
        cls.api = FakeKubeApi(token="token-1").start()
        cls.addClassCleanup(cls.api.stop)
        store = cls.api.store
        store.put("nodes", node("node-a", "zone-a"))
        # The pool's port is the Service's, mapped to the endpoints' port as kube-proxy does.
        store.put("services", service("memcached", ports=[("memcache", port, port)], namespace=NS))
        store.put("endpointslices", endpoint_slice("memcached-abcde", "memcached",
                                                   [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")], port,
                                                   namespace=NS))
        # zone-c is listed but has no endpoints: the controller reports it at 0 ready backends.
        store.put("replicatedpools", replicated_pool("sessions", "memcached", namespace=NS,
                                                     zones=["zone-a", "zone-b", "zone-c"]))
        token = os.path.join(tempfile.mkdtemp(prefix="memzone-ops-"), "token")
        with open(token, "w") as f:
            f.write("token-1\n")
        # The stream runs mutual TLS, so that both binaries export the certificate expiry.
        ca = CertAuthority("memzone-ops")
        server_cert, server_key, _ = ca.issue("controller", ip=["127.0.0.1"])
        proxy_cert, proxy_key, _ = ca.issue("proxy", dns=["proxy.memzone.svc"])
        cls.controller_metrics = free_port()
        cls.controller = Controller(None, source_args=[
            "--source", "kubernetes", "--namespace", NS, "--kube-api", cls.api.url, "--kube-token-file", token],
            extra_args=["--metrics-listen", "127.0.0.1:%d" % cls.controller_metrics],
            tls={"cert": server_cert, "key": server_key, "client_ca": ca.cert}).start()
        cls.addClassCleanup(cls.controller.kill)
        wait_for_port(cls.controller_metrics, proc=cls.controller.proc)
        cls.proxy_metrics = free_port()
        cls.proxy = Proxy(None, controller=cls.controller.address, env={"NODE_NAME": "node-a"},
                          controller_tls={"ca": ca.cert, "cert": proxy_cert, "key": proxy_key},
                          extra_args=["--metrics-listen", "127.0.0.1:%d" % cls.proxy_metrics,
                                      "--metrics-per-backend"]).start()
        cls.addClassCleanup(cls.proxy.stop)

        def backends_up():
            up = {s[1]["address"] for s in samples(http_get(cls.proxy_metrics, "/metrics")[1])
                  if s[0] == "memzone_proxy_backend_up" and s[2] == 1}
            return up == cls.backends
        wait_until(backends_up, 20, "both backends up on the proxy (topology applied, sampled)")
        # Traffic, so that the per-command and per-result series exist.
        with cls.proxy.client() as c:
            assert c.request(b"set k1 0 0 2\r\nv1\r\n") == b"STORED\r\n"
            assert c.request(b"get k1\r\n").startswith(b"VALUE k1")
            assert c.request(b"get nothing\r\n") == b"END\r\n"
            assert c.request(b"mg k1 v\r\n").startswith(b"VA 2")
        cls.proxy_text = http_get(cls.proxy_metrics, "/metrics")[1]
        cls.controller_text = http_get(cls.controller_metrics, "/metrics")[1]

    def test_every_used_metric_name_is_exported(self):
        exported = {s[0] for s in samples(self.proxy_text) + samples(self.controller_text)}
        used = monitoring.used_metric_names()
        self.assertGreaterEqual(len(used), 30)
        for name, reason in sorted(monitoring.NOT_YET_EXPORTED.items()):
            print("not checked: %s: %s" % (name, reason), file=sys.stderr)
        missing = {name: where for name, where in used.items()
                   if name not in exported and name not in monitoring.NOT_YET_EXPORTED}
        self.assertEqual(missing, {}, "used by the rules or the dashboard, exported by neither binary")
        # A name excused as not yet exported must really be missing: once it exists, it is checked.
        for name in monitoring.NOT_YET_EXPORTED:
            self.assertNotIn(name, exported, "%s is exported now: remove it from NOT_YET_EXPORTED" % name)

    def test_backend_info_names_the_proxies_backends(self):
        # MemzoneBackendDown and the "Backends up per zone" panel join on `address`.
        info = [s for s in samples(self.controller_text) if s[0] == "memzone_controller_backend_info"]
        self.assertEqual({s[1]["address"] for s in info}, self.backends)
        self.assertEqual({(s[1]["pool"], s[1]["zone"]) for s in info}, {("sessions", "zone-a"), ("sessions", "zone-b")})

    def test_ready_backends_include_the_empty_zone(self):
        ready = {(s[1]["pool"], s[1]["zone"]): s[2] for s in samples(self.controller_text)
                 if s[0] == "memzone_controller_pool_ready_backends"}
        self.assertEqual(ready, {("sessions", "zone-a"): 1, ("sessions", "zone-b"): 1, ("sessions", "zone-c"): 0})

    @unittest.skipUnless(os.path.exists(PROMETHEUS), "prometheus (Debian package) is needed")
    def test_prometheus_evaluates_the_rules_and_the_dashboard_on_real_series(self):
        work = tempfile.mkdtemp(prefix="memzone-prometheus-")
        self.addCleanup(shutil.rmtree, work, True)
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [monitoring.RULES],
            "scrape_configs": [
                {"job_name": "memzone-proxy", "static_configs": [
                    {"targets": ["127.0.0.1:%d" % self.proxy_metrics], "labels": {"namespace": NS, "pod": "mz-proxy-a"}}]},
                {"job_name": "memzone-controller", "static_configs": [
                    {"targets": ["127.0.0.1:%d" % self.controller_metrics],
                     "labels": {"namespace": NS, "pod": "mz-controller-x"}}]},
            ],
        }
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        log = open(os.path.join(work, "prometheus.log"), "w")
        proc = subprocess.Popen([PROMETHEUS, "--config.file", os.path.join(work, "prometheus.yml"),
                                 "--storage.tsdb.path", os.path.join(work, "data"),
                                 "--web.listen-address", "127.0.0.1:%d" % port, "--log.level", "warn"],
                                stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(stop_process, proc, log, "prometheus")
        wait_for_port(port, timeout=30, proc=proc)
        # It listens before its storage is open, answering 503 until then.
        wait_until(lambda: http_get(port, "/-/ready")[0] == 200, 30, "prometheus ready")

        def api(path, **params):
            status, body = http_get(port, "/api/v1/" + path + ("?" + urllib.parse.urlencode(params, doseq=True)
                                                               if params else ""))
            self.assertEqual(status, 200, body)
            return json.loads(body)["data"]

        def keep_traffic_flowing():
            with self.proxy.client() as c:
                c.request(b"get k1\r\n")
                c.request(b"set k2 0 0 1\r\nx\r\n")

        # Rates need two scrapes; every rule has run once it reports a health.
        def ready():
            keep_traffic_flowing()
            rules = [r for g in api("rules")["groups"] for r in g["rules"]]
            if any(r["health"] == "unknown" for r in rules):
                return None
            if not all(api("query", query=name)["result"] for name in monitoring.recorded_names()):
                return None
            # Rates over a window need two scrapes of each target (a loaded machine may have
            # scraped the controller only once so far).
            for job in ("memzone-proxy", "memzone-controller"):
                counted = api("query", query='count_over_time(up{job="%s"}[1m])' % job)["result"]
                if not counted or float(counted[0]["value"][1]) < 3:
                    return None
            return rules
        rules = wait_until(ready, 60, "every rule evaluated and every recorded series present")
        for r in rules:
            with self.subTest(rule=r["name"]):
                self.assertEqual(r["health"], "ok", r.get("lastError"))
        for title, expr in monitoring.dashboard_queries():
            with self.subTest(panel=title, query=expr):
                self.assertTrue(api("query", query=expr)["result"], "no data")
        for name, selector, label in monitoring.dashboard_variable_queries():
            with self.subTest(variable=name):
                values = api("label/%s/values" % label, **{"match[]": selector})
                self.assertTrue(values, "no values for $%s" % name)
        # A healthy installation fires nothing; the listed, empty zone is pending (for: 2m).
        alerts = api("alerts")["alerts"]
        self.assertEqual([a for a in alerts if a["state"] == "firing"], [])
        pending = [a["labels"] for a in alerts if a["labels"]["alertname"] == "MemzoneZoneWithoutBackends"]
        self.assertEqual(pending, [{"alertname": "MemzoneZoneWithoutBackends", "severity": "warning",
                                    "namespace": NS, "pool": "sessions", "zone": "zone-c"}])


if __name__ == "__main__":
    unittest.main()
