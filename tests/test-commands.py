#!/usr/bin/env python3
"""Configured commands (SPEC 7): arguments passed through byte-exact and never
interpreted, argument limits, a cleared environment, stdin /dev/null, output
streamed as it is produced, MaxOutputBytes, exit status and signals,
timeouts and disconnects that leave no process behind, MaxRunning, one log
entry per run, and reload (the command, SIGHUP) swapping commands and tokens
without disturbing a command in flight."""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import ipcdtest
from ipcdtest import Conn, Daemon, check, fail, frame, parse_kv, wait_for

# Exec= lines: no ' ;' or ' #' (inline comments in ipcd.conf).
PIDS = "/bin/sh -c 'sleep 100 & echo $!; echo $$; wait'"
COMMANDS = r"""
[Command argv]
Exec=/usr/bin/printf '%s\0'
Arguments=any
Role=user

[Command two]
Exec=/usr/bin/printf '%s\0'
Arguments=2
Role=user

[Command fixed]
Exec=/bin/echo fixed
Arguments=none
Role=user

[Command env]
Exec=/usr/bin/env
Role=guest

[Command stdin]
Exec=/usr/bin/readlink /proc/self/fd/0
Role=user

[Command cat]
Exec=/bin/cat
Role=user
TimeoutSec=5

[Command stream]
Exec=/bin/sh -c 'for i in 1 2 3; do echo line$i; sleep 0.5; done'
Role=user

[Command yes]
Exec=/usr/bin/yes abcdefg
Role=user
MaxOutputBytes=1000

[Command exit3]
Exec=/bin/sh -c 'echo failing; exit 3'

[Command kill9]
Exec=/bin/sh -c 'kill -KILL $$'

[Command segv]
Exec=/bin/sh -c 'kill -SEGV $$'

[Command slow]
Exec=@PIDS@
TimeoutSec=1

[Command stubborn]
Exec=/bin/sh -c 'trap "" TERM; sleep 100 & echo $!; echo $$; wait'
TimeoutSec=1

[Command hang]
Exec=@PIDS@
TimeoutSec=60
""".replace("@PIDS@", PIDS)

GATE = ("[Command gate]\nExec=/bin/sh -c 'echo started; while [ ! -e @DIR@/go ]; do sleep 0.02; done;"
        " echo done'\nRole=user\nTimeoutSec=30\n")


configured = ipcdtest.configured


write = ipcdtest.write_file


def run(conn, line):
    """Send a request; returns (the MORE payloads, the final frame)."""
    conn.send(line + b"\n" if isinstance(line, bytes) else line + "\n")
    more = []
    while True:
        f = conn.read_frame()
        if f.kind == "MORE":
            more.append(f.payload)
        elif f.kind in ("OK", "ERR"):
            return more, f
        else:
            fail("%r: unexpected frame %r" % (line, f))


def run_ok(conn, line):
    more, f = run(conn, line)
    check(f.kind == "OK" and f.payload == b"", "%r: %r" % (line[:80], f))
    return b"".join(more)


def quote(arg):
    """One argument on the wire: double quotes, C escapes for anything unusual."""
    out = []
    for b in arg:
        if 0x20 <= b < 0x7f and b not in b'"\\':
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return '"' + "".join(out) + '"'


def read_lines(conn, n):
    """MORE frames until n lines have come; returns them."""
    out = b""
    while out.count(b"\n") < n:
        f = conn.read_frame()
        check(f.kind == "MORE", "wanted output, got %r after %r" % (f, out))
        out += f.payload
    return out.decode().split()


