"""Prometheus metrics, probes and graceful shutdown of both binaries, after real traffic."""
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

from harness import Controller, Memcached, Proxy, free_port, ketama_server, wait_for_port


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value}"""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


def value(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())), 0.0)


def total(metrics, name, **labels):
    return sum(v for (n, ls), v in metrics.items()
               if n == name and all((k, w) in ls for k, w in labels.items()))


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.servers = {z: Memcached().start() for z in ("a", "b")}
        for s in self.servers.values():
            self.addCleanup(s.kill)
        self.topology = ("pools:\n  - name: main\n    zones:\n"
                         "      a: [\"%s\"]\n      b: [\"%s\"]\n"
                         "timeouts: {connectMs: 200, requestMs: 300}\n"
                         % (self.servers["a"].address, self.servers["b"].address))
        self.controller_metrics = free_port()
        self.controller = Controller(self.topology, extra_args=[
            "--metrics-listen", "127.0.0.1:%d" % self.controller_metrics]).start()
        self.addCleanup(self.controller.kill)
        self.metrics_port = free_port()
        self.proxy = Proxy(None, zone="a", controller=self.controller.address,
                           extra_args=["--metrics-listen", "127.0.0.1:%d" % self.metrics_port]).start()
        self.addCleanup(self.proxy.stop)
        wait_for_port(self.metrics_port)
        self.wait_ready(self.metrics_port)

    def wait_ready(self, port, want=200, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_get(port, "/readyz")[0] == want:
                return
            time.sleep(0.05)
        self.fail("/readyz on %d never answered %d" % (port, want))

    def scrape(self, port=None):
        status, text = http_get(port or self.metrics_port, "/metrics")
        self.assertEqual(status, 200)
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(r.stdout + r.stderr, "")
        return parse_metrics(text)

    def test_counters_follow_traffic_and_histogram_counts_requests(self):
        before = self.scrape()
        with self.proxy.client() as c:
            for i in range(20):
                c.request(b"set m%d 0 0 1\r\nx\r\n" % i)
            for i in range(20):
                c.request(b"get m%d\r\n" % i)
            for i in range(5):
                c.request(b"get absent%d\r\n" % i)
            c.request(b"bogus\r\n")
        after = self.scrape()
        delta = lambda name, **l: value(after, name, **l) - value(before, name, **l)
        self.assertEqual(delta("memzone_proxy_requests_total", command="set", result="stored"), 20)
        self.assertEqual(delta("memzone_proxy_requests_total", command="get", result="hit"), 20)
        self.assertEqual(delta("memzone_proxy_requests_total", command="get", result="miss"), 5)
        self.assertEqual(delta("memzone_proxy_requests_total", command="unknown", result="client_error"), 1)
        self.assertEqual(total(after, "memzone_proxy_requests_total"),
                         value(after, "memzone_proxy_request_duration_seconds_count"))
        self.assertEqual(value(after, "memzone_proxy_request_duration_seconds_bucket", le="+Inf"),
                         value(after, "memzone_proxy_request_duration_seconds_count"))
        self.assertEqual(delta("memzone_proxy_replication_copies_total", zone="b"), 20)
        version = self.controller.versions()[-1]
        self.assertEqual(value(after, "memzone_proxy_topology_info", version=version), 1)
        self.assertEqual(value(after, "memzone_proxy_controller_connected"), 1)
        # The memcached `stats` command tells the same story.
        stats = self.proxy.stats()
        self.assertEqual(int(stats["get_hits"]),
                         total(after, "memzone_proxy_requests_total", command="get", result="hit"))

        controller = self.scrape(self.controller_metrics)
        self.assertEqual(value(controller, "memzone_controller_proxies_connected"), 1)
        self.assertEqual(value(controller, "memzone_controller_proxies_acked"), 1)
        self.assertEqual(value(controller, "memzone_controller_acks_total"), 1)
        self.assertEqual(value(controller, "memzone_controller_pool_ready_backends", pool="main", zone="b"), 1)

    def test_per_backend_series_only_behind_the_flag(self):
        self.assertFalse(any(("address", a) in labels for (_, labels) in self.scrape() for a in
                             [s.address for s in self.servers.values()]), "address labels are off by default")
        port = free_port()
        p = Proxy(self.topology, zone="a", extra_args=["--metrics-listen", "127.0.0.1:%d" % port,
                                                      "--metrics-per-backend"]).start()
        self.addCleanup(p.stop)
        wait_for_port(port)
        deadline = time.monotonic() + 5
        metrics = {}
        while time.monotonic() < deadline:
            metrics = self.scrape(port)
            if value(metrics, "memzone_proxy_backend_up", address=self.servers["b"].address) == 1:
                break
            time.sleep(0.2)
        for server in self.servers.values():
            self.assertEqual(value(metrics, "memzone_proxy_backend_up", address=server.address), 1)
            self.assertEqual(value(metrics, "memzone_proxy_backend_pending_invalidations", address=server.address), 0)

    def test_one_failover_counts_one(self):
        key = "fo"
        with self.proxy.client() as c:
            c.request(b"set fo 0 0 1\r\nx\r\n")
        time.sleep(0.1)
        before = self.scrape()
        self.servers["a"].pause()
        try:
            with self.proxy.client() as c:
                self.assertEqual(c.request(b"get fo\r\n", timeout=5), b"VALUE fo 0 1\r\nx\r\nEND\r\n")
        finally:
            self.servers["a"].resume()
        after = self.scrape()
        self.assertEqual(total(after, "memzone_proxy_read_failovers_total") -
                         total(before, "memzone_proxy_read_failovers_total"), 1)
        self.assertEqual(value(after, "memzone_proxy_read_failovers_total", reason="error") -
                         value(before, "memzone_proxy_read_failovers_total", reason="error"), 1)
        self.assertGreaterEqual(value(after, "memzone_proxy_backend_failures_total", kind="timeout"), 1)

    def test_one_nack_counts_one_on_both_sides(self):
        self.controller.write_topology(self.topology.replace(self.servers["b"].address, "memcached-b:11211"))
        self.controller.wait_for_log("NACKed")
        self.assertEqual(value(self.scrape(), "memzone_proxy_topology_nacks_total"), 1)
        self.assertEqual(value(self.scrape(self.controller_metrics), "memzone_controller_nacks_total"), 1)
        self.assertEqual(value(self.scrape(self.controller_metrics), "memzone_controller_source_rejections_total"), 0)

    def test_probes_flip_at_the_right_moments(self):
        self.assertEqual(http_get(self.controller_metrics, "/readyz")[0], 200)
        self.assertEqual(http_get(self.metrics_port, "/healthz")[0], 200)
        # A proxy whose controller is not there yet (and has no state) is alive, not ready.
        port = free_port()
        grpc_port = free_port()
        lonely = Proxy(None, zone="a", controller="127.0.0.1:%d" % grpc_port,
                       extra_args=["--metrics-listen", "127.0.0.1:%d" % port]).start()
        self.addCleanup(lonely.stop)
        wait_for_port(port)
        self.assertEqual(http_get(port, "/healthz")[0], 200)
        self.assertEqual(http_get(port, "/readyz")[0], 503)
        late = Controller(self.topology, port=grpc_port).start()
        self.addCleanup(late.kill)
        self.wait_ready(port, 200, timeout=15)
        self.assertEqual(http_get(port, "/nope")[0], 404)

    def test_sigterm_under_load_loses_no_acknowledged_write(self):
        acked = []
        errors = []

        def writer():
            try:
                with self.proxy.client(timeout=10) as c:
                    for i in range(100000):
                        reply = c.request(b"set sig%d 0 0 3\r\nabc\r\n" % i)
                        if reply != b"STORED\r\n":
                            errors.append(reply)
                            return
                        acked.append(i)
            except (ConnectionError, OSError, TimeoutError):
                return  # the proxy closed us at a request boundary

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.5)
        self.proxy.proc.send_signal(signal.SIGTERM)
        t.join(timeout=20)
        self.assertEqual(self.proxy.proc.wait(timeout=15), 0)
        self.assertEqual(errors, [])
        self.assertGreater(len(acked), 100)
        for server in self.servers.values():
            with server.client() as c:
                for i in acked[-200:] + acked[:50]:
                    self.assertEqual(c.request(b"get sig%d\r\n" % i), b"VALUE sig%d 0 3\r\nabc\r\nEND\r\n" % i)


if __name__ == "__main__":
    unittest.main()
