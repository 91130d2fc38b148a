#!/usr/bin/python3
"""memzone benchmark: one workload against memcached directly, memzone-proxy in front of
it, memcached's built-in proxy in front of it (--mcproxy PATH) and twemproxy (nutcracker) in
front of it, in one run on this machine.

Workload: 90% get / 10% set, 100-byte values, 100k keys (prefilled), 50 connections,
once request/response (depth 1) and once pipelined (depth 16 per connection).
Prints ops/s, p50/p99 latency and each proxy's CPU-seconds per million requests, user and
system apart, read from /proc/PID/stat around the measured interval (for memcached direct:
memcached's own), and how each proxy compares with memcached itself and with memcached's
built-in proxy. The order of the targets rotates from one round to the next (the first
target after a start measures differently). Not a test: numbers depend on the machine.

    bench/run.py [--build build] [--seconds 10] [--rounds 4] [--proxy-threads 1] [--markdown]
                 [--mcproxy PATH]
    bench/run.py --against OTHER_BUILD [--mcproxy PATH] [--seconds 10] [--rounds 4] [--markdown]
    bench/run.py --replication [--seconds 10] [--markdown]
    bench/run.py --tls [--seconds 10] [--rounds 3] [--markdown]
    bench/run.py --metrics-cost build-nometrics [--seconds 10] [--rounds 3]
    bench/run.py --hostile [--slow 200] [--huge 4] [--huge-keys 4000000] [--seconds 8]
                           [--budget 64M] [--plot FILE] [--markdown]
                           [--proxy-build BUILD] [--compare-build BUILD] [--rss-cap MIB]

--mcproxy PATH is a memcached built with --enable-proxy (built by hand from memcached's
source, never by a script here); the runner writes its Lua route config (every command to
the same memcached) to a temporary directory and starts it with --threads workers.

--against compares this build's proxy with another build's (first: this one), each run with
a freshly started proxy, at depth 1 and 16; with --mcproxy also memcached's built-in proxy
and memcached itself.

--metrics-cost compares the proxy's CPU per request with and without per-request metrics
(a second build configured with -DMEMZONE_BENCH_NO_REQUEST_METRICS=ON), runs alternating.

--hostile measures well-behaved clients (memzone-loadgen, 90% get / 10% set of 100-byte
values: 20 request/response connections and 4 pipelining 16 deep, at once) first alone, then
with N slow readers attached (each pipelines 50 gets of a 1 MB value and reads 1 KiB per
second), then with M huge-multi-get attackers (each sends one `get` of --huge-keys keys and
never reads), against memcached directly, memzone-proxy (--max-buffer-memory BUDGET) and
twemproxy, sampling each target's RSS every 100 ms. It reports each phase's peak RSS and the
well-behaved clients' errors (replies that are not theirs to expect: SERVER_ERROR, a closed
connection). --plot draws the RSS curves (matplotlib). A target whose RSS passes --rss-cap has
its attackers stopped early (twemproxy buffers without bound).

--tls measures what TLS costs (certificates made with the openssl CLI): memcached directly,
plaintext and with -Z; memzone-proxy plaintext, with client TLS (a tls: listener), with
backend TLS (a pool with tls: to memcached -Z), and both; each target's CPU per request (the
proxy's, or memcached's when direct), pipelined (depth 16) and request/response (depth 1).
Then the proxy's CPU per client handshake, full and resumed (TLS 1.3 tickets).

--replication compares, through memzone-proxy only, a pool in one zone with the same pool
replicated to three zones (one memcached per zone; wait: local and wait: all), for a
write-only and a read-only workload (pipelined, depth 16): the proxy's CPU per request.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from benchlib import (Processes, cpu_seconds, cpu_times, free_port, round_order, run_load,
                      write_topology)
from hostile import run_hostile


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
    parser.add_argument("--mcproxy", metavar="PATH",
                        help="also measure memcached's built-in proxy: a memcached built with "
                             "--enable-proxy (default mode and --against)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tls", action="store_true",
                        help="what client and backend TLS cost the proxy, against memcached -Z")
    parser.add_argument("--hostile", action="store_true",
                        help="well-behaved clients' errors, throughput and p99, and RSS, with "
                             "slow readers and huge multi-gets attached")
    parser.add_argument("--slow", type=int, default=200, help="--hostile: slow readers")
    parser.add_argument("--huge", type=int, default=4, help="--hostile: huge-multi-get attackers")
    parser.add_argument("--huge-keys", type=int, default=4000000,
                        help="--hostile: keys in each attacker's one get (2 bytes each)")
    parser.add_argument("--budget", default="64M",
                        help="--hostile: memzone --max-buffer-memory ('none': not passed, for "
                             "builds that predate it)")
    parser.add_argument("--proxy-build", metavar="BUILD",
                        help="--hostile: take memzone-proxy from this build (default: --build)")
    parser.add_argument("--compare-build", metavar="BUILD",
                        help="--hostile: also measure this build's memzone-proxy, without "
                             "--max-buffer-memory (e.g. one from before the budget)")
    parser.add_argument("--plot", metavar="FILE", help="--hostile: write the RSS curves here (PNG)")
    parser.add_argument("--rss-cap", type=int, default=4096,
                        help="--hostile: MiB; stop a target's attackers past this RSS")
    args = parser.parse_args()
    if args.hostile:
        return run_hostile(args)
    if args.replication:
        return run_replication(args)
    if args.tls:
        return run_tls(args)
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
    check_mcproxy(args)
    nutcracker = shutil.which("nutcracker")
    memcached = shutil.which("memcached") or sys.exit("bench: memcached not installed")

    work = tempfile.mkdtemp(prefix="memzone-bench-")
    procs = Processes()
    try:
        mc_port = procs.memcached(memcached, threads=2)
        mc_pid = procs.procs[-1].pid
        # (name, port, pid whose CPU is measured, True for memcached itself)
        targets = [("memcached (direct)", mc_port, mc_pid, True)]
        port, p = procs.memzone(proxy, write_topology(work, mc_port), args.proxy_threads)
        targets.append(("memzone-proxy (%d thread%s)" % (
            args.proxy_threads, "s" * (args.proxy_threads > 1)), port, p.pid, False))
        if args.mcproxy:
            port, p = procs.mcproxy(args.mcproxy, work, [mc_port], args.proxy_threads)
            targets.append(("memcached built-in proxy", port, p.pid, False))
        if nutcracker:
            port, p = procs.nutcracker(nutcracker, work, mc_port)
            targets.append(("twemproxy (nutcracker)", port, p.pid, False))

        run_load(loadgen, mc_port, argparse.Namespace(seconds=0.5), 1, prefill=True)
        rows = []
        for depth in (1, 16):
            tallies = {name: Tally() for name, _, _, _ in targets}
            # Totals over the rounds are what the table shows: a noisy neighbour on a shared
            # machine hits every target alike, and the order rotates so none is always first.
            for round_ in range(args.rounds):
                for name, port, pid, _ in round_order(targets, round_):
                    tallies[name].measure(loadgen, port, pid, args, depth)
            rows += report(depth, [(name, tallies[name], own) for name, _, _, own in targets])
        if args.markdown:
            print_markdown(rows)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


class Tally:
    """One target's totals over the rounds: requests, seconds, its process's user and system
    CPU seconds, and each run's p50/p99."""

    def __init__(self):
        self.ops, self.seconds, self.user, self.system = 0, 0.0, 0.0, 0.0
        self.errors = 0
        self.p50, self.p99 = [], []

    def measure(self, loadgen, port, pid, args, depth):
        user, system = cpu_times(pid)
        result = run_load(loadgen, port, args, depth, errors_ok=True)
        user_after, system_after = cpu_times(pid)
        self.errors += result["errors"]
        self.user += user_after - user
        self.system += system_after - system
        self.ops += result["ops"]
        self.seconds += result["seconds"]
        self.p50.append(result["p50_us"])
        self.p99.append(result["p99_us"])
        result["cpu"] = user_after - user + system_after - system
        return result

    def ops_per_sec(self):
        return self.ops / self.seconds

    def per_million(self):
        """(total, user, system) CPU-seconds per million requests."""
        return tuple(x / self.ops * 1e6 for x in (self.user + self.system, self.user, self.system))


