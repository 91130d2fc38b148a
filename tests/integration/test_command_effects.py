"""Every command has the same effect in every zone (issue 23), for what the new backend framing
made direct to fix: TTL-changing reads, reads that return a cas, arithmetic compared by
effect, and base64 keys named by the bytes memcached stores in invalidations.

Real memcached in two zones. Reads of the other zone poll with a bound: a copy is sent in the
background (wait: local), so reading it at once would race.
"""
import base64
import re
import signal
import time
import unittest

from harness import Controller, Memcached, Proxy, Relay, topology, wait_until


def ttl_in(mc, key):
    """The item's TTL left in memcached `mc` (-1: none), or None when it is not there."""
    with mc.client() as c:
        reply = c.request(b"mg %s t\r\n" % key)
    if reply.startswith(b"EN"):
        return None
    return int(reply.split(b" t", 1)[1].split()[0])


class TtlReadsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Memcached().start()
        cls.b = Memcached().start()
        cls.proxy = Proxy(topology({"a": [cls.a.address], "b": [cls.b.address]}),
                          zone="a").start()

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.a.kill()
        cls.b.kill()

    def test_gat_and_mg_t_change_the_ttl_in_every_zone(self):
        with self.proxy.client() as c:
            for key, read in ((b"g1", b"gat 100 g1\r\n"), (b"g2", b"gats 200 g2\r\n"),
                              (b"g3", b"mg g3 v T300\r\n"), (b"g4", b"gat 400 g4 other\r\n")):
                self.assertEqual(c.request(b"set %s 0 0 1\r\nx\r\n" % key), b"STORED\r\n")
                wait_until(lambda: ttl_in(self.b, key) == -1, 5, "the set copied")
                c.request(read)
                want = int(read.split(b" ")[1] if read.startswith(b"ga") else 300)
                wait_until(lambda: ttl_in(self.b, key) is not None and
                           want - 5 <= ttl_in(self.b, key) <= want, 5,
                           "zone b's TTL of %s follows %r" % (key, read))
                self.assertTrue(want - 5 <= ttl_in(self.a, key) <= want)

    def test_an_mg_t_memcached_refuses_for_its_opaque_still_changes_every_zone(self):
        """memcached sets the TTL before it refuses an opaque over 32 bytes (review finding):
        the other zones follow, so the zones do not diverge."""
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"set gr 0 0 1\r\nx\r\n"), b"STORED\r\n")
            wait_until(lambda: ttl_in(self.b, b"gr") == -1, 5, "the set copied")
            self.assertEqual(c.request(b"mg gr T90 v O" + b"x" * 33 + b"\r\n"),
                             b"CLIENT_ERROR opaque token too long\r\n")
        wait_until(lambda: ttl_in(self.b, b"gr") is not None and 85 <= ttl_in(self.b, b"gr") <= 90,
                   5, "zone b's TTL follows the refused mg T90")

    def test_gat_that_expires_an_item_expires_it_everywhere(self):
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"set gx 0 0 1\r\nx\r\n"), b"STORED\r\n")
            wait_until(lambda: ttl_in(self.b, b"gx") == -1, 5, "the set copied")
            c.request(b"gat -1 gx\r\n")
        wait_until(lambda: ttl_in(self.b, b"gx") is None, 5, "zone b's copy expired")
        self.assertIsNone(ttl_in(self.a, b"gx"))


class CasReadsStayLocalTest(unittest.TestCase):
    def test_mg_c_does_not_fail_over(self):
        a = Memcached().start()
        b = Memcached().start()
        proxy = Proxy(topology({"a": [a.address], "b": [b.address]}), zone="a").start()
        try:
            with proxy.client() as c:
                self.assertEqual(c.request(b"set ck 0 0 1\r\nx\r\n"), b"STORED\r\n")
                wait_until(lambda: ttl_in(b, b"ck") == -1, 5, "the set copied")
                a.kill()
                # Without c the read fails over; with c (a cas from zone b means nothing to
                # zone a) it does not.
                self.assertEqual(c.request(b"mg ck v\r\n"), b"VA 1\r\nx\r\n")
                self.assertTrue(c.request(b"mg ck v c\r\n").startswith(b"SERVER_ERROR"))
                self.assertTrue(c.request(b"gets ck\r\n").startswith(b"SERVER_ERROR"))
        finally:
            proxy.stop()
            b.kill()


