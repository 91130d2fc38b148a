"""Processes and measurements the benchmark runners share: ports, starting memcached,
memzone-proxy, memcached's built-in proxy and twemproxy on 127.0.0.1, CPU time (user and
system apart) and RSS from /proc, and driving memzone-loadgen. Not a test."""
import json
import os
import socket
import subprocess
import sys
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


def cpu_times(pid):
    """(user, system) CPU seconds of a process, all its threads, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS  # utime, stime


def cpu_seconds(pid):
    user, system = cpu_times(pid)
    return user + system


def rss_bytes(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def round_order(items, round_):
    """The targets of one round, rotated by the round's number: the first target after a
    start (or after another target's run) measures differently, so each takes every place
    equally often over len(items) rounds (with two targets: the order reversed every other
    round)."""
    shift = round_ % len(items)
    return list(items[shift:]) + list(items[:shift])


def mcproxy_config(backends):
    """A route config for memcached's built-in proxy (1.6.x, function generators): every
    storage command (get/set/... and meta) to one pool of `backends` (ports on 127.0.0.1)."""
    lines = ["-- written by bench/run.py: all commands to one pool, like memzone's one zone",
             "function mcp_config_pools()",
             "    local backends = {}"]
    for i, port in enumerate(backends):
        lines.append("    table.insert(backends, mcp.backend('b%d', '127.0.0.1', %d))" % (i, port))
    lines += ["    return mcp.pool(backends)",
              "end",
              "",
              "function mcp_config_routes(pool)",
              "    local fg = mcp.funcgen_new()",
              "    local handle = fg:new_handle(pool)",
              "    fg:ready({ n = 'bench', f = function(rctx)",
              "        return function(r) return rctx:enqueue_and_wait(r, handle) end",
              "    end })",
              "    mcp.attach(mcp.CMD_ANY_STORAGE, fg)",
              "end", ""]
    return "\n".join(lines)


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

    def memzone(self, binary, topology, threads=1, extra=()):
        """memzone-proxy in zone a of `topology`; returns (port, process)."""
        port = free_port()
        p = self.start([binary, "--listen", "127.0.0.1:%d" % port, "--zone", "a", "--config",
                        topology, "--threads", str(threads)] + list(extra), port)
        return port, p

    def mcproxy(self, binary, work, backends, threads=1):
        """memcached's built-in proxy (a memcached built with --enable-proxy) routing every
        command to `backends`; returns (port, process). Its worker threads are `threads`; the
        backend IO thread it adds is counted in its CPU like any other thread."""
        port = free_port()
        config = os.path.join(work, "mcproxy-%d.lua" % port)
        with open(config, "w") as f:
            f.write(mcproxy_config(backends))
        user = ["-u", "root"] if os.geteuid() == 0 else []
        p = self.start([binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64",
                        "-t", str(threads), "-c", "4096", "-o", "proxy_config=%s" % config]
                       + user, port)
        return port, p

    def nutcracker(self, binary, work, backend):
        """twemproxy in front of one memcached; returns (port, process)."""
        port = free_port()
        conf = os.path.join(work, "nutcracker-%d.yml" % port)
        with open(conf, "w") as f:
            f.write("bench:\n  listen: 127.0.0.1:%d\n  hash: md5\n  distribution: ketama\n"
                    "  timeout: 1000\n  backlog: 1024\n  server_connections: 1\n"
                    "  servers:\n    - 127.0.0.1:%d:1\n" % (port, backend))
        p = self.start([binary, "-c", conf, "-s", str(free_port()), "-o",
                        os.path.join(work, "nutcracker-%d.log" % port), "-v", "0"], port)
        return port, p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def write_topology(work, backend_port, name="topology.yaml"):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write('pools:\n  - name: main\n    zones:\n      a: ["127.0.0.1:%d"]\n' % backend_port)
    return path


def loadgen_command(loadgen, port, seconds, depth, connections=50, get_ratio=0.9, prefill=False,
                    tls_ca=None, requests=None):
    cmd = [loadgen, "--server", "127.0.0.1:%d" % port, "--connections", str(connections),
           "--depth", str(depth), "--keys", "100000", "--value-size", "100",
           "--get-ratio", str(get_ratio)]
    cmd += ["--requests", str(requests)] if requests else ["--seconds", str(seconds)]
    if prefill:
        cmd.append("--prefill")
    if tls_ca:
        cmd += ["--tls-ca", tls_ca]
    return cmd


def run_load(loadgen, port, args, depth, prefill=False, get_ratio=0.9, tls_ca=None,
             errors_ok=False):
    """One load generator run; exits on failure, or with errors_ok returns a run whose
    replies included errors (its "errors" count says how many, and stderr the first)."""
    cmd = loadgen_command(loadgen, port, args.seconds, depth, get_ratio=get_ratio,
                          prefill=prefill, tls_ca=tls_ca)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    if out.returncode != 0 and errors_ok and out.stdout.startswith("{"):
        print("bench: port %d: %s" % (port, out.stderr.strip()), flush=True)
        return json.loads(out.stdout)
    if out.returncode != 0:
        sys.exit("bench: loadgen against port %d failed: %s %s" % (port, out.stderr.strip(),
                                                                   out.stdout.strip()))
    return json.loads(out.stdout)
