"""Mutual TLS on the topology stream (issue 15), with the real binaries and certificates made
by `openssl` in a temporary directory.

A proxy with a certificate the controller accepts gets the topology and serves; one without a
certificate, with one from another CA, or with an identity not on the allow-list is refused and
the controller says why; a proxy refuses a controller certificate for another name; rotating
every file under load drops nothing and new handshakes present the new certificate.
"""
import json
import os
import re
import time
import unittest
import urllib.request

from harness import Controller, Memcached, Proxy, free_port
from test_controller import Load, topology_yaml
from tls_certs import CertAuthority, SecretVolume, read, served_certificate_serial

CONTROLLER_NAME = "memzone-controller.memzone.svc"
PROXY_ID = "spiffe://memzone.test/ns/memzone/sa/memzone-proxy"
ALLOWED = ["spiffe://memzone.test/ns/memzone/sa/memzone-proxy*"]


def http_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
        return r.read().decode()


def metric(text, name, labels=""):
    """The value of one series, or None."""
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("no %s within %ss" % (what, timeout))


class ControllerTlsTest(unittest.TestCase):
    def setUp(self):
        self.ca = CertAuthority("memzone")
        self.memcached = Memcached().start()
        self.addCleanup(self.memcached.kill)
        self.server_cert, self.server_key, _ = self.ca.issue(
            "controller", dns=[CONTROLLER_NAME], ip=["127.0.0.1"])
        self.proxy_cert, self.proxy_key, _ = self.ca.issue("proxy", uri=[PROXY_ID])

    def start_controller(self, allowed=ALLOWED, files=None, reload="10s", port=None):
        self.metrics_port = free_port()
        files = files or {"cert": self.server_cert, "key": self.server_key,
                          "client_ca": self.ca.cert}
        controller = Controller(topology_yaml({"a": [self.memcached.address]}), port=port,
                                extra_args=["--metrics-listen", "127.0.0.1:%d" % self.metrics_port],
                                tls=dict(files, allowed=allowed, reload=reload)).start()
        self.addCleanup(controller.kill)
        return controller

    def start_proxy(self, controller, **tls):
        metrics_port = free_port()
        proxy = Proxy(None, zone="a", controller=controller.address, controller_tls=tls,
                      extra_args=["--metrics-listen", "127.0.0.1:%d" % metrics_port]).start()
        proxy.metrics_port = metrics_port
        self.addCleanup(proxy.stop)
        return proxy

    def wait_serving(self, proxy, timeout=15):
        def serving():
            with proxy.client() as c:
                return c.request(b"set tls 0 0 2\r\nok\r\n") == b"STORED\r\n"
        try:
            wait_until(serving, timeout, "topology on the proxy")
        except AssertionError:
            raise AssertionError("proxy never served:\n" + proxy.logs()[-3000:])

    def assert_never_subscribes(self, proxy, seconds=3):
        time.sleep(seconds)
        self.assertNotIn("stream established", proxy.logs())
        self.assertEqual(proxy.stats().get("proxy_topology_version", ""), "")

    def test_mutual_tls_serves_and_reports(self):
        controller = self.start_controller()
        proxy = self.start_proxy(controller, ca=self.ca.cert, cert=self.proxy_cert,
                                 key=self.proxy_key, server_name=CONTROLLER_NAME)
        self.wait_serving(proxy)
        with proxy.client() as c:
            self.assertEqual(c.request(b"get tls\r\n"), b"VALUE tls 0 2\r\nok\r\nEND\r\n")
        # A second proxy checks the controller's name against the --controller host (an IP SAN).
        by_address = self.start_proxy(controller, ca=self.ca.cert, cert=self.proxy_cert,
                                      key=self.proxy_key)
        self.wait_serving(by_address)
        self.assertIn("mutual TLS", controller.logs())
        self.assertNotIn("PLAINTEXT", controller.logs() + proxy.logs())

        text = http_get(self.metrics_port, "/metrics")
        self.assertGreaterEqual(metric(text, "memzone_controller_tls_handshakes_total",
                                       '{result="ok"}'), 2)
        # notAfter as a Unix time: 30 days from now, give or take the test's own minutes.
        for path in (self.server_cert, self.ca.cert):
            expiry = metric(text, "memzone_tls_certificate_expiry_seconds", '{file="%s"}' % path)
            self.assertIsNotNone(expiry, text)
            self.assertGreater(expiry - time.time(), 29 * 86400)
            self.assertLessEqual(expiry - time.time(), 30 * 86400)
        proxy_text = http_get(proxy.metrics_port, "/metrics")
        self.assertGreaterEqual(metric(proxy_text, "memzone_proxy_controller_tls_handshakes_total",
                                       '{result="ok"}'), 1)
        self.assertGreater(metric(proxy_text, "memzone_tls_certificate_expiry_seconds",
                                  '{file="%s"}' % self.proxy_cert) - time.time(), 29 * 86400)

    def test_proxies_the_controller_refuses_and_why(self):
        controller = self.start_controller()
        # No client certificate at all.
        anonymous = self.start_proxy(controller, ca=self.ca.cert, server_name=CONTROLLER_NAME)
        controller.wait_for_log("failed (no_peer_certificate)")
        # A certificate from another CA.
        other = CertAuthority("other")
        cert, key, _ = other.issue("proxy", uri=[PROXY_ID])
        stranger = self.start_proxy(controller, ca=self.ca.cert, cert=cert, key=key,
                                    server_name=CONTROLLER_NAME)
        controller.wait_for_log("failed (untrusted_certificate)")
        # A valid certificate whose identity is not on the allow-list.
        cert, key, _ = self.ca.issue("intruder", uri=["spiffe://memzone.test/ns/default/sa/app"],
                                     dns=["app.default.svc"])
        intruder = self.start_proxy(controller, ca=self.ca.cert, cert=cert, key=key,
                                    server_name=CONTROLLER_NAME)
        controller.wait_for_log("refused a proxy: its certificate (CN intruder, SAN "
                                "app.default.svc spiffe://memzone.test/ns/default/sa/app) matches "
                                "no --tls-allowed-identities entry")
        for proxy in (anonymous, stranger, intruder):
            self.assert_never_subscribes(proxy, seconds=1)
        self.assertNotIn("stream established", anonymous.logs() + stranger.logs() + intruder.logs())
        # Each of them says the controller refused it.
        for proxy in (anonymous, stranger, intruder):
            self.assertIn("closed the connection after the TLS handshake: it refused this proxy's "
                          "certificate", proxy.logs())
            text = http_get(proxy.metrics_port, "/metrics")
            self.assertGreaterEqual(metric(text, "memzone_proxy_controller_tls_handshakes_total",
                                           '{result="refused_by_peer"}'), 1)
            self.assertEqual(metric(text, "memzone_proxy_controller_tls_handshakes_total",
                                    '{result="ok"}'), 0)
        self.assertEqual(json.loads(http_get(self.metrics_port, "/proxies"))["proxies"], [])
        text = http_get(self.metrics_port, "/metrics")
        for reason in ("no_peer_certificate", "untrusted_certificate", "identity_not_allowed"):
            self.assertGreaterEqual(metric(text, "memzone_controller_tls_handshakes_total",
                                           '{result="%s"}' % reason), 1, reason)
        if os.environ.get("MEMZONE_SHOW_LOGS"):
            print(controller.logs(), anonymous.logs(), stranger.logs(), intruder.logs())
        # A plaintext proxy gets nowhere either.
        plain = self.start_proxy(controller)
        self.assertIn("PLAINTEXT", plain.logs())
        self.assert_never_subscribes(plain)

    def test_proxy_refuses_a_controller_certificate_for_another_name(self):
        controller = self.start_controller()
        proxy = self.start_proxy(controller, ca=self.ca.cert, cert=self.proxy_cert,
                                 key=self.proxy_key, server_name="impostor.example")
        wait_until(lambda: "refused the controller's certificate" in proxy.logs(), 10,
                   "refusal in the proxy log")
        self.assertIn("refused the controller's certificate: it is for %s 127.0.0.1, not "
                      "impostor.example (--controller-server-name)" % CONTROLLER_NAME, proxy.logs())
        self.assert_never_subscribes(proxy, seconds=1)
        text = http_get(proxy.metrics_port, "/metrics")
        self.assertGreaterEqual(metric(text, "memzone_proxy_controller_tls_handshakes_total",
                                       '{result="name_mismatch"}'), 1)
        # And a controller whose certificate comes from a CA the proxy does not trust.
        other = CertAuthority("other")
        proxy2 = self.start_proxy(controller, ca=other.cert, cert=self.proxy_cert,
                                  key=self.proxy_key, server_name=CONTROLLER_NAME)
        wait_until(lambda: "failed (untrusted_certificate)" in proxy2.logs(), 10,
                   "untrusted controller in the proxy log")
        self.assert_never_subscribes(proxy2, seconds=1)

    def test_plaintext_warns_loudly_on_both_sides(self):
        controller = Controller(topology_yaml({"a": [self.memcached.address]})).start()
        self.addCleanup(controller.kill)
        proxy = Proxy(None, zone="a", controller=controller.address).start()
        self.addCleanup(proxy.stop)
        self.wait_serving(proxy)
        self.assertIn("WARNING: the topology stream is PLAINTEXT", controller.logs())
        self.assertIn("WARNING: the topology stream to %s is PLAINTEXT" % controller.address,
                      proxy.logs())

    def test_bad_files_fail_start_up_with_the_file_and_reason(self):
        import subprocess
        from harness import CONTROLLER, PROXY
        config = Controller(topology_yaml({"a": [self.memcached.address]})).config
        args = [CONTROLLER, "--source", "file", "--config", config, "--grpc-listen",
                "127.0.0.1:%d" % free_port(), "--tls-cert", self.server_cert, "--tls-key",
                self.proxy_key, "--tls-client-ca", self.ca.cert]
        out = subprocess.run(args, capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn(("memzone-controller: TLS: %s: this private key does not belong to the "
                       "certificate in %s" % (self.proxy_key, self.server_cert)).encode(), out.stderr)
        out = subprocess.run([PROXY, "--listen", "127.0.0.1:%d" % free_port(), "--controller",
                              "127.0.0.1:1", "--controller-ca", "/nonexistent/ca.crt"],
                             capture_output=True, timeout=10)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn(b"controller TLS: /nonexistent/ca.crt: cannot be read", out.stderr)

    def test_rotating_every_file_under_load_keeps_the_stream(self):
        # Both sides read Secret-volume-shaped directories, re-read every second.
        server_dir, proxy_dir = SecretVolume(), SecretVolume()
        server_dir.publish({"tls.crt": read(self.server_cert), "tls.key": read(self.server_key),
                            "ca.crt": read(self.ca.cert)})
        proxy_dir.publish({"tls.crt": read(self.proxy_cert), "tls.key": read(self.proxy_key),
                           "ca.crt": read(self.ca.cert)})
        controller = self.start_controller(files={"cert": server_dir.path("tls.crt"),
                                                  "key": server_dir.path("tls.key"),
                                                  "client_ca": server_dir.path("ca.crt")},
                                           reload="1s")
        proxy = self.start_proxy(controller, ca=proxy_dir.path("ca.crt"),
                                 cert=proxy_dir.path("tls.crt"), key=proxy_dir.path("tls.key"),
                                 server_name=CONTROLLER_NAME, reload=1)
        self.wait_serving(proxy)
        before = json.loads(http_get(self.metrics_port, "/proxies"))["proxies"]
        self.assertEqual(len(before), 1)
        load = Load(proxy)
        load.start()
        try:
            time.sleep(0.5)
            # A new CA; for the change-over both sides trust the old and the new one.
            new_ca = CertAuthority("memzone-next")
            bundle = read(self.ca.cert) + read(new_ca.cert)
            server_cert, server_key, server_serial = new_ca.issue(
                "controller", dns=[CONTROLLER_NAME], ip=["127.0.0.1"], days=10)
            proxy_cert, proxy_key, _ = new_ca.issue("proxy", uri=[PROXY_ID])
            server_dir.publish({"tls.crt": read(server_cert), "tls.key": read(server_key),
                                "ca.crt": bundle})
            proxy_dir.publish({"tls.crt": read(proxy_cert), "tls.key": read(proxy_key),
                               "ca.crt": bundle})
            # A new handshake sees the new certificate once the controller re-read its files.
            wait_until(lambda: served_certificate_serial(
                controller.port, proxy_cert, proxy_key, new_ca.cert, CONTROLLER_NAME) ==
                server_serial, 15, "new certificate on a new handshake")
            # A proxy that knows only the new CA and holds a new-CA certificate subscribes.
            fresh = self.start_proxy(controller, ca=new_ca.cert, cert=proxy_cert, key=proxy_key,
                                     server_name=CONTROLLER_NAME)
            self.wait_serving(fresh)
            time.sleep(1)
        finally:
            errors = load.finish()
        self.assertEqual(errors, [])
        self.assertGreater(load.ops, 100)
        # The first proxy's stream never dropped: one connection, the same since start.
        self.assertEqual(proxy.logs().count("stream established"), 1, proxy.logs())
        self.assertNotIn("stream ended", proxy.logs())
        after = json.loads(http_get(self.metrics_port, "/proxies"))["proxies"]
        self.assertEqual(len(after), 2)
        self.assertIn(before[0]["connectedSince"], [p["connectedSince"] for p in after])
        self.assertIn(before[0]["nodeId"], [p["nodeId"] for p in after])
        # The expiry gauge follows the file: the new certificate is a 10-day one.
        text = http_get(self.metrics_port, "/metrics")
        expiry = metric(text, "memzone_tls_certificate_expiry_seconds",
                        '{file="%s"}' % server_dir.path("tls.crt"))
        self.assertLess(expiry - time.time(), 10 * 86400 + 60)

        # The first proxy re-read its files too: once the old CA is gone from the controller,
        # it reconnects (to a restarted controller) with its new certificate.
        server_dir.publish({"tls.crt": read(server_cert), "tls.key": read(server_key),
                            "ca.crt": read(new_ca.cert)})
        controller.kill()
        controller = self.start_controller(files={"cert": server_dir.path("tls.crt"),
                                                  "key": server_dir.path("tls.key"),
                                                  "client_ca": server_dir.path("ca.crt")},
                                           reload="1s", port=controller.port)
        wait_until(lambda: proxy.logs().count("stream established") == 2, 20,
                   "the first proxy back on the restarted controller")
        self.assertNotIn("refused", controller.logs())


if __name__ == "__main__":
    unittest.main()
