"""Backends that die, stall or talk nonsense: every client request is still answered within
its timeout, with memcached's SERVER_ERROR for the keys that could not be served."""
import os
import signal
import subprocess
import threading
import time
import unittest

from fake_backend import FakeBackend
from harness import PROXY, Memcached, Proxy, free_port, ketama_server, topology

REQUEST_MS = 250
# A reply may wait for the request timeout plus scheduling slack; never longer.
ANSWER_BOUND_S = REQUEST_MS / 1000 + 0.75


def fast_health(**extra):
    opts = {"timeouts": "{connectMs: 200, requestMs: %d}" % REQUEST_MS,
            "health": "{failureLimit: 2, downRetryMs: 100, maxDownRetryMs: 400}"}
    opts.update(extra)
    return opts


class LoadThread(threading.Thread):
    """Sends get/set round trips on its own connection and records how long each took."""

    def __init__(self, proxy, keys, duration):
        super().__init__(daemon=True)
        self.proxy, self.keys, self.duration = proxy, keys, duration
        self.slowest = 0.0
        self.errors = 0
        self.ok = 0
        self.failure = None

    def run(self):
        try:
            with self.proxy.client(timeout=5) as c:
                end = time.monotonic() + self.duration
                i = 0
                while time.monotonic() < end:
                    k = self.keys[i % len(self.keys)]
                    i += 1
                    t0 = time.monotonic()
                    if i % 2:
                        reply = c.request(b"set %s 0 0 1\r\nv\r\n" % k.encode())
                        good = reply == b"STORED\r\n"
                    else:
                        reply = c.request(b"get %s\r\n" % k.encode())
                        good = reply.startswith(b"VALUE") or reply == b"END\r\n"
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                    if good:
                        self.ok += 1
                    elif reply.startswith(b"SERVER_ERROR"):
                        self.errors += 1
                    else:
                        raise AssertionError("unexpected reply %r" % reply)
        except Exception as e:  # reported by the test thread
            self.failure = e


class BackendFailureTest(unittest.TestCase):
    def setUp(self):
        self.servers = [Memcached().start() for _ in range(3)]
        self.addresses = [s.address for s in self.servers]
        self.proxy = Proxy(topology({"a": self.addresses}, **fast_health())).start()
        self.keys = ["load-%d" % i for i in range(300)]
        self.victim_keys = [k for k in self.keys if ketama_server(k, self.addresses) == 1]
        self.safe_keys = [k for k in self.keys if ketama_server(k, self.addresses) != 1]

    def tearDown(self):
        self.proxy.stop()
        for s in self.servers:
            s.kill()

    def run_load_with(self, action, duration=3.0, threads=4):
        load = [LoadThread(self.proxy, self.keys, duration) for _ in range(threads)]
        for t in load:
            t.start()
        time.sleep(0.5)
        action()
        for t in load:
            t.join(timeout=duration + 10)
            self.assertFalse(t.is_alive(), "a client hung")
            self.assertIsNone(t.failure, t.failure)
            self.assertLess(t.slowest, ANSWER_BOUND_S, "a request waited %.3fs" % t.slowest)
        return load

    def assert_safe_keys_served(self):
        with self.proxy.client() as c:
            for k in self.safe_keys[:50]:
                self.assertEqual(c.request(b"set %s 0 0 2\r\nok\r\n" % k.encode()), b"STORED\r\n")

    def test_sigkill_mid_load(self):
        load = self.run_load_with(self.servers[1].kill)
        self.assertGreater(sum(t.errors for t in load), 0)
        self.assertGreater(sum(t.ok for t in load), 0)
        self.assert_safe_keys_served()
        with self.proxy.client() as c:
            t0 = time.monotonic()
            reply = c.request(b"get %s\r\n" % self.victim_keys[0].encode())
            self.assertTrue(reply.startswith(b"SERVER_ERROR backend"), reply)
            self.assertLess(time.monotonic() - t0, 0.1, "a marked-down server must fail fast")
        stats = self.proxy.stats()
        self.assertGreaterEqual(int(stats["proxy_backend_mark_down_events"]), 1)
        # Bring it back on the same port: a probe restores it.
        self.servers[1] = Memcached(port=self.servers[1].port).start()
        deadline = time.monotonic() + 5
        with self.proxy.client() as c:
            while time.monotonic() < deadline:
                if c.request(b"set %s 0 0 1\r\nx\r\n" % self.victim_keys[0].encode()) == b"STORED\r\n":
                    break
                time.sleep(0.05)
            else:
                self.fail("server did not come back within 5s")

    def test_sigstop_mid_load(self):
        load = self.run_load_with(self.servers[1].pause)
        self.assertGreater(sum(t.errors for t in load), 0)
        self.assert_safe_keys_served()
        self.servers[1].resume()
        deadline = time.monotonic() + 5
        with self.proxy.client() as c:
            while time.monotonic() < deadline:
                if c.request(b"get %s\r\n" % self.victim_keys[0].encode()) in (b"END\r\n",) or \
                        c.request(b"get %s\r\n" % self.victim_keys[0].encode()).startswith(b"VALUE"):
                    break
                time.sleep(0.05)
            else:
                self.fail("stopped server was not used again within 5s of SIGCONT")

    def test_multi_get_with_a_dead_server_returns_the_live_keys(self):
        with self.proxy.client() as c:
            for k in self.keys[:30]:
                c.request(b"set %s 0 0 1\r\nv\r\n" % k.encode())
            self.servers[1].kill()
            t0 = time.monotonic()
            reply = c.request(("get " + " ".join(self.keys[:30]) + "\r\n").encode())
            self.assertLess(time.monotonic() - t0, ANSWER_BOUND_S)
            live = [k for k in self.keys[:30] if ketama_server(k, self.addresses) != 1]
            self.assertEqual(reply.count(b"VALUE "), len(live))
            self.assertTrue(reply.endswith(b"END\r\n"))


