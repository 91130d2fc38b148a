#!/usr/bin/python3
"""Instructions per request on memzone-proxy's request path, by part of the path.

Runs one memcached (prefilled with 100k keys of 100 bytes), one memzone-proxy under
`valgrind --tool=callgrind` in front of it, warms it up, zeroes the counters, drives a fixed
number of requests with memzone-loadgen (90% get / 10% set, the same seeded sequence for
every build), dumps, and prints user-space instructions (Ir) per request: total, by part of
the path (the groups below), the most expensive functions, the inclusive cost of each step
a request goes through, the system calls per request (calls into libc's wrappers) and who
calls malloc, operator new, libevent's mutex and epoll_ctl. Kernel time is not in Ir:
callgrind counts user space only.

    bench/profile.py [--build build] [--proxy PATH] [--requests 40000] [--depth 1]
                     [--connections 50] [--keep DIR] [--top 40]
    bench/profile.py --report CALLGRIND_OUT --requests N     (an earlier run's output again)

To compare with another build, give its binary: --proxy OTHER/proxy/memzone-proxy (the load
generator stays this build's, so both see the same requests).

Under valgrind the proxy runs ~50x slower than the clients, so more requests queue per
wakeup than natively and per-batch costs (a backend write, a fence) are spread over more
requests than at full speed; --connections 1 --depth 1 gives the unbatched path, where every
request pays every per-batch cost alone. Not a test: a measuring tool.
"""
import argparse
import collections
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (Processes, free_port, loadgen_command, mcproxy_config,  # noqa: E402
                      wait_for_port, write_topology)

# Which part of the path an instruction belongs to. First, a function that does one job
# counts whole for it; then code from the headers every part uses (accounting, counters,
# buffers, queues), inlined or not, counts for that header's job; then the function's name
# (its class or namespace) decides; then the file it was written in; then, for code without
# debug information, "object:function". First match wins in each list.
WHOLE_FUNCTION_GROUPS = [  # functions that do one job: all their code, inlined too, is it
    ("fence (desync guard)", r"BackendConnection::(appendFence|matchFence)|formatOpaque|"
                             r"randomFenceBase"),
    ("reply key check (replyMatches)", r"ClientRequest::(replyMatches|keyAt)|parseValueBlock"),
    ("memory budget / accounting", r"chargeTo|MemoryAccount::|BufferBudget::|setAccount|"
                                   r"reservationFor|noteRe(ply|trieval)"),
    ("metrics", r"recordDone|ProxyStats|metrics::|latencyBucket"),
    ("reply classification", r"classifyReply"),
]
INLINED_GROUPS = [
    ("memory budget / accounting", r"proxy/common/memory_account|proxy/server/buffer_budget"),
    ("metrics", r"proxy/metrics/|proxy/server/proxy_stats|/counter\.h"),
    ("buffers (ByteBuffer)", r"proxy/common/byte_buffer"),
    ("queues / lists", r"proxy/common/(ring_queue|intrusive_list|flush_list)"),
]
FUNCTION_GROUPS = [
    ("parse (client request)", r"RequestParser::|protocol::mc::|parseMetaFlags|MetaFlags"),
    ("route (key -> server)", r"memzone::routing::|RequestDispatcher::|PoolView|"
                              r"ClientRequest::start(Single)?\b"),
    ("backend encode", r"encodeForward|encodeMeta|RequestEncoder|protocol::encode"),
    ("backend reply parse", r"parseReply|ReplyParser|protocol::\(anonymous namespace\)::errorCode"),
    ("pthread mutex (libevent's locks)", r"pthread_mutex"),
    ("client connection (read/write loop)", r"ClientConnection::"),
    ("request objects (plans, pool)", r"ClientRequest::|RequestPool::"),
    ("backend connection (queue, timers)", r"BackendConnection::|BackendServer::"),
    ("worker loop", r"Worker::"),
]
FILE_GROUPS = [
    ("parse (client request)", r"proxy/protocol/(request_parser|memcached_syntax|meta_flags)"),
    ("route (key -> server)", r"proxy/routing/|proxy/server/request_dispatcher"),
    ("backend encode", r"proxy/protocol/request_encoder"),
    ("backend reply parse", r"proxy/protocol/(reply_parser|meta_value)"),
    ("reply classification", r"proxy/protocol/reply_result"),
    ("client connection (read/write loop)", r"proxy/server/client_connection"),
    ("request objects (plans, pool)", r"proxy/server/(client_request|single_plan|multi_get|"
                                      r"failover_read|replicated_write|window_reads|read_repair)"),
    ("worker loop", r"proxy/server/worker"),
    ("backend connection (queue, timers)", r"proxy/backend/"),
    ("event wrapper (memzone::event)", r"proxy/event/"),
    ("other memzone code", r"/proxy/|/memzone/"),
]
OBJECT_GROUPS = [
    ("libevent", r"libevent"),
    ("system call wrappers (libc)", r"libc\.so.*:(__)?(libc_)?(sendmsg|recvmsg|send|recv|"
                                    r"epoll_wait|epoll_ctl|read|write|writev|readv|"
                                    r"clock_gettime|syscall)\b|asynccancel"),
    ("malloc / free", r"libc\.so.*:(malloc|free|_int_malloc|_int_free|realloc|calloc|"
                      r"malloc_consolidate|tcache|cfree|unlink_chunk|_int_realloc)"),
    ("memcpy / memchr / str*", r"libc\.so.*:(__)?(mem|str|wmem)"),
    ("other libc", r"libc\.so"),
    ("libstdc++ (new/delete, std::)", r"libstdc\+\+"),
    ("vdso / loader", r"ld-linux|vdso|\?\?\?"),
]
# Functions whose inclusive cost the report lists: the steps a request goes through.
STEPS = (r"^(event_base_loop|memzone::server::(ClientConnection|ClientRequest|RequestDispatcher|"
         r"Worker|RequestPool)::|memzone::backend::(BackendConnection|BackendServer)::|"
         r"memzone::protocol::(RequestParser::parse|parseReply|parseValueBlock|encode|"
         r"classifyReply)|memzone::ByteBuffer::)")
