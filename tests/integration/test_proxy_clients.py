"""Real memcached client libraries work unchanged through memzone-proxy.

pymemcache (Debian python3-pymemcache) exercises the text protocol the way applications
do; libmemcached's `memccapable` is memcached's own protocol conformance checker.
"""
import shutil
import subprocess
import unittest

from pymemcache.client.base import Client as PyClient
from pymemcache.client.hash import HashClient

from harness import Memcached, Proxy, topology


class PymemcacheTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.servers = [Memcached().start() for _ in range(3)]
        cls.proxy = Proxy(topology({"a": [s.address for s in cls.servers]})).start()

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        for s in cls.servers:
            s.kill()

    def client(self):
        c = PyClient(("127.0.0.1", self.proxy.port), connect_timeout=5, timeout=5)
        self.addCleanup(c.close)
        return c

    def test_set_get_delete(self):
        c = self.client()
        self.assertTrue(c.set("py:a", b"alpha", expire=60))
        self.assertEqual(c.get("py:a"), b"alpha")
        self.assertTrue(c.delete("py:a"))
        self.assertIsNone(c.get("py:a"))
        self.assertFalse(c.delete("py:a", noreply=False))

    def test_get_many_across_servers(self):
        c = self.client()
        values = {"many:%d" % i: b"v%d" % i for i in range(200)}
        self.assertEqual(c.set_many(values, noreply=False), [])
        got = c.get_many(list(values) + ["many:absent"])
        self.assertEqual(got, values)

    def test_add_replace_append_prepend(self):
        c = self.client()
        c.delete("py:b")
        self.assertTrue(c.add("py:b", b"1", noreply=False))
        self.assertFalse(c.add("py:b", b"2", noreply=False))
        self.assertTrue(c.replace("py:b", b"3", noreply=False))
        self.assertTrue(c.append("py:b", b"4", noreply=False))
        self.assertTrue(c.prepend("py:b", b"2", noreply=False))
        self.assertEqual(c.get("py:b"), b"234")

    def test_incr_decr(self):
        c = self.client()
        c.set("py:n", b"10")
        self.assertEqual(c.incr("py:n", 5), 15)
        self.assertEqual(c.decr("py:n", 20), 0)
        self.assertIsNone(c.incr("py:absent", 1))

    def test_gets_cas(self):
        c = self.client()
        c.set("py:c", b"x")
        value, token = c.gets("py:c")
        self.assertEqual(value, b"x")
        self.assertTrue(c.cas("py:c", b"y", token, noreply=False))
        self.assertFalse(c.cas("py:c", b"z", token, noreply=False))
        self.assertEqual(c.get("py:c"), b"y")

    def test_touch_and_flags(self):
        c = self.client()
        c.set("py:t", b"v", expire=100, flags=42)
        self.assertTrue(c.touch("py:t", 200, noreply=False))
        with self.proxy.client() as raw:
            self.assertEqual(raw.request(b"get py:t\r\n"), b"VALUE py:t 42 1\r\nv\r\nEND\r\n")

    def test_stats_and_version(self):
        c = self.client()
        self.assertIn(b"memzone", c.version())
        self.assertIn(b"curr_connections", c.stats())

    def test_client_side_hashing_over_two_proxies_agrees(self):
        # Applications that shard across proxies with HashClient still see one cache.
        second = Proxy(topology({"a": [s.address for s in self.servers]})).start()
        self.addCleanup(second.stop)
        hc = HashClient([("127.0.0.1", self.proxy.port), ("127.0.0.1", second.port)],
                        connect_timeout=5, timeout=5)
        self.addCleanup(hc.close)
        for i in range(50):
            # noreply=False: pymemcache defaults to noreply, which would race the reads below.
            self.assertTrue(hc.set("hc:%d" % i, b"%d" % i, noreply=False))
        direct = self.client()
        for i in range(50):
            self.assertEqual(direct.get("hc:%d" % i), b"%d" % i)


@unittest.skipUnless(shutil.which("memccapable"), "libmemcached-tools not installed")
class MemccapableTest(unittest.TestCase):
    def test_ascii_conformance_through_proxy(self):
        server = Memcached().start()
        self.addCleanup(server.kill)
        # memccapable starts with flush_all, which the proxy refuses unless allowed.
        proxy = Proxy(topology({"a": [server.address]}, allowFlushAll="true")).start()
        self.addCleanup(proxy.stop)
        r = subprocess.run(["memccapable", "-a", "-h", "127.0.0.1", "-p", str(proxy.port)],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("fail", r.stdout.lower())


if __name__ == "__main__":
    unittest.main()
