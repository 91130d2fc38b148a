"""The chart installed by the real Helm into a REAL Kubernetes API server (kube_cluster.py:
etcd + kube-apiserver built from pinned sources, no kubelet).

Which API server, and why: the real one, so that every object the chart renders is validated,
defaulted and admitted by Kubernetes itself (a double would accept anything). With no kubelet,
workloads are created, not run; for `helm test` this file plays the kubelet's one part Helm
waits on: it marks the test Pod Succeeded through the Pod's status subresource.
"""
import os
import subprocess
import time
import unittest

import yaml

from harness import wait_until
from kube_cluster import CHART, KubeCluster, tool

CLUSTER = None
NS = "memzone"
WATCHED = "cache"  # ci/example-memcached.yaml: controller.watchNamespace


def setUpModule():
    global CLUSTER
    CLUSTER = KubeCluster().start()


def tearDownModule():
    if CLUSTER:
        CLUSTER.stop()


def inventory():
    """Every object a user could have created: each listable namespaced kind in the release's
    and the watched namespace, and the cluster-scoped kinds a chart can make. (sorted)"""
    kinds = CLUSTER.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    out = []
    for ns in (NS, WATCHED):
        out += [ns + ":" + o for o in CLUSTER.kubectl("get", ",".join(kinds), "-n", ns, "-o", "name",
                                                       "--ignore-not-found").stdout.split()]
    for kind in ("clusterroles", "clusterrolebindings", "customresourcedefinitions", "namespaces",
                 "validatingwebhookconfigurations", "mutatingwebhookconfigurations", "priorityclasses"):
        out += CLUSTER.kubectl("get", kind, "-o", "name").stdout.split()
    return sorted(out)


class HelmInstallTest(unittest.TestCase):
    def test_install_test_hook_and_uninstall_leave_nothing_behind(self):
        CLUSTER.create_namespace(NS)
        CLUSTER.create_namespace(WATCHED)
        before = inventory()
        values = os.path.join(CHART, "ci/example-memcached.yaml")
        r = CLUSTER.helm("install", "mz", CHART, "-n", NS, "-f", values, "--timeout", "60s")
        self.assertIn("STATUS: deployed", r.stdout)
        self.assertIn("NOTES:", r.stdout)
        self.assertIn("helm test mz -n memzone", r.stdout)  # NOTES.txt, rendered

        # Every object of the release is in the API server, as rendered (plus the CRD from crds/).
        manifest = [d for d in yaml.safe_load_all(CLUSTER.helm("get", "manifest", "mz", "-n", NS).stdout) if d]
        kinds = sorted({d["kind"] for d in manifest})
        print("\nrelease objects: %s" % ", ".join(kinds))
        for want in ("Deployment", "DaemonSet", "StatefulSet", "Service", "ReplicatedPool", "Role",
                     "ClusterRole", "ServiceAccount", "PodDisruptionBudget"):
            self.assertIn(want, kinds)
        for d in manifest:
            ns = ["-n", d["metadata"].get("namespace", NS)]
            got = CLUSTER.kubectl("get", d["kind"], d["metadata"]["name"], "-o", "json", *ns, check=False)
            self.assertEqual(got.returncode, 0, "%s %s: %s" % (d["kind"], d["metadata"]["name"], got.stderr))
        crd = CLUSTER.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/replicatedpools.memzone.io")
        self.assertIsNotNone(crd, "Helm installs the chart's crds/ first")

        # helm test: the hook Pod is created and admitted; with no kubelet, the test marks it
        # Succeeded, and Helm reports the test passed and deletes the Pod (hook-succeeded).
        test = subprocess.Popen([tool("helm"), "test", "mz", "-n", NS, "--timeout", "120s"], env=CLUSTER.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            pod_path = "/api/v1/namespaces/%s/pods/mz-memzone-test-set-get" % NS
            pod = wait_until(lambda: CLUSTER.get(pod_path), 60, "the test hook's Pod")
            self.assertEqual(pod["metadata"]["annotations"]["helm.sh/hook"], "test")
            self.assertEqual(pod["spec"]["serviceAccountName"], "default")
            status, body = CLUSTER.api("PATCH", pod_path + "/status", {"status": {"phase": "Succeeded"}},
                                       content_type="application/merge-patch+json")
            self.assertEqual(status, 200, body)
            out, _ = test.communicate(timeout=120)
        finally:
            if test.poll() is None:
                test.kill()
                test.wait(timeout=10)
        self.assertEqual(test.returncode, 0, out)
        self.assertRegex(out, r"TEST SUITE:\s+mz-memzone-test-set-get")
        self.assertRegex(out, r"Phase:\s+Succeeded")
        wait_until(lambda: CLUSTER.get(pod_path) is None, 30, "the hook Pod deleted (hook-succeeded)")

        r = CLUSTER.helm("uninstall", "mz", "-n", NS, "--wait", "--timeout", "60s")
        self.assertIn('release "mz" uninstalled', r.stdout)
        # Nothing is left but what Helm never deletes: the CRD (crds/ is install-only).
        deadline = time.monotonic() + 30
        while True:
            after = inventory()
            left = sorted(set(after) - set(before))
            if left == ["customresourcedefinition.apiextensions.k8s.io/replicatedpools.memzone.io"] or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(left, ["customresourcedefinition.apiextensions.k8s.io/replicatedpools.memzone.io"])
        self.assertEqual(sorted(set(before) - set(after)), [])


if __name__ == "__main__":
    unittest.main()
