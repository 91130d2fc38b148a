"""Controller replicas on one Kubernetes API double (fake_kube_api.py with Leases), with real
proxies: what status counts while replicas are killed, paused, resumed and stopped, and how
fast a stopping replica hands its proxies over (issue 24)."""
import json
import os
import signal
import socket
import tempfile
import threading
import time
import unittest

from fake_kube_api import FakeKubeApi, endpoint, endpoint_slice, node, replicated_pool, service
from harness import Controller, Memcached, Proxy, free_port, metric, wait_until

NS = "cache"
IPS = ["127.0.0.%d" % i for i in range(2, 4)]


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


class HighAvailabilityBase(unittest.TestCase):
    ELECTION = ["--leader-elect-lease-duration", "2s", "--leader-elect-renew-deadline", "1500ms",
                "--leader-elect-retry-period", "250ms"]

    def setUp(self):
        self.port = common_free_port(IPS)
        self.servers = {ip: Memcached(port=self.port, host=ip).start() for ip in IPS}
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

    controller_tls = None  # {"cert", "key", "client_ca", "allowed"} for every replica
    proxy_tls = None       # {"ca", "cert", "key", "server_name"} for every proxy

    EXTRA = []  # more controller flags

    def controller(self, port=None):
        c = Controller(None, port=port,
                       source_args=["--source", "kubernetes", "--namespace", NS, "--kube-api",
                                    self.api.url, "--kube-token-file", self.token_file],
                       extra_args=self.ELECTION + self.EXTRA, tls=self.controller_tls)
        self.addCleanup(c.kill)
        return c

    def proxy_on(self, *controllers, metrics=False):
        """A proxy on node-a listing `controllers` (tried in turn from a random one); with
        `metrics`, its /metrics on p.metrics_port."""
        extra_args = []
        if metrics:
            port = free_port()
            extra_args = ["--metrics-listen", "127.0.0.1:%d" % port]
        p = Proxy(None, controller=",".join(c.address for c in controllers),
                  env={"NODE_NAME": "node-a"}, controller_tls=self.proxy_tls,
                  extra_args=extra_args).start()
        if metrics:
            p.metrics_port = port
        self.addCleanup(p.stop)
        return p

    def two_replicas(self):
        """Two controller replicas, started, each streaming its proxies' debts to the other."""
        replicas = self.controller(), self.controller()
        for c in replicas:
            c.start()
        for c in replicas:
            wait_until(lambda: "streaming dirty servers to replica" in c.logs(), 10,
                       "the replicas' streams\n" + c.logs()[-2000:])
        return replicas

    def status(self):
        obj = self.api.store.objects["replicatedpools"].get((NS, "sessions"))
        return obj.get("status", {}) if obj else {}

    @staticmethod
    def identity(controller):
        import re
        m = re.search(r"became leader \(Lease \S+, identity (\S+)\)", controller.logs())
        return m.group(1) if m else None


def member_key(node_id):
    """The controller's key for a proxy in a replica Lease: FNV-1a 64 of its node id, hex."""
    h = 1469598103934665603
    for c in node_id.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def replica_lease(name, renew_time, view, duration=2):
    """A replica Lease as another controller replica keeps it (ReplicaRoster)."""
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"memzone.io/replica-of": "memzone-controller"},
                         "annotations": {"memzone.io/proxies": json.dumps(view)}},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": duration,
                     "acquireTime": renew_time, "renewTime": renew_time, "leaseTransitions": 0}}


