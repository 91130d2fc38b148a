"""Pipelines of locally answered commands are answered in full (issue 22, item 4).

The proxy answers some commands itself (version, mn, verbosity, unknown commands, keys no
pool is routed for). A pipeline of them, alone or mixed with routed requests, must be
answered in full from what the client sent in one write: no backend reply will come to wake
the connection, and the client sends nothing more until it has its answers.

Real memcached, the real proxy; every read has a deadline.
"""
import random
import socket
import time
import unittest

from harness import Memcached, Proxy, topology

# The whole pipeline's answer must be there within this (a stall is forever; a healthy
# proxy answers 5,000 local commands in milliseconds, a loaded CI machine in well under this).
DEADLINE = 10.0


def read_exactly(sock, n, deadline):
    """Reads `n` bytes by `deadline`; returns what came (short if the proxy stalled)."""
    got = bytearray()
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


class LocalPipelinesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mc = Memcached().start()
        # Routed: keys under "r:"; any other key has no pool and is answered by the proxy.
        # The partial-request timeout is on: input held back by the proxy must not count.
        cls.proxy = Proxy(topology({"a": [cls.mc.address]}, routes='[{prefix: "r:", pool: main}]'),
                          threads=1,
                          extra_args=["--partial-request-timeout-ms", "2000"]).start()
        with cls.mc.client() as c:
            c.send(b"set r:k 0 0 1\r\nx\r\n")
            assert c.read_line() == b"STORED\r\n"
        # Each command's own answer, asked alone: what every copy in a pipeline must get.
        cls.local = [b"version\r\n", b"mn\r\n", b"nosuchcommand\r\n", b"verbosity 1\r\n",
                     b"get u:unrouted\r\n", b"mg u:unrouted v\r\n", b"get\r\n"]
        cls.routed = [b"get r:k\r\n", b"mg r:k v\r\n", b"get r:k r:k u:unrouted\r\n"]
        cls.answers = {}
        with cls.proxy.client() as c:
            for command in cls.local + cls.routed:
                cls.answers[command] = c.request(command)
        # Answered with nothing at all (noreply): the next command's answer shows it was read.
        cls.local.append(b"verbosity 1 noreply\r\n")
        cls.answers[b"verbosity 1 noreply\r\n"] = b""
        assert cls.answers[b"get r:k\r\n"] == b"VALUE r:k 0 1\r\nx\r\nEND\r\n", cls.answers
        assert cls.answers[b"get u:unrouted\r\n"].startswith(b"SERVER_ERROR"), cls.answers

    @classmethod
    def tearDownClass(cls):
        rc = cls.proxy.stop()
        cls.mc.kill()
        logs = cls.proxy.logs()
        for needle in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            assert needle not in logs, logs[-3000:]
        assert rc == 0, logs[-3000:]

    def pipeline(self, commands):
        """Sends `commands` in one write; asserts every answer comes, in order, in time."""
        want = b"".join(self.answers[c] for c in commands)
        with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"".join(commands))
            got = read_exactly(s, len(want), time.monotonic() + DEADLINE)
        if got != want:
            self.fail("%d commands: %d of %d reply bytes within %.0fs (%d lines); first difference "
                      "at byte %d" % (len(commands), len(got), len(want), DEADLINE,
                                      got.count(b"\r\n"),
                                      next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                           min(len(got), len(want)))))

    def test_the_reported_pipelines(self):
        # The reproductions: each stalled after 21-25 answers.
        self.pipeline([b"version\r\n"] * 30 + [b"mn\r\n"])
        self.pipeline([b"nosuchcommand\r\n"] * 22 + [b"mn\r\n"])
        self.pipeline([b"verbosity 1\r\n"] * 25 + [b"mn\r\n"])
        self.pipeline([b"get u:unrouted\r\n"] * 30 + [b"get r:k\r\n"])

    def test_long_local_pipelines(self):
        for n in (1, 2, 8, 9, 100, 1000, 5000):
            for command in (b"version\r\n", b"nosuchcommand\r\n", b"get u:unrouted\r\n",
                            b"mg u:unrouted v\r\n", b"verbosity 1 noreply\r\n"):
                with self.subTest(n=n, command=command):
                    self.pipeline([command] * n + [b"mn\r\n"])

    def test_local_and_routed_mixed(self):
        rng = random.Random(22)
        for n in (1, 5, 50, 500, 5000):
            for routed_share in (0.01, 0.3, 0.9):
                commands = [rng.choice(self.routed if rng.random() < routed_share else self.local)
                            for _ in range(n)]
                with self.subTest(n=n, routed_share=routed_share):
                    self.pipeline(commands)


if __name__ == "__main__":
    unittest.main()
