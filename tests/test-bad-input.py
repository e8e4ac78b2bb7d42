#!/usr/bin/env python3
"""Hostile and careless clients: over-long lines, random bytes, a client
that floods and never reads (backpressure), abrupt disconnects, and more
clients than MaxClients. The daemon must stay up, bounded and responsive."""
import random
import socket
import struct
import time

import ipcdtest
from ipcdtest import Daemon, check, configured, fail, frame, median, wait_for

PONG = b"OK 4\npong\n"
BUSY_MSG = b"too many clients (MaxClients=21)"
BUSY = b"ERR busy %d\n%s\n" % (len(BUSY_MSG), BUSY_MSG)
# Root is admin: without this it could use the admin reserve past MaxClients.
NO_RESERVE = "[Daemon]\nAdminReserve=0\n"


def expect_too_long(c):
    f = c.read_frame()
    check(f.kind == "ERR" and f.word == "too-long", "wanted ERR too-long, got %r" % f)
    check(f.payload and b"\n" not in f.payload, "too-long message: %r" % f.payload)
    c.wait_eof()
    c.close()


def test_line_limit():
    with Daemon("--max-line-bytes", "1024", tcp=True) as d:
        for connect in (d.connect, d.connect_tcp):
            c = connect()
            # exactly MaxLineBytes (LF not counted) is accepted
            line = b"echo " + b"x" * 1019
            check(len(line) == 1024, "test bug")
            c.exchange(line, frame("OK", b"x" * 1019))
            c.exchange('echo "' + "q" * 1017 + '"', frame("OK", b"q" * 1017))
            # one byte more is not, and the connection is closed after the answer
            c.send(b"echo " + b"x" * 1020 + b"\n")
            expect_too_long(c)
            d.connect().exchange("ping", PONG)

        # answers for the lines before the long one still come, none after it
        c = d.connect()
        c.send(b"ping\necho a\n" + b"z" * 2000 + b"\nping\n")
        check(c.read_frame_raw() == PONG, "ping before the long line")
        check(c.read_frame_raw() == b"OK 1\na\n", "echo before the long line")
        expect_too_long(c)

        # an over-long line is refused without waiting for its LF
        c = d.connect()
        c.send(b"echo " + b"y" * 5000)
        expect_too_long(c)

        # a client stuck in the middle of a line holds up nobody
        slow = d.connect()
        slow.send(b"ech")
        d.connect().exchange("ping", PONG)
        slow.send(b"o done\n")
        check(slow.read_frame_raw() == b"OK 4\ndone\n", "the rest of a split line")
        slow.close()
        check(d.alive(), "ipcd died")


def blank(line):
    if line.endswith(b"\r"):
        line = line[:-1]
    return all(b in b" \t" for b in line)


def may_close(lines):
    """Would the server rightly close on one of these lines (quit, too long)?"""
    for l in lines:
        w = l.replace(b"\t", b" ").strip(b" ").split(b" ", 1)[0]
        if w in (b"quit", b"'quit'", b'"quit"') or len(l) > 65536:
            return True
    return False


def noise(conn, data):
    """Send data and a marker while reading; every non-blank line must get
    exactly one well-formed final frame."""
    marker = b"END-OF-NOISE-%d" % random.Random(len(data)).randrange(1 << 30)
    stream = data + b"\necho " + marker + b"\n"
    lines = stream.split(b"\n")[:-1]
    expected = sum(1 for l in lines if not blank(l))
    sender = ipcdtest.send_in_background(conn, stream)
    n = 0
    try:
        while True:
            f = conn.read_frame()
            n += 1
            check(f.kind in ("OK", "ERR"), "frame %d is %r" % (n, f))
            if f.kind == "ERR":
                check(b"\n" not in f.payload, "ERR message with LF: %r" % f)
            if f.payload == marker:
                break
    except (EOFError, ConnectionResetError) as e:
        if may_close(lines):
            return None
        fail("connection closed after %d answers of %d on random input: %r" % (n, expected, e))
    sender.join(30)
    check(n == expected, "%d answers for %d non-blank lines" % (n, expected))
    return n


