#!/usr/bin/python3
"""Churn benchmark: the hit rate through memzone-proxy while a zone's memcached servers
restart, scale out and scale in (issue 14). Not a test: numbers depend on the machine.

Three zones x three memcached, one proxy in zone a (its reads are served by zone a, so the
events happen there). A cache-aside client (one thread, request/response) runs a zipf
workload — 90% get (a miss loads the value from a model "database" and sets it), 5% update
(database, then `set`), 5% invalidation (database, then `delete`) — that settles at a steady
hit rate of about 90-95%. Then, one after another:
  (a) rolling restart of zone a: each server in turn is killed and comes back empty on a new
      port (a pod rescheduled with a new IP), under the same name;
  (b) scale-out of zone a from 3 to 4 servers;
  (c) scale-in back to 3.
Each variant runs the same script: `address` (hashBy: address, no windows: placement as
before issue 14), `names` (hashBy: name, no windows), `names+windows` (hashBy: name,
warm-up and migration windows on, --move-keys off) and `names+windows+moves` (the default:
also the key mover). Per second it records the hit rate; per event, the lost
hits: the hits the steady rate would have given minus the hits observed, over the event's
seconds up to the next event (windows that close inside that time count against it; the
per-second differences are summed signed, so noise around the steady rate cancels). Every read is checked against the model: a value older than the last acknowledged
write or delete (each bumps the key's version in the database) is a stale read.

    bench/churn.py [--build build] [--keys 20000] [--steady 16] [--gap 4] [--settle 30]
                   [--window-ms 25000] [--only names+windows+moves]
                   [--plot bench/churn_hit_rate.png] [--markdown]
"""
import argparse
import bisect
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import free_port, wait_for_port  # noqa: E402  (bench/benchlib.py, the same folder)

ZONES = ("a", "b", "c")


