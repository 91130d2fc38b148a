#!/usr/bin/python3
"""Multi-get CPU per operation: memaslap (libmemcached-tools' `memcaslap`) with 10 keys per get
(`--division=10`, 90% get / 10% set, 100-byte values, 50 connections, one thread), against
memzone-proxy (this build, and --against another build's), memcached's built-in proxy
(--mcproxy PATH, built by hand) and twemproxy, each in front of its own memcached, and
memcached directly. Targets alternate between rounds; CPU-seconds per million memaslap
operations from /proc. Not a test: numbers depend on the machine.

    bench/multiget.py [--build build] [--against BUILD] [--mcproxy PATH] [--seconds 5]
                      [--rounds 3] [--markdown]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Processes, cpu_seconds, round_order, write_topology  # noqa: E402

# memaslap's configuration: key and value sizes, then the command mix (0 = set, 1 = get).
CONFIG = "key\n100 100 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n"


def memaslap(port, seconds, work):
    cfg = os.path.join(work, "memaslap.cfg")
    with open(cfg, "w") as f:
        f.write(CONFIG)
    out = subprocess.run(["memcaslap", "-s", "127.0.0.1:%d" % port, "-T", "1", "-c", "50",
                          "-t", "%ds" % seconds, "-d", "10", "-F", cfg],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Run time") and "Ops:" in parts:
            return float(parts[parts.index("Ops:") + 1])
    sys.exit("bench: memcaslap printed no result:\n" + out[-500:])


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=os.path.join(root, "build"))
    parser.add_argument("--against", metavar="BUILD")
    parser.add_argument("--mcproxy", metavar="PATH")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if shutil.which("memcaslap") is None:
        sys.exit("bench: memcaslap is missing (libmemcached-tools)")
    memcached = shutil.which("memcached")
    procs = Processes()
    work = tempfile.mkdtemp(prefix="memzone-multiget-")
    try:
        targets = []  # (name, port, pid)
        builds = [("memzone (this build)", args.build)]
        if args.against:
            builds.append(("memzone (other build)", args.against))
        for name, build in builds:
            mc = procs.memcached(memcached, 1)
            port, p = procs.memzone(os.path.join(build, "proxy", "memzone-proxy"),
                                    write_topology(work, mc, "topology-%d.yaml" % mc))
            targets.append((name, port, p.pid))
        if args.mcproxy:
            mc = procs.memcached(memcached, 1)
            port, p = procs.mcproxy(args.mcproxy, work, [mc])
            targets.append(("memcached built-in proxy", port, p.pid))
        if shutil.which("nutcracker"):
            mc = procs.memcached(memcached, 1)
            port, p = procs.nutcracker(shutil.which("nutcracker"), work, mc)
            targets.append(("twemproxy", port, p.pid))
        direct = procs.memcached(memcached, 1)
        targets.append(("memcached (direct)", direct, procs.procs[-1].pid))
        totals = {name: [0.0, 0.0] for name, _, _ in targets}
        for round_ in range(args.rounds):
            for name, port, pid in round_order(targets, round_):
                before = cpu_seconds(pid)
                ops = memaslap(port, args.seconds, work)
                cpu = cpu_seconds(pid) - before
                totals[name][0] += cpu
                totals[name][1] += ops
                print("round %d %-26s %9.0f ops/s  CPU %.2f s per 1M ops" %
                      (round_ + 1, name, ops / args.seconds, cpu / ops * 1e6), flush=True)
        print()
        if args.markdown:
            print("| target | ops/s | CPU-s / 1M ops |")
            print("|---|---:|---:|")
        for name, (cpu, ops) in totals.items():
            rate = ops / (args.seconds * args.rounds)
            if args.markdown:
                print("| %s | %.0f | %.2f |" % (name, rate, cpu / ops * 1e6))
            else:
                print("%-26s %9.0f ops/s  CPU %.2f s per 1M ops" % (name, rate, cpu / ops * 1e6))
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
