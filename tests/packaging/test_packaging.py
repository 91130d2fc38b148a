"""Packaging checks: the Helm chart (`helm lint --strict` and `helm template` by the real Helm,
built by scripts/install-k8s-tools.sh), the plain manifests (`kubectl kustomize`), the CRD and
its examples, and the Dockerfile. No API server here: tests/integration/test_helm_install.py
installs the chart into a real one.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import unittest

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
CHART = os.path.join(ROOT, "charts/memzone")
HELM = shutil.which("helm") or "/usr/local/bin/helm"
KUBECTL = shutil.which("kubectl") or "/usr/local/bin/kubectl"
# Helm keeps caches and repository config under these; none of them may be the user's.
HELM_HOME = os.path.join(os.environ.get("TMPDIR", "/tmp"), "memzone-helm-%d" % os.getpid())
HELM_ENV = dict(os.environ, HELM_CACHE_HOME=HELM_HOME + "/cache", HELM_CONFIG_HOME=HELM_HOME + "/config",
                HELM_DATA_HOME=HELM_HOME + "/data")

# What memzone-controller calls (controlplane/sources/kubernetes_source.cc,
# controlplane/status/status_writer.cc, controlplane/ha/): (apiGroup, resource, scope) -> verbs.
CONTROLLER_CALLS = {
    ("", "nodes", "cluster"): {"get", "list", "watch"},
    ("", "services", "namespace"): {"get", "list", "watch"},
    ("discovery.k8s.io", "endpointslices", "namespace"): {"get", "list", "watch"},
    ("memzone.io", "replicatedpools", "namespace"): {"get", "list", "watch"},
    ("memzone.io", "replicatedpools/status", "namespace"): {"patch"},
    # controlplane/ha: leader election and each replica's own Lease (listed, never watched).
    ("coordination.k8s.io", "leases", "namespace"): {"get", "list", "create", "update", "delete"},
}


def monitoring_rules():
    with open(os.path.join(ROOT, "deploy/monitoring/memzone-rules.yaml")) as f:
        return yaml.safe_load(f)


def monitoring_dashboard():
    with open(os.path.join(ROOT, "deploy/monitoring/memzone-dashboard.json")) as f:
        return json.load(f)


def helm(*args):
    if not os.access(HELM, os.X_OK):
        raise RuntimeError("helm is not installed: run scripts/install-k8s-tools.sh")
    return subprocess.run([HELM] + list(args), capture_output=True, text=True, timeout=300, env=HELM_ENV)


def render_chart(*values_files):
    """`helm template` as `helm install mz charts/memzone -n memzone -f FILE...` would render
    it (test hooks included, CRDs not: Helm installs crds/ apart)."""
    args = ["template", "mz", CHART, "--namespace", "memzone"]
    for f in values_files:
        args += ["-f", f]
    return helm(*args)


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"]["labels"]


def load_docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def arg_value(args, flag):
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


class ManifestChecks:
    """Checks shared by the chart's renderings and the plain manifests."""

    def check_objects(self, docs):
        for d in docs:
            self.assertIn("apiVersion", d)
            self.assertIn("kind", d)
            self.assertTrue(d.get("metadata", {}).get("name"), d)
        workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]
        for w in workloads:
            selector = w["spec"]["selector"]["matchLabels"]
            labels = w["spec"]["template"]["metadata"]["labels"]
            self.assertTrue(selector.items() <= labels.items(), "%s selector does not match its pods" % w["metadata"]["name"])
        for svc in by_kind(docs, "Service"):
            sel = svc["spec"].get("selector", {})
            self.assertTrue(any(sel.items() <= w["spec"]["template"]["metadata"]["labels"].items() for w in workloads),
                            "Service %s selects no pods" % svc["metadata"]["name"])
            for p in svc["spec"]["ports"]:
                if isinstance(p.get("targetPort"), str):
                    named = [cp["name"] for w in workloads if sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()
                             for c in w["spec"]["template"]["spec"]["containers"] for cp in c.get("ports", [])]
                    self.assertIn(p["targetPort"], named, "Service %s targets a port no pod names" % svc["metadata"]["name"])
        for pdb in by_kind(docs, "PodDisruptionBudget"):
            self.assertNotIn("minAvailable", pdb["spec"], "a minAvailable budget can block drains")
            self.assertGreaterEqual(pdb["spec"]["maxUnavailable"], 1)
            self.assertTrue(any(pdb["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
                                for w in workloads))
        self.check_memzone_pods(workloads)
        self.check_rbac(docs)
        self.check_controller_ha(docs, workloads)
        self.check_monitoring(docs)

    def check_controller_ha(self, docs, workloads):
        """Several controller replicas, spread across zones, one elected status writer, and
        proxies that list every replica through a headless Service."""
        controller = [w for w in workloads if w["spec"]["template"]["spec"]["containers"][0].get("command") == ["memzone-controller"]][0]
        self.assertGreaterEqual(controller["spec"]["replicas"], 2)
        pod = controller["spec"]["template"]["spec"]
        keys = [c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])]
        self.assertIn("topology.kubernetes.io/zone", keys)
        args = pod["containers"][0]["args"]
        self.assertIn("--leader-elect=true", args)
        env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        headless = [s for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"
                    and s["spec"]["selector"].items() <= pod_labels(controller).items()]
        self.assertEqual(len(headless), 1, "one headless Service for the controller replicas")
        proxies = [w for w in workloads if w["spec"]["template"]["spec"]["containers"][0].get("command") == ["memzone-proxy"]]
        for proxy in proxies:
            target = arg_value(proxy["spec"]["template"]["spec"]["containers"][0]["args"], "--controller")
            self.assertTrue(target.startswith(headless[0]["metadata"]["name"] + "."), target)
        pdbs = [p for p in by_kind(docs, "PodDisruptionBudget")
                if p["spec"]["selector"]["matchLabels"].items() <= pod_labels(controller).items()]
        self.assertEqual(len(pdbs), 1)

    def check_monitoring(self, docs):
        """A PrometheusRule holds memzone's rules file; a dashboard ConfigMap holds its dashboard."""
        for rule in by_kind(docs, "PrometheusRule"):
            self.assertEqual(rule["apiVersion"], "monitoring.coreos.com/v1")
            self.assertEqual(rule["spec"]["groups"], monitoring_rules()["groups"])
        for cm in by_kind(docs, "ConfigMap"):
            for name, text in cm.get("data", {}).items():
                if name.endswith(".json"):
                    self.assertEqual(json.loads(text), monitoring_dashboard(), "%s/%s" % (cm["metadata"]["name"], name))

    def check_memzone_pods(self, workloads):
        seen = set()
        for w in workloads:
            spec = w["spec"]["template"]["spec"]
            for c in spec["containers"]:
                command = c.get("command", [])
                if not command or command[0] not in ("memzone-proxy", "memzone-controller"):
                    continue
                seen.add(command[0])
                pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
                self.assertTrue(pod_sc.get("runAsNonRoot"))
                self.assertEqual(pod_sc.get("seccompProfile", {}).get("type"), "RuntimeDefault")
                self.assertTrue(sc.get("readOnlyRootFilesystem"))
                self.assertFalse(sc.get("allowPrivilegeEscalation", True))
                self.assertEqual(sc.get("capabilities", {}).get("drop"), ["ALL"])
                self.assertIn("resources", c)
                # Probes hit the port the binary serves /metrics, /healthz and /readyz on.
                metrics = arg_value(c["args"], "--metrics-listen")
                self.assertIsNotNone(metrics, "%s has no --metrics-listen" % command[0])
                ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                self.assertEqual(int(metrics.rsplit(":", 1)[1]), ports["metrics"])
                self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
                self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
                self.assertEqual(c["readinessProbe"]["httpGet"]["port"], "metrics")
                if command[0] == "memzone-proxy":
                    # Plaintext first; a tls: listener (client-facing TLS) beside it.
                    listen = arg_value(c["args"], "--listen").split(",")
                    self.assertEqual(int(listen[0].rsplit(":", 1)[1]), ports["memcache"])
                    for extra in listen[1:]:
                        self.assertTrue(extra.startswith("tls:"), extra)
                        self.assertEqual(int(extra.rsplit(":", 1)[1]), ports["memcache-tls"])
                    env = {e["name"]: e for e in c.get("env", [])}
                    self.assertEqual(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName")
                    state = arg_value(c["args"], "--state-dir")
                    self.assertIn(state, [m["mountPath"] for m in c.get("volumeMounts", [])],
                                  "--state-dir must be writable under a read-only root fs")
                else:
                    self.assertEqual(arg_value(c["args"], "--source"), "kubernetes")
                    self.assertEqual(int(arg_value(c["args"], "--grpc-listen").rsplit(":", 1)[1]), ports["grpc"])
        self.assertEqual(seen, {"memzone-proxy", "memzone-controller"})

    def check_rbac(self, docs):
        granted = {}
        for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
            scope = "cluster" if role["kind"] == "ClusterRole" else "namespace"
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        granted.setdefault((group, res, scope), set()).update(rule["verbs"])
        self.assertEqual(granted, CONTROLLER_CALLS, "RBAC must cover exactly what the controller calls")
        for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
            names = {r["metadata"]["name"] for r in by_kind(docs, binding["roleRef"]["kind"])}
            self.assertIn(binding["roleRef"]["name"], names)
            sas = {s["metadata"]["name"] for s in by_kind(docs, "ServiceAccount")}
            for subject in binding["subjects"]:
                self.assertIn(subject["name"], sas)


class ChartTest(unittest.TestCase, ManifestChecks):
    def test_helm_lint_strict_with_every_values_file(self):
        files = [None] + sorted(glob.glob(os.path.join(CHART, "ci/*.yaml")))
        for f in files:
            with self.subTest(values=os.path.basename(f) if f else "default"):
                r = helm("lint", "--strict", CHART, *(["-f", f] if f else []))
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("1 chart(s) linted, 0 chart(s) failed", r.stdout)

    def test_default_values_render_and_check(self):
        r = render_chart()
        self.assertEqual(r.returncode, 0, r.stderr)
        docs = load_docs(r.stdout)
        self.check_objects(docs)
        kinds = sorted(d["kind"] for d in docs)
        self.assertEqual(kinds.count("DaemonSet"), 1)
        svc = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-proxy")][0]
        self.assertEqual(svc["spec"]["trafficDistribution"], "PreferClose")
        test_pods = [d for d in by_kind(docs, "Pod") if d["metadata"]["annotations"].get("helm.sh/hook") == "test"]
        self.assertEqual(len(test_pods), 1)
        # (NOTES.txt is not a manifest: test_helm_install.py reads it from `helm install`.)
        # Monitoring objects are opt-in: they need the Prometheus Operator's CRDs and a Grafana sidecar.
        for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"):
            self.assertEqual(by_kind(docs, kind), [], kind)

    def test_every_ci_values_file_renders_and_checks(self):
        files = sorted(glob.glob(os.path.join(CHART, "ci/*.yaml")))
        self.assertGreaterEqual(len(files), 2)
        for f in files:
            with self.subTest(values=os.path.basename(f)):
                r = render_chart(f)
                self.assertEqual(r.returncode, 0, r.stderr)
                docs = load_docs(r.stdout)
                self.check_objects(docs)
                self.check_values_schema(f, accept=True)
                if "monitoring" in f:
                    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
                        mon = by_kind(docs, kind)[0]
                        self.assertEqual(mon["metadata"]["labels"]["release"], "prometheus")
                        self.assertEqual(mon["metadata"]["namespace"], "memzone")
                    dashboards = by_kind(docs, "ConfigMap")
                    self.assertEqual(len(dashboards), 1)
                    meta = dashboards[0]["metadata"]
                    self.assertEqual(meta["labels"]["grafana_dashboard"], "1")  # the sidecar's default label
                    self.assertEqual(meta["annotations"], {"grafana_folder": "memzone"})
                    self.assertEqual(meta["namespace"], "monitoring")
                    self.assertEqual(list(dashboards[0]["data"]), ["memzone.json"])
                    dep = by_kind(docs, "Deployment")
                    proxy = [d for d in dep if d["metadata"]["name"].endswith("-proxy")][0]
                    keys = [c["topologyKey"] for c in proxy["spec"]["template"]["spec"]["topologySpreadConstraints"]]
                    self.assertIn("topology.kubernetes.io/zone", keys)
                if "tls-everything" in f:
                    self.check_tls_everything(docs)
                if "example-memcached" in f:
                    self.assertEqual(len(by_kind(docs, "StatefulSet")), 3)
                    pool = by_kind(docs, "ReplicatedPool")[0]
                    validate_cr(self, pool)
                    self.assertEqual(pool["spec"]["hashBy"], "name")
                    # Stable names need a StatefulSet behind a headless Service: EndpointSlices
                    # then carry each pod's hostname.
                    svc = [s for s in by_kind(docs, "Service")
                           if s["metadata"]["name"] == pool["spec"]["service"]][0]
                    self.assertEqual(svc["spec"]["clusterIP"], "None")
                    for sts in by_kind(docs, "StatefulSet"):
                        self.assertEqual(sts["spec"]["serviceName"], svc["metadata"]["name"])

    def check_tls_everything(self, docs):
        """ci/tls-everything.yaml: each TLS use mounts its Secret where its flags point, and
        cert-manager issues those Secrets from the release's own CA."""
        workloads = by_kind(docs, "Deployment") + by_kind(docs, "DaemonSet")

        def container(command):
            pod = [w for w in workloads if w["spec"]["template"]["spec"]["containers"][0]["command"] == [command]][0]
            return pod["spec"]["template"]["spec"], pod["spec"]["template"]["spec"]["containers"][0]

        def mounted_secrets(pod, c):
            """mountPath -> secretName of every Secret volume the container mounts read-only."""
            secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
            out = {}
            for m in c.get("volumeMounts", []):
                if m["name"] in secrets:
                    self.assertTrue(m.get("readOnly"), m)
                    out[m["mountPath"]] = secrets[m["name"]]
            return out

        def secret_of(mounts, path):
            dirs = [d for d in mounts if path.startswith(d + "/")]
            self.assertEqual(len(dirs), 1, "%s is in no mounted Secret: %s" % (path, mounts))
            return mounts[dirs[0]]

        def one_secret(mounts, args, *flags):
            """The Secret every one of `flags`' files is mounted from (one for all)."""
            secrets = {secret_of(mounts, arg_value(args, f)) for f in flags}
            self.assertEqual(len(secrets), 1, "%s come from %s" % (flags, secrets))
            return secrets.pop()

        certificates = {c["spec"]["secretName"]: c for c in by_kind(docs, "Certificate")}
        issuers = {i["metadata"]["name"]: i for i in by_kind(docs, "Issuer")}
        # The release's CA: self-signed Issuer -> CA Certificate -> CA Issuer -> the rest.
        ca_issuers = [i for i in issuers.values() if "ca" in i["spec"]]
        self.assertEqual(len(ca_issuers), 1)
        ca_cert = certificates[ca_issuers[0]["spec"]["ca"]["secretName"]]
        self.assertTrue(ca_cert["spec"]["isCA"])
        self.assertIn("selfSigned", issuers[ca_cert["spec"]["issuerRef"]["name"]]["spec"])

        def issued(secret, usage):
            cert = certificates.get(secret)
            self.assertIsNotNone(cert, "no Certificate writes Secret %s" % secret)
            self.assertEqual(cert["spec"]["issuerRef"]["name"], ca_issuers[0]["metadata"]["name"])
            self.assertIn(usage, cert["spec"]["usages"])
            self.assertEqual(cert["spec"]["privateKey"]["rotationPolicy"], "Always")
            return cert

        # Controller: mutual TLS on the stream, the proxies' identity on the allow-list.
        pod, c = container("memzone-controller")
        mounts = mounted_secrets(pod, c)
        args = c["args"]
        secret = one_secret(mounts, args, "--tls-cert", "--tls-key", "--tls-client-ca")
        controller_cert = issued(secret, "server auth")
        controller_secret = secret
        self.assertEqual(arg_value(args, "--tls-reload-interval"), "5s")
        allowed = arg_value(args, "--tls-allowed-identities").split(",")

        # Proxy: its client certificate for the stream, client-facing TLS, backend CAs.
        pod, c = container("memzone-proxy")
        mounts = mounted_secrets(pod, c)
        args = c["args"]
        secret = one_secret(mounts, args, "--controller-tls-cert", "--controller-tls-key",
                            "--controller-ca")
        proxy_cert = issued(secret, "client auth")
        # The proxies, and the replicas (they dial each other with their own certificate).
        issued(controller_secret, "client auth")
        self.assertEqual(proxy_cert["spec"]["uris"] + controller_cert["spec"]["uris"], allowed)
        server_name = arg_value(args, "--controller-server-name")
        self.assertIn(server_name, controller_cert["spec"]["dnsNames"])
        self.assertTrue(arg_value(args, "--controller").startswith(server_name + ":"))
        secret = one_secret(mounts, args, "--tls-cert", "--tls-key", "--tls-client-ca")
        clients_cert = issued(secret, "server auth")
        self.assertEqual(arg_value(args, "--tls-verify"), "require")
        svc = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-proxy")][0]
        self.assertTrue(any(d.startswith(svc["metadata"]["name"] + ".") for d in clients_cert["spec"]["dnsNames"]))
        self.assertIn("memcache-tls", [p["name"] for p in svc["spec"]["ports"]])
        self.assertEqual(mounts["/etc/memzone/tls/backends/sessions"], "memcached-sessions-tls")

    def check_values_schema(self, values_file, accept):
        import jsonschema
        with open(os.path.join(CHART, "values.schema.json")) as f:
            schema = json.load(f)
        with open(os.path.join(CHART, "values.yaml")) as f:
            values = yaml.safe_load(f)
        if values_file:
            with open(values_file) as f:
                values = deep_merge(values, yaml.safe_load(f))
        jsonschema.validate(values, schema)

    def test_schema_rejects_bad_values(self):
        import jsonschema
        with open(os.path.join(CHART, "values.schema.json")) as f:
            schema = json.load(f)
        with open(os.path.join(CHART, "values.yaml")) as f:
            values = yaml.safe_load(f)
        jsonschema.validate(values, schema)
        for bad in [{"bogus": 1}, {"proxy": {"kind": "StatefulSet"}}, {"proxy": {"prot": 11211}},
                    {"controller": {"replicas": -1}}, {"proxy": {"port": 0}},
                    {"controller": {"leaderElection": {"leaseDuration": "1500ms"}}},
                    {"metrics": {"serviceMonitor": {"labels": {"release": 1}}}},
                    {"metrics": {"prometheusRule": {"enable": True}}},
                    {"metrics": {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}},
                    {"tls": {"proxyClients": {"verify": "always"}}},
                    {"tls": {"controllerStream": {"reloadInterval": "1m"}}},
                    {"tls": {"backends": [{"name": "Sessions", "secret": "x"}]}},
                    {"tls": {"certManager": {"issuerRef": {"kind": "Secret"}}}}]:
            with self.subTest(bad=bad), self.assertRaises(jsonschema.ValidationError):
                jsonschema.validate(deep_merge(yaml.safe_load(yaml.safe_dump(values)), bad), schema)
            # Helm itself refuses them, before rendering anything.
            path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "memzone-bad-schema-values.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(bad, f)
            with self.subTest(helm=bad):
                r = render_chart(path)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertIn("values don't meet the specifications of the schema", r.stderr)

    def test_template_guards(self):
        bad = os.path.join(os.environ.get("TMPDIR", "/tmp"), "memzone-bad-values.yaml")
        with open(bad, "w") as f:
            f.write("exampleMemcached:\n  enabled: true\n  zones: []\n")
        r = render_chart(bad)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exampleMemcached.zones", r.stderr)
        with open(bad, "w") as f:
            f.write("controller:\n  replicas: 2\n  leaderElection:\n    enabled: false\n")
        r = render_chart(bad)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("controller.leaderElection.enabled", r.stderr)
        # TLS without cert-manager names its Secrets, each one (Helm renders the templates in
        # no order a test should lean on: the other Secret is named, so one error remains).
        for given, missing in (("proxySecret", "controllerSecret"), ("controllerSecret", "proxySecret")):
            with open(bad, "w") as f:
                f.write("tls:\n  controllerStream:\n    enabled: true\n    %s: given\n" % given)
            r = render_chart(bad)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("tls.controllerStream.%s is required unless tls.certManager.enabled" % missing, r.stderr)

    def test_monitoring_labels_come_from_the_values(self):
        values = os.path.join(os.environ.get("TMPDIR", "/tmp"), "memzone-monitoring-values.yaml")
        with open(values, "w") as f:
            f.write("metrics:\n  prometheusRule:\n    enabled: true\n    labels: {prometheus: k8s, team: cache}\n"
                    "  grafanaDashboard:\n    enabled: true\n    labels: {dashboards: memzone}\n")
        r = render_chart(values)
        self.assertEqual(r.returncode, 0, r.stderr)
        docs = load_docs(r.stdout)
        self.check_objects(docs)
        rule = by_kind(docs, "PrometheusRule")[0]
        self.assertEqual({k: rule["metadata"]["labels"][k] for k in ("prometheus", "team")}, {"prometheus": "k8s", "team": "cache"})
        cm = by_kind(docs, "ConfigMap")[0]
        # The values' labels are deep-merged over the default {grafana_dashboard: "1"}, as Helm does.
        self.assertEqual(cm["metadata"]["labels"]["dashboards"], "memzone")
        self.assertEqual(cm["metadata"]["namespace"], "memzone")
        self.assertNotIn("annotations", cm["metadata"])
        self.assertEqual(by_kind(docs, "ServiceMonitor"), [])

    def test_monitoring_files_are_the_deploy_files(self):
        for name in ("memzone-rules.yaml", "memzone-dashboard.json"):
            with open(os.path.join(CHART, "files", name)) as a, open(os.path.join(ROOT, "deploy/monitoring", name)) as b:
                self.assertEqual(a.read(), b.read(), "charts/memzone/files/%s differs from deploy/monitoring/%s" % (name, name))

    def test_crds_are_the_deploy_crds(self):
        for f in glob.glob(os.path.join(CHART, "crds/*.yaml")):
            with open(f) as a, open(os.path.join(ROOT, "deploy/crds", os.path.basename(f))) as b:
                self.assertEqual(a.read(), b.read())


def deep_merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            deep_merge(a[k], v)
        else:
            a[k] = v
    return a


class DeployTest(unittest.TestCase, ManifestChecks):
    def test_kustomize_renders_and_checks(self):
        r = subprocess.run([KUBECTL, "kustomize", os.path.join(ROOT, "deploy")], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        docs = load_docs(r.stdout)
        self.check_objects(docs)
        crds = by_kind(docs, "CustomResourceDefinition")
        self.assertEqual(len(crds), 1)
        check_crd(self, crds[0])



def crd_schema():
    with open(os.path.join(ROOT, "deploy/crds/memzone.io_replicatedpools.yaml")) as f:
        crd = yaml.safe_load(f)
    return crd, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def check_crd(test, crd):
    version = crd["spec"]["versions"][0]
    test.assertEqual(version["name"], "v1alpha1")
    test.assertIn("status", version["subresources"])
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    test.assertEqual(columns, ["Ready", "Zones", "Version", "Age"])
    test.assertIn("rpool", crd["spec"]["names"]["shortNames"])
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    test.assertTrue(spec.get("x-kubernetes-validations"))
    repl = spec["properties"]["replication"]["properties"]
    test.assertEqual(repl["wait"]["enum"], ["local", "all", "quorum"])
    test.assertEqual(repl["wait"]["default"], "local")


def schema_errors(value, schema, path="$"):
    """The openAPIV3Schema subset the CRD uses: type, required, properties (unknown fields
    are errors here, since Kubernetes would silently prune them), enum, items, minLength,
    maxLength, minimum, maximum, x-kubernetes-int-or-string. CEL rules are checked by the
    API server (and enforced again by the controller's own validation)."""
    errors = []
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append("%s: must be an integer or a string" % path)
        return errors
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
    if t and not isinstance(value, types[t]) or (t == "integer" and isinstance(value, bool)):
        return ["%s: must be %s" % (path, t)]
    if "enum" in schema and value not in schema["enum"]:
        errors.append("%s: %r not in %s" % (path, value, schema["enum"]))
    if t == "string":
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            errors.append("%s: bad length" % path)
    if t == "object":
        props = schema.get("properties")
        for r in schema.get("required", []):
            if r not in value:
                errors.append("%s.%s: required" % (path, r))
        if props is not None:
            for k, v in value.items():
                if k not in props:
                    errors.append("%s.%s: unknown field" % (path, k))
                else:
                    errors += schema_errors(v, props[k], path + "." + k)
    if t == "array":
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), "%s[%d]" % (path, i))
    return errors


