"""Shared helpers for the ipcd integration tests.

Every daemon a test starts is owned by a Daemon object and killed by pid
when the test ends; every wait is for a condition, bounded by a deadline.
"""
import atexit
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

IPCD = os.environ.get("IPCD", "ipcd")
IPCCTL = os.environ.get("IPCCTL", "ipcctl")
TEST_CLIENT = os.environ.get("TEST_CLIENT", "test-client")
SKIP = 77

# Every process a test started, so that nothing outlives the test run even
# when a test fails half-way or meson times us out (SIGTERM).
_owned = []


def _kill_owned():
    for p in list(_owned):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    _owned.clear()


atexit.register(_kill_owned)


def own(proc):
    """Register a Popen so that it is killed (by pid) when the test ends."""
    _owned.append(proc)
    return proc


def traversable_by_others(path):
    """True if a user other than the owner can reach `path` (every directory
    on the way searchable by others) and, for a file, read and run it."""
    path = os.path.realpath(path)
    d = path if os.path.isdir(path) else os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & 0o001:
            return False
        if d == "/":
            break
        d = os.path.dirname(d)
    return os.path.isdir(path) or os.stat(path).st_mode & 0o005 == 0o005


_public_dirs = []


def public_tmpdir(prefix="ipcd-test-"):
    """A fresh directory (0755) that other uids can reach: under $TMPDIR when
    that is reachable, else under /tmp, /var/tmp or /dev/shm. The suite may run
    from a clone under /root (0700) or with a private TMPDIR; tests that run
    something as another user put it here. Removed when the test process ends."""
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK) \
                and traversable_by_others(base):
            d = tempfile.mkdtemp(prefix=prefix, dir=base)
            os.chmod(d, 0o755)
            _public_dirs.append(d)
            return d
    fail("no temporary directory that other users can reach (tried $TMPDIR, /tmp, "
         "/var/tmp, /dev/shm)")


_public_copies = {}


def for_other_users(path):
    """`path` itself if other uids can run it there, else a copy of it in a
    public_tmpdir() (made once per process)."""
    if traversable_by_others(path):
        return path
    if path not in _public_copies:
        d = public_tmpdir("ipcd-bin-")
        dst = os.path.join(d, os.path.basename(path))
        shutil.copy2(path, dst)
        os.chmod(dst, 0o755)
        _public_copies[path] = dst
    return _public_copies[path]


@atexit.register
def _remove_public_dirs():
    for d in _public_dirs:
        shutil.rmtree(d, ignore_errors=True)


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def skip(msg):
    print("SKIP: " + msg, file=sys.stderr)
    sys.exit(SKIP)


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
        interval = min(interval * 1.5, 0.1)


def wait_for_quietly(cond, timeout=10.0, interval=0.005):
    """Like wait_for(), but return False on timeout instead of failing."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 1.5, 0.1)


def frame(kind, payload=b"", word=None):
    """The exact bytes of one frame, as ipcd-protocol(7) defines them."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = kind if word is None else "%s %s" % (kind, word)
    return ("%s %d\n" % (head, len(payload))).encode() + payload + b"\n"


def parse_kv(payload):
    """`key: value` lines (hello, stats) as a list of (key, value) pairs."""
    if isinstance(payload, bytes):
        payload = payload.decode()
    check(payload.endswith("\n"), "key: value payload not ended by LF: %r" % payload)
    pairs = []
    for line in payload[:-1].split("\n"):
        check(": " in line, "not a key: value line: %r" % line)
        k, v = line.split(": ", 1)
        pairs.append((k, v))
    return pairs


