#!/usr/bin/env python3
"""Events (SPEC 2, 5): subscribe/unsubscribe counts, publish reaching its
subscribers, fan-out complete and in order, a slow consumer disconnected
without slowing the publisher or the others, EVENT frames only between
frames, roles and topic validation, `clients` topics, and ipcctl listen /
publish against the real daemon."""
import contextlib
import os
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import ipcdtest
from ipcdtest import Conn, Daemon, check, fail, frame, wait_for


configured = ipcdtest.configured


def ok(conn, line, want=None):
    f = conn.request(line)
    check(f.kind == "OK", "%r: %r" % (line[:60], f))
    if want is not None:
        check(f.payload == (want.encode() if isinstance(want, str) else want),
              "%r: got %r, want %r" % (line[:60], f.payload, want))
    return f.payload


def err(conn, line, code):
    f = conn.request(line)
    check(f.kind == "ERR" and f.word == code, "%r: wanted ERR %s, got %r" % (line[:60], code, f))
    return f.payload


def nothing_pending(conn):
    """No EVENT (or anything) is waiting: the next answer is the ping's."""
    check(conn.request("ping").payload == b"pong", "something came before the pong")


def subscribed(d, admin, topic, n):
    """Wait until n clients list `topic` in `clients`."""
    def count():
        lines = ok(admin, "clients").decode().splitlines()
        return sum(1 for l in lines if topic in l.split(" topics=", 1)[1].split(","))
    wait_for(lambda: count() == n, what="%d subscriber(s) of %s" % (n, topic))


# ---------------------------------------------------------------- basics


def test_subscribe_unsubscribe_counts():
    with Daemon() as d:
        c = d.connect()
        ok(c, "subscribe a b", "2")
        ok(c, "subscribe a c", "3")        # a is not counted twice
        ok(c, "subscribe a", "3")
        ok(c, "unsubscribe a", "2")
        ok(c, "unsubscribe nosuch", "2")
        ok(c, "unsubscribe b c", "0")
        ok(c, "subscribe x y z", "3")
        ok(c, "unsubscribe", "0")          # all of them
        err(c, "subscribe", "bad-request")
        # at most 256 topics, and a request past that changes nothing
        ok(c, "subscribe " + " ".join("t%d" % i for i in range(250)), "250")
        err(c, "subscribe " + " ".join("u%d" % i for i in range(10)), "bad-request")
        ok(c, "subscribe t0", "250")
        ok(c, "subscribe " + " ".join("u%d" % i for i in range(6)) + " u0", "256")
        c.close()


def test_subscribe_answer_precedes_its_events():
    """The OK of a subscribe is queued before any event it makes possible,
    even with a publisher racing it and more requests pipelined behind."""
    with Daemon() as d:
        pub = d.connect()
        stop = threading.Event()

        def publish():
            while not stop.is_set():
                pub.request("publish race x")
        t = threading.Thread(target=publish)
        t.start()
        try:
            for _ in range(200):
                c = d.connect()
                c.send("subscribe race\nping\n")
                f = c.read_frame()
                check(f.kind == "OK" and f.payload == b"1", "first frame: %r" % f)
                c.close()
        finally:
            stop.set()
            t.join(10)
        pub.close()


def test_publish_reaches_subscribers():
    with Daemon() as d:
        subs = [d.connect() for _ in range(3)]
        for s in subs:
            ok(s, "subscribe news", "1")
        other = d.connect()
        ok(other, "subscribe sport", "1")
        pub = d.connect()
        ok(pub, "publish news hello   big 'wide world'", "3")
        for s in subs:
            f = s.read_frame()
            check((f.kind, f.word, f.payload) == ("EVENT", "news", b"hello big wide world"),
                  "event: %r" % f)
        nothing_pending(other)
        # binary-safe payload
        ok(pub, 'publish news "a\\x00b\\n\\xff"', "3")
        for s in subs:
            check(s.read_frame_raw() == frame("EVENT", b"a\x00b\n\xff", "news"), "binary event")
        # an unsubscribed client gets nothing; the count follows
        ok(subs[0], "unsubscribe news", "0")
        ok(pub, "publish news second", "2")
        for s in subs[1:]:
            check(s.read_frame().payload == b"second", "second event")
        nothing_pending(subs[0])
        ok(pub, "publish nobody-listens x", "0")
        # a publisher subscribed to its own topic gets its event too
        ok(pub, "subscribe own", "1")
        pub.send("publish own me\n")
        frames = [pub.read_frame(), pub.read_frame()]
        check(sorted((f.kind, f.payload) for f in frames) == [("EVENT", b"me"), ("OK", b"1")],
              "own event: %r" % frames)
        st = d.stats()
        check(st["events_published"] == "5" and st["events_delivered"] == "9"
              and st["events_dropped"] == "0", "stats: %r" % st)
        for c in subs + [other, pub]:
            c.close()


