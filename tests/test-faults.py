#!/usr/bin/env python3
"""Faults from hostile or broken clients: slowloris, a flood of connection
attempts past MaxClients, a hard reset in the middle of a streamed command
output, and SIGTERM under a pipelining load. Each is bounded in count and
time, on local sockets only; the daemon must stay correct and recover."""
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import ipcdtest
from ipcdtest import (check, configured, Daemon, fail, frame, median, n_threads, rss_kib,
                      wait_for)

def busy(n):
    return frame("ERR", "too many clients (MaxClients=%d)" % n, "busy")


# Root is admin: without this it could use the admin reserve past MaxClients.
NO_RESERVE = "[Daemon]\nAdminReserve=0\n"
PONG = frame("OK", "pong")


def read_to_eof(sock, limit=4096):
    """Everything the server sends until it closes (or a timeout fails)."""
    data = b""
    while len(data) <= limit:
        try:
            chunk = sock.recv(limit)
        except (ConnectionResetError, BrokenPipeError):
            break
        except socket.timeout:
            fail("no EOF within the socket timeout (got %r)" % data[:100])
        if not chunk:
            break
        data += chunk
    return data


# ----------------------------------------------------------------- slowloris


def test_slowloris():
    """A client sending nothing is closed after ClientIdleTimeoutSec, and so
    is one gone quiet after pipelining (its reader waits in poll(), not in
    read()); clients dribbling a line (a byte every 0.5 s, so never idle) neither delay an
    active client nor keep clients past MaxClients from being refused."""
    conf = NO_RESERVE + "ClientIdleTimeoutSec=2\n"
    with configured(conf, "--max-clients", "25") as d:
        idle = d.connect(timeout=10)
        t_idle = time.monotonic()
        piped = d.connect(timeout=10)
        piped.send("ping\nping\n")
        check([piped.read_frame().payload for _ in range(2)] == [b"pong"] * 2, "pipelined pings")
        t_piped = time.monotonic()
        active = d.connect(timeout=5)
        active.exchange("ping", PONG)
        dribblers = [d.connect() for _ in range(20)]
        stop = threading.Event()
        lock = threading.Lock()
        sent = {}

        def dribble():
            while not stop.is_set():
                with lock:
                    for c in list(dribblers):
                        # "echo " then x... forever: a long line never ended
                        b = b"echo "[sent.get(c, 0):sent.get(c, 0) + 1] or b"x"
                        c.send(b)
                        sent[c] = sent.get(c, 0) + 1
                stop.wait(0.5)
        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        try:
            rtts = []

            def ping():
                t0 = time.monotonic()
                active.exchange("ping", PONG)
                rtts.append(time.monotonic() - t0)
            # (a) the silent client: EOF after ~2 s, meanwhile ping away
            while not idle.readable():
                check(time.monotonic() - t_idle < 6, "silent client not closed within 6 s")
                ping()
                time.sleep(0.05)
            idle.wait_eof(1)
            took = time.monotonic() - t_idle
            check(1.9 <= took <= 6, "silent client closed after %.2fs (idle timeout 2s)" % took)
            idle.close()
            piped.wait_eof(6)
            took = time.monotonic() - t_piped
            check(1.5 <= took <= 6,
                  "quiet pipelining client closed after %.2fs (idle timeout 2s)" % took)
            piped.close()
            # (b) the dribblers are not idle: all still connected
            d.wait_clients(21, via=active)
            # fill up to MaxClients with more dribblers, then refuse 5
            extra = [d.connect() for _ in range(4)]
            with lock:
                dribblers.extend(extra)
            d.wait_clients(25, via=active)
            refused0 = int(d.stats(via=active)["clients_refused"])
            for _ in range(5):
                c = d.connect(timeout=5)
                got = read_to_eof(c.sock)
                check(got == busy(25), "client past MaxClients got %r" % got)
                c.close()
                ping()
            check(int(d.stats(via=active)["clients_refused"]) == refused0 + 5,
                  "clients_refused did not count the 5 refused")
            # keep pinging across at least two more dribble rounds
            t_end = time.monotonic() + 1.2
            while time.monotonic() < t_end:
                ping()
                time.sleep(0.05)
            for c in dribblers:
                check(not c.readable(), "a dribbling client got data or was closed")
            d.wait_clients(25, via=active)
            med = median(rtts)
            check(med < 0.05, "median ping %.1f ms with 24 dribblers" % (med * 1000))
            print("  idle close %.2fs; %d pings, median %.2f ms, max %.1f ms"
                  % (took, len(rtts), med * 1000, max(rtts) * 1000))
        finally:
            stop.set()
            t.join(5)
        check(d.alive(), "ipcd died")


