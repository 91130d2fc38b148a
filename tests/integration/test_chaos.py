"""Chaos (issues 17, 23): three zones x two memcached, one proxy per zone with several workers,
six clients, while servers are stopped, killed and restarted, proxies are killed and restarted
from --state-dir, and (on the controller) zones are scaled out and in. Added latency is a
server stopped for a few milliseconds out of every five (tc netem is not in every kernel).

The workload (chaos_workload.py) mixes sets, deletes, short TTLs, TTL changes (touch, gat,
gats, mg T), keys written and read with meta's base64 `b` (text keys by either name, and
binary keys text cannot name), and counters (incr, decr, ma). The oracle (chaos_oracle.py)
counts as stale a read older than a write acknowledged before it was sent, an item served
after every acknowledged write and TTL change says it must have expired, and a counter below
its acknowledged value. Target: none, at the default consistency settings, on the controller
(a static topology and readHoldMs: 0 are measured, not asserted).

Three runs on the controller: with the faults above; with ring changes too (a zone scaled
out or in, by rewriting the controller's file); and with those, another zone's proxy stopped
across each ring change (ring skew: it applies each change late, after moves could start).
MEMZONE_CHAOS_CONTROLLER_RESTARTS=1 makes every other ring change, the first included, while
the controller restarts (test_ring_skew and test_consistency cover restarts in CI).

MEMZONE_CHAOS_SECONDS (default 12) and MEMZONE_CHAOS_SEEDS (default "1,2") run it longer.
Network partitions and added latency need network namespaces: see test_partitions.py.
"""
import os
import random
import shutil
import signal
import tempfile
import time
import unittest

from chaos_oracle import Oracle
from chaos_workload import CLIENTS, ZONES, Client
from harness import Controller, Memcached, Proxy, wait_until

SECONDS = float(os.environ.get("MEMZONE_CHAOS_SECONDS", "12"))
SEEDS = [int(s) for s in os.environ.get("MEMZONE_CHAOS_SEEDS", "1,2").split(",")]
CONTROLLER_RESTARTS = os.environ.get("MEMZONE_CHAOS_CONTROLLER_RESTARTS") == "1"


def topology_yaml(servers, read_hold_ms=None):
    lines = ["pools:", "  - name: main", "    zones:"]
    for zone in ZONES:
        lines.append('      %s: [%s]' % (zone, ", ".join('"%s"' % s.address for s in servers[zone])))
    # wait: all, everything else at its default (read hold, retries, queues).
    lines.append("    replication: {wait: all}")
    if read_hold_ms is not None:
        lines.append("consistency: {readHoldMs: %d}" % read_hold_ms)
    return "\n".join(lines) + "\n"


def static_proxies(yaml, state):
    """Proxies on the topology file, each with its --state-dir."""
    return lambda zone, port=None: Proxy(yaml, zone=zone, threads=3, port=port,
                                         extra_args=["--state-dir", state[zone]])


