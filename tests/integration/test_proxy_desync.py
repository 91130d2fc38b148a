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


class BackendDesyncTest(unittest.TestCase):
    """A backend that sends one reply too many: the connection is cut, nothing it sent
    after going out of step reaches a client, and the failure is named and counted."""

    def test_extra_reply_is_a_named_failure_and_never_delivered(self):
        pending = [b""]

        def behaviour(data):
            # A line-by-line memcached stand-in: fences (`mg <key> O<opaque>`) are answered
            # like memcached would, `get a` gets its value plus a reply nobody asked for.
            pending[0] += data
            out = b""
            while b"\r\n" in pending[0]:
                line, pending[0] = pending[0].split(b"\r\n", 1)
                words = line.split()
                if words[:1] == [b"mg"]:
                    out += b"EN " + b" ".join(w for w in words[2:] if w.startswith(b"O")) + b"\r\n"
                elif words[:1] == [b"version"]:
                    out += b"VERSION 1.6.18\r\n"
                elif line == b"get a":
                    out += b"VALUE a 0 1\r\nA\r\nEND\r\nVALUE b 0 1\r\nB\r\nEND\r\n"
                else:
                    out += b"END\r\n"
            return out

        backend = FakeBackend(behaviour)
        proxy = Proxy(topology({"zone-a": [backend.address]}), threads=1).start()
        try:
            with proxy.client() as c:
                c.send(b"get a\r\nget b\r\n")
                first = c.read_reply()
                second = c.read_reply()
            self.assertEqual(first, b"SERVER_ERROR backend desync\r\n")
            self.assertEqual(second, b"SERVER_ERROR backend desync\r\n")
            stats = proxy.stats()
            self.assertGreaterEqual(int(stats.get("proxy_backend_failures_desync", "0")), 1)
            self.assertIn("desync", proxy.logs())
        finally:
            proxy.stop()
            backend.stop()


if __name__ == "__main__":
    unittest.main()
