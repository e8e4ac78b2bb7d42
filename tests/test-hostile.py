#!/usr/bin/env python3
"""Hostile clients: what one unprivileged local user or one TCP guest can do
to everyone else, each attack bounded in count and time. Every test here
failed on the daemon before the fixes it names (issue 10's table):

 1 admin paths (reload by command and SIGHUP, clients, stats) racing
   accepts, commands, subscribe/unsubscribe and publishes  (run under TSan)
 2 pipelined requests, SIGTERM, a client that keeps sending: every request
   read is answered, over TCP (no reset) and Unix
 3 a client that never reads: dropped at ClientSendTimeoutSec=
 4 tricklers (slowloris): dropped at RequestTimeoutSec=, slots free again
 5 20,000 refused requests: a bounded number of log lines
 6 wrong tokens from many connections: a right token still works
 7 maximal subscribe/publish lines: others' ping p99 stays under 50 ms
 8 (test-limits.py: out of threads, answers already made still arrive)
 9 a configured command's background child: gone when the command ends;
   the timeout holds whatever the output rate
10 more topics than a client may hold: none added (all or nothing)
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import ipcdtest
from ipcdtest import Conn, check, configured, Daemon, fail, median, wait_for

PONG = b"OK 4\npong\n"


def count_frames(data):
    """Complete frames at the start of data, and the bytes they take."""
    n, pos = 0, 0
    while True:
        lf = data.find(b"\n", pos)
        if lf < 0:
            return n, pos
        parts = data[pos:lf].split(b" ")
        size = int(parts[-1])
        end = lf + 1 + size + 1
        if end > len(data):
            return n, pos
        n += 1
        pos = end


def commands_logged(d):
    """Commands per connection, from the daemon's disconnect entries."""
    return {int(m.group(1)): int(m.group(2)) for m in re.finditer(
        r"client (\d+): disconnected after (\d+) command", d.log())}


# ------------------------------------------------------------------ 1
def test_admin_paths_race_clients():
    """Every admin path at once with accepts, commands and events: a data
    race here is a TSan report, which fails the run."""
    conf = "[Daemon]\nLogLevel=notice\n"
    with configured(conf, tcp=True) as d:
        stop = threading.Event()
        errors = []

        def loop(fn):
            def run():
                try:
                    while not stop.is_set():
                        fn()
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append("%s: %r" % (fn.__name__, e))
            t = threading.Thread(target=run, daemon=True)
            t.start()
            return t

        admin, looker, sub = d.connect(), d.connect(), d.connect()

        def reload_cmd():
            f = admin.request("reload")
            check(f.kind == "OK", "reload: %r" % f)

        def sighup():
            os.kill(d.pid, signal.SIGHUP)
            time.sleep(0.005)

        def clients_and_stats():
            check(looker.request("clients").kind == "OK", "clients")
            check(looker.request("stats").kind == "OK", "stats")

        def connect_ping():
            c = d.connect() if int(time.monotonic() * 1000) % 2 else d.connect_tcp()
            check(c.request("ping").payload == b"pong", "ping")
            c.close()

        def answer(line):
            f = sub.request(line)
            while f.kind == "EVENT":  # events may come before the answer
                f = sub.read_frame()
            check(f.kind == "OK", "%s: %r" % (line, f))

        def sub_unsub():
            answer("subscribe race other")
            answer("unsubscribe race")
            answer("unsubscribe")

        pub = d.connect()

        def publish():
            check(pub.request("publish race hello").kind == "OK", "publish")

        threads = [loop(f) for f in (reload_cmd, sighup, clients_and_stats, connect_ping,
                                     sub_unsub, publish)]
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(20)
        check(not errors, "errors: %s" % errors[:5])
        check(d.alive(), "ipcd died")
        check(admin.request("ping").payload == b"pong", "still serving")