class EffectNotBytesTest(unittest.TestCase):
    def test_ma_with_c_leaves_no_invalidation(self):
        a = Memcached().start()
        b = Memcached().start()
        proxy = Proxy(topology({"a": [a.address], "b": [b.address]},
                               replication="{ wait: all }"), zone="a").start()
        try:
            with proxy.client() as c:
                # Different cas counters in the two zones: the replies differ, the effect not.
                with b.client() as direct:
                    for i in range(5):
                        direct.request(b"set pad%d 0 0 1\r\nx\r\n" % i)
                self.assertEqual(c.request(b"set n2 0 0 1\r\n5\r\n"), b"STORED\r\n")
                for _ in range(5):
                    self.assertTrue(c.request(b"ma n2 v c\r\n").startswith(b"VA "))
            stats = proxy.stats()
            self.assertEqual(stats.get("proxy_zone_b_invalidations_queued", "0"), "0")
            with b.client() as direct:
                self.assertEqual(direct.request(b"get n2\r\n"), b"VALUE n2 0 2\r\n10\r\nEND\r\n")
        finally:
            proxy.stop()
            a.kill()
            b.kill()


class Base64KeysTest(unittest.TestCase):
    def test_a_b_key_is_placed_by_the_bytes_memcached_stores(self):
        """A b key and the text key of the same bytes are one key: the same server, the same
        value (ketama hashes what memcached stores)."""
        servers = [Memcached().start() for _ in range(3)]
        proxy = Proxy(topology({"a": [m.address for m in servers]}), zone="a").start()
        try:
            with proxy.client() as c:
                for i in range(30):
                    key = b"placed:%d" % i
                    self.assertEqual(c.request(b"set %s 0 0 1\r\nv\r\n" % key), b"STORED\r\n")
                    self.assertEqual(c.request(b"mg %s b v\r\n" % base64.b64encode(key)),
                                     b"VA 1\r\nv\r\n", key)
        finally:
            proxy.stop()
            for m in servers:
                m.kill()

    def test_a_failed_copy_of_a_b_key_is_replayed_under_the_key_memcached_stores(self):
        """A b key written while zone b is down: the invalidation replayed when it returns
        deletes the decoded key (the old value there), not a text key of the base64."""
        a = Memcached().start()
        b = Memcached().start()
        proxy = Proxy(topology({"a": [a.address], "b": [b.address]},
                               health="{failureLimit: 1, downRetryMs: 100, maxDownRetryMs: 200}"),
                      zone="a").start()
        raw = b"bin\x00key"
        key = base64.b64encode(raw)
        try:
            with proxy.client() as c:
                self.assertEqual(c.request(b"ms %s 3 b\r\nold\r\n" % key), b"HD\r\n")

                def zone_b():
                    with b.client() as direct:
                        return direct.request(b"mg %s b v\r\n" % key)
                wait_until(lambda: zone_b() == b"VA 3\r\nold\r\n", 5, "the first value copied")
                b.pause()
                self.assertEqual(c.request(b"ms %s 3 b\r\nnew\r\n" % key), b"HD\r\n")
                time.sleep(0.6)  # past the request timeout: the copy fails, a delete is owed
                b.resume()

                def replayed():
                    return zone_b() == b"EN\r\n"
                wait_until(replayed, 10, "the invalidation replayed at zone b")
        finally:
            proxy.stop()
            a.kill()
            b.kill()

    def test_read_repair_of_a_b_key_stores_it_under_its_bytes(self):
        """Found by the chaos test (issue 23): the repair's ms named a b key "<base64> b"
        before its length, which memcached refuses and then reads the value as a command: two
        replies to one request, so every repair of a b key desynchronized the connection
        (failing what was in flight on it) and stored nothing."""
        a, b = Memcached().start(), Memcached().start()
        self.addCleanup(a.kill)
        self.addCleanup(b.kill)
        proxy = Proxy(topology({"a": [a.address], "b": [b.address]},
                               replication="{readFailover: [error, miss], repair: true}"),
                      zone="a").start()
        self.addCleanup(proxy.stop)
        key = base64.b64encode(b"repaired \r\n\x00\xff")
        with b.client() as direct:  # only zone b has it
            self.assertEqual(direct.request(b"ms %s 3 b T100 F7\r\nold\r\n" % key), b"HD\r\n")
        with proxy.client() as c:
            self.assertEqual(c.request(b"mg %s b v\r\n" % key), b"VA 3\r\nold\r\n")

            def zone_a():
                with a.client() as direct:
                    return direct.request(b"mg %s b v f t\r\n" % key)
            reply = wait_until(lambda: zone_a().startswith(b"VA") and zone_a(), 5,
                               "the repair stored in zone a")
            self.assertTrue(reply.startswith(b"VA 3 f7 t"), reply)
            self.assertIn(b"\r\nold\r\n", reply)
            self.assertEqual(c.request(b"mg %s b v\r\n" % key), b"VA 3\r\nold\r\n")
        self.assertNotIn("desync", proxy.logs())


