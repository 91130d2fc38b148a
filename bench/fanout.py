#!/usr/bin/python3
"""memzone fan-out benchmark: one memzone-controller, N simulated proxies on its topology stream.

memzone-fanout (bench/fanout.cc) opens N streams, each on its own gRPC channel and TCP
connection, says hello like memzone-proxy and ACKs every snapshot. The controller runs the file
source (polled every 10 ms) on a topology of 3 pools x 3 zones x 3 servers. Measured:

- connect: time until all N streams are up and have ACKed the first snapshot;
- change -> ACK: the topology file is replaced (t0, just before the rename); per proxy, the time
  until it ACKed the new version; per change, the time until the last proxy did;
- controller CPU-seconds (utime + stime from /proc) per change, and idle (keepalive pings);
- controller RSS (VmRSS) before and with N proxies, and its peak (VmHWM);
- stream storm: every stream cancelled at once and reopened (connections kept);
- restart storm: the controller is killed and restarted; all N reconnect (TCP, HTTP/2, stream)
  with the version they serve, so nothing needs sending.

The simulated proxies run on the same cores as the controller (--client-nice 19 lets the
controller have them first, closer to proxies on their own nodes).

Not a test: numbers depend on the machine (and the simulated proxies share its cores).

    bench/fanout.py [--build build] [--proxies 1000 5000] [--changes 20] [--client-nice 19] [--markdown]
"""
import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("fanout: %s exited with %s" % (proc.args[0], proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit("fanout: nothing on port %d" % port)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    return out


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def topology(change):
    """3 pools x 3 zones x 3 servers; `change` moves one server's port."""
    lines = ["pools:"]
    for p in range(3):
        lines += ["  - name: pool%d" % p, "    zones:"]
        for z in range(3):
            servers = ['"10.%d.%d.%d:11211"' % (p, z, s + 1) for s in range(3)]
            if p == 0 and z == 0:
                servers[0] = '"10.0.0.1:%d"' % (20000 + change)
            lines.append("      zone-%s: [%s]" % ("abc"[z], ", ".join(servers)))
    lines += ["routes:"] + ['  - {prefix: "p%d:", pool: pool%d}' % (p, p) for p in range(3)]
    return "\n".join(lines) + "\n"


class Controller:
    def __init__(self, binary, config, log_path):
        self.binary, self.config, self.log_path = binary, config, log_path
        self.port = free_port()
        self.proc = None

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.binary, "--source", "file", "--config", self.config,
                                      "--poll-interval-ms", "10", "--grpc-listen", "127.0.0.1:%d" % self.port],
                                     stdout=log, stderr=log)
        wait_for_port(self.port, self.proc)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def pid(self):
        return self.proc.pid


