"""memzone-controller --source kubernetes against a test API server that speaks the real
wire format (fake_kube_api.py), with a real memzone-proxy receiving the snapshots.

Which API server, and why: the DOUBLE, for what a real kube-apiserver does not do on demand:
watch chunks cut at arbitrary bytes, an ERROR 410 event at a chosen moment, the API server gone
for exactly a second, a Lease taken between the leader's read and its update (409 Conflict),
520 slices to page through, requests and connections counted. What a real one judges — RBAC,
the CRD's schema, the status subresource, printer columns, tokens, Leases, 410 after an etcd
compaction — is tested against a real one in test_kubernetes_real.py.

Each scenario asserts the snapshot the proxy applied, read back from its --state-dir (the
exact protobuf it received), and the ReplicatedPool status the controller wrote.
"""
import importlib
import json
import re
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from fake_kube_api import FakeKubeApi, endpoint, endpoint_slice, node, replicated_pool, service
from harness import Controller, Memcached, Proxy, free_port, ketama_index, wait_until

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


def micro_now():
    """metav1.MicroTime for now."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


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
        store.put("services", service("memcached", ports=[("memcache", self.port, self.port)]))
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
        # (Before the proxy connected, Ready=True said NoProxiesConnected.)
        wait_until(lambda: self.condition("Ready").get("reason") == "AllProxiesAcked", 10, "AllProxiesAcked")
        ready = self.condition("Ready")
        self.assertEqual(ready["status"], "True")
        self.assertEqual(self.status()["observedGeneration"], 1)
        self.assertEqual(self.status()["topologyVersion"], s.version)
        self.assertEqual(self.status()["proxies"], {"total": 1, "acked": 1})
        self.assertEqual(self.status()["zones"], [{"name": "zone-a", "readyBackends": 1},
                                                  {"name": "zone-b", "readyBackends": 1}])
        self.assertTrue(any("continue=" in path for _, path in self.api.requests), "lists were paginated")
        # Reads, status patches, and writes of Leases only (leader election, replica roster).
        self.assertTrue(all(m in ("GET", "PATCH") or "/leases" in p for m, p in self.api.requests),
                        [r for r in self.api.requests if r[0] not in ("GET", "PATCH")])

    def test_backend_names_from_hostname_else_target_ref_place_keys(self):
        # A StatefulSet behind a headless Service: each endpoint has the pod's `hostname`
        # and a targetRef to it; a Deployment's pods only have the targetRef.
        self.api.store.put("endpointslices", endpoint_slice("memcached-abcde", "memcached", [
            endpoint(IPS[0], "zone-a", node_name="node-a", pod="memcached-0", hostname="memcached-0"),
            endpoint(IPS[2], "zone-a", node_name="node-a", pod="memcached-1", hostname="memcached-1"),
            endpoint(IPS[3], "zone-a", node_name="node-a", pod="memcached-web-7d9f-x2k"),
            endpoint(IPS[1], "zone-b", node_name="node-b", pod="memcached-2", hostname="memcached-2")],
            self.port))
        snap = self.wait_snapshot(lambda s: len(self.backends(s).get("zone-a", [])) == 3, "three in zone-a")
        names = {}
        for p in snap.pools:
            self.assertEqual(p.hash_by, "name")
            for z in p.zones:
                for b in z.backends:
                    names[b.address] = b.name
        self.assertEqual(names, {IPS[0]: "memcached-0", IPS[2]: "memcached-1",
                                 IPS[3]: "memcached-web-7d9f-x2k", IPS[1]: "memcached-2"})
        # The proxy (zone-a) places keys by those names, not by the addresses.
        zone_a = [(IPS[0], "memcached-0"), (IPS[2], "memcached-1"), (IPS[3], "memcached-web-7d9f-x2k")]
        snap_a = next(z for z in snap.pools[0].zones if z.zone == "zone-a")
        order = [(b.address, b.name) for b in snap_a.backends]
        by_address = 0
        with self.proxy.client() as c:
            for i in range(60):
                key = "session:n%d" % i
                self.assertEqual(c.request(b"set %s 0 0 1\r\nx\r\n" % key.encode()), b"STORED\r\n")
                want = order[ketama_index(key, [n for _, n in order], named=True)][0]
                holders = []
                for ip, _ in zone_a:
                    with self.servers[ip].client() as direct:
                        if direct.request(b"get %s\r\n" % key.encode()) != b"END\r\n":
                            holders.append(ip)
                self.assertEqual(holders, [want], key)
                by_address += want != order[ketama_index(
                    key, ["%s:%d" % (a, self.port) for a, _ in order], named=False)][0]
        self.assertGreater(by_address, 0)  # names really changed placement

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

    # Round 2 defects: each test below would have caught its defect.

    def patches(self, name="sessions"):
        return [body for n, body in list(self.api.store.status_patches) if n == name]

    def test_status_is_patched_once_then_left_alone(self):
        """Defect 1: a field the status no longer has (topologyVersion of a pool that left the
        snapshot) was omitted from the merge patch, so the API server kept it, the stored
        status never matched, and the controller patched once a second forever."""
        store = self.api.store
        store.put("replicatedpools", replicated_pool("trolleys", "memcached", prefixes=["cart:"]))
        wait_until(lambda: self.status("trolleys").get("topologyVersion"), 10, "trolleys serving")
        # Now it claims a prefix that sessions owns: it leaves the snapshot.
        store.put("replicatedpools", replicated_pool("trolleys", "memcached", prefixes=["session:"]))
        wait_until(lambda: self.condition("Ready", "trolleys").get("reason") == "PrefixConflict", 10,
                   "PrefixConflict")
        wait_until(lambda: "topologyVersion" not in self.status("trolleys"), 5, "topologyVersion cleared")
        wait_until(lambda: self.status("trolleys").get("proxies") == {"total": 1, "acked": 1}, 10,
                   "the proxy's ACK counted")
        settled = len(self.patches("trolleys"))
        time.sleep(3.0)  # three status refreshes
        self.assertEqual(self.patches("trolleys")[settled:], [], "status patched again with nothing new")

    def test_no_noop_patch_before_the_watch_delivers_our_own_write(self):
        """Defect 1 (second half): right after a status write the watch still has the old
        object; the next refresh must compare with what the PATCH returned."""
        self.api.event_delay["replicatedpools"] = 1.5  # a slow watch
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b"),
                                             endpoint(IPS[2], "zone-c")], self.port))
        self.wait_snapshot(lambda s: "zone-c" in self.backends(s), "zone-c")
        start = len(self.patches())
        time.sleep(4.0)
        bodies = [json.dumps(b, sort_keys=True) for b in self.patches()[start - 1 if start else 0:]]
        repeats = [b for a, b in zip(bodies, bodies[1:]) if a == b]
        self.assertEqual(repeats, [], "the same patch was sent twice in a row")
        wait_until(lambda: self.condition("Ready").get("reason") == "AllProxiesAcked", 10, "Ready again")

    def test_port_number_is_the_service_port_not_the_pods(self):
        """Defect 2: `port: 11211` on a Service mapping 11211 -> the pods' port sent the proxies
        :11211. The Service port is mapped to the slice's port by name, as kube-proxy does."""
        store = self.api.store
        store.put("services", service("mapped", ports=[("admin", 8080, 9090), ("memcache", 11211, self.port)]))
        store.put("endpointslices", {**endpoint_slice("mapped-xyz", "mapped", [endpoint(IPS[2], "zone-a")], self.port),
                                     "ports": [{"name": "admin", "port": 9090, "protocol": "TCP"},
                                               {"name": "memcache", "port": self.port, "protocol": "TCP"}]})
        store.put("replicatedpools", replicated_pool("mapped", "mapped", port=11211, prefixes=["m:"]))
        s = self.wait_snapshot(lambda s: self.backends(s, "mapped"), "the mapped pool")
        self.assertEqual(self.backends(s, "mapped"), {"zone-a": ["%s:%d" % (IPS[2], self.port)]})
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"set m:1 0 0 2\r\nok\r\n"), b"STORED\r\n")
        with self.servers[IPS[2]].client() as d:
            self.assertEqual(d.request(b"get m:1\r\n"), b"VALUE m:1 0 2\r\nok\r\nEND\r\n")
        # A number that is no Service port is an error the status names.
        store.put("replicatedpools", replicated_pool("mapped", "mapped", port=self.port, prefixes=["m:"]))
        wait_until(lambda: self.condition("Ready", "mapped").get("reason") == "PortNotFound", 10, "PortNotFound")

    def test_never_ready_while_proxies_have_a_whole_zone_down(self):
        """Defect 2 (second half): with every backend of a zone unreachable, status still said
        Ready/AllProxiesAcked. Proxies report the backends they have down."""
        store = self.api.store
        store.put("services", service("dead", ports=[("memcache", 11211, self.port)]))
        # Nothing listens on IPS[5]: every backend of zone-b is down for the proxy.
        store.put("endpointslices", endpoint_slice("dead-1", "dead", [endpoint(IPS[0], "zone-a"),
                                                                      endpoint(IPS[5], "zone-b")], self.port))
        store.put("replicatedpools", replicated_pool("dead", "dead", port="memcache", prefixes=["d:"]))
        wait_until(lambda: self.condition("Ready", "dead").get("reason") == "BackendsUnreachable", 20,
                   "Ready=False BackendsUnreachable\n" + self.controller.logs()[-2000:])
        ready = self.condition("Ready", "dead")
        self.assertEqual(ready["status"], "False")
        self.assertIn("zone-b", ready["message"])
        self.assertEqual(self.condition("Degraded", "dead")["reason"], "BackendsUnreachable")
        # The healthy pool stays Ready: its zones are reachable.
        self.assertEqual(self.condition("Ready").get("status"), "True")

    def test_dual_stack_counts_each_pod_once(self):
        """Defect 3: an IPv4 and an IPv6 slice of one Service put each pod on the ring twice."""
        v6 = [endpoint("fd00::%d" % (i + 1), zone, pod="memcached-" + ip.replace(".", "-"))
              for i, (ip, zone) in enumerate([(IPS[0], "zone-a"), (IPS[1], "zone-b")])]
        self.api.store.put("endpointslices", endpoint_slice("memcached-v6", "memcached", v6, self.port,
                                                            address_type="IPv6"))
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b"),
                                             endpoint(IPS[2], "zone-c")], self.port))
        s = self.wait_snapshot(lambda s: "zone-c" in self.backends(s), "zone-c")
        self.assertEqual(self.backends(s), {"zone-a": ["%s:%d" % (IPS[0], self.port)],
                                            "zone-b": ["%s:%d" % (IPS[1], self.port)],
                                            "zone-c": ["%s:%d" % (IPS[2], self.port)]})

    def test_deleting_the_last_pool_reaches_the_proxies(self):
        """Defect 4: with no ReplicatedPool left nothing was published and proxies kept
        replicating the deleted pool; the same for a pool whose last backend went unready."""
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"set session:1 0 0 2\r\nok\r\n"), b"STORED\r\n")
        # The last backend goes unready: the pool has no zones; its keys have no pool.
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a", ready=False),
                                             endpoint(IPS[1], "zone-b", ready=False)], self.port))
        self.wait_snapshot(lambda s: len(s.pools) == 1 and not s.pools[0].zones, "a pool without zones")
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"get session:1\r\n"), b"SERVER_ERROR no pool for this key\r\n")
        wait_until(lambda: self.condition("Ready").get("reason") == "NoReadyBackends", 10, "NoReadyBackends")
        # The last ReplicatedPool is deleted: the proxies get a topology without pools.
        self.api.store.delete("replicatedpools", NS, "sessions")
        self.wait_snapshot(lambda s: len(s.pools) == 0, "a topology without pools")
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"set session:2 0 0 2\r\nok\r\n"), b"SERVER_ERROR no pool for this key\r\n")
            self.assertEqual(c.request(b"get anything\r\n"), b"SERVER_ERROR no pool for this key\r\n")

    def test_user_agent_and_kept_alive_connections(self):
        """Defect 6: no User-Agent, and a new TCP (and TLS) connection per request."""
        import harness
        version = subprocess.run([harness.CONTROLLER, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.split()[-1]
        self.assertEqual(set(self.api.user_agents), {"memzone-controller/" + version})
        connections, requests = self.api.connections, len(self.api.requests)
        for i in range(10):  # ten status writes
            self.api.store.put("endpointslices", endpoint_slice(
                "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")]
                + ([endpoint(IPS[2], "zone-c")] if i % 2 == 0 else []), self.port))
            time.sleep(0.3)
        new_requests = len(self.api.requests) - requests
        new_connections = self.api.connections - connections
        print("\n%d requests over %d new connections" % (new_requests, new_connections))
        self.assertGreaterEqual(new_requests, 10)
        self.assertLessEqual(new_connections, 2)

    def test_zones_column_is_a_string_field_with_every_zone(self):
        """Defect 6: the ZONES printer column listed `.status.zones[*].name`, which a real API
        server prints as the first zone only. It reads a string field now."""
        import yaml
        with open(os.path.join(ROOT, "deploy/crds/memzone.io_replicatedpools.yaml")) as f:
            crd = yaml.safe_load(f)
        version = crd["spec"]["versions"][0]
        column = [c for c in version["additionalPrinterColumns"] if c["name"] == "Zones"][0]
        self.assertEqual(column["type"], "string")
        path = column["jsonPath"]
        self.assertRegex(path, r"^\.status\.[A-Za-z]+$", "a plain field, no list expression")
        field = path.split(".")[-1]
        schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][field]
        self.assertEqual(schema["type"], "string")
        wait_until(lambda: self.status().get(field), 10, "status." + field)
        self.assertEqual(self.status()[field], "zone-a:1,zone-b:1")


