"""Churn: stable placement by name, the warm-up window and the migration window, against real
memcached and a real memzone-proxy (--config, reloaded with SIGHUP).

Where keys live is read from the memcached servers directly, never from the proxy.
"""
import base64
import signal
import threading
import time
import unittest

from fake_backend import FakeBackend
from harness import Memcached, Proxy, free_port, holders, ketama_index, metric, wait_until

KEYS = ["churn:%d" % i for i in range(240)]

# The proxies of the tests of the migration window alone: they need a moved key to still sit
# on its previous owner when it is read, and the key mover would move it first.
PROXY_EXTRA_ARGS = ["--move-keys", "off"]


# What every topology of these tests says besides its pools: fast timeouts and health checks.
SETTINGS = ["timeouts: {connectMs: 200, requestMs: 500}",
            "health: {failureLimit: 2, downRetryMs: 100, maxDownRetryMs: 400, checkIntervalMs: 100}",
            "consistency: {readHoldMs: 0}"]


def pool_lines(name, zones, hash_by=None, warmup_ms=None, migration_ms=None):
    """YAML lines of one pool; zones: {zone: [(name, Memcached)]}."""
    lines = ["  - name: %s" % name]
    if hash_by:
        lines.append("    hashBy: %s" % hash_by)
    if warmup_ms is not None:
        lines.append("    warmup: {durationMs: %d}" % warmup_ms)
    if migration_ms is not None:
        lines.append("    migration: {durationMs: %d}" % migration_ms)
    lines.append("    zones:")
    for zone, servers in zones.items():
        lines.append("      %s:" % zone)
        for server_name, server in servers:
            lines.append('        - {address: "%s", name: %s}' % (server.address, server_name))
    return lines


def topology_yaml(pools, routes=()):
    """pools: YAML lines of each pool (pool_lines); routes: [(prefix, pool)]."""
    lines = ["pools:"] + [line for pool in pools for line in pool]
    if routes:
        lines.append("routes:")
        lines += ['  - {prefix: "%s", pool: %s}' % route for route in routes]
    return "\n".join(lines + SETTINGS) + "\n"


def pool_yaml(zones, hash_by=None, warmup_ms=None, migration_ms=None):
    """Pool main alone; zones: {zone: [(name, Memcached)]}."""
    return topology_yaml([pool_lines("main", zones, hash_by, warmup_ms, migration_ms)])


class ChurnBase(unittest.TestCase):
    def memcached(self):
        m = Memcached().start()
        self.addCleanup(m.kill)
        return m

    def start_proxy(self, text, extra=(), metrics=False, threads=2, zone="a"):
        """self.proxy in `zone` (with /metrics on self.metrics_port when `metrics`), and
        self.client, a connection to it."""
        args = list(extra)
        if metrics:
            self.metrics_port = free_port()
            args += ["--metrics-listen", "127.0.0.1:%d" % self.metrics_port]
        self.proxy = Proxy(text, zone=zone, threads=threads, extra_args=args).start()
        self.addCleanup(self.proxy.stop)
        self.client = self.proxy.client()
        self.addCleanup(self.client.close)

    def reload(self, text):
        before = self.proxy.stats(self.client)["proxy_topology_version"]
        self.proxy.write_topology(text)
        self.proxy.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.proxy.stats(self.client)["proxy_topology_version"] != before,
                   what="the proxy to apply the new topology\n" + self.proxy.logs()[-2000:])

    def set_all(self, value):
        for key in KEYS:
            reply = self.client.request(b"set %s 5 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
            self.assertEqual(reply, b"STORED\r\n", key)

    def restart_in_place(self, servers, i):
        """servers[i] (name, Memcached) restarts empty at its address; returns once the proxy
        (with metrics) noticed and warms it."""
        name, server = servers[i]
        server.kill()
        servers[i] = (name, Memcached(port=server.port).start())
        self.addCleanup(servers[i][1].kill)
        wait_until(lambda: self.metric("memzone_proxy_warmup_servers", zone="a") == 1,
                   timeout=8, what="the restart to be noticed")

    def placement(self, servers):
        out = {}
        for key in KEYS:
            names = holders(servers, key)
            self.assertEqual(len(names), 1, "%s on %s" % (key, names))
            out[key] = names[0]
        return out

    def metric(self, name, **labels):
        """A counter from the proxy's `stats` is not enough for per-zone ones: scrape."""
        return metric(self.metrics_port, name, **labels)


class IdentityPlacementTest(ChurnBase):
    def restart_on_new_port(self, hash_by):
        servers = [("mc-%d" % i, self.memcached()) for i in range(3)]
        self.start_proxy(pool_yaml({"a": servers}, hash_by=hash_by))
        self.set_all(b"v1")
        before = self.placement(servers)
        # mc-1 comes back empty on a new port (a rescheduled pod: new IP, same name).
        servers[1][1].kill()
        servers[1] = ("mc-1", self.memcached())
        self.reload(pool_yaml({"a": servers}, hash_by=hash_by))
        for _, server in servers:
            with server.client() as c:
                self.assertEqual(c.request(b"flush_all\r\n"), b"OK\r\n")
        self.set_all(b"v2")
        return before, self.placement(servers)

    def test_by_name_no_key_of_another_server_moves(self):
        before, after = self.restart_on_new_port("name")
        self.assertEqual(before, after)

    def test_by_address_keys_move(self):
        before, after = self.restart_on_new_port("address")
        moved = [k for k in KEYS if before[k] != after[k]]
        self.assertGreater(len(moved), 0)
        # ... including keys of servers that did not change at all.
        self.assertTrue(any(before[k] != "mc-1" for k in moved))


class WarmupTest(ChurnBase):
    WARMUP_MS = 3000

    def test_restarted_server_is_filled_from_another_zone_then_misses_stay_local(self):
        a = [("a-%d" % i, self.memcached()) for i in range(3)]
        b = [("b-%d" % i, self.memcached()) for i in range(2)]
        text = lambda: pool_yaml({"a": a, "b": b}, warmup_ms=self.WARMUP_MS, migration_ms=0)
        self.start_proxy(text(), metrics=True)
        # Values with flags and a TTL: the repair must keep both.
        for key in KEYS:
            self.assertEqual(self.client.request(b"set %s 7 600 2\r\nv1\r\n" % key.encode()), b"STORED\r\n")
        owned = [k for k in KEYS if holders(a, k) == ["a-1"]]
        self.assertGreater(len(owned), 10)
        # a-1 restarts empty on a new port under the same name.
        a[1][1].kill()
        a[1] = ("a-1", self.memcached())
        reload_started = time.monotonic()
        self.reload(text())
        # A value written locally since (newer than zone b's) is never overwritten.
        newer = owned[0]
        with a[1][1].client() as c:
            self.assertEqual(c.request(b"set %s 9 0 5\r\nnewer\r\n" % newer.encode()), b"STORED\r\n")
        for key in owned[:-3]:
            want = b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (
                key.encode(), 9 if key == newer else 7, 5 if key == newer else 2,
                b"newer" if key == newer else b"v1")
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()), want, key)
        self.assertLess(time.monotonic() - reload_started, self.WARMUP_MS / 1000.0,
                        "the reads must happen inside the window (slow machine?)")

        # The misses were read from zone b and repaired into a-1 with their flags and TTL.
        def warmed():
            with a[1][1].client() as c:
                for key in owned[1:-3]:
                    reply = c.request(b"mg %s f t v\r\n" % key.encode())
                    if not reply.startswith(b"VA 2 f7 t"):
                        return False
                    ttl = int(reply.split(b" ")[3].split(b"\r\n")[0][1:])
                    if not 500 < ttl <= 600:
                        return False
            return True
        wait_until(warmed, what="the repairs into the restarted server")
        self.assertGreaterEqual(self.metric("memzone_proxy_warmup_keys_warmed_total", zone="a"),
                                len(owned) - 4)
        self.assertEqual(self.metric("memzone_proxy_warmup_servers", zone="a"), 1)

        # After the window a miss on it stays a miss (no cross-zone reads in steady state).
        wait_until(lambda: time.monotonic() - reload_started > self.WARMUP_MS / 1000.0 + 0.7,
                   timeout=self.WARMUP_MS / 1000.0 + 5, what="the window to end")
        for key in owned[-3:]:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()), b"END\r\n", key)
        with b[0][1].client() as c0, b[1][1].client() as c1:
            self.assertTrue(any(c.request(b"get %s\r\n" % owned[-1].encode()) != b"END\r\n"
                                for c in (c0, c1)), "zone b still has it")
        self.assertEqual(self.metric("memzone_proxy_warmup_servers", zone="a"), 0)


