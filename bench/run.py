#!/usr/bin/python3
"""memzone benchmark: one workload against memcached directly, memzone-proxy in front of
it, and twemproxy (nutcracker) in front of it, in one run on this machine.

Workload: 90% get / 10% set, 100-byte values, 100k keys (prefilled), 50 connections,
once request/response (depth 1) and once pipelined (depth 16 per connection).
Prints ops/s, p50/p99 latency and the proxy's CPU-seconds per million requests, read from
/proc/PID/stat around the measured interval. Not a test: numbers depend on the machine.

    bench/run.py [--build build] [--seconds 10] [--rounds 3] [--proxy-threads 1] [--markdown]
    bench/run.py --replication [--seconds 10] [--markdown]
    bench/run.py --metrics-cost build-nometrics [--seconds 10] [--rounds 3]

--metrics-cost compares the proxy's CPU per request with and without per-request metrics
(a second build configured with -DMEMZONE_BENCH_NO_REQUEST_METRICS=ON), runs alternating.

--replication compares, through memzone-proxy only, a pool in one zone with the same pool
replicated to three zones (one memcached per zone; wait: local and wait: all), for a
write-only and a read-only workload (pipelined, depth 16): the proxy's CPU per request.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("bench: %s exited with %s" % (proc.args[0], proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("bench: nothing on port %d" % port)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class Processes:
    def __init__(self):
        self.procs = []

    def start(self, cmd, port):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_for_port(port, proc)
        return proc

    def memcached(self, binary, threads):
        """A memcached on 127.0.0.1 (256 MiB); returns its port."""
        port = free_port()
        user = ["-u", "root"] if os.geteuid() == 0 else []
        self.start([binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "256",
                    "-t", str(threads), "-c", "4096"] + user, port)
        return port

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def run_load(loadgen, port, args, depth, prefill=False, get_ratio=0.9):
    cmd = [loadgen, "--server", "127.0.0.1:%d" % port, "--connections", "50",
           "--depth", str(depth), "--seconds", str(args.seconds), "--keys", "100000",
           "--value-size", "100", "--get-ratio", str(get_ratio)]
    if prefill:
        cmd.append("--prefill")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    if out.returncode != 0:
        sys.exit("bench: loadgen failed: %s" % out.stderr.strip())
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--build", default=os.path.join(root, "build"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--proxy-threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--replication", action="store_true",
                        help="compare unreplicated and 3-zone replicated pools")
    parser.add_argument("--metrics-cost", metavar="BUILD", help="a build without request metrics")
    parser.add_argument("--against", metavar="BUILD",
                        help="compare this build's proxy CPU per request with another build's")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.replication:
        return run_replication(args)
    if args.metrics_cost:
        return run_build_comparison(args, {"with metrics": args.build,
                                           "without metrics": args.metrics_cost}, (16,))
    if args.against:
        return run_build_comparison(args, {"this build": args.build, "other build": args.against},
                                    (1, 16))

    loadgen = os.path.join(args.build, "bench/memzone-loadgen")
    proxy = os.path.join(args.build, "proxy/memzone-proxy")
    for tool in (loadgen, proxy):
        if not os.access(tool, os.X_OK):
            sys.exit("bench: %s missing; run scripts/build.sh" % tool)
    nutcracker = shutil.which("nutcracker")
    memcached = shutil.which("memcached") or sys.exit("bench: memcached not installed")

    work = tempfile.mkdtemp(prefix="memzone-bench-")
    procs = Processes()
    try:
        mc_port = procs.memcached(memcached, threads=2)
        targets = [("memcached (direct)", mc_port, None)]

        proxy_port = free_port()
        topology = os.path.join(work, "topology.yaml")
        with open(topology, "w") as f:
            f.write('pools:\n  - name: main\n    zones:\n      a: ["127.0.0.1:%d"]\n' % mc_port)
        p = procs.start([proxy, "--listen", "127.0.0.1:%d" % proxy_port, "--zone", "a",
                         "--config", topology, "--threads", str(args.proxy_threads)], proxy_port)
        targets.append(("memzone-proxy (%d thread%s)" % (args.proxy_threads, "s" * (args.proxy_threads > 1)),
                        proxy_port, p.pid))

        if nutcracker:
            tw_port = free_port()
            conf = os.path.join(work, "nutcracker.yml")
            with open(conf, "w") as f:
                f.write("bench:\n  listen: 127.0.0.1:%d\n  hash: md5\n  distribution: ketama\n"
                        "  timeout: 1000\n  backlog: 1024\n  server_connections: 1\n"
                        "  servers:\n    - 127.0.0.1:%d:1\n" % (tw_port, mc_port))
            t = procs.start([nutcracker, "-c", conf, "-s", str(free_port()), "-o",
                             os.path.join(work, "nutcracker.log"), "-v", "0"], tw_port)
            targets.append(("twemproxy (nutcracker)", tw_port, t.pid))

        run_load(loadgen, mc_port, argparse.Namespace(seconds=0.5), 1, prefill=True)
        rows = []
        # Targets alternate within each round, so a noisy neighbour on a shared machine hits
        # all of them alike; totals over the rounds are what the table shows.
        for depth in (1, 16):
            totals = {name: {"ops": 0, "seconds": 0.0, "cpu": 0.0, "p50": [], "p99": []}
                      for name, _, _ in targets}
            for round_ in range(args.rounds):
                for name, port, pid in targets:
                    before = cpu_seconds(pid) if pid else None
                    result = run_load(loadgen, port, args, depth)
                    t = totals[name]
                    t["ops"] += result["ops"]
                    t["seconds"] += result["seconds"]
                    t["p50"].append(result["p50_us"])
                    t["p99"].append(result["p99_us"])
                    if pid:
                        t["cpu"] += cpu_seconds(pid) - before
            for name, port, pid in targets:
                t = totals[name]
                result = {"ops_per_sec": t["ops"] / t["seconds"], "p50_us": sorted(t["p50"])[len(t["p50"]) // 2],
                          "p99_us": sorted(t["p99"])[len(t["p99"]) // 2], "ops": t["ops"]}
                per_million = t["cpu"] / t["ops"] * 1e6 if pid else None
                rows.append((depth, name, result, per_million))
                print("depth %-2d %-28s %9.0f ops/s  p50 %7.1f us  p99 %8.1f us  %s" % (
                    depth, name, result["ops_per_sec"], result["p50_us"], result["p99_us"],
                    "proxy CPU %.2f s per 1M req" % per_million if per_million is not None else ""),
                    flush=True)
        if args.markdown:
            print()
            print("| pipeline depth | target | ops/s | p50 (µs) | p99 (µs) | proxy CPU-s / 1M req |")
            print("|---|---|---:|---:|---:|---:|")
            for depth, name, r, per_million in rows:
                print("| %d | %s | %.0f | %.1f | %.1f | %s |" % (
                    depth, name, r["ops_per_sec"], r["p50_us"], r["p99_us"],
                    "%.2f" % per_million if per_million is not None else "—"))
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_build_comparison(args, builds, depths):
    """Proxy CPU per request of two builds (the first is the one measured against), their
    runs alternating within each round."""
    loadgen = os.path.join(args.build, "bench/memzone-loadgen")
    binaries = {name: os.path.join(build, "proxy/memzone-proxy") for name, build in builds.items()}
    memcached = shutil.which("memcached") or sys.exit("bench: memcached not installed")
    work = tempfile.mkdtemp(prefix="memzone-bench-")
    procs = Processes()
    try:
        mc_port = procs.memcached(memcached, threads=2)
        run_load(loadgen, mc_port, argparse.Namespace(seconds=0.5), 1, prefill=True)
        topology = os.path.join(work, "topology.yaml")
        with open(topology, "w") as f:
            f.write('pools:\n  - name: main\n    zones:\n      a: ["127.0.0.1:%d"]\n' % mc_port)
        names = list(binaries)
        for depth in depths:
            totals = {name: [0.0, 0] for name in names}
            for round_ in range(args.rounds):
                for name in names:
                    port = free_port()
                    p = procs.start([binaries[name], "--listen", "127.0.0.1:%d" % port, "--zone",
                                     "a", "--config", topology, "--threads", "1"], port)
                    before = cpu_seconds(p.pid)
                    result = run_load(loadgen, port, args, depth)
                    cpu = cpu_seconds(p.pid) - before
                    totals[name][0] += cpu
                    totals[name][1] += result["ops"]
                    print("depth %-2d round %d %-16s %9.0f ops/s  proxy CPU %.3f s per 1M req" % (
                        depth, round_ + 1, name, result["ops_per_sec"], cpu / result["ops"] * 1e6),
                        flush=True)
                    p.terminate()
                    p.wait(timeout=15)
            per_m = {n: t[0] / t[1] * 1e6 for n, t in totals.items()}
            first, second = names
            diff = (per_m[first] - per_m[second]) / per_m[second] * 100
            print("\ndepth %d over %d rounds: %s %.3f vs %s %.3f CPU-s per 1M requests: %+.1f%%\n"
                  % (depth, args.rounds, first, per_m[first], second, per_m[second], diff),
                  flush=True)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_replication(args):
    loadgen = os.path.join(args.build, "bench/memzone-loadgen")
    proxy = os.path.join(args.build, "proxy/memzone-proxy")
    memcached = shutil.which("memcached") or sys.exit("bench: memcached not installed")
    work = tempfile.mkdtemp(prefix="memzone-bench-")
    procs = Processes()
    try:
        ports = [procs.memcached(memcached, threads=1) for _ in range(3)]
        for port in ports:
            run_load(loadgen, port, argparse.Namespace(seconds=0.5), 1, prefill=True)
        configs = [
            ("1 zone (unreplicated)", '      a: ["127.0.0.1:%d"]\n' % ports[0], "local"),
            ("3 zones, wait: local", "".join('      %s: ["127.0.0.1:%d"]\n' % (z, p)
                                             for z, p in zip("abc", ports)), "local"),
            ("3 zones, wait: all", "".join('      %s: ["127.0.0.1:%d"]\n' % (z, p)
                                           for z, p in zip("abc", ports)), "all"),
        ]
        rows = []
        for name, zones, wait in configs:
            path = os.path.join(work, "%s.yaml" % wait + str(len(rows)))
            with open(path, "w") as f:
                f.write("pools:\n  - name: main\n    zones:\n%s    replication: {wait: %s}\n"
                        "timeouts: {requestMs: 1000}\n" % (zones, wait))
            port = free_port()
            p = procs.start([proxy, "--listen", "127.0.0.1:%d" % port, "--zone", "a", "--config",
                             path, "--threads", "1"], port)
            for workload, ratio in (("writes", 0.0), ("reads", 1.0)):
                before = cpu_seconds(p.pid)
                result = run_load(loadgen, port, args, 16, get_ratio=ratio)
                per_million = (cpu_seconds(p.pid) - before) / result["ops"] * 1e6
                rows.append((name, workload, result, per_million))
                print("%-24s %-6s %9.0f ops/s  p50 %7.1f us  p99 %8.1f us  proxy CPU %.2f s per 1M req"
                      % (name, workload, result["ops_per_sec"], result["p50_us"], result["p99_us"],
                         per_million), flush=True)
            p.terminate()
            p.wait(timeout=15)
        if args.markdown:
            print()
            print("| pool | workload | ops/s | p50 (µs) | p99 (µs) | proxy CPU-s / 1M req |")
            print("|---|---|---:|---:|---:|---:|")
            for name, workload, r, per_million in rows:
                print("| %s | %s | %.0f | %.1f | %.1f | %.2f |" % (
                    name, workload, r["ops_per_sec"], r["p50_us"], r["p99_us"], per_million))
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
