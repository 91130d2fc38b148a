"""A real Kubernetes control plane for tests, the envtest way: etcd and kube-apiserver (built by
scripts/install-k8s-tools.sh) on 127.0.0.1 with ports the test picks, in a temporary
directory, and no kubelet, scheduler or controller-manager: objects are stored, validated,
admitted and authorized for real, and nothing runs them.

The API server has a ServiceAccount token issuer (TokenRequest API) and RBAC authorization, so a
token issued here for a ServiceAccount is judged by the chart's (Cluster)Roles. The test's own
calls use a client certificate in system:masters (kubectl, helm and `api()`).

The EndpointSlice watch cache is off (`--watch-cache-sizes=endpointslices...#0`): a watch of
EndpointSlices then reads etcd itself, so after a compaction of etcd (`compact()`) a re-watch
from an older resourceVersion fails with 410 Gone, as it does when a cache window runs out in a
busy cluster. restart_apiserver() ends every client's connections at a moment the test chooses.

The API server refuses loopback addresses in EndpointSlices, as it would refuse them for any
pod. enter_private_network() moves the test into a network namespace of its own whose only
interface, its loopback, also holds documentation addresses (192.0.2.0/24) for the memcached
"pods": nothing in it has a route out, so no packet leaves the namespace.

Every wait is bounded; stop() ends every process started here.
"""
import base64
import ctypes
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import yaml

from harness import free_port, stop_process, wait_until
from tls_certs import CertAuthority, _run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
CHART = os.path.join(ROOT, "charts/memzone")
TOOLS = ("etcd", "kube-apiserver", "kubectl", "helm")


def tool(name):
    """The path of a tool scripts/install-k8s-tools.sh installs."""
    return shutil.which(name) or os.path.join("/usr/local/bin", name)


def missing_tools():
    return [t for t in TOOLS if not os.access(tool(t), os.X_OK)]


def require_tools():
    """The k8s-real tests are part of the README's test command, whose scripts install these:
    a missing tool fails the test rather than skipping it."""
    missing = missing_tools()
    if missing:
        raise RuntimeError("%s not installed: run scripts/install-k8s-tools.sh" % ", ".join(missing))


CLONE_NEWNET = 0x40000000


