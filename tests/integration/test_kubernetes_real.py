"""memzone-controller against a REAL Kubernetes API server: etcd + kube-apiserver built from the
pinned sources (kube_cluster.py, scripts/install-k8s-tools.sh), no kubelet.

Which API server, and why: this file uses the real one, so that what a double can get wrong —
RBAC, the CRD's schema and CEL rules, the status subresource, printer columns, EndpointSlice
validation, ServiceAccount tokens from the TokenRequest API, Leases, 410 Gone after an etcd
compaction — is judged by Kubernetes itself. The controller runs as a host process with a real
ServiceAccount token bound to the chart's own (Cluster)Roles (from `helm template`), so every
call it makes passes the real RBAC authorizer. test_kubernetes.py keeps the test double
(fake_kube_api.py) for faults a real server cannot produce on demand: chunks cut at arbitrary
bytes, an ERROR 410 event at a chosen moment, a Lease taken between a read and an update, an
API server down for a second, pagination over 520 slices, request counting.
"""
import copy
import glob
import os
import re
import signal
import tempfile
import time
import unittest
import urllib.request
import uuid

import yaml

from harness import Controller, Memcached, Proxy, free_port, wait_until, write_atomically
from kube_cluster import ROOT, KubeCluster, enter_private_network
from test_kubernetes import common_free_port, pb2

# The memcached "pods": documentation addresses in the test's own network namespace (the API
# server refuses loopback addresses in an EndpointSlice, as it would for a real pod).
IPS = ["192.0.2.%d" % i for i in range(2, 6)]
ELECTION = ["--leader-elect-lease-duration", "2s", "--leader-elect-renew-deadline", "1500ms",
            "--leader-elect-retry-period", "250ms"]
CLUSTER = None


def setUpModule():
    global CLUSTER
    enter_private_network(IPS)
    CLUSTER = KubeCluster().start()
    # Cluster-wide objects every test shares: the chart's CRD and two Nodes in two zones.
    crds = CLUSTER.chart_objects("crd", "default", kinds={"CustomResourceDefinition"})
    CLUSTER.apply(*crds)
    CLUSTER.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/replicatedpools.memzone.io")
    for name, zone in (("node-a", "zone-a"), ("node-b", "zone-b")):
        CLUSTER.apply({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                             "topology.kubernetes.io/zone": zone}}})


def tearDownModule():
    if CLUSTER:
        CLUSTER.stop()


def endpoint(ip, zone, node, pod, hostname=None, ready=True, namespace="default"):
    """One endpoint the way the EndpointSlice controller writes it for a pod."""
    ep = {"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": False},
          "nodeName": node, "zone": zone,
          "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod,
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, namespace + "/" + pod))}}
    if hostname:
        ep["hostname"] = hostname
    return ep


