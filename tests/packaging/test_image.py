"""The Dockerfile's image, built for real (scripts/image.sh: Docker, or podman with chroot
isolation from local debootstrap bases) and run: its filesystem is exported and the binaries
run from it with `chroot --userspec` as the image's user (the OCI runtime cannot start
containers in every VM), against a real memcached on 127.0.0.1.

Needs root (debootstrap, chroot) and podman or a Docker engine; skipped otherwise, saying why
(and with MEMZONE_SKIP_IMAGE=1, for a quicker local loop).
The first build takes minutes (debootstrap, packages, compile); later ones reuse the cache in
MEMZONE_IMAGE_CACHE (default /var/cache/memzone-image) and redo only what changed.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration"))
from harness import Client, Memcached, free_port, stop_process, wait_for_port  # noqa: E402

IMAGE_SH = os.path.join(ROOT, "scripts/image.sh")
USER = "10001:10001"
# Size budget: the README reports the size; this catches a runtime stage that grew a toolchain.
MAX_IMAGE_MB = 160


def image_sh(*args, timeout=3600):
    return subprocess.run([IMAGE_SH] + list(args), capture_output=True, text=True, timeout=timeout)


def skip_reason():
    if os.environ.get("MEMZONE_SKIP_IMAGE") == "1":
        return "image test skipped: MEMZONE_SKIP_IMAGE=1"
    if os.geteuid() != 0:
        return "image test skipped: needs root (debootstrap, chroot)"
    engine = os.environ.get("MEMZONE_IMAGE_ENGINE")
    docker = shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    if engine != "podman" and docker:
        return None
    if not shutil.which("podman"):
        return "image test skipped: no Docker engine and no podman (scripts/install-deps.sh installs podman)"
    if not shutil.which("debootstrap"):
        return "image test skipped: debootstrap is missing (scripts/install-deps.sh installs it)"
    return None


class ImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.rootfs = tempfile.mkdtemp(prefix="memzone-image-", dir=os.environ.get("TMPDIR", "/var/tmp"))
        os.chmod(cls.rootfs, 0o755)  # it is the image's /: its user must be able to enter it
        cls.addClassCleanup(shutil.rmtree, cls.rootfs, True)
        started = time.monotonic()
        r = image_sh("rootfs", cls.rootfs)
        elapsed = time.monotonic() - started
        if r.returncode != 0:
            raise AssertionError("scripts/image.sh failed:\n" + (r.stdout + r.stderr)[-6000:])
        r = image_sh("inspect", timeout=120)
        assert r.returncode == 0, r.stderr
        cls.config = json.loads(r.stdout)
        cls.size_mb = int(image_sh("size", timeout=120).stdout.strip()) / 1e6
        print("image: built and exported in %.0fs, %.0f MB" % (elapsed, cls.size_mb), file=sys.stderr)

    def path(self, *parts):
        return os.path.join(self.rootfs, *parts)

    def chroot(self, *argv, **kw):
        """Runs argv from the image's filesystem as the image's user."""
        return ["chroot", "--userspec=" + self.config["User"], self.rootfs] + list(argv)

    def test_runs_as_its_non_root_user(self):
        self.assertEqual(self.config["User"], USER)
        with open(self.path("etc/passwd")) as f:
            users = {line.split(":")[0]: line.split(":") for line in f}
        self.assertEqual(users["memzone"][2:4], ["10001", "10001"])
        self.assertEqual(users["memzone"][6].strip(), "/usr/sbin/nologin")
        state = os.stat(self.path("var/lib/memzone"))
        self.assertEqual((state.st_uid, state.st_gid), (10001, 10001))
        for binary in ("memzone-proxy", "memzone-controller"):
            mode = os.stat(self.path("usr/local/bin", binary)).st_mode
            self.assertFalse(mode & 0o6000, "%s must not be setuid/setgid" % binary)

    def test_carries_no_compiler_sources_or_package_caches(self):
        for tool in ("gcc", "g++", "cc", "c++", "cpp", "clang", "ld", "as", "make", "cmake", "protoc"):
            for d in ("usr/bin", "usr/local/bin", "bin"):
                self.assertFalse(os.path.lexists(self.path(d, tool)), "/%s/%s in the image" % (d, tool))
        self.assertFalse(os.path.exists(self.path("usr/lib/gcc")), "a compiler's libraries in the image")
        self.assertFalse(os.path.exists(self.path("src")), "the build stage's sources in the image")
        self.assertEqual([f for f in os.listdir(self.path("usr/include"))] if os.path.exists(self.path("usr/include"))
                         else [], [], "headers in the image")
        lists = [f for f in os.listdir(self.path("var/lib/apt/lists")) if f not in ("lock", "partial", "auxfiles")]
        self.assertEqual(lists, [], "apt package lists in the image")
        cache = [os.path.join(d, f) for d, _, files in os.walk(self.path("var/cache/apt")) for f in files
                 if f != "lock"]
        self.assertEqual(cache, [], "apt caches in the image")
        docs = [os.path.join(d, f) for d, _, files in os.walk(self.path("usr/share/doc")) for f in files
                if f != "copyright"]
        self.assertEqual(docs, [], "documentation beyond licences in the image")
        self.assertLess(self.size_mb, MAX_IMAGE_MB)

    def test_both_binaries_run_from_the_image_and_serve_a_set_and_get(self):
        memcached = Memcached().start()
        self.addCleanup(memcached.kill)
        tmp = tempfile.mkdtemp(dir=self.path("tmp"))
        os.chown(tmp, 10001, 10001)
        inside = "/tmp/" + os.path.basename(tmp)
        with open(os.path.join(tmp, "topology.yaml"), "w") as f:
            f.write("pools:\n  - name: main\n    zones:\n      zone-a: [\"%s\"]\n" % memcached.address)
        grpc, controller_metrics, proxy_port, proxy_metrics = free_port(), free_port(), free_port(), free_port()

        log = open(os.path.join(tmp, "controller.log"), "w")
        controller = subprocess.Popen(self.chroot(
            "/usr/local/bin/memzone-controller", "--source", "file", "--config", inside + "/topology.yaml",
            "--grpc-listen", "127.0.0.1:%d" % grpc, "--metrics-listen", "127.0.0.1:%d" % controller_metrics),
            stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(stop_process, controller, log, "memzone-controller (image)")
        wait_for_port(grpc, timeout=20, proc=controller)

        plog = open(os.path.join(tmp, "proxy.log"), "w")
        proxy = subprocess.Popen(self.chroot(
            "/usr/local/bin/memzone-proxy", "--listen", "127.0.0.1:%d" % proxy_port, "--zone", "zone-a",
            "--controller", "127.0.0.1:%d" % grpc, "--state-dir", inside + "/state",
            "--metrics-listen", "127.0.0.1:%d" % proxy_metrics, "--threads", "2"),
            stdout=plog, stderr=subprocess.STDOUT)
        self.addCleanup(stop_process, proxy, plog, "memzone-proxy (image)")
        wait_for_port(proxy_port, timeout=20, proc=proxy)

        for pid in (controller.pid, proxy.pid):
            with open("/proc/%d/status" % pid) as f:
                uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
            self.assertEqual(set(uids), {"10001"}, "runs as the image's user")
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % proxy_metrics, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                with open(os.path.join(tmp, "proxy.log")) as f:
                    self.fail("the image's proxy never got its topology:\n" + f.read()[-3000:])
            time.sleep(0.05)
        with Client(proxy_port) as c:
            self.assertEqual(c.request(b"set image:key 0 0 5\r\nhello\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"get image:key\r\n"), b"VALUE image:key 0 5\r\nhello\r\nEND\r\n")
        with memcached.client() as d:
            self.assertEqual(d.request(b"get image:key\r\n"), b"VALUE image:key 0 5\r\nhello\r\nEND\r\n")
        # The state dir is written as the image's user.
        self.assertTrue(os.path.exists(os.path.join(tmp, "state", "topology.pb")))
        self.assertEqual(stop_process(proxy, plog, "memzone-proxy (image)"), 0)
        self.assertEqual(stop_process(controller, log, "memzone-controller (image)"), 0)


if __name__ == "__main__":
    unittest.main()
