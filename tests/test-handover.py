#!/usr/bin/env python3
"""Sessions across a restart, as ipcd speaks it with systemd's fd store
(handover.c), in every build variant: TSan and ASan see the drain that
keeps the sessions and the start that takes them back.

The test plays the service manager's part of the protocol and nothing
more: it owns the listening sockets (as ipcd.socket does) and passes them
with LISTEN_FDS/LISTEN_FDNAMES; its NOTIFY_SOCKET keeps what ipcd stores
(FDSTORE=1 with FDNAME=), drops what it removes (FDSTOREREMOVE=1), answers
BARRIER=1 by closing the fd that came with it, and hands the store to the
next ipcd beside the listeners. tests/system/test-systemd.py checks the same
under a real systemd as PID 1 (test_restart_keeps_sessions).
"""
import array
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading

import ipcdtest
from ipcdtest import Conn, check, fail, wait_for

TOKEN = "ho-7a1c-handover-token"


class FdStore:
    """NOTIFY_SOCKET with an fd store, on a thread of its own (ipcd waits for
    BARRIER=1 to be answered)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.lock = threading.Lock()
        self.fds = []          # [(name, fd)], in the order stored
        self.messages = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 300)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)
            with self.lock:
                self.messages.append(data.decode())
                if fields.get("BARRIER") == "1":
                    for fd in fds:
                        os.close(fd)  # the barrier is answered by closing it
                elif fields.get("FDSTORE") == "1":
                    self.fds += [(fields.get("FDNAME", "stored"), fd) for fd in fds]
                elif fields.get("FDSTOREREMOVE") == "1":
                    keep = []
                    for name, fd in self.fds:
                        if name == fields.get("FDNAME"):
                            os.close(fd)
                        else:
                            keep.append((name, fd))
                    self.fds = keep
                else:
                    for fd in fds:
                        os.close(fd)

    def has(self, text):
        with self.lock:
            return any(text in m for m in self.messages)

    def stored(self):
        """What the store holds; like systemd, it closes a stored fd that
        reports POLLHUP or POLLERR."""
        with self.lock:
            keep = []
            for name, fd in self.fds:
                p = select.poll()
                p.register(fd, 0)
                if p.poll(0):
                    os.close(fd)
                else:
                    keep.append((name, fd))
            self.fds = keep
            return list(self.fds)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        for _, fd in self.fds:
            os.close(fd)


class Manager:
    """The listeners, the fd store, and one ipcd at a time."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ipcd-handover-")
        self.path = os.path.join(self.dir, "ipcd.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.path)
        self.unix.listen(4096)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(4096)
        self.port = self.tcp.getsockname()[1]
        self.store = FdStore(self.dir)
        with open(os.path.join(self.dir, "token"), "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(os.path.join(self.dir, "token"), 0o600)
        self.conf = os.path.join(self.dir, "ipcd.conf")
        with open(self.conf, "w") as f:
            f.write("[Token t]\nSecretFile=%s/token\nRole=user\n" % self.dir)
        self.proc = None
        self.n = 0

    def start(self):
        """ipcd with the listeners and whatever the store holds, as systemd
        passes them: fds from 3 on, their names in LISTEN_FDNAMES."""
        passed = [("ipcd", self.unix.fileno()), ("ipcd", self.tcp.fileno())] + self.store.stored()
        high = [(name, fcntl_dupfd(fd, 100 + i)) for i, (name, fd) in enumerate(passed)]

        def place():
            for i, (_, fd) in enumerate(high):
                os.dup2(fd, 3 + i)
        self.n += 1
        self.err_path = os.path.join(self.dir, "stderr.%d" % self.n)
        env = ipcdtest.sanitizer_env_into(self.dir, ipcdtest.clean_env({
            "LISTEN_FDS": str(len(passed)),
            "LISTEN_FDNAMES": ":".join(name for name, _ in passed),
            "NOTIFY_SOCKET": self.store.path, "FDSTORE": "20000"}))
        with open(self.err_path, "wb") as err:
            self.proc = ipcdtest.own(subprocess.Popen(
                ["bash", "-c", 'LISTEN_PID=$$ exec "$@"', "bash", ipcdtest.IPCD, "-c", self.conf],
                env=env, stdin=subprocess.DEVNULL, stderr=err, preexec_fn=place,
                pass_fds=tuple(range(3, 3 + len(passed)))))
        for _, fd in high:
            os.close(fd)
        wait_for(lambda: self.store.has("READY=1") and self.ready_count() >= self.n,
                 what="ipcd #%d to be ready" % self.n)

    def ready_count(self):
        with self.store.lock:
            return sum(1 for m in self.store.messages if "READY=1" in m)

    def log(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def restart(self):
        """SIGTERM, wait for the exit, start the next one with the store."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            fail("ipcd did not exit after SIGTERM: " + self.log())
        check(rc == 0, "ipcd exited with %d: %s" % (rc, self.log()))
        self.start()

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.store.close()
        self.unix.close()
        self.tcp.close()
        reports = ipcdtest.sanitizer_reports_in(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        check(not reports, "sanitizer reports:\n" + reports)


def fcntl_dupfd(fd, at_least):
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, at_least)


def bytes_in(m):
    c = Conn(m.path)
    kv = dict(ipcdtest.parse_kv(c.request("stats").payload))
    c.close()
    return int(kv["bytes_in"])


def client_id(c):
    f = c.request("hello")
    return int([l for l in f.payload.decode().splitlines() if l.startswith("client: ")][0].split()[1])


def test_sessions_survive_restarts():
    m = Manager()
    try:
        m.start()
        subs = [Conn(m.path) for _ in range(20)]
        for i, c in enumerate(subs):
            check(c.request("subscribe news t%d" % i).payload == b"2", "subscribe")
        ids = [client_id(c) for c in subs]
        half = Conn(m.path)
        half_id = client_id(half)
        half.send("echo half")  # a request line cut in two by the restart
        tcp = Conn(("127.0.0.1", m.port))
        check(tcp.request("auth " + TOKEN).payload == b"role: user\n", "auth")
        tcp_id = client_id(tcp)
        pub = Conn(m.path)
        expected = []
        for r in range(3):
            # publish while another client publishes too: both go on across
            # the restart; every subscriber gets every event, in order
            for k in range(5):
                word = "r%d-%d" % (r, k)
                check(pub.request("publish news " + word).payload == b"20", "publish " + word)
                expected.append(word)
            m.restart()
            check(m.store.has("FDSTOREREMOVE=1"), "the new ipcd did not empty the store")
            check(all(name == "ipcd" for name, _ in m.store.stored()) or not m.store.stored(),
                  "the store still holds sessions: %s" % m.store.stored())
            check("Restored 23 client session(s)" in m.log(), "restore log: " + m.log())
        check(pub.request("publish news last").payload == b"20", "publish after the restarts")
        expected.append("last")
        for i, c in enumerate(subs):
            got = []
            while len(got) < len(expected):
                f = c.read_frame()
                check(f.kind == "EVENT", "subscriber %d: %r" % (i, f))
                got.append(f.payload.decode())
            check(got == expected, "subscriber %d got %s" % (i, got))
            check(client_id(c) == ids[i], "subscriber %d changed id" % i)
        half.send(" and whole\n")
        f = half.read_frame()
        check(f.kind == "OK" and f.payload == b"half and whole", "the partial line: %r" % f)
        check(client_id(half) == half_id, "id of the partial-line client")
        check(client_id(tcp) == tcp_id, "id of the TCP client")
        f = tcp.request("stats")
        check(f.kind == "OK", "the TCP client lost the role auth gave it: %r" % f)
        listing = Conn(m.path).request("clients").payload.decode()
        check(("id=%d " % ids[3]) in listing and "topics=news,t3" in listing,
              "subscriptions in `clients`: %s" % listing)
        # a new client after three restarts gets an id past every kept one
        check(client_id(Conn(m.path)) > max(ids + [half_id, tcp_id]), "ids reused")
    finally:
        m.close()


def test_events_during_restarts_arrive_once_in_order():
    """A publisher that never stops and subscribers that never reconnect:
    across restarts every event arrives at every subscriber exactly once, in
    order; the drain runs while the publisher's reader publishes."""
    m = Manager()
    try:
        m.start()
        subs = [Conn(m.path) for _ in range(5)]
        for c in subs:
            check(c.request("subscribe n").kind == "OK", "subscribe")
        pub = Conn(m.path)
        state = {"n": 0, "error": None}
        stop = threading.Event()

        def publish():
            try:
                while not stop.is_set():
                    # pipelined: several requests in the socket at SIGTERM
                    pub.send("".join("publish n %d\n" % (state["n"] + k) for k in range(4)))
                    for _ in range(4):
                        f = pub.read_frame()
                        if f.kind != "OK":
                            raise AssertionError("publish: %r" % f)
                    state["n"] += 4
            except Exception as e:  # noqa: BLE001 - reported below
                state["error"] = repr(e)
        got = [[] for _ in subs]

        def listen(i):
            # a subscriber reads as events come (one that does not is a slow
            # consumer, and keeps the drain waiting up to DrainTimeoutSec)
            try:
                while True:
                    f = subs[i].read_frame()
                    if f.kind != "EVENT" or f.payload == b"end":
                        return
                    got[i].append(int(f.payload))
            except Exception as e:  # noqa: BLE001 - reported below
                got[i].append(repr(e))
        threads = [threading.Thread(target=publish, daemon=True)] + \
            [threading.Thread(target=listen, args=(i,), daemon=True) for i in range(len(subs))]
        for t in threads:
            t.start()
        for _ in range(3):
            n0 = state["n"]
            wait_for(lambda: state["n"] >= n0 + 40 or state["error"], what="publishes to flow")
            m.restart()
        stop.set()
        threads[0].join(30)
        check(state["error"] is None, "the publisher: %s" % state["error"])
        check(pub.request("publish n end").kind == "OK", "the last publish")
        for t in threads[1:]:
            t.join(30)
        for i in range(len(subs)):
            check(got[i] == list(range(state["n"])), "subscriber %d: not every event once, in "
                  "order (%d events; got %d, last %s)" % (i, state["n"], len(got[i]),
                                                          got[i][-3:]))
    finally:
        m.close()


def test_maximal_partial_lines_survive():
    """The attacker's restart: clients that each hold a request line of
    MaxLineBytes minus one, unfinished, when the daemon restarts. Each line
    comes through whole (hex in the state, bounded by MaxClients x
    MaxLineBytes), and each client gets its answer once it ends the line."""
    m = Manager()
    try:
        m.start()
        body = "x" * (65536 - len("echo ") - 1)
        conns = [Conn(m.path) for _ in range(8)]
        for i, c in enumerate(conns):
            c.send("echo %d%s" % (i, body[len(str(i)):]))
        # read by the daemon (not left in the sockets): the state must carry them
        wait_for(lambda: bytes_in(m) >= 8 * (len(body) + 5), what="the lines to be read")
        m.restart()
        for i, c in enumerate(conns):
            c.send("\n")
            f = c.read_frame()
            check(f.kind == "OK" and f.payload == ("%d%s" % (i, body[len(str(i)):])).encode(),
                  "client %d: the line did not come through whole: %s %d bytes"
                  % (i, f.kind, len(f.payload)))
    finally:
        m.close()


def test_unknown_state_version_is_refused():
    """A state of a version this ipcd does not know: nothing is guessed, the
    stored clients see their connection end, the daemon serves on."""
    m = Manager()
    try:
        m.start()
        c = Conn(m.path)
        check(c.request("subscribe news").kind == "OK", "subscribe")
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(30)
        # the stored state, replaced by one from a future ipcd
        stored = m.store.stored()
        names = [n for n, _ in stored]
        check("ipcd-handover" in names and "ipcd-clients" in names,
              "nothing stored: %s" % names)
        fd = os.memfd_create("ipcd-handover")
        os.write(fd, b"ipcd-handover 99\nsomething new\n")
        with m.store.lock:
            m.store.fds = [(n, f) for n, f in m.store.fds if n != "ipcd-handover"] + \
                [("ipcd-handover", fd)]
        for n, f in stored:
            if n == "ipcd-handover":
                os.close(f)
        m.start()
        check("version '99'" in m.log(), "refusal not logged: " + m.log())
        wait_for(c.at_eof, what="the stored client to be closed")
        check(Conn(m.path).request("ping").payload == b"pong", "serving after the refusal")
    finally:
        m.close()


def test_version_1_store_is_read():
    """A store written by version 1 (each client socket stored on its own as
    ipcd-client): a newer ipcd takes those sessions back too."""
    m = Manager()
    try:
        m.start()
        a, b = Conn(m.path), Conn(m.path)
        check(a.request("subscribe news").kind == "OK", "subscribe")
        ids = (client_id(a), client_id(b))
        m.proc.send_signal(signal.SIGTERM)
        m.proc.wait(30)
        with m.store.lock:
            old = m.store.fds
            state = dict(old)["ipcd-handover"]
            text = os.pread(state, 1 << 20, 0)
            check(text.startswith(b"ipcd-handover 2\n"), "state header: %r" % text[:40])
            ends = [fd for name, fd in old if name == "ipcd-clients"]
            check(len(ends) == 2, "the carrier's ends: %s" % old)
            sockets = []
            for end in ends:
                carrier = socket.socket(fileno=os.dup(end))
                carrier.setblocking(False)  # (recv_fds ignores its flags)
                while True:
                    try:
                        _, fds, _, _ = socket.recv_fds(carrier, 1, 253)
                    except BlockingIOError:
                        break
                    if not fds:
                        break
                    sockets += fds
                carrier.close()
            check(len(sockets) == 2, "%d sockets in the carrier" % len(sockets))
            v1 = os.memfd_create("ipcd-handover")
            os.write(v1, b"ipcd-handover 1\n" + text.split(b"\n", 1)[1])
            for _, fd in old:
                os.close(fd)
            m.store.fds = [("ipcd-handover", v1)] + [("ipcd-client", fd) for fd in sockets]
        m.start()
        check("Restored 2 client session(s)" in m.log(), "not restored: " + m.log())
        check((client_id(a), client_id(b)) == ids, "ids changed")
        p = Conn(m.path)
        check(p.request("publish news kept").kind == "OK", "publish")
        f = a.read_frame()
        check(f.kind == "EVENT" and f.payload == b"kept", "event after restore: %r" % (f,))
    finally:
        m.close()


def test_queued_events_go_out_before_the_handover():
    """A subscriber that has fallen behind when the restart comes: what ipcd
    had queued for it goes out before its socket is handed over (the drain
    waits for that sender, not for every idle one), and nothing is lost or
    repeated. The clients are listed in the same order after the restart."""
    m = Manager()
    try:
        m.start()
        others = [Conn(m.path) for _ in range(5)]
        for c in others:
            check(c.request("subscribe elsewhere").kind == "OK", "subscribe elsewhere")
        sub = Conn(m.path, timeout=30)
        check(sub.request("subscribe bulk").kind == "OK", "subscribe")
        pub = Conn(m.path)
        body = "x" * 4000
        n = 300  # 1.2 MB: more than the socket holds, the rest in the outbox
        pub.send("".join("publish bulk %d %s\n" % (i, body) for i in range(n)))
        for i in range(n):
            f = pub.read_frame()
            check(f.kind == "OK" and f.payload == b"1", "publish %d: %r" % (i, f))
        before = Conn(m.path)  # stays: a closed one might be kept or not
        order = [l.split()[0] for l in before.request("clients").payload.decode().splitlines()]
        got = []

        def drain():
            while len(got) < n + 1:
                f = sub.read_frame()
                got.append(f.payload.decode().split()[0] if f.kind == "EVENT" else repr(f))
        m.proc.send_signal(signal.SIGTERM)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()  # the subscriber catches up only once the drain has begun
        try:
            check(m.proc.wait(30) == 0, "ipcd did not exit cleanly: " + m.log())
        except subprocess.TimeoutExpired:
            fail("ipcd did not exit after SIGTERM: " + m.log())
        m.start()
        check("Restored 8 client session(s)" in m.log(), "restore log: " + m.log())
        check(pub.request("publish bulk last").payload == b"1", "publish after the restart")
        reader.join(30)
        check(got == [str(i) for i in range(n)] + ["last"],
              "the subscriber got %d of %d events, in order: %s; last %s"
              % (len(got), n + 1, got[:len(got)] == [str(i) for i in range(len(got))][:len(got)],
                 got[-3:]))
        after = Conn(m.path)
        listed = [l.split()[0] for l in after.request("clients").payload.decode().splitlines()]
        check([x for x in listed if x in order] == order,
              "the clients are listed in another order after the restart:\n%s\n%s"
              % (order, listed))
    finally:
        m.close()


def test_stop_without_store_is_a_stop():
    """Without an fd store (FDSTORE unset) SIGTERM answers and closes, as ever."""
    with ipcdtest.Daemon() as d:
        c = d.connect()
        c.send("ping\n")
        check(c.read_frame().payload == b"pong", "ping")
        os.kill(d.pid, signal.SIGTERM)
        wait_for(c.at_eof, what="the client to see the end")


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_sessions_survive_restarts,
        test_events_during_restarts_arrive_once_in_order,
        test_maximal_partial_lines_survive,
        test_unknown_state_version_is_refused,
        test_version_1_store_is_read,
        test_queued_events_go_out_before_the_handover,
        test_stop_without_store_is_a_stop,
    ])