class RestartInPlaceTest(ChurnBase):
    def test_server_restarted_at_its_address_is_noticed_empty_and_warmed(self):
        a = [("a-0", self.memcached()), ("a-1", self.memcached())]
        b = [("b-0", self.memcached())]
        text = pool_yaml({"a": a, "b": b}, warmup_ms=4000, migration_ms=0)
        self.start_proxy(text, metrics=True, threads=1)
        self.set_all(b"v1")
        time.sleep(1.5)  # the watch plants its key on each local server (once a second)
        self.assertEqual(self.metric("memzone_proxy_warmup_servers", zone="a"), 0)
        owned = [k for k in KEYS if holders(a, k) == ["a-1"]]
        # a-1 restarts at the same address, empty (an OOM-killed container keeps its pod IP).
        self.restart_in_place(a, 1)
        for key in owned:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()),
                             b"VALUE %s 5 2\r\nv1\r\nEND\r\n" % key.encode(), key)
        self.assertGreater(self.metric("memzone_proxy_warmup_reads_total", zone="a"), 0)


class Base64RepairTest(ChurnBase):
    def test_a_b_key_read_from_another_zone_is_repaired_under_the_bytes_memcached_stores(self):
        # a-0 restarts empty at its address: a miss on a `b` key is read from zone b and
        # repaired into a-0. The repair's ms names the key in base64 with `b` among its flags
        # (after the length: "ms <key> <len> b ..."); "ms <key> b <len>" is refused.
        a = [("a-0", self.memcached())]
        b = [("b-0", self.memcached())]
        text = pool_yaml({"a": a, "b": b}, warmup_ms=8000, migration_ms=0)
        self.start_proxy(text, metrics=True, threads=1)
        key = base64.b64encode(b"repair \x00me\r\n")
        self.assertEqual(self.client.request(b"ms %s 2 b F3 T600\r\nv1\r\n" % key), b"HD\r\n")
        time.sleep(1.5)  # the watch plants its key on each local server (once a second)
        self.restart_in_place(a, 0)
        self.assertEqual(self.client.request(b"mg %s b f v\r\n" % key), b"VA 2 f3\r\nv1\r\n")

        def repaired():
            with a[0][1].client() as c:
                return c.request(b"mg %s b f v\r\n" % key) == b"VA 2 f3\r\nv1\r\n"
        wait_until(repaired, timeout=5, what="the repair into a-0")


class MigrationTest(ChurnBase):
    MIGRATION_MS = 4000

    def test_scale_out_reads_the_previous_owner_and_a_delete_removes_both_copies(self):
        # One zone: what a miss finds can only come from the previous owner. The key mover
        # is off: this is the window alone (reads and writes), as mcrouter's MigrateRoute.
        servers = [("mc-%d" % i, self.memcached()) for i in range(3)]
        text = lambda: pool_yaml({"a": servers}, migration_ms=self.MIGRATION_MS)
        self.start_proxy(text(), extra=PROXY_EXTRA_ARGS, metrics=True)
        self.set_all(b"v1")
        before = self.placement(servers)
        for key in KEYS:  # the proxy places by name exactly as a name-keyed ketama would
            self.assertEqual(before[key], "mc-%d" % ketama_index(key, ["mc-0", "mc-1", "mc-2"], named=True))
        moved = [k for k in KEYS if ketama_index(k, ["mc-0", "mc-1", "mc-2", "mc-3"], named=True) == 3]
        self.assertGreater(len(moved), 20)
        read, deleted, overwritten, unread = moved[:10], moved[10], moved[11], moved[12:]

        servers.append(("mc-3", self.memcached()))
        changed = time.monotonic()
        self.reload(text())
        # A miss on the new owner reads the previous owner and repairs into the new one.
        for key in read:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()),
                             b"VALUE %s 5 2\r\nv1\r\nEND\r\n" % key.encode(), key)
        # ... and moves it: the previous owner's copy is deleted, so no later ring change (a
        # scale-in back) can serve it after the key changed on mc-3.
        wait_until(lambda: all(holders(servers, k) == ["mc-3"] for k in read),
                   what="migration repairs into mc-3")
        # A delete in the window reaches both owners; no later read brings the key back.
        self.client.request(b"delete %s\r\n" % deleted.encode())
        self.assertEqual(holders(servers, deleted), [])
        self.assertEqual(self.client.request(b"get %s\r\n" % deleted.encode()), b"END\r\n")
        # An overwrite in the window leaves no older copy at the previous owner to read back.
        self.assertEqual(self.client.request(b"set %s 6 0 2\r\nv2\r\n" % overwritten.encode()),
                         b"STORED\r\n")
        self.assertEqual(holders(servers, overwritten), ["mc-3"])
        self.assertEqual(self.client.request(b"get %s\r\n" % overwritten.encode()),
                         b"VALUE %s 6 2\r\nv2\r\nEND\r\n" % overwritten.encode())
        self.assertLess(time.monotonic() - changed, self.MIGRATION_MS / 1000.0,
                        "the window checks must happen inside it (slow machine?)")
        for kind, least in (("read", 10), ("hit", 10), ("repair", 10), ("invalidation", 2)):
            self.assertGreaterEqual(
                self.metric("memzone_proxy_migration_events_total", zone="a", kind=kind), least, kind)

        # After the window a moved key still on its previous owner reads as a miss.
        wait_until(lambda: time.monotonic() - changed > self.MIGRATION_MS / 1000.0 + 0.7,
                   timeout=self.MIGRATION_MS / 1000.0 + 5, what="the window to end")
        for key in unread[:5]:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()), b"END\r\n", key)


class KeyMoverBase(ChurnBase):
    """--move-keys (on by default): a ring change moves keys in the background."""
    MIGRATION_MS = 20000
    NAMES3 = ["mc-0", "mc-1", "mc-2"]
    NAMES4 = NAMES3 + ["mc-3"]

    def start(self, servers, *extra):
        self.text = lambda: pool_yaml({"a": servers}, migration_ms=self.MIGRATION_MS)
        self.start_proxy(self.text(), extra=extra, metrics=True, threads=1)

    @staticmethod
    def raw(server, key):
        """`mg key f t v` on the memcached itself: (flags, ttl, value) or None."""
        with server.client() as c:
            reply = c.request(b"mg %s f t v\r\n" % key.encode())
        if reply == b"EN\r\n":
            return None
        head, value = reply.split(b"\r\n")[:2]
        fields = dict((f[:1], f[1:]) for f in head.split(b" ")[2:])
        return int(fields[b"f"]), int(fields[b"t"]), value

    def start_three(self, value):
        """mc-0..2 behind a proxy, every key set to `value`: the servers, and the keys that a
        fourth server (mc-3) takes."""
        servers = [(n, self.memcached()) for n in self.NAMES3]
        self.start(servers)
        self.set_all(value)
        return servers, [k for k in KEYS if ketama_index(k, self.NAMES4, named=True) == 3]

    def change(self, servers):
        """Applies `servers` (already edited); returns when the change happened."""
        changed = time.monotonic()
        self.reload(self.text())
        return changed

    def set_keys(self, keys, value, flags=5):
        for key in keys:
            self.assertEqual(self.client.request(b"set %s %d 0 %d\r\n%s\r\n" % (
                key.encode(), flags, len(value), value)), b"STORED\r\n", key)

    def assert_never_read(self, keys, value):
        """No read of `keys` through the proxy returns `value` (a value since replaced)."""
        for key in keys:
            self.assertNotIn(value, self.client.request(b"get %s\r\n" % key.encode()), key)

    def newcomer_holding(self, keys, value):
        """A memcached holding `value` (flags 5) for `keys`: a server that was in the pool
        before, kept its memory, and comes back."""
        newcomer = self.memcached()
        with newcomer.client() as c:
            for key in keys:
                self.assertEqual(c.request(b"set %s 5 0 %d\r\n%s\r\n" % (
                    key.encode(), len(value), value)), b"STORED\r\n")
        return newcomer

    def wait_window_end(self, changed):
        window = self.MIGRATION_MS / 1000.0
        wait_until(lambda: time.monotonic() - changed > window + 0.7, timeout=window + 5,
                   what="the migration window to end")


