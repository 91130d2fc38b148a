"""Test harness: real memcached processes and the real memzone binaries on 127.0.0.1.

Every wait here has a bound; every process started is stopped by the test that started it.
"""
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

PROXY = os.environ.get("MEMZONE_PROXY", os.path.join(os.path.dirname(__file__), "../../build/proxy/memzone-proxy"))
CONTROLLER = os.environ.get("MEMZONE_CONTROLLER", os.path.join(os.path.dirname(__file__),
                                                               "../../build/controlplane/memzone-controller"))
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


def free_port():
    """A port nobody listens on right now. Chosen below the kernel's ephemeral range, so the
    outgoing connections of other tests running in parallel never hold it; random, so two
    tests rarely pick the same one (and servers started on it retry if they lose the race)."""
    low, high = 20000, 32000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
        high = min(high, ephemeral_low)
    except (OSError, ValueError):
        pass
    for _ in range(200):
        port = _port_rng.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in %d-%d" % (low, high))


_port_rng = random.Random(os.getpid() ^ int(time.time() * 1e6))


def stop_process(proc, log, name, timeout=15):
    """SIGTERM, then a bounded wait; a process that does not exit is killed and reported."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise AssertionError("%s did not exit within %ds of SIGTERM" % (name, timeout))
    if proc:
        log.close()
    return proc.returncode if proc else None


def write_atomically(path, text):
    """Write + rename: a reader never sees half a file (what editors and config tools do)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def _listening_inodes(port, host="127.0.0.1"):
    """Socket inodes of every LISTEN socket on host:port or on a wildcard address, IPv4 or
    IPv6 (gRPC, for one, binds 127.0.0.1 as the v4-mapped ::ffff:127.0.0.1)."""
    v4 = socket.inet_aton(host)[::-1].hex().upper()
    wanted = {v4, "00000000", "0000000000000000FFFF0000" + v4, "0" * 32}
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    address, hex_port = fields[1].split(":")
                    if fields[3] == "0A" and int(hex_port, 16) == port and address in wanted:
                        inodes.add(fields[9])
        except OSError:
            pass
    return inodes


def _owns_port(pid, port, host="127.0.0.1"):
    """True when `pid` holds every listening socket on `port`. Tests run in parallel: a port
    picked by free_port can be taken by another test's process before ours binds it (and
    SO_REUSEPORT would even let two proxies share it), so "something answers" is not enough."""
    inodes = _listening_inodes(port, host)
    if not inodes:
        return False
    try:
        fds = {os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)}
    except OSError:
        return False
    return all("socket:[%s]" % inode in fds for inode in inodes)


class PortLost(RuntimeError):
    """The process did not get its port (another process holds it)."""


def wait_for_port(port, timeout=10.0, proc=None, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PortLost("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                if proc is None or _owns_port(proc.pid, port, host):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    if proc is not None and _listening_inodes(port, host):
        proc.kill()
        proc.wait(timeout=5)
        raise PortLost("port %d is held by another process" % port)
    raise TimeoutError("nothing listening on port %d after %.1fs" % (port, timeout))


class Memcached:
    def __init__(self, port=None, max_item_size=None, host="127.0.0.1", extra_args=()):
        self.host = host
        self.extra_args = list(extra_args)  # e.g. -Z -o ssl_chain_cert=...
        self.fixed_port = port is not None
        self.attempts = 0
        self.port = port or free_port()
        self.max_item_size = max_item_size
        self.proc = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        cmd = [MEMCACHED, "-l", self.host, "-p", str(self.port), "-U", "0", "-t", "1", "-m", "128", "-c", "4096"]
        if self.max_item_size:
            cmd += ["-I", str(self.max_item_size)]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        cmd += self.extra_args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, proc=self.proc, host=self.host)
        except PortLost:
            if self.fixed_port or self.attempts >= 3:
                raise
            self.attempts += 1
            self.port = free_port()  # lost the port to a parallel test: pick another
            return self.start()
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self):
        """SIGSTOP, and wait until the kernel has really stopped it: on a busy machine a
        runnable process can still answer a request after kill() returned."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                    return
            time.sleep(0.001)
        raise TimeoutError("memcached %d did not stop" % self.proc.pid)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def client(self, timeout=5.0):
        return Client(self.port, timeout, host=self.host)


class Proxy:
    """memzone-proxy on a static topology file, or (controller="HOST:PORT") on the stream."""

    def __init__(self, topology_yaml, zone=None, threads=2, extra_args=(), port=None,
                 controller=None, state_dir=None, env=None, wrapper=(), controller_tls=None):
        self.env = env
        # TLS to the controller: {"ca", "cert", "key", "server_name", "reload"}, any subset.
        self.controller_tls = controller_tls or {}
        self.wrapper = list(wrapper)  # e.g. setpriv: run the proxy as another user
        self.dir = tempfile.mkdtemp(prefix="memzone-test-")
        self.config = os.path.join(self.dir, "topology.yaml")
        self.controller = controller
        self.state_dir = state_dir or os.path.join(self.dir, "state")
        if topology_yaml is not None:
            self.write_topology(topology_yaml)
        self.fixed_port = port is not None
        self.attempts = 0
        self.port = port or free_port()
        self.zone = zone
        self.threads = threads
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(self.dir, "proxy.log")

    def write_topology(self, text):
        write_atomically(self.config, text)

    def start(self):
        self.log = open(self.log_path, "a")
        cmd = self.wrapper + [PROXY, "--listen", "127.0.0.1:%d" % self.port,
                              "--threads", str(self.threads)]
        if self.controller is None:
            cmd += ["--config", self.config]
        else:
            cmd += ["--controller", self.controller, "--state-dir", self.state_dir]
            for key, flag in (("ca", "--controller-ca"), ("cert", "--controller-tls-cert"),
                              ("key", "--controller-tls-key"),
                              ("server_name", "--controller-server-name"),
                              ("reload", "--controller-tls-reload-interval")):
                if key in self.controller_tls:
                    cmd += [flag, str(self.controller_tls[key])]
        if self.zone:
            cmd += ["--zone", self.zone]
        cmd += self.extra_args
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(self.port, proc=self.proc)
        except PortLost:
            if self.fixed_port or self.attempts >= 3:
                raise
            self.attempts += 1
            self.log.close()
            self.port = free_port()  # lost the port to a parallel test: pick another
            return self.start()
        return self

    def stop(self, timeout=15):
        return stop_process(self.proc, self.log, "memzone-proxy", timeout)

    def kill(self):
        """SIGKILL (a crash: no drain; what it owes survives only in --state-dir); start()
        brings it back on the same port and state dir."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def client(self, timeout=5.0):
        return Client(self.port, timeout)

    def stats(self, client=None):
        """The proxy's `stats`. Pass a long-lived client when counting connections: a fresh
        connection per call is itself counted, and its close races the next call."""
        if client is None:
            with self.client() as c:
                return self.stats(c)
        client.send(b"stats\r\n")
        text = client.read_until(b"END\r\n").decode()
        out = {}
        for line in text.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out

    def topology_version(self):
        """The version of the topology the proxy serves now (None before it has one)."""
        return self.stats().get("proxy_topology_version")