# ------------------------------------------------------------------ 2
def pipeline_sigterm(d, conn, n_requests):
    """Send n pings as fast as the socket takes them (and keep sending
    after SIGTERM); read every answer until EOF. Returns (answers, reset)."""
    chunk = b"ping\n" * 2000
    got = bytearray()
    state = {"reset": False, "sent": 0, "eof": False}

    def sender():
        try:
            while state["sent"] < n_requests * 5:
                conn.sock.sendall(chunk)
                state["sent"] += len(chunk)
            # a pipelining client keeps sending until it sees the end
            while not state["eof"]:
                conn.sock.sendall(b"ping\n" * 100)
                time.sleep(0.001)
        except OSError:
            pass
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    conn.sock.settimeout(30)
    t_kill = time.monotonic() + 0.2
    killed = False
    while True:
        if not killed and time.monotonic() >= t_kill:
            os.kill(d.pid, signal.SIGTERM)
            killed = True
        try:
            # a reader a little slower than the daemon: answers wait in the
            # daemon's socket while the client's requests keep arriving
            data = conn.sock.recv(1 << 16)
            time.sleep(0.001)
        except ConnectionResetError:
            state["reset"] = True
            break
        if not data:
            state["eof"] = True
            break
        got += data
    state["eof"] = True
    n, used = count_frames(bytes(got))
    check(used == len(got), "a torn frame at the end: %r" % bytes(got[used:used + 40]))
    return n, state["reset"]


def test_sigterm_answers_everything_read():
    for transport in ("tcp", "unix"):
        with Daemon(tcp=True) as d:
            conn = d.connect_tcp(timeout=30) if transport == "tcp" else d.connect(timeout=30)
            # a small receive buffer: the answers back up in the daemon
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            check(conn.request("ping").kind == "OK", "first ping")
            answers, reset = pipeline_sigterm(d, conn, 200000)
            check(d.proc.wait(20) == 0, "ipcd exit status")
            # the busiest connection is ours (the others are start-up probes)
            read = max(commands_logged(d).values())
            print("  %s: %d requests read, %d answered, reset %s" % (transport, read, answers + 1,
                                                                     reset))
            check(not reset, "%s: the connection was reset" % transport)
            check(answers + 1 == read, "%s: %d requests read, %d answers got"
                  % (transport, read, answers + 1))
            conn.close()


# ------------------------------------------------------------------ 3
def test_client_that_never_reads_is_dropped():
    conf = "[Daemon]\nClientIdleTimeoutSec=2\nClientSendTimeoutSec=2\n"
    with configured(conf) as d:
        bad = Conn(d.path, timeout=30)
        bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # answers of 60 KiB each: far more than the socket buffers and the
        # queue hold, so the sender blocks on a peer that never reads
        line = b"echo " + b"x" * 60000 + b"\n"
        ipcdtest.send_in_background(bad, line * 200)
        t0 = time.monotonic()
        wait_for(lambda: "took no data for ClientSendTimeoutSec=2" in d.log(), timeout=15,
                 what="the non-reader to be dropped")
        took = time.monotonic() - t0
        check(took < 8, "dropped after %.1fs" % took)
        # ctl itself went idle (ClientIdleTimeoutSec=2): ask on fresh connections
        d.wait_clients(0, timeout=5)
        check(int(d.stats()["send_timeouts"]) == 1, "send_timeouts")
        bad.close()


# ------------------------------------------------------------------ 4
def test_tricklers_are_dropped_at_the_request_deadline():
    conf = "[Daemon]\nAdminReserve=0\nRequestTimeoutSec=2\nClientIdleTimeoutSec=60\n"
    with configured(conf, "--max-clients", "20") as d:
        ctl = d.connect()
        d.wait_clients(1, via=ctl)
        tricklers = [d.connect(timeout=15) for _ in range(19)]
        t0 = time.monotonic()
        stop = threading.Event()

        def trickle():
            i = 0
            while not stop.is_set():
                for c in tricklers:
                    try:
                        c.sock.send(b"echo "[i % 5:i % 5 + 1] or b"x")
                    except OSError:
                        pass
                i += 1
                stop.wait(0.3)
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            # full: the next client is refused
            extra = d.connect()
            check(extra.read_frame().word == "busy", "a client past MaxClients")
            extra.close()
            for c in tricklers:
                f = c.read_frame()
                check(f.kind == "ERR" and f.word == "timeout", "trickler got %r" % f)
            took = time.monotonic() - t0
            check(1.9 <= took <= 8, "tricklers dropped after %.2fs (RequestTimeoutSec=2)" % took)
            d.wait_clients(1, via=ctl)
            check(int(d.stats(via=ctl)["request_timeouts"]) == 19, "request_timeouts")
            # the slots are free: a new client is served
            check(d.connect().request("ping").payload == b"pong", "served after the drop")
        finally:
            stop.set()
            t.join(5)


