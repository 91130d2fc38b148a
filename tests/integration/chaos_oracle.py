"""The chaos test's oracle: what a read may return, given what was acknowledged before it was sent.

Every key has one writer (the client that owns it), so the writer knows every operation that
can change the key; readers are every client. The writer publishes, before it sends an
operation, what that operation may do to readers' expectations, and after the reply what the
reply proved. A reader takes a snapshot of the key's state before it sends its read and checks
the reply against the snapshot, so nothing acknowledged after the read was sent is held
against it. Three rules, each exact (a violation is something no single memcached could have
served to this client history):

- Versions (value keys): every write of a key (set, ms, delete, md) carries the next version
  of it; a delete is a version with no value. A read is stale when it returns a version below
  the highest version acknowledged before the read was sent. Failed or unanswered writes do
  not raise the floor: their version may or may not be anywhere, and either is fine.
- Expiry (value keys): an acknowledged set with a TTL, or an acknowledged TTL change that hit
  (touch, gat, gats, mg T), says by when every version up to the highest one sent so far must
  be gone. A read sent after that deadline that returns such a version is stale. The deadline
  is the acknowledgement's time + TTL + EXPIRY_MARGIN: memcached's clock ticks once a second
  (an item set at second s with TTL t expires when the clock reads s + t, and the clock lags
  real time by up to 1 s, plus the tick's own scheduling delay), and TTL changes by reads reach
  the other zones in the background, milliseconds after the reply. While a TTL change is in
  flight, or after one that failed or missed (a miss tells nothing about the other zones), the
  key has no deadline until the next acknowledged one.
- Counters: the writer keeps a lower bound of the value in every zone that may serve it. An
  acknowledged incr/decr/ma/set sets it to the value the reply carries; before a decrement or
  a reset (set, ma with N on a miss) is sent the bound drops to what that operation could leave
  (decr clamps at 0), so a reader never holds a decrement in flight against the zone that has
  it. A read below the bound is stale, and so is an increment whose reply is below
  bound + delta (the increment was applied to a value older than an acknowledged one).

A read races what the writer sends while it is on its way: a decrement, a reset or a TTL
change sent after the read was sent may land before it. So a read is held to its snapshot
less what the writer started meanwhile: the lowest counter bound published until the reply,
and no deadline if a TTL change was sent until the reply.
"""
import collections
import threading
import time

# memcached's clock has a resolution of 1 s (see the module docstring); 0.5 s more for the
# clock tick's scheduling on a loaded machine and for background TTL copies.
EXPIRY_MARGIN = 1.5


class KeyState:
    __slots__ = ("floor", "floor_at", "sent", "deadline", "expires_upto", "deadline_op",
                 "drops", "ttl_sent_at", "history")

    def __init__(self):
        self.floor = 0  # version floor, or the counter's lower bound
        self.floor_at = 0.0  # when the floor was acknowledged
        self.sent = 0  # highest version sent (value keys)
        self.deadline = None  # monotonic time after which versions <= expires_upto are gone
        self.expires_upto = 0
        self.deadline_op = ""  # the operation that set the deadline, for the report
        self.drops = collections.deque(maxlen=256)  # (when, bound) of counter bounds lowered
        self.ttl_sent_at = 0.0  # when the last TTL change was sent
        self.history = collections.deque(maxlen=1000)  # (sent at, the writer's operation)


class Oracle:
    def __init__(self):
        self.lock = threading.Lock()
        self.keys = {}
        self.stale = []  # dicts: rule, key, got, expected, via, op, fault, sent_at, ...
        self.window = 0.0  # longest time from an acknowledgement to a read that ignored it
        self.start = time.monotonic()

    def _state(self, key):
        s = self.keys.get(key)
        if s is None:
            s = self.keys[key] = KeyState()
        return s

    # --- the writer of value keys ---------------------------------------------------------

    def next_version(self, key):
        with self.lock:
            s = self._state(key)
            s.sent += 1
            return s.sent

    def version_acknowledged(self, key, version):
        with self.lock:
            s = self._state(key)
            if version > s.floor:
                s.floor, s.floor_at = version, time.monotonic()

    def ttl_change_sent(self, key):
        """A TTL change (touch, gat, gats, mg T) is about to be sent: no deadline until its
        reply proves one."""
        with self.lock:
            s = self._state(key)
            s.deadline, s.ttl_sent_at = None, time.monotonic()

    def expires(self, key, ttl, op, upto=None):
        """An acknowledged operation set the TTL of every copy of versions <= `upto` (default:
        every version sent so far) to `ttl` seconds: 0 is no expiry, negative is now."""
        with self.lock:
            s = self._state(key)
            if ttl == 0:
                s.deadline = None
                return
            s.deadline = time.monotonic() + max(ttl, 0) + EXPIRY_MARGIN
            s.expires_upto = s.sent if upto is None else upto
            s.deadline_op = op

    def note(self, key, sent_at, what):
        """The writer's operation and its outcome, kept for the report of a stale read."""
        with self.lock:
            self._state(key).history.append((sent_at, "%.3f+%.1fms %s" % (
                sent_at, (time.monotonic() - sent_at) * 1000, what)))

    def history(self, key, around, before=2.0, after=0.1):
        """The writer's operations sent from `before` s before `around` to `after` s after."""
        with self.lock:
            return [what for when, what in self._state(key).history
                    if around - before <= when <= around + after]

    # --- the writer of counters -----------------------------------------------------------

    def counter_may_drop_to(self, key, value):
        with self.lock:
            s = self._state(key)
            s.floor = min(s.floor, max(value, 0))
            s.drops.append((time.monotonic(), s.floor))

    def counter_acknowledged(self, key, value):
        with self.lock:
            s = self._state(key)
            s.floor, s.floor_at = value, time.monotonic()

    # --- readers --------------------------------------------------------------------------

    def snapshot(self, key):
        """What a read sent now must respect (then less what the writer starts meanwhile)."""
        with self.lock:
            s = self._state(key)
            return (s.floor, s.floor_at, s.deadline, s.expires_upto, s.deadline_op,
                    time.monotonic())

    def _ttl_changed_since(self, key, since):
        with self.lock:
            return self._state(key).ttl_sent_at >= since

    def _lowest_since(self, key, floor, since):
        with self.lock:
            return min([floor] + [f for when, f in self._state(key).drops if when >= since])

    def check_version(self, key, snap, version, sent_at, **context):
        floor, floor_at, deadline, upto, deadline_op, taken = snap
        if version < floor:
            self._stale("version", key, version, floor, sent_at, floor_at, context)
        elif (deadline is not None and version <= upto and sent_at > deadline
              and not self._ttl_changed_since(key, taken)):
            context["expired_by"] = deadline_op
            self._stale("expired", key, version, "gone %.0f ms before" % (
                (sent_at - deadline) * 1000), sent_at, deadline, context)

    def check_counter(self, key, snap, value, sent_at, **context):
        floor, floor_at, taken = snap[0], snap[1], snap[5]
        floor = self._lowest_since(key, floor, taken)
        if value < floor:
            self._stale("counter", key, value, floor, sent_at, floor_at, context)

    def _stale(self, rule, key, got, expected, sent_at, since, context):
        record = dict(rule=rule, key=key, got=got, expected=expected,
                      sent_at=round(sent_at, 3),
                      late_ms=round((sent_at - since) * 1000, 1), **context)
        with self.lock:
            self.stale.append(record)
            self.window = max(self.window, sent_at - since)
