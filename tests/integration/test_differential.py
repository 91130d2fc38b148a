"""Differential test (issue 11): memzone-proxy in front of one memcached answers exactly like
that memcached, and no reply ever reaches the wrong client.

Two memcached with the same options: `direct` is driven directly, `behind` sits alone behind a
memzone-proxy (one pool, one zone, one server; one worker thread, so every client shares one
pipelined backend connection). Every stream goes to both sides, so the two memcached hold the
same data, and the replies are compared byte for byte after normalising only what legitimately
differs (see normalize_frame). Meanwhile canary clients on their own proxy connections check
that every reply they get is their own.

Not sent: `flush_all` (refused by the proxy unless allowFlushAll, and it would empty the
canaries' keys), `stats` (the proxy's own counters), memcached's admin commands (the proxy does
not forward them by design); `version` is compared with its number normalised.

Runs against any proxy binary (env MEMZONE_PROXY). Knobs:
  MEMZONE_DIFF_SEEDS=N     random-stream seeds (default 3: 0, 1, 2)
  MEMZONE_DIFF_SECONDS=S   run random streams for S seconds instead (seeds 0, 1, 2, ...)
  MEMZONE_DIFF_BUDGET=S    wall-clock budget of the whole class (default 150 s plus
                           MEMZONE_DIFF_SECONDS; a proxy far out of step makes exchanges wait
                           for their timeouts, and shrinking its many mismatches takes time)
  MEMZONE_DIFF_REPORT=F    write every mismatch (shrunk where possible) to F as JSON lines
  MEMZONE_DIFF_SELFTEST=1  put a second plain memcached where the proxy would be: checks that
                           the test itself is deterministic (it must then pass)
"""
import base64
import collections
import itertools
import json
import os
import random
import re
import socket
import threading
import time
import unittest

from harness import Memcached, Proxy, topology

SEEDS = int(os.environ.get("MEMZONE_DIFF_SEEDS", "3"))
SECONDS = float(os.environ.get("MEMZONE_DIFF_SECONDS", "0"))
BUDGET = float(os.environ.get("MEMZONE_DIFF_BUDGET", 150 + SECONDS))
REPORT = os.environ.get("MEMZONE_DIFF_REPORT")
SELFTEST = os.environ.get("MEMZONE_DIFF_SELFTEST") == "1"

ITEM_LIMIT = 1024 * 1024  # memcached -I 1m and the proxy's default --max-item-size
SENTINEL_KEY = b"__memzone_diff_sentinel__"  # never written: `mg` on it is a miss, "EN O<nonce>"
# Seconds to wait for each sentinel's reply before sending the next one. Only a request still
# waiting for data (or a proxy out of step) makes the first one time out; a slow reply (a loaded
# machine) only adds later sentinels, whose replies are ignored: 8 s in all before "stuck".
ROUND_TIMEOUTS = (1.0, 2.0, 5.0)
# Replays while shrinking: a wrong guess only makes the report less minimal, so be quick.
SHRINK_TIMEOUTS = (0.3, 0.3, 0.6)
CANARIES = 4
SHRINK_LIMIT = 300  # batches shrunk per run; the rest are reported unshrunk

_nonce = [0]
_nonce_lock = threading.Lock()


def next_nonce():
    with _nonce_lock:
        _nonce[0] += 1
        return b"s%d" % _nonce[0]


# ---------------------------------------------------------------------------------------------
# Replies: framing and normalisation


def _data_length(line):
    """Bytes of data that follow a reply line: VALUE <key> <flags> <bytes> [<cas>], VA <n> ..."""
    if line.startswith(b"VALUE "):
        parts = line[:-2].split(b" ")
        if len(parts) in (4, 5) and parts[3].isdigit():
            return int(parts[3])
    elif line.startswith(b"VA "):
        parts = line[:-2].split(b" ")
        if parts[1].isdigit():
            return int(parts[1])
    return None


def split_frames(buf):
    """Complete reply frames at the start of `buf` (a line, with its data block if it has one),
    and the bytes left over. memcached ends every line with \\r\\n."""
    frames, pos = [], 0
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            break
        end = nl + 2
        n = _data_length(buf[pos:end])
        if n is not None:
            if len(buf) < end + n + 2:
                break
            end += n + 2
        frames.append(buf[pos:end])
        pos = end
    return frames, buf[pos:]


_META_CODES = (b"HD", b"VA", b"EN", b"NF", b"NS", b"EX")


def normalize_frame(frame):
    """What may legitimately differ between two memcached that saw the same commands."""
    nl = frame.find(b"\r\n")
    head, rest = frame[:nl], frame[nl:]
    parts = head.split(b" ")
    if parts[0] == b"VALUE" and len(parts) == 5:
        # gets/gats: cas uniques come from each server's own counter (and the proxied one also
        # counts the canaries' writes).
        parts[4] = b"<cas>"
    elif parts[0] in _META_CODES:
        for i, p in enumerate(parts[1:], 1):
            if len(p) > 1 and p[1:].lstrip(b"-").isdigit() and p != b"t-1":
                if p[:1] == b"c":
                    parts[i] = b"c<cas>"  # cas unique: per-server counter, as above
                elif p[:1] == b"t":
                    # Remaining TTL ("t-1" = never expires stays as is): each memcached ticks
                    # its own clock once a second from its own start, so the two may be 1 apart.
                    parts[i] = b"t<ttl>"
                elif p[:1] == b"l":
                    parts[i] = b"l<secs>"  # seconds since last access: the same clocks
    elif parts[0] == b"ME":
        # me: exp (TTL, clock as above), la (last access, clock), cas (counter) differ.
        head = re.sub(rb" exp=(?!-1 )-?\d+", b" exp=<ttl>", head)
        head = re.sub(rb" la=\d+", b" la=<secs>", head)
        head = re.sub(rb" cas=\d+", b" cas=<cas>", head)
        return head + rest
    elif parts[0] == b"VERSION":
        return b"VERSION <version>\r\n"  # the proxy answers `version` itself (README)
    length = {b"VALUE": 3, b"VA": 1}.get(parts[0])
    if length is not None and len(parts) > length and re.fullmatch(rb"\r\n\d+ +\r\n", rest):
        # incr/decr made a number shorter: padded in place or a new item (StreamGen).
        rest = rest.rstrip(b" \r\n") + b"\r\n"
        parts[length] = b"%d" % (len(rest) - 4)
    return b" ".join(parts) + rest


# ---------------------------------------------------------------------------------------------
# One side of the comparison: a connection, and an exchange ending in a sentinel