def validate_cr(test, cr):
    crd, schema = crd_schema()
    test.assertEqual(cr["apiVersion"], "memzone.io/v1alpha1")
    test.assertEqual(cr["kind"], "ReplicatedPool")
    test.assertEqual(schema_errors(cr, schema), [])


class CrdTest(unittest.TestCase):
    def test_crd_shape(self):
        crd, _ = crd_schema()
        check_crd(self, crd)

    def test_documented_examples_validate_against_the_crd(self):
        examples = []
        with open(os.path.join(ROOT, "README.md")) as f:
            for block in re.findall(r"```yaml\n(.*?)```", f.read(), re.S):
                examples += [d for d in yaml.safe_load_all(block) if isinstance(d, dict) and d.get("kind") == "ReplicatedPool"]
        for path in glob.glob(os.path.join(ROOT, "deploy/examples/*.yaml")):
            with open(path) as f:
                examples += [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "ReplicatedPool"]
        self.assertGreaterEqual(len(examples), 2)
        for cr in examples:
            with self.subTest(name=cr["metadata"]["name"]):
                validate_cr(self, cr)

    def test_examples_live_where_the_controller_watches(self):
        """The examples were in a namespace the deployed controller does not watch."""
        with open(os.path.join(ROOT, "deploy/controller.yaml")) as f:
            controller = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "Deployment"][0]
        watched = arg_value(controller["spec"]["template"]["spec"]["containers"][0]["args"], "--namespace")
        for path in glob.glob(os.path.join(ROOT, "deploy/examples/*.yaml")):
            with open(path) as f:
                for d in yaml.safe_load_all(f):
                    if d and d.get("kind") == "ReplicatedPool":
                        self.assertEqual(d["metadata"]["namespace"], watched, path)

    def test_bad_examples_are_caught(self):
        _, schema = crd_schema()
        bad = {"apiVersion": "memzone.io/v1alpha1", "kind": "ReplicatedPool", "metadata": {"name": "x"},
               "spec": {"service": "", "replication": {"wait": "sometimes"}, "prefixs": ["a:"]}}
        errors = schema_errors(bad, schema)
        self.assertTrue(any("spec.service" in e for e in errors))
        self.assertTrue(any("spec.replication.wait" in e for e in errors))
        self.assertTrue(any("spec.prefixs: unknown field" in e for e in errors))


