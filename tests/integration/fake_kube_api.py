"""A test double of the Kubernetes API server that speaks its real wire format.

Real JSON objects (discovery.k8s.io/v1 EndpointSlice, v1 Node, memzone.io/v1alpha1
ReplicatedPool), one global resourceVersion, paginated lists (limit + continue), watch
streams as chunked HTTP with one JSON event per line (ADDED/MODIFIED/DELETED/BOOKMARK/
ERROR), chunks cut at arbitrary bytes, 410 Gone both as an HTTP status and as an ERROR event
in a 200 stream, bearer-token auth that answers 401 until the client presents the current
token, merge-patch of the /status subresource, dropped connections and restarts.
"""
import base64
import copy
import json
import random
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = {
    # path regex -> (kind key, namespaced)
    r"^/apis/memzone\.io/v1alpha1/namespaces/([^/]+)/replicatedpools$": "replicatedpools",
    r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$": "endpointslices",
    r"^/api/v1/nodes$": "nodes",
}
LIST_KINDS = {"replicatedpools": ("memzone.io/v1alpha1", "ReplicatedPoolList"),
              "endpointslices": ("discovery.k8s.io/v1", "EndpointSliceList"),
              "nodes": ("v1", "NodeList")}
STATUS_PATH = r"^/apis/memzone\.io/v1alpha1/namespaces/([^/]+)/replicatedpools/([^/]+)/status$"


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
        self.events = []            # (rv, kind, type, object)
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
            self.events.append((self.rv, kind, "MODIFIED" if old else "ADDED", obj))
            self.lock.notify_all()
            return obj

    def delete(self, kind, namespace, name):
        with self.lock:
            obj = self.objects[kind].pop((namespace, name))
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, kind, "DELETED", obj))
            self.lock.notify_all()

    def compact(self):
        """Forget history: watches from an older resourceVersion get 410 Gone."""
        with self.lock:
            self.compacted_rv = self.rv
            self.events = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    @property
    def api(self):
        return self.server.api

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def status(self, code, reason, message):
        self.send_json(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code})

    def authorized(self):
        self.api.requests.append((self.command, self.path))
        if self.headers.get("Authorization") != "Bearer " + self.api.token:
            self.api.unauthorized += 1
            self.status(401, "Unauthorized", "Unauthorized")
            return False
        return True

    def do_GET(self):
        if not self.authorized():
            return
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        for pattern, kind in KINDS.items():
            m = re.match(pattern, path)
            if m:
                ns = m.group(1) if m.groups() else None
                if params.get("watch") in ("1", "true"):
                    return self.watch(kind, ns, params)
                return self.list(kind, ns, params)
        self.status(404, "NotFound", "no such path " + path)

    def list(self, kind, ns, params):
        store = self.api.store
        with store.lock:
            items = sorted((o for (ons, _), o in store.objects[kind].items() if ns is None or ons == ns),
                           key=lambda o: o["metadata"]["name"])
            rv = str(store.rv)
        limit = int(params.get("limit", "0") or 0)
        offset = 0
        if "continue" in params:
            token = json.loads(base64.b64decode(params["continue"].replace("%3D", "=")))
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
                    out = [(rv, t, o) for rv, k, t, o in store.events if k == kind and rv > since and
                           (ns is None or o["metadata"].get("namespace") == ns)]
                    if not out:
                        store.lock.wait(0.1)
                        current = store.rv
                if out:
                    for rv, t, o in out:
                        self.write_chunk(json.dumps({"type": t, "object": o}).encode() + b"\n")
                        since = rv
                elif bookmarks and time.monotonic() - last_bookmark > 0.5:
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
            pass
        finally:
            self.api.live.discard(conn_id)

    def do_PATCH(self):
        if not self.authorized():
            return
        m = re.match(STATUS_PATH, self.path)
        if not m or self.headers.get("Content-Type") != "application/merge-patch+json":
            return self.status(415 if m else 404, "UnsupportedMediaType" if m else "NotFound", "unsupported")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        store = self.api.store
        with store.lock:
            obj = store.objects["replicatedpools"].get((m.group(1), m.group(2)))
            if obj is None:
                return self.status(404, "NotFound", "replicatedpools %s not found" % m.group(2))
            patched = merge_patch(obj, {"status": body.get("status")})
            patched["metadata"] = obj["metadata"]
            store.status_patches.append((m.group(2), body["status"]))
        self.send_json(200, store.put("replicatedpools", patched))


class FakeKubeApi:
    def __init__(self, token="token-1", seed=3):
        self.store = Store()
        self.token = token
        self.rng = random.Random(seed)
        self.tiny_chunks = True
        self.requests, self.lists, self.watches = [], [], []
        self.unauthorized = 0
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


def endpoint(ip, zone, ready=True, terminating=False, node_name=None, pod=None):
    ep = {"addresses": [ip], "conditions": {"ready": ready, "serving": ready or terminating,
                                           "terminating": terminating},
          "targetRef": {"kind": "Pod", "namespace": "cache", "name": pod or "memcached-" + ip.replace(".", "-"),
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, ip))}}
    if zone is not None:
        ep["zone"] = zone
    if node_name:
        ep["nodeName"] = node_name
    return ep


def endpoint_slice(name, service, endpoints, port, namespace="cache", port_name="memcache"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "generateName": service + "-",
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                              "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, service)),
                                              "controller": True, "blockOwnerDeletion": True}]},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}


def replicated_pool(name, service, port="memcache", namespace="cache", **spec):
    body = {"service": service, "port": port}
    body.update(spec)
    return {"apiVersion": "memzone.io/v1alpha1", "kind": "ReplicatedPool",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}
