#!/usr/bin/env python3
"""Start-up and shut-down as systemd sees them: socket activation through
systemd-socket-activate (LISTEN_FDS/LISTEN_FDNAMES), standalone binding,
the embedded default socket, sd_notify READY=1/STOPPING=1 on a
NOTIFY_SOCKET of our own, and clear failures for bad listeners."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import ipcdtest
from ipcdtest import Conn, Daemon, Notify, check, fail, wait_for

PONG = b"OK 4\npong\n"


class Activated:
    """ipcd behind systemd-socket-activate, which binds the sockets, waits
    for the first connection and then execs ipcd (same pid) with LISTEN_FDS.
    The NOTIFY_SOCKET is given to ipcd only (-E): systemd-socket-activate
    would otherwise send its own READY=1 from that very pid."""

    def __init__(self, *ipcd_args, datagram=False, accept=False):
        if not shutil.which("systemd-socket-activate"):
            ipcdtest.skip("systemd-socket-activate is not installed")
        self.dir = tempfile.mkdtemp(prefix="ipcd-test-")
        self.path = os.path.join(self.dir, "ipcd.sock")
        self.port = ipcdtest.free_port()
        self.notify = Notify(self.dir)
        argv = ["systemd-socket-activate"]
        if datagram:
            argv += ["--datagram", "-l", "127.0.0.1:%d" % self.port]
        elif accept:   # inetd style: ipcd would get a connected socket
            argv += ["--accept", "-l", self.path, "-l", "127.0.0.1:%d" % self.port]
        else:
            argv += ["-l", self.path, "-l", "127.0.0.1:%d" % self.port,
                     "--fdname=ipcd-unix:ipcd-tcp"]
        argv += ["-E", "NOTIFY_SOCKET=" + self.notify.path, ipcdtest.IPCD] + list(ipcd_args)
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "wb")
        # its "Listening on ..." lines tell us when the sockets are ready
        env = ipcdtest.clean_env({"SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_LOG_TARGET": "console"})
        self.proc = ipcdtest.own(subprocess.Popen(argv, env=env,
                                                  stdin=subprocess.DEVNULL,
                                                  stdout=subprocess.DEVNULL, stderr=self.stderr))
        self.pid = self.proc.pid
        # systemd-socket-activate says when every socket is bound and listening
        wait_for(self._listening, what="systemd-socket-activate to listen")

    def _listening(self):
        if self.proc.poll() is not None:
            fail("systemd-socket-activate exited with %s: %s" % (self.proc.returncode, self.log()))
        return ("127.0.0.1:%d" % self.port) in self.log()

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        self.stderr.close()
        self.notify.close()
        report = ipcdtest.sanitizer_report(self.log())
        if report and exc[0] is None:
            print("--- stderr of pid %d ---\n%s---" % (self.pid, self.log()[-8000:]),
                  file=sys.stderr)
            shutil.rmtree(self.dir, ignore_errors=True)
            fail("ipcd (pid %d) reported: %s" % (self.pid, report))
        if exc[0] is not None and not (exc[0] is SystemExit and exc[1].code in (0, 77)):
            print("--- stderr of pid %d ---\n%s---" % (self.pid, self.log()[-4000:]),
                  file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def stats_dict(conn, f=None):
    """stats as a dict, listener: values in a list; f: an answer already read."""
    f = f or conn.request("stats")
    check(f.kind == "OK", "stats: %r" % f)
    d = {"listener": []}
    for k, v in ipcdtest.parse_kv(f.payload):
        if k == "listener":
            d["listener"].append(v)
        else:
            d[k] = v
    return d


def test_socket_activation():
    with Activated() as a:
        check(not a.notify.poll(), "nothing may be notified before ipcd runs: %r"
              % a.notify.messages)
        c = Conn(a.path)                     # this connection makes it exec ipcd
        c.send(b"stats\n")
        f = c.read_frame()
        # READY=1 must have been sent before the first answer could be read
        check("READY=1" in a.notify.poll(), "no READY=1 before the first answer: %r"
              % a.notify.messages)
        s = stats_dict(c, f)
        check(s["activation"] == "socket", "activation: %r" % s["activation"])
        want = ["unix:" + a.path, "tcp:127.0.0.1:%d" % a.port]
        check(sorted(s["listener"]) == sorted(want), "listeners %r, wanted %r"
              % (s["listener"], want))

        # both inherited listeners serve, the first one again too
        t = Conn(("127.0.0.1", a.port))
        t.exchange("ping", PONG)
        h = dict(ipcdtest.parse_kv(t.request("hello").payload))
        check(h["transport"] == "tcp" and h["role"] == "guest", "hello over tcp: %r" % h)
        c.exchange("ping", PONG)
        c2 = Conn(a.path)
        c2.exchange("echo activated", b"OK 9\nactivated\n")
        p = subprocess.run([ipcdtest.TEST_CLIENT, "tcp:127.0.0.1:%d" % a.port],
                           capture_output=True, timeout=30)
        check(p.returncode == 0, "test-client over the inherited tcp socket: %r" % p.stderr)

        check(a.proc.poll() is None, "ipcd exited: %s" % a.log())
        os.kill(a.pid, signal.SIGTERM)
        try:
            rc = a.proc.wait(15)
        except subprocess.TimeoutExpired:
            fail("socket-activated ipcd did not exit within 15 s of SIGTERM")
        check(rc == 0, "exit status %d after SIGTERM: %s" % (rc, a.log()))
        msgs = a.notify.poll()
        check("STOPPING=1" in msgs, "no STOPPING=1: %r" % msgs)
        check(msgs.index("READY=1") < msgs.index("STOPPING=1"), "READY=1 after STOPPING=1")
        for conn in (c, c2, t):
            conn.wait_eof()
            conn.close()
        # the socket belongs to whoever activated us: ipcd must not remove it
        check(os.path.exists(a.path), "ipcd removed the socket systemd gave it")


def test_activation_ignores_listen():
    with Activated("--listen", "unix:/nonexistent-dir/x.sock") as a:
        c = Conn(a.path)
        c.exchange("ping", PONG)
        a.notify.wait("READY=1")
        s = stats_dict(c)
        check(s["activation"] == "socket", "activation: %r" % s["activation"])
        check(all("nonexistent" not in l for l in s["listener"]),
              "--listen must be ignored under socket activation: %r" % s["listener"])
        check("listen" in a.log().lower(), "no warning that --listen is ignored: %r" % a.log())
        os.kill(a.pid, signal.SIGINT)
        rc = a.proc.wait(15)
        check(rc == 0, "exit status %d after SIGINT" % rc)
        check("STOPPING=1" in a.notify.poll(), "no STOPPING=1 after SIGINT")
        c.close()


def test_activation_wrong_socket_type():
    """A datagram socket is not something ipcd serves: it must fail clearly."""
    with Activated(datagram=True) as a:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"ping\n", ("127.0.0.1", a.port))   # makes it exec ipcd
        u.close()
        try:
            rc = a.proc.wait(15)
        except subprocess.TimeoutExpired:
            fail("ipcd given a UDP socket is still running")
        check(rc != 0, "ipcd given a UDP socket exited 0")
        msgs = a.notify.poll()
        check("READY=1" not in msgs, "READY=1 despite an unusable socket: %r" % msgs)
        check(any(m.startswith("ERRNO=") for m in msgs), "no ERRNO= on NOTIFY_SOCKET: %r" % msgs)
        check(a.log().strip() != "", "no message on stderr")


def test_activation_connected_socket():
    """Accept=yes style (a connected socket instead of a listening one) is a
    configuration error: ipcd must say so and exit, never spin on accept()."""
    with Activated(accept=True) as a:
        c = Conn(a.path)
        try:
            c.send(b"ping\n")
            got = c.sock.recv(100)
        except OSError:
            got = b""
        check(got == b"", "ipcd served a connected socket as if it were a listener: %r" % got)
        c.close()
        wait_for(lambda: any(m.startswith("ERRNO=") for m in a.notify.poll()), 10,
                 "ERRNO= on NOTIFY_SOCKET")
        check("READY=1" not in a.notify.poll(), "READY=1 with a connected socket")
        wait_for(lambda: "died with code" in a.log() or "exited with" in a.log(), 10,
                 "the ipcd child to exit")
        check("died with code 0" not in a.log(), "ipcd exited 0: %s" % a.log())


def test_standalone_notify():
    with Daemon(tcp=True, notify=True, wait=False) as d:
        # READY=1 means every listener is armed: connect at once, no retry
        wait_for(lambda: d.notify.has("READY=1") or not d.alive(), 10, "READY=1")
        check(d.alive(), "ipcd exited: %s" % d.log())
        c = d.connect()
        t = d.connect_tcp()
        c.exchange("ping", PONG)
        t.exchange("ping", PONG)
        s = stats_dict(c)
        check(s["activation"] == "standalone", "activation: %r" % s["activation"])
        want = ["unix:" + d.path, "tcp:127.0.0.1:%d" % d.port]
        check(sorted(s["listener"]) == sorted(want), "listeners %r" % s["listener"])
        check(os.path.exists(d.path), "socket file missing")
        rc = d.stop(signal.SIGTERM)
        check(rc == 0, "exit status %d after SIGTERM" % rc)
        msgs = d.notify.poll()
        check("STOPPING=1" in msgs, "no STOPPING=1: %r" % msgs)
        check(msgs.index("READY=1") < msgs.index("STOPPING=1"), "READY=1 after STOPPING=1")
        c.wait_eof()
        t.wait_eof()
        check(not os.path.exists(d.path), "the socket file it created is left behind")
        try:
            Conn(("127.0.0.1", d.port), timeout=2)
            fail("the TCP port still accepts connections")
        except OSError:
            pass


def test_default_socket():
    rd = tempfile.mkdtemp(prefix="ipcd-rd-")
    try:
        path = os.path.join(rd, "ipcd.sock")
        with Daemon(unix=False, path=path, env={"RUNTIME_DIRECTORY": rd}) as d:
            s = d.stats()
            check(s["listener"] == ["unix:" + path], "listeners %r, wanted [unix:%s]"
                  % (s["listener"], path))
            check(d.stop() == 0, "exit status")
            check(not os.path.exists(path), "default socket left behind")
        # several RuntimeDirectory= entries: the first one
        with Daemon(unix=False, path=path, env={"RUNTIME_DIRECTORY": rd + ":/nonexistent"}) as d:
            d.connect().exchange("ping", PONG)
            check(d.stop() == 0, "exit status")
    finally:
        shutil.rmtree(rd, ignore_errors=True)


def start_fails(args, what, mention=None, env=None):
    p = subprocess.run([ipcdtest.IPCD] + args, capture_output=True, timeout=20,
                       env=ipcdtest.clean_env(env), stdin=subprocess.DEVNULL)
    err = p.stderr.decode(errors="replace")
    check(p.returncode != 0, "%s: exit status 0" % what)
    check(p.returncode > 0, "%s: killed by signal %d" % (what, -p.returncode))
    check(err.strip() != "", "%s: nothing on stderr" % what)
    if mention:
        check(mention in err, "%s: the message %r does not mention %r" % (what, err, mention))
    return err


def test_stale_and_live_socket():
    """A socket file left by a crashed daemon is replaced; one that a
    running daemon serves is not touched by a second instance."""
    d = tempfile.mkdtemp(prefix="ipcd-test-")
    try:
        path = os.path.join(d, "ipcd.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)          # bound, never listening, closed: a stale file
        s.close()
        with Daemon(unix=False, path=path, extra_listen=["unix:" + path]) as first:
            first.connect().exchange("ping", PONG)
            err = start_fails(["--listen", "unix:" + path], "second instance on a live socket",
                              path)
            check(os.path.exists(path), "the failed second instance removed the live socket")
            first.connect().exchange("ping", PONG)
            check(first.stop() == 0, "exit status")
            check(not os.path.exists(path), "socket file left behind")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_listener_above_fd_setsize():
    """select() cannot watch fds >= FD_SETSIZE: a listener that would get one
    must make the start fail clearly, not corrupt memory or hang."""
    d = tempfile.mkdtemp(prefix="ipcd-test-")
    try:
        path = os.path.join(d, "ipcd.sock")
        p = subprocess.Popen([ipcdtest.IPCD, "--listen", "unix:" + path],
                             env=ipcdtest.clean_env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             close_fds=False, preexec_fn=ipcdtest.fill_fds(3, 1100))
        ipcdtest.own(p)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            fail("ipcd with its listener at fd >= 1100 did not fail (still running)")
        check(p.returncode > 0, "exit status %d with a listener fd >= FD_SETSIZE" % p.returncode)
        check(err.strip() != b"", "no message on stderr")
        check(not os.path.exists(path), "a failed start left its socket file behind")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_listen():
    d = tempfile.mkdtemp(prefix="ipcd-test-")
    try:
        start_fails(["--listen", "bogus:x"], "bad prefix", "bogus:x")
        start_fails(["--listen", "tcp:127.0.0.1:99999"], "bad port", "99999")
        start_fails(["--listen", "tcp:127.0.0.1:x"], "non-numeric port", "127.0.0.1:x")
        start_fails(["--listen", "unix:"], "empty path")
        long_path = "unix:" + d + "/" + "x" * 200
        start_fails(["--listen", long_path], "over-long path", "x" * 100)
        start_fails(["--listen", "unix:" + d + "/missing/dir/ipcd.sock"], "missing directory",
                    "missing/dir")
        start_fails(["--listen", "unix:" + d + "/ok.sock", "--listen", "nope"],
                    "one bad of two", "nope")
        check(not os.path.exists(d + "/ok.sock"), "a failed start left ok.sock behind")
        # a port in use
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        try:
            start_fails(["--listen", "tcp:127.0.0.1:%d" % port], "port in use", str(port))
        finally:
            s.close()
        start_fails(["--max-clients", "abc"], "bad --max-clients", "abc",
                    env={"RUNTIME_DIRECTORY": d})
        start_fails(["--no-such-option"], "unknown option", env={"RUNTIME_DIRECTORY": d})
        # and --help works
        p = subprocess.run([ipcdtest.IPCD, "--help"], capture_output=True, timeout=10)
        check(p.returncode == 0 and b"--listen" in p.stdout, "ipcd --help: %r" % p.stdout)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_socket_activation,
        test_activation_ignores_listen,
        test_activation_wrong_socket_type,
        test_activation_connected_socket,
        test_standalone_notify,
        test_default_socket,
        test_stale_and_live_socket,
        test_listener_above_fd_setsize,
        test_bad_listen,
    ])