class Memcached:
    def __init__(self, name):
        self.name = name
        self.port = free_port()
        self.proc = subprocess.Popen(
            [shutil.which("memcached") or "/usr/bin/memcached", "-l", "127.0.0.1", "-p",
             str(self.port), "-U", "0", "-t", "1", "-m", "64"]
            + (["-u", "root"] if os.geteuid() == 0 else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, data, terminators):
        self.sock.sendall(data)
        while True:
            for t in terminators:
                if self.buf.endswith(t):
                    out, self.buf = self.buf, b""
                    return out
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("proxy closed the connection")
            self.buf += chunk


def topology(servers, hash_by, window_ms):
    lines = ["pools:", "  - name: main", "    hashBy: %s" % hash_by,
             "    warmup: {durationMs: %d}" % window_ms,
             "    migration: {durationMs: %d}" % window_ms, "    zones:"]
    for zone in ZONES:
        lines.append("      %s:" % zone)
        for m in servers[zone]:
            lines.append('        - {address: "127.0.0.1:%d", name: %s}' % (m.port, m.name))
    lines += ["timeouts: {connectMs: 200, requestMs: 500}",
              "health: {failureLimit: 2, downRetryMs: 100, maxDownRetryMs: 400, checkIntervalMs: 200}"]
    return "\n".join(lines) + "\n"


class Load(threading.Thread):
    """The cache-aside client and its model. Per-second buckets of (gets, hits)."""

    def __init__(self, port, keys, zipf_s, seed):
        super().__init__(daemon=True)
        self.conn = Conn(port)
        self.rng = random.Random(seed)
        weights = [1.0 / (i + 1) ** zipf_s for i in range(keys)]
        total, acc = sum(weights), 0.0
        self.cdf = []
        for w in weights:
            acc += w / total
            self.cdf.append(acc)
        self.keys = keys
        self.version = [1] * keys  # the "database": current version of each key
        self.buckets = {}
        self.stale = 0
        self.errors = 0
        self.stop = threading.Event()
        self.t0 = None

    def key(self, i):
        return b"churn:%d" % i

    @staticmethod
    def value(version):
        return b"%010d" % version + b"." * 22

    def set(self, i):
        v = self.value(self.version[i])
        r = self.conn.request(b"set %s 0 0 %d\r\n%s\r\n" % (self.key(i), len(v), v),
                              (b"\r\n",))
        if r != b"STORED\r\n":
            self.errors += 1

    def prefill(self):
        for i in range(self.keys):
            self.set(i)

    def run(self):
        self.t0 = time.monotonic()
        rng, cdf = self.rng, self.cdf
        while not self.stop.is_set():
            i = min(bisect.bisect_left(cdf, rng.random()), self.keys - 1)
            op = rng.random()
            if op < 0.05:  # update: database first, then the cache
                self.version[i] += 1
                self.set(i)
            elif op < 0.10:  # invalidation: database first, then delete the cached value
                self.version[i] += 1
                r = self.conn.request(b"delete %s\r\n" % self.key(i), (b"\r\n",))
                if r not in (b"DELETED\r\n", b"NOT_FOUND\r\n"):
                    self.errors += 1
            else:
                r = self.conn.request(b"get %s\r\n" % self.key(i), (b"END\r\n", b"ERROR\r\n"))
                second = int(time.monotonic() - self.t0)
                gets, hits, stale = self.buckets.get(second, (0, 0, 0))
                hit = r.startswith(b"VALUE")
                if hit:
                    data = r.split(b"\r\n")[1]
                    if int(data[:10]) != self.version[i]:
                        self.stale += 1
                        stale += 1
                        hit = False  # a stale value is no hit (and the client keeps it)
                elif r.startswith(b"SERVER_ERROR") or r.startswith(b"ERROR"):
                    self.errors += 1
                else:
                    self.set(i)  # cache-aside fill
                self.buckets[second] = (gets + 1, hits + hit, stale)


def run_variant(args, name, hash_by, window_ms, move_keys):
    tmp = tempfile.mkdtemp(prefix="memzone-churn-")
    config = os.path.join(tmp, "topology.yaml")
    servers = {z: [Memcached("%s-%d" % (z, i)) for i in range(3)] for z in ZONES}
    everything = [m for z in ZONES for m in servers[z]]
    port = free_port()
    with open(config, "w") as f:
        f.write(topology(servers, hash_by, window_ms))
    proxy = subprocess.Popen([os.path.join(args.build, "proxy/memzone-proxy"), "--listen",
                              "127.0.0.1:%d" % port, "--zone", "a", "--threads", "1",
                              "--config", config, "--move-keys", "on" if move_keys else "off"],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "proxy.log"), "w"))
    wait_for_port(port, proxy)
    ctl = Conn(port)

    def apply():
        before = stats_version()
        with open(config + ".tmp", "w") as f:
            f.write(topology(servers, hash_by, window_ms))
        os.rename(config + ".tmp", config)
        proxy.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while stats_version() == before:
            if time.monotonic() > deadline:
                sys.exit("churn: the proxy did not apply the topology")
            time.sleep(0.01)

    def stats_version():
        text = ctl.request(b"stats\r\n", (b"END\r\n",)).decode()
        for line in text.splitlines():
            if line.startswith("STAT proxy_topology_version "):
                return line.split()[2]
        return None

    load = Load(port, args.keys, args.zipf, seed=14)
    load.prefill()
    load.start()
    events = []
    time.sleep(args.steady)
    # (a) rolling restart: each server of zone a comes back empty on a new port, same name.
    events.append(("rolling restart", time.monotonic() - load.t0))
    for i in range(3):
        old = servers["a"][i]
        old.kill()
        servers["a"][i] = Memcached(old.name)
        everything.append(servers["a"][i])
        apply()
        time.sleep(args.gap)
    time.sleep(args.settle - args.gap)
    # (b) scale-out 3 -> 4.
    events.append(("scale-out 3->4", time.monotonic() - load.t0))
    servers["a"].append(Memcached("a-3"))
    everything.append(servers["a"][3])
    apply()
    time.sleep(args.settle)
    # (c) scale-in 4 -> 3.
    events.append(("scale-in 4->3", time.monotonic() - load.t0))
    gone = servers["a"].pop()
    apply()
    gone.kill()
    time.sleep(args.settle)
    end = time.monotonic() - load.t0
    load.stop.set()
    load.join(timeout=10)
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(timeout=15)
    for m in everything:
        m.kill()

    seconds = sorted(s for s in load.buckets if s < int(end))
    rate = {s: load.buckets[s][1] / load.buckets[s][0] for s in seconds if load.buckets[s][0]}
    first_event = int(events[0][1])
    # The prefill leaves every key cached; deletes bring the hit rate down to its equilibrium
    # within seconds: the steady rate is the second half of the steady phase.
    steady_seconds = [s for s in seconds if first_event // 2 <= s < first_event]
    steady = sum(rate[s] for s in steady_seconds) / max(1, len(steady_seconds))
    lost = []
    bounds = [int(t) for _, t in events] + [int(end)]
    for e, (label, _) in enumerate(events):
        total, clipped, low, stale = 0.0, 0.0, 1.0, 0
        for s in range(bounds[e], bounds[e + 1]):
            if s in rate:
                clipped += max(0.0, steady - rate[s]) * load.buckets[s][0]
                # Signed per second: clipping each second at zero would count the noise
                # below the steady rate (±0.3 points at ~5k gets/s) as loss and never the
                # noise above it, ~600 "lost" hits per 75 s with no event at all.
                total += (steady - rate[s]) * load.buckets[s][0]
                low = min(low, rate[s])
                stale += load.buckets[s][2]
        lost.append((label, max(0.0, total), low / steady if steady else 0, stale, clipped))
    print("%s: per second (gets, hits, stale): %s" % (
        name, " ".join("%d:%d/%d/%d" % ((s,) + load.buckets[s]) for s in seconds)), file=sys.stderr)
    return {"name": name, "rate": rate, "steady": steady, "lost": lost, "events": events,
            "stale": load.stale, "errors": load.errors,
            "gets": sum(load.buckets[s][0] for s in seconds)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--zipf", type=float, default=0.9)
    ap.add_argument("--steady", type=float, default=16)
    ap.add_argument("--gap", type=float, default=4, help="seconds between restarts")
    ap.add_argument("--settle", type=float, default=30,
                    help="seconds from the last restart to the scale-out, to the scale-in, to the end")
    ap.add_argument("--window-ms", type=int, default=25000,
                    help="warm-up and migration windows of names+windows (the default is 60000)")
    ap.add_argument("--only", default="",
                    help="comma-separated variants to run (address, the baseline, always runs)")
    ap.add_argument("--plot", default="")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    variants = [("address", "address", 0, False), ("names", "name", 0, False),
                ("names+windows", "name", args.window_ms, False),
                ("names+windows+moves", "name", args.window_ms, True)]
    if args.only:
        variants = [v for v in variants if v[0] in args.only.split(",") or v[0] == "address"]
    results = [run_variant(args, *v) for v in variants]

    base = results[0]
    print("%-20s %8s %6s %7s | %s" % ("variant", "gets", "steady", "stale",
                                       " | ".join("%-36s" % e[0] for e in base["lost"])))
    for r in results:
        cells = []
        for (label, lost, low, stale, _), base_event in zip(r["lost"], base["lost"]):
            base_lost = base_event[1]
            cells.append("%-36s" % ("lost %6d (%3.0f%%) min %3.0f%% stale %d" % (
                lost, 100.0 * lost / base_lost if base_lost else 0, 100 * low, stale)))
        print("%-20s %8d %5.1f%% %7d | %s" % (r["name"], r["gets"], 100 * r["steady"],
                                               r["stale"], " | ".join(cells)))
        if r["errors"]:
            print("  (%d error replies)" % r["errors"])
    if args.markdown:
        print()
        print("| variant | steady hit rate | stale reads | " +
              " | ".join("%s: lost hits (%% of address), per-second clipped sum, lowest hit "
                         "rate (%% of steady), stale" % e[0] for e in base["lost"]) + " |")
        print("|---|---|---|" + "---|" * len(base["lost"]))
        for r in results:
            cells = ["%d (%.0f%%), %d, %.0f%%, %d" % (lost, 100.0 * lost / b[1] if b[1] else 0,
                                                     clipped, 100 * low, stale)
                     for (_, lost, low, stale, clipped), b in zip(r["lost"], base["lost"])]
            print("| %s | %.1f%% | %d | %s |" % (r["name"], 100 * r["steady"], r["stale"],
                                                  " | ".join(cells)))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(10, 4.5))
        for r in results:
            xs = sorted(r["rate"])
            ax.plot(xs, [100 * r["rate"][x] for x in xs], label=r["name"])
        for label, t in base["events"]:
            ax.axvline(t, color="grey", linestyle=":")
            ax.text(t + 0.3, 1, label, rotation=90, va="bottom", fontsize=8)
        ax.set_xlabel("seconds")
        ax.set_ylabel("hit rate through the proxy (%)")
        ax.set_ylim(0, 100)
        ax.set_title("memzone hit rate through Kubernetes-style churn (zone a: 3 memcached)")
        ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print("plot: %s" % args.plot)


if __name__ == "__main__":
    main()