class Conn:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.frames = []
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """False when the peer has closed (or reset) the connection."""
        if self.eof:
            return False
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            return False  # closed, or not reading at all: the sentinels will tell

    def pump(self, deadline):
        """Reads what arrives before `deadline`; False on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, ConnectionAbortedError):
            chunk = b""
        if not chunk:
            self.eof = True
            if self.buf:
                self.frames.append(b"<unframed %r>" % self.buf[:200])
                self.buf = b""
            return True
        self.buf += chunk
        frames, self.buf = split_frames(self.buf)
        self.frames.extend(frames)
        return True

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.eof or not self.pump(deadline):
                return predicate()
        return True


def sentinel_request(nonce):
    return b"mg " + SENTINEL_KEY + b" O" + nonce + b"\r\n"


def sentinel_reply(nonce):
    return b"EN O" + nonce + b"\r\n"


Outcome = collections.namedtuple("Outcome", "frames fate")


def exchange(conn, chunks, pauses=None, may_close=False, timeouts=ROUND_TIMEOUTS):
    """Sends `chunks`, then sentinels until the last one is answered or the peer closes.

    The outcome is every frame before the first sentinel reply, normalised, and the fate:
    "open" (sentinel k answered first; a sentinel can be eaten as data by a request still waiting
    for bytes, so k says how much was consumed), "closed" (EOF before any sentinel reply),
    "stuck" (no sentinel answered), or "out-of-step" (an earlier sentinel's reply came where a
    later one's should have: the replies are shifted). Replies to later sentinels are dropped:
    nothing but sentinels was sent after the first one."""
    conn.frames = []
    for i, chunk in enumerate(chunks):
        if not conn.send(chunk):
            break
        if pauses and pauses[i]:
            time.sleep(pauses[i])
    if may_close:
        conn.wait(lambda: conn.eof, 0.1)  # a close likely: give it a moment before sentinels
    nonces = []
    for timeout in timeouts:
        if conn.eof:
            break
        nonces.append(next_nonce())
        if not conn.send(sentinel_request(nonces[-1])):
            conn.wait(lambda: conn.eof, timeout)
            break
        want = sentinel_reply(nonces[-1])
        if conn.wait(lambda: want in conn.frames, timeout):
            break
    replies = {sentinel_reply(n): k for k, n in enumerate(nonces, 1)}
    first = next((i for i, f in enumerate(conn.frames) if f in replies), None)
    if first is None:
        frames = [normalize_frame(f) for f in conn.frames]
        return Outcome(tuple(frames), "closed" if conn.eof else "stuck")
    frames = tuple(normalize_frame(f) for f in conn.frames[:first])
    if nonces and sentinel_reply(nonces[-1]) not in conn.frames:
        return Outcome(frames, "out-of-step")
    return Outcome(frames, "open after sentinel %d" % replies[conn.frames[first]])


def describe(outcome):
    text = b"".join(outcome.frames)
    shown = repr(text[:600]) + (" ...(%d bytes)" % len(text) if len(text) > 600 else "")
    return "%s, then %s" % (shown, outcome.fate)


def show_input(data, limit=400):
    if len(data) <= limit:
        return repr(data)
    return "%r ... %r (%d bytes)" % (data[: limit - 60], data[-40:], len(data))


def first_token(request):
    line = request.split(b"\n", 1)[0].strip(b"\r ")
    return line.split(b" ", 1)[0][:12].decode("latin-1") or "<empty>"


# ---------------------------------------------------------------------------------------------
# The proxy, restartable: an out-of-step backend connection stays out of step for everyone, so
# after a case that desynchronised it the proxy is restarted to judge the next case cleanly.


class ProxyBox:
    def __init__(self, yaml):
        self.yaml = yaml
        self.lock = threading.Lock()
        self.generation = 0
        self.restarts = 0
        self.proxy = Proxy(yaml, threads=1).start()
        self.probe_conn = None
        self.probe_count = 0

    @property
    def port(self):
        return self.proxy.port

    def restart(self):
        with self.lock:
            self.generation += 1
            self.restarts += 1
            old = self.proxy
            old.proc.kill()
            old.proc.wait(timeout=10)
            old.log.close()
            self.proxy = Proxy(self.yaml, threads=1).start()
        if self.probe_conn:
            self.probe_conn.close()
            self.probe_conn = None

    def stop(self):
        if self.probe_conn:
            self.probe_conn.close()
        self.proxy.stop()

    def check(self):
        """None when the proxy still answers a probe correctly; otherwise why not (and the
        proxy has been restarted)."""
        if self.in_step():
            return None
        code = self.proxy.proc.poll()
        why = ("the proxy exited with status %s" % code if code is not None
               else "backend connection out of step afterwards")
        self.restart()
        return why

    def in_step(self):
        """One write and one read of a probe key through the proxy, each echoing an opaque:
        replies from another request would not carry it."""
        self.probe_count += 1
        nonce = b"%d" % self.probe_count
        key = b"__memzone_diff_probe_%d" % (self.probe_count % 4)
        value = b"p" + nonce.rjust(7, b"0")
        want = [b"HD O" + nonce + b"\r\n", b"VA 8 O" + nonce + b"\r\n" + value + b"\r\n"]
        try:
            if self.probe_conn is None:
                self.probe_conn = Conn(self.port)
            c = self.probe_conn
            c.frames = []
            c.send(b"ms %s 8 T0 O%s\r\n%s\r\nmg %s v O%s\r\n" % (key, nonce, value, key, nonce))
            c.wait(lambda: len(c.frames) >= 2, 8.0)  # far past the proxy's 2 s request timeout
            if c.frames == want:
                return True
        except OSError:
            pass
        if self.probe_conn:
            self.probe_conn.close()
            self.probe_conn = None
        return False


class DirectBox(ProxyBox):
    """MEMZONE_DIFF_SELFTEST: a plain memcached in the proxy's place."""

    def __init__(self, server):
        self.server = server
        self.generation = self.restarts = self.probe_count = 0
        self.probe_conn = None

    @property
    def port(self):
        return self.server.port

    def restart(self):
        raise AssertionError("memcached itself failed the probe")

    def stop(self):
        if self.probe_conn:
            self.probe_conn.close()


# ---------------------------------------------------------------------------------------------
# Canaries: clients that must only ever see their own replies


class Canary(threading.Thread):
    def __init__(self, box, index, stop):
        super().__init__(daemon=True, name="canary-%d" % index)
        self.box, self.index, self.stop_event = box, index, stop
        self.rng = random.Random(1000 + index)
        self.keys = [b"canary%d:%d" % (index, j) for j in range(8)]
        self.known = {}  # key -> (flags, value); absent: not stored; None: unknown
        self.ops = self.foreign = self.errors = self.stalls = self.disconnects = 0
        self.samples = []
        self.counter = 0
        self.conn = None
        self.generation = -1

    def value(self):
        self.counter += 1
        tag = b"C%d.%d|" % (self.index, self.counter)
        n = self.rng.choice([0, 1, 5, 20, 100, 300, 3000]) if self.rng.random() < 0.3 else 12
        return tag + self.rng.randbytes(n)  # binary, may hold \r\n and NUL

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception as e:  # a canary must not die silently
                self.errors += 1
                self.note("exception %r" % e, b"", [])
                self.reset()
            time.sleep(0.002)

    def reset(self):
        if self.conn:
            self.conn.close()
        self.conn = None
        for k in self.keys:
            if k in self.known:
                self.known[k] = None

    def note(self, kind, payload, got, expected=None):
        if len(self.samples) < 5:
            self.samples.append("%s %s: sent %s, got %r%s" % (
                self.name, kind, show_input(payload, 200), b"".join(got)[:300],
                "" if expected is None else ", expected %r" % b"".join(expected)[:300]))

    def step(self):
        if self.conn is None:
            self.generation = self.box.generation
            try:
                self.conn = Conn(self.box.port)
            except OSError:
                time.sleep(0.05)
                return
        payload, expected = self.make_op()
        payload += b"mn\r\n"  # answered by the proxy itself, in order: ends the op's replies
        expected = expected + [b"MN\r\n"]
        mns = expected.count(b"MN\r\n")
        c = self.conn
        c.frames = []
        self.ops += 1
        # Far past the proxy's 2 s request timeout: only a reply that never comes stalls.
        ok = c.send(payload) and c.wait(lambda: c.frames.count(b"MN\r\n") >= mns, 10.0)
        if self.box.generation != self.generation:
            self.reset()  # the test restarted the proxy under us: nothing to judge
            return
        got = c.frames
        if not ok:
            if c.eof:
                self.disconnects += 1
                self.note("disconnect", payload, got)
            else:
                self.stalls += 1
                self.note("stall", payload, got)
            self.reset()
            return
        if any(f.startswith(b"SERVER_ERROR") for f in got):
            self.errors += 1
            self.note("error", payload, got)
            self.reset()  # an error replaces a whole reply: realign on a new connection
            return
        if got != expected:
            self.foreign += 1
            self.note("FOREIGN", payload, got, expected)
            self.reset()

    def make_op(self):
        """(request bytes, the exact frames expected)."""
        rng = self.rng
        key = rng.choice(self.keys)
        state = self.known.get(key, "absent")
        op = rng.randrange(6)
        if state is None:
            op = 0  # unknown after an error: write before judging reads again
        flags = rng.choice([0, 7, 4294967295])
        if op == 0:  # set + get
            v = self.value()
            self.known[key] = (flags, v)
            return (b"set %s %d 0 %d\r\n%s\r\nget %s\r\n" % (key, flags, len(v), v, key),
                    [b"STORED\r\n", b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(v), v),
                     b"END\r\n"])
        if op == 1:  # ms + mg, opaques and keys echoed
            v = self.value()
            o = b"%d" % self.counter
            self.known[key] = (flags, v)
            return (b"ms %s %d T0 F%d O%s\r\n%s\r\nmg %s v f k O%s\r\n" % (
                key, len(v), flags, o, v, key, o),
                [b"HD O%s\r\n" % o, b"VA %d f%d k%s O%s\r\n%s\r\n" % (len(v), flags, key, o, v)])
        if op == 2:  # multi-get of several of its keys, one of them maybe twice
            keys = rng.sample(self.keys, 3) + [key]
            if any(self.known.get(k, "absent") is None for k in keys):
                return b"", []
            want = [b"VALUE %s %d %d\r\n%s\r\n" % (k, self.known[k][0], len(self.known[k][1]),
                                                   self.known[k][1])
                    for k in keys if k in self.known]
            return b"get %s\r\n" % b" ".join(keys), want + [b"END\r\n"]
        if op == 3:  # noreply set, then a quiet hit, then mn
            v = self.value()
            o = b"%d" % self.counter
            self.known[key] = (flags, v)
            return (b"set %s %d 0 %d noreply\r\n%s\r\nmg %s v q O%s\r\nmn\r\n" % (
                key, flags, len(v), v, key, o),
                [b"VA %d O%s\r\n%s\r\n" % (len(v), o, v), b"MN\r\n"])
        if op == 4:  # delete, then a miss
            self.known.pop(key, None)
            return (b"delete %s\r\nmg %s v k O%d\r\n" % (key, key, self.counter),
                    [b"DELETED\r\n" if state != "absent" else b"NOT_FOUND\r\n",
                     b"EN k%s O%d\r\n" % (key, self.counter)])
        # op 5: a single get of a known key (or a miss)
        if state == "absent":
            return b"get %s\r\n" % key, [b"END\r\n"]
        return (b"get %s\r\n" % key,
                [b"VALUE %s %d %d\r\n%s\r\n" % (key, state[0], len(state[1]), state[1]),
                 b"END\r\n"])


