#!/usr/bin/python3
"""memzone benchmark: one workload against memcached directly, memzone-proxy in front of
it, and twemproxy (nutcracker) in front of it, in one run on this machine.

Workload: 90% get / 10% set, 100-byte values, 100k keys (prefilled), 50 connections,
once request/response (depth 1) and once pipelined (depth 16 per connection).
Prints ops/s, p50/p99 latency and the proxy's CPU-seconds per million requests, read from
/proc/PID/stat around the measured interval. Not a test: numbers depend on the machine.

    bench/run.py [--build build] [--seconds 10] [--rounds 3] [--proxy-threads 1] [--markdown]
    bench/run.py --replication [--seconds 10] [--markdown]
    bench/run.py --tls [--seconds 10] [--rounds 3] [--markdown]
    bench/run.py --metrics-cost build-nometrics [--seconds 10] [--rounds 3]
    bench/run.py --hostile [--slow 200] [--seconds 8] [--budget 64M] [--plot FILE] [--markdown]
                           [--proxy-build BUILD] [--compare-build BUILD] [--rss-cap MIB]

--metrics-cost compares the proxy's CPU per request with and without per-request metrics
(a second build configured with -DMEMZONE_BENCH_NO_REQUEST_METRICS=ON), runs alternating.

--hostile measures 20 well-behaved request/response clients (memzone-loadgen, 90% get /
10% set of 100-byte values) first alone, then with N slow readers attached (each pipelines
50 gets of a 1 MB value and reads 1 KiB per second), against memcached directly, memzone-proxy
(--max-buffer-memory BUDGET) and twemproxy, sampling each target's RSS every 100 ms; --plot
draws the RSS curves (matplotlib). A target whose RSS passes --rss-cap has its slow readers
stopped early (twemproxy buffers without bound).

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
import json
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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


def run_load(loadgen, port, args, depth, prefill=False, get_ratio=0.9, tls_ca=None):
    cmd = [loadgen, "--server", "127.0.0.1:%d" % port, "--connections", "50",
           "--depth", str(depth), "--seconds", str(args.seconds), "--keys", "100000",
           "--value-size", "100", "--get-ratio", str(get_ratio)]
    if prefill:
        cmd.append("--prefill")
    if tls_ca:
        cmd += ["--tls-ca", tls_ca]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    if out.returncode != 0:
        sys.exit("bench: loadgen against port %d failed: %s %s" % (port, out.stderr.strip(),
                                                                   out.stdout.strip()))
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
    parser.add_argument("--tls", action="store_true",
                        help="what client and backend TLS cost the proxy, against memcached -Z")
    parser.add_argument("--hostile", action="store_true",
                        help="well-behaved clients' throughput and p99 with slow readers attached")
    parser.add_argument("--slow", type=int, default=200, help="--hostile: slow readers")
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
                        help="--hostile: MiB; stop a target's slow readers past this RSS")
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


def rss_bytes(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def slow_readers(port, count, stop, ready, value_keys=10, requests=50, read_rate=1024):
    """Child process: `count` connections that each pipeline `requests` gets of 1 MB values
    and then read `read_rate` bytes per second, until `stop` is set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for i in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"".join(b"get big:%d\r\n" % ((i + j) % value_keys) for j in range(requests)))
        s.setblocking(False)
        socks.append(s)
    ready.set()
    tick = 0.25
    while not stop.is_set():
        started = time.monotonic()
        for s in socks:
            try:
                s.recv(int(read_rate * tick))
            except OSError:
                pass
        time.sleep(max(0.0, tick - (time.monotonic() - started)))
    for s in socks:
        s.close()


