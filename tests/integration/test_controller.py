"""memzone-controller and the gRPC topology stream, with the real binaries.

Topology changes are hot-swapped under load without a client-visible error; the proxy
survives controller restarts, serves from its state dir, and NACKs what it cannot apply
without the controller resending it.
"""
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import CONTROLLER, Controller, Memcached, Proxy, free_port, ketama_server, wait_for_port


def topology_yaml(zones, wait="local", read_failover="[error]", repair="true", routes=None):
    lines = ["pools:", "  - name: main", "    zones:"]
    for zone, servers in zones.items():
        lines.append("      %s: [%s]" % (zone, ", ".join('"%s"' % s for s in servers)))
    lines.append("    replication: {wait: %s, readFailover: %s, repair: %s}" % (wait, read_failover, repair))
    lines.append("timeouts: {connectMs: 200, requestMs: 500}")
    if routes:
        lines.append("routes:")
        lines += ["  - {prefix: \"%s\", pool: %s}" % r for r in routes]
    return "\n".join(lines) + "\n"


class Load(threading.Thread):
    """One client connection doing sets and gets with checks until stopped.

    Every key is written once with a value derived from its name, so a read may miss (the
    ring moved) but can never legitimately return anything else."""

    def __init__(self, proxy):
        super().__init__(daemon=True)
        self.proxy = proxy
        self.stop_event = threading.Event()
        self.errors = []
        self.ops = 0
        self.written = []

    def run(self):
        rng = random.Random(1)
        try:
            with self.proxy.client(timeout=5) as c:
                n = 0
                while not self.stop_event.is_set():
                    key = b"load%d" % n
                    reply = c.request(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(key), key))
                    if reply != b"STORED\r\n":
                        self.errors.append((key, reply))
                    self.written.append(key)
                    n += 1
                    probe = rng.choice(self.written)
                    reply = c.request(b"get %s\r\n" % probe)
                    if reply not in (b"END\r\n", b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (probe, len(probe), probe)):
                        self.errors.append((probe, reply))
                    self.ops += 2
        except Exception as e:  # a dropped connection or a timeout is a client-visible error
            self.errors.append(("exception", repr(e)))

    def finish(self):
        self.stop_event.set()
        self.join(timeout=15)
        return self.errors


