"""Certificates for TLS tests, made with the `openssl` CLI in a temporary directory.

CertAuthority issues leaf certificates with the SANs a test asks for; SecretVolume lays files
out the way a Kubernetes Secret volume does (FILE -> ..data/FILE, ..data -> ..<timestamp>/) and
rotates them the way the kubelet does: a new timestamped directory, then an atomic rename of
the ..data symlink.
"""
import os
import shutil
import subprocess
import tempfile
import time

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _run(*args, **kwargs):
    subprocess.run([OPENSSL] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=30, **kwargs)


class CertAuthority:
    _serial = int(time.time() * 1000) % (1 << 40)

    def __init__(self, name, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="memzone-tls-")
        self.name = name
        self.cert = os.path.join(self.dir, name + "-ca.crt")
        self.key = os.path.join(self.dir, name + "-ca.key")
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", self.key, "-out", self.cert, "-days", "30", "-subj", "/CN=" + name + " CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name, dns=(), uri=(), ip=(), days=30, subject=None):
        """A leaf certificate for server and client use; returns (cert path, key path, serial
        as upper-case hex, the way `openssl x509 -serial` prints it). `subject` defaults to
        /CN=name (a Kubernetes client certificate puts its groups in O=)."""
        CertAuthority._serial += 1
        serial = CertAuthority._serial
        base = os.path.join(self.dir, "%s-%d" % (name, serial))
        sans = ["DNS:" + d for d in dns] + ["URI:" + u for u in uri] + ["IP:" + i for i in ip]
        with open(base + ".ext", "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
            if sans:
                f.write("subjectAltName=" + ",".join(sans) + "\n")
        _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", base + ".key", "-out", base + ".csr", "-subj", subject or "/CN=" + name)
        _run("x509", "-req", "-in", base + ".csr", "-CA", self.cert, "-CAkey", self.key,
             "-set_serial", str(serial), "-days", str(days), "-extfile", base + ".ext",
             "-out", base + ".crt")
        return base + ".crt", base + ".key", "%X" % serial


def read(path):
    with open(path) as f:
        return f.read()


class SecretVolume:
    """A directory laid out like a mounted Kubernetes Secret."""

    def __init__(self, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="memzone-secret-")
        self.generation = 0

    def path(self, name):
        return os.path.join(self.dir, name)

    def publish(self, files):
        """files: {name: text}. Same steps as the kubelet's atomic writer."""
        self.generation += 1
        stamp = "..%d_%d" % (int(time.time()), self.generation)
        os.mkdir(os.path.join(self.dir, stamp))
        for name, text in files.items():
            with open(os.path.join(self.dir, stamp, name), "w") as f:
                f.write(text)
        data = os.path.join(self.dir, "..data")
        old = os.readlink(data) if os.path.islink(data) else None
        tmp = os.path.join(self.dir, "..data_tmp")
        os.symlink(stamp, tmp)
        os.rename(tmp, data)  # the atomic swap
        for name in files:
            link = os.path.join(self.dir, name)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", name), link)
        if old:
            shutil.rmtree(os.path.join(self.dir, old))


def served_certificate_serial(port, cert, key, ca, server_name, timeout=10):
    """The serial of the certificate a TLS server on 127.0.0.1:port presents to a new
    handshake (upper-case hex), via `openssl s_client`."""
    out = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-cert", cert,
                          "-key", key, "-CAfile", ca, "-servername", server_name, "-alpn", "h2"],
                         input=b"", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    text = out.stdout.decode(errors="replace")
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----")
    if start < 0 or end < 0:
        raise AssertionError("s_client got no certificate:\n%s\n%s" % (text, out.stderr.decode()))
    pem = text[start:end + len("-----END CERTIFICATE-----")] + "\n"
    serial = subprocess.run([OPENSSL, "x509", "-noout", "-serial"], input=pem.encode(),
                            stdout=subprocess.PIPE, check=True, timeout=timeout).stdout.decode()
    return serial.strip().split("=", 1)[1].lstrip("0") or "0"