SYSCALLS = ("sendmsg", "recv", "recvmsg", "send", "read", "write", "writev", "readv",
            "epoll_wait", "epoll_ctl", "epoll_pwait", "accept4")


def parse_callgrind(path):
    """{(object, file, inlined file or "", function): self Ir}, {function: calls into it}, total Ir.
    Reads callgrind's format (name compression, inlined-file switches, call costs)."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    self_cost = collections.Counter()
    calls_into = collections.Counter()
    edges = collections.defaultdict(lambda: [0, 0])  # (caller, callee): [calls, inclusive Ir]
    ob = fl = fi = fn = ""
    cfn = ""
    after_calls = False
    total = 0

    def name(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
            return m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if after_calls:
                    after_calls = False  # a call's inclusive cost, not self cost
                    edges[(fn, cfn)][1] += ir
                    continue
                self_cost[(ob, fl, fi, fn)] += ir
                total += ir
                continue
            key, _, value = line.partition("=")
            if key == "ob":
                ob = name("ob", value)
            elif key == "cob":
                name("ob", value)
            elif key == "fl":
                fl = name("fl", value)
                fi = ""
            elif key in ("fi", "fe"):
                fi = name("fl", value)
                if fi == fl or fi.startswith("/usr/"):
                    fi = ""  # std:: code inlined: the function it is in pays for it
            elif key == "fn":
                fn = name("fn", value)
                fi = ""
            elif key == "cfn":
                cfn = name("fn", value)
            elif key in ("cfl", "cfi"):
                name("fl", value)
            elif key == "calls":
                calls_into[cfn] += int(value.split()[0])
                edges[(fn, cfn)][0] += int(value.split()[0])
                after_calls = True
    return self_cost, calls_into, total, edges


def inclusive(self_cost, edges):
    """{function: self + callees' Ir} (recursion counted once)."""
    total = collections.Counter()
    for (ob, fl, fi, fn), ir in self_cost.items():
        total[fn] += ir
    for (caller, callee), (calls, ir) in edges.items():
        if caller != callee:
            total[caller] += ir
    return total


def group_of(ob, fl, fi, fn):
    for group, pattern in WHOLE_FUNCTION_GROUPS:
        if re.search(pattern, fn):
            return group
    for group, pattern in INLINED_GROUPS:
        if re.search(pattern, fi or fl):
            return group
    for group, pattern in FUNCTION_GROUPS:
        if re.search(pattern, fn):
            return group
    for group, pattern in FILE_GROUPS:
        if re.search(pattern, fi or fl):
            return group
    label = "%s:%s" % (os.path.basename(ob), fn)
    for group, pattern in OBJECT_GROUPS:
        if re.search(pattern, label):
            return group
    if "memzone::" in fn:
        return "other memzone code"
    return "other (%s)" % os.path.basename(ob)


def syscalls_per_request(calls_into, requests):
    out = {}
    for fn, n in calls_into.items():
        base = re.sub(r"^(__libc_|__)", "", fn.split("(")[0])
        if base in SYSCALLS:
            out[base] = out.get(base, 0) + n / requests
    return out


def report(path, requests, top):
    self_cost, calls_into, total, edges = parse_callgrind(path)
    groups = collections.Counter()
    functions = collections.Counter()
    for (ob, fl, fi, fn), ir in self_cost.items():
        groups[group_of(ob, fl, fi, fn)] += ir
        functions[fn] += ir
    print("total: %.0f Ir per request (%d requests, %d Ir)" % (total / requests, requests, total))
    print("\nby part of the path (self cost, inlined code counted where it was written):")
    for group, ir in groups.most_common():
        print("  %-40s %8.0f Ir/req  %5.1f%%" % (group, ir / requests, 100.0 * ir / total))
    print("\nsystem calls per request (calls into libc's wrappers):")
    for name, n in sorted(syscalls_per_request(calls_into, requests).items(),
                          key=lambda kv: -kv[1]):
        print("  %-12s %.3f" % (name, n))
    print("\ntop functions by self cost:")
    for fn, ir in functions.most_common(top):
        print("  %8.0f Ir/req  %s" % (ir / requests, fn[:150]))
    print("\nthe path's entry points and steps, inclusive (self + everything they call):")
    incl = inclusive(self_cost, edges)
    for fn, ir in sorted(incl.items(), key=lambda kv: -kv[1]):
        if re.search(STEPS, fn) and ir / requests >= 5:
            print("  %8.0f Ir/req  %s" % (ir / requests, fn[:150]))
    for callee in ("malloc", "operator new", "pthread_mutex_lock", "epoll_ctl"):
        callers = sorted(((c, n) for (c, e), (n, _) in edges.items() if e.startswith(callee)),
                         key=lambda kv: -kv[1])
        if callers:
            print("\ncalls to %s per request, by caller:" % callee)
            for caller, n in callers[:8]:
                print("  %6.3f  %s" % (n / requests, caller[:150]))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--build", default=os.path.join(root, "build"),
                        help="the build whose memzone-loadgen drives the load")
    parser.add_argument("--proxy", help="the memzone-proxy to profile (default: --build's)")
    parser.add_argument("--mcproxy", metavar="PATH",
                        help="profile memcached's built-in proxy instead (a memcached built "
                             "with --enable-proxy; the groups are memzone's, read its totals "
                             "and top functions)")
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind output here")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--report", metavar="CALLGRIND_OUT",
                        help="only print the report of an earlier run's output")
    args = parser.parse_args()
    if args.report:
        return report(args.report, args.requests, args.top)
    loadgen = os.path.join(args.build, "bench/memzone-loadgen")
    proxy = args.proxy or os.path.join(args.build, "proxy/memzone-proxy")
    memcached = shutil.which("memcached") or sys.exit("profile: memcached not installed")
    shutil.which("valgrind") or sys.exit("profile: valgrind not installed")
    work = tempfile.mkdtemp(prefix="memzone-profile-")
    out_dir = args.keep or work
    os.makedirs(out_dir, exist_ok=True)
    procs = Processes()
    try:
        mc_port = procs.memcached(memcached, threads=2)
        subprocess.run(loadgen_command(loadgen, mc_port, 0.2, 1, prefill=True), check=True,
                       capture_output=True, timeout=120)
        port = free_port()
        out = os.path.join(out_dir, "callgrind.out.%d" % port)
        if args.mcproxy:
            config = os.path.join(work, "mcproxy.lua")
            with open(config, "w") as f:
                f.write(mcproxy_config([mc_port]))
            target = [args.mcproxy, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64",
                      "-t", "1", "-c", "1012",  # sets its fd limit to this; valgrind keeps 12
                      "-o", "proxy_config=%s" % config]
            target += ["-u", "root"] if os.geteuid() == 0 else []
            proxy = args.mcproxy
        else:
            target = [proxy, "--listen", "127.0.0.1:%d" % port, "--zone", "a", "--config",
                      write_topology(work, mc_port), "--threads", "1"]
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % out] + target
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                   (1024, 1024)))
        procs.procs.append(p)
        wait_for_port(port, p, timeout=120)

        def load(requests):
            cmd = loadgen_command(loadgen, port, 0, args.depth, connections=args.connections,
                                  requests=requests)
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if r.returncode != 0:  # error replies are reported, not fatal: the profile stands
                print("profile: loadgen: %s %s" % (r.stdout.strip(), r.stderr.strip()))

        load(2000)  # connections, buffers and pools reach their steady state
        subprocess.run(["callgrind_control", "--zero", str(p.pid)], check=True,
                       capture_output=True, timeout=120)
        started = time.monotonic()
        load(args.requests)
        seconds = time.monotonic() - started
        subprocess.run(["callgrind_control", "--dump=measured", str(p.pid)], check=True,
                       capture_output=True, timeout=120)
        dumps = sorted(f for f in os.listdir(out_dir)
                       if f.startswith(os.path.basename(out) + ".") or f == os.path.basename(out))
        print("profile: %s, %d requests, %d connections, depth %d (%.0f s under valgrind)" % (
            proxy, args.requests, args.connections, args.depth, seconds))
        measured = [os.path.join(out_dir, f) for f in dumps if f.endswith(".1")] or \
            [os.path.join(out_dir, dumps[-1])]
        report(measured[0], args.requests, args.top)
        if args.keep:
            print("\nprofile: callgrind output in %s" % measured[0])
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
