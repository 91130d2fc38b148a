"""The chaos test's clients: each owns some keys (it alone writes them) and reads everyone's.

Key classes, mixed in one run:
- value keys "c<i>:k<j>", written by text and meta commands (the meta ones name the key in
  base64 with `b`, which must reach the same item), with no TTL, short TTLs (1-3 s), deletes,
  and TTL changes: touch, gat, gats, mg T;
- binary keys, whose raw bytes hold what a text key cannot (space, CR, LF, NUL, 0xff), only
  reachable with meta's `b`;
- counters "c<i>:n<j>": incr, decr, ma (modes I, +, D, -; N to create on a miss), sets.
A value is "<version>/<key id>", so a read that returns another key's item is caught too.
The oracle (chaos_oracle.py) decides what is stale.
"""
import base64
import random
import re
import socket
import threading
import time

ZONES = ("zone-a", "zone-b", "zone-c")
CLIENTS = 6
VALUE_KEYS = 12  # per client
BINARY_KEYS = 4
COUNTERS = 4

TTL_CHANGES = (-1, 1, 2, 3, 0, 30)  # -1 expires now, 0 is no expiry


def binary_key(client, j):
    # Bytes a text key cannot hold: space, CR, LF, NUL, DEL, and bytes above 0x7f.
    return b"c%d:b%d \r\n\x00\x7f\xff\xc3" % (client, j)


def b64(raw):
    return base64.b64encode(raw)


class Key:
    """One key: `ident` names it in values and reports; `text` is its text form (None for a
    binary key); `b64` its base64 form, for meta lines with the `b` flag."""

    def __init__(self, ident, raw, text):
        self.ident, self.raw, self.text = ident, raw, text
        self.b64 = b64(raw)

    def __repr__(self):
        return self.ident


def keys_of(client):
    values = [Key("c%d:k%d" % (client, j), b"c%d:k%d" % (client, j), b"c%d:k%d" % (client, j))
              for j in range(VALUE_KEYS)]
    binaries = [Key("c%d:b%d" % (client, j), binary_key(client, j), None)
                for j in range(BINARY_KEYS)]
    counters = [Key("c%d:n%d" % (client, j), b"c%d:n%d" % (client, j), b"c%d:n%d" % (client, j))
                for j in range(COUNTERS)]
    return values, binaries, counters


class BadReply(Exception):
    pass