def median(values):
    return sorted(values)[len(values) // 2]


def report(depth, tallies):
    """Prints one line per target and how each proxy compares with memcached itself (CPU
    per request, throughput) and with memcached's built-in proxy; returns the table rows."""
    rows = []
    direct = next((t for name, t, own in tallies if own), None)
    mcproxy = next((t for name, t, own in tallies if "built-in" in name), None)
    for name, t, own in tallies:
        cpu, user, system = t.per_million()
        vs = []
        if direct is not None and not own:
            vs.append("%.2fx direct ops/s" % (t.ops_per_sec() / direct.ops_per_sec()))
            vs.append("%.2fx memcached's CPU" % (cpu / direct.per_million()[0]))
        if mcproxy is not None and t is not mcproxy and not own:
            vs.append("%.2fx built-in proxy's CPU" % (cpu / mcproxy.per_million()[0]))
        if t.errors:
            vs.append("%d error replies" % t.errors)
        print("depth %-2d %-28s %9.0f ops/s  p50 %7.1f us  p99 %8.1f us  CPU %.2f s per 1M req "
              "(user %.2f sys %.2f)%s" % (depth, name, t.ops_per_sec(), median(t.p50),
                                           median(t.p99), cpu, user, system,
                                           "  " + ", ".join(vs) if vs else ""), flush=True)
        rows.append((depth, name, t, own, vs))
    return rows


def print_markdown(rows):
    print()
    print("| depth | target | ops/s | p50 (µs) | p99 (µs) | CPU-s / 1M req (user + sys) "
          "| compared |")
    print("|---|---|---:|---:|---:|---:|---|")
    for depth, name, t, own, vs in rows:
        cpu, user, system = t.per_million()
        print("| %d | %s | %.0f | %.1f | %.1f | %.2f (%.2f + %.2f)%s | %s |" % (
            depth, name, t.ops_per_sec(), median(t.p50), median(t.p99), cpu, user, system,
            " memcached's own" if own else "", ", ".join(vs)))


def check_mcproxy(args):
    if args.mcproxy and not os.access(args.mcproxy, os.X_OK):
        sys.exit("bench: --mcproxy %s is not an executable" % args.mcproxy)


def make_certs(work):
    """A CA and a server certificate for 127.0.0.1 (openssl CLI); returns (ca, cert, key)."""
    def openssl(*a):
        subprocess.run(["openssl"] + list(a), cwd=work, check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=bench CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=bench")
    with open(os.path.join(work, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", "1", "-days", "2", "-out", "server.pem", "-extfile", "san.ext")
    return [os.path.join(work, f) for f in ("ca.pem", "server.pem", "server.key")]


def handshake_cpu(port, pid, ca, count, resume):
    """The proxy's CPU seconds per TLS handshake over `count` connections (TLS 1.3)."""
    import ssl
    ctx = ssl.create_default_context(cafile=ca)
    session = None
    before = cpu_seconds(pid)
    resumed = 0
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.sendall(b"version\r\n")
                s.recv(100)  # the tickets have arrived with (or before) the reply
                resumed += s.session_reused
                if resume:
                    session = s.session
    return (cpu_seconds(pid) - before) / count, resumed


def run_tls(args):
    loadgen = os.path.join(args.build, "bench/memzone-loadgen")
    proxy = os.path.join(args.build, "proxy/memzone-proxy")
    memcached = shutil.which("memcached") or sys.exit("bench: memcached not installed")
    work = tempfile.mkdtemp(prefix="memzone-bench-tls-")
    procs = Processes()
    try:
        ca, cert, key = make_certs(work)
        user = ["-u", "root"] if os.geteuid() == 0 else []

        def start_memcached(tls):
            port = free_port()
            extra = ["-Z", "-o", "ssl_chain_cert=%s,ssl_key=%s,ssl_session_cache" % (cert, key)] \
                if tls else []
            p = procs.start([memcached, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "256",
                             "-t", "2", "-c", "4096"] + user + extra, port)
            return port, p.pid

        mc_port, mc_pid = start_memcached(False)
        mcz_port, mcz_pid = start_memcached(True)

        def start_proxy(backend_port, backend_tls):
            port, tls_port = free_port(), free_port()
            topology = os.path.join(work, "topology-%d.yaml" % port)
            with open(topology, "w") as f:
                f.write('pools:\n  - name: main\n    zones:\n      a: ["127.0.0.1:%d"]\n'
                        % backend_port)
                if backend_tls:
                    f.write("    tls: {caFile: %s}\n" % ca)
            p = procs.start([proxy, "--listen", "127.0.0.1:%d,tls:127.0.0.1:%d" % (port, tls_port),
                             "--tls-cert", cert, "--tls-key", key, "--zone", "a",
                             "--config", topology, "--threads", str(args.proxy_threads)], port)
            return port, tls_port, p.pid

        plain_port, plain_tls_port, plain_pid = start_proxy(mc_port, False)
        btls_port, btls_tls_port, btls_pid = start_proxy(mcz_port, True)
        targets = [  # name, port, client TLS, pid whose CPU is measured
            ("memcached (direct)", mc_port, False, mc_pid),
            ("memcached -Z (direct, TLS)", mcz_port, True, mcz_pid),
            ("memzone-proxy plaintext", plain_port, False, plain_pid),
            ("memzone-proxy client TLS", plain_tls_port, True, plain_pid),
            ("memzone-proxy backend TLS", btls_port, False, btls_pid),
            ("memzone-proxy client+backend TLS", btls_tls_port, True, btls_pid),
        ]
        run_load(loadgen, mc_port, argparse.Namespace(seconds=0.5), 1, prefill=True)
        run_load(loadgen, mcz_port, argparse.Namespace(seconds=0.5), 1, prefill=True, tls_ca=ca)
        rows = []
        for depth in (16, 1):
            totals = {name: {"ops": 0, "seconds": 0.0, "cpu": 0.0, "p50": [], "p99": []}
                      for name, _, _, _ in targets}
            for _ in range(args.rounds):
                for name, port, tls, pid in targets:
                    before = cpu_seconds(pid)
                    result = run_load(loadgen, port, args, depth, tls_ca=ca if tls else None)
                    t = totals[name]
                    t["cpu"] += cpu_seconds(pid) - before
                    t["ops"] += result["ops"]
                    t["seconds"] += result["seconds"]
                    t["p50"].append(result["p50_us"])
                    t["p99"].append(result["p99_us"])
            for name, _, _, _ in targets:
                t = totals[name]
                row = (depth, name, t["ops"] / t["seconds"], sorted(t["p50"])[len(t["p50"]) // 2],
                       sorted(t["p99"])[len(t["p99"]) // 2], t["cpu"] / t["ops"] * 1e6)
                rows.append(row)
                print("depth %-2d %-34s %9.0f ops/s  p50 %7.1f us  p99 %8.1f us  "
                      "CPU %.2f s per 1M req" % row, flush=True)
        full, _ = handshake_cpu(plain_tls_port, plain_pid, ca, 300, resume=False)
        resumed_cpu, resumed = handshake_cpu(plain_tls_port, plain_pid, ca, 300, resume=True)
        print("client handshake, proxy CPU: full %.0f us, resumed %.0f us (%d/300 resumed)"
              % (full * 1e6, resumed_cpu * 1e6, resumed), flush=True)
        if args.markdown:
            print()
            print("| depth | target | ops/s | p50 (µs) | p99 (µs) | CPU-s / 1M req (proxy, or memcached when direct) |")
            print("|---|---|---:|---:|---:|---:|")
            for row in rows:
                print("| %d | %s | %.0f | %.1f | %.1f | %.2f |" % row)
            print()
            print("| client handshake | proxy CPU per handshake (µs) |")
            print("|---|---:|")
            print("| full (TLS 1.3, P-256) | %.0f |" % (full * 1e6))
            print("| resumed (ticket) | %.0f |" % (resumed_cpu * 1e6))
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_build_comparison(args, builds, depths):
    """Proxy CPU per request of two builds (the first is the one measured against), and of
    memcached's built-in proxy when --mcproxy is given. Every run starts its proxy afresh;
    the order of the targets rotates between rounds."""
    loadgen = os.path.join(args.build, "bench/memzone-loadgen")
    binaries = {name: os.path.join(build, "proxy/memzone-proxy") for name, build in builds.items()}
    check_mcproxy(args)
    memcached = shutil.which("memcached") or sys.exit("bench: memcached not installed")
    work = tempfile.mkdtemp(prefix="memzone-bench-")
    procs = Processes()
    try:
        mc_port = procs.memcached(memcached, threads=2)
        mc = procs.procs[-1]
        run_load(loadgen, mc_port, argparse.Namespace(seconds=0.5), 1, prefill=True)
        topology = write_topology(work, mc_port)

        def starter(binary):
            return lambda: procs.memzone(binary, topology) + (True,)

        targets = [(name, starter(binary)) for name, binary in binaries.items()]
        if args.mcproxy:
            targets.append(("memcached built-in proxy",
                            lambda: procs.mcproxy(args.mcproxy, work, [mc_port]) + (True,)))
            # memcached itself, the floor the proxies are held to (not restarted)
            targets.append(("memcached (direct)", lambda: (mc_port, mc, False)))
        for name, binary in binaries.items():
            print("bench: %s is %s" % (name, binary), flush=True)
        rows = []
        for depth in depths:
            tallies = {name: Tally() for name, _ in targets}
            for round_ in range(args.rounds):
                for name, start in round_order(targets, round_):
                    port, p, started = start()
                    result = tallies[name].measure(loadgen, port, p.pid, args, depth)
                    print("depth %-2d round %d %-24s %9.0f ops/s  CPU %.3f s per 1M req%s" % (
                        depth, round_ + 1, name, result["ops_per_sec"],
                        result["cpu"] / result["ops"] * 1e6,
                        "  %d error replies" % result["errors"] if result["errors"] else ""),
                        flush=True)
                    if started:
                        p.terminate()
                        p.wait(timeout=15)
            print()
            rows += report(depth, [(name, tallies[name], name == "memcached (direct)")
                                   for name, _ in targets])
            per_m = {name: tallies[name].per_million()[0] for name, _ in targets}
            first, second = list(binaries)
            diff = (per_m[first] - per_m[second]) / per_m[second] * 100
            print("\ndepth %d over %d rounds: %s %.3f vs %s %.3f CPU-s per 1M requests: %+.1f%%\n"
                  % (depth, args.rounds, first, per_m[first], second, per_m[second], diff),
                  flush=True)
        if args.markdown:
            print_markdown(rows)
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