class ArithmeticOnADirtyLocalZoneTest(unittest.TestCase):
    """Found by the chaos test (issue 23): an increment through a proxy whose local server
    missed earlier increments (another proxy owes it the delete) was answered from that stale
    server, so the client saw its counter go back below a value acknowledged before."""

    def zones(self, *names):
        """A memcached per zone in `names` (killed at the end), and a topology of one pool over
        them whose writes wait for every zone."""
        servers = []
        for _ in names:
            m = Memcached().start()
            self.addCleanup(m.kill)
            servers.append(m)
        text = topology({zone: [m.address] for zone, m in zip(names, servers)},
                        replication="{wait: all}", timeouts="{connectMs: 200, requestMs: 300}")
        return servers, text

    def proxies(self, text, *zones, on_controller=False):
        """A proxy in each of `zones` (stopped at the end) on topology `text`: a file, or with
        `on_controller` the stream of a controller serving it."""
        controller = None
        if on_controller:
            controller = Controller(text).start()
            self.addCleanup(controller.stop)
        out = []
        for zone in zones:
            if controller:
                p = Proxy(None, zone=zone, controller=controller.address).start()
            else:
                p = Proxy(text, zone=zone).start()
            self.addCleanup(p.stop)
            out.append(p)
        return out

    def ten_everywhere(self, servers, proxies):
        """n = 10 in every zone, read directly, with no delete owed: under load a copy of the
        first set can time out (STORED anyway) and its owed delete later removes n from that
        zone, so the counter the test increments would be missing there. Set until it holds."""
        def settled():
            with proxies[0].client() as c:
                if c.request(b"set n 0 0 2\r\n10\r\n") != b"STORED\r\n":
                    return False
            for m in servers:
                with m.client() as direct:
                    if direct.request(b"get n\r\n") != b"VALUE n 0 2\r\n10\r\nEND\r\n":
                        return False
            return all(p.stats().get("owed_servers") == "0" for p in proxies)
        wait_until(settled, 15, "n = 10 in every zone, nothing owed")

    def increment_a_zone_misses(self, writer, watcher, watching, what):
        """n goes from 10 to 15 through client `writer` while a zone is stopped (after writes
        of other keys that fail there), until the proxy `watcher` (its client `watching`)
        hears that zone is dirty: the writer's proxy owes it the delete."""
        for i in range(4):
            writer.request(b"set other%d 0 0 1\r\nx\r\n" % i)
        self.assertEqual(writer.request(b"incr n 5\r\n"), b"15\r\n")
        wait_until(lambda: watcher.stats(watching).get("dirty_servers") not in (None, "0"), 5,
                   what)

    def test_an_increment_never_answers_below_an_acknowledged_value(self):
        (a, b), text = self.zones("a", "b")
        pa, pb = self.proxies(text, "a", "b")
        self.ten_everywhere((a, b), (pa, pb))
        with pa.client() as ca, pb.client() as cb:
            # Zone b stops. Writes of other keys time out there until proxy a marks it down;
            # from then on proxy a's copies are not even sent, and the delete it owes zone b
            # waits for zone b to answer a probe.
            b.pause()
            try:
                for i in range(4):
                    ca.request(b"set other%d 0 0 1\r\nx\r\n" % i)
                # Proxy b sees zone b fail too (a read that fails over): it will hold zone b
                # for readHoldMs after it answers again. (On the controller, proxy a's report
                # would tell it.)
                self.assertEqual(cb.request(b"get other0\r\n"),
                                 b"VALUE other0 0 1\r\nx\r\nEND\r\n")
                self.assertEqual(ca.request(b"incr n 5\r\n"), b"15\r\n")
            finally:
                # Proxy a is slow to notice the return (stopped here to make it certain):
                # until it replays its deletes, zone b holds the counter from before.
                pa.proc.send_signal(signal.SIGSTOP)
                b.resume()
            try:
                reply = cb.request(b"incr n 1\r\n")  # zone b is local to proxy b
            finally:
                pa.proc.send_signal(signal.SIGCONT)
            # 15 was acknowledged: 11 (zone b's 10, incremented) is a counter going back. Zone
            # a, which proxy b may read, answers; zone b, which diverged, is invalidated.
            self.assertEqual(reply, b"16\r\n")
            self.assertEqual(ca.request(b"get n\r\n"), b"VALUE n 0 2\r\n16\r\nEND\r\n")
            wait_until(lambda: ttl_in(b, b"n") is None, 10, "zone b's stale counter invalidated")

    def test_with_no_zone_readable_a_held_zone_answers_before_one_that_missed_writes(self):
        """Right after faults every zone may be held. Then the zone some proxy owes deletes
        (it missed writes) must not answer while a zone that is only held can (chaos test,
        issue 23: the local zone answered, below an acknowledged value)."""
        (a, b), text = self.zones("a", "b")
        pa, pb = self.proxies(text, "a", "b", on_controller=True)
        self.ten_everywhere((a, b), (pa, pb))
        with pa.client() as ca, pb.client() as cb:
            b.pause()  # zone b misses the increment: proxy a owes it, every proxy knows
            try:
                self.increment_a_zone_misses(ca, pb, cb, "proxy b to hear zone b is dirty")
                # Zone a fails for proxy b and comes back: held there for readHoldMs.
                a.pause()
                try:
                    cb.request(b"get n\r\n")
                finally:
                    a.resume()
                time.sleep(1.5)  # proxy b's health check sees zone a answer again
            finally:
                pa.proc.send_signal(signal.SIGSTOP)  # proxy a cannot replay: b stays owed
                b.resume()
            try:
                # No zone is readable for proxy b: a read fails rather than risk a stale value.
                read = cb.request(b"get n\r\n")
                reply = cb.request(b"incr n 1\r\n")
            finally:
                pa.proc.send_signal(signal.SIGCONT)
            self.assertTrue(read.startswith(b"SERVER_ERROR"), read)
            self.assertEqual(reply, b"16\r\n")

    def test_when_the_local_zone_fails_the_zone_trusted_most_answers(self):
        """The local zone times out during an increment: the answer came from the next zone in
        pool order even when that zone missed increments (chaos test, issue 23: an ma answered
        below an acknowledged value); the zone this proxy trusts most answers instead."""
        (a, b, c), text = self.zones("a", "b", "c")
        pb, pc = self.proxies(text, "b", "c", on_controller=True)
        self.ten_everywhere((a, b, c), (pc, pb))
        with pb.client() as cb, pc.client() as cc:
            a.pause()  # zone a misses the increment: proxy b owes it, every proxy knows
            try:
                self.increment_a_zone_misses(cb, pc, cc, "proxy c to hear zone a is dirty")
            finally:
                pb.proc.send_signal(signal.SIGSTOP)  # proxy b cannot replay: a stays owed
                a.resume()
            try:
                c.pause()  # proxy c's local zone fails during the next increment
                try:
                    reply = cc.request(b"incr n 1\r\n")
                finally:
                    c.resume()
            finally:
                pb.proc.send_signal(signal.SIGCONT)
            # Zone a (first in pool order) has 10: 11 would go back below 15. Zone b has 15.
            self.assertEqual(reply, b"16\r\n")


