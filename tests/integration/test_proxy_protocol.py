"""Every command through the real proxy, compared byte for byte with real memcached."""
import re
import socket
import time
import unittest

from harness import Memcached, Proxy, ketama_server, topology


def normalize(reply):
    # cas values differ between two servers; everything else must be identical.
    reply = re.sub(rb"^(VALUE \S+ \d+ \d+) \d+\r\n", rb"\1 CAS\r\n", reply, flags=re.M)
    reply = re.sub(rb"( c)\d+", rb"\1CAS", reply)
    reply = re.sub(rb"cas=\d+", b"cas=CAS", reply)
    reply = re.sub(rb"la=\d+", b"la=N", reply)
    return reply


class ProxyProtocolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.servers = [Memcached().start() for _ in range(3)]
        cls.reference = Memcached().start()
        cls.addresses = [s.address for s in cls.servers]
        cls.proxy = Proxy(topology({"zone-a": cls.addresses}, allowFlushAll="false")).start()

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        for s in cls.servers + [cls.reference]:
            s.kill()

    def setUp(self):
        self.ref = self.reference.client()
        self.via = self.proxy.client()

    def tearDown(self):
        self.ref.close()
        self.via.close()

    def both(self, data):
        a = self.ref.request(data)
        b = self.via.request(data)
        self.assertEqual(normalize(b), normalize(a), "request %r" % data)
        return b

    def test_text_commands_match_memcached(self):
        p = "t%d:" % time.monotonic_ns()
        script = [
            b"get %sa\r\n", b"set %sa 5 0 3\r\nabc\r\n", b"get %sa\r\n", b"gets %sa\r\n",
            b"add %sa 0 0 1\r\nx\r\n", b"add %sb 0 0 1\r\nx\r\n", b"replace %sb 7 0 2\r\nyz\r\n",
            b"replace %snone 0 0 1\r\nx\r\n", b"append %sb 0 0 2\r\n++\r\n", b"prepend %sb 0 0 2\r\n--\r\n",
            b"get %sb\r\n", b"append %snone 0 0 1\r\nx\r\n", b"touch %sa 100\r\n", b"touch %snone 1\r\n",
            b"gat 100 %sa\r\n", b"gats 100 %sa\r\n", b"delete %sa\r\n", b"delete %sa\r\n", b"get %sa\r\n",
            b"set %sn 0 0 2\r\n10\r\n", b"incr %sn 5\r\n", b"decr %sn 100\r\n", b"incr %snone 1\r\n",
            b"incr %sb 1\r\n", b"delete %sn 0\r\n", b"set %sempty 0 0 0\r\n\r\n", b"get %sempty\r\n",
            b"cas %snone 0 0 1 1\r\nx\r\n",
        ]
        for template in script:
            self.both(template.replace(b"%s", p.encode()))

    def test_cas_round_trip(self):
        k = ("cas%d" % time.monotonic_ns()).encode()
        for c in (self.ref, self.via):
            c.request(b"set " + k + b" 0 0 1\r\na\r\n")
            cas = c.request(b"gets " + k + b"\r\n").split(b"\r\n")[0].split()[4]
            self.assertEqual(c.request(b"cas " + k + b" 0 0 1 " + cas + b"\r\nb\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"cas " + k + b" 0 0 1 " + cas + b"\r\nc\r\n"), b"EXISTS\r\n")

    def test_meta_commands_match_memcached(self):
        p = ("m%d:" % time.monotonic_ns()).encode()
        script = [
            b"mg %sa v\r\n", b"ms %sa 3 T100 F9\r\nabc\r\n", b"mg %sa v f t s k O55\r\n", b"mg %sa\r\n",
            b"ms %sa 2 MA\r\n++\r\n", b"mg %sa v\r\n", b"ms %sa 1 ME\r\nx\r\n", b"md %sa\r\n", b"md %sa\r\n",
            b"ms %sn 1\r\n5\r\n", b"ma %sn\r\n", b"ma %sn v D10\r\n", b"ma %sn v MD D3\r\n",
            b"ma %snone\r\n", b"ma %snone N0 J7 v\r\n", b"me %sn\r\n", b"mg %sa v v\r\n",
            b"mn\r\n",
        ]
        for template in script:
            self.both(template.replace(b"%s", p))

    def test_meta_quiet_mode_and_noop_terminator(self):
        p = ("q%d:" % time.monotonic_ns()).encode()
        batch = (b"mg %smiss v q\r\n" b"ms %sk 2 q\r\nhi\r\n" b"mg %sk v q k O1\r\n" b"md %smiss q\r\n"
                 b"md %sk q\r\n" b"ms %sk 2 q I\r\nho\r\n" b"ms %sn 1 q\r\n7\r\n" b"ma %sn q\r\n"
                 b"ma %sn q v\r\n" b"mg %sn v q\r\n" b"mn\r\n").replace(b"%s", p)
        self.ref.send(batch)
        self.via.send(batch)
        a = self.ref.read_until(b"MN\r\n")
        b = self.via.read_until(b"MN\r\n")
        self.assertEqual(b, a)
        self.assertIn(b"VA 2 k", b)

    def test_noreply_everywhere(self):
        k = ("nr%d" % time.monotonic_ns()).encode()
        batch = (b"set K 0 0 1 noreply\r\n1\r\n" b"add K2 0 0 1 noreply\r\n2\r\n" b"replace K 0 0 1 noreply\r\n3\r\n"
                 b"append K 0 0 1 noreply\r\n4\r\n" b"prepend K 0 0 1 noreply\r\n5\r\n" b"incr K 1 noreply\r\n"
                 b"decr K 1 noreply\r\n" b"touch K 10 noreply\r\n" b"delete K2 noreply\r\n"
                 b"verbosity 1 noreply\r\n" b"flush_all noreply\r\n" b"get K K2\r\n").replace(b"K", k)
        self.via.send(batch)
        self.assertEqual(self.via.read_reply(), b"VALUE " + k + b" 0 3\r\n534\r\nEND\r\n")

    def test_multi_get_across_three_servers_in_client_order(self):
        keys = ["mg%d-%d" % (time.monotonic_ns(), i) for i in range(60)]
        owners = {ketama_server(k, self.addresses) for k in keys}
        self.assertEqual(owners, {0, 1, 2})  # the keys really span all three servers
        for i, k in enumerate(keys):
            if i % 3:
                self.assertEqual(self.via.request(b"set %s %d 0 %d\r\n%s\r\n" % (k.encode(), i, len(k), k.encode())), b"STORED\r\n")
        ask = keys + keys[:5]  # duplicates come back twice, like memcached
        reply = self.via.request(("get " + " ".join(ask) + "\r\n").encode())
        expected = b"".join(b"VALUE %s %d %d\r\n%s\r\n" % (k.encode(), keys.index(k), len(k), k.encode())
                            for k in ask if keys.index(k) % 3)
        self.assertEqual(reply, expected + b"END\r\n")
        gets = self.via.request(("gets " + " ".join(keys) + "\r\n").encode())
        self.assertEqual(gets.count(b"VALUE "), 40)

    def test_keys_land_on_the_libmemcached_ketama_server(self):
        clients = [s.client() for s in self.servers]
        try:
            for i in range(200):
                k = "place%d-%d" % (time.monotonic_ns(), i)
                self.via.request(b"set %s 0 0 1\r\nx\r\n" % k.encode())
                owner = ketama_server(k, self.addresses)
                for idx, c in enumerate(clients):
                    hit = c.request(b"get %s\r\n" % k.encode()) != b"END\r\n"
                    self.assertEqual(hit, idx == owner, k)
        finally:
            for c in clients:
                c.close()

    def test_one_mebibyte_values(self):
        k = ("big%d" % time.monotonic_ns()).encode()
        value = bytes((i * 7) % 251 for i in range(1024 * 1024 - 512))  # memcached's item overhead
        self.assertEqual(self.via.request(b"set %s 3 0 %d\r\n" % (k, len(value)) + value + b"\r\n"), b"STORED\r\n")
        reply = self.via.request(b"get %s\r\n" % k, timeout=10)
        self.assertEqual(reply, b"VALUE %s 3 %d\r\n" % (k, len(value)) + value + b"\r\nEND\r\n")

    def test_value_over_limit_is_refused_and_connection_survives(self):
        value = b"x" * (1024 * 1024 + 1)
        reply = self.via.request(b"set over 0 0 %d\r\n" % len(value) + value + b"\r\n")
        self.assertEqual(reply, b"SERVER_ERROR object too large for cache\r\n")
        self.assertEqual(self.via.request(b"version\r\n")[:8], b"VERSION ")

    def test_thousand_pipelined_requests_answered_in_order(self):
        p = "pipe%d-" % time.monotonic_ns()
        batch = b"".join(b"set %s%d 0 0 %d\r\n%d\r\n" % (p.encode(), i, len(str(i)), i) for i in range(500))
        batch += b"".join(b"get %s%d\r\n" % (p.encode(), i) for i in range(500))
        self.via.send(batch)
        for i in range(500):
            self.assertEqual(self.via.read_reply(), b"STORED\r\n")
        for i in range(500):
            v = str(i).encode()
            self.assertEqual(self.via.read_reply(), b"VALUE %s%d 0 %d\r\n%s\r\nEND\r\n" % (p.encode(), i, len(v), v))

    def test_errors_match_memcached_and_connection_survives(self):
        long_key = b"k" * 251
        for bad in [b"bogus\r\n", b"get " + long_key + b"\r\n", b"set k 0 0 -1\r\n", b"set k x 0 1\r\n",
                    b"incr k abc\r\n", b"delete k 5\r\n", b"touch k\r\n", b"mg\r\n", b"ms k\r\n",
                    b"\r\n", b"set k 0 0 2\r\nabcd\r\n"]:
            self.both(bad)
            self.both(b"version\r\n" if False else b"get after-error\r\n")

    def test_garbage_line_too_long_closes_like_memcached(self):
        # Over 2048 bytes without a newline and not a get: memcached hangs up silently.
        for target in (self.reference, self.proxy):
            with target.client() as c:
                c.send(b"x" * 5000)
                self.assertTrue(c.closed_by_peer())
                self.assertEqual(c.buf, b"")
        # The same junk with its newline, sent at once, is one bad command to both.
        self.both(b"x" * 3000 + b"\r\n")
        self.assertEqual(self.via.request(b"get fine\r\n"), b"END\r\n")

    def test_long_get_lines_are_served(self):
        # memcached serves get lines of any length; so does the proxy, up to 8 MiB. A 2 MB
        # line of 250,000 keys takes memcached itself about 0.35 s: give the backends time.
        proxy = Proxy(topology({"zone-a": self.addresses},
                               timeouts="{connectMs: 200, requestMs: 5000}")).start()
        try:
            for count in (20000, 250000):  # about 130 KB and 2 MB
                line = b"get " + b" ".join(b"k%d" % i for i in range(count)) + b"\r\n"
                with proxy.client(timeout=20) as c:
                    reply = c.request(line, timeout=20)
                with self.reference.client(timeout=20) as c:
                    expected = c.request(line, timeout=20)
                self.assertEqual(reply, expected, "get line of %d bytes" % len(line))
        finally:
            proxy.stop()

    def test_binary_garbage_never_crashes(self):
        import random
        rng = random.Random(7)
        for _ in range(20):
            with self.proxy.client(timeout=2) as c:
                c.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) + b"\r\n")
                c.closed_by_peer(timeout=0.2)
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"get ok\r\n"), b"END\r\n")

    def test_flush_all_refused_unless_allowed(self):
        self.assertTrue(self.via.request(b"flush_all\r\n").startswith(b"CLIENT_ERROR flush_all is disabled"))

    def test_version_verbosity_stats_quit(self):
        self.assertTrue(self.via.request(b"version\r\n").startswith(b"VERSION 1.6.0-memzone-"))
        self.assertEqual(self.via.request(b"verbosity 1\r\n"), b"OK\r\n")
        stats = self.via.request(b"stats\r\n")
        for name in [b"pid", b"uptime", b"curr_connections", b"cmd_get", b"get_hits", b"bytes_read"]:
            self.assertRegex(stats, rb"STAT " + name + rb" \S+\r\n")
        self.assertTrue(stats.endswith(b"END\r\n"))
        self.assertEqual(self.via.request(b"stats nosuchgroup\r\n"), b"ERROR\r\n")
        self.via.send(b"get before-quit\r\nquit\r\nget after-quit\r\n")
        self.assertEqual(self.via.read_reply(), b"END\r\n")
        self.assertTrue(self.via.closed_by_peer())
        self.assertEqual(self.via.buf, b"")


class FlushAllAllowedTest(unittest.TestCase):
    def test_flush_all_reaches_every_server(self):
        servers = [Memcached().start() for _ in range(3)]
        proxy = Proxy(topology({"a": [s.address for s in servers]}, allowFlushAll="true")).start()
        try:
            with proxy.client() as c:
                for i in range(30):
                    c.request(b"set f%d 0 0 1\r\nx\r\n" % i)
                self.assertEqual(c.request(b"flush_all\r\n"), b"OK\r\n")
                self.assertEqual(c.request(b"get " + b" ".join(b"f%d" % i for i in range(30)) + b"\r\n"), b"END\r\n")
        finally:
            proxy.stop()
            for s in servers:
                s.kill()


if __name__ == "__main__":
    unittest.main()
