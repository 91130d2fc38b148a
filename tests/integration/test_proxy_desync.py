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
    """A line-by-line memcached stand-in for FakeBackend: fences (`mg <key> O<opaque>`) and
    `version` are answered like memcached would, every other line by `answer(line, opaque)`
    (bytes to send, possibly nothing)."""
    pending = [b""]

    def behaviour(data):
        pending[0] += data
        out = b""
        while b"\r\n" in pending[0]:
            line, pending[0] = pending[0].split(b"\r\n", 1)
            words = line.split()
            if words[:1] == [b"mg"] and words[1] == b"memzone:fence":
                out += answer(line, words[2]) if line.startswith(b"mg memzone:fence") and \
                    getattr(answer, "fences", False) else b"EN " + words[2] + b"\r\n"
            elif words[:1] == [b"version"]:
                out += b"VERSION 1.6.18\r\n"
            else:
                out += answer(line, None)
        return out

    return behaviour


def wrong_fence(line, opaque):
    if opaque is not None:
        return b"EN O" + b"0" * (len(opaque) - 1) + b"\r\n"
    return b"END\r\n"


wrong_fence.fences = True

MISBEHAVIOURS = {
    # one reply too many: a value nobody asked for follows the first answer
    "extra reply": lambda line, _: (b"VALUE a 0 1\r\nA\r\nEND\r\nVALUE b 0 1\r\nB\r\nEND\r\n"
                                    if line == b"get a" else b"END\r\n"),
    # one reply too few: the first request is never answered
    "missing reply": lambda line, _: b"" if line == b"get a" else b"END\r\n",
    # a reply of the wrong shape for its request
    "wrong shape": lambda line, _: b"STORED\r\n" if line == b"get a" else b"END\r\n",
    # the right shape, but a value for a key the request did not ask for
    "another key's value": lambda line, _: (b"VALUE b 0 1\r\nB\r\nEND\r\n" if line == b"get a"
                                           else b"END\r\n"),
    # a value length that would wrap offsets around
    "huge length": lambda line, _: (b"VALUE b 0 18446744073709551582\r\n"
                                    if line == b"get a" else b"END\r\n"),
    # bytes that are no reply at all
    "garbage": lambda line, _: b"HELLO\r\n" if line == b"get a" else b"END\r\n",
    # every reply right, the fence's opaque wrong
    "wrong fence": wrong_fence,
}


class FenceAndLineTest(unittest.TestCase):
    """What a client can do to the proxy's own traffic on a shared connection."""

    def test_clients_cannot_poison_the_fence_or_overflow_memcacheds_line_limit(self):
        server = Memcached().start()
        proxy = Proxy(topology({"zone-a": [server.address]}), threads=1).start()
        try:
            with proxy.client() as c:
                # Creating the fence key (and marking it) changes the fence's answer to
                # "HD O<opaque> Z/W/X": still a fence, not a desync.
                for poison in (b"mg memzone:fence N0 v\r\n", b"mg bWVt.em9uZTpmZW5jZQ== b N0\r\n",
                               b"md memzone:fence I\r\n", b"mg memzone:fence v\r\n"):
                    c.request(poison)
                for i in range(20):
                    self.assertEqual(c.request(b"set k%d 0 0 1\r\nx\r\n" % i), b"STORED\r\n")
                # A meta line padded past 2048 bytes goes out rebuilt; one whose tokens alone
                # are that long is answered here, and the connection lives.
                self.assertEqual(c.request(b"mg k1" + b" " * 4440 + b"v\r\n"), b"VA 1\r\nx\r\n")
                self.assertEqual(c.request(b"mg k1 k" + b"A" * 3000 + b" v\r\n"),
                                 b"CLIENT_ERROR line too long\r\n")
                # A multi-key gat of long keys is split into short lines per server.
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
                    self.assertEqual((first, second), (b"SERVER_ERROR backend desync\r\n",) * 2,
                                     proxy.logs())
                    stats = proxy.stats()
                    self.assertGreaterEqual(int(stats.get("proxy_backend_failures_desync", "0")), 1)
                    self.assertIn("desync", proxy.logs())
                    # The connection is reopened and serves again (where the backend behaves).
                    if name != "wrong fence":
                        with proxy.client() as c:
                            self.assertEqual(c.request(b"get b\r\n"), b"END\r\n")
                finally:
                    proxy.stop()
                    backend.stop()


if __name__ == "__main__":
    unittest.main()