class WinFlagsAreDecidedPerZoneTest(unittest.TestCase):
    """mg N (vivify) and R (recache) hand out win tokens from the item that served the read:
    at most one winner per zone; the placeholder N creates stays in that zone (it has no value
    to copy), and the winner's ms is copied like any write (README, the table)."""

    def test_vivify_and_recache(self):
        a = Memcached().start()
        b = Memcached().start()
        proxy = Proxy(topology({"a": [a.address], "b": [b.address]}), zone="a").start()
        try:
            with proxy.client() as first, proxy.client() as second:
                self.assertEqual(first.request(b"mg v1 v N30\r\n"), b"VA 0 W\r\n\r\n")
                self.assertEqual(second.request(b"mg v1 v N30\r\n"), b"VA 0 Z\r\n\r\n")
                time.sleep(0.2)  # anything copied would have landed by now (loopback)
                self.assertIsNone(ttl_in(b, b"v1"), "the placeholder stays in zone a")
                self.assertEqual(first.request(b"ms v1 1 T60\r\nz\r\n"), b"HD\r\n")
                wait_until(lambda: ttl_in(b, b"v1") is not None, 5, "the winner's value copied")
                with b.client() as direct:
                    self.assertEqual(direct.request(b"mg v1 v\r\n"), b"VA 1\r\nz\r\n")

                self.assertEqual(first.request(b"set r1 0 100 1\r\nx\r\n"), b"STORED\r\n")
                wait_until(lambda: ttl_in(b, b"r1") is not None, 5, "the set copied")
                self.assertEqual(first.request(b"mg r1 v R200\r\n"), b"VA 1 W\r\nx\r\n")
                self.assertEqual(second.request(b"mg r1 v R200\r\n"), b"VA 1 Z\r\nx\r\n")
                # Zone b's item handed out no token: a reader there still wins its own.
                with b.client() as direct:
                    self.assertEqual(direct.request(b"mg r1 v R200\r\n"), b"VA 1 W\r\nx\r\n")
        finally:
            proxy.stop()
            a.kill()
            b.kill()


