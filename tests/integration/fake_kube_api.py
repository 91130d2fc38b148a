"""A test double of the Kubernetes API server that speaks its real wire format.

Real JSON objects (discovery.k8s.io/v1 EndpointSlice, v1 Service, v1 Node, memzone.io/v1alpha1
ReplicatedPool, coordination.k8s.io/v1 Lease), one global resourceVersion, paginated lists
(limit + continue), label selectors, watch streams as chunked HTTP with one JSON event per
line (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR), chunks cut at arbitrary bytes, 410 Gone both as
an HTTP status and as an ERROR event in a 200 stream, bearer-token auth that answers 401 until
the client presents the current token, merge-patch of the /status subresource, Leases with
create (409 AlreadyExists), update conditional on metadata.resourceVersion (409 Conflict),
delete and MicroTime validation, HTTP/1.1 keep-alive, dropped connections and restarts.
It records what a test may want to check: requests with their User-Agent, connections.
"""
import base64
import copy
import json
import random
import re
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = {
    # path regex -> kind key
    r"^/apis/memzone\.io/v1alpha1/namespaces/([^/]+)/replicatedpools$": "replicatedpools",
    r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$": "endpointslices",
    r"^/api/v1/namespaces/([^/]+)/services$": "services",
    r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases$": "leases",
    r"^/api/v1/nodes$": "nodes",
}
LIST_KINDS = {"replicatedpools": ("memzone.io/v1alpha1", "ReplicatedPoolList"),
              "endpointslices": ("discovery.k8s.io/v1", "EndpointSliceList"),
              "services": ("v1", "ServiceList"),
              "leases": ("coordination.k8s.io/v1", "LeaseList"),
              "nodes": ("v1", "NodeList")}
STATUS_PATH = r"^/apis/memzone\.io/v1alpha1/namespaces/([^/]+)/replicatedpools/([^/]+)/status$"
LEASE_PATH = r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases/([^/]+)$"
# metav1.MicroTime on the wire: RFC 3339 with exactly six fractional digits.
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    target = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


class Store:
    def __init__(self):
        self.lock = threading.Condition()
        self.rv = 100
        self.objects = {k: {} for k in LIST_KINDS}
        self.events = []            # (rv, kind, type, object, monotonic time)
        self.compacted_rv = 0       # watches from before this get 410
        self.pending_errors = {}    # kind -> number of watches to end with an ERROR 410 event
        self.status_patches = []

    def _key(self, obj):
        m = obj["metadata"]
        return (m.get("namespace", ""), m["name"])

    def put(self, kind, obj):
        with self.lock:
            self.rv += 1
            obj = copy.deepcopy(obj)
            m = obj["metadata"]
            old = self.objects[kind].get(self._key(obj))
            m["resourceVersion"] = str(self.rv)
            m.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            m.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else now_rfc3339())
            if kind == "replicatedpools":
                gen = old["metadata"].get("generation", 1) if old else 0
                if not old or old.get("spec") != obj.get("spec"):
                    gen += 1
                m["generation"] = gen
                if old and "status" in old and "status" not in obj:
                    obj["status"] = old["status"]
            self.objects[kind][self._key(obj)] = obj
            self.events.append((self.rv, kind, "MODIFIED" if old else "ADDED", obj, time.monotonic()))
            self.lock.notify_all()
            return obj

    def delete(self, kind, namespace, name):
        with self.lock:
            obj = self.objects[kind].pop((namespace, name))
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, kind, "DELETED", obj, time.monotonic()))
            self.lock.notify_all()
            return obj

    def compact(self):
        """Forget history: watches from an older resourceVersion get 410 Gone."""
        with self.lock:
            self.compacted_rv = self.rv
            self.events = []