class ControllerTestBase(unittest.TestCase):
    def setUp(self):
        self.servers = [Memcached().start() for _ in range(6)]
        for s in self.servers:
            self.addCleanup(s.kill)

    def start_controller(self, text, port=None):
        controller = Controller(text, port=port).start()
        self.addCleanup(controller.kill)
        return controller

    def start_proxy(self, controller, zone="a", state_dir=None):
        proxy = Proxy(None, zone=zone, controller=controller.address, state_dir=state_dir).start()
        self.addCleanup(proxy.stop)
        return proxy

    def wait_version(self, proxy, version, timeout=15):
        deadline = time.monotonic() + timeout
        watcher = proxy.client()
        try:
            while time.monotonic() < deadline:
                if proxy.stats(watcher).get("proxy_topology_version") == version:
                    return
                time.sleep(0.02)
            self.fail("proxy did not apply %s within %ds; it has %s\n%s" % (
                version, timeout, proxy.stats(watcher).get("proxy_topology_version"), proxy.logs()[-2000:]))
        finally:
            watcher.close()

    def latest_version(self, controller, previous=None, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            versions = controller.versions()
            if versions and versions[-1] != previous:
                return versions[-1]
            time.sleep(0.02)
        self.fail("controller published nothing new after %s:\n%s" % (previous, controller.logs()[-2000:]))


class HotSwapTest(ControllerTestBase):
    def test_hundred_topology_changes_under_load_without_a_client_error(self):
        addresses = [s.address for s in self.servers]
        controller = self.start_controller(topology_yaml({"a": addresses[:2], "b": addresses[2:3]}))
        proxy = self.start_proxy(controller)
        version = self.latest_version(controller)
        self.wait_version(proxy, version)
        load = Load(proxy)
        load.start()
        rng = random.Random(42)
        try:
            for change in range(100):
                shuffled = addresses[:]
                rng.shuffle(shuffled)
                # Zone a (the proxy's) always exists; b and c come and go; servers move.
                cuts = sorted(rng.sample(range(1, 6), 2))
                zones = {"a": shuffled[:cuts[0]]}
                if rng.random() < 0.7:
                    zones["b"] = shuffled[cuts[0]:cuts[1]]
                if rng.random() < 0.5:
                    zones["c"] = shuffled[cuts[1]:]
                text = topology_yaml(zones, wait=rng.choice(["local", "all", "quorum"]),
                                     read_failover=rng.choice(["[error]", "[error, miss]"]),
                                     repair=rng.choice(["true", "false"]))
                controller.write_topology(text)
                version = self.latest_version(controller, version)
                self.wait_version(proxy, version)
                controller.wait_for_log("ACKed topology %s" % version)
                # Keys written now land on the new ring, in every zone.
                with proxy.client() as c:
                    for k in range(3):
                        key = "ring%d-%d" % (change, k)
                        self.assertEqual(c.request(b"set %s 0 0 2\r\nok\r\n" % key.encode()), b"STORED\r\n")
                        for zone, servers in zones.items():
                            server = servers[ketama_server(key, servers)]
                            port = int(server.rsplit(":", 1)[1])
                            direct = next(s for s in self.servers if s.port == port)
                            deadline = time.monotonic() + 2
                            while True:
                                with direct.client() as d:
                                    got = d.request(b"get %s\r\n" % key.encode())
                                if got != b"END\r\n" or time.monotonic() > deadline:
                                    break
                                time.sleep(0.01)
                            self.assertEqual(got, b"VALUE %s 0 2\r\nok\r\nEND\r\n" % key.encode(), (change, zone))
        finally:
            errors = load.finish()
        print("\n100 topology changes: %d ops under load, %d client-visible errors" % (load.ops, len(errors)))
        self.assertEqual(errors, [])
        self.assertGreater(load.ops, 1000)
        self.assertEqual(proxy.logs().count("NACK"), 0)


class ControllerOutageTest(ControllerTestBase):
    def test_controller_killed_proxy_keeps_serving_then_converges(self):
        a = [s.address for s in self.servers[:2]]
        controller = self.start_controller(topology_yaml({"a": a}))
        proxy = self.start_proxy(controller)
        v1 = self.latest_version(controller)
        self.wait_version(proxy, v1)
        port = controller.port
        load = Load(proxy)
        load.start()
        try:
            controller.kill()
            time.sleep(2)
            restarted = Controller(topology_yaml({"a": a + [self.servers[2].address]}), port=port).start()
            self.addCleanup(restarted.kill)
            v2 = self.latest_version(restarted)
            self.wait_version(proxy, v2, timeout=20)
            restarted.wait_for_log("ACKed topology %s" % v2)
        finally:
            errors = load.finish()
        self.assertEqual(errors, [])
        self.assertIn("stream ended", proxy.logs())

    def test_silent_controller_is_noticed_within_seconds(self):
        import signal
        controller = self.start_controller(topology_yaml({"a": [self.servers[0].address]}))
        proxy = self.start_proxy(controller)
        self.wait_version(proxy, self.latest_version(controller))
        controller.proc.send_signal(signal.SIGSTOP)  # no FIN, no RST: only keepalive can tell
        start = time.monotonic()
        try:
            deadline = start + 30
            while "stream ended" not in proxy.logs() and time.monotonic() < deadline:
                time.sleep(0.1)
            elapsed = time.monotonic() - start
        finally:
            controller.proc.send_signal(signal.SIGCONT)
        print("\nsilent controller noticed after %.1f s" % elapsed)
        self.assertIn("stream ended", proxy.logs())
        self.assertLess(elapsed, 15)
        with proxy.client() as c:  # and it kept serving meanwhile
            self.assertEqual(c.request(b"set ka 0 0 1\r\nx\r\n"), b"STORED\r\n")

    def test_restarted_proxy_serves_its_state_while_the_controller_is_down(self):
        controller = self.start_controller(topology_yaml({"a": [self.servers[0].address]}))
        proxy = self.start_proxy(controller)
        v1 = self.latest_version(controller)
        self.wait_version(proxy, v1)
        with proxy.client() as c:
            self.assertEqual(c.request(b"set st 0 0 2\r\nok\r\n"), b"STORED\r\n")
        proxy.stop()
        controller.kill()
        proxy.start()
        self.wait_version(proxy, v1, timeout=5)
        with proxy.client() as c:
            self.assertEqual(c.request(b"get st\r\n"), b"VALUE st 0 2\r\nok\r\nEND\r\n")
        self.assertIn("serving topology %s from" % v1, proxy.logs())

    def test_corrupt_state_file_is_ignored(self):
        controller = self.start_controller(topology_yaml({"a": [self.servers[0].address]}))
        proxy = self.start_proxy(controller)
        v1 = self.latest_version(controller)
        self.wait_version(proxy, v1)
        proxy.stop()
        controller.kill()
        with open(os.path.join(proxy.state_dir, "topology.pb"), "r+b") as f:
            f.seek(10)
            f.write(b"\xff\xfe garbage")
        proxy.start()
        with proxy.client() as c:
            self.assertTrue(c.request(b"get st\r\n").startswith(b"SERVER_ERROR"))
        self.assertIn("ignoring state", proxy.logs())


class HostController(Controller):
    """A controller listening on another loopback address (127.0.0.2, ...)."""

    def __init__(self, host, *args, **kwargs):
        self.host = host
        super().__init__(*args, **kwargs)

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        self.log = open(self.log_path, "a")
        cmd = [CONTROLLER] + self.source_args + ["--grpc-listen", self.address] + self.extra_args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc, host=self.host)
        return self