class ChaosRun:
    """The chaos run, shared with test_partitions (which adds partitions inside its network
    namespace). A mixin, so importing it does not run these tests twice."""

    def run_seed(self, seed, read_hold_ms=None, make_proxies=static_proxies, extra_faults=None,
                 label="", seconds=SECONDS):
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
        oracle = Oracle()
        fault = ["none"]
        timeline = []  # (monotonic time, fault), for the report of a stale read
        deadline = time.monotonic() + seconds
        clients = [Client(i, proxies, oracle, deadline, seed, fault) for i in range(CLIENTS)]
        try:
            for c in clients:
                c.start()
            time.sleep(0.5)
            while time.monotonic() < deadline - 1.0:
                kind = rng.choice(["pause", "pause", "restart-memcached", "restart-proxy",
                                   "latency"] + sorted(extra_faults) * 2)
                fault[0] = kind
                timeline.append((time.monotonic(), kind))
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
                    p.kill()  # no drain; owed deletes only in --state-dir
                    proxies[z] = new_proxy(z, port=p.port).start()
                    for c in clients:
                        c.proxies = proxies
                fault[0] = "after " + kind
                time.sleep(rng.uniform(0.5, 1.5))
            for c in clients:
                c.join(seconds + 10)
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
        rules = {}
        for record in oracle.stale:
            rules[record["rule"]] = rules.get(record["rule"], 0) + 1
        print("\nchaos%s seed %d%s: %d reads, stale %d %s, staleness window %.0f ms"
              % (label, seed, "" if read_hold_ms is None else ", readHoldMs %d" % read_hold_ms, reads,
                 len(oracle.stale), rules, oracle.window * 1000))
        for f in sorted({k[0] for k in totals}):
            row = {}  # counter operations summed: "counter ok 120"
            for (ff, op, o), n in totals.items():
                if ff == f:
                    row[(op.split()[0], o)] = row.get((op.split()[0], o), 0) + n
            print("  %-26s %s" % (f, ", ".join("%s %s %d" % (op, o, n)
                                                 for (op, o), n in sorted(row.items()))))
        if oracle.stale:
            print("  faults: " + ", ".join("%.3f %s" % t for t in timeline))
            print("  proxy logs: " + ", ".join("%s %s" % (z, p.log_path)
                                               for z, p in proxies.items()))
        for record in oracle.stale[:20]:
            print("  stale:", record)
        for record in oracle.stale[:5]:
            at = record.get("sent_at", 0)
            print("  writes of %s before %.3f: %s" % (record["key"], at, "; ".join(
                oracle.history(record["key"], at))))
        self.assertGreater(reads, 500)
        return oracle.stale


class RingChanges:
    """Proxies on a controller (file source), and ring changes as a chaos fault: one zone
    scaled out to three memcached, or back in to two, by rewriting the controller's topology
    file. With `skew`, another zone's proxy is SIGSTOPped across the change, so it applies the
    change only after the others have applied it and the key mover has started moving."""

    def __init__(self, read_hold_ms=None, skew=False):
        self.read_hold_ms, self.skew = read_hold_ms, skew
        self.controller = None
        self.retired = []  # scaled-in memcached, alive (their keys are moved off) until the end
        self.changes = 0
        self.log = []  # (time, what), for the report of a stale read

    def proxies(self, yaml, state):
        # A 3 s grace, not 12 s: these proxies are back within about a second (a restart takes
        # 0.2-1 s here, and their backoff stays at 250 ms for an outage's first 2 s), and a
        # change should take effect within the run.
        self.controller = Controller(yaml, extra_args=["--applied-grace", "3s"]).start()

        def make(zone, port=None):
            return Proxy(None, zone=zone, threads=3, port=port,
                         controller=self.controller.address, state_dir=state[zone])
        return make

    def close(self):
        if self.controller:
            self.controller.stop()
        for s in self.retired:
            s.kill()

    def change(self, rng, servers, proxies):
        zone = rng.choice(ZONES)
        if len(servers[zone]) == 2:
            servers[zone].append(Memcached().start())
            what = "scale-out %s to %s" % (zone, servers[zone][-1].address)
        else:
            self.retired.append(servers[zone].pop())
            what = "scale-in %s from %s" % (zone, self.retired[-1].address)
        stopped = None
        if self.skew:
            stopped = proxies[rng.choice([z for z in ZONES if z != zone])]
            stopped.proc.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            what += ", proxy %d stopped" % stopped.port
        # With MEMZONE_CHAOS_CONTROLLER_RESTARTS=1, every other change (the first included) is
        # made while the controller restarts (an upgrade rolling out with it): proxies
        # reconnect over their backoff, and the new controller holds the change back from them
        # for its grace, so they switch together (without it, reads through the ones back
        # first missed writes through the others: 3 to 48 stale reads per 12 s run). Not in
        # CI: at the grace's end every proxy switches at once, and under the sanitize build's
        # load one run in about ten read a counter 14 ms behind a write made through a proxy
        # that switched a few milliseconds later (the switch's own window, README).
        restart = CONTROLLER_RESTARTS and self.changes % 2 == 0
        self.changes += 1
        if restart:
            what += ", controller restarted"
        self.log.append((time.monotonic(), what))
        previous = (self.controller.versions() or [None])[-1]
        if restart:
            self.controller.kill()
        self.controller.write_topology(topology_yaml(servers, self.read_hold_ms))
        if restart:
            time.sleep(rng.uniform(0.2, 1.0))
            self.controller.start()
        try:
            version = self.wait(lambda: (self.controller.versions() or [None])[-1] != previous
                                and self.controller.versions()[-1], "a new topology version")
            for p in proxies.values():
                if p is not stopped:
                    self.wait(lambda: self.applied(p, version), "proxy %d to apply %s" % (
                        p.port, version))
            if stopped:
                # The others write and move keys under the new ring meanwhile; clients of the
                # stopped proxy wait (their timeout, 3 s, is longer than this), and their
                # writes go out under the old ring when it resumes.
                time.sleep(max(0.0, stopped_at + rng.uniform(1.5, 2.5) - time.monotonic()))
        finally:
            if stopped:
                stopped.proc.send_signal(signal.SIGCONT)
        self.log.append((time.monotonic(), "applied " + what))

    @staticmethod
    def applied(proxy, version):
        try:
            return proxy.stats().get("proxy_topology_version") == version
        except OSError:
            return False

    @staticmethod
    def wait(predicate, what, timeout=15.0):
        return wait_until(predicate, timeout, what)