def test_random_bytes():
    data = random.Random(20240611).randbytes(1 << 20)
    with Daemon(tcp=True) as d:
        for connect in (d.connect, d.connect_tcp):
            c = connect(timeout=60)
            noise(c, data)
            c.close()
            check(d.alive(), "ipcd died on random input: %s" % d.log()[-2000:])
            d.connect().exchange("ping", PONG)
        # and random bytes that never contain LF: a too-long line, not a hang
        c = d.connect(timeout=30)
        sender = ipcdtest.send_in_background(c, data.replace(b"\n", b"."))
        expect_too_long(c)
        sender.join(30)
        d.connect().exchange("ping", PONG)


def test_never_reading_client():
    """50 MB of echo requests from a client that never reads: backpressure
    must bound the daemon's memory while others are served quickly."""
    target = 50 << 20
    with Daemon("--queue-limit", "1M") as d:
        probe = d.connect()
        probe.exchange("ping", PONG)
        rss0 = ipcdtest.rss_kib(d.pid)
        peak = rss0
        hog = d.connect()
        hog.sock.setblocking(False)
        req = b"echo " + b"x" * 1000 + b"\n"
        chunk = req * 64
        sent = 0
        off = 0
        last_progress = time.monotonic()
        latencies = []
        deadline = time.monotonic() + 60
        while sent < target and time.monotonic() < deadline:
            try:
                n = hog.sock.send(chunk[off:])
                sent += n
                off = (off + n) % len(chunk)
                last_progress = time.monotonic()
                continue
            except BlockingIOError:
                pass
            # the daemon stopped reading us: check everyone else is fine
            t0 = time.monotonic()
            probe.exchange("ping", PONG)
            latencies.append(time.monotonic() - t0)
            peak = max(peak, ipcdtest.rss_kib(d.pid))
            if time.monotonic() - last_progress > 2.0:
                break        # stuck for 2 s: backpressure has set in for good
        for _ in range(50):
            t0 = time.monotonic()
            probe.exchange("ping", PONG)
            latencies.append(time.monotonic() - t0)
        peak = max(peak, ipcdtest.rss_kib(d.pid))
        grew = (peak - rss0) / 1024
        check(grew < 64, "RSS grew by %.1f MiB (from %d KiB) while a client flooded" %
              (grew, rss0))
        check(sent < target, "all 50 MB were read from a client that never reads: "
              "no backpressure")
        med = median(latencies) * 1000
        check(med < 50, "median ping round trip %.1f ms while a client floods" % med)
        # the hog's queue is near the limit, not beyond it by much
        f = probe.request("clients")
        queued = [int(w.split("=")[1]) for line in f.payload.decode().split("\n")
                  for w in line.split() if w.startswith("queued=")]
        check(queued and max(queued) <= 2 << 20, "queued bytes %r over a 1M limit" % queued)
        hog.close()
        probe.exchange("ping", PONG)
        d.wait_clients(1, via=probe, timeout=20)
        check(d.alive(), "ipcd died")
        print("  sent %.1f MiB before backpressure, RSS +%.1f MiB, median ping %.2f ms"
              % (sent / 1048576, grew, med))


def test_tiny_queue_limit():
    """A queue limit smaller than one answer still lets every answer through,
    in order, without deadlock."""
    with Daemon("--queue-limit", "1K") as d:
        c = d.connect(timeout=30)
        c.exchange(b"echo " + b"x" * 60000, frame("OK", b"x" * 60000))
        reqs = b"".join(b"echo %05d%s\n" % (i, b"y" * 5000) for i in range(300))
        sender = ipcdtest.send_in_background(c, reqs)
        for i in range(300):
            got = c.read_frame_raw()
            check(got == frame("OK", b"%05d%s" % (i, b"y" * 5000)), "answer %d" % i)
        sender.join(30)
        check(sender.error is None, "send failed: %r" % sender.error)
        c.exchange("ping", PONG)


