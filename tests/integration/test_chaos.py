"""Chaos (issue 17): three zones x two memcached, one proxy per zone with several workers, six
clients, while servers are stopped, killed and restarted and proxies are killed and restarted.
Added latency is a server stopped for a few milliseconds out of every five (tc netem is not
in every kernel). A model of acknowledged writes decides staleness: a read is stale when it returns a value
older than a write of that key acknowledged before the read was sent. Target: none, at the
default consistency settings.

MEMZONE_CHAOS_SECONDS (default 12) and MEMZONE_CHAOS_SEEDS (default "1,2") run it longer.
Network partitions and added latency need network namespaces: see test_partitions.py.
"""
import os
import random
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

from harness import Memcached, Proxy

SECONDS = float(os.environ.get("MEMZONE_CHAOS_SECONDS", "12"))
SEEDS = [int(s) for s in os.environ.get("MEMZONE_CHAOS_SEEDS", "1,2").split(",")]
ZONES = ("zone-a", "zone-b", "zone-c")
CLIENTS = 6
KEYS_PER_CLIENT = 20


def topology_yaml(servers, read_hold_ms=None):
    lines = ["pools:", "  - name: main", "    zones:"]
    for zone in ZONES:
        lines.append('      %s: [%s]' % (zone, ", ".join('"%s"' % s.address for s in servers[zone])))
    # wait: all, everything else at its default (read hold, retries, queues).
    lines.append("    replication: {wait: all}")
    if read_hold_ms is not None:
        lines.append("consistency: {readHoldMs: %d}" % read_hold_ms)
    return "\n".join(lines) + "\n"