class KeyMoverTest(KeyMoverBase):
    def test_scale_out_moves_every_key_to_its_new_owner_without_a_read(self):
        servers = [(n, self.memcached()) for n in self.NAMES3]
        self.start(servers)
        for key in KEYS:
            self.assertEqual(self.client.request(b"set %s 7 600 2\r\nv1\r\n" % key.encode()),
                             b"STORED\r\n")
        moved = [k for k in KEYS if ketama_index(k, self.NAMES4, named=True) == 3]
        self.assertGreater(len(moved), 20)
        servers.append(("mc-3", self.memcached()))
        self.reload(self.text())
        # No client reads: the keys move by themselves, with their flags and TTL.
        wait_until(lambda: all(holders(servers, k) == ["mc-3"] for k in moved),
                   timeout=15, what="the moved keys to be on mc-3 only")
        for key in moved:
            flags, ttl, value = self.raw(servers[3][1], key)
            self.assertEqual((flags, value), (7, b"v1"), key)
            self.assertTrue(500 < ttl <= 600, (key, ttl))
        for key in KEYS:  # nothing else moved
            if key not in moved:
                self.assertEqual(len(holders(servers, key)), 1, key)
        wait_until(lambda: self.metric("memzone_proxy_migration_crawls_total", zone="a",
                                       result="done") == 4, what="four crawls done")
        self.assertEqual(self.metric("memzone_proxy_migration_keys_total", zone="a",
                                     action="moved"), len(moved))
        for key in moved:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()),
                             b"VALUE %s 7 2\r\nv1\r\nEND\r\n" % key.encode())

    def test_scale_in_after_a_scale_out_serves_no_value_older_than_the_last_write(self):
        # Keys moved at the scale-out, untouched during its window, are written after it;
        # the scale-in makes their old owners the owners again. A copy left there would be
        # served (the migration window alone leaves it: --move-keys off fails here).
        self.MIGRATION_MS = 4000
        servers, moved = self.start_three(b"v1")
        servers.append(("mc-3", self.memcached()))
        self.wait_window_end(self.change(servers))
        self.assertEqual(self.metric("memzone_proxy_migration_crawls_total", zone="a",
                                     result="done"), 4)
        self.set_keys(moved, b"v2")
        gone = servers.pop()
        self.reload(self.text())
        gone[1].kill()
        self.assert_never_read(moved, b"v1")

    def test_a_delete_after_a_scale_in_is_not_undone_by_the_move(self):
        # The scale-in removes mc-3 from the topology, still running: the mover moves its
        # keys to their new owners (add semantics), a second after the change. A delete in
        # between finds nothing at the new owner; unless it also reached mc-3, the move then
        # brought the deleted value back (chaos test with ring changes, issue 23).
        servers = [(n, self.memcached()) for n in self.NAMES4]
        self.start(servers)
        self.set_all(b"v1")
        moved = [k for k in KEYS if ketama_index(k, self.NAMES4, named=True) == 3]
        self.assertGreater(len(moved), 20)
        deleted, kept = moved[:len(moved) // 2], moved[len(moved) // 2:]
        self.assertEqual([holders(servers, k) for k in moved], [["mc-3"]] * len(moved))
        everyone = list(servers)
        servers.pop()
        changed = self.change(servers)
        for key in deleted:
            self.client.request(b"delete %s\r\n" % key.encode())
        self.assertLess(time.monotonic() - changed, 0.9,
                        "the deletes must land before moves start (slow machine?)")
        wait_until(lambda: self.metric("memzone_proxy_migration_crawls_total", zone="a",
                                       result="done") == 4, timeout=15, what="four crawls done")
        for key in deleted:
            self.assertEqual(holders(everyone, key), [], key)
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()), b"END\r\n", key)
        for key in kept:  # moved, as before
            self.assertEqual(holders(everyone, key), [servers[ketama_index(
                key, self.NAMES3, named=True)][0]], key)

    def test_a_server_back_with_copies_from_before_has_them_purged(self):
        # mc-3 joins holding old copies of keys it is about to own (a server that was in the
        # pool before, kept its memory, and comes back: a readiness flap): they must not be
        # served, even after the window (--move-keys off fails here).
        self.MIGRATION_MS = 4000
        servers, moved = self.start_three(b"v2")
        servers.append(("mc-3", self.newcomer_holding(moved, b"old")))
        self.wait_window_end(self.change(servers))
        for key in moved:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()),
                             b"VALUE %s 5 2\r\nv2\r\nEND\r\n" % key.encode(), key)
        self.assertEqual(self.metric("memzone_proxy_migration_keys_total", zone="a",
                                     action="purged"), len(moved))

    def test_two_proxies_crawl_each_server_once(self):
        servers = [(n, self.memcached()) for n in self.NAMES3]
        self.start(servers)
        first_port = self.metrics_port
        other_port = free_port()
        other = Proxy(self.text(), zone="a", threads=1,
                      extra_args=["--metrics-listen", "127.0.0.1:%d" % other_port]).start()
        self.addCleanup(other.stop)
        self.set_all(b"v1")
        moved = [k for k in KEYS if ketama_index(k, self.NAMES4, named=True) == 3]
        servers.append(("mc-3", self.memcached()))
        self.reload(self.text())
        with other.client() as c:
            before = other.stats(c)["proxy_topology_version"]
            other.write_topology(self.text())
            other.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: other.stats(c)["proxy_topology_version"] != before,
                       what="the second proxy to apply the topology")

        def done(port):
            return metric(port, "memzone_proxy_migration_crawls_total", zone="a", result="done")
        wait_until(lambda: done(first_port) + done(other_port) >= 4, timeout=20,
                   what="four crawls")
        wait_until(lambda: all(holders(servers, k) == ["mc-3"] for k in moved),
                   timeout=15, what="the moved keys to be on mc-3 only")
        time.sleep(1)  # a second crawl of a server would have started by now
        self.assertEqual(done(first_port) + done(other_port), 4)