def check_keys_in_order(pairs, keys, what):
    """keys must appear in pairs, in this order (other keys may come between)."""
    have = [k for k, _ in pairs]
    pos = 0
    for k in keys:
        check(k in have[pos:], "%s: key %r missing or out of order in %r" % (what, k, have))
        pos = have.index(k, pos) + 1


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


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

    def read_exact(self, n):
        """Exactly n bytes of the stream (EOFError if it ends before)."""
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame_raw(self):
        """One frame as the exact bytes that arrived (header, payload, LF)."""
        while b"\n" not in self.buf:
            self._fill()
        header = self.buf.split(b"\n", 1)[0]
        try:
            n = int(header.rsplit(b" ", 1)[1])
        except (IndexError, ValueError):
            raise ValueError("bad frame header %r" % header)
        return self.read_exact(len(header) + 1 + n + 1)

    def exchange(self, request, expected):
        """Send request (LF added) and check the answer is byte-exactly expected."""
        if isinstance(request, str):
            request = request.encode()
        self.send(request + b"\n")
        got = self.read_frame_raw()
        check(got == expected, "%r: got %r, wanted %r" % (request, got, expected))
        return got

    def wait_eof(self, timeout=10.0):
        """Wait until the server closes; fail if data or nothing comes instead."""
        check(not self.buf, "data before EOF: %r" % self.buf[:200])
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            return
        except socket.timeout:
            fail("no EOF within %ss" % timeout)
        check(data == b"", "data instead of EOF: %r" % data[:200])

    def readable(self):
        """True if something (data or EOF) can be read without blocking."""
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

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


def n_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fill_fds(low, high):
    """For a preexec_fn: make fds low..high-1 open (on /dev/null) in the
    child, so that what the daemon opens next lands at or above `high`.
    Raises the soft RLIMIT_NOFILE to allow it; skip() if the hard one cannot."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = high + 1024
    if hard != resource.RLIM_INFINITY and hard < want:
        skip("RLIMIT_NOFILE hard limit %d is below %d" % (hard, want))

    def pre():
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        fd = os.open("/dev/null", os.O_RDONLY)
        for i in range(low, high):
            if i != fd:
                os.dup2(fd, i)
        if not low <= fd < high:
            os.close(fd)
    return pre


def socket_fds(pid):
    """The fd numbers of a process's sockets."""
    d = "/proc/%d/fd" % pid
    fds = []
    for e in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, e)).startswith("socket:"):
                fds.append(int(e))
        except OSError:
            pass
    return sorted(fds)


def n_threads(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def unread_bytes(sock):
    """How many bytes wait in sock's receive queue (FIONREAD)."""
    import fcntl
    import struct
    import termios
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def send_in_background(conn, data):
    """sendall() in a thread (for when the test must read at the same time).
    Returns the thread; its .error is the exception sendall raised, if any."""
    def run():
        try:
            conn.sock.sendall(data)
        except OSError as e:
            t.error = e
    t = threading.Thread(target=run, daemon=True)
    t.error = None
    t.start()
    return t


class Notify:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages = []   # every assignment received, in order ("READY=1")

    def poll(self):
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return self.messages
            for line in data.decode(errors="replace").split("\n"):
                if line:
                    self.messages.append(line)

    def has(self, assignment):
        return assignment in self.poll()

    def wait(self, assignment, timeout=10.0):
        wait_for(lambda: self.has(assignment), timeout, "%s on NOTIFY_SOCKET" % assignment)

    def close(self):
        self.sock.close()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
                   "runtime error:", "ERROR: UndefinedBehaviorSanitizer")


def sanitizer_report(log):
    """The first line of a sanitizer report in a daemon's stderr, or None."""
    for line in log.splitlines():
        if any(m in line for m in SANITIZER_MARKS):
            return line.strip()
    return None


def sanitizer_env_into(directory, env=None):
    """The environment with every *SAN_OPTIONS log_path= pointed into
    `directory`: for a process running as another user, which cannot write
    the build tree's report directory. Check it with sanitizer_reports_in()."""
    e = dict(os.environ if env is None else env)
    for var, name in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan"),
                      ("TSAN_OPTIONS", "tsan")):
        if "log_path=" in e.get(var, ""):
            opts = [o for o in e[var].split(":") if not o.startswith("log_path=")]
            e[var] = ":".join(["log_path=" + os.path.join(directory, name)] + opts)
    return e