def label_selector_matches(selector, labels):
    """The equality-based subset of label selectors: "k=v", "k==v", "k!=v", "k", "!k"."""
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    @property
    def api(self):
        return self.server.api

    def setup(self):
        super().setup()
        with self.server.api.counter_lock:
            self.server.api.connections += 1

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def status(self, code, reason, message, details=None):
        obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}
        if details:
            obj["details"] = details
        self.send_json(code, obj)

    def read_body(self):
        n = int(self.headers.get("Content-Length", "0"))
        try:
            return json.loads(self.rfile.read(n)) if n else None
        except ValueError:
            return None

    def authorized(self):
        self.api.requests.append((self.command, self.path))
        self.api.user_agents.append(self.headers.get("User-Agent", ""))
        if self.headers.get("Authorization") != "Bearer " + self.api.token:
            self.api.unauthorized += 1
            # The body may still be on the wire: read it so the connection stays usable.
            if self.command in ("POST", "PUT", "PATCH"):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.status(401, "Unauthorized", "Unauthorized")
            return False
        return True

    def do_GET(self):
        if not self.authorized():
            return
        path, _, query = self.path.partition("?")
        params = {k: urllib.parse.unquote(v) for k, v in (p.split("=", 1) for p in query.split("&") if "=" in p)}
        for pattern, kind in KINDS.items():
            m = re.match(pattern, path)
            if m:
                ns = m.group(1) if m.groups() else None
                if params.get("watch") in ("1", "true"):
                    return self.watch(kind, ns, params)
                return self.list(kind, ns, params)
        m = re.match(LEASE_PATH, path)
        if m:
            with self.api.store.lock:
                obj = self.api.store.objects["leases"].get((m.group(1), m.group(2)))
                obj = copy.deepcopy(obj)
            if obj is None:
                return self.not_found("leases.coordination.k8s.io", m.group(2))
            self.send_json(200, obj)
            hook = self.api.after_lease_get
            if hook and hook(m.group(2)):  # done: another writer raced the read-then-update
                self.api.after_lease_get = None
            return
        self.status(404, "NotFound", "no such path " + path)

    def not_found(self, resource, name):
        group, _, _ = resource.partition(".")
        self.status(404, "NotFound", '%s "%s" not found' % (resource, name),
                    {"name": name, "group": resource.partition(".")[2], "kind": group})

    def selected(self, obj, ns, params):
        if ns is not None and obj["metadata"].get("namespace") != ns:
            return False
        selector = params.get("labelSelector")
        return not selector or label_selector_matches(selector, obj["metadata"].get("labels", {}))

    def list(self, kind, ns, params):
        store = self.api.store
        with store.lock:
            items = sorted((copy.deepcopy(o) for o in store.objects[kind].values() if self.selected(o, ns, params)),
                           key=lambda o: o["metadata"]["name"])
            rv = str(store.rv)
        limit = int(params.get("limit", "0") or 0)
        offset = 0
        if "continue" in params:
            token = json.loads(base64.b64decode(params["continue"]))
            if token["rv"] < self.api.store.compacted_rv:
                return self.status(410, "Expired", "continue token expired")
            offset, rv = token["offset"], token["listrv"]
        page = items[offset:offset + limit] if limit else items[offset:]
        meta = {"resourceVersion": rv}
        if limit and offset + limit < len(items):
            meta["continue"] = base64.b64encode(json.dumps(
                {"offset": offset + limit, "rv": int(rv), "listrv": rv}).encode()).decode()
        api_version, list_kind = LIST_KINDS[kind]
        self.api.lists.append(kind)
        self.send_json(200, {"apiVersion": api_version, "kind": list_kind, "metadata": meta, "items": page})

    def write_chunk(self, data):
        """Sends `data` cut at random byte offsets into several HTTP chunks."""
        rng = self.api.rng
        i = 0
        while i < len(data):
            n = rng.randint(1, max(1, min(len(data) - i, 7 if self.api.tiny_chunks else 4096)))
            piece = data[i:i + n]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            i += n

    def watch(self, kind, ns, params):
        store = self.api.store
        since = int(params.get("resourceVersion", "0") or 0)
        if since and since < store.compacted_rv:
            return self.status(410, "Expired", "too old resource version: %d (%d)" % (since, store.compacted_rv))
        timeout = min(float(params.get("timeoutSeconds", "300")), 300)
        bookmarks = params.get("allowWatchBookmarks") == "true"
        self.api.watches.append(kind)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        last_bookmark = time.monotonic()
        conn_id = object()
        self.api.live.add(conn_id)
        try:
            while time.monotonic() < deadline and conn_id in self.api.live:
                delay = self.api.event_delay.get(kind, 0)
                with store.lock:
                    if store.pending_errors.get(kind, 0) > 0:
                        store.pending_errors[kind] -= 1
                        event = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                            "status": "Failure", "message": "too old resource version",
                                                            "reason": "Expired", "code": 410}}
                        self.write_chunk(json.dumps(event).encode() + b"\n")
                        break
                    if since < store.compacted_rv:
                        since = store.compacted_rv
                    now = time.monotonic()
                    out = []
                    for rv, k, t, o, at in store.events:
                        if k != kind or rv <= since or not self.selected(o, ns, params):
                            continue
                        if at + delay > now:
                            break  # in order: nothing after a delayed event goes first
                        out.append((rv, t, o))
                    if not out:
                        store.lock.wait(0.05 if delay else 0.1)
                        current = store.rv
                if out:
                    for rv, t, o in out:
                        self.write_chunk(json.dumps({"type": t, "object": o}).encode() + b"\n")
                        since = rv
                elif bookmarks and not delay and time.monotonic() - last_bookmark > 0.5:
                    api_version, list_kind = LIST_KINDS[kind]
                    bm = {"type": "BOOKMARK", "object": {"kind": list_kind[:-4], "apiVersion": api_version,
                                                         "metadata": {"resourceVersion": str(current)}}}
                    self.write_chunk(json.dumps(bm).encode() + b"\n")
                    last_bookmark = time.monotonic()
            if conn_id in self.api.live:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            else:
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.api.live.discard(conn_id)

    def do_PATCH(self):
        if not self.authorized():
            return
        m = re.match(STATUS_PATH, self.path)
        body = self.read_body()
        if not m or self.headers.get("Content-Type") != "application/merge-patch+json":
            return self.status(415 if m else 404, "UnsupportedMediaType" if m else "NotFound", "unsupported")
        store = self.api.store
        with store.lock:
            obj = store.objects["replicatedpools"].get((m.group(1), m.group(2)))
            if obj is None:
                return self.not_found("replicatedpools.memzone.io", m.group(2))
            patched = merge_patch(obj, {"status": body.get("status")})
            patched["metadata"] = obj["metadata"]
            store.status_patches.append((m.group(2), body["status"]))
            # A status write that changes nothing is no new version (as on a real API server).
            if patched == obj:
                return self.send_json(200, copy.deepcopy(obj))
            self.send_json(200, store.put("replicatedpools", patched))

    # Leases (coordination.k8s.io/v1), as client-go's LeaseLock uses them.

    def lease_errors(self, body, ns, name=None):
        if not isinstance(body, dict) or body.get("apiVersion") != "coordination.k8s.io/v1" or body.get("kind") != "Lease":
            return "body must be a coordination.k8s.io/v1 Lease"
        meta = body.get("metadata", {})
        if not meta.get("name") or (name is not None and meta["name"] != name):
            return "metadata.name: must match the path"
        if meta.get("namespace", ns) != ns:
            return "metadata.namespace: does not match the namespace of the request"
        spec = body.get("spec", {})
        for key in spec:
            if key not in ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime",
                           "leaseTransitions", "strategy", "preferredHolder"):
                return "spec.%s: unknown field" % key
        d = spec.get("leaseDurationSeconds")
        if d is not None and (not isinstance(d, int) or isinstance(d, bool) or d <= 0):
            return "spec.leaseDurationSeconds: must be greater than 0"
        t = spec.get("leaseTransitions")
        if t is not None and (not isinstance(t, int) or t < 0):
            return "spec.leaseTransitions: must be greater than or equal to 0"
        for key in ("acquireTime", "renewTime"):
            if key in spec and not (isinstance(spec[key], str) and MICROTIME.match(spec[key])):
                return "spec.%s: not a MicroTime: %r" % (key, spec[key])
        return None

    def do_POST(self):
        if not self.authorized():
            return
        m = re.match(KINDS_LEASES, self.path.partition("?")[0])
        body = self.read_body()
        if not m:
            return self.status(405, "MethodNotAllowed", "POST is only supported on leases here")
        ns = m.group(1)
        error = self.lease_errors(body, ns)
        if error:
            return self.status(422, "Invalid", error)
        store = self.api.store
        with store.lock:
            name = body["metadata"]["name"]
            if (ns, name) in store.objects["leases"]:
                return self.status(409, "AlreadyExists", 'leases.coordination.k8s.io "%s" already exists' % name,
                                   {"name": name, "group": "coordination.k8s.io", "kind": "leases"})
            body["metadata"]["namespace"] = ns
            body["metadata"].pop("resourceVersion", None)
            self.api.lease_writes.append(("create", name, copy.deepcopy(body.get("spec", {}))))
            self.send_json(201, store.put("leases", body))

    def do_PUT(self):
        if not self.authorized():
            return
        m = re.match(LEASE_PATH, self.path.partition("?")[0])
        body = self.read_body()
        if not m:
            return self.status(405, "MethodNotAllowed", "PUT is only supported on leases here")
        ns, name = m.group(1), m.group(2)
        error = self.lease_errors(body, ns, name)
        if error:
            return self.status(422, "Invalid", error)
        store = self.api.store
        with store.lock:
            current = store.objects["leases"].get((ns, name))
            if current is None:
                return self.not_found("leases.coordination.k8s.io", name)
            rv = body["metadata"].get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                self.api.lease_conflicts += 1
                return self.status(409, "Conflict",
                                   'Operation cannot be fulfilled on leases.coordination.k8s.io "%s": the object has '
                                   'been modified; please apply your changes to the latest version and try again' % name,
                                   {"name": name, "group": "coordination.k8s.io", "kind": "leases"})
            body["metadata"]["namespace"] = ns
            for key in ("uid", "creationTimestamp"):
                body["metadata"][key] = current["metadata"][key]
            self.api.lease_writes.append(("update", name, copy.deepcopy(body.get("spec", {}))))
            self.send_json(200, store.put("leases", body))

    def do_DELETE(self):
        if not self.authorized():
            return
        m = re.match(LEASE_PATH, self.path.partition("?")[0])
        if not m:
            return self.status(405, "MethodNotAllowed", "DELETE is only supported on leases here")
        store = self.api.store
        with store.lock:
            if (m.group(1), m.group(2)) not in store.objects["leases"]:
                return self.not_found("leases.coordination.k8s.io", m.group(2))
            self.api.lease_writes.append(("delete", m.group(2), None))
            store.delete("leases", m.group(1), m.group(2))
        self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": m.group(2), "group": "coordination.k8s.io", "kind": "leases"}})