class Fanout:
    def __init__(self, binary, target, proxies, nice=0):
        self.proc = subprocess.Popen([binary, "--controller", target, "--proxies", str(proxies)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                sys.exit("fanout: no %s within %.0f s" % (what, timeout))
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(event):
                return event

    def quit(self):
        try:
            self.send("quit")
            self.proc.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def run(args):
    controller_bin = os.path.join(args.build, "controlplane/memzone-controller")
    fanout_bin = os.path.join(args.build, "bench/memzone-fanout")
    work = tempfile.mkdtemp(prefix="memzone-fanout-")
    config = os.path.join(work, "topology.yaml")
    write_atomically(config, topology(0))
    controller = Controller(controller_bin, config, os.path.join(work, "controller.log")).start()
    time.sleep(0.5)
    r = {"proxies": args.proxies, "changes": args.changes, "client_nice": args.client_nice,
         "loadavg_before": os.getloadavg()[0]}
    r["rss_base_mb"] = memory_mb(controller.pid)["VmRSS"]
    n = args.proxies

    # Connect: all N streams up and the first snapshot ACKed by all.
    cpu0, t0 = cpu_seconds(controller.pid), time.monotonic_ns()
    fanout = Fanout(fanout_bin, "127.0.0.1:%d" % controller.port, n, args.client_nice)
    try:
        fanout.wait(lambda e: e["event"] == "version", args.timeout, "first snapshot ACKed by all")
        r["connect_s"] = (time.monotonic_ns() - t0) / 1e9
        r["connect_cpu_s"] = cpu_seconds(controller.pid) - cpu0
        time.sleep(1.0)
        r["rss_connected_mb"] = memory_mb(controller.pid)["VmRSS"]

        # Changes.
        per_proxy, last, first, cpu = [], [], [], 0.0
        client_cpu = 0.0
        for change in range(1, args.changes + 1):
            c0, f0 = cpu_seconds(controller.pid), cpu_seconds(fanout.proc.pid)
            t0 = time.monotonic_ns()
            write_atomically(config, topology(change))
            event = fanout.wait(lambda e: e["event"] == "version", args.timeout, "change %d ACKed" % change)
            cpu += cpu_seconds(controller.pid) - c0
            client_cpu += cpu_seconds(fanout.proc.pid) - f0
            per_proxy += [(t - t0) / 1e6 for t in event["acks"]]
            last.append((event["last_ack"] - t0) / 1e6)
            first.append((event["first_received"] - t0) / 1e6)
            time.sleep(args.pause)
        r["change_cpu_s"] = cpu / args.changes
        r["change_client_cpu_s"] = client_cpu / args.changes  # the simulated proxies, same cores
        r["ack_ms"] = {"p50": percentile(per_proxy, 50), "p99": percentile(per_proxy, 99), "max": max(per_proxy)}
        r["last_ack_ms"] = {"p50": percentile(last, 50), "p99": percentile(last, 99), "max": max(last)}
        r["first_received_ms_p50"] = percentile(first, 50)
        mem = memory_mb(controller.pid)
        r["rss_after_changes_mb"], r["hwm_mb"] = mem["VmRSS"], mem["VmHWM"]

        # Idle: keepalive pings both ways, nothing else.
        c0, w0 = cpu_seconds(controller.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        r["idle_cpu_pct"] = 100.0 * (cpu_seconds(controller.pid) - c0) / (time.monotonic() - w0)

        # Stream storm: every stream cancelled at once, reopened at once.
        fanout.send("count")
        fanout.wait(lambda e: e["event"] == "count", 30, "count")
        c0, t0 = cpu_seconds(controller.pid), time.monotonic_ns()
        fanout.send("storm")
        event = fanout.wait(lambda e: e["event"] == "established", args.timeout, "streams back after the storm")
        r["stream_storm_s"] = (event["t"] - t0) / 1e9
        time.sleep(0.5)
        r["stream_storm_cpu_s"] = cpu_seconds(controller.pid) - c0
        fanout.send("count")
        r["stream_storm_snapshots"] = fanout.wait(lambda e: e["event"] == "count", 30, "count")["snapshots"]

        # Restart storm: the controller dies and comes back; every proxy reconnects.
        controller.kill()
        time.sleep(1.0)
        fanout.send("storm")  # reset the counters; streams are already failing
        controller.start()
        c0, t0 = cpu_seconds(controller.pid), time.monotonic_ns()
        event = fanout.wait(lambda e: e["event"] == "established", args.timeout, "proxies back after the restart")
        r["restart_storm_s"] = (event["t"] - t0) / 1e9
        time.sleep(0.5)
        r["restart_storm_cpu_s"] = cpu_seconds(controller.pid) - c0
        mem = memory_mb(controller.pid)
        r["restart_rss_mb"], r["restart_hwm_mb"] = mem["VmRSS"], mem["VmHWM"]
        fanout.send("count")
        r["restart_storm_snapshots"] = fanout.wait(lambda e: e["event"] == "count", 30, "count")["snapshots"]
    finally:
        print("fanout: %s" % json.dumps(r), file=sys.stderr)  # what was measured, even on failure
        fanout.quit()
        controller.kill()
    with open(os.path.join(work, "controller.log")) as f:
        r["log_lines"] = sum(1 for _ in f)
    r["loadavg_after"] = os.getloadavg()[0]  # this machine is shared: say how busy it was
    return r


def markdown(results):
    rows = ["| proxies | connect (s) | change→ACK p50 / p99 / max (ms) | change→last ACK p50 / max (ms) "
            "| CPU-s per change per 1k (simulated proxies) | idle CPU % per 1k | RSS base → N (MB) | RSS per 1k (MB) "
            "| peak (MB) | stream storm (s, CPU-s) | restart storm (s, CPU-s, resent) |",
            "|---:|---:|---|---|---|---:|---|---:|---:|---|---|"]
    for r in results:
        k = r["proxies"] / 1000.0
        rows.append("| %d | %.2f | %.0f / %.0f / %.0f | %.0f / %.0f | %.3f (%.3f) | %.2f | %.0f → %.0f | %.1f | %.0f | %.2f, %.2f | %.2f, %.2f, %d |" % (
            r["proxies"], r["connect_s"], r["ack_ms"]["p50"], r["ack_ms"]["p99"], r["ack_ms"]["max"],
            r["last_ack_ms"]["p50"], r["last_ack_ms"]["max"], r["change_cpu_s"] / k, r["change_client_cpu_s"] / k,
            r["idle_cpu_pct"] / k,
            r["rss_base_mb"], r["rss_connected_mb"], (r["rss_connected_mb"] - r["rss_base_mb"]) / k,
            max(r["hwm_mb"], r["restart_hwm_mb"]), r["stream_storm_s"], r["stream_storm_cpu_s"],
            r["restart_storm_s"], r["restart_storm_cpu_s"], r["restart_storm_snapshots"]))
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--proxies", type=int, nargs="+", default=[5000])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between changes")
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--client-nice", type=int, default=0,
                        help="run the simulated proxies at this nice level (they share the controller's cores)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every change reached every proxy and no storm resent a snapshot")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    results = []
    for n in args.proxies:
        a = argparse.Namespace(**vars(args))
        a.proxies = n
        results.append(run(a))
        print(json.dumps(results[-1]), file=sys.stderr if args.markdown else sys.stdout)
    if args.markdown:
        print(markdown(results))
    if args.check:
        bad = [r for r in results if r.get("restart_storm_snapshots") != 0 or r.get("stream_storm_snapshots") != 0
               or "ack_ms" not in r]
        if bad:
            sys.exit("fanout: check failed: %s" % json.dumps(bad))


if __name__ == "__main__":
    main()