class HighAvailabilityTest(unittest.TestCase):
    """Two controllers on one API double: every replica serves proxies, only the holder of the
    coordination.k8s.io/v1 Lease writes status; killing the leader hands the Lease over within
    the lease duration and proxies move to the other replica without re-applying anything."""

    LEASE_S = 2
    ELECTION = ["--leader-elect-lease-duration", "2s", "--leader-elect-renew-deadline", "1500ms",
                "--leader-elect-retry-period", "250ms"]

    def setUp(self):
        self.port = common_free_port(IPS[:2])
        self.servers = {ip: Memcached(port=self.port, host=ip).start() for ip in IPS[:2]}
        for srv in self.servers.values():
            self.addCleanup(srv.kill)
        self.api = FakeKubeApi(token="token-1").start()
        self.addCleanup(self.api.stop)
        store = self.api.store
        store.put("nodes", node("node-a", "zone-a"))
        store.put("services", service("memcached", ports=[("memcache", 11211, self.port)]))
        store.put("endpointslices", endpoint_slice("memcached-abcde", "memcached",
                                                   [endpoint(IPS[0], "zone-a")], self.port))
        store.put("replicatedpools", replicated_pool("sessions", "memcached", port=11211))
        self.token_file = os.path.join(tempfile.mkdtemp(prefix="memzone-kube-"), "token")
        with open(self.token_file, "w") as f:
            f.write("token-1\n")

    def controller(self):
        c = Controller(None, source_args=["--source", "kubernetes", "--namespace", NS, "--kube-api", self.api.url,
                                          "--kube-token-file", self.token_file], extra_args=self.ELECTION)
        self.addCleanup(c.kill)
        return c

    def proxy_on(self, controller):
        """A proxy subscribed to `controller` alone, on node-a."""
        p = Proxy(None, controller=controller.address, env={"NODE_NAME": "node-a"}).start()
        self.addCleanup(p.stop)
        return p

    def lease(self):
        lease = self.api.lease("memzone-controller", NS)
        return lease["spec"] if lease else {}

    def status(self):
        obj = self.api.store.objects["replicatedpools"].get((NS, "sessions"))
        return obj.get("status", {}) if obj else {}

    def ready(self):
        for c in self.status().get("conditions", []):
            if c["type"] == "Ready":
                return c
        return {}

    @staticmethod
    def identity(controller):
        m = re.search(r"became leader \(Lease \S+, identity (\S+)\)", controller.logs())
        return m.group(1) if m else None

    def test_leader_failover(self):
        a, b = self.controller(), self.controller()
        a.start()
        wait_until(lambda: self.identity(a), 10, "a to lead")
        self.assertEqual(self.lease().get("holderIdentity"), self.identity(a))
        self.assertEqual(self.lease().get("leaseDurationSeconds"), self.LEASE_S)
        # The proxy lists both; b is not up yet, so it lands on a, the leader.
        proxy = Proxy(None, controller="%s,%s" % (a.address, b.address), env={"NODE_NAME": "node-a"}).start()
        self.addCleanup(proxy.stop)
        wait_until(lambda: self.ready().get("reason") == "AllProxiesAcked", 10, "Ready via a")
        b.start()
        b.wait_for_log("serving topology")
        wait_until(lambda: b.versions(), 10, "b's snapshot")
        self.assertEqual(b.versions()[-1], a.versions()[-1], "replicas serve the same version")

        # Both running: one writer, no flapping.
        patches, transitions = len(self.api.store.status_patches), self.lease().get("leaseTransitions")
        time.sleep(3)
        self.assertEqual(len(self.api.store.status_patches), patches, "status changed while nothing did")
        self.assertEqual(self.lease().get("holderIdentity"), self.identity(a))
        self.assertEqual(self.lease().get("leaseTransitions"), transitions)
        self.assertNotIn("became leader", b.logs())
        self.assertNotIn("wrote status", b.logs())
        self.assertEqual(self.status()["proxies"], {"total": 1, "acked": 1})
        applied = proxy.logs().count("applied topology")

        # Kill the leader (no release): b takes the Lease within the lease duration.
        killed = time.monotonic()
        a.kill()
        wait_until(lambda: self.identity(b), self.LEASE_S + 5, "b to lead\n" + b.logs()[-2000:])
        took = time.monotonic() - killed
        print("\nleader killed: the standby took the Lease after %.2f s (lease %d s)" % (took, self.LEASE_S))
        self.assertEqual(self.lease().get("holderIdentity"), self.identity(b))
        # client-go's bound: the lease duration after the standby last saw a renewal, plus its
        # polling on both ends (each at most 2.2 retry periods, jittered), plus request time.
        self.assertLess(took, self.LEASE_S + 2 * 2.2 * 0.25 + 0.5)
        # The proxy moved to b and applied nothing again (same content, same version).
        b.wait_for_log("proxy ")
        self.assertEqual(proxy.logs().count("applied topology"), applied)
        self.assertNotIn("sent topology", b.logs())
        # b writes status now, and the proxy keeps ACKing through it.
        self.api.store.put("endpointslices", endpoint_slice("memcached-abcde", "memcached",
                                                            [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")],
                                                            self.port))
        wait_until(lambda: len(b.versions()) >= 2, 10, "the new topology")
        version = b.versions()[-1]
        wait_until(lambda: self.status().get("topologyVersion") == version and
                   self.ready().get("reason") == "AllProxiesAcked", 10, "status from b\n" + b.logs()[-2000:])
        self.assertEqual(self.status()["proxies"], {"total": 1, "acked": 1})
        self.assertIn("wrote status", b.logs())

    def test_sigterm_releases_the_lease_and_proxies_are_counted_across_replicas(self):
        a, b = self.controller(), self.controller()
        a.start()
        wait_until(lambda: self.identity(a), 10, "a to lead")
        b.start()
        b.wait_for_log("serving topology")
        # One proxy on each replica: the leader counts both.
        pa, pb = self.proxy_on(a), self.proxy_on(b)
        wait_until(lambda: self.status().get("proxies") == {"total": 2, "acked": 2}, 10,
                   "both proxies counted\n" + a.logs()[-2000:])
        self.assertEqual(self.ready().get("reason"), "AllProxiesAcked")
        # SIGTERM: a releases the Lease; b takes it at its next retry, not a lease duration later.
        import signal
        stopped = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: self.identity(b), 5, "b to lead")
        took = time.monotonic() - stopped
        a.stop()
        print("\nleader stopped: the standby took the released Lease after %.2f s" % took)
        self.assertLess(took, self.LEASE_S)
        self.assertIn("released Lease", a.logs())
        # a's proxy reconnects nowhere (it listed only a); b counts what it sees.
        wait_until(lambda: self.status().get("proxies") == {"total": 1, "acked": 1}, 10, "b's count")

    def test_dirty_servers_reach_the_proxies_of_every_replica(self):
        """A proxy on replica a owes a server invalidations; a proxy on replica b must stop
        reading it too: replicas share their proxies' debts through their roster Leases."""
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached",
            [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")], self.port))
        a, b = self.controller(), self.controller()
        a.start()
        b.start()
        b.wait_for_log("serving topology")
        pa, pb = self.proxy_on(a), self.proxy_on(b)
        with pa.client() as c:
            wait_until(lambda: c.request(b"set k 0 0 1\r\nx\r\n") == b"STORED\r\n", 10,
                       "pa serving")
        self.assertEqual(pb.stats().get("dirty_servers"), "0")
        # Zone b's server stops answering: pa's copies to it fail and pa owes it deletes.
        zone_b = self.servers[IPS[1]]
        zone_b.pause()
        try:
            with pa.client() as c:
                for i in range(5):
                    c.request(b"set k%d 0 0 1\r\nx\r\n" % i, timeout=5)
            wait_until(lambda: pa.stats().get("owed_servers") == "1", 5, "pa owes zone b")
            started = time.monotonic()
            wait_until(lambda: pb.stats().get("dirty_servers") == "1", 10,
                       "pb told through replica b\n" + b.logs()[-2000:])
            print("\ndirty server reached the other replica's proxy after %.2f s (retry period "
                  "0.25 s)" % (time.monotonic() - started))
        finally:
            zone_b.resume()
        # pa replays once zone b answers, reports clean; pb hears it through the replicas.
        wait_until(lambda: pb.stats().get("dirty_servers") == "0", 15, "pb clean again")

    def test_a_leader_whose_lease_is_taken_stops_writing(self):
        """Another holder takes the Lease (as a replica with a faster clock could): the leader's
        renewal, conditional on the resourceVersion it read, gets 409 Conflict; it stops leading
        within the renew deadline and writes no status until the intruder's lease expires."""
        a = self.controller()
        a.start()
        wait_until(lambda: self.identity(a), 10, "a to lead")
        wait_until(lambda: self.ready().get("reason") == "NoProxiesConnected", 10, "status from a")

        def intrude():
            lease = self.api.lease("memzone-controller", NS)
            lease["spec"].update({"holderIdentity": "intruder", "renewTime": micro_now()})
            self.api.store.put("leases", lease)  # a new resourceVersion: a's next update conflicts

        conflicts = self.api.lease_conflicts
        taken = time.monotonic()
        # Right after a's next read of the Lease: a's update then carries a stale version.
        self.api.after_lease_get = lambda name: name == "memzone-controller" and (intrude() or True)
        wait_until(lambda: "stopped leading" in a.logs(), 5, "a to stop leading\n" + a.logs()[-2000:])
        print("\nLease taken: the leader stopped after %.2f s" % (time.monotonic() - taken))
        self.assertGreater(self.api.lease_conflicts, conflicts, "no 409 Conflict was exercised")
        # While the intruder renews, a writes nothing, whatever changes.
        patches = len(self.api.store.status_patches)
        self.api.store.put("endpointslices", endpoint_slice("memcached-abcde", "memcached",
                                                            [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")],
                                                            self.port))
        for _ in range(8):
            time.sleep(0.25)
            intrude()
        self.assertEqual(len(self.api.store.status_patches), patches, "a wrote status without the Lease")
        # The intruder goes quiet: a takes the Lease back after the lease duration and writes.
        wait_until(lambda: self.lease().get("holderIdentity") == self.identity(a), self.LEASE_S + 3, "a again")
        wait_until(lambda: len(self.api.store.status_patches) > patches, 5, "a's status write")


class ReasonsDocumentedTest(unittest.TestCase):
    """Defect 6: every condition reason the controller sets is documented in the README."""

    def test_every_reason_in_the_source_is_in_the_readme(self):
        import re
        sources = ""
        for path in ("controlplane/status/status_writer.cc", "controlplane/model/cluster_model.cc"):
            with open(os.path.join(ROOT, path)) as f:
                sources += f.read()
        # Reasons are whole CamelCase string literals of two words or more.
        reasons = set(re.findall(r'"([A-Z][a-z]+(?:[A-Z][a-z]+)+)"', sources))
        self.assertGreaterEqual(reasons, {"AllProxiesAcked", "NoProxiesConnected", "ProxiesPending", "InvalidSpec",
                                          "NoReadyBackends", "PrefixConflict", "ServiceNotFound", "PortNotFound",
                                          "BackendsUnreachable", "AsExpected", "ZoneWithoutBackends", "ProxyRejected"})
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        self.assertEqual(sorted(r for r in reasons if "`%s`" % r not in readme), [])


if __name__ == "__main__":
    unittest.main()