class KeyMoverBinaryKeysTest(KeyMoverBase):
    """Keys written with meta's `b` flag: memcached stores (and dumps) their decoded bytes, so
    the mover places them by those bytes and names them in base64 with `b` (issue 23)."""
    MIGRATION_MS = 4000
    # Bytes no text line can carry: a space, CR, LF, NUL, a control byte, DEL, non-ASCII.
    CANDIDATES = [b"bin %d\r\n\x00\x01\x7f\xff" % i for i in range(800)]

    def moving_keys(self):
        keys = [k for k in self.CANDIDATES
                if ketama_index(k, self.NAMES4, named=True) == 3][:40]
        self.assertEqual(len(keys), 40)
        return keys

    def set_b(self, keys, value, flags=7, ttl=600):
        for key in keys:
            self.assertEqual(self.client.request(b"ms %s %d b F%d T%d\r\n%s\r\n" % (
                base64.b64encode(key), len(value), flags, ttl, value)), b"HD\r\n", key)

    @staticmethod
    def raw_b(server, key):
        """`mg <base64> b f t v` on the memcached itself: (flags, ttl, value) or None."""
        with server.client() as c:
            reply = c.request(b"mg %s b f t v\r\n" % base64.b64encode(key))
        if reply == b"EN\r\n":
            return None
        head, value = reply.split(b"\r\n")[:2]
        fields = dict((f[:1], f[1:]) for f in head.split(b" ")[2:])
        return int(fields[b"f"]), int(fields[b"t"]), value

    def holders_b(self, servers, key):
        return [name for name, server in servers if self.raw_b(server, key) is not None]

    def read_b(self, key):
        return self.client.request(b"mg %s b f v\r\n" % base64.b64encode(key))

    def test_binary_keys_move_to_their_new_owner(self):
        servers = [(n, self.memcached()) for n in self.NAMES3]
        self.start(servers)
        moved = self.moving_keys()
        stay = [k for k in self.CANDIDATES
                if ketama_index(k, self.NAMES4, named=True) != 3][:20]
        self.set_b(moved + stay, b"v1")
        servers.append(("mc-3", self.memcached()))
        self.reload(self.text())
        # No client reads: the keys move by themselves, with their flags and TTL.
        wait_until(lambda: all(self.holders_b(servers, k) == ["mc-3"] for k in moved),
                   timeout=15, what="the moved binary keys to be on mc-3 only")
        for key in moved:
            flags, ttl, value = self.raw_b(servers[3][1], key)
            self.assertEqual((flags, value), (7, b"v1"), key)
            self.assertTrue(500 < ttl <= 600, (key, ttl))
        for key in stay:
            self.assertEqual(len(self.holders_b(servers, key)), 1, key)
            self.assertNotIn("mc-3", self.holders_b(servers, key), key)
        self.assertEqual(self.metric("memzone_proxy_migration_keys_total", zone="a",
                                     action="moved"), len(moved))
        for key in moved + stay:
            self.assertEqual(self.read_b(key), b"VA 2 f7\r\nv1\r\n", key)

    def test_binary_copies_a_server_held_from_before_are_purged(self):
        # mc-3 joins holding old copies of binary keys it is about to own: purged like text
        # keys' (they used to be skipped, then served).
        servers = [(n, self.memcached()) for n in self.NAMES3]
        self.start(servers)
        moved = self.moving_keys()
        self.set_b(moved, b"v2")
        newcomer = self.memcached()
        with newcomer.client() as c:
            for key in moved:
                self.assertEqual(c.request(b"ms %s 3 b F5\r\nold\r\n" % base64.b64encode(key)),
                                 b"HD\r\n")
        servers.append(("mc-3", newcomer))
        self.wait_window_end(self.change(servers))
        for key in moved:
            self.assertEqual(self.read_b(key), b"VA 2 f7\r\nv2\r\n", key)
        self.assertEqual(self.metric("memzone_proxy_migration_keys_total", zone="a",
                                     action="purged"), len(moved))


class KeyMoverChurnTest(KeyMoverBase):
    """The key mover through sequences of changes (found by review: each failed before)."""
    MIGRATION_MS = 4000

    def test_a_fast_flap_is_crawled_at_every_step(self):
        # mc-3 joins, leaves and joins again 1.5 s apart (a readiness flap), so each change
        # repeats an earlier one; then the moved keys are written and mc-3 leaves once more.
        # Each step must be crawled: a repeat that took an earlier step's "done" for its own
        # left the first era's copies on the old owners, served after the last step.
        self.MIGRATION_MS = 3000
        servers, moved = self.start_three(b"v1")
        mc3 = ("mc-3", self.memcached())
        for step in ("out", "in", "out"):
            if step == "out":
                servers.append(mc3)
            else:
                servers.pop()
            changed = self.change(servers)
            time.sleep(1.5)
        self.wait_window_end(changed)
        self.set_keys(moved, b"v2", flags=0)
        servers.pop()
        self.wait_window_end(self.change(servers))
        self.assert_never_read(moved, b"v1")
        self.assertEqual(self.metric("memzone_proxy_migration_crawls_total", zone="a",
                                     result="elsewhere"), 0)

    def test_a_server_back_from_a_partition_has_its_copies_deleted_not_moved(self):
        # mc-0 stops answering and leaves the ring with k=v0; k is then written and deleted
        # (acknowledged); mc-0 comes back with its memory as mc-3 joins, k now mc-3's. Its v0
        # is a leftover: deleted, never moved to mc-3.
        three, two, four = self.NAMES3, ["mc-1", "mc-2"], self.NAMES4
        key = next(k for k in KEYS if ketama_index(k, three, named=True) == 0
                   and ketama_index(k, four, named=True) == 3)
        mcs = {n: self.memcached() for n in four}
        servers = [(n, mcs[n]) for n in three]
        self.start(servers)
        self.assertEqual(self.client.request(b"set %s 0 0 2\r\nv0\r\n" % key.encode()),
                         b"STORED\r\n")
        mcs["mc-0"].proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: mcs["mc-0"].proc.send_signal(signal.SIGCONT))
        servers[:] = [(n, mcs[n]) for n in two]
        self.wait_window_end(self.change(servers))
        self.assertEqual(self.client.request(b"set %s 0 0 2\r\nv1\r\n" % key.encode()),
                         b"STORED\r\n")
        self.assertEqual(self.client.request(b"delete %s\r\n" % key.encode()), b"DELETED\r\n")
        mcs["mc-0"].proc.send_signal(signal.SIGCONT)
        servers[:] = [(n, mcs[n]) for n in four]
        self.wait_window_end(self.change(servers))
        self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()), b"END\r\n")
        self.assertEqual(holders(servers, key), [])

    def test_a_change_in_another_zone_does_not_hold_up_this_one(self):
        # Zone b changes while zone a's crawl runs: a's crawl goes on (or resumes at once);
        # it used to stop and lock itself out of its own leases until they expired.
        self.MIGRATION_MS = 20000
        a = [(n, self.memcached()) for n in self.NAMES3]
        b = [(n, self.memcached()) for n in self.NAMES3]
        self.text = lambda: pool_yaml({"a": a, "b": b}, migration_ms=self.MIGRATION_MS)
        self.start_proxy(self.text(), metrics=True, threads=1)
        self.set_all(b"v1")
        moved = [k for k in KEYS if ketama_index(k, self.NAMES4, named=True) == 3]
        a.append(("mc-3", self.memcached()))
        self.reload(self.text())
        time.sleep(0.3)
        b.append(("mc-3", self.memcached()))
        self.reload(self.text())
        wait_until(lambda: all(holders(a, k) == ["mc-3"] for k in moved), timeout=12,
                   what="zone a's keys to move (well before its leases would expire)")