def proc_state(pid):
    """(state, ppid) of a process, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def dead(pid, daemon_pid):
    """Gone, or a zombie left to some reaper other than ipcd (then it is dead
    and not ipcd's to reap); a zombie child of ipcd is ipcd's fault."""
    st = proc_state(pid)
    if st is None:
        return True
    return st[0] == "Z" and st[1] != daemon_pid


def wait_dead(pids, d, what):
    wait_for(lambda: all(dead(p, d.pid) for p in pids), timeout=10,
             what="%s (pids %s: %s) to be gone" % (what, pids, [proc_state(p) for p in pids]))


def children(pid):
    kids = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            st = proc_state(int(e))
            if st and st[1] == pid:
                kids.append(int(e))
    return kids


def wait_no_children(d):
    wait_for(lambda: not children(d.pid), timeout=10,
             what="ipcd to have no child left (has %s)" % children(d.pid))


RUN_LINE = re.compile(r"^ipcd: <\w+> client (\d+): ran (\S+)(.*) as (\w+): (\S+) after (\d+) ms, "
                      r"(\d+) bytes of output$", re.M)


def runs_logged(d, name=None):
    return [m for m in RUN_LINE.finditer(d.log()) if name is None or m.group(2) == name]


# ---------------------------------------------------------------- arguments


HOSTILE = [b";", b"a;b", b"$(id)", b"`id`", b"|", b"a|b", b"&&", b"a && b", b"*", b"/*", b"?",
           b"a\nb", b"\n", b"it's", b'say "hi"', b"'", b'"', b">x", b"<y", b"2>&1", b"$HOME",
           b"${PATH}", b"~", b"two words", b"  lead", b"\\", b"\\n", b"", b"#", b" #x", b"\t",
           b"\r", b"-n", b"--", b"%s%d%n", b"\xc3\xa9", b"\xff\xfe", bytes(range(1, 256))]


def test_hostile_arguments_passed_through():
    with configured(COMMANDS) as d:
        c = d.connect()
        pwned = os.path.join(d.confdir, "pwned")
        args = HOSTILE + [("$(touch %s)" % pwned).encode(), ("`touch %s`" % pwned).encode(),
                          ("; touch %s" % pwned).encode()]
        out = run_ok(c, "argv " + " ".join(quote(a) for a in args))
        check(out == b"".join(a + b"\0" for a in args),
              "arguments changed on the way: %r" % out[:500])
        # Unquoted on the wire too: words are split at blanks, nothing else.
        out = run_ok(c, b"argv ; $(id) `id` | && * a|b>c $HOME \xff")
        check(out == b";\0$(id)\0`id`\0|\0&&\0*\0a|b>c\0$HOME\0\xff\0", "unquoted: %r" % out)
        check(not os.path.exists(pwned), "an argument was interpreted by a shell")
        c.close()


def test_many_and_long_arguments():
    with configured(COMMANDS) as d:
        c = d.connect()
        args = [b"%d" % i for i in range(10000)]
        line = b"argv " + b" ".join(args)
        check(len(line) < 65536, "the request fits the default line limit")
        out = run_ok(c, line)
        check(out == b"".join(a + b"\0" for a in args), "10000 arguments: %d bytes back, %r..."
              % (len(out), out[:100]))
        big = (b"0123456789abcdef" * 3840)           # 60 KiB
        out = run_ok(c, b"argv " + big + b" end")
        check(out == big + b"\0end\0", "a 60 KiB argument: %d bytes back" % len(out))
        c.close()


def test_nul_and_argument_counts():
    with configured(COMMANDS) as d:
        c = d.connect()
        for line in (b'argv "a\\x00b"', b'argv ok "\\x00"', b"argv raw\x00nul"):
            more, f = run(c, line)
            check(not more and f.kind == "ERR" and f.word == "bad-request", "%r: %r" % (line, f))
            check(b"NUL" in f.payload, "%r: reason %r" % (line, f.payload))
        more, f = run(c, "fixed extra")
        check(not more and (f.kind, f.word) == ("ERR", "bad-request"), "Arguments=none: %r" % f)
        check(run_ok(c, "fixed") == b"fixed\n", "fixed without arguments")
        check(run_ok(c, "two a b") == b"a\0b\0", "two arguments")
        check(run_ok(c, "two a") == b"a\0", "one argument where two are allowed")
        # printf applies its format once even without arguments
        check(run_ok(c, "two") == b"\0", "no argument where two are allowed")
        more, f = run(c, "two a b c")
        check(not more and (f.kind, f.word) == ("ERR", "bad-request"), "Arguments=2: %r" % f)
        # none of the refused requests ran anything
        check(len(runs_logged(d, "argv")) == 0 and len(runs_logged(d, "two")) == 3,
              "runs logged: %r" % [m.group(0) for m in runs_logged(d)])
        c.close()


# ---------------------------------------------------------------- environment


def parse_env(out):
    env = {}
    for line in out.decode().splitlines():
        k, v = line.split("=", 1)
        check(k not in env, "%s twice in the environment" % k)
        env[k] = v
    return env


def test_environment_cleared():
    with configured(COMMANDS, tcp=True,
                    env={"LEAKY_SECRET": "x", "LD_PRELOAD": "", "HOME": "/root"}) as d:
        c = d.connect()
        cid = parse_kv(c.request("hello").payload)[3][1]
        env = parse_env(run_ok(c, "env"))
        check(set(env) == {"PATH", "IPCD_CLIENT_ID", "IPCD_COMMAND", "IPCD_TRANSPORT", "IPCD_ROLE",
                           "IPCD_PEER_UID", "IPCD_PEER_GID", "IPCD_PEER_PID"},
              "environment: %r" % env)
        check(env["PATH"] and "/usr/bin" in env["PATH"].split(":"), "PATH=%r" % env["PATH"])
        want = {"IPCD_CLIENT_ID": cid, "IPCD_COMMAND": "env", "IPCD_TRANSPORT": "unix",
                "IPCD_ROLE": "admin", "IPCD_PEER_UID": str(os.getuid()),
                "IPCD_PEER_GID": str(os.getgid()), "IPCD_PEER_PID": str(os.getpid())}
        check(all(env[k] == v for k, v in want.items()), "values: %r, want %r" % (env, want))
        c.close()

        t = d.connect_tcp()
        env = parse_env(run_ok(t, "env"))
        port = t.sock.getsockname()[1]
        check(set(env) == {"PATH", "IPCD_CLIENT_ID", "IPCD_COMMAND", "IPCD_TRANSPORT", "IPCD_ROLE",
                           "IPCD_PEER_ADDR"}, "TCP environment: %r" % env)
        check(env["IPCD_PEER_ADDR"] == "127.0.0.1:%d" % port and env["IPCD_ROLE"] == "guest"
              and env["IPCD_TRANSPORT"] == "tcp", "TCP values: %r" % env)
        t.close()


def test_stdin_is_dev_null():
    with configured(COMMANDS) as d:
        c = d.connect()
        check(run_ok(c, "stdin") == b"/dev/null\n", "stdin of a command")
        # cat reads EOF at once; anything the client sends after is the next request
        t0 = time.monotonic()
        c.send("cat\nping\n")
        f = c.read_frame()
        check(f.kind == "OK" and f.payload == b"", "cat: %r" % f)
        check(c.read_frame().payload == b"pong", "the next request is ipcd's, not cat's")
        check(time.monotonic() - t0 < 3, "cat waited for input")
        c.close()


# ---------------------------------------------------------------- output


def test_output_streams_line_by_line():
    with configured(COMMANDS) as d:
        c = d.connect()
        t0 = time.monotonic()
        c.send("stream\n")
        frames = []
        while True:
            f = c.read_frame()
            frames.append((time.monotonic() - t0, f))
            if f.kind != "MORE":
                break
        check(frames[-1][1].kind == "OK", "stream ended with %r" % frames[-1][1])
        more = [(t, f.payload) for t, f in frames[:-1]]
        check([p for _, p in more] == [b"line1\n", b"line2\n", b"line3\n"],
              "one MORE frame per line: %r" % more)
        first, end = more[0][0], frames[-1][0]
        check(first < 0.6, "the first line came after %.2fs" % first)
        check(end - first >= 0.9, "the first line came only %.2fs before the end" % (end - first))
        check(more[1][0] - first >= 0.3 and more[2][0] - more[1][0] >= 0.3,
              "lines came together: %r" % more)
        c.close()


def test_max_output_bytes():
    with configured(COMMANDS) as d:
        c = d.connect()
        more, f = run(c, "yes")
        out = b"".join(more)
        check(len(out) == 1000, "MaxOutputBytes=1000 let %d bytes through" % len(out))
        check(out == (b"abcdefg\n" * 200)[:1000], "the output was altered: %r" % out[-40:])
        check(f.kind == "ERR" and f.word == "output-too-large", "final frame %r" % f)
        wait_no_children(d)
        check(c.request("ping").payload == b"pong", "the connection stays usable")
        c.close()


def test_exit_status_and_signals():
    with configured(COMMANDS) as d:
        c = d.connect()
        more, f = run(c, "exit3")
        check(more == [b"failing\n"] and (f.kind, f.word) == ("ERR", "exit-3"), "exit 3: %r %r"
              % (more, f))
        more, f = run(c, "kill9")
        check((f.kind, f.word) == ("ERR", "signal-9"), "SIGKILL: %r" % f)
        more, f = run(c, "segv")
        check((f.kind, f.word) == ("ERR", "signal-11"), "SIGSEGV: %r" % f)
        check(b"\n" not in f.payload and f.payload, "one-line message: %r" % f.payload)
        wait_no_children(d)
        c.close()


# ---------------------------------------------------------------- no process left behind


def test_timeout_kills_the_command_and_its_children():
    with configured(COMMANDS) as d:
        c = d.connect()
        t0 = time.monotonic()
        c.send("slow\n")
        pids = [int(p) for p in read_lines(c, 2)]
        f = c.read_frame()
        took = time.monotonic() - t0
        check((f.kind, f.word) == ("ERR", "timeout"), "TimeoutSec=1: %r" % f)
        check(0.9 <= took < 4, "timeout after %.2fs" % took)
        wait_dead(pids, d, "the timed-out command and its background child")
        wait_no_children(d)
        # SIGTERM ignored: SIGKILL follows after the grace period.
        t0 = time.monotonic()
        c.send("stubborn\n")
        pids = [int(p) for p in read_lines(c, 2)]
        f = c.read_frame()
        took = time.monotonic() - t0
        check((f.kind, f.word) == ("ERR", "timeout"), "stubborn: %r" % f)
        check(1.9 <= took < 10, "SIGTERM ignored, answered after %.2fs" % took)
        wait_dead(pids, d, "the command that ignored SIGTERM")
        wait_no_children(d)
        check(len(runs_logged(d, "slow")) == 1 and runs_logged(d, "slow")[0].group(5) == "timeout",
              "log: %r" % [m.group(0) for m in runs_logged(d)])
        c.close()


def disconnect_kills(d, conn):
    conn.send("hang\n")
    pids = [int(p) for p in read_lines(conn, 2)]
    try:
        check(all(proc_state(p) for p in pids), "hang is running")
        conn.close()
        wait_dead(pids, d, "the command of a client that went away")
        wait_no_children(d)
    finally:
        # if ipcd left them running, they are still ours to end
        for p in pids:
            st = proc_state(p)
            if st and st[0] != "Z":
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    wait_for(lambda: [m for m in runs_logged(d, "hang") if m.group(5) == "disconnected"],
             what="the run's log line (disconnected)")


def test_disconnect_kills_the_command_unix():
    with configured(COMMANDS) as d:
        disconnect_kills(d, d.connect())


def test_disconnect_kills_the_command_tcp():
    """SPEC 7: a client that disconnects kills its running command (any transport)."""
    conf = COMMANDS.replace("[Command hang]", "[Command hang]\nRole=guest")
    with configured(conf, tcp=True) as d:
        disconnect_kills(d, d.connect_tcp())


def test_half_close_still_gets_the_output():
    """A client that shuts down its sending side (printf cmd | socat) waits for
    the answer: that is not a disconnect."""
    with configured(COMMANDS) as d:
        c = d.connect()
        c.send("stream\n")
        c.sock.shutdown(socket.SHUT_WR)
        more, f = [], None
        while True:
            f = c.read_frame()
            if f.kind != "MORE":
                break
            more.append(f.payload)
        check(b"".join(more) == b"line1\nline2\nline3\n" and f.kind == "OK",
              "after a half-close: %r %r" % (more, f))
        c.wait_eof()
        c.close()


# ---------------------------------------------------------------- MaxRunning, log


def test_max_running():
    with configured("[Daemon]\nMaxRunning=2\n" + GATE) as d:
        a, b, x = d.connect(), d.connect(), d.connect()
        for conn in (a, b):
            conn.send("gate\n")
            check(read_lines(conn, 1) == ["started"], "gate did not start")
        more, f = run(x, "gate")
        check(not more and (f.kind, f.word) == ("ERR", "busy") and b"MaxRunning=2" in f.payload,
              "a third run: %r %r" % (more, f))
        check(x.request("ping").payload == b"pong", "the refused client stays connected")
        wait_for(lambda: "refused gate: MaxRunning=2" in d.log(), what="the busy log line")
        open(os.path.join(d.confdir, "go"), "w").close()
        for conn in (a, b):
            f = conn.read_frame()
            check(f.kind == "MORE" and f.payload == b"done\n", "gate: %r" % f)
            check(conn.read_frame().kind == "OK", "gate ends OK")
        check(run_ok(x, "gate") == b"started\ndone\n", "a run after the others ended")
        for conn in (a, b, x):
            conn.close()


def test_one_log_entry_per_run():
    with configured(COMMANDS) as d:
        c = d.connect()
        cid = parse_kv(c.request("hello").payload)[3][1]
        run_ok(c, "argv alpha 'two words' ';'")
        run(c, "exit3")
        run_ok(c, "stream")
        run(c, "fixed extra")      # refused before running: no run entry
        wait_for(lambda: len(runs_logged(d)) >= 3, what="three run entries")
        runs = runs_logged(d)
        check(len(runs) == 3, "one entry per run: %r" % [m.group(0) for m in runs])
        got = [(m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)) for m in runs]
        check(got == [(cid, "argv", r" alpha two\x20words ;", "admin", "ok"),
                      (cid, "exit3", "", "admin", "exit-3"),
                      (cid, "stream", "", "admin", "ok")], "entries: %r" % got)
        check(int(runs[2].group(6)) >= 900, "stream ran ~1.5s, logged %s ms" % runs[2].group(6))
        check(runs[0].group(7) == "18", "bytes of output: %r" % runs[0].group(0))
        # who: the client id leads to the peer's identity
        check(re.search(r"client %s: connected on unix:\S+ from pid=%d uid=0 " % (cid, os.getpid()),
                        d.log()), "the connect line names the client's identity")
        c.close()


# ---------------------------------------------------------------- reload


RELOAD_A = GATE + """
[Command old-cmd]
Exec=/bin/echo old
Role=user

[Token t]
SecretFile=@DIR@/tok-a
Role=user
"""
RELOAD_B = """
[Command new-cmd]
Exec=/bin/echo new
Role=user

[Token t]
SecretFile=@DIR@/tok-b
Role=user
"""
BROKEN_AT_3 = "[Command new-cmd]\nExec=/bin/echo new\nArguments=lots\nRole=user\n"
RELOAD_FILES = {"tok-a": ("token-aaa-0123456789\n", 0o600), "tok-b": ("token-bbb-0123456789\n", 0o600)}


def try_auth(d, token):
    t = d.connect_tcp()
    try:
        return t.request("auth " + token)
    finally:
        t.close()


def test_reload_swaps_commands_and_tokens():
    with configured(RELOAD_A, tcp=True, files=RELOAD_FILES) as d:
        busy = d.connect(timeout=30)
        busy.send("gate\n")
        check(read_lines(busy, 1) == ["started"], "gate started")
        early_tcp = d.connect_tcp()
        admin = d.connect()
        check(run_ok(admin, "old-cmd") == b"old\n", "old-cmd before the reload")

        write(d.conf, RELOAD_B.replace("@DIR@", d.confdir))
        f = admin.request("reload")
        check(f.kind == "OK" and f.payload == b"reloaded: 1 command(s), 1 token(s)\n",
              "reload: %r" % f)
        more, f = run(admin, "old-cmd")
        check(not more and f.word == "unknown-command", "a removed command: %r" % f)
        check(run_ok(admin, "new-cmd") == b"new\n", "the new command")
        check("new-cmd" in admin.request("help").payload.decode(), "help shows new-cmd")

        # the command in flight is unaffected and completes
        check(busy.readable() is False, "the running command was disturbed: %r" % busy.buf)
        open(os.path.join(d.confdir, "go"), "w").close()
        f = busy.read_frame()
        check(f.kind == "MORE" and f.payload == b"done\n", "the running command: %r" % f)
        check(busy.read_frame().kind == "OK", "the running command ends OK")
        check(run(busy, "old-cmd")[1].word == "unknown-command", "its next request sees the reload")
        check(run_ok(busy, "new-cmd") == b"new\n", "and can run the new command")
        busy.close()

        f = try_auth(d, "token-bbb-0123456789")
        check(f.payload == b"role: user\n", "the new token: %r" % f)
        f = early_tcp.request("auth token-bbb-0123456789")
        check(f.payload == b"role: user\n", "a connection from before the reload: %r" % f)
        f = try_auth(d, "token-aaa-0123456789")
        check((f.kind, f.word) == ("ERR", "denied"), "the old token still works: %r" % f)
        check("Reloaded the configuration: 1 command(s), 1 token(s)" in d.log(), "reload log line")
        early_tcp.close()
        admin.close()


def test_reload_is_atomic():
    """Clients see the old set of commands or the new one, never a mixture."""
    sets = {"x": "[Command x1]\nExec=/bin/echo x1\nRole=user\n[Command x2]\nExec=/bin/echo x2\n"
                 "Role=user\n",
            "y": "[Command y1]\nExec=/bin/echo y1\nRole=user\n[Command y2]\nExec=/bin/echo y2\n"
                 "Role=user\n[Command y3]\nExec=/bin/echo y3\nRole=user\n"}
    with configured(sets["x"]) as d:
        stop = threading.Event()
        errors = []

        def reloader():
            r = d.connect()
            try:
                for i in range(40):
                    write(d.conf, sets["y" if i % 2 == 0 else "x"])
                    f = r.request("reload")
                    if f.kind != "OK":
                        errors.append("reload: %r" % f)
            except Exception as e:
                errors.append(repr(e))
            finally:
                stop.set()
                r.close()
        th = threading.Thread(target=reloader)
        th.start()
        c = d.connect()
        seen = {}
        try:
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:
                names = {l.split(" ", 1)[0] for l in c.request("help").payload.decode().split("\n")
                         if l[:1] in ("x", "y")}
                key = "".join(sorted(names))
                seen[key] = seen.get(key, 0) + 1
        finally:
            th.join(30)
        check(not errors, "reloads failed: %r" % errors[:3])
        check(set(seen) <= {"x1x2", "y1y2y3"}, "a client saw a mixture: %r" % seen)
        check(len(seen) == 2, "both configurations should have been seen: %r" % seen)
        c.close()


def test_reload_broken_config_keeps_the_old_one():
    with configured(RELOAD_A, tcp=True, files=RELOAD_FILES) as d:
        admin = d.connect()
        write(d.conf, BROKEN_AT_3)
        f = admin.request("reload")
        check((f.kind, f.word) == ("ERR", "failed"), "reload of a broken file: %r" % f)
        check(re.match(r"^%s:3: Arguments=.*lots" % re.escape(d.conf), f.payload.decode()),
              "the error names file:line: %r" % f.payload)
        check(run_ok(admin, "old-cmd") == b"old\n", "the old command keeps working")
        check(run(admin, "new-cmd")[1].word == "unknown-command", "nothing of the broken file")
        fresh = d.connect()
        check(run_ok(fresh, "old-cmd") == b"old\n", "a new client gets the old configuration")
        fresh.close()
        check(try_auth(d, "token-aaa-0123456789").payload == b"role: user\n", "the old token keeps working")
        wait_for(lambda: "Configuration error, keeping the running configuration: %s:3:" % d.conf
                 in d.log(), what="the reload error in the log")
        admin.close()


def test_sighup_reloads():
    with configured(RELOAD_A, tcp=True, files=RELOAD_FILES) as d:
        write(d.conf, RELOAD_B.replace("@DIR@", d.confdir))
        os.kill(d.pid, signal.SIGHUP)
        wait_for(lambda: "Reloaded the configuration: 1 command(s), 1 token(s)" in d.log(),
                 what="SIGHUP to reload")
        c = d.connect()
        check(run_ok(c, "new-cmd") == b"new\n", "new command after SIGHUP")
        check(run(c, "old-cmd")[1].word == "unknown-command", "old command after SIGHUP")
        c.close()
        # a broken file on SIGHUP: logged with file:line, nothing changes
        write(d.conf, BROKEN_AT_3)
        os.kill(d.pid, signal.SIGHUP)
        wait_for(lambda: "Configuration error, keeping the running configuration: %s:3:" % d.conf
                 in d.log(), what="the SIGHUP reload error in the log")
        check(d.alive(), "ipcd died on a broken file")
        c = d.connect()
        check(run_ok(c, "new-cmd") == b"new\n", "the running configuration stays")
        c.close()
        check(try_auth(d, "token-bbb-0123456789").payload == b"role: user\n", "the running token stays")


def test_check_config_names_file_and_line():
    """ipcd --check-config: every problem as file:line: message, exit non-zero."""
    cdir = tempfile.mkdtemp(prefix="ipcd-conf-")
    try:
        conf = os.path.join(cdir, "ipcd.conf")
        text = ("[Command ok]\nExec=/bin/true\n"          # 1-2
                "[Command rel]\nExec=bin/true\n"          # 3-4
                "[Command args]\nExec=/bin/true\nArguments=lots\n"   # 5-7
                "[Command ping]\nExec=/bin/true\n"        # 8-9
                "[Command grp]\nExec=/bin/true\nAllowGroups=no-such-group-xyz\n"  # 10-12
                "[Command keys]\nExec=/bin/true\nColour=blue\n"      # 13-15
                "[Command noexec]\nRole=user\n")          # 16-17
        write(conf, text)
        r = subprocess.run([ipcdtest.IPCD, "--config", conf, "--check-config"],
                           capture_output=True, text=True, timeout=30, env=ipcdtest.clean_env())
        check(r.returncode != 0, "--check-config accepted errors")
        lines = (r.stdout + r.stderr).splitlines()
        # (a section's own problem is reported at its header or first key)
        for ns, what in (((4,), "absolute"), ((7,), "lots"), ((8, 9), "built-in"),
                         ((12,), "no-such-group-xyz"), ((15,), "Colour")):
            check(any(l.startswith("%s:%d: " % (conf, n)) and what in l for l in lines for n in ns),
                  "no %s:%s: error about %s in %r" % (conf, ns, what, lines))
        bad = [l for l in lines if not re.match(r"^%s:\d+: " % re.escape(conf), l)]
        check(not bad, "errors without file:line: %r" % bad)
        check(any("noexec" in l for l in lines), "the command without Exec= is reported")
    finally:
        shutil.rmtree(cdir, ignore_errors=True)


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_hostile_arguments_passed_through,
        test_many_and_long_arguments,
        test_nul_and_argument_counts,
        test_environment_cleared,
        test_stdin_is_dev_null,
        test_output_streams_line_by_line,
        test_max_output_bytes,
        test_exit_status_and_signals,
        test_timeout_kills_the_command_and_its_children,
        test_disconnect_kills_the_command_unix,
        test_disconnect_kills_the_command_tcp,
        test_half_close_still_gets_the_output,
        test_max_running,
        test_one_log_entry_per_run,
        test_reload_swaps_commands_and_tokens,
        test_reload_is_atomic,
        test_reload_broken_config_keeps_the_old_one,
        test_sighup_reloads,
        test_check_config_names_file_and_line,
    ])