class MisbehavingBackendTest(unittest.TestCase):
    def run_against(self, behaviour, expect_prefix):
        fake = FakeBackend(behaviour)
        proxy = Proxy(topology({"a": [fake.address]}, **fast_health())).start()
        try:
            with proxy.client() as c:
                t0 = time.monotonic()
                reply = c.request(b"get k\r\n")
                self.assertTrue(reply.startswith(expect_prefix), reply)
                self.assertLess(time.monotonic() - t0, ANSWER_BOUND_S)
                # Pipelined requests behind it fail too, each exactly once, in order.
                c.send(b"get a\r\nget b\r\nset c 0 0 1\r\nx\r\n")
                for _ in range(3):
                    self.assertTrue(c.read_reply().startswith(b"SERVER_ERROR"))
                self.assertTrue(c.request(b"version\r\n").startswith(b"VERSION"))
        finally:
            proxy.stop()
            fake.stop()

    def test_garbage_reply(self):
        self.run_against(lambda req: b"HELLO THERE\r\n", b"SERVER_ERROR backend desync")

    def test_silent_backend_times_out(self):
        self.run_against(lambda req: b"", b"SERVER_ERROR backend timeout")

    def test_backend_closes_mid_reply(self):
        self.run_against(lambda req: None, b"SERVER_ERROR backend disconnected")

    def test_half_a_value_then_close(self):
        fake = FakeBackend(lambda req: b"VA 10 %s\r\nabc" % req.split()[-1])
        proxy = Proxy(topology({"a": [fake.address]}, **fast_health())).start()
        try:
            with proxy.client() as c:
                reply = c.request(b"get k\r\n")
                self.assertTrue(reply.startswith(b"SERVER_ERROR backend timeout"), reply)
        finally:
            proxy.stop()
            fake.stop()

    def test_refused_connection(self):
        port = free_port()
        # No idle health check: the connect at start-up and the request are the only attempts.
        proxy = Proxy(topology({"a": ["127.0.0.1:%d" % port]}, **fast_health(
            health="{failureLimit: 2, downRetryMs: 100, maxDownRetryMs: 400, checkIntervalMs: 0}"))).start()
        try:
            with proxy.client() as c:
                self.assertEqual(c.request(b"get k\r\n"), b"SERVER_ERROR backend connect failed\r\n")
        finally:
            proxy.stop()