class KeyMoverRestartAndProbeTest(KeyMoverBase):
    """What the purge relies on: the CAS counter at the change, and knowing which servers
    stayed (found by review: each failed before)."""
    MIGRATION_MS = 4000

    def test_a_proxy_restarted_mid_crawl_still_purges(self):
        # The proxy restarts right after a scale-out: its crawl is lost before the moves,
        # and the old owners keep copies. The restarted proxy knows no history, so the next
        # change purges every server of the zone.
        servers, moved = self.start_three(b"v1")
        servers.append(("mc-3", self.memcached()))
        self.reload(self.text())
        self.proxy.stop()
        self.start(servers)
        self.set_keys(moved, b"v2")
        servers.pop()
        self.wait_window_end(self.change(servers))
        self.assert_never_read(moved, b"v1")

    def test_a_server_whose_counter_cannot_be_read_is_still_purged(self):
        # mc-3 leaves while stopped (nothing moved off it), keys are rewritten, and it comes
        # back still stopped: its CAS counter cannot be read at the change. Its purge falls
        # back to its lease's counter instead of being skipped.
        servers = [(n, self.memcached()) for n in self.NAMES4]
        self.start(servers)
        self.set_all(b"v1")
        mine = [k for k in KEYS if ketama_index(k, self.NAMES4, named=True) == 3]
        gone = servers.pop()
        gone[1].proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: gone[1].proc.send_signal(signal.SIGCONT))
        self.wait_window_end(self.change(servers))
        gone[1].proc.send_signal(signal.SIGCONT)
        self.set_keys(mine, b"v2")
        servers.append(gone)
        gone[1].proc.send_signal(signal.SIGSTOP)
        changed = self.change(servers)
        time.sleep(0.5)
        gone[1].proc.send_signal(signal.SIGCONT)
        self.wait_window_end(changed)
        self.assert_never_read(mine, b"v1")

    def test_writes_through_one_ring_survive_the_next_change(self):
        # Keys written to mc-3 right after it joined stay when mc-4 joins a moment later: the
        # second change keeps mc-3's counter from the first rather than reading it again.
        servers, moved = self.start_three(b"v1")
        keys = [k for k in moved
                if ketama_index(k, self.NAMES4 + ["mc-4"], named=True) == 3]
        servers.append(("mc-3", self.memcached()))
        self.reload(self.text())
        self.set_keys(keys, b"v2")
        servers.append(("mc-4", self.memcached()))
        self.wait_window_end(self.change(servers))
        for key in keys:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()),
                             b"VALUE %s 5 2\r\nv2\r\nEND\r\n" % key.encode(), key)


def two_pools_yaml(main, p2, migration_ms):
    """Pools main (default route) and, when p2 is not None, p2 (keys "s:..."), zone a each."""
    pools = [pool_lines("main", {"a": main}, migration_ms=migration_ms)]
    if p2 is None:
        return topology_yaml(pools)
    pools.append(pool_lines("p2", {"a": p2}, migration_ms=migration_ms))
    return topology_yaml(pools, [("s:", "p2")])


class KeyMoverPoolsTest(KeyMoverBase):
    """Pools that share servers, and a pool that goes and comes back (found by review: each
    failed before)."""
    MIGRATION_MS = 3000

    def keys_of(self, *placements):
        """s: keys placed, by name, at index i of each (names, i) given."""
        return [k for k in ("s:%d" % i for i in range(2000))
                if all(ketama_index(k, names, named=True) == i for names, i in placements)][:40]

    def test_a_pools_crawl_leaves_another_pools_keys_alone(self):
        # Server A serves pools main and p2. main scales out; its crawl of A must not move
        # p2's keys (p2 reads them on A); after p2 drops A they must not come back stale.
        A, B, C, D = (self.memcached() for _ in range(4))
        main, p2 = [("mc-0", A), ("mc-1", B)], [("x-0", A), ("x-1", C), ("x-2", D)]
        self.text = lambda: two_pools_yaml(main, p2, self.MIGRATION_MS)
        self.start_proxy(self.text(), metrics=True, threads=1)
        p2.pop()  # an unrelated first change of p2
        self.wait_window_end(self.change(p2))
        keys = self.keys_of((["x-0", "x-1"], 0), (["mc-0", "mc-1"], 0),
                            (["mc-0", "mc-1", "mc-2"], 2))
        self.assertTrue(keys)
        self.set_keys(keys, b"v1")
        main.append(("mc-2", C))
        self.wait_window_end(self.change(main))
        self.assertEqual([k for k in keys if self.raw(A, k) is None], [])
        self.set_keys(keys, b"v2")
        p2.pop(0)
        self.wait_window_end(self.change(p2))
        self.assert_never_read(keys, b"v1")

    def test_a_pool_back_after_an_absence_is_crawled(self):
        # p2 disappears (the controller leaves out a zone with no ready server) and comes
        # back with one more server: that is a ring change like any other.
        M, A, B, C, D = (self.memcached() for _ in range(5))
        state = {"p2": [("x-0", A), ("x-1", B), ("x-3", D)]}
        self.text = lambda: two_pools_yaml([("m-0", M)], state["p2"], self.MIGRATION_MS)
        self.start_proxy(self.text(), metrics=True, threads=1)
        state["p2"] = state["p2"][:2]  # an unrelated first change of p2
        self.wait_window_end(self.change(None))
        keys = self.keys_of((["x-0", "x-1"], 0), (["x-0", "x-1", "x-2"], 2))
        self.assertTrue(keys)
        self.set_keys(keys, b"v1")
        state["p2"] = None
        self.change(None)
        state["p2"] = [("x-0", A), ("x-1", B), ("x-2", C)]
        self.wait_window_end(self.change(None))
        self.set_keys(keys, b"v2")
        state["p2"] = [("x-0", A), ("x-1", B)]
        self.wait_window_end(self.change(None))
        self.assert_never_read(keys, b"v1")


def routed_pools_yaml(main, p2, s_pool, migration_ms):
    """Pools main and p2 (zone a each); keys "m:..." go to main, "s:..." to `s_pool`."""
    pools = [pool_lines(name, {"a": servers}, migration_ms=migration_ms)
             for name, servers in [("main", main), ("p2", p2)]]
    return topology_yaml(pools, [("m:", "main"), ("s:", s_pool)])


class RouteChangeTest(KeyMoverBase):
    MIGRATION_MS = 3000

    def test_a_prefix_routed_away_and_back_serves_nothing_the_old_pool_held(self):
        # "s:" goes to p2, then to main (written there), then back to p2: p2's copies from
        # the first era are older than the writes through main and must not be served. p2
        # shares server A with main: main's keys on A are not p2's to purge.
        A, B, C = (self.memcached() for _ in range(3))
        main, p2 = [("mc-0", A), ("mc-1", B)], [("x-0", A), ("x-1", C)]
        state = {"s": "p2"}
        self.text = lambda: routed_pools_yaml(main, p2, state["s"], self.MIGRATION_MS)
        self.start_proxy(self.text(), metrics=True, threads=1)
        s_keys = ["s:%d" % i for i in range(60)]
        m_keys = ["m:%d" % i for i in range(60)]
        on_a = [k for k in m_keys if ketama_index(k, ["mc-0", "mc-1"], named=True) == 0]
        self.assertTrue(on_a)
        self.set_keys(s_keys + m_keys, b"v1")
        state["s"] = "main"
        self.wait_window_end(self.change(None))
        self.set_keys(s_keys, b"v2")
        state["s"] = "p2"
        self.wait_window_end(self.change(None))
        self.assert_never_read(s_keys, b"v1")
        self.assertGreaterEqual(self.metric("memzone_proxy_migration_keys_total", zone="a",
                                            action="purged"), len(s_keys))
        for key in on_a:  # untouched on the shared server
            self.assertEqual(self.raw(A, key), (5, -1, b"v1"), key)
        for key in m_keys:
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()),
                             b"VALUE %s 5 2\r\nv1\r\nEND\r\n" % key.encode(), key)


