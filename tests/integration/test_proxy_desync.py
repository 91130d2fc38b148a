"""No reply may ever reach the wrong client (issue 11).

Hostile requests that memcached reads differently from a naive parser (a NUL inside a key, a
quiet meta command whose reply memcached may or may not send, a get with an over-long key that
makes memcached drop replies it had queued) travel on the same pipelined backend connection as
innocent clients' requests. The innocent clients must only ever see their own replies; a
backend that answers out of step is cut off with `SERVER_ERROR backend desync`, never read on.
"""
import socket
import threading
import time
import unittest

from fake_backend import FakeBackend
from harness import Memcached, Proxy, topology

HOSTILE = [
    b"set b5:a\x00b 0 0 1\r\nx\r\n",                 # memcached: ERROR, then `x` -> ERROR
    b"get k\x00 other\r\n",                           # memcached reads `get k`
    b"ma nk%d q N0 J13\r\n",                          # auto-create replies even with q
    b"ma nk%d q\r\n",                                 # ... and this one does not
    b"mg nothere qx v\r\n",                           # `qx` is the q flag to memcached
    b"set t 0 0 4294967297\r\ny\r\n",                 # memcached reads the length as 1
    b"delete k noreply noreply\r\n",                  # memcached sends nothing at all
    b"set c 0 0 1\r\nx\r\nget zz " + b"x" * 251 + b"\r\n",  # memcached drops the STORED
    b"mg k q q\r\n",                                   # duplicate flag: an error, not silence
    b"md k%d q\r\nmd k%d q\r\n",
]


class Canary(threading.Thread):
    """Writes its own keys and checks that every reply is its own."""

    def __init__(self, port, name, deadline):
        super().__init__(daemon=True)
        self.port, self.name, self.deadline = port, name, deadline
        self.ops = 0
        self.foreign = []

    def run(self):
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            f = sock.makefile("rb")
            i = 0
            while time.monotonic() < self.deadline:
                key = b"canary:%s:%d" % (self.name.encode(), i % 20)
                value = b"%s-%d" % (self.name.encode(), i)
                sock.sendall(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key))
                stored = f.readline()
                if stored != b"STORED\r\n":
                    self.foreign.append((b"set " + key, stored))
                    return
                head = f.readline()
                expected = b"VALUE %s 0 %d\r\n" % (key, len(value))
                if head != expected:
                    self.foreign.append((b"get " + key, head))
                    return
                body = f.readline()
                end = f.readline()
                if body != value + b"\r\n" or end != b"END\r\n":
                    self.foreign.append((b"get " + key, head + body + end))
                    return
                self.ops += 1
                i += 1
            sock.close()
        except OSError as e:
            self.foreign.append((b"connection", repr(e).encode()))


class DesyncTest(unittest.TestCase):
    def test_hostile_requests_never_shift_other_clients_replies(self):
        server = Memcached().start()
        # One worker: every client shares the same pipelined backend connection.
        proxy = Proxy(topology({"zone-a": [server.address]}), threads=1).start()
        try:
            deadline = time.monotonic() + 4
            canaries = [Canary(proxy.port, "c%d" % i, deadline) for i in range(4)]
            for c in canaries:
                c.start()
            rounds = 0
            while time.monotonic() < deadline:
                for i, hostile in enumerate(HOSTILE):
                    payload = hostile.replace(b"%d", b"%d" % rounds)
                    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                        s.sendall(payload + b"mn\r\n")
                        s.settimeout(2)
                        got = b""
                        while not got.endswith(b"MN\r\n"):
                            chunk = s.recv(65536)
                            if not chunk:
                                break
                            got += chunk
                rounds += 1
            for c in canaries:
                c.join(10)
            foreign = [f for c in canaries for f in c.foreign]
            self.assertEqual(foreign, [], "a client got a reply that was not its own")
            self.assertGreater(sum(c.ops for c in canaries), 100)
        finally:
            proxy.stop()
            server.kill()


def line_backend(answer):
    """A line-by-line memcached stand-in for FakeBackend speaking the meta protocol the proxy
    sends: `version` is answered like memcached would, every request line by
    `answer(key, opaque)` (bytes to send, possibly nothing), where opaque is the proxy's
    `O...` token, always the line's last."""
    pending = [b""]

    def behaviour(data):
        pending[0] += data
        out = b""
        while b"\r\n" in pending[0]:
            line, pending[0] = pending[0].split(b"\r\n", 1)
            words = line.split()
            if words[:1] == [b"version"]:
                out += b"VERSION 1.6.18\r\n"
            elif words:
                out += answer(words[1], words[-1])
        return out

    return behaviour