def connected_to(controller):
    """Whether a proxy has connected to `controller` (its log says so)."""
    return "connected (zone" in controller.logs()


class ReconnectTest(ControllerTestBase):
    def test_reconnects_within_1_5_s_of_a_1_s_controller_restart(self):
        """Defect 5: gRPC's channel backoff stacked on the proxy's, and the proxy reset its
        backoff only on a snapshot (a restarted controller with the same content sends none):
        7-17 s to reconnect after a 1 s restart."""
        text = topology_yaml({"a": [self.servers[0].address]})
        controller = self.start_controller(text)
        proxy = self.start_proxy(controller)
        version = self.latest_version(controller)
        self.wait_version(proxy, version)
        controller.wait_for_log("ACKed topology %s" % version)
        port = controller.port
        controller.kill()
        killed = time.monotonic()
        time.sleep(1.0)
        restarted = Controller(text, port=port).start()
        self.addCleanup(restarted.kill)
        up = time.monotonic()
        deadline = up + 10
        while not connected_to(restarted) and time.monotonic() < deadline:
            time.sleep(0.01)
        connected = time.monotonic()
        print("\ncontroller down 1 s: proxy reconnected %.2f s after the restart (%.2f s after the kill)"
              % (connected - up, connected - killed))
        self.assertTrue(connected_to(restarted), restarted.logs()[-2000:])
        self.assertLess(connected - up, 1.5)
        # Same content, same version: nothing is sent again, the proxy re-applies nothing.
        time.sleep(0.3)
        self.assertNotIn("sent topology", restarted.logs())
        self.assertEqual(proxy.logs().count("applied topology"), 1)

    def test_every_restart_in_a_row_reconnects_within_1_5_s(self):
        """Issue 24 #1: the backoff grew across restarts (7.6 s to come back, "retrying in
        8528 ms") because a stream counted as healthy only after living a second. A stream the
        controller answered resets it (gRPC's convention), however short: every 1 s outage ends
        within 1.5 s of the controller being back, the fourth as well as the first."""
        text = topology_yaml({"a": [self.servers[0].address]})
        controller = self.start_controller(text)
        proxy = self.start_proxy(controller)
        version = self.latest_version(controller)
        self.wait_version(proxy, version)
        controller.wait_for_log("ACKed topology %s" % version)
        port = controller.port
        took = []
        # Healthy for a moment only, then longer: neither may leave the backoff grown.
        for healthy in (0.3, 0.3, 1.5, 0.3, 0.3):
            time.sleep(healthy)
            controller.kill()
            time.sleep(1.0)
            controller = Controller(text, port=port).start()
            self.addCleanup(controller.kill)
            up = time.monotonic()
            deadline = up + 15
            while not connected_to(controller) and time.monotonic() < deadline:
                time.sleep(0.01)
            took.append(time.monotonic() - up)
            self.assertTrue(connected_to(controller), proxy.logs()[-2000:])
        print("\nfive 1 s outages in a row: back %s s after each restart"
              % ", ".join("%.2f" % t for t in took))
        self.assertLess(max(took), 1.5, proxy.logs()[-3000:])