def tasks(pid, name):
    """The threads of pid called `name` (ipcd names its client threads)."""
    found = set()
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                if f.read().strip() == name:
                    found.add(int(t))
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return found


def voluntary_switches(pid, tid):
    with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    fail("no voluntary_ctxt_switches for task %d" % tid)


def test_subscriber_reader_sleeps_through_deliveries():
    """A subscriber's reader thread is not woken by the events it is sent:
    a thread blocked in read() on a Unix socket is woken whenever the peer
    takes data (unix_write_space), once per event read; the reader waits
    in poll() for input only. 1,000 events, each read as it comes, may cost
    the reader a handful of wake-ups, not one each."""
    with Daemon() as d:
        sub = d.connect()
        ok(sub, "ping", "pong")
        # The only client now: its reader is the only one, once the reader
        # of the start-up probe has gone (it may even start after ours).
        # A listing of /proc/PID/task ends early when the thread it has
        # reached exits meanwhile, hiding the threads after it (ours, the
        # newer): the same single reader in two listings in a row.
        seen = []

        def one_reader():
            now = tasks(d.pid, "ipcd-reader")
            stable = len(now) == 1 and bool(seen) and seen[-1] == now
            seen.append(now)
            return stable
        wait_for(one_reader, what="the subscriber's reader thread alone")
        reader = next(iter(seen[-1]))
        ok(sub, "subscribe tick", "1")
        pub = d.connect()
        start = voluntary_switches(d.pid, reader)
        for i in range(1000):
            ok(pub, "publish tick %d" % i, "1")
            f = sub.read_frame()
            check(f.kind == "EVENT" and f.payload == str(i).encode(), "event %d: %r" % (i, f))
        woken = voluntary_switches(d.pid, reader) - start
        check(woken < 50, "the subscriber's reader slept and woke %d times over 1000 "
              "deliveries" % woken)
        print("# subscriber's reader: %d voluntary context switches over 1000 deliveries"
              % woken)
        sub.close()
        pub.close()


def test_roles_and_topics():
    with Daemon(tcp=True) as d:
        t = d.connect_tcp()
        for line, cmd in (("subscribe news", "subscribe"), ("publish news x", "publish"),
                          ("unsubscribe", "unsubscribe")):
            f = t.request(line)
            check(f.kind == "ERR" and f.word == "denied" and
                  f.payload == ("%s requires role user" % cmd).encode(),
                  "guest %s: %r" % (cmd, f))
        t.close()
        wait_for(lambda: "denied subscribe: requires role user, client has guest" in d.log(),
                 what="the denied subscribe in the log")

        c = d.connect()
        pub = d.connect()
        ok(c, "subscribe good", "1")
        bad = ['""', '"a!"', '"a b"', '"t*"', '"\\xc3\\xa9"', "x" * 256, '"a\\nb"', '"a,b"']
        for topic in bad:
            err(c, "subscribe " + topic, "bad-request")
            err(c, "subscribe ok2 " + topic, "bad-request")    # nothing of it is taken
            err(pub, "publish %s message" % topic, "bad-request")
        ok(c, "unsubscribe nothing", "1")                      # still only "good"
        longest = "y" * 255
        special = "A-z_0.9:/@+"
        ok(c, "subscribe %s %s" % (longest, special), "3")
        ok(pub, "publish %s m1" % longest, "1")
        ok(pub, "publish %s m2" % special, "1")
        check(c.read_frame_raw() == frame("EVENT", "m1", longest), "255-byte topic")
        check(c.read_frame_raw() == frame("EVENT", "m2", special), "special topic")
        err(pub, "publish onlytopic", "bad-request")
        nothing_pending(c)
        c.close()
        pub.close()