def miss(opaque):
    return b"EN " + opaque + b"\r\n"


def other_opaque(opaque):
    return b"O%08x" % ((int(opaque[1:], 16) + 1) % (1 << 32))


MISBEHAVIOURS = {
    # one reply too many: a second answer nobody asked for follows the first
    "extra reply": lambda key, o: miss(o) + miss(o) if key == b"a" else miss(o),
    # one reply too few: the first request is never answered
    "missing reply": lambda key, o: b"" if key == b"a" else miss(o),
    # a reply of the wrong shape for its request
    "wrong shape": lambda key, o: b"STORED\r\n" if key == b"a" else miss(o),
    # the right shape, but the next request's opaque
    "another request's opaque": lambda key, o: miss(other_opaque(o)) if key == b"a" else miss(o),
    # no opaque at all
    "no opaque": lambda key, o: b"EN\r\n" if key == b"a" else miss(o),
    # a text reply naming a key (what a raw-printed key could forge)
    "text value": lambda key, o: (b"VALUE b 0 1\r\nB\r\nEND\r\n" if key == b"a" else miss(o)),
    # a value length that would wrap offsets around
    "huge length": lambda key, o: (b"VA 18446744073709551582 " + o + b"\r\n"
                                   if key == b"a" else miss(o)),
    # bytes that are no reply at all
    "garbage": lambda key, o: b"HELLO\r\n" if key == b"a" else miss(o),
}


class LineLimitTest(unittest.TestCase):
    """What a client can do to the proxy's own traffic on a shared connection."""

    def test_clients_cannot_overflow_memcacheds_line_limit(self):
        server = Memcached().start()
        proxy = Proxy(topology({"zone-a": [server.address]}), threads=1).start()
        try:
            with proxy.client() as c:
                for i in range(20):
                    self.assertEqual(c.request(b"set k%d 0 0 1\r\nx\r\n" % i), b"STORED\r\n")
                # A meta line padded past 2048 bytes goes out rebuilt; one whose tokens alone
                # are that long is answered here, and the connection lives.
                self.assertEqual(c.request(b"mg k1" + b" " * 4440 + b"v\r\n"), b"VA 1\r\nx\r\n")
                self.assertEqual(c.request(b"mg k1 k" + b"A" * 3000 + b" v\r\n"),
                                 b"CLIENT_ERROR line too long\r\n")
                # A multi-key gat of long keys goes as one mg per key.
                keys = [b"%s%03d" % (b"g" * 200, i) for i in range(22)]
                for k in keys:
                    c.request(b"set %s 0 0 1\r\ny\r\n" % k)
                reply = c.request(b"gat 0 " + b" ".join(keys) + b"\r\n")
                self.assertEqual(reply.count(b"VALUE "), 22)
            self.assertEqual(int(proxy.stats().get("proxy_backend_failures_desync", "0")), 0)
            self.assertEqual(int(proxy.stats().get("proxy_backend_failures_disconnected", "0")), 0)
        finally:
            proxy.stop()
            server.kill()


class BackendDesyncTest(unittest.TestCase):
    """A backend whose replies cannot be matched to its requests: the connection is cut,
    nothing it sent reaches a client, and the failure is named, counted and logged."""

    def test_every_kind_of_unmatched_reply_is_a_desync(self):
        for name, answer in MISBEHAVIOURS.items():
            with self.subTest(name):
                backend = FakeBackend(line_backend(answer))
                proxy = Proxy(topology({"zone-a": [backend.address]}), threads=1).start()
                try:
                    with proxy.client() as c:
                        c.send(b"get a\r\nget b\r\n")
                        first = c.read_reply()
                        second = c.read_reply()
                    # Each reply proves itself: a's own answer, before the extra one, is a's.
                    desync = b"SERVER_ERROR backend desync\r\n"
                    expected = (b"END\r\n", desync) if name == "extra reply" else (desync,) * 2
                    self.assertEqual((first, second), expected, proxy.logs())
                    stats = proxy.stats()
                    self.assertGreaterEqual(int(stats.get("proxy_backend_failures_desync", "0")), 1)
                    self.assertIn("desync", proxy.logs())
                    # The connection is reopened and serves again, and the server is not
                    # marked down for what a stream did (issue 22).
                    with proxy.client() as c:
                        self.assertEqual(c.request(b"get b\r\n"), b"END\r\n")
                    self.assertEqual(proxy.stats()["proxy_backend_mark_down_events"], "0")
                finally:
                    proxy.stop()
                    backend.stop()


if __name__ == "__main__":
    unittest.main()