class ChaosTest(ChaosRun, unittest.TestCase):
    def controller_run(self, seed, rings, skew=False, seconds=SECONDS):
        ring = RingChanges(skew=skew)
        try:
            return self.run_seed(seed, make_proxies=ring.proxies,
                                 extra_faults={"ring-change": ring.change} if rings else {},
                                 seconds=seconds, label=" (controller%s)" % (
                                     ", ring changes with skew" if skew else
                                     ", ring changes" if rings else ""))
        finally:
            for when, what in ring.log:
                print("  ring %.3f %s" % (when, what))
            ring.close()

    def test_no_stale_reads_through_any_proxy(self):
        # On the controller, as deployed: its dirty-server set and the confirmation before a
        # write is acknowledged are what let every proxy avoid a server another proxy owes
        # deletes.
        for seed in SEEDS:
            with self.subTest(seed=seed):
                self.assertEqual(self.controller_run(seed, rings=False)[:10], [], "stale reads")

    def test_no_stale_reads_with_ring_changes(self):
        for seed in SEEDS:
            with self.subTest(seed=seed):
                self.assertEqual(self.controller_run(seed, rings=True)[:10], [], "stale reads")

    def test_staleness_on_a_static_topology(self):
        # Without a controller a proxy knows only the deletes it owes itself and the servers it
        # saw fail (the time hold): an increment through one proxy can be answered by a server
        # another proxy owes deletes, and so can a read. Measured, not asserted, for half the
        # time of the others.
        self.run_seed(SEEDS[0], seconds=SECONDS / 2, label=" (static topology)")

    def test_no_stale_reads_with_ring_skew(self):
        for seed in SEEDS:
            with self.subTest(seed=seed):
                self.assertEqual(self.controller_run(seed, rings=True, skew=True)[:10], [],
                                 "stale reads")

    def test_staleness_window_without_the_read_hold(self):
        # readHoldMs: 0 is the availability-first setting: reads resume the moment a server
        # answers, before other proxies replay what they owe it. Measured, not asserted, and
        # for half the time of the others.
        self.run_seed(SEEDS[0], read_hold_ms=0, seconds=SECONDS / 2)


if __name__ == "__main__":
    unittest.main()