def test_clients_shows_topics():
    with Daemon() as d:
        a, b, admin = d.connect(), d.connect(), d.connect()
        ida = ok(a, "hello").decode().split("client: ")[1].split("\n")[0]
        idb = ok(b, "hello").decode().split("client: ")[1].split("\n")[0]
        ok(a, "subscribe alpha beta", "2")

        def line(cid):
            for l in ok(admin, "clients").decode().splitlines():
                if l.startswith("id=%s " % cid):
                    return l
            fail("client %s not in clients" % cid)
        check(line(ida).endswith(" topics=alpha,beta"), "clients: %r" % line(ida))
        check(line(idb).endswith(" topics="), "clients: %r" % line(idb))
        ok(a, "unsubscribe alpha", "1")
        check(line(ida).endswith(" topics=beta"), "after unsubscribe: %r" % line(ida))
        for c in (a, b, admin):
            c.close()


# ---------------------------------------------------------------- load


def test_fanout_100_subscribers_1000_events():
    n_subs, n_events = 100, 1000
    with Daemon() as d:
        subs = [d.connect(timeout=30) for _ in range(n_subs)]
        for s in subs:
            ok(s, "subscribe seq", "1")
        expected = b"".join(frame("EVENT", b"%06d" % i, "seq") for i in range(n_events))
        got = {s.sock.fileno(): bytearray(s.buf) for s in subs}
        sel = selectors.DefaultSelector()
        for s in subs:
            s.sock.setblocking(False)
            sel.register(s.sock, selectors.EVENT_READ)
        pub = d.connect(timeout=30)
        t0 = time.monotonic()
        pub.send(b"".join(b"publish seq %06d\n" % i for i in range(n_events)))
        deadline = t0 + 30
        pending = len(subs)
        while pending:
            if time.monotonic() > deadline:
                fail("after 30s only %d of %d subscribers have everything"
                     % (n_subs - pending, n_subs))
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(1 << 20)
                check(data, "a subscriber was disconnected")
                buf = got[key.fileobj.fileno()]
                buf += data
                if len(buf) >= len(expected):
                    sel.unregister(key.fileobj)
                    pending -= 1
        took = time.monotonic() - t0
        answers = [pub.read_frame() for _ in range(n_events)]
        check(all(f.kind == "OK" and f.payload == b"%d" % n_subs for f in answers),
              "each publish reaches %d: %r" % (n_subs, [f for f in answers if f.payload != b"100"][:3]))
        for fd, buf in got.items():
            check(bytes(buf) == expected, "a subscriber's stream differs from the %d events in "
                  "order (%d bytes, want %d)" % (n_events, len(buf), len(expected)))
        st = d.stats()
        check(st["events_published"] == str(n_events)
              and st["events_delivered"] == str(n_events * n_subs)
              and st["events_dropped"] == "0", "stats: %r" % st)
        print("# %d events to %d subscribers in %.2fs" % (n_events, n_subs, took))
        sel.close()
        for s in subs + [pub]:
            s.close()


def test_held_back_publishes_fanned_out_within_the_queue_limit():
    """A publisher's backlog, read in one go (a batch that published reads
    on while more is there), is fanned out in batches well under
    QueueLimitBytes=: a subscriber that reads is not counted as slow, and
    gets every event once, in order, with every publish answered."""
    limit, n, size = 65536, 800, 96

    def payload(i):
        return b"%06d:" % i + b"p" * (size - 7)

    with Daemon("--queue-limit", "64K") as d:
        admin = d.connect()
        sub = d.connect(timeout=30)
        ok(sub, "subscribe burst", "1")
        subscribed(d, admin, "burst", 1)
        got = []

        def read_events():
            try:
                for i in range(n):
                    got.append(sub.read_frame())
            except (OSError, EOFError, ValueError) as e:
                got.append(e)
        reader = threading.Thread(target=read_events, daemon=True)
        reader.start()

        pub = d.connect(timeout=30)
        # Hold the publisher's reader back: answers it is owed and does not
        # read, past its own queue limit (the socket's buffer first), and
        # not so many that the requests left unread fill our socket.
        wmem = int(open("/proc/sys/net/core/wmem_default").read())
        echo = b"e" * 8000
        n_echo = (wmem + limit) // len(echo) + 4
        pub.send(b"".join(b"echo %s\n" % echo for _ in range(n_echo)))

        def pub_queued():
            for line in ok(admin, "clients").decode().splitlines():
                m = re.search(r" queued=(\d+)", line)
                if m and int(m.group(1)) > limit:
                    return True
            return False
        wait_for(pub_queued, what="the publisher's answers queued past its limit")
        # The publishes wait in the socket, then are read all at once:
        # without a bound, one batch of ~88 KiB would be queued for the
        # subscriber before its write.
        pub.send(b"".join(b"publish burst %s\n" % payload(i) for i in range(n)))
        for _ in range(n_echo):
            f = pub.read_frame()
            check(f.kind == "OK" and f.payload == echo, "echo: %r" % (f,))
        answers = [pub.read_frame() for _ in range(n)]
        check(all(f.kind == "OK" and f.payload == b"1" for f in answers),
              "publish answers: %r" % [f for f in answers if f.payload != b"1"][:3])
        reader.join(30)
        check(not reader.is_alive(), "the subscriber has %d of %d events" % (len(got), n))
        bad = [(i, f) for i, f in enumerate(got)
               if not (isinstance(f, ipcdtest.Frame) and f.kind == "EVENT"
                       and f.payload == payload(i))]
        check(not bad, "event %r" % (bad[:1],))
        st = d.stats()
        check(st["slow_consumer_disconnects"] == "0" and st["events_dropped"] == "0"
              and st["events_delivered"] == str(n), "stats: %r" % st)
        for c in (admin, sub, pub):
            c.close()