# ------------------------------------------------- a flood past MaxClients


def test_connection_flood_past_max_clients():
    with configured(NO_RESERVE + "MaxClientsPerAddress=50\n", "--max-clients", "50",
                    tcp=True) as d:
        ctl = d.connect()
        ctl.exchange("ping", PONG)
        d.wait_clients(1, via=ctl)
        threads0 = n_threads(d.pid)
        held = [d.connect() if i % 2 else d.connect_tcp() for i in range(49)]
        d.wait_clients(50, via=ctl)
        for c in held[:5]:
            c.exchange("ping", PONG)

        def attempt(i):
            c = d.connect_tcp(timeout=5) if i % 4 == 3 else d.connect(timeout=5)
            try:
                got = read_to_eof(c.sock)
            finally:
                c.close()
            check(got == busy(50), "attempt %d: got %r, wanted %r then EOF" % (i, got, busy(50)))

        for i in range(100):          # warm up the allocator before measuring
            attempt(i)
        # A refusal is counted after its ERR busy is written: the client may
        # read it (and EOF) before the counter moves. Wait for the count.
        ipcdtest.wait_for(lambda: int(d.stats(via=ctl)["clients_refused"]) == 100,
                          what="clients_refused to reach 100")
        refused0 = 100
        rss0 = rss_kib(d.pid)
        t0 = time.monotonic()
        for i in range(2000):
            attempt(i)
        took = time.monotonic() - t0
        check(d.alive(), "ipcd died")
        ipcdtest.wait_for_quietly(
            lambda: int(d.stats(via=ctl)["clients_refused"]) >= refused0 + 2000, 10)
        s = d.stats(via=ctl)
        check(int(s["clients_refused"]) == refused0 + 2000,
              "clients_refused %s, wanted %d" % (s["clients_refused"], refused0 + 2000))
        check(int(s["clients"]) == 50, "clients %s after the flood" % s["clients"])
        rss1 = rss_kib(d.pid)
        check(rss1 - rss0 < 4096, "RSS grew %d KiB over 2000 refusals" % (rss1 - rss0))
        for c in held:
            c.exchange("ping", PONG)
            c.close()
        d.wait_clients(1, via=ctl)
        last = [None]

        def threads_back():
            last[0] = n_threads(d.pid)
            return last[0] == threads0
        if not ipcdtest.wait_for_quietly(threads_back, 10):
            fail("threads %s, baseline %d" % (last[0], threads0))
        # and it serves a new client
        c = d.connect()
        c.exchange("ping", PONG)
        c.close()
        print("  2000 refusals in %.2fs; RSS %+d KiB; threads back to %d"
              % (took, rss1 - rss0, threads0))


# -------------------------------------------- a reset mid-streamed output