class ReplicaCountTest(HighAvailabilityBase):
    """Issue 24 #2 and #3: status counts the proxies connected to live replicas, each once, at
    every write, whatever replicas are killed, paused, resumed or stopped."""

    def proxies_written(self, since=0):
        """status.proxies.total after each status write from `since` on (writes are merge
        patches: a write that leaves the total alone repeats it)."""
        total, out = None, []
        for i, (_, s) in enumerate(list(self.api.store.status_patches)):
            if isinstance(s.get("proxies"), dict) and "total" in s["proxies"]:
                total = s["proxies"]["total"]
            if i >= since:
                out.append(total)
        return out

    def node_id(self, proxy):
        path = os.path.join(proxy.state_dir, "node-id")
        wait_until(lambda: os.path.exists(path), 10, "the proxy's node id")
        with open(path) as f:
            return f.read().strip()

    def test_dead_leases_and_proxies_listed_twice_are_not_counted(self):
        """A replica Lease renewed an hour ago was counted for three retry periods when first
        seen ("3 of 5 proxies"); a live replica listing a proxy that is connected elsewhere
        (one resumed after a pause, before it notices its streams are gone) counted it twice."""
        a = self.controller()
        a.start()
        wait_until(lambda: self.identity(a), 10, "a to lead")
        version = wait_until(lambda: a.versions(), 10, "a's snapshot")[-1]
        proxy = self.proxy_on(a)
        key = member_key(self.node_id(proxy))
        wait_until(lambda: self.status().get("proxies") == {"total": 1, "acked": 1}, 10, "the proxy")
        since = len(self.api.store.status_patches)
        hour_ago = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 3600))
        self.api.store.put("leases", replica_lease(
            "memzone-controller-dead", hour_ago,
            {"version": version, "total": 2, "acked": 2, "nacked": 0, "zonesDown": {},
             "dirty": [], "members": {"00000000000000aa": "a", "00000000000000bb": "a"}}))
        # A live replica (renewing every retry period) that still lists our proxy.
        stop = threading.Event()

        def renew():
            while not stop.is_set():
                self.api.store.put("leases", replica_lease(
                    "memzone-controller-resumed", micro_now(),
                    {"version": version, "total": 1, "acked": 1, "nacked": 0, "zonesDown": {},
                     "dirty": [], "members": {key: "a"}}))
                stop.wait(0.25)

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        self.addCleanup(renewer.join, 5)
        self.addCleanup(stop.set)
        # Three seconds of status writes (one a second, and one on a change): each says 1.
        time.sleep(3.5)
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-a")],
            self.port))
        wait_until(lambda: len(a.versions()) >= 2, 10, "the new topology")
        wait_until(lambda: self.status().get("topologyVersion") == a.versions()[-1] and
                   self.status().get("proxies") == {"total": 1, "acked": 1}, 10, "the proxy ACKed")
        written = self.proxies_written(since)
        print("\nproxies.total written with a dead Lease and a proxy listed twice: %s" % written)
        self.assertTrue(written, "no status written")
        self.assertEqual(set(written), {1}, a.logs()[-3000:])

    def test_graceful_stop_moves_proxies_first_and_status_never_drops(self):
        """SIGTERM of the leader: its proxy streams end first, the proxies move to the other
        replica at once, the Leases go after; the process exits within a second; status keeps
        counting all three proxies; a change made right after SIGTERM reaches them fast."""
        a, b = self.controller(), self.controller()
        a.start()
        wait_until(lambda: self.identity(a), 10, "a to lead")
        # b is not up: every proxy lands on a (the list is tried in turn).
        proxies = []
        for _ in range(3):
            proxies.append(self.proxy_on(a, b))
        wait_until(lambda: self.status().get("proxies") == {"total": 3, "acked": 3}, 10, "3 proxies on a")
        b.start()
        b.wait_for_log("serving topology")
        wait_until(lambda: b.versions() and b.versions()[-1] == a.versions()[-1], 10, "b's snapshot")
        time.sleep(0.6)  # b has listed a's replica Lease
        since = len(self.api.store.status_patches)
        stopped = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        # A change right after SIGTERM: the proxies get it from b.
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-a")],
            self.port))
        a.proc.wait(timeout=10)
        exited = time.monotonic() - stopped
        moved = wait_until(lambda: b.logs().count("connected (zone") >= 3 and time.monotonic(), 5,
                           "the proxies on b\n" + b.logs()[-2000:]) - stopped
        version = wait_until(lambda: len(b.versions()) >= 2 and b.versions()[-1], 10, "the new topology")
        wait_until(lambda: all(p.stats().get("proxy_topology_version") == version for p in proxies), 5,
                   "every proxy on the new topology")
        changed = time.monotonic() - stopped
        wait_until(lambda: self.identity(b), 5, "b to lead")
        wait_until(lambda: self.status().get("topologyVersion") == version and
                   self.status().get("proxies") == {"total": 3, "acked": 3}, 10, "b's status")
        a.log.close()
        written = self.proxies_written(since)
        print("\nSIGTERM: exited after %.2f s, proxies on the other replica after %.2f s, a change "
              "made 50 ms after SIGTERM served by all after %.2f s; proxies.total written: %s"
              % (exited, moved, changed, written))
        self.assertLess(exited, 1.0, a.logs()[-2000:])
        self.assertLess(moved, 1.0)
        self.assertLess(changed, 1.5)
        self.assertTrue(written)
        self.assertEqual(set(written), {3}, b.logs()[-3000:])
        log = a.logs()
        self.assertLess(log.index("proxy streams ended"), log.index("released Lease"))

    def test_status_counts_connected_proxies_under_kill_pause_and_resume(self):
        """Three proxies over two replicas. Killing a replica that has proxies, pausing the
        leader until its proxies leave it (keepalive, ~8 s), resuming it (it renews its Lease
        before noticing its streams are gone): no status write counts a proxy twice, and
        none after the kill or the resume counts fewer than the three connected."""
        a, b = self.controller(), self.controller()
        a.start()
        wait_until(lambda: self.identity(a), 10, "a to lead")
        b.start()
        b.wait_for_log("serving topology")
        for _ in range(3):
            self.proxy_on(a, b)  # each starts from a random one of the two
        wait_until(lambda: self.status().get("proxies") == {"total": 3, "acked": 3}, 10, "3 proxies")
        time.sleep(0.6)  # every replica Lease renewed with its proxies and listed
        on_b = self.connected(b)
        since = len(self.api.store.status_patches)
        # Kill the standby if it has proxies (they move to the leader), else the leader (the
        # standby takes over after the lease duration, its proxies already there).
        victim, survivor = (b, a) if on_b else (a, b)
        victim.kill()
        self.change_topology()  # status written while the proxies move
        wait_until(lambda: self.identity(survivor), 10, "a leader")
        time.sleep(1)
        self.change_topology()
        time.sleep(2)  # the victim's Lease goes stale (2 s) meanwhile
        wait_until(lambda: self.status().get("proxies") == {"total": 3, "acked": 3}, 10, "3 after the kill")
        killed = self.proxies_written(since)
        # The victim again (a new replica on its address), then pause the leader (every proxy
        # is on it) until its proxies left it for the new one, then resume it.
        fresh = self.controller(port=victim.port)
        fresh.start()
        fresh.wait_for_log("serving topology")
        time.sleep(0.6)
        since = len(self.api.store.status_patches)
        survivor.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: self.identity(fresh), 10, "the new replica to lead")
            self.change_topology()
            wait_until(lambda: self.connected(fresh) >= 3, 20, "the proxies on the new replica")
            time.sleep(0.5)
        finally:
            survivor.proc.send_signal(signal.SIGCONT)
        paused = self.proxies_written(since)
        since = len(self.api.store.status_patches)
        self.change_topology()  # status written while the resumed replica renews its Lease
        time.sleep(1.5)
        self.change_topology()
        time.sleep(1.5)
        resumed = self.proxies_written(since)
        print("\nproxies.total written: %s killed %s; leader paused %s; resumed %s"
              % ("standby" if on_b else "leader", killed, paused, resumed))
        self.assertTrue(killed and paused and resumed)
        # Paused: its proxies count while its Lease is fresh (2 s), then not until keepalive
        # moves them (they serve, but no live replica has them): never more than three.
        self.assertLessEqual(max(paused), 3)
        self.assertEqual(set(killed), {3})
        self.assertEqual(set(resumed), {3})
        self.assertEqual(self.status().get("proxies"), {"total": 3, "acked": 3})

    def change_topology(self):
        """A new topology (one or two servers in zone-a, in turn): status is written again."""
        self.toggle = not getattr(self, "toggle", False)
        self.api.store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached",
            [endpoint(ip, "zone-a") for ip in (IPS if self.toggle else IPS[:1])], self.port))

    @staticmethod
    def connected(controller):
        """Proxies connected to `controller` now, from its log."""
        log = controller.logs()
        return log.count("connected (zone") - log.count(" disconnected\n")