class SeveralControllersTest(ControllerTestBase):
    """Proxies list several controllers (or a name resolving to several) and move to another
    on loss without re-applying an identical version."""

    def assert_moves(self, controllers, proxy):
        version = self.latest_version(controllers[0])
        self.wait_version(proxy, version)
        for c in controllers:
            self.assertEqual(self.latest_version(c), version, "replicas serve the same version")
        wait = time.monotonic() + 5
        while not any(connected_to(c) for c in controllers) and time.monotonic() < wait:
            time.sleep(0.02)
        serving = [c for c in controllers if connected_to(c)]
        self.assertEqual(len(serving), 1, [c.logs()[-500:] for c in controllers])
        first, other = serving[0], [c for c in controllers if c is not serving[0]][0]
        applied = proxy.logs().count("applied topology")
        load = Load(proxy)
        load.start()
        try:
            lost = time.monotonic()
            first.kill()
            while not connected_to(other) and time.monotonic() < lost + 5:
                time.sleep(0.01)
            moved = time.monotonic() - lost
            print("\nproxy moved to the other controller %.2f s after losing its own" % moved)
            self.assertTrue(connected_to(other), other.logs()[-2000:])
            self.assertLess(moved, 1.0)
            time.sleep(0.3)
            self.assertEqual(proxy.logs().count("applied topology"), applied, "an identical version re-applied")
            self.assertNotIn("sent topology", other.logs())
            # And it keeps following the survivor.
            other.write_topology(topology_yaml({"a": [self.servers[0].address, self.servers[1].address]}))
            v2 = self.latest_version(other, version)
            self.wait_version(proxy, v2)
            other.wait_for_log("ACKed topology %s" % v2)
        finally:
            errors = load.finish()
        self.assertEqual(errors, [])

    def test_a_list_of_controllers(self):
        text = topology_yaml({"a": [self.servers[0].address]})
        a, b = self.start_controller(text), self.start_controller(text)
        proxy = Proxy(None, zone="a", controller="%s,%s" % (a.address, b.address)).start()
        self.addCleanup(proxy.stop)
        self.assert_moves([a, b], proxy)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare for a private /etc/hosts")
    def test_a_name_resolving_to_several_controllers(self):
        """A headless Service: one name, one address per replica."""
        port = free_port()
        text = topology_yaml({"a": [self.servers[0].address]})
        controllers = []
        for host in ("127.0.0.2", "127.0.0.3"):
            c = HostController(host, text, port=port).start()
            self.addCleanup(c.kill)
            controllers.append(c)
        hosts = os.path.join(tempfile.mkdtemp(prefix="memzone-hosts-"), "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n127.0.0.2 controllers.test\n127.0.0.3 controllers.test\n")
        # The proxy alone sees this /etc/hosts (a private mount namespace).
        wrapper = os.path.join(os.path.dirname(hosts), "proxy-with-hosts")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec unshare -m sh -c 'mount --bind %s /etc/hosts && exec \"$0\" \"$@\"' %s \"$@\"\n"
                    % (hosts, harness.PROXY))
        os.chmod(wrapper, 0o755)
        real = harness.PROXY
        harness.PROXY = wrapper
        try:
            proxy = Proxy(None, zone="a", controller="controllers.test:%d" % port).start()
        finally:
            harness.PROXY = real
        self.addCleanup(proxy.stop)
        self.assert_moves(controllers, proxy)