FLOOD = r"""
[Command flood]
Exec=/bin/sh -c 'echo $$; exec yes'
Role=guest
MaxOutputBytes=50M
TimeoutSec=30
"""
RUN_LINE = re.compile(r"^ipcd: <\w+> client (\d+): ran (\S+)(.*) as (\w+): (\S+) after (\d+) ms, "
                      r"(\d+) bytes of output$", re.M)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def ppid_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def reset_mid_stream(tcp):
    with configured(FLOOD, tcp=tcp) as d:
        c = d.connect_tcp() if tcp else d.connect()
        c.send("flood\n")
        got = b""
        while b"\n" not in got:
            f = c.read_frame()
            check(f.kind == "MORE", "flood answered %r" % f)
            got += f.payload
        pid = int(got.split(b"\n", 1)[0])
        try:
            check(ppid_of(pid) == d.pid, "pid %d is not ipcd's child" % pid)
            n = len(got)
            while n < 256 * 1024:         # read a little of the stream
                n += len(c.read_frame().payload)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()                     # RST (TCP), unread data dropped
            t0 = time.monotonic()
            wait_for(lambda: not pid_alive(pid), 5, "the command (pid %d) to be gone" % pid)
            gone = time.monotonic() - t0
        finally:
            if pid_alive(pid) and ppid_of(pid) == d.pid:
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: [m for m in RUN_LINE.finditer(d.log())
                          if m.group(2) == "flood" and m.group(5) == "disconnected"],
                 5, "the run's log line (disconnected)")
        c2 = d.connect_tcp() if tcp else d.connect()
        c2.exchange("ping", PONG)
        ctl = d.connect()
        d.wait_clients(2, via=ctl)   # the new client and ctl: the reset one is gone
        ctl.close()
        c2.close()
        check(d.alive(), "ipcd died")
        print("  %s: read %d KiB, command gone %.0f ms after the reset"
              % ("tcp" if tcp else "unix", n // 1024, gone * 1000))


def test_reset_mid_stream_unix():
    reset_mid_stream(False)


def test_reset_mid_stream_tcp():
    reset_mid_stream(True)


# --------------------------------------------------- SIGTERM under load


def test_sigterm_under_pipelined_load():
    n_clients, n_req = 100, 100
    with Daemon(tcp=True) as d:
        ctl = d.connect(timeout=30)
        base = int(d.stats(via=ctl)["bytes_in"])
        conns = [d.connect_tcp(timeout=30) if i % 4 == 3 else d.connect(timeout=30)
                 for i in range(n_clients)]
        d.wait_clients(n_clients + 1, via=ctl)
        base = int(d.stats(via=ctl)["bytes_in"])   # counts its own request
        errors = []

        def reader(i, c):
            j = 0
            try:
                for j in range(n_req):
                    got = c.read_frame_raw()
                    want = frame("OK", b"%d-%d" % (i, j))
                    if got != want:
                        errors.append("client %d answer %d: %r, wanted %r" % (i, j, got, want))
                        return
                c.wait_eof(30)
            except SystemExit:
                errors.append("client %d: data or no EOF after its answers" % i)
            except Exception as e:
                errors.append("client %d after %d answers: %r" % (i, j, e))

        readers = [threading.Thread(target=reader, args=(i, c), daemon=True)
                   for i, c in enumerate(conns)]
        for t in readers:
            t.start()
        total = 0
        for i, c in enumerate(conns):
            batch = b"".join(b"echo %d-%d\n" % (i, j) for j in range(n_req))
            c.send(batch)
            total += len(batch)
        asked = [0]

        def all_read():
            asked[0] += 1
            return int(d.stats(via=ctl)["bytes_in"]) >= base + total + 6 * asked[0]
        wait_for(all_read, 30, "ipcd to read all %d bytes" % total)
        t0 = time.monotonic()
        os.kill(d.pid, signal.SIGTERM)
        for t in readers:
            t.join(max(1, 30 - (time.monotonic() - t0)))
        check(not any(t.is_alive() for t in readers), "readers did not finish")
        check(not errors, "%d clients failed, first: %s" % (len(errors), errors[:3]))
        try:
            rc = d.proc.wait(15)
        except subprocess.TimeoutExpired:
            fail("ipcd did not exit within 15s of SIGTERM")
        check(rc == 0, "exit status %d" % rc)
        ctl.wait_eof(5)
        print("  %d x %d answers drained, exit %.2fs after SIGTERM"
              % (n_clients, n_req, time.monotonic() - t0))


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_slowloris,
        test_connection_flood_past_max_clients,
        test_reset_mid_stream_unix,
        test_reset_mid_stream_tcp,
        test_sigterm_under_pipelined_load,
    ])
