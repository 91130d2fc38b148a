"""Certificates for TLS tests, made with the `openssl` CLI in a temporary directory: a CA,
and leaf certificates it signs (server: SAN IP 127.0.0.1 and DNS localhost; client)."""
import os
import subprocess
import tempfile


def _run(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class CertAuthority:
    def __init__(self, name, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="memzone-tls-")
        self.name = name
        self.key = os.path.join(self.dir, name + "-ca.key")
        self.cert = os.path.join(self.dir, name + "-ca.pem")
        self.serial = 1000
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "30",
             "-subj", "/CN=%s test CA" % name, cwd=self.dir)

    def issue(self, name, server=True, days=30):
        """Signs a new key for `name`; returns (cert_path, key_path)."""
        self.serial += 1
        key = os.path.join(self.dir, "%s-%d.key" % (name, self.serial))
        csr = os.path.join(self.dir, "%s-%d.csr" % (name, self.serial))
        cert = os.path.join(self.dir, "%s-%d.pem" % (name, self.serial))
        ext = os.path.join(self.dir, "%s-%d.ext" % (name, self.serial))
        with open(ext, "w") as f:
            if server:
                f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:%s\n" % name)
                f.write("extendedKeyUsage=serverAuth\n")
            else:
                f.write("extendedKeyUsage=clientAuth\n")
        _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=%s" % name, cwd=self.dir)
        _run("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
             "-set_serial", str(self.serial), "-days", str(days), "-out", cert,
             "-extfile", ext, cwd=self.dir)
        return cert, key


def serial_of(der_cert):
    """Serial number of a DER certificate (ssl.SSLSocket.getpeercert(binary_form=True))."""
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
                         input=der_cert, capture_output=True, check=True, timeout=30)
    return int(out.stdout.decode().strip().split("=", 1)[1], 16)