def sanitizer_reports_in(directory):
    """The text of the sanitizer reports written into `directory`, or ""."""
    out = ""
    for f in sorted(os.listdir(directory)):
        if f.split(".")[0] in ("asan", "ubsan", "tsan"):
            with open(os.path.join(directory, f), errors="replace") as fh:
                out += "=== %s\n%s" % (f, fh.read())
    return out


def spec_to_address(spec):
    """A --listen spec as a Conn address: "unix:P" -> P, "tcp:H:P" -> (H, P)."""
    if spec.startswith("unix:"):
        return spec[5:]
    if spec.startswith("tcp:["):
        host, port = spec[5:].rsplit("]:", 1)
        return (host, int(port))
    if spec.startswith("tcp:"):
        host, port = spec[4:].rsplit(":", 1)
        return (host, int(port))
    return None


def clean_env(env=None):
    """The environment for a daemon: nothing of systemd's inherited by accident."""
    e = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC",
              "WATCHDOG_PID", "JOURNAL_STREAM", "RUNTIME_DIRECTORY", "IPCD_SOCKET"):
        e.pop(k, None)
    if env:
        e.update(env)
    return e


class Daemon:
    """An ipcd started standalone on a Unix socket in a private directory.

    unix=False leaves out the --listen unix: option (then `path` must say
    where the daemon's Unix socket will be, e.g. the embedded default, or
    tcp must be set); notify=True gives it a NOTIFY_SOCKET (self.notify);
    wait=False returns at once instead of waiting until it accepts;
    preexec_fn runs in the child before exec, with every fd inherited."""

    def __init__(self, *args, tcp=False, env=None, extra_listen=(), unix=True, path=None,
                 notify=False, wait=True, preexec_fn=None):
        self.dir = public_tmpdir("ipcd-test-")  # clients may run as other uids
        self.path = path or os.path.join(self.dir, "ipcd.sock")
        self.port = None
        self.notify = Notify(self.dir) if notify else None
        argv = [IPCD]
        if unix:
            argv += ["--listen", "unix:" + self.path]
        if tcp:
            self.port = free_port()
            argv += ["--listen", "tcp:127.0.0.1:%d" % self.port]
        for spec in extra_listen:
            argv += ["--listen", spec]
        argv += list(args)
        e = clean_env(env)
        if self.notify:
            e["NOTIFY_SOCKET"] = self.notify.path
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "wb")
        # preexec_fn arranges the daemon's fds itself, so nothing is closed
        self.proc = own(subprocess.Popen(argv, env=e, stderr=self.stderr,
                                         stdin=subprocess.DEVNULL, preexec_fn=preexec_fn,
                                         close_fds=preexec_fn is None))
        self.pid = self.proc.pid
        self.unix = unix or path is not None
        # every listener must accept before the daemon counts as started: the
        # first one may be listening while the others are still being bound
        self.addresses = ([self.path] if self.unix else []) + \
            ([("127.0.0.1", self.port)] if tcp else []) + \
            [a for a in map(spec_to_address, extra_listen) if a]
        if wait:
            try:
                wait_for(self._ready, what="ipcd to listen on %r" % self.addresses)
            except BaseException:
                # no `with` block will clean up after a constructor that failed
                self.__exit__(*sys.exc_info())
                raise

    def _ready(self):
        if self.proc.poll() is not None:
            fail("ipcd exited early with %s: %s" % (self.proc.returncode, self.log()))
        try:
            for a in self.addresses:
                Conn(a).close()
            return True
        except OSError:
            return False

    def stats(self, via=None):
        """`stats` as a dict (the listener: values collected in a list under
        "listener"), asked on `via` or else on a fresh Unix connection."""
        c = via or self.connect()
        try:
            f = c.request("stats")
        finally:
            if via is None:
                c.close()
        check(f.kind == "OK", "stats answered %r" % f)
        d = {"listener": []}
        for k, v in parse_kv(f.payload):
            if k == "listener":
                d["listener"].append(v)
            else:
                d[k] = v
        return d

    def wait_clients(self, n, via=None, timeout=10.0):
        """Wait until the daemon has n clients. Asked on `via`, n counts it;
        asked on fresh connections, n does not count the asking one (which
        may linger briefly after, so use `via` where exact counts matter)."""
        extra = 0 if via else 1
        last = []

        def cond():
            last[:] = [int(self.stats(via)["clients"]) - extra]
            return last[0] == n
        if not wait_for_quietly(cond, timeout):
            fail("ipcd has %s clients, expected %d" % (last[0] if last else "?", n))

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
        if self.proc in _owned:
            _owned.remove(self.proc)
        self.stderr.close()
        if self.notify:
            self.notify.close()
        skipped = exc[0] is SystemExit and exc[1].code in (0, SKIP)
        report = sanitizer_report(self.log())
        if report and exc[0] is None:
            print("--- ipcd stderr (pid %d) ---\n%s---" % (self.pid, self.log()[-8000:]),
                  file=sys.stderr)
            shutil.rmtree(self.dir, ignore_errors=True)
            fail("ipcd (pid %d) reported: %s" % (self.pid, report))
        if exc[0] is not None and not skipped:
            # a failed test: show what the daemon said
            log = self.log()
            if log:
                print("--- ipcd stderr (pid %d) ---\n%s---" % (self.pid, log[-4000:]),
                      file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _on_sigterm(signum, frame):
    # meson's timeout: take our daemons down with us, then go
    _kill_owned()
    print("killed by signal %d" % signum, flush=True)
    os._exit(1)



def write_file(path, text, mode=0o644):
    """Replace a file atomically (a reload never sees half of it)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


@contextlib.contextmanager
def configured(conf, *args, files=None, open_socket=False, **kw):
    """A directory holding ipcd.conf (@DIR@ replaced by the directory) and
    `files` ({name: (text, mode)}), and an ipcd started with --config on it.
    With open_socket, the Unix socket is made connectable by every user (for
    clients running as another uid)."""
    cdir = public_tmpdir("ipcd-conf-")
    try:
        for name, (text, mode) in (files or {}).items():
            write_file(os.path.join(cdir, name), text.replace("@DIR@", cdir), mode)
        path = os.path.join(cdir, "ipcd.conf")
        write_file(path, conf.replace("@DIR@", cdir))
        with Daemon("--config", path, *args, **kw) as d:
            d.conf = path
            d.confdir = cdir
            if open_socket and d.unix:
                os.chmod(d.path, 0o666)
            yield d
    finally:
        shutil.rmtree(cdir, ignore_errors=True)

def run_tests(tests):
    """Run each test function; print a summary line meson and CI can read.
    Exit 0 if all ran tests passed, 77 if every test was skipped, else 1."""
    only = sys.argv[1:]
    passed = failed = skipped = 0
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:   # leave a caller's handler be
        signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
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
                skipped += 1
                print("skip %s" % t.__name__, flush=True)
            else:
                failed += 1
                print("FAIL %s (%.2fs)" % (t.__name__, time.monotonic() - start), flush=True)
        except Exception as e:  # a broken assertion or protocol error
            failed += 1
            import traceback
            traceback.print_exc()
            print("FAIL %s: %r" % (t.__name__, e), flush=True)
        finally:
            _kill_owned()
    print("%d passed, %d failed, %d skipped (%.1fs)" % (passed, failed, skipped,
                                                       time.monotonic() - started))
    sys.exit(1 if failed else SKIP if skipped and not passed else 0)
