"""Zone replication against real memcached: three zones x two servers, proxies per zone.

Writes are copied to every zone, reads fail over, failed copies become invalidations that
keep a zone from serving stale values, and read repair fills the local zone.
"""
import random
import re
import time
import unittest

from harness import Memcached, Proxy, ketama_server

ZONES = ("a", "b", "c")
REQUEST_MS = 300


def replicated_topology(servers, wait="local", read_failover="[error]", repair="true",
                        extra=""):
    lines = ["pools:", "  - name: main", "    zones:"]
    for zone in ZONES:
        lines.append("      %s: [%s]" % (zone, ", ".join('"%s"' % s.address for s in servers[zone])))
    lines += [
        "    replication: {writes: all-zones, wait: %s, readFailover: %s, repair: %s}"
        % (wait, read_failover, repair),
        "timeouts: {connectMs: 200, requestMs: %d}" % REQUEST_MS,
        "health: {failureLimit: 2, downRetryMs: 100, maxDownRetryMs: 400, checkIntervalMs: 100}",
        "consistency: {readHoldMs: 4000}",
    ]
    return "\n".join(lines) + "\n" + extra


class ReplicationBase(unittest.TestCase):
    wait = "local"
    read_failover = "[error]"

    def setUp(self):
        self.servers = {z: [Memcached().start(), Memcached().start()] for z in ZONES}
        self.proxies = {}
        for s in self.all_servers():
            self.addCleanup(s.kill)

    def all_servers(self):
        return [s for z in ZONES for s in self.servers[z]]

    def proxy(self, zone, **kw):
        if zone not in self.proxies:
            text = replicated_topology(self.servers, wait=kw.get("wait", self.wait),
                                       read_failover=kw.get("read_failover", self.read_failover))
            p = Proxy(text, zone=zone).start()
            self.addCleanup(p.stop)
            self.proxies[zone] = p
        return self.proxies[zone]

    def server_for(self, zone, key):
        servers = self.servers[zone]
        return servers[ketama_server(key, [s.address for s in servers])]

    def direct_get(self, zone, key):
        with self.server_for(zone, key).client() as c:
            return c.request(b"get %s\r\n" % key.encode())

    def stat(self, proxy, name, client=None):
        return int(proxy.stats(client).get(name, "0"))


