"""No stale reads through any proxy (issue 17): what one proxy knows about a server, all of
its workers know."""
import shutil
import socket
import tempfile
import time
import unittest

import signal

from harness import Controller, Memcached, Proxy, free_port, wait_until

THREADS = 4


def pool_yaml(local, remote, read_hold_ms=0, down_retry_ms=3000):
    return (
        "pools:\n  - name: main\n    zones:\n"
        '      zone-a: ["%s"]\n      zone-b: ["%s"]\n'
        "    replication: {writes: all-zones, wait: local, readFailover: [error], repair: false}\n"
        "timeouts: {connectMs: 200, requestMs: 200}\n"
        "health: {failureLimit: 1, downRetryMs: %d, maxDownRetryMs: %d, checkIntervalMs: 100}\n"
        "consistency: {readHoldMs: %d}\n" % (local, remote, down_retry_ms, down_retry_ms,
                                              read_hold_ms))


def request(port, data, timeout=3.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while not (out.endswith(b"END\r\n") or out.endswith(b"STORED\r\n")
                   or out.startswith(b"SERVER_ERROR") and out.endswith(b"\r\n")):
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


class PerProxyServerStateTest(unittest.TestCase):
    def test_no_worker_reads_a_server_another_worker_still_owes_deletes(self):
        # Zone a is local. Its server misses writes while stopped (the worker that sent them
        # queues deletes for it); once it answers again, a worker that owes nothing must not
        # read the old value from it while another worker has not replayed yet (that worker
        # waits 3 s to probe in the old design; here it is woken at the return).
        local, remote = Memcached().start(), Memcached().start()
        proxy = Proxy(pool_yaml(local.address, remote.address), zone="zone-a",
                      threads=THREADS).start()
        try:
            keys = [b"k%d" % i for i in range(8)]
            for k in keys:
                self.assertEqual(request(proxy.port, b"set %s 0 0 2\r\nv1\r\n" % k),
                                 b"STORED\r\n")
            local.pause()
            # Overwrites while the local server is stopped: they time out or fail fast
            # there (and are queued as deletes), and reach zone b.
            for k in keys:
                request(proxy.port, b"set %s 0 0 2\r\nv2\r\n" % k)
            time.sleep(0.3)
            local.resume()
            stale, reads = [], 0
            # Long enough for every worker's own probe (3 s +-20%) to come back.
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                for k in keys:  # a new connection each time: spread over every worker
                    reply = request(proxy.port, b"get %s\r\n" % k)
                    reads += 1
                    if b"\r\nv1\r\n" in reply:
                        stale.append(k)
            self.assertEqual(stale, [], "stale reads out of %d" % reads)
            # And the server serves again once the deletes are replayed.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with local.client() as c:
                    if all(c.request(b"get %s\r\n" % k) == b"END\r\n" for k in keys):
                        break
                time.sleep(0.05)
            else:
                self.fail("the local server still holds overwritten values")
            self.assertIn("answers again", proxy.logs())
        finally:
            proxy.stop()
            local.kill()
            remote.kill()


class DurableInvalidationsTest(unittest.TestCase):
    def test_owed_deletes_survive_a_proxy_restart(self):
        local, remote = Memcached().start(), Memcached().start()
        state_dir = tempfile.mkdtemp(prefix="memzone-state-")
        yaml = pool_yaml(local.address, remote.address, down_retry_ms=200)
        proxy = Proxy(yaml, zone="zone-a", threads=2, extra_args=["--state-dir", state_dir]).start()
        restarted = None
        try:
            keys = [b"d%d" % i for i in range(6)]
            for k in keys:
                self.assertEqual(request(proxy.port, b"set %s 0 0 2\r\nv1\r\n" % k),
                                 b"STORED\r\n")
            local.pause()
            # Every worker's health check times out and marks it down: writes then fail fast
            # and are never sent (a write sent to a stopped memcached lands when it resumes).
            time.sleep(0.8)
            for k in keys:  # missed by the stopped local server: owed as deletes
                request(proxy.port, b"set %s 0 0 2\r\nv2\r\n" % k)
            proxy.stop()  # ... and the proxy goes away before it could replay them
            local.resume()
            with local.client() as c:  # the local server really holds the old values
                self.assertIn(b"v1", c.request(b"get %s\r\n" % keys[0]))
            restarted = Proxy(yaml, zone="zone-a", threads=3,
                              extra_args=["--state-dir", state_dir]).start()
            for _ in range(20):
                for k in keys:
                    self.assertNotIn(b"\r\nv1\r\n", request(restarted.port, b"get %s\r\n" % k))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with local.client() as c:
                    if all(c.request(b"get %s\r\n" % k) == b"END\r\n" for k in keys):
                        break
                time.sleep(0.05)
            else:
                self.fail("the restored deletes were not replayed")
            self.assertIn("restored", restarted.logs())
        finally:
            if restarted:
                restarted.stop()
            proxy.stop()
            local.kill()
            remote.kill()
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()


class ControllerRestartKeepsTheDirtySetTest(unittest.TestCase):
    """A restarted controller knows no proxy's debts until the proxy reconnects and reports.
    Proxy b, back first, used to get an empty set and read its local server, which proxy a
    (not back yet) still owed a delete: the value deleted before the restart was served. A
    proxy's first message now says what it last heard was dirty, and a controller in its
    start-up grace keeps that dirty until the grace ends."""

    def test_a_proxy_back_first_does_not_read_a_server_another_proxy_owes(self):
        a, b = Memcached().start(), Memcached().start()
        self.addCleanup(a.kill)
        self.addCleanup(b.kill)
        text = pool_yaml(a.address, b.address, read_hold_ms=0, down_retry_ms=200)
        port = free_port()
        controller = Controller(text, port=port).start()
        self.addCleanup(lambda: controller.kill())
        pa = Proxy(None, zone="zone-a", controller=controller.address).start()
        pb = Proxy(None, zone="zone-b", controller=controller.address).start()
        self.addCleanup(pb.stop)
        with pa.client() as ca:
            wait_until(lambda: ca.request(b"set k 0 0 2\r\nv1\r\n") == b"STORED\r\n", 10,
                       "the proxies serving")
            wait_until(lambda: request(pb.port, b"get k\r\n") == b"VALUE k 0 2\r\nv1\r\nEND\r\n",
                       10, "v1 through proxy b")
            b.pause()
            try:
                # A write of another key times out there: proxy a marks zone b down, so the
                # delete of k is not even sent (bytes sent to a stopped memcached would still
                # be applied when it resumes). Proxy a owes it, and every proxy hears so.
                wait_until(lambda: ca.request(b"set other 0 0 1\r\nx\r\n") is not None and
                           int(pa.stats().get("proxy_backend_servers_down", 0)) >= 1, 10,
                           "proxy a to mark zone b down")
                self.assertEqual(ca.request(b"delete k\r\n"), b"DELETED\r\n")
                wait_until(lambda: pb.stats().get("dirty_servers") not in (None, "0"), 10,
                           "proxy b to hear zone b is dirty")
            finally:
                pa.proc.send_signal(signal.SIGSTOP)  # cannot replay, cannot reconnect
                b.resume()
        try:
            controller.kill()
            controller = Controller(text, port=port, extra_args=["--applied-grace", "10s"]).start()
            controller.wait_for_log("connected (zone zone-b", timeout=10)  # proxy b back
            # Within the grace, proxy b must not read zone b: it still holds v1.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                got = request(pb.port, b"get k\r\n")
                self.assertNotIn(b"v1", got, "the deleted value served")
                time.sleep(0.05)
        finally:
            pa.proc.send_signal(signal.SIGCONT)
            pa.stop()
