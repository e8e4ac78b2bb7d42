#!/usr/bin/env python3
"""Shutdown (SIGTERM, SIGINT): STOPPING=1, every request already read gets
its answer, in order, then EOF; exit status 0; bounded by the drain timeout
even when a client never reads; idle clients do not hold it up."""
import os
import signal
import subprocess
import threading
import time

import ipcdtest
from ipcdtest import Daemon, check, fail, frame

PONG = b"OK 4\npong\n"
PAD = b"p" * 2000


def answer(i, j):
    return frame("OK", b"c%d-r%d-" % (i, j) + PAD)


def drain_with_signal(sig, n_clients, n_req):
    with Daemon("--drain-timeout", "60", tcp=True, notify=True) as d:
        ctl = d.connect()
        d.wait_clients(1, via=ctl)
        ok0 = int(d.stats(via=ctl)["commands_ok"])
        conns = [d.connect_tcp(timeout=60) if i % 5 == 4 else d.connect(timeout=60)
                 for i in range(n_clients)]
        # every client pipelines all its requests and reads nothing yet; the
        # answers (about 400 KB each) fill the socket and wait in the queues
        for i, c in enumerate(conns):
            c.send(b"".join(b"echo c%d-r%d-%s\n" % (i, j, PAD) for j in range(n_req)))
        # "already received": wait until the daemon has read and run them all
        want = ok0 + n_clients * n_req

        def all_read():
            return int(d.stats(via=ctl)["commands_ok"]) >= want
        ipcdtest.wait_for(all_read, 60, "ipcd to run all %d requests" % (n_clients * n_req))

        d.notify.wait("READY=1")
        t0 = time.monotonic()
        os.kill(d.pid, sig)
        d.notify.wait("STOPPING=1")

        errors = []

        def reader(i, c):
            try:
                for j in range(n_req):
                    got = c.read_frame_raw()
                    if got != answer(i, j):
                        errors.append("client %d answer %d: got %r" % (i, j, got[:60]))
                        return
                c.wait_eof(30)
            except SystemExit:
                errors.append("client %d: no EOF after its %d answers" % (i, n_req))
            except Exception as e:
                errors.append("client %d after %d answers: %r" % (i, j, e))

        threads = [threading.Thread(target=reader, args=(i, c), daemon=True)
                   for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        check(not any(t.is_alive() for t in threads), "readers did not finish")
        check(not errors, "%d clients failed, first: %s" % (len(errors), errors[:3]))
        try:
            rc = d.proc.wait(30)
        except subprocess.TimeoutExpired:
            fail("ipcd did not exit after draining")
        check(rc == 0, "exit status %d after signal %d" % (rc, sig))
        ctl.wait_eof()
        msgs = d.notify.poll()
        check(msgs.index("READY=1") < msgs.index("STOPPING=1"), "READY=1 after STOPPING=1")
        check(not os.path.exists(d.path), "socket file left behind")
        print("  %d clients x %d answers drained in %.1fs" % (n_clients, n_req,
                                                              time.monotonic() - t0))


def test_sigterm_drains():
    drain_with_signal(signal.SIGTERM, 50, 200)


def test_sigint_drains():
    drain_with_signal(signal.SIGINT, 20, 200)


def test_drain_timeout():
    """A client that never reads cannot hold the daemon beyond the drain
    timeout; a well-behaved client still gets its answers meanwhile."""
    with Daemon("--drain-timeout", "2", "--queue-limit", "1M", notify=True) as d:
        ctl = d.connect()
        good = d.connect()
        good.exchange("ping", PONG)
        d.wait_clients(2, via=ctl)
        hog = d.connect()
        hog.sock.setblocking(False)
        chunk = (b"echo " + b"h" * 1000 + b"\n") * 64
        last = time.monotonic()
        deadline = last + 60
        while time.monotonic() - last < 1.0 and time.monotonic() < deadline:
            try:
                hog.sock.send(chunk)
                last = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        check(time.monotonic() < deadline, "the flooding client was never held back")
        ok0 = int(d.stats(via=ctl)["commands_ok"])
        good.send(b"".join(b"echo good-%d\n" % j for j in range(10)))
        ipcdtest.wait_for(lambda: int(d.stats(via=ctl)["commands_ok"]) >= ok0 + 11, 10,
                          "the good client's requests to run")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        for j in range(10):
            got = good.read_frame_raw()
            check(got == frame("OK", b"good-%d" % j), "good client answer %d: %r" % (j, got))
        good.wait_eof()
        try:
            rc = d.proc.wait(2 + 6)
        except subprocess.TimeoutExpired:
            fail("ipcd still running %.1fs after SIGTERM with --drain-timeout 2"
                 % (time.monotonic() - t0))
        elapsed = time.monotonic() - t0
        check(rc == 0, "exit status %d" % rc)
        check("STOPPING=1" in d.notify.poll(), "no STOPPING=1")
        hog.close()
        print("  exited %.2fs after SIGTERM (drain timeout 2s)" % elapsed)


def test_idle_clients_do_not_delay():
    """Clients with nothing pending (idle, or half-way through a line) must
    not hold up the exit: their reader threads are blocked in read()."""
    with Daemon("--drain-timeout", "60", tcp=True, notify=True) as d:
        conns = [d.connect_tcp() if i % 2 else d.connect() for i in range(100)]
        for c in conns[:10]:
            c.exchange("ping", PONG)
        conns[0].send(b"echo never finish")     # a partial line: not a request
        d.wait_clients(100)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(10)
        except subprocess.TimeoutExpired:
            fail("ipcd with 100 idle clients did not exit within 10s of SIGTERM")
        check(rc == 0, "exit status %d" % rc)
        for c in conns:
            c.wait_eof(5)
            c.close()
        check("STOPPING=1" in d.notify.poll(), "no STOPPING=1")
        print("  exited %.2fs after SIGTERM" % (time.monotonic() - t0))


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_sigterm_drains,
        test_sigint_drains,
        test_drain_timeout,
        test_idle_clients_do_not_delay,
    ])