class WritesTest(ReplicationBase):
    def test_set_reaches_every_zone_and_delete_removes_everywhere(self):
        p = self.proxy("a")
        with p.client() as c:
            for i in range(50):
                self.assertEqual(c.request(b"set rep%d 5 0 3\r\nv%02d\r\n" % (i, i)), b"STORED\r\n")
        # wait: local answers after zone a; the copies land moments later.
        deadline = time.monotonic() + 2
        for i in range(50):
            for zone in ZONES:
                want = b"VALUE rep%d 5 3\r\nv%02d\r\nEND\r\n" % (i, i)
                while self.direct_get(zone, "rep%d" % i) != want and time.monotonic() < deadline:
                    time.sleep(0.01)
                self.assertEqual(self.direct_get(zone, "rep%d" % i), want, (zone, i))
        with p.client() as c:
            self.assertEqual(c.request(b"delete rep7\r\n"), b"DELETED\r\n")
            self.assertEqual(c.request(b"delete rep8 noreply\r\nmn\r\n"), b"MN\r\n")
        time.sleep(0.2)
        for zone in ZONES:
            self.assertEqual(self.direct_get(zone, "rep7"), b"END\r\n")
            self.assertEqual(self.direct_get(zone, "rep8"), b"END\r\n")
        self.assertGreaterEqual(self.stat(p, "proxy_zone_b_copies_sent"), 52)

    def test_every_write_command_is_copied(self):
        p = self.proxy("a")
        with p.client() as c:
            for cmd, reply in [(b"set w 0 0 1\r\n1\r\n", b"STORED\r\n"),
                               (b"append w 0 0 1\r\n2\r\n", b"STORED\r\n"),
                               (b"prepend w 0 0 1\r\n0\r\n", b"STORED\r\n"),
                               (b"replace w 0 0 3\r\n100\r\n", b"STORED\r\n"),
                               (b"incr w 5\r\n", b"105\r\n"),
                               (b"decr w 2\r\n", b"103\r\n"),
                               (b"touch w 100\r\n", b"TOUCHED\r\n"),
                               (b"add w2 0 0 1\r\nx\r\n", b"STORED\r\n"),
                               (b"ms m1 2 T0 F3\r\nhi\r\n", b"HD\r\n"),
                               (b"ma m2 N0 J7\r\n", b"HD\r\n"),
                               (b"md w2 q\r\nmn\r\n", b"MN\r\n")]:
                self.assertEqual(c.request(cmd), reply, cmd)
        time.sleep(0.2)
        for zone in ZONES:
            self.assertEqual(self.direct_get(zone, "w"), b"VALUE w 0 3\r\n103\r\nEND\r\n", zone)
            self.assertEqual(self.direct_get(zone, "w2"), b"END\r\n", zone)
            self.assertEqual(self.direct_get(zone, "m1"), b"VALUE m1 3 2\r\nhi\r\nEND\r\n", zone)
            self.assertEqual(self.direct_get(zone, "m2"), b"VALUE m2 0 1\r\n7\r\nEND\r\n", zone)

    def test_cas_goes_local_then_copies_as_set(self):
        p = self.proxy("a")
        with p.client() as c:
            c.request(b"set cask 0 0 3\r\nold\r\n")
            time.sleep(0.1)
            reply = c.request(b"gets cask\r\n")
            unique = int(reply.split(b"\r\n")[0].split()[4])
            self.assertEqual(c.request(b"cas cask 9 0 3 %d\r\nnew\r\n" % unique), b"STORED\r\n")
            self.assertEqual(c.request(b"cas cask 9 0 3 %d\r\nbad\r\n" % unique), b"EXISTS\r\n")
        time.sleep(0.2)
        for zone in ZONES:
            self.assertEqual(self.direct_get(zone, "cask"), b"VALUE cask 9 3\r\nnew\r\nEND\r\n", zone)

    def test_meta_cas_goes_local_then_copies_without_the_compare(self):
        p = self.proxy("a")
        with p.client() as c:
            self.assertEqual(c.request(b"ms mc 3 T0\r\nold\r\n"), b"HD\r\n")
            cas = int(re.search(rb" c(\d+)", c.request(b"mg mc c\r\n")).group(1))
            self.assertEqual(c.request(b"ms mc 3 C%d\r\nnew\r\n" % cas), b"HD\r\n")
            self.assertEqual(c.request(b"ms mc 3 C%d\r\nbad\r\n" % cas), b"EX\r\n")
        deadline = time.monotonic() + 2
        for zone in ZONES:
            want = b"VALUE mc 0 3\r\nnew\r\nEND\r\n"
            while self.direct_get(zone, "mc") != want and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(self.direct_get(zone, "mc"), want, zone)

    def test_diverged_incr_is_invalidated_in_the_other_zone(self):
        p = self.proxy("a")
        with p.client() as c:
            c.request(b"set ctr 0 0 2\r\n10\r\n")
        time.sleep(0.1)
        with self.server_for("c", "ctr").client() as d:  # zone c drifted (say it missed a write)
            d.request(b"set ctr 0 0 3\r\n500\r\n")
        with p.client() as c:
            self.assertEqual(c.request(b"incr ctr 1\r\n"), b"11\r\n")  # the local result
        deadline = time.monotonic() + 2
        while self.direct_get("c", "ctr") != b"END\r\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.direct_get("c", "ctr"), b"END\r\n")  # invalidated, not wrong
        self.assertEqual(self.direct_get("b", "ctr"), b"VALUE ctr 0 2\r\n11\r\nEND\r\n")

    def test_diverged_add_is_invalidated_in_the_other_zone(self):
        # Zone b already holds the key (say from before it joined): an add stores in a but
        # not in b, and b must not keep serving its different value.
        with self.server_for("b", "dv").client() as c:
            c.request(b"set dv 0 0 3\r\nold\r\n")
        p = self.proxy("a")
        with p.client() as c:
            self.assertEqual(c.request(b"add dv 0 0 3\r\nnew\r\n"), b"STORED\r\n")
        deadline = time.monotonic() + 2
        while self.direct_get("b", "dv") != b"END\r\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.direct_get("b", "dv"), b"END\r\n")
        self.assertEqual(self.direct_get("c", "dv"), b"VALUE dv 0 3\r\nnew\r\nEND\r\n")