class RealApiTest(unittest.TestCase):
    """One namespace and one release of the chart's RBAC per test; memcached on IPS[0] and IPS[1]."""

    election = []
    counter = 0

    def setUp(self):
        RealApiTest.counter += 1
        self.ns = "mz-%d-%d" % (os.getpid() % 10000, RealApiTest.counter)
        self.release = "r%d" % RealApiTest.counter
        CLUSTER.create_namespace(self.ns)
        self.addCleanup(CLUSTER.kubectl, "delete", "namespace", self.ns, "--wait=false", check=False)
        rbac = CLUSTER.chart_objects(self.release, self.ns, kinds={
            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})
        self.assertEqual(sorted(o["kind"] for o in rbac),
                         ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"])
        CLUSTER.apply(*rbac)
        for o in rbac:
            if o["kind"].startswith("Cluster"):
                self.addCleanup(CLUSTER.kubectl, "delete", o["kind"], o["metadata"]["name"], check=False)
        self.role = [o for o in rbac if o["kind"] == "Role"][0]
        self.sa = [o for o in rbac if o["kind"] == "ServiceAccount"][0]["metadata"]["name"]

        self.port = common_free_port(IPS[:2])
        self.servers = {ip: Memcached(port=self.port, host=ip).start() for ip in IPS[:2]}
        for s in self.servers.values():
            self.addCleanup(s.kill)
        CLUSTER.apply({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "memcached"},
                       "spec": {"selector": {"app": "memcached"},
                                "ports": [{"name": "memcache", "port": 11211, "targetPort": self.port}]}},
                      namespace=self.ns)
        self.service_uid = CLUSTER.get(self.path("api/v1", "services", "memcached"))["metadata"]["uid"]
        self.put_slice("memcached-7xk2p", [endpoint(IPS[0], "zone-a", "node-a", "memcached-0", "memcached-0", namespace=self.ns),
                                           endpoint(IPS[1], "zone-b", "node-b", "memcached-1", "memcached-1", namespace=self.ns)])
        CLUSTER.apply({"apiVersion": "memzone.io/v1alpha1", "kind": "ReplicatedPool",
                       "metadata": {"name": "sessions"},
                       "spec": {"service": "memcached", "port": "memcache", "prefixes": ["session:"],
                                "replication": {"wait": "local"}}}, namespace=self.ns)

        # The controller's credentials: a TokenRequest token for the chart's ServiceAccount,
        # bound to a Secret so that deleting the Secret revokes it.
        self.token_dir = tempfile.mkdtemp(prefix="memzone-token-")
        self.token_file = os.path.join(self.token_dir, "token")
        write_atomically(self.token_file, self.new_token("controller-token-1") + "\n")

    # ----- helpers
    def path(self, group, resource, name=None, sub=None):
        p = "/%s/namespaces/%s/%s" % (group, self.ns, resource)
        return p + ("/" + name if name else "") + ("/" + sub if sub else "")

    def put_slice(self, name, endpoints):
        CLUSTER.apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "generateName": "memcached-",
                         "labels": {"kubernetes.io/service-name": "memcached",
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "memcached",
                                              "uid": self.service_uid, "controller": True,
                                              "blockOwnerDeletion": True}]},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "memcache", "port": self.port, "protocol": "TCP"}]}, namespace=self.ns)

    def new_token(self, secret):
        CLUSTER.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "type": "Opaque"},
                      namespace=self.ns)
        return CLUSTER.token(self.ns, self.sa, bound_secret=secret)

    def controller(self, api_url=None):
        """A started controller, once its /readyz answers 200: in a cluster, proxies find the
        replicas through a headless Service that lists Ready pods only. (A proxy that connects
        before the controller has listed the Nodes keeps an empty zone for that stream.)"""
        metrics = free_port()
        c = Controller(None, source_args=[
            "--source", "kubernetes", "--namespace", self.ns, "--kube-api", api_url or CLUSTER.url,
            "--kube-token-file", self.token_file, "--kube-ca-file", CLUSTER.ca_file],
            extra_args=ELECTION + ["--metrics-listen", "127.0.0.1:%d" % metrics])
        self.addCleanup(c.kill)
        c.metrics_port = metrics
        c.start()

        def ready():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % metrics, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(ready, 30, "the controller's /readyz\n" + c.logs()[-2000:])
        return c

    def proxy(self, controllers):
        p = Proxy(None, controller=",".join(c.address for c in controllers), env={"NODE_NAME": "node-a"}).start()
        self.addCleanup(p.stop)
        return p

    def pool(self):
        return CLUSTER.get(self.path("apis/memzone.io/v1alpha1", "replicatedpools", "sessions")) or {}

    def status(self):
        return self.pool().get("status", {})

    def ready(self):
        return next((c for c in self.status().get("conditions", []) if c["type"] == "Ready"), {})

    def snapshot(self, proxy):
        try:
            with open(os.path.join(proxy.state_dir, "topology.pb"), "rb") as f:
                s = pb2.TopologySnapshot()
                s.ParseFromString(f.read())
                return s
        except Exception:
            return None

    def zones(self, proxy):
        s = self.snapshot(proxy)
        return sorted(z.zone for p in s.pools for z in p.zones) if s else []

    def wait_zones(self, proxy, zones, controller, timeout=20):
        wait_until(lambda: self.zones(proxy) == zones, timeout,
                   "zones %s in the proxy's snapshot (have %s)\ncontroller log:\n%s"
                   % (zones, self.zones(proxy), controller.logs()[-3000:]))

    @staticmethod
    def identity(controller):
        m = re.search(r"became leader \(Lease \S+, identity (\S+)\)", controller.logs())
        return m.group(1) if m else None