# ---------------------------------------------------------------------------------------------
# Random streams


class CasRef:
    """A cas unique to fill in per side: the last one that side returned for `key`, or a value
    no item has (each side's counter issues its own uniques)."""

    def __init__(self, key, fresh):
        self.key, self.fresh = key, fresh


BOGUS_CAS = b"999999999999999"


def render(parts, cas_table):
    out = []
    for p in parts:
        if isinstance(p, CasRef):
            out.append(cas_table.get(p.key, BOGUS_CAS) if p.fresh else BOGUS_CAS)
        else:
            out.append(p)
    return b"".join(out)


class StreamGen:
    """Seeded requests over a small key set so that hits, misses and conflicts all happen.

    Two things memcached itself does not do deterministically are kept out:
    - incr/decr/ma rewrite the item in place only when no other thread (LRU maintainer,
      crawler) holds a reference to it at that instant (do_add_delta: refcount == 2); else
      they link a new item. The new item has the exact length (in place: padded with spaces,
      which normalize_frame strips), no fetched/stale/win bits, no binary-key mark, and an
      `ma T` TTL update is lost. So arithmetic gets keys of its own that hold only numbers and
      never see append, prepend, `s`, `h`, `l`, invalidation (`I`), autovivify tokens (mg `N`),
      base64 keys (`b`) or `ma T`.
    - For a stored number of 2^63 or more, incr/decr/ma check for a '-' with strchr over the
      item's data, which is not NUL-terminated: the answer depends on the bytes that follow the
      item in slab memory. Numbers stay well below 2^63.
    - `me` shows an expired item until the crawler reclaims it: not in random streams."""

    def __init__(self, rng, prefix):
        self.rng = rng
        self.prefix = prefix
        keys = [b"k%d" % i for i in range(8)]
        keys.append(b"odd\x01\x7f\xff~!")  # legal bytes memcached does not split on
        keys.append(b"L" * (250 - len(prefix)))  # exactly 250 bytes with the prefix: the limit
        self.keys = [prefix + k for k in keys]
        self.nkeys = [prefix + b"n%d" % i for i in range(3)]
        # Misses happen on `never` keys; they get written too (add, ma N...): one of each kind.
        self.all_keys = self.keys + self.nkeys + [prefix + b"never", prefix + b"nnever"]

    def key(self, numeric=False):
        if self.rng.random() < 0.05:
            return self.prefix + (b"nnever" if numeric else b"never")
        return self.rng.choice(self.nkeys if numeric else self.keys)

    def any_key(self):
        return self.key(self.rng.random() < 0.25)

    def exptime(self):
        # 0 or far away: nothing expires during a run. -1 and 2592001 (an absolute time in 1970)
        # expire at once, on both servers alike.
        return self.rng.choice([b"0", b"0", b"0", b"100000", b"2592000", b"-1", b"2592001"])

    def flags(self):
        return self.rng.choice([b"0", b"0", b"1", b"12345", b"4294967295"])

    def value(self, numeric=False):
        rng = self.rng
        r = rng.random()
        if numeric:
            return rng.choice([b"0", b"1", b"41", b"99", b"100", b"4294967296",
                               b"999999999999", b"9" * 20, b"007", b" 5", b"x"])
        if r < 0.05:
            return rng.choice([b"0", b"1", b"41", b"18446744073709551615", b" 5"])
        if r < 0.1:
            return b""
        if r < 0.75:
            return rng.randbytes(rng.randint(1, 64))
        if r < 0.95:
            return rng.randbytes(rng.randint(65, 4000))
        if r < 0.995:
            return rng.randbytes(rng.randint(4001, 200000))
        # At the item limit: memcached's own "too large" check counts its item header, so all
        # of these reach memcached, through the proxy too.
        return bytes(rng.randrange(256) for _ in range(64)) * (
            rng.choice([ITEM_LIMIT - 256, ITEM_LIMIT - 64, ITEM_LIMIT]) // 64)

    def opaque(self):
        n = 40 if self.rng.random() < 0.02 else self.rng.randint(1, 32)
        return b"O" + bytes(self.rng.choice(b"abcxyz0123456789") for _ in range(n))

    def meta_key(self, key, flags):
        # A base64 (`b`) key marks the item's key binary; incr's new item drops that mark. An
        # encoded key over 250 bytes is refused before the data, which memcached then parses
        # as command lines: random bytes, where a 2 KiB line without a newline closes the
        # connection or not depending on how memcached's reads split them.
        name = base64.b64encode(key)
        if self.rng.random() < 0.08 and len(name) <= 250 and (
                key in self.keys or key.endswith(b":never")):
            flags.append(b"b")
            return name
        return key

    def meta_flags(self, menu, flags):
        rng = self.rng
        for f in rng.sample(menu, rng.randint(0, min(len(menu), 6))):
            flags.append(f() if callable(f) else f)
        if rng.random() < 0.03:
            flags.append(rng.choice([b"Z", b"@", b"E5", b"v", b"x", b"Q", b"u"]))  # invalid/dup
        if rng.random() < 0.15:
            flags.append(b"q")
        rng.shuffle(flags)
        return flags

    def noreply(self):
        return [b" noreply"] if self.rng.random() < 0.15 else []

    def with_cas(self, parts, flags, key):
        """Meta flags to parts; "cas" becomes C<that side's cas unique, or a wrong one>."""
        for f in flags:
            parts += [b" C", CasRef(key, self.rng.random() < 0.7)] if f == "cas" else [b" " + f]
        return parts

    def request(self):
        """A list of parts (bytes or CasRef)."""
        rng = self.rng
        c = rng.choices(
            ["get", "gat", "store", "cas", "delete", "arith", "touch", "verbosity",
             "mg", "ms", "md", "ma", "mn", "me"],
            [15, 5, 20, 4, 5, 6, 3, 1, 15, 12, 5, 6, 2, 0])[0]
        numeric = rng.random() < 0.3
        if c == "get":
            keys = [self.any_key() for _ in range(rng.choice([1, 1, 1, 2, 3, 5]))]
            return [rng.choice([b"get ", b"gets "]), b" ".join(keys), b"\r\n"]
        if c == "gat":
            keys = [self.any_key() for _ in range(rng.choice([1, 1, 2, 3]))]
            return [rng.choice([b"gat ", b"gats "]), self.exptime(), b" ", b" ".join(keys),
                    b"\r\n"]
        if c == "store":
            cmd = rng.choice([b"set", b"set", b"add", b"replace", b"append", b"prepend"])
            numeric = numeric and cmd not in (b"append", b"prepend")
            v = self.value(numeric)
            return [b"%s %s %s %s %d" % (cmd, self.key(numeric), self.flags(), self.exptime(),
                                         len(v))] + self.noreply() + [b"\r\n", v, b"\r\n"]
        if c == "cas":
            k = self.key(numeric)
            v = self.value(numeric) if rng.random() < 0.5 else b"7"
            return [b"cas %s %s %s %d " % (k, self.flags(), self.exptime(), len(v)),
                    CasRef(k, rng.random() < 0.7)] + self.noreply() + [b"\r\n", v, b"\r\n"]
        if c == "delete":
            return [b"delete ", self.any_key(), rng.choice([b"", b"", b" 0"])] + \
                self.noreply() + [b"\r\n"]
        if c == "arith":
            delta = rng.choice([b"1", b"5", b"0", b"4294967296", b"1000000"])
            return [rng.choice([b"incr ", b"decr "]), self.key(True), b" ", delta] + \
                self.noreply() + [b"\r\n"]
        if c == "touch":
            return [b"touch ", self.any_key(), b" ", self.exptime()] + self.noreply() + [b"\r\n"]
        if c == "verbosity":
            return [b"verbosity ", rng.choice([b"0", b"1"])] + self.noreply() + [b"\r\n"]
        if c == "mn":
            return [b"mn\r\n"]
        flags = []
        ttl = lambda: b"T" + self.exptime()  # noqa: E731
        if c == "mg":
            key = self.any_key()
            menu = [b"v", b"f", b"t", b"k", b"c", self.opaque, ttl]
            if key in self.keys or key.endswith(b":never"):
                menu += [b"s", b"h", b"l", lambda: b"N" + self.exptime()]
            name = self.meta_key(key, flags)
            return self.with_cas([b"mg ", name], self.meta_flags(menu, flags), key) + [b"\r\n"]
        if c == "ms":
            key = self.key(numeric)
            v = self.value(numeric)
            modes = b"ESRserZ" if numeric else b"ESAPRseaprZ"
            menu = [lambda: b"F" + self.flags(), ttl, b"k", b"c", self.opaque, "cas",
                    lambda: b"M" + rng.choice(modes).to_bytes(1, "big")]
            if not numeric:
                menu.append(b"I")
            name = self.meta_key(key, flags)
            return self.with_cas([b"ms ", name, b" %d" % len(v)], self.meta_flags(menu, flags),
                                 key) + [b"\r\n", v, b"\r\n"]
        if c == "md":
            key = self.any_key()
            name = self.meta_key(key, flags)
            menu = [b"k", self.opaque, "cas"]
            if key in self.keys or key.endswith(b":never"):
                menu += [b"I", ttl]
            return self.with_cas([b"md ", name], self.meta_flags(menu, flags), key) + [b"\r\n"]
        # ma
        key = self.key(True)
        name = self.meta_key(key, flags)
        menu = [lambda: b"N" + self.exptime(), lambda: b"J" + rng.choice([b"0", b"13", b"100"]),
                lambda: b"D" + rng.choice([b"1", b"7", b"4294967296"]),
                lambda: b"M" + rng.choice([b"I", b"i", b"+", b"D", b"d", b"-", b"x"]),
                self.opaque, b"t", b"c", b"v", b"k", "cas"]
        return self.with_cas([b"ma ", name], self.meta_flags(menu, flags), key) + [b"\r\n"]


def learn_cas(frames, table):
    """Remember the cas uniques a side returned, to use them in its later cas/C requests."""
    for f in frames:
        head = f[:f.find(b"\r\n")].split(b" ")
        if head[0] == b"VALUE" and len(head) == 5:
            table[head[1]] = head[4]
        elif head[0] in _META_CODES:
            key = next((p[1:] for p in head if p[:1] == b"k"), None)
            cas = next((p[1:] for p in head if p[:1] == b"c" and p[1:].isdigit()), None)
            if key is not None and cas is not None:
                if b"b" in head[1:]:
                    try:
                        key = base64.b64decode(key)
                    except ValueError:
                        continue
                table[key] = cas


# ---------------------------------------------------------------------------------------------
# The adversarial corpus


# `make(prefix)`: the case's requests, its keys under a prefix no other case uses.
# `accept(direct, proxied)`: a documented, safe divergence (returns its reason) or None.
Case = collections.namedtuple("Case", "group make may_close accept")


def case(group, make, may_close=False, accept=None):
    return Case(group, make, may_close, accept)


def _closed_after_one_error(direct, proxied):
    """The proxy answered what memcached answered up to some point, then at most one error
    line, then closed the connection."""
    if proxied.fate != "closed":
        return False
    frames = list(proxied.frames)
    if frames and frames[-1].startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
        frames.pop()
    return tuple(frames) == direct.frames[:len(frames)]


def accept_close_envelope(direct, proxied):
    """memcached closes a connection whose line reached 2048 bytes without a newline in one
    read, unless it starts with "get "/"gets " (try_read_command_ascii): whether a 2-16 KiB
    line is executed or closed on depends on how its bytes arrive, and lines over its 16 KiB
    read buffer are always closed on. A proxy that closes on such a line, after at most one
    error line, stays within what memcached itself does (and can not desynchronise anything)."""
    if _closed_after_one_error(direct, proxied):
        return "closed on an over-2KiB non-get line (memcached may too)"
    return None


def accept_documented_get_limit(direct, proxied):
    """README: "command lines <= 2 KiB (64 KiB for multi-key retrievals)". memcached has no
    limit for get/gets lines; the proxy refuses longer ones and closes (bounded memory)."""
    if _closed_after_one_error(direct, proxied):
        return "retrieval line over the documented 64 KiB limit"
    return None


_B64_KEY = re.compile(rb" k([A-Za-z0-9+/=]+) b(?= |\r\n)")


def _keys_decoded(outcome):
    def decode(m):
        try:
            return b" k" + base64.b64decode(m.group(1), validate=True)
        except ValueError:
            return m.group(0)
    return Outcome(tuple(_B64_KEY.sub(decode, f) for f in outcome.frames), outcome.fate)


def accept_own_key_encoding(direct, proxied):
    """README: the proxy never asks memcached to echo a key (issue 22); it writes a `k` key
    itself, in the encoding the client used. memcached prints a `b` key raw when the item lost
    its binary-key flag (mg N vivify, ms MA, incr); the proxy prints the client's base64."""
    if _keys_decoded(direct) == _keys_decoded(proxied):
        return "k of a b key in the client's encoding"
    return None


_B64_ECHO = re.compile(rb"(?: k|^ME )([A-Za-z0-9+/=]+)(?: b)?(?= |\r\n)", re.M)


def accept_hostile_b_key(direct, proxied):
    """Issue 22: memcached prints the stored bytes of a b key raw (`mg … k`, `me`) once the
    item lost its binary-key mark; those bytes may hold CR LF and a whole fake reply, so
    memcached's own stream is broken there (the attack). The proxy prints the client's base64
    instead. Accepted when memcached's bytes, with each raw key written as the proxy wrote it,
    are the proxy's bytes."""
    ours = b"".join(proxied.frames)
    theirs = b"".join(direct.frames)
    for m in _B64_ECHO.finditer(ours):
        encoded = m.group(1)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        theirs = theirs.replace(b" k" + raw + b" ", b" k" + encoded + b" b ")
        theirs = theirs.replace(b" k" + raw + b"\r\n", b" k" + encoded + b" b\r\n")
        theirs = theirs.replace(b"ME " + raw + b" exp=", b"ME " + encoded + b" exp=")
    def numbers(b):  # what differs per run; memcached's broken frames were not normalised
        for pattern, repl in ((rb" c\d+", b" c<cas>"), (rb" t-?\d+", b" t<ttl>"),
                              (rb"exp=-?\d+", b"exp=<ttl>"), (rb"la=\d+", b"la=<secs>"),
                              (rb"cas=\d+", b"cas=<cas>")):
            b = re.sub(pattern, repl, b)
        return b
    if numbers(theirs) == numbers(ours):
        return "k/me of a hostile b key in the client's encoding"
    return None


def accept_text_only(direct, proxied):
    """README: the proxy speaks the text and meta protocols only. memcached switches a
    connection whose first byte is 0x80 to the binary protocol; the proxy must refuse it (an
    error line or a close), never forward it."""
    if all(f.startswith((b"ERROR", b"CLIENT_ERROR")) for f in proxied.frames):
        return "binary protocol refused (text-only proxy)"
    return None


NUMBERS = [b"-1", b"-0", b"+1", b"0x10", b"1a", b"01", b"1.5", b"", b"4294967295", b"4294967296",
           b"2147483647", b"2147483648", b"-2147483648", b"-2147483649", b"9223372036854775807",
           b"9223372036854775808", b"18446744073709551615", b"18446744073709551616",
           b"99999999999999999999999", b"\x001", b"1\x00", b"1\t", b"\xef\xbc\x91"]
# For TTL fields: memcached accepts "+1", "01", "1\t" (strtol), and a 1-second TTL could expire
# between the two sides; 100 seconds can not.
TTL_NUMBERS = [n if len(n) > 4 else n.replace(b"1", b"100") for n in NUMBERS]


def byte_key_cases():
    """Every byte value at the start, middle and end of a key, through each key-taking command."""
    for b in range(256):
        for pos in ("start", "mid", "end"):
            def k(p, b=b, pos=pos):
                x = bytes([b])
                return {"start": x + p + b"key", "mid": p + b"k" + x + b"y",
                        "end": p + b"key" + x}[pos]
            yield case("key-byte", lambda p, k=k: [
                b"set %s 0 0 3\r\nabc\r\n" % k(p), b"get %s\r\n" % k(p), b"gets %s\r\n" % k(p),
                b"get %s %sother\r\n" % (k(p), p), b"mg %s v k\r\n" % k(p),
                b"ms %s 3 T0\r\nxyz\r\n" % k(p), b"gat 0 %s\r\n" % k(p), b"touch %s 0\r\n" % k(p),
                b"me %s\r\n" % k(p), b"append %s 0 0 1 noreply\r\n!\r\n" % k(p),
                b"mg %s v q\r\n" % k(p), b"delete %s\r\n" % k(p), b"md %s q\r\n" % k(p),
                b"set %s 0 0 1\r\n5\r\n" % k(p), b"incr %s 2\r\n" % k(p),
                b"ma %s v\r\n" % k(p), b"decr %s 1 noreply\r\n" % k(p), b"get %s\r\n" % k(p),
                b"add %s 0 0 1\r\nz\r\n" % k(p), b"md %s\r\n" % k(p), b"mg %s\r\n" % k(p)])


def grammar_cases():
    """Line endings, whitespace, numbers, lengths, token counts, meta flags, odd commands."""
    out = []
    c = lambda *r, **kw: out.append(case(*r, **kw))  # noqa: E731
    # The issue's own case: a NUL ends memcached's command line early.
    c("nul", lambda p: [b"set %sa\x00b 0 0 1\r\nx\r\n" % p, b"get %sa\r\n" % p,
                        b"get %sa\x00b\r\n" % p])
    c("nul", lambda p: [b"set %sa 0 0 1\r\nx\r\n" % p, b"get %sa\x00b %sz\r\n" % (p, p),
                        b"get %sa \x00%sa\r\n" % (p, p)])
    c("nul", lambda p: [b"\x00get %sa\r\n" % p, b"get\x00 %sa\r\n" % p, b"mg\x00%s v\r\n" % p,
                        b"ms %s 1\x00\r\nx\r\n" % p, b"ms %s\x00 1\r\nx\r\n" % p])
    c("nul", lambda p: [b"set %s 0 0 1 noreply\x00\r\nx\r\n" % p, b"get %s\r\n" % p])
    # Line endings.
    for r in [b"get %sa\n", b"set %sa 0 0 1\nx\r\n", b"set %sa 0 0 1\r\nx\n\r\n\r\n",
              b"set %sa 0 0 1\r\nx\r\r\n", b"mg %sa v\n", b"ms %sa 1\nx\r\n", b"delete %sa\n",
              b"incr %sa 1\n", b"touch %sa 0\n", b"mn\n", b"get %sa\r\r\n", b"get %sa\rb\r\n",
              b"\r\n", b"\n", b"\r\r\n", b" \r\n", b"\r", b"get %sa\n\r\n", b"mg %sa v\r\r\n"]:
        c("line-ending", lambda p, r=r: [b"set %sa 0 0 1\r\nA\r\n" % p, r.replace(b"%s", p),
                                         b"get %sa\r\n" % p])
    # Whitespace.
    for r in [b"get   %sa   \r\n", b"  get %sa\r\n", b"set  %sa  0  0  1 \r\nx\r\n",
              b"set %sa 0 0 1 noreply  \r\nx\r\n", b"get\t%sa\r\n", b"get %sa\t\r\n",
              b"set %sa\t0 0 1\r\nx\r\n", b"mg  %sa  v  k \r\n", b"ms %sa  1  T0 \r\nx\r\n",
              b"md %sa  q \r\n", b"delete %sa  \r\n", b"delete %sa 0 \r\n", b"incr %sa  1 \r\n",
              b"gat  0  %sa \r\n", b"touch %sa 0 \r\n", b"mn \r\n", b" mn\r\n", b"\tget %sa\r\n",
              b"get %sa \x0b\r\n", b"get %sa \x0c\r\n", b"verbosity  1 \r\n", b"version \r\n"]:
        c("whitespace", lambda p, r=r: [b"set %sa 0 0 2\r\n10\r\n" % p, r.replace(b"%s", p),
                                        b"get %sa\r\n" % p])
    # Malformed numbers, in every numeric field.
    fields = [b"set %sa {} 0 1\r\nx\r\n", b"set %sa 0 {T} 1\r\nx\r\n", b"set %sa 0 0 {}\r\nx\r\n",
              b"cas %sa 0 0 1 {}\r\nx\r\n", b"incr %sa {}\r\n", b"decr %sa {}\r\n",
              b"touch %sa {T}\r\n", b"gat {T} %sa\r\n", b"gats {T} %sa\r\n", b"delete %sa {}\r\n",
              b"verbosity {}\r\n", b"ms %sa {}\r\nx\r\n", b"ms %sa 1 T{T}\r\nx\r\n",
              b"ms %sa 1 F{}\r\nx\r\n", b"ms %sa 1 C{}\r\nx\r\n", b"mg %sa v T{T}\r\n",
              b"mg %sa v N{T}\r\n", b"mg %sa v R{T}\r\n", b"ma %sa D{}\r\n", b"ma %sa N0 J{}\r\n",
              b"ma %sa N{T}\r\n", b"ma %sa T{T}\r\n", b"md %sa C{}\r\n", b"md %sa I T{T}\r\n",
              b"ma %sa C{}\r\n", b"set %sa {} 0 1 noreply\r\nx\r\n", b"incr %sa {} noreply\r\n",
              b"touch %sa {T} noreply\r\n", b"set %sa 0 {T} 1 noreply\r\nx\r\n"]
    for f in fields:
        ttl = b"{T}" in f
        for n in (TTL_NUMBERS if ttl else NUMBERS):
            f = f.replace(b"{T}", b"{}")
            c("number", lambda p, f=f, n=n: [b"set %sa 0 0 2\r\n10\r\n" % p,
                                             f.replace(b"%s", p).replace(b"{}", n),
                                             b"mg %sa v f t\r\n" % p])
    # Data shorter or longer than declared, or wrongly terminated. Padding lines make sure the
    # declared length is always reached, so memcached never waits for more.
    for r in [b"set %sa 0 0 5\r\nab\r\n", b"set %sa 0 0 1\r\nabc\r\n", b"set %sa 0 0 1\r\nx\n",
              b"set %sa 0 0 1\r\nx\r", b"set %sa 0 0 1\r\nxy", b"set %sa 0 0 0\r\nx\r\n",
              b"set %sa 0 0 2 noreply\r\nabc\r\n", b"set %sa 0 0 4 noreply\r\nab\r\n",
              b"append %sa 0 0 3\r\nab\r\n", b"cas %sa 0 0 1 1\r\nxx\r\n", b"ms %sa 5\r\nab\r\n",
              b"ms %sa 1\r\nabc\r\n", b"ms %sa 1 q\r\nab\r\n", b"ms %sa 1 MZ\r\nab\r\n",
              b"ms %sa 2 Z\r\nabcd\r\n", b"set %sa 0 0 3\r\nab\r\nget %sa\r\n",
              b"set %sa 0 0 10\r\nshort\r\nget %sa\r\n"]:
        c("data-length", lambda p, r=r: [b"set %sa 0 0 3\r\nold\r\n" % p,
                                         r.replace(b"%s", p) + b"\r\n" * 8, b"get %sa\r\n" % p])
    # Too many tokens (memcached keeps at most 24).
    many = b" ".join(b"t%d" % i for i in range(30))
    flags = b" ".join([b"v"] * 2 + [b"O%d" % i for i in range(28)])
    for r in [b"get " + b" ".join(b"%%sa%d" % i for i in range(40)), b"set %sa 0 0 1 noreply x",
              b"set %sa 0 0 1 " + many, b"delete %sa 0 noreply x", b"incr %sa 1 noreply x",
              b"touch %sa 1 noreply x", b"verbosity 1 noreply x", b"mg %sa " + flags,
              b"mg %sa v " + b" ".join([b"k"] * 24), b"md %sa " + flags, b"ma %sa " + flags,
              b"me %sa " + many, b"mn " + many, b"version " + many, b"gat 0 " + many]:
        data = b"\r\nx\r\n" if r.startswith(b"set") else b"\r\n"
        c("tokens", lambda p, r=r, data=data: [b"set %sa 0 0 1\r\n1\r\n" % p,
                                               r.replace(b"%s", p) + data, b"get %sa\r\n" % p])
    for n in (19, 20, 21, 22, 23, 24):
        c("tokens", lambda p, n=n: [b"ms %sa 1 " % p + b" ".join([b"T0"] * n) + b"\r\nx\r\n",
                                    b"get %sa\r\n" % p])
        c("tokens", lambda p, n=n: [b"ms %sa 1 " % p + b" ".join(b"O%d" % i for i in range(n))
                                    + b"\r\nx\r\n", b"get %sa\r\n" % p])
    # Meta flags.
    for r in [b"mg %sa v v", b"mg %sa O", b"mg %sa O" + b"o" * 33, b"mg %sa Z", b"mg %sa b v",
              b"mg %s!!! b v", b"mg %sa k q", b"mg %smiss k q O1", b"mg %sa q", b"mg %sa N0 v",
              b"mg %snew N100 v t", b"mg %sa T-1 v t", b"mg %sa R30 v", b"mg %sa E5 v",
              b"mg %sa noreply", b"mg %sa s f h l t", b"mg %sa c", b"mg %sa u",
              b"ms %sa 3 MZ\r\nabc", b"ms %sa 3 Ms\r\nabc", b"ms %sa 3 ME\r\nabc",
              b"ms %sa 3 MA\r\nabc", b"ms %smiss 3 MR\r\nabc", b"ms %sa 3 I\r\nabc",
              b"ms %sa 3 q O1 k\r\nabc", b"ms %smiss 3 q MR\r\nabc", b"ms %s!!! 3 b\r\nabc",
              b"ms %sa 3 c k\r\nabc", b"ms %sa 3 S100\r\nabc", b"ms %sa 3 T-1\r\nabc",
              b"ms %sa 3 O" + b"o" * 33 + b"\r\nabc", b"ms %sa 3 noreply\r\nabc",
              b"ms %sa 3 M\r\nabc", b"ms %sa 3 MEE\r\nabc", b"ms %sa 3 F1 F2\r\nabc",
              b"md %sa q", b"md %smiss q", b"md %sa I T30", b"md %sa x", b"md %sa k O1 q",
              b"md %sa C1", b"md %sa Z", b"md %sa noreply", b"ma %sa", b"ma %smiss",
              b"ma %smiss q N0", b"ma %smiss N0 J10 v", b"ma %sa MD D100 v", b"ma %sa M+ v",
              b"ma %sa Mx", b"ma %sa q", b"ma %sa v t c k", b"ma %stext v", b"ma %sa D0 v",
              b"ma %sa noreply", b"me %sa", b"me %smiss", b"me %sa x", b"mn x", b"mn"]:
        c("meta", lambda p, r=r: [b"set %sa 0 0 2\r\n10\r\n" % p, b"set %stext 0 0 2\r\nhi\r\n" % p,
                                  r.replace(b"%s", p) + b"\r\n", b"mg %sa v\r\nmn\r\n" % p])
    # Keys at and over the 250-byte limit, plain and base64.
    for n in (249, 250, 251, 300):
        for r in [b"get {k}", b"get %sx {k} %sy", b"set {k} 0 0 1\r\nx", b"mg {k} v",
                  b"ms {k} 1\r\nx", b"delete {k}", b"incr {k} 1", b"touch {k} 0", b"md {k}",
                  b"ma {k}", b"me {k}", b"gat 0 {k}", b"mg {b} b v", b"ms {b} 1 b\r\nx"]:
            c("key-length", lambda p, n=n, r=r: [r.replace(b"%s", p).replace(
                b"{k}", (p + b"K" * n)[:n]).replace(b"{b}", base64.b64encode((p + b"K" * n)[:n]))
                + b"\r\n", b"get %sx\r\n" % p])
    # Commands that are short, unknown to the proxy by design, or odd.
    for r in [b"gat 10", b"gats 10", b"gat", b"get", b"gets", b"mg", b"ms", b"md", b"ma", b"me",
              b"ms %sa -1", b"ms %sa", b"GET %sa", b"g", b"ge %sa", b"gett %sa", b"sets %sa 0 0 1",
              b"version", b"version x", b"verbosity", b"verbosity 1", b"verbosity noreply",
              b"verbosity x", b"verbosity 1 2", b"verbosity 1 noreply", b"verbosity 1 2 3",
              b"incr %stext 1", b"incr %sa 18446744073709551615", b"decr %sa 100",
              b"delete %sa 0", b"delete %sa 1", b"delete %sa noreply", b"delete %sa 0 noreply",
              b"delete %sa x noreply", b"touch %sa 10 noreply", b"cas %sa 0 0 1\r\nx",
              b"cas %sa 0 0 1 1 noreply\r\nx", b"set %sa 0 0 1 norepl\r\nx", b"mn",
              b"ma %sauto q N100\r\nmg %sauto v", b"ma %sauto q N0 J5 MD\r\nmg %sauto v",
              b"incr %sa 1 noreply\r\nget %sa", b"set %sn 0 0 19\r\n9223372036854775806\r\n"
              b"incr %sn 1", b"set %sn 0 0 2\r\n99\r\nincr %sn 1\r\nget %sn"]:
        c("misc", lambda p, r=r: [b"set %sa 0 0 2\r\n10\r\n" % p,
                                  b"set %stext 0 0 2\r\nhi\r\n" % p, r.replace(b"%s", p) + b"\r\n",
                                  b"get %sa\r\n" % p])
    for r in [b"quit", b"quit x", b" quit", b"quit\r\nget %sa"]:
        c("quit", lambda p, r=r: [b"set %sa 0 0 1\r\nq\r\n" % p, r.replace(b"%s", p) + b"\r\n"],
          may_close=True)
    return out


def size_cases():
    """Oversized lines and values. Each line goes out in one send on a fresh connection, so
    memcached reads it whole where it can (see accept_close_envelope)."""
    out = []
    c = lambda *r, **kw: out.append(case(*r, **kw))  # noqa: E731

    def keys(p, total, cmd=b"get "):
        words, size = [], len(cmd)
        while size < total:
            words.append(p + b"key%06d" % len(words))
            size += len(words[-1]) + 1
        return cmd + b" ".join(words) + b"\r\n"

    env, doc = accept_close_envelope, accept_documented_get_limit
    c("long-line", lambda p: [b"x" * 3000 + b"\r\n"], may_close=True, accept=env)
    c("long-line", lambda p: [b"set " + b" " * 2990 + p + b"a 0 0 1\r\nx\r\n"], may_close=True,
      accept=env)
    c("long-line", lambda p: [b"mg %sa v" % p + b" " * 2100 + b"\r\n"], may_close=True, accept=env)
    c("long-line", lambda p: [b"mg %sa v" % p + b" " * (2046 - len(p) - 7) + b"\r\n"])
    c("long-line", lambda p: [b"y" * 20000 + b"\r\n"], may_close=True, accept=env)
    c("long-line", lambda p: [b"set %sa 0 0 1\r\nx\r\n" % p, keys(p, 10000)])
    c("long-line", lambda p: [b"set %skey000007 0 0 1\r\nx\r\n" % p, keys(p, 60000, b"gets ")])
    c("long-line", lambda p: [keys(p, 130 * 1024)], may_close=True, accept=doc)
    c("long-line", lambda p: [keys(p, 2 * 1024 * 1024)], may_close=True, accept=doc)
    c("long-line", lambda p: [keys(p, 130 * 1024, b"gets ")], may_close=True, accept=doc)
    c("long-line", lambda p: [keys(p, 3000, b"gat 0 ")], may_close=True, accept=env)
    c("long-line", lambda p: [keys(p, 20000, b"gat 0 ")], may_close=True, accept=env)
    c("long-line", lambda p: [keys(p, 20000, b"gats 0 ")], may_close=True, accept=env)
    c("long-line", lambda p: [b"  " + keys(p, 20000)])
    c("long-line", lambda p: [b" " * 120 + keys(p, 20000)], may_close=True)
    # Values over the item limit: memcached answers "SERVER_ERROR object too large for cache",
    # swallows the data, and (set and ms) removes the old value.
    big = b"v" * (ITEM_LIMIT + 1)
    for r in [b"set %sa 0 0 {n}\r\n{v}\r\n", b"set %sa 0 0 {n} noreply\r\n{v}\r\n",
              b"add %sa 0 0 {n}\r\n{v}\r\n", b"replace %sa 0 0 {n}\r\n{v}\r\n",
              b"append %sa 0 0 {n}\r\n{v}\r\n", b"cas %sa 0 0 {n} 1\r\n{v}\r\n",
              b"ms %sa {n}\r\n{v}\r\n", b"ms %sa {n} MA\r\n{v}\r\n", b"ms %sa {n} q\r\n{v}\r\n",
              b"set %sa 0 0 {n}\r\n{v}XY"]:
        for v in (big, b"w" * (2 * ITEM_LIMIT), b"u" * ITEM_LIMIT, b"t" * (ITEM_LIMIT - 80)):
            c("big-value", lambda p, r=r, v=v: [
                b"set %sa 0 0 3\r\nold\r\n" % p,
                r.replace(b"%s", p).replace(b"{n}", b"%d" % len(v)).replace(b"{v}", v),
                b"get %sa\r\n" % p, b"mg %sa s v\r\n" % p])
    # The binary protocol's magic byte.
    header = bytes([0x80, 0x00, 0x00, 0x01]) + bytes(4) + bytes([0, 0, 0, 1]) + bytes(12) + b"a"
    c("binary", lambda p: [header], may_close=True, accept=accept_text_only)
    c("binary", lambda p: [header + b"get %sa\r\n" % p], may_close=True, accept=accept_text_only)
    c("binary", lambda p: [b"mn\r\n", header + b"\r\n", b"get %sa\r\n" % p])
    c("binary", lambda p: [b"set %s\x80 0 0 1\r\n\x80\r\n" % p, b"get %s\x80\r\n" % p])
    # Issue 22: locally answered pipelines (version, verbosity, unknown commands, mn) in one
    # write, alone and around routed requests; they must all be answered, in order.
    for local in (b"version\r\n", b"verbosity 1\r\n", b"nosuchcommand\r\n", b"mn\r\n"):
        c("local-pipeline", lambda p, local=local: [local * 40 + b"mn\r\n"])
        c("local-pipeline", lambda p, local=local: [
            local * 25 + b"get %sa\r\n" % p + local * 25 + b"set %sa 0 0 1\r\nx\r\n" % p +
            local * 5 + b"mg %sa v\r\n" % p])
    # Issue 22: b keys whose stored bytes are a fake reply, items that lose their binary-key
    # mark (vivify, append, incr), then read back with every flag that prints something, me
    # included, and quiet and opaque flags around them.
    for raw in (b"x0\r\nEND\r\nVA 53", b"a b\x00c", b"\r\nHD\r\n", b"MN\r\nEN"):
        def hostile(p, raw=raw):
            k = base64.b64encode(p + raw)
            return [b"mg %s b N30 v\r\n" % k, b"mg %s b k v c t s f O7 q\r\n" % k,
                    b"me %s b\r\n" % k, b"ms %s 2 b MA\r\nzz\r\n" % k,
                    b"mg %s b k v O9\r\n" % k, b"ms %s 1 b\r\n5\r\n" % k,
                    b"ma %s b k v D7 O3\r\n" % k, b"md %s b q k\r\nmn\r\n" % k,
                    b"mg %s b k q v\r\nmn\r\n" % k]
        c("hostile-b-key", hostile, accept=accept_hostile_b_key)
    return out


# ---------------------------------------------------------------------------------------------


class DifferentialTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.started = time.monotonic()
        cls.direct = Memcached(max_item_size="1m").start()
        cls.behind = Memcached(max_item_size="1m").start()
        yaml = topology({"zone-a": [cls.behind.address]},
                        timeouts="{ connectMs: 1000, requestMs: 2000 }")
        cls.box = DirectBox(cls.behind) if SELFTEST else ProxyBox(yaml)
        cls.mismatches = []
        cls.accepted = collections.Counter()
        cls.compared = 0
        cls.batches = 0
        cls.shrinks = 0
        cls.desyncs = 0
        cls.skipped = []
        cls.case_id = 0
        cls.stop = threading.Event()
        cls.canaries = [Canary(cls.box, i, cls.stop) for i in range(CANARIES)]
        for t in cls.canaries:
            t.start()

    @classmethod
    def tearDownClass(cls):
        cls.stop.set()
        for t in cls.canaries:
            t.join(timeout=10)
        cls.box.stop()
        cls.direct.kill()
        cls.behind.kill()
        print("\ndifferential: %s" % cls.summary())
        if REPORT:
            with open(REPORT, "w") as f:
                for m in cls.mismatches:
                    f.write(json.dumps(m) + "\n")

    @classmethod
    def summary(cls):
        canary = [sum(getattr(t, a) for t in cls.canaries)
                  for a in ("ops", "foreign", "errors", "stalls", "disconnects")]
        return ("%d requests compared in %d batches, %d mismatches, %d accepted divergences %s, "
                "%d proxy desyncs (restarts %d); canaries: %d ops, %d foreign replies, %d errors, "
                "%d stalls, %d disconnects; %.0fs" % (
                    cls.compared, cls.batches, len(cls.mismatches), sum(cls.accepted.values()),
                    dict(cls.accepted), cls.desyncs, cls.box.restarts, *canary,
                    time.monotonic() - cls.started))

    def over_budget(self):
        return time.monotonic() - self.started > BUDGET

    def fresh_prefix(self, tag, like=b"c000000:"):
        """A key prefix never used before, as long as `like` (key lengths matter)."""
        type(self).case_id += 1
        return b"%s%0*d:" % (tag, len(like) - 2, self.case_id)

    # -- running one batch on both sides ------------------------------------------------------

    def run_both(self, requests, conns=None, chunking=None, may_close=False, cas=None,
                 timeouts=ROUND_TIMEOUTS):
        """Runs `requests` (lists of parts) on both sides, in the same pieces; returns the
        (direct, proxied) outcomes and why the proxy is out of step afterwards, if it is."""
        outcomes = []
        cuts = pauses = None
        for side in ("direct", "proxy"):
            table = cas[side] if cas else {}
            payload = b"".join(render(r, table) for r in requests)
            if chunking and cuts is None:
                cuts, pauses = chunking(len(payload))
            bounds = [0] + [c for c in (cuts or []) if c < len(payload)] + [len(payload)]
            chunks = [payload[a:b] for a, b in zip(bounds, bounds[1:])]
            own = conns is None
            conn = conns[side] if conns else Conn(
                self.direct.port if side == "direct" else self.box.port)
            try:
                outcomes.append(exchange(conn, chunks, pauses, may_close, timeouts))
                if cas:
                    learn_cas(conn.frames, table)
            finally:
                if own:
                    conn.close()
        type(self).batches += 1
        type(self).compared += len(requests)
        desync = self.box.check()
        if desync:
            type(self).desyncs += 1
        return outcomes[0], outcomes[1], desync

    def judge(self, group, requests, direct, proxied, desync, accept=None, context=None):
        if direct == proxied and not desync:
            return True
        if accept and not desync and accept(direct, proxied):
            type(self).accepted[accept(direct, proxied)] += 1
            return True
        if not desync and accept_own_key_encoding(direct, proxied):
            type(self).accepted[accept_own_key_encoding(direct, proxied)] += 1
            return True
        self.record(group, requests, direct, proxied, desync, context)
        return False

    def record(self, group, requests, direct, proxied, desync, context=None, shrunk=False):
        """`requests`: bytes, or lists of parts (shown with the direct side's cas uniques
        unknown). Shrunk: the last request is the one that differs."""
        sent = [r if isinstance(r, bytes) else render(r, {}) for r in requests]
        payload = sent[-1] if shrunk else b"".join(sent)
        command = first_token(payload) if shrunk else "<whole batch>"
        self.mismatches.append({
            "group": group, "command": command, "shrunk": shrunk,
            "input": show_input(payload, 1000), "memcached": describe(direct),
            "memzone": describe(proxied), "desync": desync, "context": context or ""})

    # -- shrinking --------------------------------------------------------------------------

    def shrink(self, group, requests, prefix, chunking=None, accept=None, prelude=()):
        """Replays the batch on fresh keys (a new prefix of the same length), after `prelude`
        (requests that recreate the keys' state before the batch); finds the shortest failing
        prefix of the batch, then drops every earlier request it can. Records the smallest
        failing replay, as sent, and returns True; False when the batch does not fail again."""
        if self.shrinks >= SHRINK_LIMIT or time.monotonic() - self.started > BUDGET / 2:
            return False  # the rest of the budget is for comparing more
        type(self).shrinks += 1
        full = list(prelude) + list(requests)

        def fails(rs, ch=None):
            q = self.fresh_prefix(b"z", prefix)
            replay = [[x.replace(prefix, q) if isinstance(x, bytes) else
                       CasRef(x.key.replace(prefix, q), False) for x in r] for r in rs]
            d, p, desync = self.run_both(replay, chunking=ch, timeouts=SHRINK_TIMEOUTS)
            if (d == p and not desync) or (accept and not desync and accept(d, p)) or (
                    not desync and accept_own_key_encoding(d, p)):
                return None
            return [render(r, {}) for r in replay], d, p, desync

        got = fails(full)
        if got is None and chunking is not None:
            got = fails(full, chunking)
            if got is not None:
                self.record(group, *got, "fails only when sent in pieces (as in the original "
                            "batch); sent whole it passes")
                return True
        if got is None:
            return False
        for end in range(len(prelude) + 1, len(full) + 1):
            g = fails(full[:end])
            if g:
                rs, got = full[:end], g
                break
        else:
            return False
        i = 0
        while i < len(rs) - 1 and not self.over_budget():
            g = fails(rs[:i] + rs[i + 1:])
            if g:
                rs, got = rs[:i] + rs[i + 1:], g
            else:
                i += 1
        sent = got[0]
        context = "after: " + " | ".join(show_input(r, 120) for r in sent[:-1]) \
            if len(sent) > 1 else "alone"
        self.record(group, *got, context, shrunk=True)
        return True

    # -- the corpus ---------------------------------------------------------------------------

    def test_a_adversarial_corpus(self):
        """Fixed adversarial inputs, each on fresh connections to both sides."""
        before = len(self.mismatches)
        for c in list(byte_key_cases()) + grammar_cases() + size_cases():
            if self.over_budget():
                self.skipped.append("corpus stopped at the time budget")
                break
            prefix = self.fresh_prefix(b"c")
            group = c.group
            parts = [[r] for r in c.make(prefix)]
            d, p, desync = self.run_both(parts, may_close=c.may_close)
            if not self.judge(group, parts, d, p, desync, c.accept) and len(parts) > 1 \
                    and not c.may_close:
                if self.shrink(group, parts, prefix, accept=c.accept):
                    self.mismatches.pop(-2)  # the shrunk record replaces the batch's
        self.assertEqual(self.mismatches[before:], [], self.failure_text(before))

    # -- random streams -----------------------------------------------------------------------

    def test_b_random_streams(self):
        """Seeded random pipelined batches, sent in random pieces, on long-lived connections."""
        before = len(self.mismatches)
        seeds = range(SEEDS) if SECONDS <= 0 else itertools.count()
        deadline = time.monotonic() + SECONDS
        for seed in seeds:
            if (SECONDS > 0 and time.monotonic() > deadline) or self.over_budget():
                break
            self.random_stream(seed, batches=400)
        self.assertEqual(self.mismatches[before:], [], self.failure_text(before))

    def random_stream(self, seed, batches):
        rng = random.Random(seed)
        prefix = b"r%05d:" % seed
        gen = StreamGen(rng, prefix)
        cas = {"direct": {}, "proxy": {}}
        conns = None
        failures = 0
        for b in range(batches):
            if self.over_budget() or failures >= 5:
                if failures >= 5:
                    self.skipped.append("seed %d stopped after 5 mismatching batches" % seed)
                break
            if conns is None:
                conns = {"direct": Conn(self.direct.port), "proxy": Conn(self.box.port)}
            requests = [gen.request() for _ in range(rng.randint(1, 25))]
            prelude = self.snapshot(gen.all_keys)

            def chunking(n, r=random.Random(rng.random())):  # random pieces, tiny pauses
                cuts = sorted(r.sample(range(1, n), min(n - 1, r.randint(0, 10)))) if n > 1 else []
                return cuts, [r.choice([0, 0, 0.0002, 0.001]) for _ in range(len(cuts) + 1)]

            d, p, desync = self.run_both(requests, conns=conns, chunking=chunking, cas=cas)
            if self.judge("random", requests, d, p, desync, context="seed %d batch %d" % (seed, b)):
                continue
            failures += 1
            for c in conns.values():
                c.close()
            conns = None
            if self.shrink("random", requests, prefix, chunking=chunking, prelude=prelude):
                self.mismatches.pop(-2)  # the shrunk record replaces the batch's
            self.reset_keys(gen.all_keys, cas)
        if conns:
            for c in conns.values():
                c.close()
        self.check_same_state(gen.all_keys, "seed %d" % seed)

    def snapshot(self, keys):
        """Requests that recreate the items of `keys` (value, flags, TTL) as they are now, for
        replaying a batch on fresh keys. Read from both memcached alike: `mg` marks an item as
        fetched, and the two must stay identical."""
        prelude = []
        for server in (self.behind, self.direct):
            conn = Conn(server.port)
            try:
                exchange(conn, [b"".join(b"mg %s v f t\r\n" % k for k in keys)])
            finally:
                conn.close()
        for key, frame in zip(keys, conn.frames):
            if frame.startswith(b"VA "):
                head, data = frame.split(b"\r\n", 1)
                parts = head.split(b" ")
                ttl = parts[3][1:]
                prelude.append([b"ms %s %s F%s T%s\r\n" % (
                    key, parts[1], parts[2][1:], b"0" if ttl == b"-1" else ttl), data])
        return prelude

    def reset_keys(self, keys, cas):
        """After a mismatch the two memcached may hold different data: start them equal again,
        talking to each one directly."""
        for server in (self.direct, self.behind):
            with server.client() as c:
                for k in keys:
                    c.request(b"delete " + k + b"\r\n")
        for t in cas.values():
            t.clear()

    def check_same_state(self, keys, where):
        """Both memcached must hold the same items after the same streams."""
        got = []
        for server in (self.direct, self.behind):
            conn = Conn(server.port)
            try:
                got.append(exchange(conn, [b"".join(b"mg %s v f k\r\n" % k for k in keys)]))
            finally:
                conn.close()
        if got[0] != got[1]:
            self.record("state", [b"mg <each key> v f k"], got[0], got[1], None,
                        "%s: direct memcached vs the one behind the proxy" % where)

    # -- canaries ---------------------------------------------------------------------------

    def test_z_canaries_saw_only_their_own_replies(self):
        """Runs last: the canaries ran during the corpus and the random streams."""
        deadline = time.monotonic() + 2
        ops = sum(t.ops for t in self.canaries)
        while sum(t.ops for t in self.canaries) < ops + 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        for t in self.canaries:
            t.join(timeout=10)
        foreign = sum(t.foreign for t in self.canaries)
        trouble = sum(t.errors + t.stalls + t.disconnects for t in self.canaries)
        samples = [s for t in self.canaries for s in t.samples]
        self.assertGreater(sum(t.ops for t in self.canaries), 100, "the canaries did not run")
        self.assertEqual(foreign + trouble, 0, "%s\n%s" % (self.summary(), "\n".join(samples)))

    # -- reporting --------------------------------------------------------------------------

    def failure_text(self, before):
        found = self.mismatches[before:]
        groups = collections.OrderedDict()
        for m in found:
            groups.setdefault((m["group"], m["command"]), []).append(m)
        lines = [self.summary(), "%d mismatches in %d groups (first 3 of each):" % (
            len(found), len(groups))]
        for (group, command), ms in groups.items():
            lines.append("== %s / %s: %d" % (group, command, len(ms)))
            for m in ms[:3]:
                lines.append("  input:     %s" % m["input"])
                if m["context"]:
                    lines.append("  context:   %s" % m["context"])
                lines.append("  memcached: %s" % m["memcached"])
                lines.append("  memzone:   %s%s" % (
                    m["memzone"], "  [%s]" % m["desync"] if m["desync"] else ""))
        lines += self.skipped
        return "\n".join(lines)


if __name__ == "__main__":
    unittest.main()