def test_abrupt_disconnects():
    with Daemon(tcp=True) as d:
        probe = d.connect()
        d.wait_clients(1, via=probe)
        fds0 = ipcdtest.n_fds(d.pid)
        threads0 = ipcdtest.n_threads(d.pid)
        big = (b"echo " + b"y" * 4000 + b"\n") * 100
        for i in range(50):
            if i % 2:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(d.path)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.connect(("127.0.0.1", d.port))
                if i % 4 == 0:   # RST instead of FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.settimeout(5)
            try:
                s.sendall(big)
                if i % 5 == 0:
                    s.recv(1000)         # leave in the middle of a response
            except OSError:
                pass
            s.close()
            if i % 10 == 0:
                probe.exchange("ping", PONG)
        probe.exchange("ping", PONG)
        check(d.alive(), "ipcd died")
        d.wait_clients(1, via=probe, timeout=30)
        # nothing leaks: fds and threads come back to where they were (or
        # below: a sanitizer runtime may have had one of its own open then)
        ipcdtest.wait_for(lambda: ipcdtest.n_fds(d.pid) <= fds0, 10,
                          "fds to return to %d (now %d)" % (fds0, ipcdtest.n_fds(d.pid)))
        ipcdtest.wait_for(lambda: ipcdtest.n_threads(d.pid) <= threads0, 10,
                          "threads to return to %d (now %d)" % (threads0,
                                                                ipcdtest.n_threads(d.pid)))
        probe.exchange("ping", PONG)


def refused_count(d, ctl, n):
    """clients_refused must reach n (the counter may trail the ERR busy a
    little: the main thread counts while the refused client reads)."""
    last = [None]

    def cond():
        last[0] = int(d.stats(via=ctl)["clients_refused"])
        return last[0] >= n
    ipcdtest.wait_for_quietly(cond, 5)
    check(last[0] == n, "clients_refused: %s, wanted %d" % (last[0], n))


def test_max_clients():
    # 21: the control connection takes one slot, 20 remain for the 70
    with configured(NO_RESERVE, "--max-clients", "21") as d:
        ctl = d.connect()
        d.wait_clients(1, via=ctl)
        conns = [d.connect() for _ in range(70)]
        # the refused get ERR busy without asking; the served get nothing
        wait_for(lambda: sum(c.readable() for c in conns) >= 50, 20, "50 ERR busy")
        refused = [c for c in conns if c.readable()]
        served = [c for c in conns if not c.readable()]
        check(len(refused) == 50 and len(served) == 20,
              "%d refused, %d served; wanted 50 and 20" % (len(refused), len(served)))
        for c in refused:
            got = c.read_frame_raw()
            check(got == BUSY, "refused client read %r, wanted %r" % (got, BUSY))
            c.wait_eof()
            c.close()
        for c in served:
            c.exchange("ping", PONG)
        refused_count(d, ctl, 50)
        s = d.stats(via=ctl)
        check(int(s["clients"]) == 21, "clients: %s" % s["clients"])
        check(int(s["max_clients"]) == 21, "max_clients: %s" % s["max_clients"])
        for c in served:
            c.close()
        d.wait_clients(1, via=ctl)
        # the slots are free again
        again = [d.connect() for _ in range(20)]
        for c in again:
            c.exchange("ping", PONG)
        extra = d.connect()
        check(extra.read_frame_raw() == BUSY, "the 22nd client must be refused")
        extra.wait_eof()
        refused_count(d, ctl, 51)
        for c in again:
            c.close()
        d.wait_clients(1, via=ctl)


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_line_limit,
        test_random_bytes,
        test_never_reading_client,
        test_tiny_queue_limit,
        test_abrupt_disconnects,
        test_max_clients,
    ])