class Controller:
    """memzone-controller: by default the file source on a topology file the test rewrites;
    `source_args` replaces that (e.g. --source kubernetes ...)."""

    def __init__(self, topology_yaml, port=None, extra_args=(), source_args=None, tls=None):
        self.extra_args = list(extra_args)
        # mTLS on the stream: {"cert", "key", "client_ca", "allowed": [...], "reload"}.
        self.tls = tls or {}
        self.dir = tempfile.mkdtemp(prefix="memzone-controller-")
        self.config = os.path.join(self.dir, "topology.yaml")
        self.source_args = source_args or ["--source", "file", "--config", self.config,
                                           "--poll-interval-ms", "50"]
        if topology_yaml is not None:
            self.write_topology(topology_yaml)
        self.port = port or free_port()
        self.proc = None
        self.log_path = os.path.join(self.dir, "controller.log")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def write_topology(self, text):
        write_atomically(self.config, text)

    def start(self):
        self.log = open(self.log_path, "a")
        cmd = [CONTROLLER] + self.source_args + ["--grpc-listen", self.address] + self.extra_args
        for key, flag in (("cert", "--tls-cert"), ("key", "--tls-key"),
                          ("client_ca", "--tls-client-ca"), ("reload", "--tls-reload-interval")):
            if key in self.tls:
                cmd += [flag, str(self.tls[key])]
        if self.tls.get("allowed"):
            cmd += ["--tls-allowed-identities", ",".join(self.tls["allowed"])]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc:
            self.log.close()

    def stop(self, timeout=15):
        return stop_process(self.proc, self.log, "memzone-controller", timeout)

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_for_log(self, needle, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.logs():
                return
            time.sleep(0.02)
        raise AssertionError("controller log has no %r after %.1fs:\n%s" % (needle, timeout, self.logs()[-3000:]))

    def versions(self):
        """Topology versions the controller published, in order."""
        return re.findall(r"memzone-controller: info topology (\S+) from", self.logs())


class Client:
    """A raw memcached connection; every read has a deadline."""

    def __init__(self, port, timeout=5.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no reply within %.1fs; have %r" % (self.timeout, self.buf[:200]))
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed; have %r" % self.buf[:200])
        self.buf += chunk

    def read_until(self, terminator, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while terminator not in self.buf:
            self._fill(deadline)
        idx = self.buf.index(terminator) + len(terminator)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def read_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self, timeout=None):
        return self.read_until(b"\r\n", timeout)

    def read_reply(self, timeout=None):
        """One complete reply of any memcached shape."""
        line = self.read_line(timeout)
        if line.startswith(b"VALUE "):
            out = line
            while True:
                n = int(line.split()[3])
                out += self.read_exact(n + 2, timeout)
                line = self.read_line(timeout)
                out += line
                if line == b"END\r\n" or not line.startswith(b"VALUE "):
                    return out
        if line.startswith(b"VA "):
            n = int(line.split()[1])
            return line + self.read_exact(n + 2, timeout)
        if line.startswith(b"STAT "):
            return line + self.read_until(b"END\r\n", timeout)
        return line

    def request(self, data, timeout=None):
        self.send(data)
        return self.read_reply(timeout)

    def closed_by_peer(self, timeout=2.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False


class Relay:
    """A TCP relay on 127.0.0.1 to `upstream` ("host:port"), for tests that need the network
    between two processes to misbehave in one precise way. Every switch is off at first:

    - hold_replies() ... release_replies(): what flows back (upstream to client) stops, the
      connections staying up (what arrives meanwhile waits in the kernel's buffers);
    - refuse() ... allow(): its connections are cut, and new ones closed at once;
    - hold_requests(matches) ... release_requests(): a chunk from the client for which
      `matches(chunk)` is true waits (10 s at most) before it goes on, and so does what follows
      it on that connection; `request_held` is set once one did.

    close() stops it all and lets anything held go."""

    def __init__(self, upstream):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.replies_flowing = threading.Event()
        self.replies_flowing.set()
        self.refusing = threading.Event()
        self.request_matches = None
        self.request_held = threading.Event()
        self.requests_released = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.sockets = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_replies(self):
        self.replies_flowing.clear()

    def release_replies(self):
        self.replies_flowing.set()

    def refuse(self):
        self.refusing.set()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # its pump shut it down already: it is still to be closed
            s.close()

    def allow(self):
        self.refusing.clear()

    def hold_requests(self, matches):
        self.requests_released.clear()
        self.request_matches = matches

    def release_requests(self):
        self.requests_released.set()

    def close(self):
        self.closed.set()
        self.replies_flowing.set()
        self.requests_released.set()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets + [self.listener]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.refusing.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src, dst, replies):
        src.settimeout(0.2)
        try:
            while not self.closed.is_set():
                if replies and not self.replies_flowing.wait(0.05):
                    continue  # what arrives stays in the kernel's buffers meanwhile
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                while replies and not self.replies_flowing.wait(0.05):  # read as the hold began
                    if self.closed.is_set():
                        return
                matches = self.request_matches
                if not replies and matches is not None and matches(data):
                    self.request_held.set()
                    self.requests_released.wait(10)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def ketama_index(key, identities, named=False):
    """libmemcached's ketama (equal weights), independently of the proxy: the index into
    `identities` of the server owning `key`. Unnamed identities are "host:port", hashed as
    libmemcached does (the port left out when it is 11211); named ones hash "name-i"."""
    n = len(identities)
    if n == 1:
        return 0
    share = struct.unpack("f", struct.pack("f", 1.0 / n))[0]
    count = int(struct.unpack("f", struct.pack("f", share * 160 / 4 * n))[0] + 1e-10) * 4
    points = []
    for index, ident in enumerate(identities):
        if named:
            prefix = ident
        else:
            host, port = ident.rsplit(":", 1)
            prefix = host if port == "11211" else ident
        for i in range(count // 4):
            d = hashlib.md5(("%s-%d" % (prefix, i)).encode()).digest()
            for h in range(4):
                points.append((struct.unpack_from("<I", d, h * 4)[0], index))
    points.sort()
    raw = key if isinstance(key, bytes) else key.encode()  # bytes: a meta `b` key's own
    hk = struct.unpack_from("<I", hashlib.md5(raw).digest(), 0)[0]
    for value, index in points:
        if value >= hk:
            return index
    return points[0][1]


def ketama_server(key, servers):
    """The index into `servers` ("host:port" each) of the server owning `key`."""
    return ketama_index(key, servers)


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls `predicate` until it returns something true (returned), or fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def holders(servers, key):
    """Names of the servers [(name, Memcached)] that hold `key`, read directly."""
    out = []
    for name, server in servers:
        with server.client() as c:
            if c.request(b"get %s\r\n" % key.encode()) != b"END\r\n":
                out.append(name)
    return out


def metric(port, name, **labels):
    """The sum of metric `name` over its series with `labels` (any others too) on the
    /metrics of 127.0.0.1:`port`; 0 when there is none."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), line)
        if m and all('%s="%s"' % kv in m.group(1) for kv in labels.items()):
            total += float(m.group(2))
    return total


def topology(zones, **options):
    """YAML for one pool `main` with `zones` = {zone: [addresses]} and options."""
    lines = ["pools:", "  - name: main", "    zones:"]
    for zone, addresses in zones.items():
        lines.append("      %s: [%s]" % (zone, ", ".join('"%s"' % a for a in addresses)))
    replication = options.pop("replication", None)
    if replication:
        lines.append("    replication: %s" % replication)
    for key, value in options.items():
        lines.append("%s: %s" % (key, value))
    return "\n".join(lines) + "\n"
