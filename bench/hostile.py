"""bench/run.py --hostile: what hostile clients do to well-behaved ones and to the target's
memory. Per target, three phases of --seconds each, with the same well-behaved clients
(20 request/response connections and 4 pipelining 16 deep, at once):

  alone      nothing else connected;
  slow       --slow readers attached, each pipelining 50 gets of a 1 MB value and reading
             1 KiB per second;
  huge       --huge attackers attached, each sending one `get` of --huge-keys one-letter
             keys (an 8 MB line for 4 million) and never reading a byte.

RSS is sampled every 100 ms; each phase reports its peak, and 5 s after the attackers leave.
A well-behaved client's error is any reply it did not ask for (SERVER_ERROR, CLIENT_ERROR,
a closed connection): a proxy that protects its clients has 0 in every phase."""
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

from benchlib import Processes, loadgen_command, rss_bytes, run_load, write_topology

WELL_BEHAVED = (("request/response", 20, 1), ("pipelined", 4, 16))  # name, connections, depth


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


def huge_multi_gets(port, count, keys, stop, ready):
    """Child process: `count` connections that each send one `get` of `keys` one-letter keys
    (misses: what a proxy holds is its own per-key state, not values) and never read, until
    `stop` is set. Sending does not block: a target that stops reading the line is allowed
    to."""
    letters = b"abcdefghijklmnopqrstuvwxyz"
    body = (b" ".join(letters[i:i + 1] for i in range(26)) + b" ") * (keys // 26 + 1)
    line = b"get " + body[:2 * keys - 1] + b"\r\n"
    socks, offsets = [], []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
        offsets.append(0)
    ready.set()
    view = memoryview(line)
    while not stop.is_set():
        progress = False
        for i, s in enumerate(socks):
            if offsets[i] < len(line):
                try:
                    sent = s.send(view[offsets[i]:offsets[i] + (1 << 20)])
                    offsets[i] += sent
                    progress = progress or sent > 0
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    offsets[i] = len(line)  # the target closed it: nothing more to send
        if not progress:
            time.sleep(0.05)
    for s in socks:
        s.close()


def well_behaved(loadgen, port, seconds):
    """The well-behaved clients, all at once; {name: loadgen result} (errors -1 when the load
    generator failed, e.g. because the target closed one of its connections)."""
    runs = {}
    for name, connections, depth in WELL_BEHAVED:
        cmd = loadgen_command(loadgen, port, seconds, depth, connections=connections)
        runs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
    results = {}
    for name, p in runs.items():
        out, err = p.communicate(timeout=seconds + 120)
        try:
            results[name] = json.loads(out)
        except ValueError:
            results[name] = {"ops": 0, "ops_per_sec": 0, "p50_us": 0, "p99_us": 0, "errors": -1,
                             "failed": err.strip()[-200:]}
    return results


class RssSampler:
    """Samples a pid's RSS every 100 ms; sets `cap_event` once it passes `cap` MiB."""

    def __init__(self, pid, cap):
        self.pid, self.cap = pid, cap
        self.samples, self.capped = [], []
        self.cap_event = None
        self.t0 = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def now(self):
        return time.monotonic() - self.t0

    def run(self):
        while not self.done.is_set():
            r = rss_bytes(self.pid)
            self.samples.append((self.now(), r / 2**20))
            stop = self.cap_event
            if r > self.cap * 2**20 and stop is not None and not stop.is_set():
                self.capped.append(self.now())
                stop.set()
            time.sleep(0.1)

    def peak_since(self, t):
        return max((r for at, r in self.samples if at >= t), default=0.0)

    def stop(self):
        self.done.set()
        self.thread.join()


def attack_phase(ctx, sampler, loadgen, port, seconds, target, args):
    """Runs the well-behaved clients with the child process `target(port, ..., stop, ready)`
    attached; returns (results, peak RSS MiB during the phase, capped)."""
    started = sampler.now()
    stop, ready = ctx.Event(), ctx.Event()
    sampler.cap_event = stop
    child = ctx.Process(target=target, args=(port,) + args + (stop, ready))
    child.start()
    ready.wait(120)
    time.sleep(1)
    results = well_behaved(loadgen, port, seconds)
    capped = stop.is_set()
    peak = sampler.peak_since(started)
    stop.set()
    child.join(60)
    if child.is_alive():
        child.kill()
    sampler.cap_event = None
    return results, peak, capped


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
    budget = [] if args.budget == "none" else ["--max-buffer-memory", args.budget]
    # (name, start(backend port) -> pid); None: memcached itself is the target
    targets = [("memcached (direct)", None),
               ("memzone-proxy (%s)" % ("%s budget" % args.budget if budget else
                                        args.proxy_build or "no budget"),
                lambda mc: procs.memzone(proxy, write_topology(work, mc, "t%d.yaml" % mc),
                                         args.proxy_threads, budget))]
    if args.compare_build:
        other = os.path.join(args.compare_build, "proxy/memzone-proxy")
        targets.append(("memzone-proxy (%s, no budget)" % os.path.basename(
            os.path.normpath(args.compare_build)),
            lambda mc: procs.memzone(other, write_topology(work, mc, "t%d.yaml" % mc),
                                     args.proxy_threads)))
    if nutcracker:
        targets.append(("twemproxy (nutcracker)",
                        lambda mc: procs.nutcracker(nutcracker, work, mc)))
    try:
        rows, curves = [], {}
        for name, start in targets:
            # Each target gets a memcached of its own: an attack on one (memcached still busy
            # with millions of keys after its clients left) must not reach the next.
            mc_port = procs.memcached(memcached, threads=2)
            mc = procs.procs[-1]
            store_large_values(mc_port)
            run_load(loadgen, mc_port, argparse.Namespace(seconds=0.5), 1, prefill=True)
            if start is None:
                port, target = mc_port, mc
            else:
                port, target = start(mc_port)
            measure_target(ctx, args, loadgen, name, port, target.pid, rows, curves)
            for p in (target, mc):
                p.terminate()
                p.wait(timeout=15)
        if args.markdown:
            print_markdown(rows)
        if args.plot:
            plot_rss(curves, args)
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def store_large_values(port):
    value = b"x" * 1000000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        for i in range(10):
            c.sendall(b"set big:%d 0 0 %d\r\n%s\r\n" % (i, len(value), value))
            if c.recv(64) != b"STORED\r\n":
                sys.exit("bench: could not store the large values")


def measure_target(ctx, args, loadgen, name, port, pid, rows, curves):
    """The three phases against one target; appends to rows and curves."""
    sampler = RssSampler(pid, args.rss_cap)
    marks = {}
    time.sleep(0.5)
    idle = rss_bytes(pid)
    phases = [("alone", well_behaved(loadgen, port, args.seconds),
               sampler.peak_since(0), False)]
    marks["slow readers"] = sampler.now()
    results, peak, capped = attack_phase(ctx, sampler, loadgen, port, args.seconds,
                                         slow_readers, (args.slow,))
    phases.append(("%d slow readers" % args.slow, results, peak, capped))
    marks["huge multi-gets"] = sampler.now()
    results, peak, capped = attack_phase(ctx, sampler, loadgen, port, args.seconds,
                                         huge_multi_gets, (args.huge, args.huge_keys))
    phases.append(("%d x get of %d keys" % (args.huge, args.huge_keys), results, peak,
                   capped))
    marks["attackers leave"] = sampler.now()
    time.sleep(5)
    after = rss_bytes(pid)
    sampler.stop()
    curves[name] = (sampler.samples, marks)
    for phase, results, peak, capped in phases:
        rows.append((name, phase, results, peak, capped, idle, after))
        print("%-34s %-26s %s | RSS peak %.0f MiB%s" % (
            name, phase, " | ".join(
                "%s %8.0f ops/s p99 %9.1f us errors %s unanswered %s" % (
                    client, r["ops_per_sec"], r["p99_us"], r.get("errors"),
                    r.get("unanswered_1s", "?"))
                for client, r in results.items()),
            peak, " (attackers stopped at the %d MiB cap)" % args.rss_cap
            if capped else ""), flush=True)
    print("%-34s RSS idle %.0f MiB, 5 s after the attackers left %.0f MiB" % (
        name, idle / 2**20, after / 2**20), flush=True)


def print_markdown(rows):
    print()
    print("Errors: replies that are errors; unanswered: requests still without a reply 1 s "
          "after they were sent when the run ended (a stalled client).")
    print()
    print("| target | attack | request/response: ops/s | p99 (µs) | errors / unanswered "
          "| pipelined (16): ops/s | p99 (µs) | errors / unanswered | RSS peak (MiB) "
          "| RSS idle / 5 s after (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, phase, results, peak, capped, idle, after in rows:
        rr, pl = results["request/response"], results["pipelined"]
        print("| %s | %s | %.0f | %.1f | %s / %s | %.0f | %.1f | %s / %s | %.0f%s | %.0f / %.0f |"
              % (name, phase, rr["ops_per_sec"], rr["p99_us"], rr.get("errors"),
                 rr.get("unanswered_1s", "?"), pl["ops_per_sec"], pl["p99_us"], pl.get("errors"),
                 pl.get("unanswered_1s", "?"), peak, " (capped)" if capped else "",
                 idle / 2**20, after / 2**20))


def plot_rss(curves, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, (samples, marks) in curves.items():
        line, = ax.plot([t for t, _ in samples], [r for _, r in samples], label=name)
        for label, at in marks.items():
            ax.axvline(at, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("seconds (dotted: %d slow readers attach; %d huge multi-gets attach; they "
                  "leave)" % (args.slow, args.huge))
    ax.set_ylabel("RSS (MiB)")
    ax.set_yscale("log")
    ax.set_title("RSS with %d slow readers (50 x 1 MB each), then %d gets of %d keys "
                 "(memzone --max-buffer-memory %s)" % (args.slow, args.huge, args.huge_keys,
                                                       args.budget), fontsize=9)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot)
    print("bench: wrote %s" % args.plot)