class ZoneAbsenceTest(KeyMoverBase):
    def test_a_zone_back_after_an_absence_serves_nothing_it_missed(self):
        # Zone b drops out of the topology (no ready server, say) while its memcached keep
        # running; writes meanwhile reach zone a only. When b comes back, its servers' old
        # values must not be served by b's proxies.
        self.back_after_an_absence(with_new_server=False)

    def test_a_zone_back_with_another_ring_moves_nothing_it_missed(self):
        # ... nor moved to the owners of its new ring.
        self.back_after_an_absence(with_new_server=True)

    def test_a_zone_back_is_not_read_before_its_purge(self):
        # Zone b leaves and comes back; its crawler is off (the purge fails until it is on
        # again: a purge as slow as we like, deterministically). Reads through b's proxy must
        # go to zone a meanwhile, never to b's stale copies, and return to b once it is purged.
        a, b, state = self.zone_b_proxy()
        self.set_all(b"v1")
        self.return_with_crawler_off(a, b, state, b"v1", b"v2")
        self.crawler_on_and_b_read_again(b, "only-b")

    def test_a_zone_back_twice_is_purged_each_time(self):
        # The second return follows the first one's crawl within seconds: its crawl must not
        # take the first one's lease ("done") for its own.
        a, b, state = self.zone_b_proxy()
        self.set_all(b"v1")
        self.return_with_crawler_off(a, b, state, b"v1", b"v2")
        self.crawler_on_and_b_read_again(b, "only-b")
        self.set_all(b"v3")
        self.return_with_crawler_off(a, b, state, b"v3", b"v4")
        self.crawler_on_and_b_read_again(b, "only-b-again")

    def zone_b_proxy(self):
        self.MIGRATION_MS = 30000
        a = [("a-%d" % i, self.memcached()) for i in range(2)]
        b = [("b-%d" % i, self.memcached()) for i in range(2)]
        state = {"zones": {"a": a, "b": b}}
        self.text = lambda: pool_yaml(state["zones"], migration_ms=self.MIGRATION_MS)
        self.start_proxy(self.text(), zone="b", threads=1)
        return a, b, state

    def return_with_crawler_off(self, a, b, state, old, new):
        """Zone b (holding `old`) leaves, the keys are written `new`, b comes back with its
        crawler off: none of b's copies is read."""
        for _, server in b:
            with server.client() as c:
                self.assertEqual(c.request(b"lru_crawler disable\r\n"), b"OK\r\n")
        state["zones"] = {"a": a}
        self.change(None)
        self.set_keys(KEYS, new)
        state["zones"] = {"a": a, "b": b}
        self.change(None)
        self.assert_never_read(KEYS, old)

    def crawler_on_and_b_read_again(self, b, key):
        """A key written to b alone after its return is not read until b's crawler is on
        again, and is read once b is purged (well before the window ends)."""
        owner = b[ketama_index(key, [n for n, _ in b], named=True)][1]
        with owner.client() as c:
            self.assertEqual(c.request(b"set %s 0 0 1\r\nx\r\n" % key.encode()), b"STORED\r\n")
        self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()), b"END\r\n")
        for _, server in b:
            with server.client() as c:
                self.assertEqual(c.request(b"lru_crawler enable\r\n"), b"OK\r\n")
        wait_until(lambda: self.client.request(b"get %s\r\n" % key.encode()) != b"END\r\n",
                   timeout=15, what="zone b to be read again once purged")

    def back_after_an_absence(self, with_new_server):
        self.MIGRATION_MS = 3000
        a = [("a-%d" % i, self.memcached()) for i in range(2)]
        b = [("b-%d" % i, self.memcached()) for i in range(2)]
        extra = [("b-2", self.memcached())] if with_new_server else []
        state = {"zones": {"a": a, "b": b}}
        self.text = lambda: pool_yaml(state["zones"], migration_ms=self.MIGRATION_MS)
        self.start_proxy(self.text(), zone="b", threads=1)
        state["zones"] = {"a": a, "b": b[:1]}  # an unrelated first change of zone b
        self.wait_window_end(self.change(None))
        state["zones"] = {"a": a, "b": b}
        self.wait_window_end(self.change(None))
        self.set_all(b"v1")
        state["zones"] = {"a": a}
        self.change(None)
        self.set_keys(KEYS, b"v2")
        state["zones"] = {"a": a, "b": b + extra}
        self.wait_window_end(self.change(None))
        self.assert_never_read(KEYS, b"v1")


class EndlessDumpTest(KeyMoverBase):
    """A server whose dump never ends: the crawl gives up with the window, and SIGTERM does
    not wait for it, whatever the dump is made of."""
    MIGRATION_MS = 3000

    @staticmethod
    def forever(make):
        i = 0
        while True:
            yield make(i)
            i += 1
            time.sleep(0.01)

    STREAMS = {
        # items written "since the change" (cas above the lease's): never batched
        "items": lambda i: b"".join(b"key=k%d exp=-1 la=1 cas=100 fetch=no cls=1 size=60\n" % j
                                    for j in range(i * 100, i * 100 + 100)),
        # keys no meta line can name (binary, base64 over 250 bytes): skipped before any batch
        "unsendable keys": lambda i: b"key=%s%d exp=-1 la=1 cas=1 fetch=no cls=1 size=60\n" % (
            b"%01" * 187, i),
        # one byte at a time, never a whole line: no read ever times out
        "a trickle": lambda i: b"k",
    }

    def run_stream(self, make):
        def behaviour(data):
            if data.startswith(b"ms memzone:migration"):
                return b"HD c5\r\n"
            if data.startswith(b"lru_crawler metadump"):
                return self.forever(make)  # never END
            return b"VERSION 1.6.18\r\n" if data.startswith(b"version") else b"ERROR\r\n"
        fake = FakeBackend(behaviour)
        self.addCleanup(fake.stop)
        servers = [("mc-0", self.memcached()), ("mc-1", self.memcached()), ("mc-2", fake)]
        self.start(servers)
        servers.append(("mc-3", self.memcached()))
        changed = self.change(servers)
        wait_until(lambda: self.metric("memzone_proxy_migration_crawls_total", zone="a",
                                       result="failed") >= 1, timeout=15,
                   what="the endless server's crawl to be given up")
        self.assertLess(time.monotonic() - changed, 10)
        # Again, and stop the proxy in the middle of it.
        servers.append(("mc-4", self.memcached()))
        self.change(servers)
        time.sleep(1)
        stopping = time.monotonic()
        self.proxy.proc.send_signal(signal.SIGTERM)
        self.proxy.proc.wait(timeout=15)
        self.assertLess(time.monotonic() - stopping, 8)

    def test_items_written_since(self):
        self.run_stream(self.STREAMS["items"])

    def test_unsendable_keys(self):
        self.run_stream(self.STREAMS["unsendable keys"])

    def test_a_trickle(self):
        self.run_stream(self.STREAMS["a trickle"])