class Model:
    """The last acknowledged version of each key; reads are checked against it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # key -> (version, when acknowledged)
        self.stale = []
        self.window = 0.0  # longest time from an acknowledgement to a read older than it

    def acknowledged(self, key, version):
        with self.lock:
            if version > self.acked.get(key, (0, 0))[0]:
                self.acked[key] = (version, time.monotonic())

    def floor(self, key):
        with self.lock:
            return self.acked.get(key, (0, 0.0))


class Client(threading.Thread):
    def __init__(self, index, proxies, model, deadline, seed, fault):
        super().__init__(daemon=True)
        self.index, self.proxies, self.model = index, proxies, model
        self.deadline, self.rng, self.fault = deadline, random.Random(seed * 100 + index), fault
        self.own = ["c%d:k%d" % (index, i) for i in range(KEYS_PER_CLIENT)]
        self.versions = {k: 0 for k in self.own}
        self.conns = {}
        self.counts = {}  # (fault, op, outcome) -> n

    def count(self, op, outcome):
        key = (self.fault[0], op, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def conn(self, zone):
        c = self.conns.get(zone)
        if c is None:
            c = socket.create_connection(("127.0.0.1", self.proxies[zone].port), timeout=3)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[zone] = (c, c.makefile("rb"))
            c = self.conns[zone]
        return c

    def request(self, zone, data, value_reply):
        sock, f = self.conn(zone)
        sock.sendall(data)
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        if value_reply and line.startswith(b"VALUE "):
            body = f.readline()
            f.readline()  # END
            return line + body
        return line

    def run(self):
        all_keys = ["c%d:k%d" % (c, i) for c in range(CLIENTS) for i in range(KEYS_PER_CLIENT)]
        while time.monotonic() < self.deadline:
            zone = self.rng.choice(ZONES)
            try:
                if self.rng.random() < 0.3:
                    key = self.rng.choice(self.own)
                    self.versions[key] += 1
                    v = b"%d" % self.versions[key]
                    reply = self.request(zone, b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(v), v),
                                         False)
                    if reply == b"STORED\r\n":
                        self.model.acknowledged(key, self.versions[key])
                        self.count("write", "ok")
                    else:
                        self.count("write", "error")
                else:
                    key = self.rng.choice(all_keys)
                    floor, acked_at = self.model.floor(key)  # acknowledged before the send
                    reply = self.request(zone, b"get %s\r\n" % key.encode(), True)
                    m = re.match(rb"VALUE \S+ 0 \d+\r\n(\d+)\r\n", reply)
                    if m:
                        self.count("read", "hit")
                        if int(m.group(1)) < floor:
                            self.model.stale.append((key, int(m.group(1)), floor, zone,
                                                     self.fault[0]))
                            self.model.window = max(self.model.window,
                                                    time.monotonic() - acked_at)
                    elif reply == b"END\r\n":
                        self.count("read", "miss")
                    else:
                        self.count("read", "error")
            except (OSError, ConnectionError):
                self.count("connection", "error")
                old = self.conns.pop(zone, None)
                if old:
                    old[0].close()
                time.sleep(0.02)
        for sock, _ in self.conns.values():
            sock.close()


def static_proxies(yaml, state):
    """Proxies on the topology file, each with its --state-dir."""
    return lambda zone, port=None: Proxy(yaml, zone=zone, threads=3, port=port,
                                         extra_args=["--state-dir", state[zone]])


class ChaosRun:
    """The chaos run, shared with test_partitions (which adds partitions inside its network
    namespace). A mixin, so importing it does not run these tests twice."""

    def run_seed(self, seed, read_hold_ms=None, make_proxies=static_proxies, extra_faults=None,
                 label=""):
        """One chaos run. `make_proxies(yaml, state)` returns a factory (zone, port) -> Proxy;
        `extra_faults` maps a fault name to fn(rng, servers, proxies) that injects it, waits,
        and heals it (test_partitions adds network partitions this way)."""
        rng = random.Random(seed)
        extra_faults = extra_faults or {}
        servers = {z: [Memcached().start() for _ in range(2)] for z in ZONES}
        yaml = topology_yaml(servers, read_hold_ms)
        state = {z: tempfile.mkdtemp(prefix="memzone-chaos-") for z in ZONES}
        for d in state.values():
            os.chmod(d, 0o777)  # proxies may run as other users
        new_proxy = make_proxies(yaml, state)
        proxies = {z: new_proxy(z).start() for z in ZONES}
        model = Model()
        fault = ["none"]
        deadline = time.monotonic() + SECONDS
        clients = [Client(i, proxies, model, deadline, seed, fault) for i in range(CLIENTS)]
        try:
            for c in clients:
                c.start()
            time.sleep(0.5)
            while time.monotonic() < deadline - 1.0:
                kind = rng.choice(["pause", "pause", "restart-memcached", "restart-proxy",
                                   "latency"] + sorted(extra_faults) * 2)
                fault[0] = kind
                if kind in extra_faults:
                    extra_faults[kind](rng, servers, proxies)
                elif kind == "pause":
                    s = rng.choice([s for z in ZONES for s in servers[z]])
                    s.pause()
                    time.sleep(rng.uniform(1.0, 3.0))
                    s.resume()
                elif kind == "latency":
                    # Added latency without tc netem (not in every kernel): the server is
                    # stopped for 1-4 ms out of every 5 for 1-3 s, so its answers come late by
                    # about a cross-zone round trip, and some copies time out.
                    s = rng.choice([s for z in ZONES for s in servers[z]])
                    until = time.monotonic() + rng.uniform(1.0, 3.0)
                    while time.monotonic() < until:
                        s.proc.send_signal(signal.SIGSTOP)
                        time.sleep(rng.uniform(0.001, 0.004))
                        s.resume()
                        time.sleep(0.001)
                elif kind == "restart-memcached":
                    s = rng.choice([s for z in ZONES for s in servers[z]])
                    s.kill()
                    time.sleep(rng.uniform(0.2, 1.0))
                    s.start()  # same port, empty: a miss is never stale
                else:
                    z = rng.choice(ZONES)
                    p = proxies[z]
                    p.proc.kill()  # SIGKILL: no drain; owed deletes only in --state-dir
                    p.proc.wait(timeout=10)
                    p.log.close()
                    proxies[z] = new_proxy(z, port=p.port).start()
                    for c in clients:
                        c.proxies = proxies
                fault[0] = "after " + kind
                time.sleep(rng.uniform(0.5, 1.5))
            for c in clients:
                c.join(SECONDS + 10)
        finally:
            for p in proxies.values():
                try:
                    p.stop()
                except AssertionError:
                    pass
            for z in ZONES:
                for s in servers[z]:
                    s.kill()
                shutil.rmtree(state[z], ignore_errors=True)
        totals = {}
        for c in clients:
            for k, n in c.counts.items():
                totals[k] = totals.get(k, 0) + n
        reads = sum(n for (f, op, o), n in totals.items() if op == "read")
        print("\nchaos%s seed %d%s: %d reads, stale %d, staleness window %.0f ms"
              % (label, seed, "" if read_hold_ms is None else ", readHoldMs %d" % read_hold_ms, reads,
                 len(model.stale), model.window * 1000))
        for f in sorted({k[0] for k in totals}):
            row = {(op, o): n for (ff, op, o), n in totals.items() if ff == f}
            print("  %-26s %s" % (f, ", ".join("%s %s %d" % (op, o, n)
                                                 for (op, o), n in sorted(row.items()))))
        self.assertGreater(reads, 500)
        return model.stale


class ChaosTest(ChaosRun, unittest.TestCase):
    def test_no_stale_reads_through_any_proxy(self):
        for seed in SEEDS:
            with self.subTest(seed=seed):
                stale = self.run_seed(seed)
                self.assertEqual(stale[:10], [], "stale reads (key, got, acknowledged, via, fault)")

    def test_staleness_window_without_the_read_hold(self):
        # readHoldMs: 0 is the availability-first setting: reads resume the moment a server
        # answers, before other proxies replay what they owe it. Measured, not asserted.
        self.run_seed(SEEDS[0], read_hold_ms=0)


if __name__ == "__main__":
    unittest.main()