class ClientBehaviourTest(unittest.TestCase):
    def setUp(self):
        self.server = Memcached().start()
        self.proxy = Proxy(topology({"a": [self.server.address]})).start()

    def tearDown(self):
        self.proxy.stop()
        self.server.kill()

    def test_client_disconnect_mid_value(self):
        watcher = self.proxy.client()
        self.addCleanup(watcher.close)
        before = 1  # the watcher itself; earlier connections may still be closing
        for _ in range(20):
            c = self.proxy.client()
            c.send(b"set half 0 0 100000\r\n" + b"x" * 5000)
            c.close()
            c = self.proxy.client()
            c.send(b"get a b c\r\n")  # closes with replies pending
            c.close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and int(self.proxy.stats(watcher)["curr_connections"]) > before:
            time.sleep(0.05)
        self.assertEqual(int(self.proxy.stats(watcher)["curr_connections"]), before)
        with self.proxy.client() as c:
            self.assertEqual(c.request(b"get half\r\n"), b"END\r\n")

    def test_slow_reader_is_bounded_not_buffered_forever(self):
        def rss_kib():
            with open("/proc/%d/status" % self.proxy.proc.pid) as status:
                return int(status.read().split("VmRSS:")[1].split()[0])

        with self.proxy.client() as c:
            c.request(b"set big 0 0 500000\r\n" + b"y" * 500000 + b"\r\n")
            baseline = rss_kib()  # growth, not absolute size: sanitizer builds start large
            # Ask for far more than we read; the proxy must stop reading, not grow without bound.
            c.send(b"get big\r\n" * 400)
            time.sleep(1.0)
            growth = rss_kib() - baseline
            self.assertLess(growth, 64 * 1024, "proxy RSS grew by %d KiB" % growth)
            for _ in range(400):
                self.assertTrue(c.read_reply(timeout=10).startswith(b"VALUE big"))

    def test_sigterm_drains_in_flight_requests(self):
        c = self.proxy.client()
        self.addCleanup(c.close)
        batch = b"".join(b"set drain%d 0 0 1\r\nx\r\n" % i for i in range(2000))
        c.send(batch)
        self.proxy.proc.send_signal(signal.SIGTERM)
        for i in range(2000):
            self.assertEqual(c.read_reply(), b"STORED\r\n")
        self.assertTrue(c.closed_by_peer(timeout=5))
        self.assertEqual(self.proxy.proc.wait(timeout=10), 0)


class StartupErrorsTest(unittest.TestCase):
    def run_proxy(self, *args):
        return subprocess.run([PROXY] + list(args), capture_output=True, text=True, timeout=10)

    def test_bad_flags_exit_2_with_one_line(self):
        r = self.run_proxy("--bogus")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "memzone-proxy: unknown flag --bogus (see --help)\n")
        self.assertEqual(self.run_proxy("--threads", "x", "--config", "f").returncode, 2)

    def test_help_and_version(self):
        self.assertIn("usage: memzone-proxy", self.run_proxy("--help").stdout)
        self.assertRegex(self.run_proxy("--version").stdout, r"^memzone-proxy \d+\.\d+\.\d+\n$")

    def test_bad_topology_file_names_file_line_field(self):
        p = Proxy("pools:\n  - name: main\n    zones:\n      a: [\"not-an-address\"]\n")
        r = self.run_proxy("--listen", "127.0.0.1:%d" % free_port(), "--config", p.config)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:4: pools[0].zones.a[0]: bad server address" % p.config, r.stderr)

    def test_listen_failure_is_reported(self):
        server = Memcached().start()
        try:
            p = Proxy(topology({"a": [server.address]}))
            r = self.run_proxy("--listen", "127.0.0.1:%d" % server.port, "--config", p.config)
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot listen", r.stderr)
        finally:
            server.kill()



class ReloadTest(unittest.TestCase):
    def test_sighup_reloads_the_config_and_a_bad_file_keeps_the_old_one(self):
        first, second = Memcached().start(), Memcached().start()
        self.addCleanup(first.kill)
        self.addCleanup(second.kill)
        proxy = Proxy(topology({"a": [first.address]})).start()
        self.addCleanup(proxy.stop)
        v1 = proxy.stats()["proxy_topology_version"]
        proxy.write_topology(topology({"a": [second.address]}))
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while proxy.stats()["proxy_topology_version"] == v1 and time.monotonic() < deadline:
            time.sleep(0.02)
        v2 = proxy.stats()["proxy_topology_version"]
        self.assertNotEqual(v2, v1)
        with proxy.client() as c:
            self.assertEqual(c.request(b"set hup 0 0 1\r\nx\r\n"), b"STORED\r\n")
        with second.client() as c:
            self.assertEqual(c.request(b"get hup\r\n"), b"VALUE hup 0 1\r\nx\r\nEND\r\n")
        proxy.write_topology("pools: [oops\n")
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "rejected" not in proxy.logs() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIn("rejected; keeping topology %s" % v2, proxy.logs())
        self.assertEqual(proxy.stats()["proxy_topology_version"], v2)


if __name__ == "__main__":
    unittest.main()