def enter_private_network(addresses):
    """Moves this process (and so every process it starts afterwards) into a new network
    namespace with `lo` up, holding `addresses` too. Call it before any thread
    starts: a namespace belongs to the thread that enters it, and new threads inherit it."""
    if os.geteuid() != 0:
        raise RuntimeError("a network namespace of its own needs root (CAP_NET_ADMIN)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "unshare(CLONE_NEWNET): " + os.strerror(errno))
    ip = shutil.which("ip") or "/usr/sbin/ip"

    def run(*args):
        subprocess.run([ip] + list(args), check=True, capture_output=True, timeout=30)
    run("link", "set", "lo", "up")
    for a in addresses:
        run("addr", "add", a + "/32", "dev", "lo")


class KubeCluster:
    def __init__(self):
        require_tools()
        self.dir = tempfile.mkdtemp(prefix="memzone-kube-")
        self.procs = []
        ca = CertAuthority("kube", directory=self.dir)
        self.ca_file = ca.cert
        self.serving_cert, self.serving_key, _ = ca.issue("kube-apiserver", dns=["localhost"],
                                                          ip=["127.0.0.1"])
        self.admin_cert, self.admin_key, _ = ca.issue("admin", subject="/O=system:masters/CN=admin")
        self.sa_key = os.path.join(self.dir, "sa.key")
        self.sa_pub = os.path.join(self.dir, "sa.pub")
        _run("genrsa", "-out", self.sa_key, "2048")
        _run("rsa", "-in", self.sa_key, "-pubout", "-out", self.sa_pub)
        self.ssl = ssl.create_default_context(cafile=self.ca_file)
        self.ssl.load_cert_chain(self.admin_cert, self.admin_key)
        self.etcd_port = self.port = None
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")

    # ----- processes
    def start(self):
        try:
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name, cmd):
        log = open(os.path.join(self.dir, name + ".log"), "a")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.procs.append((name, proc, log))
        return proc

    def _start_etcd(self):
        for attempt in range(3):
            self.etcd_port, peer = free_port(), free_port()
            proc = self._spawn("etcd", [
                tool("etcd"), "--name", "memzone-test", "--data-dir", os.path.join(self.dir, "etcd-%d" % attempt),
                "--listen-client-urls", "http://127.0.0.1:%d" % self.etcd_port,
                "--advertise-client-urls", "http://127.0.0.1:%d" % self.etcd_port,
                "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
                "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
                "--initial-cluster", "memzone-test=http://127.0.0.1:%d" % peer,
                "--unsafe-no-fsync", "--log-level", "warn"])
            try:
                wait_until(lambda: proc.poll() is not None or self._etcd_healthy(), 60, "etcd to answer")
            except AssertionError:
                raise AssertionError("etcd did not start:\n" + self.log("etcd")[-3000:])
            if proc.poll() is None:
                return
        raise AssertionError("etcd exited three times:\n" + self.log("etcd")[-3000:])

    def _etcd_healthy(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.etcd_port, timeout=2) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _start_apiserver(self, port=None):
        for attempt in range(1 if port else 3):
            self.port = port or free_port()
            proc = self._spawn("kube-apiserver", [
                tool("kube-apiserver"),
                "--etcd-servers", "http://127.0.0.1:%d" % self.etcd_port,
                "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                "--secure-port", str(self.port), "--cert-dir", os.path.join(self.dir, "apiserver-certs"),
                "--tls-cert-file", self.serving_cert, "--tls-private-key-file", self.serving_key,
                "--client-ca-file", self.ca_file,
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file", self.sa_pub,
                "--service-account-signing-key-file", self.sa_key,
                "--authorization-mode", "RBAC",
                "--service-cluster-ip-range", "10.96.0.0/16",
                # No kubelet and no controller-manager: nothing reconciles the `kubernetes`
                # Service's endpoints, and etcd is compacted only when a test says so.
                "--endpoint-reconciler-type", "none", "--etcd-compaction-interval", "0",
                "--watch-cache-sizes", "endpointslices.discovery.k8s.io#0",
                "--enable-priority-and-fairness=false", "--profiling=false", "-v", os.environ.get("KUBE_APISERVER_V", "1")])
            try:
                wait_until(lambda: proc.poll() is not None or self._ready(), 120, "kube-apiserver /readyz")
            except AssertionError:
                raise AssertionError("kube-apiserver did not get ready:\n" + self.log("kube-apiserver")[-4000:])
            if proc.poll() is None:
                break
        else:
            raise AssertionError("kube-apiserver exited three times:\n" + self.log("kube-apiserver")[-4000:])
        self.url = "https://127.0.0.1:%d" % self.port
        with open(self.kubeconfig, "w") as f:
            yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                          "certificate-authority": self.ca_file}}],
                "users": [{"name": "admin", "user": {"client-certificate": self.admin_cert,
                                                     "client-key": self.admin_key}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}]}, f)

    def _ready(self):
        try:
            with urllib.request.urlopen("https://127.0.0.1:%d/readyz" % self.port, timeout=5,
                                        context=self.ssl) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    def restart_apiserver(self, while_down):
        """Kills kube-apiserver (every client connection ends), calls `while_down()`, and
        starts it again on the same port with a fresh watch cache."""
        for entry in [e for e in self.procs if e[0] == "kube-apiserver"]:
            entry[1].kill()  # SIGTERM would wait for the watches to end, for a minute
            entry[1].wait(timeout=30)
            entry[2].close()
            self.procs.remove(entry)
        while_down()
        self._start_apiserver(port=self.port)

    def delete_from_etcd(self, key):
        """Deletes one key straight from etcd (as if through an API server we do not watch)."""
        return int(self._etcd("deleterange", {"key": _b64(key)}).get("deleted", 0))

    def stop(self):
        for name, proc, log in reversed(self.procs):
            try:
                stop_process(proc, log, name, timeout=20)
            except AssertionError:
                pass  # killed: nothing of it is left to stop
        self.procs = []

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # ----- clients
    def env(self):
        """The environment kubectl and helm need: the admin kubeconfig, and caches of their own."""
        return dict(os.environ, KUBECONFIG=self.kubeconfig, HOME=self.dir,
                    HELM_CACHE_HOME=os.path.join(self.dir, "helm-cache"),
                    HELM_CONFIG_HOME=os.path.join(self.dir, "helm-config"),
                    HELM_DATA_HOME=os.path.join(self.dir, "helm-data"))

    def run(self, name, *args, stdin=None, check=True, timeout=120):
        r = subprocess.run([tool(name)] + list(args), input=stdin, capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s %s failed (%d):\n%s%s" % (name, " ".join(args), r.returncode,
                                                            r.stdout[-3000:], r.stderr[-3000:]))
        return r

    def kubectl(self, *args, **kwargs):
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args, **kwargs):
        return self.run("helm", *args, **kwargs)

    def apply(self, *objects, namespace=None):
        text = yaml.safe_dump_all(list(objects))
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, stdin=text)

    def api(self, method, path, body=None, content_type="application/json", token=None, timeout=30):
        """One call as admin (or with `token`); returns (HTTP status, decoded JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        context = self.ssl
        if token:
            req.add_header("Authorization", "Bearer " + token)
            context = ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"message": text.decode(errors="replace")}

    def get(self, path):
        status, body = self.api("GET", path)
        return body if status == 200 else None

    def create_namespace(self, name):
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        # No controller-manager creates a namespace's `default` ServiceAccount: Pods (the chart's
        # test hook) need it to pass ServiceAccount admission.
        self.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
                   namespace=name)

    def token(self, namespace, service_account, bound_secret=None, seconds=3600):
        """A ServiceAccount token from the TokenRequest API, optionally bound to a Secret (the
        token stops authenticating when that Secret is deleted)."""
        spec = {"expirationSeconds": seconds}
        if bound_secret:
            uid = self.get("/api/v1/namespaces/%s/secrets/%s" % (namespace, bound_secret))["metadata"]["uid"]
            spec["boundObjectRef"] = {"kind": "Secret", "apiVersion": "v1", "name": bound_secret, "uid": uid}
        status, body = self.api("POST", "/api/v1/namespaces/%s/serviceaccounts/%s/token" % (namespace, service_account),
                                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        if status != 201:
            raise AssertionError("TokenRequest for %s/%s: %d %s" % (namespace, service_account, status, body))
        return body["status"]["token"]

    # ----- etcd
    def etcd_revision(self):
        return int(self._etcd("range", {"key": _b64("/"), "limit": 1})["header"]["revision"])

    def compact(self):
        """Compacts etcd past every revision so far (physically). A write first: compacting at
        revision R keeps R itself, so a watch from R would still start, and a delete made at R
        would vanish without a 410 (the API server's own compactions lag minutes behind)."""
        self._etcd("put", {"key": _b64("/memzone-test/compaction"), "value": _b64(str(time.time()))})
        revision = self.etcd_revision()
        self._etcd("compaction", {"revision": revision, "physical": True})
        return revision

    def _etcd(self, call, body):
        req = urllib.request.Request("http://127.0.0.1:%d/v3/kv/%s" % (self.etcd_port, call),
                                     data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    # ----- the chart
    def chart_objects(self, release, namespace, *set_values, kinds=None):
        """`helm template` of the chart (CRDs included), as objects, filtered by kind."""
        args = ["template", release, CHART, "--namespace", namespace, "--include-crds"]
        for v in set_values:
            args += ["--set", v]
        docs = [d for d in yaml.safe_load_all(self.helm(*args).stdout) if d]
        return [d for d in docs if kinds is None or d["kind"] in kinds]


def _b64(text):
    return base64.b64encode(text.encode()).decode()
