"""Bounded memory and connections under slow, idle and hostile clients (issue 12).

Real memcached, the real proxy. The hostile clients run in child processes (one event loop
each, no threads), so the well-behaved clients' latency is measured without them sharing
an interpreter lock. Under a sanitizer build (MEMZONE_SANITIZE or ASAN_OPTIONS set) the
counts are smaller and RSS bounds are not asserted (ASan's shadow memory and quarantine
are not the proxy's); what is checked there is behaviour and a clean, leak-free exit.
"""
import multiprocessing
import os
import resource
import selectors
import socket
import time
import unittest

from harness import Memcached, Proxy, topology

SANITIZE = bool(os.environ.get("MEMZONE_SANITIZE") or os.environ.get("ASAN_OPTIONS"))
MIB = 1 << 20
# Fixed overhead the slow-reader test allows above --max-buffer-memory: the idle RSS, the
# large-reply allowance in flight (1/8 of each worker's share), the per-worker read buffers,
# connection objects and allocator slack.
RSS_OVERHEAD = 48 * MIB
VALUE_SIZE = 1000 * 1000


def raise_fd_limit(want):
    """Raises this process's open-file soft limit towards `want`; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, want)
    target = min(hard, max(soft, want))
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def kill_if_running(proxy):
    """Cleanup for a test that failed before stopping its proxy."""
    if proxy.proc and proxy.proc.poll() is None:
        proxy.proc.kill()
        proxy.proc.wait(timeout=10)
        proxy.log.close()


def check_clean_exit(test, proxy):
    rc = proxy.stop()
    logs = proxy.logs()
    test.assertEqual(rc, 0, logs[-3000:])
    test.assertNotIn("LeakSanitizer", logs)
    test.assertNotIn("AddressSanitizer", logs)
    test.assertNotIn("runtime error", logs)


def slow_readers(port, count, requests, keys, read_rate, stop, ready):
    """`count` connections that each pipeline `requests` gets of 1 MB values, then read
    `read_rate` bytes per second each, until `stop` is set."""
    raise_fd_limit(count + 256)
    socks = []
    for i in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"".join(b"get big:%d\r\n" % ((i + j) % keys) for j in range(requests)))
        s.setblocking(False)
        socks.append(s)
    ready.set()
    tick = 0.1
    while not stop.is_set():
        started = time.monotonic()
        for s in socks:
            try:
                s.recv(max(1, int(read_rate * tick)))
            except OSError:
                pass
        time.sleep(max(0.0, tick - (time.monotonic() - started)))
    for s in socks:
        s.close()


def good_clients(port, count, warm, seconds, pace, warmed, start, results):
    """`count` request/response clients alternating a small set and a get of what they set.
    They connect and warm up (`warm` pairs: the proxy learns their replies are small), run
    `seconds` alone, set `warmed`, wait for `start`, then run `seconds` again, pausing `pace`
    seconds between rounds. Puts (latencies alone, latencies with start set, failures) on
    `results`."""
    conns = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(s)
    failures = []

    def roundtrip(s, i, n):
        key = b"small:%d:%d" % (i, n % 7)
        value = b"v%08d" % n
        t0 = time.monotonic()
        s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        got = b""
        while not got.endswith(b"\r\n"):
            got += s.recv(4096)
        t1 = time.monotonic()
        if got != b"STORED\r\n":
            failures.append(got)
        s.sendall(b"get %s\r\n" % key)
        want = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)
        got = b""
        while not (got.endswith(b"END\r\n") or (got.endswith(b"\r\n") and not got.startswith(b"VALUE"))):
            got += s.recv(4096)
        t2 = time.monotonic()
        if got != want:
            failures.append(got)
        return t1 - t0, t2 - t1

    phase = ["warm-up"]
    n = 0

    def run():
        nonlocal n
        latencies = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for i, s in enumerate(conns):
                latencies.extend(roundtrip(s, i, n))
            n += 1
            time.sleep(pace)
        return latencies

    try:
        for n in range(warm):
            for i, s in enumerate(conns):
                roundtrip(s, i, n)
        phase[0] = "alone"
        alone = run()
        warmed.set()
        start.wait(60)
        phase[0] = "with slow readers"
        results.put((alone, run(), failures))
    except Exception as e:  # reported, not swallowed: the parent asserts on it
        results.put(([], [], ["%s: %s (phase %s)" % (type(e).__name__, e, phase[0])]))
    finally:
        for s in conns:
            s.close()


class SlowReadersTest(unittest.TestCase):
    SLOW = 200 if SANITIZE else 1000
    BUDGET = 64 * MIB

    def setUp(self):
        raise_fd_limit(self.SLOW + 512)
        self.mc = Memcached().start()
        self.addCleanup(self.mc.kill)
        # Timeouts the test is not about: a shared, loaded CI machine may stall a process for
        # longer than the default 250 ms, and this test is about memory and latency.
        self.proxy = Proxy(topology({"a": [self.mc.address]},
                                    timeouts="{connectMs: 1000, requestMs: 2000}"),
                           threads=2, extra_args=["--max-buffer-memory", "64M"]).start()
        self.addCleanup(kill_if_running, self.proxy)
        value = b"x" * VALUE_SIZE
        with self.mc.client() as c:
            for i in range(10):
                c.send(b"set big:%d 0 0 %d\r\n%s\r\n" % (i, VALUE_SIZE, value))
                self.assertEqual(c.read_line(), b"STORED\r\n")

    def test_slow_readers_stay_within_the_budget_and_others_keep_flowing(self):
        ctx = multiprocessing.get_context("fork")
        pid = self.proxy.proc.pid
        stats_client = self.proxy.client()
        self.proxy.stats(stats_client)  # one request, so the baseline has its buffers
        time.sleep(0.5)
        baseline = rss(pid)

        warmed, start, stop, ready = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
        results = ctx.Queue()
        # Established clients first (a client pool), then the slow readers arrive.
        good = ctx.Process(target=good_clients,
                           args=(self.proxy.port, 20, 8, 6 if not SANITIZE else 4, 0.005, warmed,
                                 start, results))
        good.start()
        self.addCleanup(good.kill)
        self.assertTrue(warmed.wait(60), "well-behaved clients did not warm up")
        slow = ctx.Process(target=slow_readers,
                           args=(self.proxy.port, self.SLOW, 50, 10, 1024, stop, ready))
        slow.start()
        self.addCleanup(slow.kill)
        self.assertTrue(ready.wait(60), "slow readers did not connect")
        start.set()

        peak, peak_buffered = 0, 0
        newcomer_checked = False
        started = time.monotonic()
        while good.is_alive() and results.empty():
            peak = max(peak, rss(pid))
            s = self.proxy.stats(stats_client)
            peak_buffered = max(peak_buffered, int(s["proxy_buffer_bytes"]))
            if not newcomer_checked and time.monotonic() - started > 2:
                # A client that connects while the slow readers hold the budget is served too:
                # its reply sizes are unknown, so its first get goes on credit, and once the
                # proxy has seen its values are small they flow like anyone's.
                newcomer_checked = True
                with self.proxy.client(timeout=10) as c:
                    for n in range(10):
                        value = b"new%d" % n
                        self.assertEqual(c.request(b"set newcomer 0 0 %d\r\n%s\r\n"
                                                   % (len(value), value)), b"STORED\r\n")
                        self.assertEqual(c.request(b"get newcomer\r\n"),
                                         b"VALUE newcomer 0 %d\r\n%s\r\nEND\r\n"
                                         % (len(value), value))
            time.sleep(0.1)
        alone, latencies, failures = results.get(timeout=30)
        good.join(10)
        during = self.proxy.stats(stats_client)
        if failures:
            print(during, self.proxy.logs()[-3000:])
        stop.set()
        slow.join(30)

        def p99(values):
            values = sorted(values)
            return values[int(len(values) * 0.99)] if values else float("inf")

        print("\n%d slow readers x 50 x 1 MB, --max-buffer-memory 64M: idle RSS %.1f MiB, "
              "peak RSS %.1f MiB, peak buffered %.1f MiB; 20 clients: p99 %.2f ms alone, "
              "%.2f ms (%d requests, max %.2f ms) with the slow readers; out-of-memory replies "
              "%s, throttled %s, cut off %s"
              % (self.SLOW, baseline / MIB, peak / MIB, peak_buffered / MIB, p99(alone) * 1000,
                 p99(latencies) * 1000, len(latencies), max(latencies or [0]) * 1000,
                 during["proxy_buffer_out_of_memory_replies"], during["proxy_buffer_throttled"],
                 during["proxy_buffer_cut_off"]))
        self.assertEqual(failures, [])
        self.assertGreater(len(latencies), 100)
        # Other clients' latency does not depend on the slow readers: p99 under 50 ms (1-3 ms
        # on a quiet machine; before issue 12, seconds). A loaded CI machine slows everything
        # alike, so the bound there is the same clients' p99 alone, times three; ASan copies
        # every large value several times slower, hence its wider bound.
        bound = 0.200 if SANITIZE else 0.050
        self.assertLess(p99(latencies), max(bound, 3 * p99(alone)))
        # The budget acted: slow readers were refused or throttled, not buffered.
        self.assertGreater(int(during["proxy_buffer_out_of_memory_replies"]) +
                           int(during["proxy_buffer_throttled"]), 0)
        # What the budget lets be buffered at most: each worker's share plus its large-reply
        # allowance (4 MiB here), the allowance once more for replies taken on credit until
        # they are refused, and what a busy backend connection keeps (up to 4 MiB).
        self.assertLessEqual(peak_buffered, self.BUDGET + 2 * (4 + 4 + 4) * MIB)
        if not SANITIZE:
            self.assertLess(peak, self.BUDGET + RSS_OVERHEAD,
                            "peak RSS %.1f MiB over 64 MiB + %d MiB" % (peak / MIB,
                                                                       RSS_OVERHEAD // MIB))

        # Gone: the buffers are freed and the pages go back (issue: within 2x idle + 64 MiB).
        self.assertTrue(wait_until(lambda: int(self.proxy.stats(stats_client)["proxy_buffer_bytes"])
                                   < 4 * MIB, 10), self.proxy.stats(stats_client))
        if not SANITIZE:
            self.assertTrue(wait_until(lambda: rss(pid) < 2 * baseline + 32 * MIB, 10),
                            "RSS %.1f MiB after the slow readers left (idle %.1f MiB)"
                            % (rss(pid) / MIB, baseline / MIB))
            time.sleep(2)  # two maintenance rounds: the pool trimmed, pages given back
            print("RSS after they left: %.1f MiB" % (rss(pid) / MIB))
        stats_client.close()
        check_clean_exit(self, self.proxy)


class ConnectionLimitsTest(unittest.TestCase):
    def setUp(self):
        self.mc = Memcached().start()
        self.addCleanup(self.mc.kill)

    def start_proxy(self, *args):
        proxy = Proxy(topology({"a": [self.mc.address]}), threads=2, extra_args=list(args))
        proxy.start()
        self.addCleanup(kill_if_running, proxy)
        return proxy

    def test_idle_connections_cost_little(self):
        count = 2000 if SANITIZE else 10000
        # The test holds one end of each connection, the proxy the other: both need the file
        # descriptors (the proxy raises its own limit to the hard one at start-up).
        count = min(count, raise_fd_limit(count + 256) - 256)
        proxy = self.start_proxy()
        pid = proxy.proc.pid
        with proxy.client() as c:
            self.assertEqual(c.request(b"set idle:k 0 0 1\r\nx\r\n"), b"STORED\r\n")
        time.sleep(0.3)
        before = rss(pid)
        socks = []
        sel = selectors.DefaultSelector()
        try:
            for _ in range(count):
                s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
                socks.append(s)
            # Each asks once, as a pooled client would have, then goes quiet.
            for s in socks:
                s.sendall(b"get idle:k\r\n")
            want = b"VALUE idle:k 0 1\r\nx\r\nEND\r\n"
            pending = {}
            for s in socks:
                s.setblocking(False)
                pending[s] = b""
                sel.register(s, selectors.EVENT_READ)
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1):
                    s = key.fileobj
                    pending[s] += s.recv(4096)
                    if pending[s] == want:
                        sel.unregister(s)
                        del pending[s]
            self.assertEqual(len(pending), 0, "%d connections got no reply" % len(pending))
            time.sleep(2.5)  # two maintenance rounds: what the burst pooled is freed
            stats = proxy.stats()
            self.assertEqual(int(stats["curr_connections"]), count + 1)
            after = rss(pid)
            per_connection = (after - before) / count
            print("\n%d idle connections: RSS %.1f -> %.1f MiB, %.0f bytes per connection; "
                  "buffered %s bytes" % (count, before / MIB, after / MIB, per_connection,
                                         stats["proxy_buffer_bytes"]))
            if not SANITIZE:
                self.assertLessEqual(per_connection, 2048)
            # Idle connections hold no buffers.
            self.assertLess(int(stats["proxy_buffer_client_input_bytes"]) +
                            int(stats["proxy_buffer_client_output_bytes"]), 64 * 1024)
        finally:
            sel.close()
            for s in socks:
                s.close()
        check_clean_exit(self, proxy)

    def test_max_connections_answers_like_memcached(self):
        proxy = self.start_proxy("--max-connections", "100")
        clients = [proxy.client() for _ in range(100)]
        try:
            for i, c in enumerate(clients):
                self.assertEqual(c.request(b"set limit:%d 0 0 1\r\n%d\r\n" % (i, i % 10)),
                                 b"STORED\r\n")
            extra = proxy.client()
            self.assertEqual(extra.read_line(timeout=5), b"ERROR Too many open connections\r\n")
            self.assertTrue(extra.closed_by_peer(timeout=5))
            extra.close()
            # The first hundred are untouched.
            for i, c in enumerate(clients):
                self.assertEqual(c.request(b"get limit:%d\r\n" % i),
                                 b"VALUE limit:%d 0 1\r\n%d\r\nEND\r\n" % (i, i % 10))
            # One leaves: a new connection gets its place (once the proxy saw it leave).
            clients.pop().close()
            refused = [1]

            def stats_ok():
                try:
                    with proxy.client() as c:
                        c.send(b"stats\r\n")
                        line = c.read_line(timeout=2)
                        if not line.startswith(b"STAT "):
                            refused[0] += line == b"ERROR Too many open connections\r\n"
                            return False
                        self.stats = line + c.read_until(b"END\r\n")
                        return True
                except (ConnectionError, TimeoutError, OSError):
                    return False

            self.assertTrue(wait_until(stats_ok, 5))
            text = self.stats.decode()
            self.assertIn("STAT rejected_connections %d\r\n" % refused[0], text)
            self.assertIn("STAT max_connections 100\r\n", text)
        finally:
            for c in clients:
                c.close()
        check_clean_exit(self, proxy)

    def test_slowloris_connections_are_closed_after_the_timeout(self):
        count = 100 if SANITIZE else 500
        raise_fd_limit(count + 256)
        proxy = self.start_proxy("--partial-request-timeout-ms", "2000")
        idle = proxy.client()  # complete requests only: never timed out
        self.assertEqual(idle.request(b"set loris:idle 0 0 1\r\nx\r\n"), b"STORED\r\n")
        line = b"get loris-key-that-never-ends-" + b"x" * 100
        socks = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
                 for _ in range(count)]
        for s in socks:
            s.setblocking(False)
        open_socks = set(socks)
        sent = {s: -1 for s in socks}  # the last second each one sent a byte in
        started = time.monotonic()
        closed_at = []
        normal = proxy.client()
        n = 0
        try:
            # One byte per second each, plus a normal client working alongside.
            while open_socks and time.monotonic() - started < 8:
                second = int(time.monotonic() - started)
                for s in list(open_socks):
                    try:
                        if second < len(line) and sent[s] < second:
                            s.send(line[second:second + 1])
                            sent[s] = second
                        if s.recv(1) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    except OSError:
                        open_socks.discard(s)
                        closed_at.append(time.monotonic() - started)
                t0 = time.monotonic()
                self.assertEqual(normal.request(b"set loris:n 0 0 %d\r\n%d\r\n" % (len(str(n)), n)),
                                 b"STORED\r\n")
                self.assertEqual(normal.request(b"get loris:n\r\n"),
                                 b"VALUE loris:n 0 %d\r\n%d\r\nEND\r\n" % (len(str(n)), n))
                self.assertLess(time.monotonic() - t0, 0.5)
                n += 1
                time.sleep(0.02)
            self.assertEqual(len(open_socks), 0, "%d still open after 8 s" % len(open_socks))
            closed_at.sort()
            print("\n%d slowloris connections closed between %.2f and %.2f s (timeout 2 s); "
                  "the normal client made %d round trips meanwhile"
                  % (count, closed_at[0], closed_at[-1], n))
            self.assertGreaterEqual(closed_at[0], 1.9)
            # The idle connection that sent only whole requests is still served.
            self.assertEqual(idle.request(b"get loris:idle\r\n"),
                             b"VALUE loris:idle 0 1\r\nx\r\nEND\r\n")
            stats = proxy.stats(normal)
            self.assertEqual(int(stats["proxy_connections_closed_partial_request_timeout"]), count)
        finally:
            for s in socks:
                s.close()
            idle.close()
            normal.close()
        check_clean_exit(self, proxy)


class BackendBoundsTest(unittest.TestCase):
    def test_a_multi_get_larger_than_the_limit_fails_instead_of_growing(self):
        mc = Memcached().start()
        self.addCleanup(mc.kill)
        # 16M over 2 workers: 8M each; a backend connection may hold half of that (4M).
        proxy = Proxy(topology({"a": [mc.address]}), threads=2,
                      extra_args=["--max-buffer-memory", "16M"]).start()
        self.addCleanup(kill_if_running, proxy)
        value = b"y" * VALUE_SIZE
        with mc.client() as c:
            for i in range(12):
                c.send(b"set huge:%d 0 0 %d\r\n%s\r\n" % (i, VALUE_SIZE, value))
                self.assertEqual(c.read_line(), b"STORED\r\n")
        with proxy.client(timeout=10) as c:
            keys = b" ".join(b"huge:%d" % i for i in range(12))
            self.assertEqual(c.request(b"get " + keys + b"\r\n"),
                             b"SERVER_ERROR backend reply too large\r\n")
            # The connection and the backend recover for requests that fit.
            got = c.request(b"get huge:0 huge:1\r\n")
            self.assertTrue(got.startswith(b"VALUE huge:0 0 %d\r\n" % VALUE_SIZE), got[:80])
            self.assertTrue(got.endswith(b"END\r\n"))
        stats = proxy.stats()
        self.assertGreaterEqual(int(stats["proxy_backend_failures_oversized"]), 1)
        check_clean_exit(self, proxy)


if __name__ == "__main__":
    unittest.main()