class RoutingTest(ReplicationBase):
    def test_prefix_routes_replicate_only_part_of_the_cache(self):
        local_only = Memcached().start()
        self.addCleanup(local_only.kill)
        text = replicated_topology(self.servers).replace("pools:\n", "pools:\n  - name: plain\n    zones:\n      a: [\"%s\"]\n" % local_only.address, 1)
        text += 'routes:\n  - {prefix: "session:", pool: main}\n  - {prefix: "", pool: plain}\n'
        p = Proxy(text, zone="a").start()
        self.addCleanup(p.stop)
        with p.client() as c:
            self.assertEqual(c.request(b"set session:1 0 0 1\r\ns\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"set other:1 0 0 1\r\no\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"get session:1 other:1\r\n"),
                             b"VALUE session:1 0 1\r\ns\r\nVALUE other:1 0 1\r\no\r\nEND\r\n")
        time.sleep(0.2)
        for zone in ZONES:
            self.assertEqual(self.direct_get(zone, "session:1"), b"VALUE session:1 0 1\r\ns\r\nEND\r\n")
            self.assertEqual(self.direct_get(zone, "other:1"), b"END\r\n")
        with local_only.client() as c:
            self.assertEqual(c.request(b"get other:1\r\n"), b"VALUE other:1 0 1\r\no\r\nEND\r\n")

    def test_proxy_outside_the_pools_zones_reads_the_first_zone(self):
        with self.server_for("a", "fz").client() as c:
            c.request(b"set fz 0 0 1\r\na\r\n")
        with self.server_for("b", "fz").client() as c:
            c.request(b"set fz 0 0 1\r\nb\r\n")
        p = Proxy(replicated_topology(self.servers), zone="elsewhere").start()
        self.addCleanup(p.stop)
        with p.client() as c:
            self.assertEqual(c.request(b"get fz\r\n"), b"VALUE fz 0 1\r\na\r\nEND\r\n")


class WaitPolicyTest(ReplicationBase):
    def timed_set(self, proxy, key):
        with proxy.client() as c:
            start = time.monotonic()
            reply = c.request(b"set %s 0 0 1\r\nx\r\n" % key.encode(), timeout=5)
            return reply, time.monotonic() - start

    def test_wait_all_replies_after_every_zone_answered(self):
        p = self.proxy("a", wait="all")
        self.timed_set(p, "warm")  # connections up
        stopped = self.server_for("c", "slow")
        stopped.pause()
        try:
            reply, elapsed = self.timed_set(p, "slow")
        finally:
            stopped.resume()
        self.assertEqual(reply, b"STORED\r\n")  # the local answer, once c timed out
        self.assertGreaterEqual(elapsed, REQUEST_MS / 1000 * 0.9)
        print("\nwait: all with zone c stopped answered after %.0f ms" % (elapsed * 1000))

    def test_wait_local_does_not_wait_for_a_stopped_zone(self):
        p = self.proxy("a", wait="local")
        self.timed_set(p, "warm")
        stopped = self.server_for("c", "fast")
        stopped.pause()
        try:
            reply, elapsed = self.timed_set(p, "fast")
        finally:
            stopped.resume()
        self.assertEqual(reply, b"STORED\r\n")
        self.assertLess(elapsed, REQUEST_MS / 1000 / 2)

    def test_quorum_succeeds_with_one_zone_stopped(self):
        p = self.proxy("a", wait="quorum")
        self.timed_set(p, "warm")
        for s in self.servers["c"]:
            s.pause()
        try:
            reply, elapsed = self.timed_set(p, "q1")
        finally:
            for s in self.servers["c"]:
                s.resume()
        self.assertEqual(reply, b"STORED\r\n")
        self.assertLess(elapsed, REQUEST_MS / 1000 / 2)

    def test_quorum_fails_when_the_majority_is_gone(self):
        p = self.proxy("a", wait="quorum")
        self.timed_set(p, "warm")
        for zone in ("b", "c"):
            for s in self.servers[zone]:
                s.pause()
        try:
            reply, _ = self.timed_set(p, "q2")
        finally:
            for zone in ("b", "c"):
                for s in self.servers[zone]:
                    s.resume()
        self.assertEqual(reply, b"SERVER_ERROR quorum not reached (1 of 3 zones)\r\n")