class ReplicaDirtyExchangeTest(HighAvailabilityBase):
    """Issue 24 #5: replicas share their proxies' debts over a gRPC stream between them, not
    only through their Leases (a renewal plus a listing, ~1-5 s)."""

    def test_dirty_server_reaches_the_other_replicas_proxy_within_50_ms(self):
        store = self.api.store
        store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")],
            self.port))
        store.put("replicatedpools", replicated_pool("sessions", "memcached", port=11211,
                                                     replication={"wait": "all"}))
        a, b = self.two_replicas()
        pa, pb = self.proxy_on(a), self.proxy_on(b)
        with pa.client() as c:
            wait_until(lambda: c.request(b"set k 0 0 1\r\nx\r\n") == b"STORED\r\n", 10, "pa serving")
        wait_until(lambda: pb.stats().get("proxy_topology_version") == pa.stats().get("proxy_topology_version"),
                   10, "pb on the same topology")
        self.assertEqual(pb.stats().get("dirty_servers"), "0")
        zone_b = self.servers[IPS[1]]
        zone_b.pause()
        try:
            with pa.client() as writer, pa.client() as wa, pb.client() as wb:
                writer.send(b"set k1 0 0 1\r\nx\r\n")
                owed = dirty = None
                deadline = time.monotonic() + 10
                while (owed is None or dirty is None) and time.monotonic() < deadline:
                    if owed is None and pa.stats(wa).get("owed_servers") == "1":
                        owed = time.monotonic()
                    if dirty is None and pb.stats(wb).get("dirty_servers") == "1":
                        dirty = time.monotonic()
                self.assertIsNotNone(owed, "pa never owed zone b\n" + pa.logs()[-2000:])
                self.assertIsNotNone(dirty, "pb never heard\n" + b.logs()[-2000:])
                reply = writer.read_reply(timeout=5)
                print("\ndirty server on the other replica's proxy %.1f ms after the owing proxy "
                      "had it; write answered %r" % ((dirty - owed) * 1000, reply))
                self.assertLess(dirty - owed, 0.05, a.logs()[-1500:] + b.logs()[-1500:])
        finally:
            zone_b.resume()
        wait_until(lambda: pb.stats().get("dirty_servers") == "0", 15, "pb clean again")

    def test_confirmation_waits_for_the_other_replicas_proxies(self):
        """With the exchange, a `wait: all` write whose copy fails is answered only after the
        proxies of the other replica stopped reading the server: the controller holding it
        back is asked by the other replica's answer, which comes only once its proxy applied."""
        store = self.api.store
        store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-b")],
            self.port))
        store.put("replicatedpools", replicated_pool("sessions", "memcached", port=11211,
                                                     replication={"wait": "all"}))
        a, b = self.two_replicas()
        pa, pb = self.proxy_on(a), self.proxy_on(b)
        with pa.client() as c:
            wait_until(lambda: c.request(b"set k 0 0 1\r\nx\r\n") == b"STORED\r\n", 10, "pa serving")
        wait_until(lambda: pb.stats().get("proxy_topology_version") == pa.stats().get("proxy_topology_version"),
                   10, "pb on the same topology")
        zone_b = self.servers[IPS[1]]
        # pb is paused: it cannot apply the set, so a's confirmation must wait (bounded 500 ms).
        pb.proc.send_signal(signal.SIGSTOP)
        zone_b.pause()
        try:
            with pa.client() as writer:
                started = time.monotonic()
                reply = writer.request(b"set k1 0 0 1\r\nx\r\n", timeout=5)
                took = time.monotonic() - started
        finally:
            zone_b.resume()
            pb.proc.send_signal(signal.SIGCONT)
        print("\nwrite with a copy failed while the other replica's proxy could not apply: "
              "answered %r after %.0f ms" % (reply, took * 1000))
        waits = int(pa.stats().get("proxy_write_confirmation_timeouts", "0"))
        self.assertGreaterEqual(waits, 1, "the confirmation did not wait for pb")