class ControllerOnRealApiTest(RealApiTest):
    def test_routing_status_subresource_and_printer_columns(self):
        c = self.controller()
        proxy = self.proxy([c])
        self.wait_zones(proxy, ["zone-a", "zone-b"], c)
        s = self.snapshot(proxy)
        self.assertEqual(s.proxy_zone, "zone-a")  # node-a's label, read from the real Node
        names = sorted(b.name for p in s.pools for z in p.zones for b in z.backends)
        self.assertEqual(names, ["memcached-0", "memcached-1"])  # the slices' hostnames
        # Routing: a write through the real proxy lands on the real memcached of both zones.
        with proxy.client() as client:
            self.assertEqual(client.request(b"set session:1 0 0 2\r\nok\r\n"), b"STORED\r\n")
            self.assertEqual(client.request(b"get session:1\r\n"), b"VALUE session:1 0 2\r\nok\r\nEND\r\n")
        for ip in IPS[:2]:
            with self.servers[ip].client() as direct:
                wait_until(lambda: direct.request(b"get session:1\r\n") != b"END\r\n", 5, "the copy on " + ip)

        wait_until(lambda: self.ready().get("reason") == "AllProxiesAcked", 20,
                   "Ready=AllProxiesAcked\n" + c.logs()[-3000:])
        status = self.status()
        self.assertEqual(self.ready()["status"], "True")
        self.assertEqual(status["observedGeneration"], 1)
        self.assertEqual(status["topologyVersion"], s.version)
        self.assertEqual(status["proxies"], {"total": 1, "acked": 1})
        self.assertEqual(status["zoneSummary"], "zone-a:1,zone-b:1")
        # Written through the status subresource, by the controller's own identity.
        managers = [(m.get("manager"), m.get("subresource")) for m in self.pool()["metadata"]["managedFields"]]
        self.assertIn(("memzone-controller", "status"), managers, managers)

        # The CRD's printer columns, as kubectl prints them from the real server's Table.
        out = CLUSTER.kubectl("get", "replicatedpools", "-n", self.ns).stdout.splitlines()
        print("\n" + "\n".join(out))
        self.assertEqual(out[0].split(), ["NAME", "READY", "ZONES", "VERSION", "AGE"])
        self.assertEqual(out[1].split()[:4], ["sessions", "True", "zone-a:1,zone-b:1", s.version])

        # A spec edit bumps the generation; the controller serves it and says so in status.
        CLUSTER.kubectl("patch", "replicatedpools", "sessions", "-n", self.ns, "--type", "merge",
                        "-p", '{"spec": {"prefixes": ["session:", "cart:"]}}')
        wait_until(lambda: self.status().get("observedGeneration") == 2, 20,
                   "observedGeneration 2\n" + c.logs()[-3000:])
        wait_until(lambda: sorted(r.prefix for r in self.snapshot(proxy).routes) == ["cart:", "session:"], 10,
                   "the new prefix in the proxy")

    def test_crd_schema_rejects_invalid_specs_at_the_api(self):
        def pool(name, spec):
            return {"apiVersion": "memzone.io/v1alpha1", "kind": "ReplicatedPool",
                    "metadata": {"name": name, "namespace": self.ns}, "spec": spec}
        for name, spec, message in (
                ("writes", {"service": "memcached", "replication": {"writes": "bogus"}}, 'Unsupported value: "bogus"'),
                ("quorum", {"service": "memcached", "replication": {"wait": "quorum", "writes": "local-zone"}},
                 "wait: quorum needs writes: all-zones"),
                ("port", {"service": "memcached", "port": 70000}, "port must be a name or a number from 1 to 65535"),
                ("noservice", {"prefixes": ["x:"]}, "spec.service: Required value")):
            with self.subTest(name):
                r = CLUSTER.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pool(name, spec)), check=False)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertIn(message, r.stderr)
                self.assertIsNone(CLUSTER.get(self.path("apis/memzone.io/v1alpha1", "replicatedpools", name)))
        # Unknown fields, which the API server would otherwise prune silently, are refused
        # under strict field validation (what `kubectl apply` asks for by default).
        r = CLUSTER.kubectl("apply", "--validate=strict", "-f", "-", check=False, stdin=yaml.safe_dump(
            pool("typo", {"service": "memcached", "prefixs": ["a:"]})))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('unknown field "spec.prefixs"', r.stderr)
        # Every ReplicatedPool the README and deploy/examples show is accepted by the real
        # server (a server-side dry run: validated, defaulted, not stored).
        examples = []
        with open(os.path.join(ROOT, "README.md")) as f:
            for block in re.findall(r"```yaml\n(.*?)```", f.read(), re.S):
                examples += [d for d in yaml.safe_load_all(block) if isinstance(d, dict) and d.get("kind") == "ReplicatedPool"]
        for path in sorted(glob.glob(os.path.join(ROOT, "deploy/examples/*.yaml"))):
            with open(path) as f:
                examples += [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "ReplicatedPool"]
        self.assertGreaterEqual(len(examples), 2)
        for cr in examples:
            cr["metadata"]["namespace"] = self.ns
            with self.subTest(example=cr["metadata"]["name"]):
                r = CLUSTER.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                                    stdin=yaml.safe_dump(cr), check=False)
                self.assertEqual(r.returncode, 0, r.stderr)
        # An edit of a stored object is judged the same way.
        r = CLUSTER.kubectl("patch", "replicatedpools", "sessions", "-n", self.ns, "--type", "merge",
                            "-p", '{"spec": {"replication": {"writes": "bogus"}}}', check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Unsupported value: "bogus"', r.stderr)
        self.assertEqual(self.pool()["metadata"]["generation"], 1)

    def test_rbac_judges_every_call_and_a_refused_write_is_reported(self):
        who = "system:serviceaccount:%s:%s" % (self.ns, self.sa)

        def can(verb, resource, scope="namespace"):
            """scope: "namespace" (the test's), "cluster" (a cluster-scoped resource) or "all"."""
            where = {"namespace": ["-n", self.ns], "cluster": [], "all": ["--all-namespaces"]}[scope]
            resource, _, sub = resource.partition("/")
            args = ["auth", "can-i", verb, resource, "--as", who] + where + (["--subresource", sub] if sub else [])
            return CLUSTER.kubectl(*args, check=False).stdout.strip() == "yes"
        # What the controller calls, granted; what it does not call, refused.
        for verb, resource, scope in (("watch", "endpointslices.discovery.k8s.io", "namespace"),
                                      ("list", "services", "namespace"), ("watch", "nodes", "cluster"),
                                      ("patch", "replicatedpools.memzone.io/status", "namespace"),
                                      ("update", "leases.coordination.k8s.io", "namespace")):
            self.assertTrue(can(verb, resource, scope), (verb, resource, scope))
        for verb, resource, scope in (("patch", "replicatedpools.memzone.io", "namespace"),
                                      ("update", "replicatedpools.memzone.io/status", "namespace"),
                                      ("watch", "leases.coordination.k8s.io", "namespace"),
                                      ("get", "secrets", "namespace"), ("list", "pods", "namespace"),
                                      ("list", "services", "all"), ("update", "nodes", "cluster")):
            self.assertFalse(can(verb, resource, scope), (verb, resource, scope))

        # Take `patch` on replicatedpools/status out of the chart's Role: the controller's status
        # write is refused by the real authorizer (403), and the controller says so.
        c = self.controller()
        proxy = self.proxy([c])
        self.wait_zones(proxy, ["zone-a", "zone-b"], c)
        wait_until(lambda: self.ready().get("reason") == "AllProxiesAcked", 20, "status written")
        role = copy.deepcopy(self.role)
        role["rules"] = [r for r in role["rules"] if r["resources"] != ["replicatedpools/status"]]
        self.assertEqual(len(role["rules"]), len(self.role["rules"]) - 1)
        CLUSTER.apply(role)
        wait_until(lambda: not can("patch", "replicatedpools.memzone.io/status"), 10, "the Role to lose patch")
        self.put_slice("memcached-7xk2p", [endpoint(IPS[0], "zone-a", "node-a", "memcached-0", "memcached-0", namespace=self.ns)])
        self.wait_zones(proxy, ["zone-a"], c)  # serving goes on: reads are still granted
        wait_until(lambda: re.search(r"status of ReplicatedPool %s/sessions: HTTP 403" % self.ns, c.logs()), 20,
                   "the refused status write in the log\n" + c.logs()[-3000:])
        refused = [l for l in c.logs().splitlines() if "HTTP 403" in l][0]
        print("\n" + refused)
        # The API server's own words: who was refused which verb on what.
        self.assertIn('User "%s" cannot patch resource "replicatedpools/status"' % who, refused)
        self.assertEqual(self.status()["zoneSummary"], "zone-a:1,zone-b:1", "a refused write changed nothing")
        # The chart's Role back: the next write goes through.
        CLUSTER.apply(self.role)
        self.put_slice("memcached-7xk2p", [endpoint(IPS[0], "zone-a", "node-a", "memcached-0", "memcached-0", namespace=self.ns),
                                           endpoint(IPS[1], "zone-b", "node-b", "memcached-1", "memcached-1", namespace=self.ns)])
        self.put_slice("memcached-7xk2p", [endpoint(IPS[0], "zone-a", "node-a", "memcached-0", "memcached-0", namespace=self.ns)])
        wait_until(lambda: self.status().get("zoneSummary") == "zone-a:1", 30,
                   "status written again\n" + c.logs()[-3000:])

    def test_watch_restarts_after_etcd_compaction(self):
        """The API server goes away (every watch ends); while it is down a slice is deleted and
        etcd compacted past the controller's resourceVersion. The controller's re-watch is
        answered 410 Gone by the real server, and its relist finds the delete it missed."""
        c = self.controller()
        proxy = self.proxy([c])
        self.put_slice("memcached-extra", [endpoint(IPS[1], "zone-c", "node-b", "memcached-2", namespace=self.ns)])
        self.wait_zones(proxy, ["zone-a", "zone-b", "zone-c"], c)
        revisions = []

        def while_down():
            key = "/registry/endpointslices/%s/memcached-extra" % self.ns
            self.assertEqual(CLUSTER.delete_from_etcd(key), 1, key)
            revisions.append(CLUSTER.compact())
        CLUSTER.restart_apiserver(while_down)
        try:
            self.wait_zones(proxy, ["zone-a", "zone-b"], c, timeout=60)
        except AssertionError:  # say what the watches did, and what the API server saw
            print("etcd compacted at %s; the controller's watch counters:" % revisions)
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % c.metrics_port, timeout=5) as r:
                print("\n".join(l for l in r.read().decode().splitlines() if "kube" in l and not l.startswith("#")))
            print("\n".join(l for l in CLUSTER.log("kube-apiserver").splitlines() if "endpointslices" in l)[-5000:])
            raise
        self.assertIn("EndpointSlice watch: 410 Gone; relisting", c.logs())
        print("\netcd compacted at revision %d; the controller relisted after a real 410 Gone" % revisions[0])

    def test_token_rotation_through_the_token_request_api(self):
        c = self.controller()
        proxy = self.proxy([c])
        wait_until(lambda: self.ready().get("reason") == "AllProxiesAcked", 20, "status written")
        old = open(self.token_file).read().strip()
        write_atomically(self.token_file, self.new_token("controller-token-2") + "\n")
        # Revoke the old token: it is bound to a Secret, and the Secret goes.
        CLUSTER.kubectl("delete", "secret", "controller-token-1", "-n", self.ns)
        wait_until(lambda: CLUSTER.api("GET", self.path("api/v1", "services"), token=old)[0] == 401, 20,
                   "the old token to be refused")
        # The controller's next write meets the 401, re-reads its file, and goes on with the new token.
        self.put_slice("memcached-7xk2p", [endpoint(IPS[0], "zone-a", "node-a", "memcached-0", "memcached-0", namespace=self.ns)])
        self.wait_zones(proxy, ["zone-a"], c)
        wait_until(lambda: self.status().get("zoneSummary") == "zone-a:1", 20,
                   "a status write with the new token\n" + c.logs()[-3000:])
        self.assertNotIn("HTTP 401", c.logs())