class Connection:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def close(self):
        self.sock.close()

    def line(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("closed")
        return line

    def data(self, n):
        data = self.file.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("closed")
        return data[:-2]

    def request(self, data):
        """(first line, value or None): a value for VALUE (the first one) and VA replies."""
        self.sock.sendall(data)
        line = self.line()
        if line.startswith(b"VALUE "):
            value = self.data(int(line.split()[3]))
            while True:
                end = self.line()
                if end == b"END\r\n":
                    return line, value
                if not end.startswith(b"VALUE "):
                    raise BadReply(end)
                self.data(int(end.split()[3]))
        if line.startswith(b"VA "):
            return line, self.data(int(line.split()[1]))
        return line, None


class Client(threading.Thread):
    def __init__(self, index, proxies, oracle, deadline, seed, fault):
        super().__init__(daemon=True)
        self.index, self.proxies, self.oracle = index, proxies, oracle
        self.deadline, self.rng, self.fault = deadline, random.Random(seed * 100 + index), fault
        self.values, self.binaries, self.counters = keys_of(index)
        everyone = [keys_of(c) for c in range(CLIENTS)]
        self.all_values = [k for v, _, _ in everyone for k in v]
        self.all_binaries = [k for _, b, _ in everyone for k in b]
        self.all_counters = [k for _, _, n in everyone for k in n]
        self.counter_missing = {k.ident: True for k in self.counters}
        self.conns = {}
        self.pending = None  # (key, sent at, operation) of a write without its reply yet
        self.counts = {}  # (fault, op, outcome) -> n

    def count(self, op, outcome):
        key = (self.fault[0], op, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    @staticmethod
    def number(data):
        """A counter's value, or None. memcached writes a decrement in place and pads what
        got shorter with spaces ("10" decremented reads "9 ")."""
        if data is None:
            return None
        data = data.rstrip(b" ")
        return int(data) if data.isdigit() else None

    def send(self, zone, data):
        c = self.conns.get(zone)
        if c is None:
            c = self.conns[zone] = Connection(self.proxies[zone].port)
        return c.request(data)

    def write(self, zone, req, key, what):
        """send() for the key's writer: the operation and its outcome go to the key's history
        (a connection that fails meanwhile is noted by run())."""
        sent_at = time.monotonic()
        self.pending = (key.ident, sent_at, "%s via %s" % (what, zone))
        line, data = self.send(zone, req)
        self.pending = None
        self.oracle.note(key.ident, sent_at, "%s via %s: %r%s" % (
            what, zone, line, "" if data is None else " %r" % data))
        return line, data

    def run(self):
        while time.monotonic() < self.deadline:
            zone = self.rng.choice(ZONES)
            try:
                r = self.rng.random()
                if r < 0.18:
                    self.write_value(zone, self.rng.choice(self.values + self.binaries))
                elif r < 0.30:
                    self.write_counter(zone, self.rng.choice(self.counters))
                elif r < 0.72:
                    self.read_value(zone, self.rng.choice(self.all_values + self.all_binaries))
                else:
                    self.read_counter(zone, self.rng.choice(self.all_counters))
            except (OSError, ConnectionError, BadReply):
                self.count("connection", "error")
                if self.pending:
                    self.oracle.note(self.pending[0], self.pending[1],
                                     self.pending[2] + ": connection failed")
                    self.pending = None
                old = self.conns.pop(zone, None)
                if old:
                    old.close()
                time.sleep(0.02)
        for c in self.conns.values():
            c.close()

    # --- value keys -----------------------------------------------------------------------

    def value(self, key, version):
        return b"%d/%s" % (version, key.ident.encode())

    def parse(self, key, data, context):
        """The version in `data`, or None (and a stale record) when it is another key's item."""
        m = re.fullmatch(rb"(\d+)/(.*)", data, re.S)
        if not m or m.group(2) != key.ident.encode():
            with self.oracle.lock:
                self.oracle.stale.append(dict(rule="wrong item", key=key.ident, got=data,
                                              sent_at=round(time.monotonic(), 3),
                                              **context))
            return None
        return int(m.group(1))

    def check_read(self, zone, key, op, snap, sent_at, line, data):
        if data is None:
            outcome = "miss" if line in (b"END\r\n", b"EN\r\n") else "error"
            self.count("read", outcome)
            return None
        self.count("read", "hit")
        context = dict(via=zone, op=op, fault=self.fault[0])
        version = self.parse(key, data, context)
        if version is not None:
            self.oracle.check_version(key.ident, snap, version, sent_at, **context)
        return version

    def read_value(self, zone, key):
        forms = ["mg-b"] if key.text is None else ["get", "get", "gets", "mg", "mg-b"]
        form = self.rng.choice(forms)
        if form == "get":
            req = b"get %s\r\n" % key.text
        elif form == "gets":
            req = b"gets %s\r\n" % key.text
        elif form == "mg":
            req = b"mg %s v\r\n" % key.text
        else:
            req = b"mg %s b v\r\n" % key.b64
        snap = self.oracle.snapshot(key.ident)
        sent_at = time.monotonic()
        line, data = self.send(zone, req)
        self.check_read(zone, key, form, snap, sent_at, line, data)

    def write_value(self, zone, key):
        r = self.rng.random()
        if r < 0.40:
            self.set_value(zone, key, 0)
        elif r < 0.55:
            self.set_value(zone, key, self.rng.randint(1, 3))
        elif r < 0.65:
            self.delete_value(zone, key)
        else:
            self.change_ttl(zone, key)

    def set_value(self, zone, key, ttl):
        version = self.oracle.next_version(key.ident)
        v = self.value(key, version)
        if key.text is not None and self.rng.random() < 0.6:
            op, req, ok = "set", b"set %s 0 %d %d\r\n%s\r\n" % (key.text, ttl, len(v), v), b"STORED"
        else:
            op, req, ok = "ms", b"ms %s %d b T%d\r\n%s\r\n" % (key.b64, len(v), ttl, v), b"HD"
        line, _ = self.write(zone, req, key, "%s v%d T%d" % (op, version, ttl))
        if line.rstrip() == ok:
            self.oracle.version_acknowledged(key.ident, version)
            if ttl:
                self.oracle.expires(key.ident, ttl, "%s T%d" % (op, ttl), upto=version)
            self.count("write", "ok")
        else:
            self.count("write", "error")

    def delete_value(self, zone, key):
        version = self.oracle.next_version(key.ident)  # a delete is a version without a value
        if key.text is not None and self.rng.random() < 0.5:
            req, ok = b"delete %s\r\n" % key.text, (b"DELETED", b"NOT_FOUND")
        else:
            req, ok = b"md %s b\r\n" % key.b64, (b"HD", b"NF")
        line, _ = self.write(zone, req, key, "delete v%d" % version)
        if line.rstrip() in ok:
            self.oracle.version_acknowledged(key.ident, version)
            self.count("delete", "ok")
        else:
            self.count("delete", "error")

    def change_ttl(self, zone, key):
        """touch, gat, gats or mg T: a write of the TTL; gat/gats/mg are reads too."""
        ttl = self.rng.choice(TTL_CHANGES)
        forms = ["mg-b"] if key.text is None else ["touch", "gat", "gats", "mg", "mg-b"]
        form = self.rng.choice(forms)
        if form == "touch":
            req = b"touch %s %d\r\n" % (key.text, ttl)
        elif form in ("gat", "gats"):
            req = b"%s %d %s\r\n" % (form.encode(), ttl, key.text)
        elif form == "mg":
            req = b"mg %s T%d v\r\n" % (key.text, ttl)
        else:
            req = b"mg %s b T%d v\r\n" % (key.b64, ttl)
        op = "%s T%d" % (form, ttl)
        snap = self.oracle.snapshot(key.ident)  # what the read part must respect
        self.oracle.ttl_change_sent(key.ident)
        sent_at = time.monotonic()
        line, data = self.write(zone, req, key, op)
        if form == "touch":
            hit = line == b"TOUCHED\r\n"
            self.count("touch", "hit" if hit else "miss" if line == b"NOT_FOUND\r\n" else "error")
        else:
            hit = self.check_read(zone, key, op, snap, sent_at, line, data) is not None
        if hit:
            self.oracle.expires(key.ident, ttl, op)

    # --- counters -------------------------------------------------------------------------

    def write_counter(self, zone, key):
        floor = self.oracle.snapshot(key.ident)[0]
        d = self.rng.randint(1, 5)
        r = self.rng.random()
        if self.counter_missing[key.ident] or r < 0.10:
            j = self.rng.randint(0, 20)
            self.oracle.counter_may_drop_to(key.ident, j)
            if self.rng.random() < 0.5:
                op, req = "set", b"set %s 0 0 %d\r\n%d\r\n" % (key.text, len(b"%d" % j), j)
            else:
                op, req = "ma N", b"ma %s N0 J%d D%d v\r\n" % (key.text, j, d)
            line, data = self.write(zone, req, key, "%s J%d" % (op, j))
            if line == b"STORED\r\n":
                self.counter_done(key, op, j)
            elif self.number(data) is not None:
                got = self.number(data)
                if got != j and got < floor + d:  # an increment of a value below the floor
                    self.counter_stale(zone, key, op, got, floor + d)
                self.counter_done(key, op, got)
            else:
                self.count("counter " + op, "error")
            return
        up = r < 0.70
        if up:
            floor_after = floor + d
            op, req = self.rng.choice([
                ("incr", b"incr %s %d\r\n" % (key.text, d)),
                ("ma MI", b"ma %s MI D%d v\r\n" % (key.text, d)),
                ("ma M+", b"ma %s M+ D%d v\r\n" % (key.text, d))])
        else:
            # A decrement lowers the bound before it is sent: a reader may see it at once.
            floor_after = max(floor - d, 0)
            self.oracle.counter_may_drop_to(key.ident, floor_after)
            op, req = self.rng.choice([
                ("decr", b"decr %s %d\r\n" % (key.text, d)),
                ("ma MD", b"ma %s MD D%d v\r\n" % (key.text, d)),
                ("ma M-", b"ma %s M- D%d v\r\n" % (key.text, d))])
        line, data = self.write(zone, req, key, "%s D%d" % (op, d))
        if data is None and re.fullmatch(rb"\d+\r\n", line):
            data = line.rstrip()
        if self.number(data) is not None:
            got = self.number(data)
            if got < floor_after:
                self.counter_stale(zone, key, op, got, floor_after)
            self.counter_done(key, op, got)
        elif line in (b"NOT_FOUND\r\n", b"NF\r\n"):
            self.counter_missing[key.ident] = True
            self.count("counter " + op, "miss")
        else:
            self.count("counter " + op, "error")

    def counter_done(self, key, op, value):
        self.oracle.counter_acknowledged(key.ident, value)
        self.counter_missing[key.ident] = False
        self.count("counter " + op, "ok")

    def counter_stale(self, zone, key, op, got, expected):
        with self.oracle.lock:
            self.oracle.stale.append(dict(rule="counter reply", key=key.ident, got=got,
                                          expected=expected, via=zone, op=op,
                                          fault=self.fault[0],
                                          sent_at=round(time.monotonic(), 3)))

    def read_counter(self, zone, key):
        form = self.rng.choice(["get", "mg"])
        req = b"get %s\r\n" % key.text if form == "get" else b"mg %s v\r\n" % key.text
        snap = self.oracle.snapshot(key.ident)
        sent_at = time.monotonic()
        line, data = self.send(zone, req)
        if data is None:
            self.count("read", "miss" if line in (b"END\r\n", b"EN\r\n") else "error")
            return
        self.count("read", "hit")
        if self.number(data) is None:
            with self.oracle.lock:
                self.oracle.stale.append(dict(rule="wrong item", key=key.ident, got=data,
                                              sent_at=round(time.monotonic(), 3),
                                              via=zone, op=form, fault=self.fault[0]))
            return
        self.oracle.check_counter(key.ident, snap, self.number(data), sent_at, via=zone, op=form,
                                  fault=self.fault[0])
