"""memzone-controller --source kubernetes against a test API server that speaks the real
wire format (fake_kube_api.py), with a real memzone-proxy receiving the snapshots.

Each scenario asserts the snapshot the proxy applied, read back from its --state-dir (the
exact protobuf it received), and the ReplicatedPool status the controller wrote.
"""
import importlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from fake_kube_api import FakeKubeApi, endpoint, endpoint_slice, node, replicated_pool
from harness import Controller, Memcached, Proxy, free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
NS = "cache"
IPS = ["127.0.0.%d" % i for i in range(2, 8)]


def load_topology_pb2():
    out = tempfile.mkdtemp(prefix="memzone-pb2-")
    subprocess.run(["protoc", "--python_out=" + out, "-I", os.path.join(ROOT, "proto"),
                    os.path.join(ROOT, "proto/memzone/v1/topology.proto")], check=True, timeout=60)
    sys.path.insert(0, out)
    return importlib.import_module("memzone.v1.topology_pb2")


pb2 = load_topology_pb2()


def common_free_port(hosts):
    """A port free on every one of `hosts` (all loopback addresses)."""
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


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class KubernetesSourceTest(unittest.TestCase):
    def setUp(self):
        self.port = common_free_port(IPS)
        self.servers = {ip: Memcached(port=self.port, host=ip).start() for ip in IPS[:4]}
        for s in self.servers.values():
            self.addCleanup(s.kill)
        self.api = FakeKubeApi(token="token-1").start()
        self.addCleanup(self.api.stop)
        store = self.api.store
        store.put("nodes", node("node-a", "zone-a"))
        store.put("nodes", node("node-b", "zone-b"))
        store.put("endpointslices", endpoint_slice("memcached-abcde", "memcached",
                                                   [endpoint(IPS[0], "zone-a", node_name="node-a"),
                                                    endpoint(IPS[1], "zone-b", node_name="node-b")], self.port))
        # Enough unrelated slices that every list of slices needs two pages.
        for i in range(520):
            store.put("endpointslices", endpoint_slice("other-%03d" % i, "other",
                                                       [endpoint("10.1.%d.%d" % (i // 250, i % 250 + 1), "zone-a")], 80))
        store.put("replicatedpools", replicated_pool("sessions", "memcached", prefixes=["session:"],
                                                     replication={"wait": "local", "readFailover": ["error"]}))
        self.token_file = os.path.join(tempfile.mkdtemp(prefix="memzone-kube-"), "token")
        with open(self.token_file, "w") as f:
            f.write("token-1\n")
        self.metrics_port = free_port()
        self.controller = Controller(None, source_args=[
            "--source", "kubernetes", "--namespace", NS, "--kube-api", self.api.url,
            "--kube-token-file", self.token_file],
            extra_args=["--metrics-listen", "127.0.0.1:%d" % self.metrics_port]).start()
        self.addCleanup(self.controller.kill)
        self.proxy = Proxy(None, controller=self.controller.address, env={"NODE_NAME": "node-a"}).start()
        self.addCleanup(self.proxy.stop)
        self.wait_snapshot(lambda s: len(s.pools) == 1, "the first snapshot")

    # What the proxy received.
    def snapshot(self):
        path = os.path.join(self.proxy.state_dir, "topology.pb")
        try:
            with open(path, "rb") as f:
                s = pb2.TopologySnapshot()
                s.ParseFromString(f.read())
                return s
        except (FileNotFoundError, Exception):
            return None

    def wait_snapshot(self, predicate, what, timeout=10.0):
        return wait_until(lambda: (lambda s: s if s is not None and predicate(s) else None)(self.snapshot()),
                          timeout, what + "\ncontroller log:\n" + self.controller.logs()[-3000:])

    @staticmethod
    def backends(snapshot, pool="sessions"):
        out = {}
        for p in snapshot.pools:
            if p.name == pool:
                for z in p.zones:
                    out[z.zone] = sorted("%s:%d" % (b.address, b.port) for b in z.backends)
        return out

    def status(self, name="sessions"):
        obj = self.api.store.objects["replicatedpools"].get((NS, name))
        return obj.get("status", {}) if obj else {}

    def condition(self, type_, name="sessions"):
        for c in self.status(name).get("conditions", []):
            if c["type"] == type_:
                return c
        return {}

    def test_initial_snapshot_status_and_zone_from_node(self):
        s = self.snapshot()
        self.assertEqual(self.backends(s), {"zone-a": ["%s:%d" % (IPS[0], self.port)],
                                            "zone-b": ["%s:%d" % (IPS[1], self.port)]})
        self.assertEqual([(r.prefix, r.pool) for r in s.routes], [("session:", "sessions")])
        self.assertEqual(s.proxy_zone, "zone-a")  # node-a's topology.kubernetes.io/zone label
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"set session:1 0 0 2\r\nok\r\n"), b"STORED\r\n")
        for ip in IPS[:2]:
            with self.servers[ip].client() as d:
                wait_until(lambda: d.request(b"get session:1\r\n") != b"END\r\n", 2, "the copy on " + ip)
        wait_until(lambda: self.condition("Ready").get("status") == "True", 10, "Ready=True")
        ready = self.condition("Ready")
        self.assertEqual(ready["reason"], "AllProxiesAcked")
        self.assertEqual(self.status()["observedGeneration"], 1)
        self.assertEqual(self.status()["topologyVersion"], s.version)
        self.assertEqual(self.status()["proxies"], {"total": 1, "acked": 1})
        self.assertEqual(self.status()["zones"], [{"name": "zone-a", "readyBackends": 1},
                                                  {"name": "zone-b", "readyBackends": 1}])
        self.assertTrue(any("continue=" in path for _, path in self.api.requests), "lists were paginated")
        self.assertTrue(all(m in ("GET", "PATCH") for m, _ in self.api.requests))

    def test_unready_pod_leaves_the_ring_within_one_second(self):
        slice_ = endpoint_slice("memcached-abcde", "memcached",
                                [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b", ready=False)], self.port)
        start = time.monotonic()
        self.api.store.put("endpointslices", slice_)
        self.wait_snapshot(lambda s: "zone-b" not in self.backends(s), "zone-b's pod to leave", timeout=5)
        elapsed = time.monotonic() - start
        print("\nunready endpoint left the proxy's ring after %.0f ms" % (elapsed * 1000))
        self.assertLess(elapsed, 1.0)
        # Terminating endpoints leave too, even when still marked ready.
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b"),
                                             endpoint(IPS[2], "zone-a", terminating=True)], self.port))
        s = self.wait_snapshot(lambda s: "zone-b" in self.backends(s), "zone-b back")
        self.assertEqual(self.backends(s)["zone-a"], ["%s:%d" % (IPS[0], self.port)])

    def test_a_burst_of_slice_updates_makes_one_snapshot(self):
        before = self.controller.logs().count("from kubernetes")
        sends_before = self.controller.logs().count("sent topology")
        for i in range(50):  # 50 updates within a few milliseconds, the last one counts
            eps = [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")]
            if i == 49:
                eps.append(endpoint(IPS[2], "zone-c"))
            self.api.store.put("endpointslices", endpoint_slice("memcached-abcde", "memcached", eps, self.port))
        self.wait_snapshot(lambda s: "zone-c" in self.backends(s), "the burst's result")
        time.sleep(0.5)
        self.assertLessEqual(self.controller.logs().count("from kubernetes") - before, 2)
        self.assertLessEqual(self.controller.logs().count("sent topology") - sends_before, 2)

    def test_new_zone_and_slices_with_duplicates(self):
        p = self.port
        store = self.api.store
        store.put("endpointslices", endpoint_slice("memcached-fghij", "memcached",
                                                   [endpoint(IPS[1], "zone-b"), endpoint(IPS[2], "zone-c")], p))
        store.put("endpointslices", endpoint_slice("memcached-klmno", "memcached",
                                                   [endpoint(IPS[2], "zone-c"), endpoint(IPS[3], None)], p))
        s = self.wait_snapshot(lambda s: "zone-c" in self.backends(s), "zone-c to appear")
        self.assertEqual(self.backends(s), {"unknown": ["%s:%d" % (IPS[3], p)],
                                            "zone-a": ["%s:%d" % (IPS[0], p)],
                                            "zone-b": ["%s:%d" % (IPS[1], p)],
                                            "zone-c": ["%s:%d" % (IPS[2], p)]})

    def test_410_gone_relists_and_sees_deletes_missed_in_the_gap(self):
        store = self.api.store
        store.put("endpointslices", endpoint_slice("memcached-extra", "memcached", [endpoint(IPS[2], "zone-c")], self.port))
        self.wait_snapshot(lambda s: "zone-c" in self.backends(s), "zone-c")
        # In-stream form: the watch gets an ERROR 410 while the delete's event is compacted away.
        relists = len(self.api.lists)
        with store.lock:
            store.pending_errors["endpointslices"] = 1
            store.delete("endpointslices", NS, "memcached-extra")
            store.compact()
            store.lock.notify_all()
        self.wait_snapshot(lambda s: "zone-c" not in self.backends(s), "the missed delete (ERROR 410)")
        self.assertGreater(len(self.api.lists), relists)
        # HTTP form: the watch is dropped, history compacted, and the rewatch answered 410.
        store.put("endpointslices", endpoint_slice("memcached-extra2", "memcached", [endpoint(IPS[3], "zone-d")], self.port))
        self.wait_snapshot(lambda s: "zone-d" in self.backends(s), "zone-d")
        with store.lock:
            self.api.drop_watches()
            store.delete("endpointslices", NS, "memcached-extra2")
            store.compact()
        self.wait_snapshot(lambda s: "zone-d" not in self.backends(s), "the missed delete (HTTP 410)")
        self.assertIn('kind="EndpointSlice"', self.scrape())

    def scrape(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5) as r:
            return r.read().decode()

    def test_api_server_restart(self):
        self.api.restart(down_seconds=1.0)
        self.api.store.put("endpointslices", endpoint_slice("memcached-late", "memcached",
                                                            [endpoint(IPS[2], "zone-c")], self.port))
        self.wait_snapshot(lambda s: "zone-c" in self.backends(s), "a change after the restart", timeout=20)

    def test_cr_edit_and_invalid_cr(self):
        self.api.store.put("replicatedpools", replicated_pool(
            "sessions", "memcached", prefixes=["session:", "cart:"],
            replication={"wait": "all", "readFailover": ["error", "miss"]}))
        s = self.wait_snapshot(lambda s: len(s.routes) == 2, "the new prefixes")
        self.assertEqual(sorted(r.prefix for r in s.routes), ["cart:", "session:"])
        self.assertEqual(s.pools[0].replication.wait, pb2.WAIT_ALL)
        self.assertTrue(s.pools[0].replication.failover_on_miss)
        wait_until(lambda: self.status().get("observedGeneration") == 2, 10, "observedGeneration 2")
        good_version = s.version
        # An invalid edit: Ready=False with the reason; the proxies keep the last good topology.
        self.api.store.put("replicatedpools", replicated_pool(
            "sessions", "memcached", prefixes=["session:"], replication={"wait": "sometimes"}))
        wait_until(lambda: self.condition("Ready").get("reason") == "InvalidSpec", 10, "Ready=False InvalidSpec")
        ready = self.condition("Ready")
        self.assertEqual(ready["status"], "False")
        self.assertIn("spec.replication.wait", ready["message"])
        self.assertEqual(self.status()["observedGeneration"], 3)
        time.sleep(0.5)
        self.assertEqual(self.snapshot().version, good_version)

    def test_token_rotation_401_until_the_file_changes(self):
        self.api.token = "token-2"  # the API server now wants the rotated token
        self.api.drop_watches()
        time.sleep(1.0)
        self.assertGreater(self.api.unauthorized, 0)
        with open(self.token_file, "w") as f:
            f.write("token-2\n")  # the kubelet rotates the projected token
        self.api.store.put("endpointslices", endpoint_slice("memcached-rot", "memcached",
                                                            [endpoint(IPS[2], "zone-c")], self.port))
        self.wait_snapshot(lambda s: "zone-c" in self.backends(s), "a change after the rotation", timeout=20)


if __name__ == "__main__":
    unittest.main()