class NackTest(ControllerTestBase):
    def test_refused_snapshot_is_nacked_once_and_old_ring_keeps_serving(self):
        a = [self.servers[0].address]
        metrics_port = free_port()
        controller = Controller(topology_yaml({"a": a}),
                                extra_args=["--metrics-listen", "127.0.0.1:%d" % metrics_port]).start()
        self.addCleanup(controller.kill)
        proxy = self.start_proxy(controller)
        v1 = self.latest_version(controller)
        self.wait_version(proxy, v1)

        # The controller passes host names through; this proxy connects to numeric IPs only.
        bad = topology_yaml({"a": a, "b": ["memcached-b.example:11211"]})
        controller.write_topology(bad)
        v2 = self.latest_version(controller, v1)
        controller.wait_for_log("NACKed topology %s: pools[0].zones.b: bad server address" % v2)
        # The controller keeps the proxy's reason where operators can read it.
        import json
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/proxies" % metrics_port, timeout=5) as r:
            proxies = json.load(r)["proxies"]
        self.assertEqual(len(proxies), 1)
        self.assertEqual(proxies[0]["appliedVersion"], v1)
        self.assertEqual(proxies[0]["lastNackVersion"], v2)
        self.assertIn("bad server address", proxies[0]["lastNackReason"])
        self.assertEqual(proxies[0]["zone"], "a")
        with proxy.client() as c:
            self.assertEqual(c.request(b"set nk 0 0 2\r\nok\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"get nk\r\n"), b"VALUE nk 0 2\r\nok\r\nEND\r\n")
        self.assertEqual(proxy.stats()["proxy_topology_version"], v1)
        # Rewriting the same content changes nothing; the NACKed version is not resent.
        controller.write_topology(bad)
        time.sleep(1.5)
        self.assertEqual(controller.logs().count("sent topology %s " % v2), 1)

        controller.write_topology(topology_yaml({"a": a, "b": [self.servers[1].address]}))
        v3 = self.latest_version(controller, v2)
        self.wait_version(proxy, v3)
        controller.wait_for_log("ACKed topology %s" % v3)

    def test_bad_file_is_rejected_with_line_and_old_topology_kept(self):
        a = [self.servers[0].address]
        controller = self.start_controller(topology_yaml({"a": a}))
        proxy = self.start_proxy(controller)
        v1 = self.latest_version(controller)
        self.wait_version(proxy, v1)
        controller.write_topology("pools:\n  - name: main\n    zones:\n      a: [\"127.0.0.1:1\"]\n    replication: {wait: sometimes}\n")
        controller.wait_for_log("%s:5: pools[0].replication.wait: must be local, all or quorum, not sometimes" % controller.config)
        controller.wait_for_log("rejected; keeping topology %s" % v1)
        self.assertEqual(proxy.stats()["proxy_topology_version"], v1)

    def test_bad_file_at_start_fails_with_line(self):
        import subprocess
        from harness import CONTROLLER
        c = Controller("pools: 3\n")
        r = subprocess.run([CONTROLLER, "--source", "file", "--config", c.config, "--grpc-listen",
                            "127.0.0.1:0"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:1: pools: must be a non-empty list" % c.config, r.stderr)
        r = subprocess.run([CONTROLLER, "--bogus"], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "memzone-controller: unknown flag --bogus (see --help)\n")


if __name__ == "__main__":
    unittest.main()
