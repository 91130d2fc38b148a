#!/usr/bin/python3
"""How long the copies of a `wait: local` write take to land in the other zones (the window
README "what you can rely on" names): three zones of one memcached each, one memzone-proxy in
zone a, and for each operation the time from the proxy's reply until zones b and c show its
effect, read directly from their memcached with a tight poll (one loopback round trip, ~50
microseconds, is the resolution). Operations: `set` (a new value), `gat` (a TTL change, copied
as `mg <key> T<ttl>`) and `incr`. Not a test: prints percentiles.

    bench/windows.py --proxy build/proxy/memzone-proxy --count 2000
"""
import argparse
import os
import socket
import statistics
import sys
import tempfile
import time

from benchlib import Processes


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, data, end):
        self.sock.sendall(data)
        while not self.buf.endswith(end) or end not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                sys.exit("windows: connection closed")
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out


def lag_until(conns, probe, expect_ok, limit_s=2.0):
    """Seconds until every connection's `probe` reply satisfies `expect_ok` (None: not within
    `limit_s`)."""
    start = time.perf_counter()
    pending = list(conns)
    while pending:
        if time.perf_counter() - start > limit_s:
            return None
        pending = [c for c in pending if not expect_ok(c.request(probe, b"\r\n"))]
    return time.perf_counter() - start


def percentiles(name, lags):
    done = [x for x in lags if x is not None]
    missing = len(lags) - len(done)
    if not done:
        print("%-6s no copy landed (%d operations)" % (name, len(lags)))
        return
    done.sort()
    q = lambda p: done[min(len(done) - 1, int(p * len(done)))] * 1000
    print("%-6s n=%d  p50 %.3f ms  p99 %.3f ms  max %.3f ms  mean %.3f ms  not landed in 2 s: %d"
          % (name, len(done), q(0.5), q(0.99), done[-1] * 1000, statistics.mean(done) * 1000,
             missing))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", default="build/proxy/memzone-proxy")
    parser.add_argument("--memcached", default="/usr/bin/memcached")
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    procs = Processes()
    work = tempfile.mkdtemp(prefix="memzone-windows-")
    try:
        ports = {z: procs.memcached(args.memcached, 1) for z in "abc"}
        topology = os.path.join(work, "topology.yaml")
        with open(topology, "w") as f:
            f.write("pools:\n  - name: main\n    zones:\n")
            for z, p in ports.items():
                f.write('      %s: ["127.0.0.1:%d"]\n' % (z, p))
        proxy_port, _ = procs.memzone(args.proxy, topology)
        client = Conn(proxy_port)
        others = [Conn(ports["b"]), Conn(ports["c"])]
        sets, gats, incrs = [], [], []
        for i in range(args.count):
            key = b"w%d" % i
            value = b"v%d" % i
            client.request(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value), b"\r\n")
            sets.append(lag_until(others, b"mg %s v\r\n" % key,
                                  lambda r, v=value: r.endswith(b"\r\n" + v + b"\r\n")))
            client.request(b"gat 1000 %s\r\n" % key, b"END\r\n")
            gats.append(lag_until(others, b"mg %s t\r\n" % key,
                                  lambda r: r.startswith(b"HD t") and int(r[4:].split()[0]) > 0))
            counter = b"n%d" % (i % 16)
            reply = client.request(b"incr %s 1\r\n" % counter, b"\r\n")
            if reply.startswith(b"NOT_FOUND"):
                client.request(b"set %s 0 0 1\r\n0\r\n" % counter, b"\r\n")
                lag_until(others, b"mg %s v\r\n" % counter, lambda r: r.startswith(b"VA"))
                reply = client.request(b"incr %s 1\r\n" % counter, b"\r\n")
            want = reply.strip()
            incrs.append(lag_until(others, b"mg %s v\r\n" % counter,
                                   lambda r, w=want: r.endswith(b"\r\n" + w + b"\r\n")))
        print("copy lag of a wait: local operation, zone a's reply -> zones b and c show it "
              "(loopback, one proxy worker, quiet):")
        percentiles("set", sets)
        percentiles("gat", gats)
        percentiles("incr", incrs)
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