def loadgen_once(loadgen, port, seconds, connections=20):
    """Well-behaved clients: request/response, 90% get / 10% set, 100-byte values."""
    cmd = [loadgen, "--server", "127.0.0.1:%d" % port, "--connections", str(connections),
           "--depth", "1", "--seconds", str(seconds), "--keys", "100000", "--value-size", "100",
           "--get-ratio", "0.9"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {"ops": 0, "ops_per_sec": 0, "p50_us": 0, "p99_us": 0, "errors": -1,
                "failed": out.stderr.strip()[-200:]}


def run_hostile(args):
    loadgen = os.path.join(args.build, "bench/memzone-loadgen")
    proxy = os.path.join(args.proxy_build or args.build, "proxy/memzone-proxy")
    for tool in (loadgen, proxy):
        if not os.access(tool, os.X_OK):
            sys.exit("bench: %s missing; run scripts/build.sh" % tool)
    memcached = shutil.which("memcached") or sys.exit("bench: memcached not installed")
    nutcracker = shutil.which("nutcracker")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = multiprocessing.get_context("fork")
    work = tempfile.mkdtemp(prefix="memzone-bench-")
    procs = Processes()
    try:
        mc_port = procs.memcached(memcached, threads=2)
        value = b"x" * 1000000
        with socket.create_connection(("127.0.0.1", mc_port), timeout=10) as c:
            for i in range(10):
                c.sendall(b"set big:%d 0 0 %d\r\n%s\r\n" % (i, len(value), value))
                if c.recv(64) != b"STORED\r\n":
                    sys.exit("bench: could not store the large values")
        run_load(loadgen, mc_port, argparse.Namespace(seconds=0.5), 1, prefill=True)
        mc_pid = procs.procs[-1].pid
        targets = [("memcached (direct)", mc_port, mc_pid)]
        proxy_port = free_port()
        topology = os.path.join(work, "topology.yaml")
        with open(topology, "w") as f:
            f.write('pools:\n  - name: main\n    zones:\n      a: ["127.0.0.1:%d"]\n' % mc_port)
        budget = [] if args.budget == "none" else ["--max-buffer-memory", args.budget]
        p = procs.start([proxy, "--listen", "127.0.0.1:%d" % proxy_port, "--zone", "a",
                         "--config", topology, "--threads", str(args.proxy_threads)] + budget,
                        proxy_port)
        targets.append(("memzone-proxy (%s)" % ("%s budget" % args.budget if budget else
                                                 args.proxy_build or "no budget"),
                        proxy_port, p.pid))
        if args.compare_build:
            other = os.path.join(args.compare_build, "proxy/memzone-proxy")
            other_port = free_port()
            o = procs.start([other, "--listen", "127.0.0.1:%d" % other_port, "--zone", "a",
                             "--config", topology, "--threads", str(args.proxy_threads)],
                            other_port)
            targets.append(("memzone-proxy (%s, no budget)" % os.path.basename(
                os.path.normpath(args.compare_build)), other_port, o.pid))
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

        rows, curves = [], {}
        for name, port, pid in targets:
            samples, marks = [], {}
            done = threading.Event()
            stop = ctx.Event()
            capped = []
            t0 = time.monotonic()

            def sample(pid=pid, samples=samples, stop=stop, capped=capped, done=done, t0=t0):
                while not done.is_set():
                    r = rss_bytes(pid)
                    samples.append((time.monotonic() - t0, r / 2**20))
                    if r > args.rss_cap * 2**20 and not stop.is_set():
                        capped.append(time.monotonic() - t0)
                        stop.set()
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(0.5)
            idle = rss_bytes(pid)
            alone = loadgen_once(loadgen, port, args.seconds)
            marks["slow readers attach"] = time.monotonic() - t0
            ready = ctx.Event()
            slow = ctx.Process(target=slow_readers, args=(port, args.slow, stop, ready))
            slow.start()
            ready.wait(120)
            time.sleep(1)
            hostile = loadgen_once(loadgen, port, args.seconds)
            peak = max(r for _, r in samples) * 2**20
            stop.set()
            slow.join(60)
            marks["slow readers leave"] = time.monotonic() - t0
            time.sleep(5)
            after = rss_bytes(pid)
            done.set()
            sampler.join()
            curves[name] = (samples, marks)
            rows.append((name, idle, alone, hostile, peak, after, capped))
            print("%-28s alone %8.0f ops/s p99 %8.1f us | %d slow readers: %8.0f ops/s p99 %10.1f us"
                  " errors %s | RSS idle %.0f MiB peak %.0f MiB after %.0f MiB%s" % (
                      name, alone["ops_per_sec"], alone["p99_us"], args.slow,
                      hostile["ops_per_sec"], hostile["p99_us"], hostile.get("errors"),
                      idle / 2**20, peak / 2**20, after / 2**20,
                      " (slow readers stopped at the %d MiB cap)" % args.rss_cap if capped else ""),
                  flush=True)
        if args.markdown:
            print()
            print("| target | alone: ops/s | alone: p99 (µs) | with %d slow readers: ops/s | p99 (µs) "
                  "| errors | RSS idle (MiB) | RSS peak (MiB) | RSS 5 s after (MiB) |" % args.slow)
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name, idle, alone, hostile, peak, after, capped in rows:
                print("| %s | %.0f | %.1f | %.0f | %.1f | %s | %.0f | %.0f%s | %.0f |" % (
                    name, alone["ops_per_sec"], alone["p99_us"], hostile["ops_per_sec"],
                    hostile["p99_us"], hostile.get("errors"), idle / 2**20, peak / 2**20,
                    " (capped)" if capped else "", after / 2**20))
        if args.plot:
            plot_rss(curves, args)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def plot_rss(curves, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, (samples, marks) in curves.items():
        line, = ax.plot([t for t, _ in samples], [r for _, r in samples], label=name)
        for label, at in marks.items():
            ax.axvline(at, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("seconds (dotted: %d slow readers attach / leave)" % args.slow)
    ax.set_ylabel("RSS (MiB)")
    ax.set_yscale("log")
    ax.set_title("RSS with %d slow readers, 50 x 1 MB each (memzone --max-buffer-memory %s)"
                 % (args.slow, args.budget), fontsize=10)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot)
    print("bench: wrote %s" % args.plot)


if __name__ == "__main__":
    main()