class LeaderElectionOnRealApiTest(RealApiTest):
    def lease(self):
        return (CLUSTER.get(self.path("apis/coordination.k8s.io/v1", "leases", "memzone-controller")) or {}).get("spec", {})

    def test_killed_leader_hands_over_through_a_real_lease(self):
        a = self.controller()
        wait_until(lambda: self.identity(a), 20, "a to lead\n" + a.logs()[-2000:])
        self.assertEqual(self.lease().get("holderIdentity"), self.identity(a))
        self.assertEqual(self.lease().get("leaseDurationSeconds"), 2)
        b = self.controller()
        b.wait_for_log("serving topology", timeout=20)
        proxy = self.proxy([a, b])
        wait_until(lambda: self.ready().get("reason") == "AllProxiesAcked", 20, "status from a")
        time.sleep(1)
        self.assertNotIn("became leader", b.logs())
        self.assertNotIn("wrote status", b.logs())

        killed = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        wait_until(lambda: self.identity(b), 15, "b to lead\n" + b.logs()[-2000:])
        print("\nleader killed: the other replica took the real Lease after %.2f s (lease 2 s)"
              % (time.monotonic() - killed))
        self.assertEqual(self.lease().get("holderIdentity"), self.identity(b))
        # Status continues from b: a change is served and written.
        self.put_slice("memcached-7xk2p", [endpoint(IPS[0], "zone-a", "node-a", "memcached-0", "memcached-0", namespace=self.ns)])
        self.wait_zones(proxy, ["zone-a"], b)
        wait_until(lambda: self.status().get("zoneSummary") == "zone-a:1" and
                   self.status().get("topologyVersion") == getattr(self.snapshot(proxy), "version", None) and
                   self.ready().get("reason") == "AllProxiesAcked", 20, "status from b\n" + b.logs()[-3000:])
        self.assertIn("wrote status", b.logs())


if __name__ == "__main__":
    unittest.main()