class Reader(threading.Thread):
    """Reads n `big` events on conn, checking each byte-exactly, and counts them."""

    def __init__(self, conn, n, event):
        super().__init__(daemon=True)
        self.conn, self.n, self.event = conn, n, event
        self.got = 0
        self.error = None
        self.cond = threading.Condition()

    def run(self):
        try:
            for i in range(self.n):
                want = frame("EVENT", self.event(i), "big")
                data = self.conn.read_exact(len(want))
                if data != want:
                    raise ValueError("event %d: %r" % (i, data[:40]))
                with self.cond:
                    self.got = i + 1
                    self.cond.notify_all()
        except Exception as e:
            with self.cond:
                self.error = repr(e)
                self.cond.notify_all()

    def wait(self, n, timeout=10):
        with self.cond:
            if not self.cond.wait_for(lambda: self.got >= n or self.error, timeout):
                fail("the healthy subscriber has %d of %d events after %ss" % (self.got, n, timeout))
            check(not self.error, "the healthy subscriber: %s" % self.error)


def test_slow_consumer_disconnected_others_unaffected():
    """A subscriber that never reads is disconnected once its queue is full;
    the publisher's rate and another subscriber's delivery do not change.

    The publisher keeps at most `window` events ahead of the healthy
    subscriber, so that only the stuck one can overflow, whatever the
    scheduler does. ipcd counts a batch as queued until its writev() has
    returned, so bytes the client already read may briefly count too: twice
    the window must stay under the limit."""
    size, window = 4096, 4
    # enough to fill the kernel's socket buffers and then the 64K queue, many times
    wmem = int(open("/proc/sys/net/core/wmem_default").read())
    n = max(400, min(4000, 4 * (wmem + 65536) // size))

    def event(i):
        return b"%06d:" % i + b"x" * size

    with Daemon("--queue-limit", "64K") as d:
        def phase(stuck):
            """Publish n events lock-step; returns (seconds, answers, stuck Conn)."""
            admin = d.connect()
            healthy = d.connect(timeout=20)
            ok(healthy, "subscribe big", "1")
            slow = None
            if stuck:
                slow = d.connect()
                ok(slow, "subscribe big", "1")       # and never read again
            subscribed(d, admin, "big", 2 if stuck else 1)
            reader = Reader(healthy, n, event)
            reader.start()
            pub = d.connect(timeout=20)
            answers = []
            t0 = time.monotonic()
            for i in range(n):
                reader.wait(i - window)
                f = pub.request(b"publish big " + event(i))
                check(f.kind == "OK", "publish %d: %r" % (i, f))
                answers.append(int(f.payload))
            took = time.monotonic() - t0
            reader.wait(n)     # all n, complete and in order
            reader.join(10)
            for c in (admin, healthy, pub):
                c.close()
            return took, answers, slow

        base, answers, _ = phase(False)
        check(answers == [1] * n, "baseline answers: %r" % set(answers))
        with_stuck, answers, slow = phase(True)
        k = answers.count(2)
        print("# %d events of %d bytes: %.2fs alone, %.2fs with a stuck subscriber "
              "(disconnected after %d)" % (n, size, base, with_stuck, k))
        check(0 < k < n and answers == [2] * k + [1] * (n - k),
              "publish answers (2 while the stuck one is subscribed, then 1): %d twos of %d, "
              "then %r" % (k, n, answers[k:k + 5]))
        check(with_stuck <= 3 * base + 1.0,
              "the publisher slowed down: %.2fs with a stuck subscriber, %.2fs without"
              % (with_stuck, base))
        st = d.stats()
        check(st["slow_consumer_disconnects"] == "1", "stats: %r" % st)
        check(int(st["events_dropped"]) >= 1, "stats: %r" % st)
        check(int(st["events_delivered"]) == 2 * n + k, "delivered: %r" % st)
        wait_for(lambda: re.search(r"client \d+: disconnected as a slow consumer", d.log()),
                 what="the slow consumer log line")
        # The stuck client, once it reads, finds only whole frames: the events
        # that were in flight, in order, then ERR slow-consumer, then EOF.
        slow.sock.settimeout(15)
        frames = []
        while True:
            try:
                frames.append(slow.read_frame())
            except EOFError:
                break
        check(frames and frames[-1].kind == "ERR" and frames[-1].word == "slow-consumer",
              "last frame before the close: %r" % (frames[-1:],))
        seqs = [int(f.payload[:6]) for f in frames[:-1]]
        check(all(f.kind == "EVENT" and f.word == "big" and f.payload == event(int(f.payload[:6]))
                  for f in frames[:-1]), "a torn or foreign frame before the close")
        check(seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "events out of order")
        check(slow.buf == b"", "bytes after the last frame: %r" % slow.buf[:80])
        slow.close()


def test_events_only_between_frames():
    """A subscriber that also runs commands with large answers, streamed
    command output included, while events flow: every frame parses strictly,
    answers are byte-exact, events complete and in order."""
    n_events = 3000
    conf = "[Command seq]\nExec=/usr/bin/seq 1 40000\nRole=user\n"
    seq_out = b"".join(b"%d\n" % i for i in range(1, 40001))
    with configured(conf) as d:
        s = d.connect(timeout=20)
        ok(s, "subscribe tick", "1")
        done = threading.Event()
        errors = []

        def publisher():
            p = d.connect(timeout=20)
            try:
                batch = 50
                for i in range(0, n_events, batch):
                    p.send(b"".join(b"publish tick ev-%06d\n" % j for j in range(i, i + batch)))
                    for _ in range(batch):
                        f = p.read_frame()
                        if f.kind != "OK" or f.payload != b"1":
                            errors.append(repr(f))
            except Exception as e:
                errors.append(repr(e))
            finally:
                done.set()
                p.close()
        th = threading.Thread(target=publisher)
        th.start()
        events = []
        mid_stream = 0

        def next_answer():
            """Frames up to the next final one; EVENTs set aside. Returns (MOREs, final)."""
            nonlocal mid_stream
            more = []
            while True:
                f = s.read_frame()      # raises on anything malformed
                if f.kind == "EVENT":
                    check(f.word == "tick" and re.match(rb"^ev-\d{6}$", f.payload),
                          "an event mangled: %r" % f)
                    events.append(int(f.payload[3:]))
                    if more:
                        mid_stream += 1
                elif f.kind == "MORE":
                    more.append(f.payload)
                else:
                    return more, f
        try:
            rounds = 0
            deadline = time.monotonic() + 30
            while (not done.is_set() or rounds < 3) and time.monotonic() < deadline:
                big = b"%04d" % rounds + bytes(b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36]
                                               for i in range(60000))
                s.send(b"echo " + big + b"\nseq\necho small\n")
                more, f = next_answer()
                check(not more and f.kind == "OK" and f.payload == big, "echo (big) answer")
                more, f = next_answer()
                check(f.kind == "OK" and b"".join(more) == seq_out,
                      "seq output (%d bytes in %d MORE frames)" % (len(b"".join(more)), len(more)))
                more, f = next_answer()
                check(not more and f.kind == "OK" and f.payload == b"small", "echo small")
                rounds += 1
        finally:
            th.join(30)
        check(not errors, "publisher: %r" % errors[:3])
        s.send("ping\n")
        more, f = next_answer()
        check(f.payload == b"pong", "ping: %r" % f)
        check(events == list(range(n_events)), "events incomplete or out of order: %d of %d"
              % (len(events), n_events))
        print("# %d rounds of commands, %d events, %d of them between a command's MORE frames"
              % (rounds, len(events), mid_stream))
        s.close()


# ---------------------------------------------------------------- ipcctl


def test_ipcctl_listen_and_publish():
    conf = "[Token deploy]\nSecretFile=@DIR@/tok\nRole=user\n"
    with configured(conf, tcp=True, files={"tok": ("tok-123-long-enough-secret\n", 0o600)}) as d:
        admin = d.connect()
        listener = ipcdtest.own(subprocess.Popen(
            [ipcdtest.IPCCTL, "-s", d.path, "listen", "news", "--count", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        subscribed(d, admin, "news", 1)

        def ipcctl(*args):
            return subprocess.run([ipcdtest.IPCCTL] + list(args), capture_output=True,
                                  timeout=30)
        r = ipcctl("-s", d.path, "publish", "news", "hello world")
        check(r.returncode == 0 and r.stdout == b"1\n", "publish: %r" % (r,))
        r = ipcctl("-s", d.path, "publish", "news", "it's $(not) a \"shell\"")
        check(r.returncode == 0 and r.stdout == b"1\n", "publish: %r" % (r,))
        tok = os.path.join(d.confdir, "tok")
        r = ipcctl("-H", "127.0.0.1:%d" % d.port, "--token-file", tok, "publish", "news", "tcp")
        check(r.returncode == 0 and r.stdout == b"1\n", "publish over TCP with a token: %r" % (r,))
        try:
            out, errout = listener.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            fail("ipcctl listen --count 3 did not end")
        check(listener.returncode == 0, "listen: exit %d %r" % (listener.returncode, errout))
        check(out == b"hello world\nit's $(not) a \"shell\"\ntcp\n", "listen printed %r" % out)

        r = ipcctl("-s", d.path, "publish", "news", "no one")
        check(r.returncode == 0 and r.stdout == b"0\n", "publish, nobody listening: %r" % (r,))
        # a guest may do neither
        r = ipcctl("-H", "127.0.0.1:%d" % d.port, "publish", "news", "x")
        check(r.returncode == 1 and b"denied" in r.stderr, "guest publish: %r" % (r,))
        r = ipcctl("-H", "127.0.0.1:%d" % d.port, "listen", "news", "--count", "1")
        check(r.returncode == 1 and b"denied" in r.stderr, "guest listen: %r" % (r,))
        admin.close()


def test_ipcctl_monitor():
    """ipcctl monitor: another client's command within 100 ms, who ran it,
    its arguments, result and duration; one JSON object each with --json."""
    import json
    with Daemon() as d:
        for mode in ([], ["--json"]):
            mon = ipcdtest.own(subprocess.Popen(
                [ipcdtest.IPCCTL, "-s", d.path] + mode + ["monitor", "--count", "2"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            admin = d.connect()
            wait_for(lambda: "ipcd.monitor" in admin.request("clients").payload.decode(),
                     what="the monitor to subscribe")
            other = d.connect()
            t0 = time.monotonic()
            check(other.request("ping").kind == "OK", "ping")
            line = mon.stdout.readline().decode()
            took = time.monotonic() - t0
            # the admin's `clients` polls came first, or the ping: find the ping
            while "ping" not in line:
                line = mon.stdout.readline().decode()
                took = time.monotonic() - t0
            check(took < 0.1 or mode, "the ping was shown after %.0f ms" % (took * 1000))
            if mode:
                e = json.loads(line)
                check(e["command"] == "ping" and e["result"] == "ok"
                      and isinstance(e["duration_usec"], int) and e["role"] == "admin",
                      "monitor --json: %r" % e)
            else:
                check(re.match(r"client=\d+ transport=unix peer=pid=\d+ uid=0 gid=\d+ "
                               r"role=admin command=ping args= result=ok duration_usec=\d+$",
                               line.strip()), "monitor: %r" % line)
            other.request("echo one two")
            out, err = mon.communicate(timeout=10)
            check(mon.returncode == 0, "monitor exit %d: %r" % (mon.returncode, err))
            admin.close()
            other.close()


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_subscribe_unsubscribe_counts,
        test_subscribe_answer_precedes_its_events,
        test_publish_reaches_subscribers,
        test_subscriber_reader_sleeps_through_deliveries,
        test_roles_and_topics,
        test_clients_shows_topics,
        test_fanout_100_subscribers_1000_events,
        test_held_back_publishes_fanned_out_within_the_queue_limit,
        test_slow_consumer_disconnected_others_unaffected,
        test_events_only_between_frames,
        test_ipcctl_listen_and_publish,
        test_ipcctl_monitor,
    ])
