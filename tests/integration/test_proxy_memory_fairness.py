"""Memory is charged to whoever holds it (issue 22, item 5).

(a) A `get` of millions of keys is refused before it is expanded: four clients that each
    send one 8 MB multi-get line and never read keep the proxy's RSS near its budget (before:
    631 MiB with a 64 MiB budget; per-key tokens, references and sub-requests were not
    charged).
(b) While slow readers hold the budget, a well-behaved client that pipelines small gets is
    never refused: a connection holding less than its guaranteed share is served.

Real memcached, the real proxy; hostile clients in child processes (see test_proxy_memory).
"""
import multiprocessing
import socket
import time
import unittest

import test_proxy_memory as memory
from harness import Memcached, Proxy, topology

MIB = 1 << 20
BUDGET = 64 * MIB
HUGE_KEYS = 4000000  # "get a a a ...": an 8 MB line, under the proxy's 8 MiB line limit


def huge_get():
    return b"get " + b"a " * (HUGE_KEYS - 1) + b"a\r\n"


class HugeMultiGetTest(unittest.TestCase):
    CLIENTS = 4

    def setUp(self):
        self.mc = Memcached().start()
        self.addCleanup(self.mc.kill)
        self.proxy = Proxy(topology({"a": [self.mc.address]},
                                    timeouts="{connectMs: 1000, requestMs: 5000}"),
                           threads=2, extra_args=["--max-buffer-memory", "64M"]).start()
        self.addCleanup(memory.kill_if_running, self.proxy)

    def test_huge_multi_gets_that_are_never_read_stay_near_the_budget(self):
        pid = self.proxy.proc.pid
        stats_client = self.proxy.client(timeout=30)
        self.proxy.stats(stats_client)
        time.sleep(0.3)
        baseline = memory.rss(pid)

        line = huge_get()
        self.assertLess(len(line), 8 * MIB)
        socks, sent = [], []
        for _ in range(self.CLIENTS):
            s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
            s.setblocking(False)
            socks.append(s)
            sent.append(0)
        self.addCleanup(lambda: [s.close() for s in socks])

        # Send all four lines as fast as the proxy takes them, sampling its RSS meanwhile;
        # then keep sampling a while (the refusals, or whatever the proxy builds, happen
        # once each line is complete).
        peak = 0
        deadline = time.monotonic() + 30
        done_at = None
        while time.monotonic() < deadline:
            for i, s in enumerate(socks):
                while sent[i] < len(line):
                    try:
                        sent[i] += s.send(line[sent[i]:sent[i] + (1 << 20)])
                    except BlockingIOError:
                        break
            peak = max(peak, memory.rss(pid))
            if done_at is None and all(n == len(line) for n in sent):
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at > 3:
                break
            time.sleep(0.01)
        print("\npeak RSS %.1f MiB" % (peak / MIB))
        stats = self.proxy.stats(stats_client)
        print("%d clients x get of %d keys (%.1f MB) never read, --max-buffer-memory 64M: idle "
              "RSS %.1f MiB, peak RSS %.1f MiB; lines sent in full: %d; out-of-memory replies "
              "%s, buffered now %.1f MiB"
              % (self.CLIENTS, HUGE_KEYS, len(line) / 1e6, baseline / MIB, peak / MIB,
                 sum(n == len(line) for n in sent), stats["proxy_buffer_out_of_memory_replies"],
                 int(stats["proxy_buffer_bytes"]) / MIB))
        if not memory.SANITIZE:
            # The budget, plus the fixed overhead the slow-reader test allows (what the budget
            # does not see: allocator slack, the read buffers, the idle process).
            self.assertLess(peak, baseline + BUDGET + memory.RSS_OVERHEAD,
                            "peak RSS %.1f MiB (idle %.1f MiB)" % (peak / MIB, baseline / MIB))

        # Others are served meanwhile (a light connection is never refused).
        with self.proxy.client(timeout=10) as c:
            self.assertEqual(c.request(b"set small 0 0 1\r\nx\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"get small\r\n"), b"VALUE small 0 1\r\nx\r\nEND\r\n")

        # A line that reached the proxy whole was refused before it was expanded, in
        # memcached's words for it.
        for i, s in enumerate(socks):
            if sent[i] != len(line):
                continue
            s.setblocking(True)
            s.settimeout(10)
            got = b""
            while not got.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(got, b"SERVER_ERROR out of memory writing get response\r\n")
        for s in socks:
            s.close()
        self.assertTrue(memory.wait_until(
            lambda: int(self.proxy.stats(stats_client)["proxy_buffer_bytes"]) < 4 * MIB, 10),
            self.proxy.stats(stats_client))
        stats_client.close()
        memory.check_clean_exit(self, self.proxy)

    def test_a_large_multi_get_that_fits_is_served(self):
        # 20,000 keys of ~20 bytes: a 420 KB line, a few MiB once expanded; a 32 MiB worker
        # share affords it. Sent in pieces, like any long line.
        with self.mc.client() as c:
            for i in range(0, 20000, 1000):
                c.send(b"set key-of-twenty-bytes:%05d 0 0 1\r\nv\r\n" % i)
                self.assertEqual(c.read_line(), b"STORED\r\n")
        keys = [b"key-of-twenty-bytes:%05d" % i for i in range(20000)]
        line = b"get " + b" ".join(keys) + b"\r\n"
        want = b"".join(b"VALUE %s 0 1\r\nv\r\n" % k for k in keys[::1000]) + b"END\r\n"
        with self.proxy.client(timeout=30) as c:
            for _ in range(3):
                for at in range(0, len(line), 4096):
                    c.send(line[at:at + 4096])
                self.assertEqual(c.read_until(b"END\r\n"), want)
        stats = self.proxy.stats()
        self.assertEqual(stats["proxy_buffer_out_of_memory_replies"], "0")
        memory.check_clean_exit(self, self.proxy)


def pipelining_clients(port, rounds, connect_each_round, start, results):
    """Well-behaved clients pipelining two (then eight) small gets per round; puts the list
    of wrong replies on `results`. `connect_each_round`: a fresh connection per round (a
    newcomer every time), else one connection made before `start` (a client pool)."""
    failures = []
    want_one = b"VALUE tiny 0 4\r\ntiny\r\nEND\r\n"
    kept = None if connect_each_round else socket.create_connection(("127.0.0.1", port),
                                                                    timeout=10)
    start.wait(120)
    for n in range(rounds):
        s = kept or socket.create_connection(("127.0.0.1", port), timeout=10)
        depth = 2 if n % 2 == 0 else 8
        try:
            s.sendall(b"get tiny\r\n" * depth)
            want = want_one * depth
            got = b""
            while len(got) < len(want) and b"SERVER_ERROR" not in got and b"ERROR\r\n" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            if got != want:
                failures.append((n, depth, got[:200]))
                if s is kept:
                    break  # its stream is out of step now
        except OSError as e:
            failures.append((n, depth, repr(e)))
            if s is kept:
                break
        finally:
            if s is not kept:
                s.close()
        time.sleep(0.02)
    if kept:
        kept.close()
    results.put(failures)


class PipeliningUnderPressureTest(unittest.TestCase):
    SLOW = 200

    def setUp(self):
        memory.raise_fd_limit(self.SLOW + 512)
        self.mc = Memcached().start()
        self.addCleanup(self.mc.kill)
        self.proxy = Proxy(topology({"a": [self.mc.address]},
                                    timeouts="{connectMs: 1000, requestMs: 2000}"),
                           threads=2, extra_args=["--max-buffer-memory", "64M"]).start()
        self.addCleanup(memory.kill_if_running, self.proxy)
        value = b"x" * memory.VALUE_SIZE
        with self.mc.client() as c:
            for i in range(10):
                c.send(b"set big:%d 0 0 %d\r\n%s\r\n" % (i, memory.VALUE_SIZE, value))
                self.assertEqual(c.read_line(), b"STORED\r\n")
            self.assertEqual(c.request(b"set tiny 0 0 4\r\ntiny\r\n"), b"STORED\r\n")

    def test_pipelined_small_gets_are_not_refused_while_slow_readers_hold_the_budget(self):
        ctx = multiprocessing.get_context("fork")
        stats_client = self.proxy.client()
        start, stop, ready = ctx.Event(), ctx.Event(), ctx.Event()
        results = ctx.Queue()
        # Clients connected before the attack (a pool) and newcomers during it.
        clients = [ctx.Process(target=pipelining_clients,
                               args=(self.proxy.port, 60, each_round, start, results))
                   for each_round in (False, False, True, True)]
        for p in clients:
            p.start()
            self.addCleanup(p.kill)
        time.sleep(0.5)  # connected
        slow = ctx.Process(target=memory.slow_readers,
                           args=(self.proxy.port, self.SLOW, 50, 10, 1024, stop, ready))
        slow.start()
        self.addCleanup(slow.kill)
        self.assertTrue(ready.wait(60), "slow readers did not connect")

        # The budget is held: the proxy refuses the slow readers' gets.
        def held():
            s = self.proxy.stats(stats_client)
            return int(s["proxy_buffer_out_of_memory_replies"]) > 0
        self.assertTrue(memory.wait_until(held, 30), self.proxy.stats(stats_client))
        start.set()
        failures = []
        for _ in clients:
            failures.extend(results.get(timeout=120))
        for p in clients:
            p.join(10)
        stats = self.proxy.stats(stats_client)
        stop.set()
        slow.join(30)
        print("\n%d slow readers x 50 x 1 MB, --max-buffer-memory 64M: 4 pipelining clients, "
              "240 rounds, %d wrong replies; out-of-memory replies %s, buffered %.1f MiB, "
              "reserved %.1f MiB"
              % (self.SLOW, len(failures), stats["proxy_buffer_out_of_memory_replies"],
                 int(stats["proxy_buffer_bytes"]) / MIB,
                 int(stats["proxy_buffer_reserved_bytes"]) / MIB))
        self.assertEqual(failures, [])
        stats_client.close()
        memory.check_clean_exit(self, self.proxy)


if __name__ == "__main__":
    unittest.main()
