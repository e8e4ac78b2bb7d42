"""Shared helpers for the ipcd integration tests.

Every daemon a test starts is owned by a Daemon object and killed by pid
when the test ends; every wait is for a condition, bounded by a deadline.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

IPCD = os.environ.get("IPCD", "ipcd")
IPCCTL = os.environ.get("IPCCTL", "ipcctl")
TEST_CLIENT = os.environ.get("TEST_CLIENT", "test-client")
SKIP = 77


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def wait_for(cond, timeout=10.0, what="condition", interval=0.005):
    """Poll cond() until it is true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("timed out waiting for " + what)
        time.sleep(interval)


class Frame:
    def __init__(self, kind, word, payload):
        self.kind = kind      # "OK", "ERR", "MORE", "EVENT"
        self.word = word      # code for ERR, topic for EVENT, else None
        self.payload = payload

    def __repr__(self):
        return "Frame(%s %s %r)" % (self.kind, self.word, self.payload[:80])


class Conn:
    """A plain protocol-1 client on a socket, written from ipcd-protocol(7)."""

    def __init__(self, addr, timeout=10.0):
        if isinstance(addr, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_frame(self):
        while b"\n" not in self.buf:
            self._fill()
        header, rest = self.buf.split(b"\n", 1)
        parts = header.decode("ascii").split(" ")
        kind = parts[0]
        if kind in ("OK", "MORE"):
            assert len(parts) == 2, header
            word, n = None, int(parts[1])
        elif kind in ("ERR", "EVENT"):
            assert len(parts) == 3, header
            word, n = parts[1], int(parts[2])
        else:
            raise ValueError("bad frame header %r" % header)
        self.buf = rest
        while len(self.buf) < n + 1:
            self._fill()
        payload, lf, self.buf = self.buf[:n], self.buf[n:n + 1], self.buf[n + 1:]
        if lf != b"\n":
            raise ValueError("payload not followed by LF")
        return Frame(kind, word, payload)

    def request(self, line):
        self.send(line + "\n" if isinstance(line, str) else line + b"\n")
        return self.read_frame()

    def at_eof(self):
        """True once the server has closed the connection (and all is read)."""
        if self.buf:
            return False
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        self.sock.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Daemon:
    """An ipcd started standalone on a Unix socket in a private directory."""

    def __init__(self, *args, tcp=False, env=None, extra_listen=()):
        self.dir = tempfile.mkdtemp(prefix="ipcd-test-")
        self.path = os.path.join(self.dir, "ipcd.sock")
        self.port = None
        argv = [IPCD, "--listen", "unix:" + self.path]
        if tcp:
            self.port = free_port()
            argv += ["--listen", "tcp:127.0.0.1:%d" % self.port]
        for spec in extra_listen:
            argv += ["--listen", spec]
        argv += list(args)
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("LISTEN_FDS", None)
        e.pop("LISTEN_PID", None)
        if env:
            e.update(env)
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, env=e, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_for(self._ready, what="ipcd to listen on " + self.path)

    def _ready(self):
        if self.proc.poll() is not None:
            fail("ipcd exited early with %s: %s" % (self.proc.returncode, self.log()))
        try:
            c = Conn(self.path)
            c.close()
            return True
        except OSError:
            return False

    def connect(self, timeout=10.0):
        return Conn(self.path, timeout)

    def connect_tcp(self, timeout=10.0):
        return Conn(("127.0.0.1", self.port), timeout)

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Send sig and wait for exit; returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
            fail("ipcd did not exit within %ss of signal %d" % (timeout, sig))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        self.stderr.close()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_tests(tests):
    """Run each test function; print a summary line meson and CI can read."""
    only = sys.argv[1:]
    passed = failed = 0
    for t in tests:
        if only and t.__name__ not in only:
            continue
        start = time.monotonic()
        try:
            t()
            passed += 1
            print("ok   %s (%.2fs)" % (t.__name__, time.monotonic() - start), flush=True)
        except SystemExit as e:
            if e.code == SKIP:
                print("skip %s" % t.__name__, flush=True)
                continue
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
        except Exception as e:  # a broken assertion or protocol error
            failed += 1
            import traceback
            traceback.print_exc()
            print("FAIL %s: %r" % (t.__name__, e), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
