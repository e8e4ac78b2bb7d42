#!/usr/bin/env python3
"""Resource exhaustion: threads and file descriptors run out, clients are
refused or wait, the daemon never spins or crashes, and recovers.

Both tests run ipcd as an unprivileged user under a real kernel limit
(RLIMIT_NPROC counts a user's threads; RLIMIT_NOFILE its fds), so the
failures are the kernel's, not simulated.
"""
import os
import pwd
import shutil
import socket
import subprocess
import time

import ipcdtest
from ipcdtest import Conn, check, fail, wait_for


def unprivileged():
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("prlimit"):
        raise SystemExit(ipcdtest.SKIP)
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise SystemExit(ipcdtest.SKIP)


class Limited:
    """ipcd as `nobody` under prlimit, listening in a world-writable dir."""

    def __init__(self, *limits, uid=None):
        """uid: a numeric uid of its own (no other process runs as it, so
        RLIMIT_NPROC counts exactly ipcd's threads), else nobody."""
        unprivileged()
        # nobody must reach both the binary and the socket's directory,
        # wherever the tree is (a clone under /root is 0700)
        self.dir = ipcdtest.public_tmpdir("ipcd-limits-")
        os.chmod(self.dir, 0o777)
        self.path = os.path.join(self.dir, "ipcd.sock")
        self.err = open(os.path.join(self.dir, "stderr"), "wb")
        ids = ["--reuid=%d" % uid, "--regid=%d" % uid] if uid else ["--reuid=nobody",
                                                                   "--regid=nogroup"]
        argv = ["setpriv"] + ids + ["--clear-groups",
                "prlimit"] + list(limits) + ["--", ipcdtest.for_other_users(ipcdtest.IPCD), "--listen", "unix:" + self.path]
        self.proc = subprocess.Popen(argv, stderr=self.err, stdin=subprocess.DEVNULL, cwd="/",
                                     env=ipcdtest.sanitizer_env_into(self.dir))
        wait_for(self._up, what="ipcd as nobody to listen")

    def _up(self):
        # Not the socket file: it exists from bind(), before listen(); a
        # probe connection would take one of the fds the tests count.
        if self.proc.poll() is not None:
            fail("ipcd exited: " + self.log())
        return "Listening on unix:" in self.log()

    def log(self):
        with open(self.err.name, "rb") as f:
            return f.read().decode(errors="replace")

    def cpu_ticks(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def close(self):
        if self.proc.poll() is None:
            # LeakSanitizer stops the world with a thread of its own at exit:
            # under the test's RLIMIT_NPROC it could not start one
            subprocess.run(["prlimit", "--pid", str(self.proc.pid), "--nproc=unlimited"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        reports = ipcdtest.sanitizer_reports_in(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        check(not reports, "ipcd as nobody reported:\n" + reports)


def test_thread_exhaustion_refuses_one_client_at_a_time():
    # main thread + 1 per client (its reader; the sender starts only when
    # something must wait for the socket): 11 tasks leave room for 10
    # clients, if no other process runs as nobody (then only fewer).
    d = Limited("--nproc=11")
    try:
        conns, served, busy = [], 0, 0
        for _ in range(12):
            c = Conn(d.path)
            try:
                c.send("ping\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused and closed before the request went out
            f = c.read_frame()
            if f.kind == "OK":
                served += 1
                conns.append(c)
            else:
                check(f.kind == "ERR" and f.word == "busy", "expected ERR busy, got %r" % f)
                check(b"thread" in f.payload, "reason should name threads: %r" % f.payload)
                wait_for(c.at_eof, what="refused client to be closed")
                busy += 1
                c.close()
        check(1 <= served <= 10, "served %d clients under a 10-client thread budget" % served)
        check(busy == 12 - served and busy >= 2, "every other client is refused with ERR busy")
        # The clients already served are unaffected.
        for c in conns:
            check(c.request("echo still here").payload == b"still here", "old client broken")
        # Freeing threads lets new clients in again.
        for c in conns:
            c.close()
        wait_for(lambda: Conn(d.path).request("ping").kind == "OK", timeout=10,
                 what="a new client to be served once threads are free")
        check(d.proc.poll() is None, "daemon must survive")
    finally:
        d.close()


def test_fd_exhaustion_waits_in_backlog_without_spinning():
    # 0,1,2 + eventfd + listener = 5: with 9 fds, 4 clients fit.
    d = Limited("--nofile=9")
    try:
        conns = []
        for _ in range(4):
            c = Conn(d.path)
            check(c.request("ping").kind == "OK", "client within the fd limit served")
            conns.append(c)
        # The next one is accepted by the kernel into the backlog, but ipcd
        # cannot accept it: it must wait, not be lost, and not burn CPU.
        waiting = Conn(d.path, timeout=20)
        waiting.send("ping\n")
        before = d.cpu_ticks()
        wait_for(lambda: "Failed to accept" in d.log(), what="the EMFILE log line")
        t0 = time.monotonic()
        waiting.sock.settimeout(1.0)
        try:
            data = waiting.sock.recv(100)
            fail("client past the fd limit was answered while no fd was free: %r" % data)
        except socket.timeout:
            pass
        spent = (d.cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
        elapsed = time.monotonic() - t0
        check(spent < 0.5 * elapsed, "daemon spun: %.2fs CPU in %.2fs" % (spent, elapsed))
        check(d.log().count("Failed to accept") <= 3, "EMFILE log line must be rate limited")
        # One fd frees up: the waiting client is served, nothing lost.
        conns.pop().close()
        waiting.sock.settimeout(10)
        f = waiting.read_frame()
        check(f.kind == "OK" and f.payload == b"pong", "waiting client served: %r" % f)
        for c in conns:
            check(c.request("ping").kind == "OK", "other clients unaffected")
    finally:
        d.close()


def test_out_of_threads_loses_no_answer():
    """RLIMIT_NPROC leaves room for the reader only: subscribe cannot start
    the sender and says so (ERR busy), the answers around it still arrive,
    and answers too big for the socket are written by the reader itself."""
    uid = 1900000000 + os.getpid() % 100000   # no other process runs as it
    # room for the threads an idle ipcd has (a sanitizer may add one of its
    # own) and one reader: the kernel counts the uid's tasks at clone()
    probe = Limited(uid=uid)
    tasks = ipcdtest.n_threads(probe.proc.pid)
    probe.close()
    # ThreadSanitizer starts its own background thread with the first
    # pthread_create(), the reader's
    ldd = subprocess.run(["ldd", ipcdtest.IPCD], capture_output=True, text=True).stdout
    tasks += "libtsan" in ldd
    d = Limited("--nproc=%d" % (tasks + 1), uid=uid)
    try:
        c = Conn(d.path)
        c.send("ping\nsubscribe t\nping\n")
        f = c.read_frame()
        check(f.kind == "OK" and f.payload == b"pong", "first ping: %r" % f)
        f = c.read_frame()
        check(f.kind == "ERR" and f.word == "busy" and b"thread" in f.payload,
              "subscribe without a sender thread: %r" % f)
        f = c.read_frame()
        check(f.kind == "OK" and f.payload == b"pong", "second ping: %r" % f)
        # 20 answers of 60 KB while we do not read: more than the socket
        # takes, so the reader, with no sender, waits and writes them itself
        big = "x" * 60000
        t = ipcdtest.send_in_background(c, (("echo %s\n" % big) * 20 + "ping\n").encode())
        # let the reader fill the socket (and then block on it) before we read
        wait_for(lambda: ipcdtest.unread_bytes(c.sock) >= 120000,
                 what="answers waiting in the socket")
        for i in range(20):
            f = c.read_frame()
            check(f.kind == "OK" and len(f.payload) == 60000, "answer %d: %r" % (i, f))
        check(c.read_frame().payload == b"pong", "the last answer")
        t.join(10)
        check(t.error is None, "sending: %r" % t.error)
        check(d.proc.poll() is None, "daemon must survive")
        c.close()
    finally:
        d.close()


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_thread_exhaustion_refuses_one_client_at_a_time,
        test_fd_exhaustion_waits_in_backlog_without_spinning,
        test_out_of_threads_loses_no_answer,
    ])