# ------------------------------------------------------------------ 5
def test_refusals_cannot_flood_the_log():
    with Daemon(tcp=True) as d:
        guest = d.connect_tcp(timeout=30)
        n = 20000
        ipcdtest.send_in_background(guest, b"stats\n" * n)
        for _ in range(n):
            f = guest.read_frame()
            check(f.kind == "ERR" and f.word == "denied", "stats as guest: %r" % f)
        guest.close()
        wait_for(lambda: "disconnected after %d command" % n in d.log(),
                 what="the guest's disconnect entry")
        lines = d.log().splitlines()
        print("  %d log lines for %d refusals" % (len(lines), n))
        check(len(lines) <= 100, "%d log lines for %d refusals:\n%s"
              % (len(lines), n, "\n".join(lines[:30])))
        check(re.search(r"disconnected after %d command.*%d more refused request\(s\) not "
                        r"logged" % (n, n - 5), d.log()),
              "the disconnect entry must count what was not logged:\n" + d.log()[-2000:])


# ------------------------------------------------------------------ 6
def test_right_token_accepted_under_a_wrong_token_attack():
    token = "a-right-token-of-32-bytes-000000"
    conf = "[Token ops]\nSecretFile=@DIR@/tok\nRole=admin\n"
    with configured(conf, tcp=True, files={"tok": (token + "\n", 0o600)}) as d:
        attackers = [d.connect_tcp(timeout=30) for _ in range(15)]
        for i, a in enumerate(attackers):
            a.send("".join("auth wrong-%d-%d\n" % (i, k) for k in range(5)))
        wait_for(lambda: d.log().count("authentication failed") >= 10, timeout=5,
                 what="the wrong tokens to be checked")
        for _ in range(3):
            c = d.connect_tcp()
            t0 = time.monotonic()
            f = c.request('auth "%s"' % token)
            check(f.payload == b"role: admin\n", "the right token was refused: %r" % f)
            check(time.monotonic() - t0 < 0.5, "the right token waited")
            c.close()
        for a in attackers:
            a.close()


# ------------------------------------------------------------------ 7
# connect, ping, close every 10 ms for argv[2] seconds to argv[1]; prints
# each round trip (seconds).
CONNECT_PINGS = r"""
import socket, sys, time
path, t_end = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < t_end:
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"ping\n")
    buf = b""
    while buf.count(b"\n") < 2:
        c = s.recv(4096)
        if not c:
            sys.exit("connection closed")
        buf += c
    if buf != b"OK 4\npong\n":
        sys.exit("unexpected answer %r" % buf)
    print(time.monotonic() - t0, flush=True)
    s.close()
    time.sleep(0.01)
"""