class MultiGetMigrationTest(ChurnBase):
    MIGRATION_MS = 6000

    def test_multi_get_reads_the_previous_owner_and_moves_the_keys(self):
        a = [("a-%d" % i, self.memcached()) for i in range(3)]
        b = [("b-%d" % i, self.memcached()) for i in range(2)]
        text = lambda: pool_yaml({"a": a, "b": b}, warmup_ms=0, migration_ms=self.MIGRATION_MS)
        self.start_proxy(text(), extra=PROXY_EXTRA_ARGS, metrics=True)
        self.set_all(b"v1")
        moved = [k for k in KEYS if ketama_index(k, ["a-0", "a-1", "a-2", "a-3"], named=True) == 3]
        self.assertGreater(len(moved), 20)
        stayed = [k for k in KEYS if k not in moved][:5]
        previous = {k: "a-%d" % ketama_index(k, ["a-0", "a-1", "a-2"], named=True) for k in moved}
        for key in moved:
            self.assertEqual(holders(a, key), [previous[key]], key)
        # Zone b loses its copies: only the previous owner in zone a can answer ...
        from_b, moved = moved[0], moved[1:]
        for key in moved:
            for _, server in b:
                with server.client() as c:
                    c.request(b"delete %s\r\n" % key.encode())
            self.assertEqual(holders(b, key), [], key)
        # ... except for one key its previous owner lost: a miss there goes on to zone b.
        with dict(a)[previous[from_b]].client() as c:
            self.assertEqual(c.request(b"delete %s\r\n" % from_b.encode()), b"DELETED\r\n")

        a.append(("a-3", self.memcached()))
        changed = time.monotonic()
        self.reload(text())
        # gets stays local (its cas values mean nothing elsewhere): no previous owner asked.
        self.assertEqual(self.client.request(b"gets %s %s\r\n" % (moved[0].encode(),
                                                                  moved[1].encode())), b"END\r\n")
        # One multi-key get: every moved key misses on a-3 and is read from its previous owner.
        keys = moved + stayed + [from_b]
        reply = self.client.request(b"get %s\r\n" % " ".join(keys).encode())
        self.assertEqual(reply, b"".join(b"VALUE %s 5 2\r\nv1\r\n" % k.encode() for k in keys)
                         + b"END\r\n")
        self.assertLess(time.monotonic() - changed, self.MIGRATION_MS / 1000.0,
                        "the read must happen inside the window (slow machine?)")
        # ... and moved them: each now sits on a-3 only (zone b's copy of from_b stays).
        wait_until(lambda: all(holders(a, k) == ["a-3"] for k in moved + [from_b]),
                   what="migration repairs (moves) into a-3")
        for key in moved:
            self.assertEqual(holders(b, key), [], key)
        self.assertEqual(len(holders(b, from_b)), 1)
        for kind in ("read", "hit", "repair"):
            self.assertGreaterEqual(
                self.metric("memzone_proxy_migration_events_total", zone="a", kind=kind),
                len(moved), kind)


class TinyMemcached(FakeBackend):
    """Enough of memcached (text get/set/delete, version, meta mg/ms/md) to stand in for a
    server, with a delete that fails on demand: `fail_delete[key]` = "error" answers the next
    delete (or md) of `key` with SERVER_ERROR and keeps the value, "close" hangs up instead."""

    def __init__(self):
        self.store = {}  # key -> (flags, data)
        self.cas = {}  # key -> the cas its item was stored with (meta `c`)
        self.next_cas = 1
        self.fail_delete = {}
        self.lock = threading.Lock()
        super().__init__(None)

    def _serve(self, conn):
        conn.settimeout(30)
        buf = b""
        try:
            while not self.stopped:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n" in buf:
                    line, rest = buf.split(b"\r\n", 1)
                    words = line.split()
                    body = None
                    if words and words[0] in (b"set", b"ms"):
                        n = int(words[4] if words[0] == b"set" else words[2])
                        if len(rest) < n + 2:
                            break  # the data block is not all here yet
                        body, rest = rest[:n], rest[n + 2:]
                    buf = rest
                    with self.lock:
                        out = self.answer(words, body)
                    if out is None:
                        return
                    conn.sendall(out)
        except OSError:
            pass
        finally:
            conn.close()

    def answer(self, words, body):
        cmd, args = (words[0], [w.decode() for w in words[1:]]) if words else (b"", [])
        if cmd == b"version":
            return b"VERSION 1.6.0\r\n"
        if cmd in (b"get", b"gets"):
            out = b""
            for key in args:
                if key in self.store:
                    flags, data = self.store[key]
                    out += b"VALUE %s %d %d\r\n%s\r\n" % (key.encode(), flags, len(data), data)
            return out + b"END\r\n"
        if cmd == b"set":
            self.store[args[0]] = (int(args[1]), body)
            self.cas[args[0]] = self.next_cas
            self.next_cas += 1
            return b"" if args[-1] == "noreply" else b"STORED\r\n"
        opaque = "".join(" " + f for f in args[1:] if f.startswith("O")).encode()
        if cmd == b"ms":
            flags = next((int(f[1:]) for f in args[2:] if f.startswith("F")), 0)
            self.store[args[0]] = (flags, body)
            self.cas[args[0]] = self.next_cas
            self.next_cas += 1
            cas = b" c%d" % self.cas[args[0]] if "c" in args[2:] else b""
            return b"HD%s%s\r\n" % (cas, opaque)
        if cmd in (b"delete", b"md"):
            how = self.fail_delete.pop(args[0], None)
            if how == "close":
                return None
            if how == "error":
                return b"SERVER_ERROR out of memory\r\n"
        if cmd == b"delete":
            return b"DELETED\r\n" if self.store.pop(args[0], None) else b"NOT_FOUND\r\n"
        if cmd == b"md":
            return (b"HD" if self.store.pop(args[0], None) else b"NF") + opaque + b"\r\n"
        if cmd == b"mg":  # also the proxy's fences, `mg memzone:fence O<opaque>`
            if args[0] not in self.store:
                return b"EN%s\r\n" % opaque
            flags, data = self.store[args[0]]
            cas = b" c%d" % self.cas.get(args[0], 0) if "c" in args[1:] else b""
            if "v" in args[1:]:
                return b"VA %d t-1 f%d%s%s\r\n%s\r\n" % (len(data), flags, cas, opaque, data)
            return b"HD%s%s\r\n" % (cas, opaque)
        return b"ERROR\r\n"


class FailedPreviousOwnerDeleteTest(ChurnBase):
    MIGRATION_MS = 6000

    def scale_out_from_a_stand_in(self):
        """One zone: what a migration read finds can only come from the previous owner, a-2,
        a stand-in whose deletes fail on demand. Two keys moving from a-2 to a-3 are set
        ("old"), then a-3 joins. Returns the stand-in, the keys, and when the ring changed."""
        fake = TinyMemcached()
        self.addCleanup(fake.stop)
        self.servers = [("a-0", self.memcached()), ("a-1", self.memcached()), ("a-2", fake)]
        text = lambda: pool_yaml({"a": self.servers}, warmup_ms=0,
                                 migration_ms=self.MIGRATION_MS)
        self.start_proxy(text(), extra=PROXY_EXTRA_ARGS, metrics=True)
        moved = [k for k in KEYS if ketama_index(k, ["a-0", "a-1", "a-2"], named=True) == 2
                 and ketama_index(k, ["a-0", "a-1", "a-2", "a-3"], named=True) == 3]
        self.assertGreaterEqual(len(moved), 2)
        keys = {"error": moved[0], "close": moved[1]}
        for key in keys.values():
            self.assertEqual(self.client.request(b"set %s 5 0 3\r\nold\r\n" % key.encode()),
                             b"STORED\r\n")
            self.assertEqual(fake.store.get(key), (5, b"old"))
        self.servers.append(("a-3", self.memcached()))
        changed = time.monotonic()
        self.reload(text())
        return fake, keys, changed

    def fail_next_delete(self, fake, key, how):
        with fake.lock:
            fake.fail_delete[key] = how

    def wait_replayed(self, fake, key, how):
        """The failed delete is queued and replayed once the server answers (forgotten, it
        would leave the old value for a migration read or a later ring change to serve)."""
        wait_until(lambda: how not in fake.fail_delete.values(),
                   what="the delete to reach the previous owner (%s)" % how)
        wait_until(lambda: key not in fake.store, timeout=5,
                   what="the failed delete's replay at the previous owner (%s)" % how)
        wait_until(lambda: self.metric("memzone_proxy_invalidation_queue_depth", zone="a") == 0,
                   timeout=5, what="the proxy to see the replay answered (%s)" % how)

    def test_a_failed_delete_at_the_previous_owner_is_replayed_not_forgotten(self):
        fake, keys, changed = self.scale_out_from_a_stand_in()
        for how, key in keys.items():
            self.fail_next_delete(fake, key, how)
            # The delete reaches the new owner (which never had the key) and, failing, the
            # previous owner.
            self.assertIn(self.client.request(b"delete %s\r\n" % key.encode()),
                          (b"DELETED\r\n", b"NOT_FOUND\r\n"), how)
            self.wait_replayed(fake, key, how)
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()), b"END\r\n", how)
        self.assertLess(time.monotonic() - changed, self.MIGRATION_MS / 1000.0,
                        "the reads must happen inside the window (slow machine?)")

    def test_a_failed_move_delete_is_replayed_not_forgotten(self):
        # A migration read moves the key (copy to the new owner, then md at the previous
        # one); an md that fails must not leave the old copy for a later ring change to serve.
        fake, keys, changed = self.scale_out_from_a_stand_in()
        for how, key in keys.items():
            self.fail_next_delete(fake, key, how)
            self.assertEqual(self.client.request(b"get %s\r\n" % key.encode()),
                             b"VALUE %s 5 3\r\nold\r\nEND\r\n" % key.encode(), how)
            self.wait_replayed(fake, key, how)
            self.assertEqual(holders(self.servers[3:], key), ["a-3"], how)
        self.assertLess(time.monotonic() - changed, self.MIGRATION_MS / 1000.0,
                        "the reads must happen inside the window (slow machine?)")