class FailoverTest(ReplicationBase):
    def test_sigkill_local_server_reads_from_b(self):
        p = self.proxy("a")
        keys = ["fo%d" % i for i in range(40)]
        with p.client() as c:
            for k in keys:
                c.request(b"set %s 0 0 2\r\nok\r\n" % k.encode())
        time.sleep(0.2)
        victim = self.servers["a"][0]
        victim.kill()
        before = self.stat(p, "proxy_read_failovers_error") + self.stat(p, "proxy_read_failovers_unavailable")
        with p.client() as c:
            for k in keys:
                start = time.monotonic()
                self.assertEqual(c.request(b"get %s\r\n" % k.encode()),
                                 b"VALUE %s 0 2\r\nok\r\nEND\r\n" % k.encode())
                self.assertLess(time.monotonic() - start, REQUEST_MS / 1000 + 0.2)
            # A multi-get fails over per key and keeps the client's order.
            reply = c.request(b"get " + " ".join(keys).encode() + b"\r\n")
            self.assertEqual(reply.count(b"VALUE "), len(keys))
            self.assertEqual(re.findall(rb"VALUE (\S+)", reply), [k.encode() for k in keys])
        after = self.stat(p, "proxy_read_failovers_error") + self.stat(p, "proxy_read_failovers_unavailable")
        self.assertGreater(after, before)

    def test_local_miss_is_served_by_b_with_failover_on_miss(self):
        p = self.proxy("a", read_failover="[error, miss]")
        with self.server_for("b", "onlyb").client() as c:
            c.request(b"set onlyb 3 0 2\r\nbb\r\n")
        with p.client() as c:
            self.assertEqual(c.request(b"get onlyb\r\n"), b"VALUE onlyb 3 2\r\nbb\r\nEND\r\n")
            self.assertEqual(c.request(b"get nowhere\r\n"), b"END\r\n")
            self.assertEqual(c.request(b"get onlyb nowhere\r\n"), b"VALUE onlyb 3 2\r\nbb\r\nEND\r\n")
        self.assertGreaterEqual(self.stat(p, "proxy_read_failovers_miss"), 1)

    def test_local_miss_is_a_miss_without_failover_on_miss(self):
        p = self.proxy("a", read_failover="[error]")
        with self.server_for("b", "onlyb2").client() as c:
            c.request(b"set onlyb2 0 0 2\r\nbb\r\n")
        with p.client() as c:
            self.assertEqual(c.request(b"get onlyb2\r\n"), b"END\r\n")

    def test_gets_stays_in_the_local_zone(self):
        p = self.proxy("a", read_failover="[error, miss]")
        with self.server_for("b", "gl").client() as c:
            c.request(b"set gl 0 0 2\r\nbb\r\n")
        with p.client() as c:
            self.assertEqual(c.request(b"gets gl\r\n"), b"END\r\n")

    def test_read_repair_copies_value_flags_and_ttl_to_the_local_zone(self):
        p = self.proxy("a", read_failover="[error, miss]")
        with self.server_for("b", "rr").client() as c:
            c.request(b"set rr 77 100 5\r\nhello\r\n")
            b_ttl = int(re.search(rb" t(-?\d+)", c.request(b"mg rr t\r\n")).group(1))
        with p.client() as c:
            self.assertEqual(c.request(b"get rr\r\n"), b"VALUE rr 77 5\r\nhello\r\nEND\r\n")
        deadline = time.monotonic() + 2
        while self.direct_get("a", "rr") == b"END\r\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.direct_get("a", "rr"), b"VALUE rr 77 5\r\nhello\r\nEND\r\n")
        with self.server_for("a", "rr").client() as c:
            a_ttl = int(re.search(rb" t(-?\d+)", c.request(b"mg rr t\r\n")).group(1))
        self.assertLessEqual(abs(a_ttl - b_ttl), 1)
        self.assertEqual(self.stat(p, "proxy_repairs_stored"), 1)

    def test_read_repair_never_overwrites_a_local_value(self):
        p = self.proxy("a", read_failover="[error]")
        local = self.server_for("a", "rn")
        with self.server_for("b", "rn").client() as c:
            c.request(b"set rn 0 0 3\r\nold\r\n")
        local.pause()
        try:
            with p.client() as c:
                self.assertEqual(c.request(b"get rn\r\n", timeout=5), b"VALUE rn 0 3\r\nold\r\nEND\r\n")
                with local.client() as direct:  # queued behind the pause, applied first on resume
                    direct.send(b"set rn 0 0 3\r\nnew\r\n")
                    local.resume()
                    self.assertEqual(direct.read_reply(), b"STORED\r\n")
        finally:
            local.resume()
        time.sleep(0.3)
        self.assertEqual(self.direct_get("a", "rn"), b"VALUE rn 0 3\r\nnew\r\nEND\r\n")