class RepairRaceTest(unittest.TestCase):
    def test_a_delete_between_the_repairs_read_and_its_add_is_not_undone(self):
        """A read repair fetched a value from zone b; a delete then reached zone a (nothing
        there) before the repair's add, and zone b after the fetch. The add must not leave the
        deleted value in zone a: the repair looks at the source again and takes its copy back
        (the chaos test's stale read after a memcached restart)."""
        a = Memcached().start()
        b = Memcached().start()
        relay = Relay(a.address)
        proxy = Proxy(topology({"a": [relay.address], "b": [b.address]},
                               replication="{writes: all-zones, wait: all, readFailover: [error, "
                                           "miss], repair: true}"), zone="a").start()
        try:
            with proxy.client() as c:
                self.assertEqual(c.request(b"set rr 0 0 2\r\nv1\r\n"), b"STORED\r\n")
                with a.client() as direct:
                    self.assertEqual(direct.request(b"delete rr\r\n"), b"DELETED\r\n")
                # The repair's add (`ms ... ME`) on its way to zone a waits at the relay.
                relay.hold_requests(lambda chunk: re.search(rb" ME[ \r]", chunk))
                # A miss in zone a, a hit in zone b: served, then repaired into zone a.
                self.assertEqual(c.request(b"get rr\r\n"), b"VALUE rr 0 2\r\nv1\r\nEND\r\n")
                wait_until(relay.request_held.is_set, 5, "the repair's add reached the relay")
                # Another client's delete lands everywhere while the add is on its way.
                with b.client() as direct:
                    self.assertEqual(direct.request(b"delete rr\r\n"), b"DELETED\r\n")
                relay.release_requests()

                def zone_a():
                    with a.client() as direct:
                        return direct.request(b"mg rr v\r\n")
                wait_until(lambda: proxy.stats().get("proxy_repairs_started") == "1" and
                           int(proxy.stats().get("proxy_repairs_skipped", "0")) +
                           int(proxy.stats().get("proxy_repairs_stored", "0")) +
                           int(proxy.stats().get("proxy_repairs_failed", "0")) >= 1, 5,
                           "the repair ended")
                wait_until(lambda: zone_a() == b"EN\r\n", 5,
                           "zone a holds no copy of the deleted value")
                self.assertEqual(c.request(b"get rr\r\n"), b"END\r\n")
        finally:
            proxy.stop()
            relay.close()
            a.kill()
            b.kill()


if __name__ == "__main__":
    unittest.main()