def test_maximal_lines_do_not_stall_others():
    with Daemon("--max-line-bytes", "65536") as d:
        # 16,380 topics in one line (more than a client may hold: refused
        # before any lock), and 16,380 copies of 200 topics (de-duplicated
        # before the lock), and 64 KiB publishes to 200 subscribers
        many = "subscribe " + " ".join("t%05d" % i for i in range(9300))
        dups = "subscribe " + " ".join("e%03d" % (i % 200) for i in range(13000))
        payload = "publish d001 " + "p" * 65000
        subs = [d.connect() for _ in range(200)]
        for s in subs:
            s.send("subscribe d001\n")
        for s in subs:
            check(s.read_frame().kind == "OK", "subscribe")
        stop = threading.Event()
        errors = []

        def client_side():
            # The attackers' and the subscribers' own work (parsing, the
            # GIL) at nice 10, per thread: their CPU share is not ipcd's
            # to answer for, and on 2 CPUs it starved the pinger.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)

        def attacker(line):
            def run():
                client_side()
                c = d.connect(timeout=30)
                try:
                    while not stop.is_set():
                        f = c.request(line)
                        if f.kind == "EVENT":
                            continue
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
            t = threading.Thread(target=run, daemon=True)
            t.start()
            return t

        def drain(s):
            # the subscribers read (else they are slow consumers, and dropped)
            client_side()
            s.sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    if not s.sock.recv(1 << 20):
                        return
                except socket.timeout:
                    pass
                except OSError:
                    return
        drains = [threading.Thread(target=drain, args=(s,), daemon=True) for s in subs[:20]]
        for s in subs[20:]:
            s.close()
        for t in drains:
            t.start()

        def connect_pings(seconds):
            # In a process of its own: in this one the pinger would wait for
            # the GIL behind the attackers' and the drains' threads, and
            # measure them rather than ipcd.
            r = subprocess.run([sys.executable, "-c", CONNECT_PINGS, d.path, str(seconds)],
                               capture_output=True, text=True, timeout=seconds + 30)
            check(r.returncode == 0, "connect+ping: %s" % r.stderr[-2000:])
            rtts = sorted(float(x) for x in r.stdout.split())
            check(len(rtts) > 10, "connect+ping: %d round trips" % len(rtts))
            return median(rtts), rtts[max(0, int(len(rtts) * 0.99) - 1)]
        # the same machine, as loaded as it is now, without the attackers
        base_median, base_p99 = connect_pings(1)
        threads = [attacker(many), attacker(dups), attacker(payload)]
        med, p99 = connect_pings(3)
        stop.set()
        for t in threads + drains:
            t.join(20)
        check(not errors, "attackers failed: %s" % errors[:3])
        print("  connect+ping: median %.1f ms, p99 %.1f ms (without the attackers: %.1f, %.1f)"
              % (med * 1000, p99 * 1000, base_median * 1000, base_p99 * 1000))
        # one such line under the registry or events lock took 0.3 s and
        # others' connect+ping 1.9 s; a loaded machine's own delays scale
        # with its baseline
        limit = max(0.05, 5 * base_p99)
        check(p99 < limit, "others' connect+ping p99 %.1f ms (limit %.1f ms)" % (p99 * 1000,
                                                                              limit * 1000))


# ------------------------------------------------------------------ 9
def test_nothing_outlives_its_command():
    conf = """
[Command bg]
Exec=/bin/sh -c 'sleep 30 & echo $!'
Role=admin

[Command flood]
Exec=/usr/bin/yes
Role=admin
TimeoutSec=1
MaxOutputBytes=1000G
"""
    with configured(conf) as d:
        c = d.connect(timeout=20)
        f = c.request("bg")
        check(f.kind == "MORE", "bg: %r" % f)
        pid = int(f.payload)
        f = c.read_frame()
        check(f.kind == "OK", "bg ends: %r" % f)

        def gone():
            try:
                with open("/proc/%d/stat" % pid) as st:
                    return st.read().rsplit(")", 1)[1].split()[0] == "Z"
            except (FileNotFoundError, ProcessLookupError):  # gone between open and read
                return True
        wait_for(gone, timeout=5, what="the command's background child (pid %d) to die" % pid)

        # `yes` keeps the pipe readable all the time: the timeout still holds
        t0 = time.monotonic()
        c.send("flood\n")
        while True:
            f = c.read_frame()
            if f.kind != "MORE":
                break
        took = time.monotonic() - t0
        check(f.kind == "ERR" and f.word == "timeout", "flood ended with %r" % f)
        check(took < 6, "TimeoutSec=1 held only after %.1fs" % took)


# ------------------------------------------------------------------ 10
def test_too_many_topics_adds_none():
    with Daemon() as d:
        c = d.connect()
        f = c.request("subscribe " + " ".join("t%d" % i for i in range(257)))
        check(f.kind == "ERR" and f.word == "bad-request", "257 topics: %r" % f)
        check(c.request("unsubscribe nosuch").payload == b"0", "none of the 257 was added")
        check(c.request("subscribe " + " ".join("t%d" % i for i in range(250))).payload
              == b"250", "250")
        f = c.request("subscribe " + " ".join("u%d" % i for i in range(7)))
        check(f.kind == "ERR", "250 + 7: %r" % f)
        check(c.request("unsubscribe nosuch").payload == b"250", "none of the 7 was added")
        check(c.request("subscribe t1 u1 u2 u3 u4 u5 u6").payload == b"256", "up to 256")


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_admin_paths_race_clients,
        test_sigterm_answers_everything_read,
        test_client_that_never_reads_is_dropped,
        test_tricklers_are_dropped_at_the_request_deadline,
        test_refusals_cannot_flood_the_log,
        test_right_token_accepted_under_a_wrong_token_attack,
        test_maximal_lines_do_not_stall_others,
        test_nothing_outlives_its_command,
        test_too_many_topics_adds_none,
    ])