class ReplicaDirtyExchangeTlsTest(ReplicaDirtyExchangeTest):
    """The same over mutual TLS: a replica dials the others with its own certificate, checked
    as a proxy's is (the client CA, the allowed identities), and checks theirs the same way."""

    def setUp(self):
        super().setUp()
        import tls_certs
        ca = tls_certs.CertAuthority("stream")
        cert, key, _ = ca.issue("controller", dns=["controller.test"], uri=["spiffe://td/controller"])
        pcert, pkey, _ = ca.issue("proxy", uri=["spiffe://td/proxy"])
        self.controller_tls = {"cert": cert, "key": key, "client_ca": ca.cert,
                               "allowed": ["spiffe://td/proxy", "spiffe://td/controller"]}
        self.proxy_tls = {"ca": ca.cert, "cert": pcert, "key": pkey, "server_name": "controller.test"}


class ReplicaRingAgreementTest(HighAvailabilityBase):
    """Issue 23: with a proxy on each of two replicas, a ring change's moves wait for both
    replicas' proxies to apply it. Each replica tells the other what its own proxies applied on
    their ShareDirty stream; without that, neither could say the change is applied everywhere,
    and the moves would wait their 15 s bound."""
    # The grace after a controller starts (12 s by default: proxies of a replaced controller
    # reconnecting) is ControllerRestartTest's (test_ring_skew); here it is short, so what is
    # measured is the exchange between replicas.
    EXTRA = ["--applied-grace", "1s"]

    def test_moves_start_once_the_proxies_of_both_replicas_applied_the_change(self):
        store = self.api.store
        store.put("replicatedpools", replicated_pool("sessions", "memcached", port=11211,
                                                     migration={"durationMs": 20000}))
        a, b = self.two_replicas()
        pa, pb = self.proxy_on(a, metrics=True), self.proxy_on(b, metrics=True)
        with pa.client() as c:
            wait_until(lambda: c.request(b"set k 0 0 1\r\nx\r\n") == b"STORED\r\n", 10, "pa serving")
            version = pa.stats(c).get("proxy_topology_version")
            wait_until(lambda: pb.stats().get("proxy_topology_version") == version, 10,
                       "pb on the same topology")
            for i in range(200):
                self.assertEqual(c.request(b"set ring:%d 0 0 1\r\nx\r\n" % i), b"STORED\r\n")
        changed = time.monotonic()
        store.put("endpointslices", endpoint_slice(
            "memcached-abcde", "memcached", [endpoint(IPS[0], "zone-a"), endpoint(IPS[1], "zone-a")],
            self.port))

        def crawls_done():
            return sum(metric(p.metrics_port, "memzone_proxy_migration_crawls_total",
                              zone="zone-a", result="done") for p in (pa, pb))
        wait_until(lambda: crawls_done() >= 2, 20, "both servers crawled")
        took = time.monotonic() - changed
        moved = sum(metric(p.metrics_port, "memzone_proxy_migration_keys_total",
                           zone="zone-a", action="moved") for p in (pa, pb))
        unconfirmed = sum(metric(p.metrics_port, "memzone_proxy_migration_moves_unconfirmed_total",
                                 zone="zone-a") for p in (pa, pb))
        print("\nproxies on two replicas: %d keys moved %.2f s after the change" % (moved, took))
        self.assertGreater(moved, 0)
        self.assertEqual(unconfirmed, 0, pa.logs()[-2000:] + pb.logs()[-2000:])
        self.assertLess(took, 8)


if __name__ == "__main__":
    unittest.main()