def shared_zone_b_yaml(a_main, a_p2, b, migration_ms, with_b=True):
    """Pools main ("m:") and p2 ("s:"), zone a each on its own server, zone b on the same
    server `b` in both pools."""
    pools = []
    for name, a in [("main", a_main), ("p2", a_p2)]:
        zones = {"a": [("%s-a" % name, a)]}
        if with_b:
            zones["b"] = [("shared-b", b)]
        pools.append(pool_lines(name, zones, migration_ms=migration_ms))
    return topology_yaml(pools, [("m:", "main"), ("s:", "p2")])


class SharedServerAbsenceTest(KeyMoverBase):
    """Found by review (r3): a returning zone's server shared by two pools."""
    MIGRATION_MS = 30000

    def test_a_shared_server_back_is_held_until_every_pool_purged_it(self):
        # Zone b (one server, in pools main and p2) leaves and comes back. main's crawl purges
        # main's keys on it; p2's crawl is still to come (another proxy holds its lease, say).
        # p2's keys on the server are the old ones: the server must stay held for them.
        import hashlib
        a_main, a_p2, shared = self.memcached(), self.memcached(), self.memcached()
        state = {"b": True}
        self.text = lambda: shared_zone_b_yaml(a_main, a_p2, shared, self.MIGRATION_MS,
                                               state["b"])
        self.start_proxy(self.text(), zone="b", threads=1)
        keys = ["m:%d" % i for i in range(20)] + ["s:%d" % i for i in range(20)]
        self.set_keys(keys, b"v1")
        state["b"] = False
        self.change(None)
        self.set_keys(keys, b"v2")
        # p2's crawl of the returning server is "running elsewhere": its lease key, as every
        # proxy derives it (pool, zone, the zone's recent placements), is already there.
        placement = "shared-b*1"
        lease = "memzone:migration:" + hashlib.md5(
            ("p2\nb\n%s\n%s" % (placement, placement)).encode()).hexdigest()
        with shared.client() as c:
            self.assertEqual(c.request(b"ms %s 3 T60\r\nrun\r\n" % lease.encode()), b"HD\r\n")
        state["b"] = True
        self.change(None)
        wait_until(lambda: int(self.proxy.stats(self.client).get("proxy_zone_b_keys_purged", 0))
                   >= 20, timeout=15, what="main's purge of the shared server")
        time.sleep(0.5)
        self.assert_never_read(keys, b"v1")


class AbsentAtStartTest(KeyMoverBase):
    """Found by review (r3): a proxy that starts (restarts) while a zone is out of the topology."""
    MIGRATION_MS = 30000

    def test_a_zone_first_seen_after_start_is_not_read_before_its_purge(self):
        # Zone b went out (no ready server) with v1 on its servers; the clients wrote v2 to zone
        # a since, and zone b's proxy restarted meanwhile: it has never seen zone b. When b comes
        # back, nothing tells the proxy whether b is new or returning: it must purge b before it
        # reads it, as for a zone it saw leave.
        a = [("a-%d" % i, self.memcached()) for i in range(2)]
        b = [("b-%d" % i, self.memcached()) for i in range(2)]
        for key in KEYS:
            owner = b[ketama_index(key, [n for n, _ in b], named=True)][1]
            with owner.client() as c:
                self.assertEqual(c.request(b"set %s 5 0 2\r\nv1\r\n" % key.encode()),
                                 b"STORED\r\n")
        state = {"zones": {"a": a}}
        self.text = lambda: pool_yaml(state["zones"], migration_ms=self.MIGRATION_MS)
        self.start_proxy(self.text(), zone="b", threads=1)
        self.set_keys(KEYS, b"v2")
        state["zones"] = {"a": a, "b": b}
        self.change(None)
        self.assert_never_read(KEYS, b"v1")
        wait_until(lambda: all(self.raw(m, k) is None or self.raw(m, k)[2] != b"v1"
                               for k in KEYS for _, m in b), timeout=15,
                   what="zone b's copies from before to be purged")


class RepeatedReturnsTest(KeyMoverBase):
    """Found by review (r3): lease keys hash the zone's last 8 rings only."""
    MIGRATION_MS = 30000

    def test_a_zone_back_for_the_ninth_time_is_purged(self):
        # Zone b's readiness flaps: it leaves and comes back again and again, each return
        # crawled. From the 8th on, the zone's last 8 rings are all the same: each return
        # derived the lease key of the one before, took its "done" (10 s) for its own, and
        # lifted the hold without a purge.
        a = [("a-%d" % i, self.memcached()) for i in range(2)]
        b = [("b-%d" % i, self.memcached()) for i in range(2)]
        state = {"zones": {"a": a, "b": b}}
        self.text = lambda: pool_yaml(state["zones"], migration_ms=self.MIGRATION_MS)
        self.start_proxy(self.text(), zone="b", threads=1)

        def crawls_done():
            return int(self.proxy.stats(self.client).get("proxy_zone_b_move_crawls_done", 0))

        for i in range(9):
            done = crawls_done()
            self.set_keys(KEYS, b"v%d" % (2 * i))
            state["zones"] = {"a": a}
            self.change(None)
            self.set_keys(KEYS, b"v%d" % (2 * i + 1))
            state["zones"] = {"a": a, "b": b}
            self.change(None)
            self.assert_never_read(KEYS, b"v%d" % (2 * i))
            wait_until(lambda: crawls_done() >= done + 2, timeout=10,
                       what="the crawl of return %d" % (i + 1))


class ClientKeysLikeInternalOnesTest(KeyMoverBase):
    """Found by review (r3): the crawl skipped every key under memzone's internal prefixes."""
    MIGRATION_MS = 4000

    def test_a_client_key_under_an_internal_prefix_is_purged_like_any_other(self):
        # Clients may use any key: "memzone:sentinel:..." and "memzone:migration:..." ones that
        # are not the proxy's own sentinels and leases are theirs. mc-3 joins holding old
        # copies of such keys it is about to own: they must be purged, not served.
        servers = [(n, self.memcached()) for n in self.NAMES3]
        self.start(servers)
        candidates = ["memzone:sentinel:user%d" % i for i in range(200)] + \
                     ["memzone:migration:user%d" % i for i in range(200)]
        keys = [k for k in candidates if ketama_index(k, self.NAMES4, named=True) == 3]
        self.assertTrue(any(k.startswith("memzone:sentinel:") for k in keys))
        self.assertTrue(any(k.startswith("memzone:migration:") for k in keys))
        self.set_keys(keys, b"v2")
        servers.append(("mc-3", self.newcomer_holding(keys, b"old")))
        self.wait_window_end(self.change(servers))
        self.assert_never_read(keys, b"old")


if __name__ == "__main__":
    unittest.main()