class DockerfileTest(unittest.TestCase):
    def dockerfile(self):
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            return f.read()

    def test_every_copied_path_exists(self):
        text = self.dockerfile().replace("\\\n", " ")
        for line in text.splitlines():
            m = re.match(r"^COPY\s+(?!--from)(.*)$", line.strip())
            if not m:
                continue
            sources = m.group(1).split()[:-1]
            for src in sources:
                self.assertTrue(os.path.exists(os.path.join(ROOT, src)), "COPY %s: no such path" % src)
        for script in re.findall(r"\./(scripts/[\w.-]+)", text):
            self.assertTrue(os.path.exists(os.path.join(ROOT, script)), script)

    def test_runtime_stage_installs_every_library_the_binaries_load(self):
        binaries = [os.environ.get("MEMZONE_PROXY", os.path.join(ROOT, "build/proxy/memzone-proxy")),
                    os.environ.get("MEMZONE_CONTROLLER", os.path.join(ROOT, "build/controlplane/memzone-controller"))]
        for b in binaries:
            if not os.path.exists(b):
                self.skipTest("binaries not built")
        r = subprocess.run([os.path.join(ROOT, "scripts/runtime-packages.sh")] + binaries,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        needed = set(r.stdout.split())
        self.assertIn("libgrpc++1.51", needed)
        runtime = self.dockerfile().split("FROM debian:bookworm-slim", 1)[1]
        install = runtime.split("apt-get install", 1)[1].split("&&", 1)[0].replace("\\\n", " ")
        listed = set(w for w in install.split() if not w.startswith("-"))
        # Sanitizer builds load their runtimes; the image ships the release build.
        needed = {p for p in needed if not p.startswith(("libasan", "libubsan", "libclang"))}
        self.assertEqual(needed - listed, set(), "the runtime image misses these packages")

    def test_runtime_stage_runs_as_non_root(self):
        runtime = self.dockerfile().split("FROM debian:bookworm-slim", 1)[1]
        self.assertRegex(runtime, r"\nUSER 10001")
        self.assertIn("EXPOSE 11211 18000 9100 9101", runtime)


if __name__ == "__main__":
    unittest.main()