KINDS_LEASES = r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases$"


class FakeKubeApi:
    def __init__(self, token="token-1", seed=3):
        self.store = Store()
        self.token = token
        self.rng = random.Random(seed)
        self.tiny_chunks = True
        self.requests, self.lists, self.watches = [], [], []
        self.user_agents = []
        self.unauthorized = 0
        self.connections = 0          # TCP connections accepted (keep-alive keeps this low)
        self.counter_lock = threading.Lock()
        self.lease_writes = []        # (create|update|delete, name, spec)
        self.lease_conflicts = 0
        self.event_delay = {}         # kind -> seconds a watch holds back each event
        self.after_lease_get = None   # hook(name) run after a Lease GET is answered, until it returns True
        self.live = set()
        self.port = None
        self.httpd = None

    def start(self, port=0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port or self.port or 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.api = self
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.drop_watches()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def restart(self, down_seconds=0.5):
        self.stop()
        time.sleep(down_seconds)
        self.start(self.port)

    def drop_watches(self):
        self.live.clear()

    def error_410_in_stream(self, kind):
        with self.store.lock:
            self.store.pending_errors[kind] = self.store.pending_errors.get(kind, 0) + 1
            self.store.lock.notify_all()

    def lease(self, name, namespace="cache"):
        with self.store.lock:
            return copy.deepcopy(self.store.objects["leases"].get((namespace, name)))

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


# Fixtures shaped like the real objects.

def node(name, zone):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "topology.kubernetes.io/zone": zone,
                                                  "topology.kubernetes.io/region": "local"}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def endpoint(ip, zone, ready=True, terminating=False, node_name=None, pod=None, hostname=None):
    ep = {"addresses": [ip], "conditions": {"ready": ready, "serving": ready or terminating,
                                           "terminating": terminating},
          "targetRef": {"kind": "Pod", "namespace": "cache", "name": pod or "memcached-" + ip.replace(".", "-"),
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, ip))}}
    if zone is not None:
        ep["zone"] = zone
    if hostname:  # StatefulSet pods behind a headless Service: the pod's stable hostname
        ep["hostname"] = hostname
    if node_name:
        ep["nodeName"] = node_name
    return ep


def endpoint_slice(name, service, endpoints, port, namespace="cache", port_name="memcache", address_type="IPv4"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "generateName": service + "-",
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                              "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, service)),
                                              "controller": True, "blockOwnerDeletion": True}]},
            "addressType": address_type,
            "endpoints": endpoints,
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}


def replicated_pool(name, service, port="memcache", namespace="cache", **spec):
    body = {"service": service, "port": port}
    body.update(spec)
    return {"apiVersion": "memzone.io/v1alpha1", "kind": "ReplicatedPool",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def service(name, ports=(("memcache", 11211, 11211),), namespace="cache", ip_families=("IPv4",)):
    """A ClusterIP Service; `ports` are (name, port, targetPort)."""
    spec_ports = []
    for port_name, port, target in ports:
        p = {"port": port, "targetPort": target, "protocol": "TCP"}
        if port_name:
            p["name"] = port_name
        spec_ports.append(p)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ipFamilies": list(ip_families),
                     "ipFamilyPolicy": "PreferDualStack" if len(ip_families) > 1 else "SingleStack",
                     "selector": {"app": name}, "ports": spec_ports}}