class ConsistencyTest(ReplicationBase):
    KEYS = 1000

    def prefill(self, p):
        with p.client() as c:
            c.send(b"".join(b"set k%d 0 0 3\r\nold\r\n" % i for i in range(self.KEYS)))
            for _ in range(self.KEYS):
                self.assertEqual(c.read_reply(), b"STORED\r\n")
        time.sleep(0.3)

    def overwrite_while(self, p, outage):
        """Deletes even keys and overwrites odd ones through `p` during `outage`."""
        with p.client() as c:
            batch = b"".join(b"delete k%d\r\n" % i if i % 2 == 0 else b"set k%d 0 0 3\r\nnew\r\n" % i
                             for i in range(self.KEYS))
            c.send(batch)
            for i in range(self.KEYS):
                self.assertIn(c.read_reply(timeout=10), (b"DELETED\r\n", b"STORED\r\n"))

    def stale_through(self, p):
        stale = 0
        with p.client() as c:
            for i in range(self.KEYS):
                reply = c.request(b"get k%d\r\n" % i)
                if b"old" in reply:
                    stale += 1
        return stale

    def stale_direct(self, zone):
        stale = 0
        for i in range(self.KEYS):
            if b"old" in self.direct_get(zone, "k%d" % i):
                stale += 1
        return stale

    def wait_queue_drained(self, p, zone, timeout=10):
        watcher = p.client()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.stat(p, "proxy_zone_%s_invalidation_queue_depth" % zone, watcher) == 0:
                    return
                time.sleep(0.05)
            self.fail("zone %s invalidation queue not drained" % zone)
        finally:
            watcher.close()

    def test_stopped_zone_serves_no_stale_values_after_resume(self):
        pa, pc = self.proxy("a"), self.proxy("c")
        self.prefill(pa)
        self.stale_through(pc)  # zone c's proxy has warm connections
        for s in self.servers["c"]:
            s.pause()
        try:
            self.overwrite_while(pa, "stop")
            time.sleep(REQUEST_MS / 1000 * 3)  # every copy to c times out
            queued = self.stat(pa, "proxy_zone_c_invalidations_queued")
            self.assertGreater(queued, 0)
        finally:
            for s in self.servers["c"]:
                s.resume()
        stale_proxy = self.stale_through(pc)
        self.wait_queue_drained(pa, "c")
        stale_direct = self.stale_direct("c")
        print("\nSIGSTOP zone c: %d invalidations queued; stale via zone-c proxy %d, "
              "direct from c after drain %d" % (queued, stale_proxy, stale_direct))
        self.assertEqual(stale_proxy, 0)
        self.assertEqual(stale_direct, 0)

    def test_killed_and_restarted_zone_serves_no_stale_values(self):
        pa, pc = self.proxy("a"), self.proxy("c")
        self.prefill(pa)
        ports = [s.port for s in self.servers["c"]]
        for s in self.servers["c"]:
            s.kill()
        self.overwrite_while(pa, "kill")
        self.servers["c"] = [Memcached(port=port).start() for port in ports]
        for s in self.servers["c"]:
            self.addCleanup(s.kill)
        stale_proxy = self.stale_through(pc)
        self.wait_queue_drained(pa, "c")
        self.assertEqual(stale_proxy, 0)
        self.assertEqual(self.stale_direct("c"), 0)

    def test_queue_overflow_distrusts_the_server_until_flushed(self):
        extra = "allowFlushAll: true\n"
        text = replicated_topology(self.servers).replace("consistency: {readHoldMs: 4000}",
                                                         "consistency: {readHoldMs: 4000, invalidationQueueLimit: 20}")
        pa = Proxy(text + extra, zone="a", threads=1).start()
        self.addCleanup(pa.stop)
        self.prefill(pa)
        for s in self.servers["c"]:
            s.pause()
        try:
            self.overwrite_while(pa, "stop")
            time.sleep(REQUEST_MS / 1000 * 3)
        finally:
            for s in self.servers["c"]:
                s.resume()
        self.assertGreater(self.stat(pa, "proxy_zone_c_invalidations_dropped"), 0)
        deadline = time.monotonic() + 10
        while self.stat(pa, "proxy_zone_c_overflow_flushes") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.stat(pa, "proxy_zone_c_overflow_flushes"), 2)  # both servers of c
        for i in range(0, self.KEYS, 10):
            self.assertEqual(self.direct_get("c", "k%d" % i), b"END\r\n")

    def test_chaos_no_read_older_than_the_last_acknowledged_write(self):
        """Mixed load through two zones' proxies while servers stop and resume at random."""
        pa, pc = self.proxy("a", wait="all"), self.proxy("c", wait="all")
        rng = random.Random(7)
        keys = ["chaos%d" % i for i in range(200)]
        acked = {}          # key -> (version, ack time) of the last acknowledged write
        version = 0
        stale, reads, writes, errors, window = 0, 0, 0, 0, 0.0
        clients = {"a": pa.client(timeout=10), "c": pc.client(timeout=10)}
        stopped = None
        next_chaos = time.monotonic() + 0.5
        end = time.monotonic() + 12
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_chaos:
                    if stopped is None:
                        stopped = rng.choice(self.all_servers())
                        stopped.pause()
                        next_chaos = now + rng.uniform(0.3, 1.2)
                    else:
                        stopped.resume()
                        stopped = None
                        next_chaos = now + rng.uniform(1.0, 1.5)
                key = rng.choice(keys)
                c = clients[rng.choice("ac")]
                if rng.random() < 0.3:
                    version += 1
                    reply = c.request(b"set %s 0 0 %d\r\n%d\r\n" % (key.encode(), len(str(version)), version))
                    writes += 1
                    if reply == b"STORED\r\n":
                        acked[key] = (version, time.monotonic())
                    else:
                        errors += 1
                else:
                    floor = acked.get(key)
                    reply = c.request(b"get %s\r\n" % key.encode())
                    reads += 1
                    m = re.match(rb"VALUE \S+ 0 \d+\r\n(\d+)\r\n", reply)
                    if m and floor and int(m.group(1)) < floor[0]:
                        stale += 1
                        window = max(window, time.monotonic() - floor[1])
        finally:
            if stopped is not None:
                stopped.resume()
            for c in clients.values():
                c.close()
        print("\nchaos: %d reads, %d writes (%d not acknowledged), stale reads %d, "
              "staleness window %.0f ms" % (reads, writes, errors, stale, window * 1000))
        self.assertEqual(stale, 0)


if __name__ == "__main__":
    unittest.main()
