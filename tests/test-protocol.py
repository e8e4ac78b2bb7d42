#!/usr/bin/env python3
"""Protocol 1 against a live ipcd: every built-in command byte-exact as
DEVELOPERS.md states it, quoting, CRLF, blank lines, errors that keep the
connection, socat and the plain C client, deep pipelining, IPv6."""
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time

import ipcdtest
from ipcdtest import Daemon, check, check_keys_in_order, frame, parse_kv

PONG = b"OK 4\npong\n"
HELLO_KEYS = ["server", "version", "protocol", "client", "transport", "peer", "role"]
STATS_KEYS = ["uptime_sec", "clients", "clients_total", "clients_refused", "max_clients",
              "commands_ok", "commands_failed", "bytes_in", "bytes_out", "events_published",
              "events_delivered", "events_dropped", "slow_consumer_disconnects", "activation"]


def err_frame(conn, request, code):
    """Send request, expect ERR code with a one-line message; return the message."""
    f = conn.request(request)
    check(f.kind == "ERR" and f.word == code, "%r: wanted ERR %s, got %r" % (request, code, f))
    check(f.payload and b"\n" not in f.payload,
          "%r: error message must be one line without LF: %r" % (request, f.payload))
    return f.payload


def test_ping():
    with Daemon() as d:
        c = d.connect()
        c.exchange("ping", PONG)
        c.exchange("ping", PONG)        # nothing extra came after the first answer
        c.exchange("ping hello", b"OK 5\nhello\n")
        c.exchange("ping 'two words'", b"OK 9\ntwo words\n")
        c.exchange('ping ""', b"OK 0\n\n")
        err_frame(c, "ping a b", "bad-request")
        c.exchange("ping", PONG)        # the connection stays open after bad-request
        c.close()


def test_echo():
    with Daemon() as d:
        c = d.connect()
        c.exchange("echo A B", b"OK 3\nA B\n")
        c.exchange("echo", b"OK 0\n\n")
        c.exchange("echo  \t a  \t\t b   ", b"OK 3\na b\n")
        c.exchange("echo one", b"OK 3\none\n")
        c.exchange("echo '' ''", b"OK 1\n \n")
        c.exchange("echo \"\"", b"OK 0\n\n")
        # many arguments, and a long one, within the default 64 KiB line limit
        words = b" ".join(b"%d" % i for i in range(10000))
        c.exchange(b"echo " + words, frame("OK", words))
        big = bytes(range(256)) * 200
        quoted = b'"' + b"".join(b"\\x%02x" % b for b in big[:10000]) + b'"'
        c.exchange(b"echo " + quoted, frame("OK", big[:10000]))
        c.exchange(b"echo " + b"y" * 65530, frame("OK", b"y" * 65530))
        c.close()


def test_quoting():
    cases = [
        # (wire line, payload the echo must give back)
        (b'echo "a  b"', b"a  b"),
        (b"echo 'a  b'", b"a  b"),
        (b"echo don't't", b"don't't"),
        (b'echo a"b"c', b'a"b"c'),
        (b'echo "\\\\ \\" \\n \\t \\r"', b'\\ " \n \t \r'),
        (b'echo "\\x41\\x62\\x7e\\x7F"', b"Ab~\x7f"),
        (b'echo "\\x00"', b"\x00"),
        (b'echo "a\\x00b" c', b"a\x00b c"),
        (b'echo "\\xff\\x80\\xc3\\xa9"', b"\xff\x80\xc3\xa9"),
        (b"echo '\\n\\x41\\\\'", b"\\n\\x41\\\\"),
        (b"echo 'say \"hi\"'", b'say "hi"'),
        (b'echo "it\'s"', b"it's"),
        (b"echo \\n", b"\\n"),
        (b"echo \xc3\xa9t\xc3\xa9 \xff", b"\xc3\xa9t\xc3\xa9 \xff"),   # raw bytes
        (b"echo a\x00b", b"a\x00b"),                                   # a raw NUL
        (b'echo "OK 3\\nabc"', b"OK 3\nabc"),
        (b'"echo" \'x\'', b"x"),
        (b"echo\tx", b"x"),
    ]
    with Daemon() as d:
        c = d.connect()
        for line, want in cases:
            c.exchange(line, frame("OK", want))
        # malformed quoting: bad-request, and the connection stays usable
        for bad in [b'echo "abc', b"echo 'abc", b'echo "\\q"', b'echo "\\x4"', b'echo "\\x"',
                    b'echo "a"b', b"echo 'a'b", b'echo "\\x0g"', b'echo "abc\\"']:
            err_frame(c, bad, "bad-request")
            c.exchange("ping", PONG)
        c.close()


def test_crlf_and_blank_lines():
    with Daemon() as d:
        c = d.connect()
        c.send(b"ping\r\n")
        check(c.read_frame_raw() == PONG, "CRLF ping")
        c.send(b"echo a b\r\n")
        check(c.read_frame_raw() == b"OK 3\na b\n", "CR must be dropped from the last argument")
        # Blank lines get no answer at all: the first answer is the ping's.
        c.send(b"\n\n  \n\t\n\r\n \t \r\nping\n\necho end\n")
        check(c.read_frame_raw() == PONG, "blank lines must be ignored")
        check(c.read_frame_raw() == b"OK 3\nend\n", "blank lines must be ignored")
        c.exchange("ping", PONG)
        c.close()


def test_unknown_and_bad_request():
    with Daemon() as d:
        c = d.connect()
        c.exchange("nosuch", b"ERR unknown-command 23\nunknown command: nosuch\n")
        c.exchange("nosuch a b c", b"ERR unknown-command 23\nunknown command: nosuch\n")
        c.exchange("PING", b"ERR unknown-command 21\nunknown command: PING\n")
        # a name with control bytes still gets a one-line message
        msg = err_frame(c, b'"x\\ny"', "unknown-command")
        check(b"\n" not in msg, "message must stay one line")
        for bad in ['hello extra', 'quit now', 'stats x', 'help a b']:
            err_frame(c, bad, "bad-request")
        c.exchange("ping", PONG)
        c.close()


def test_hello_unix():
    with Daemon() as d:
        c1, c2 = d.connect(), d.connect()
        f = c1.request("hello")
        check(f.kind == "OK", "hello: %r" % f)
        pairs = parse_kv(f.payload)
        check_keys_in_order(pairs, HELLO_KEYS, "hello")
        h = dict(pairs)
        check(h["server"] == "ipcd", "server: %r" % h["server"])
        check(h["protocol"] == "1", "protocol: %r" % h["protocol"])
        check(re.fullmatch(r"\d+(\.\d+)*([~+.-]\w+)*", h["version"]) is not None,
              "version: %r" % h["version"])
        out = subprocess.run([ipcdtest.IPCD, "--version"], capture_output=True, timeout=10)
        check(out.returncode == 0 and h["version"].encode() in out.stdout,
              "ipcd --version (%r) should name version %s" % (out.stdout, h["version"]))
        check(h["transport"] == "unix", "transport: %r" % h["transport"])
        want_peer = "pid=%d uid=%d gid=%d" % (os.getpid(), os.geteuid(), os.getegid())
        check(h["peer"] == want_peer, "peer: %r, wanted %r" % (h["peer"], want_peer))
        check(h["role"] == ("admin" if os.geteuid() == 0 else "user"), "role: %r" % h["role"])
        check(re.fullmatch(r"\d+", h["client"]) is not None, "client: %r" % h["client"])
        h2 = dict(parse_kv(c2.request("hello").payload))
        check(h2["client"] != h["client"], "two connections share client id %s" % h["client"])
        c3 = d.connect()
        h3 = dict(parse_kv(c3.request("hello").payload))
        check(int(h3["client"]) > int(h2["client"]), "client ids must increase")
        for c in (c1, c2, c3):
            c.close()


def test_hello_tcp():
    with Daemon(tcp=True) as d:
        c = d.connect_tcp()
        f = c.request("hello")
        check(f.kind == "OK", "hello: %r" % f)
        pairs = parse_kv(f.payload)
        check_keys_in_order(pairs, HELLO_KEYS, "hello")
        h = dict(pairs)
        check(h["transport"] == "tcp", "transport: %r" % h["transport"])
        want_peer = "127.0.0.1:%d" % c.sock.getsockname()[1]
        check(h["peer"] == want_peer, "peer: %r, wanted %r" % (h["peer"], want_peer))
        check(h["role"] == "guest", "role: %r" % h["role"])
        c.close()


def help_lines(conn):
    f = conn.request("help")
    check(f.kind == "OK" and f.payload.endswith(b"\n"), "help: %r" % f)
    lines = f.payload.decode().split("\n")[:-1]
    names = []
    for line in lines:
        check(re.fullmatch(r"[a-z][a-z0-9-]*( \S.*)? - \S.*", line) is not None,
              "help line not `NAME USAGE - description`: %r" % line)
        names.append(line.split(" ", 1)[0])
    check(len(names) == len(set(names)), "help lists a command twice: %r" % names)
    return lines, names


def test_help():
    guest_cmds = {"ping", "echo", "hello", "help", "quit"}
    with Daemon(tcp=True) as d:
        c = d.connect()
        lines, names = help_lines(c)
        check(guest_cmds | {"stats", "clients"} <= set(names), "admin help: %r" % names)
        f = c.request("help ping")
        check(f.kind == "OK" and f.payload.startswith(b"ping"), "help ping: %r" % f)
        usage = f.payload.decode().rstrip("\n")
        check("\n" not in usage, "help ping must be one line: %r" % usage)
        check(any(line.startswith(usage) or usage.startswith(line) for line in lines),
              "help ping %r does not match its help line" % usage)
        err_frame(c, "help nosuch", "unknown-command")
        # a name the client chose never breaks the one-line message (nor
        # carries terminal escapes into ipcctl's output and the logs)
        for bad in [b'help "x\\ny"', b'help "\\x1b[31mred"', b'"\\x1b[31mred"']:
            msg = err_frame(c, bad, "unknown-command")
            check(all(b >= 0x20 for b in msg), "%r: control bytes in %r" % (bad, msg))
        c.exchange("ping", PONG)

        t = d.connect_tcp()
        _, gnames = help_lines(t)
        check(guest_cmds <= set(gnames), "guest help: %r" % gnames)
        check("stats" not in gnames and "clients" not in gnames,
              "a guest's help must list only what a guest may run: %r" % gnames)
        c.close()
        t.close()


def stats_of(conn):
    f = conn.request("stats")
    check(f.kind == "OK", "stats: %r" % f)
    pairs = parse_kv(f.payload)
    check_keys_in_order(pairs, STATS_KEYS, "stats")
    return pairs


def test_stats():
    with Daemon("--max-clients", "77", tcp=True) as d:
        c = d.connect()
        d.wait_clients(1, via=c)   # c only: the start-up probe has gone
        t = d.connect_tcp()
        t.exchange("ping", PONG)
        t.exchange("nosuch", frame("ERR", "unknown command: nosuch", "unknown-command"))
        pairs = stats_of(c)
        s = dict(pairs)
        for k in STATS_KEYS[:-1]:
            check(re.fullmatch(r"\d+", s[k]) is not None, "stats %s: %r" % (k, s[k]))
        check(s["activation"] == "standalone", "activation: %r" % s["activation"])
        check(int(s["max_clients"]) == 77, "max_clients: %r" % s["max_clients"])
        check(int(s["clients"]) == 2, "clients: %r (c and t)" % s["clients"])
        check(int(s["clients_total"]) >= 3, "clients_total: %r" % s["clients_total"])
        check(int(s["clients_refused"]) == 0, "clients_refused: %r" % s["clients_refused"])
        check(int(s["commands_ok"]) >= 1, "commands_ok: %r" % s["commands_ok"])
        check(int(s["commands_failed"]) >= 1, "commands_failed: %r" % s["commands_failed"])
        check(int(s["bytes_in"]) >= len("ping\nnosuch\n"), "bytes_in: %r" % s["bytes_in"])
        check(int(s["bytes_out"]) >= len(PONG), "bytes_out: %r" % s["bytes_out"])
        # listener lines come last, one per listener
        keys = [k for k, _ in pairs]
        first = keys.index("listener")
        check(all(k == "listener" for k in keys[first:]), "listener lines must come last")
        listeners = [v for k, v in pairs if k == "listener"]
        want = ["unix:" + d.path, "tcp:127.0.0.1:%d" % d.port]
        check(sorted(listeners) == sorted(want), "listeners %r, wanted %r" % (listeners, want))

        # counters move
        s2 = dict(stats_of(c))
        check(int(s2["commands_ok"]) > int(s["commands_ok"]), "commands_ok must count stats")
        check(int(s2["bytes_in"]) > int(s["bytes_in"]), "bytes_in must grow")
        t.close()
        d.wait_clients(1, via=c)

        # stats needs role user: a TCP guest is refused, with the role named
        t = d.connect_tcp()
        t.exchange("stats", frame("ERR", "stats requires role user", "denied"))
        t.exchange("clients", frame("ERR", "clients requires role admin", "denied"))
        t.exchange("ping", PONG)
        c.close()
        t.close()


def test_clients():
    line_re = re.compile(r"id=(\d+) transport=(unix|tcp) peer=(\S.*?) "
                         r"since=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*) role=(?:guest|user|admin) "
                         r"commands=(\d+) "
                         r"queued=(\d+) topics=(\S*)")
    with Daemon(tcp=True) as d:
        c = d.connect()
        d.wait_clients(1, via=c)
        my_id = dict(parse_kv(c.request("hello").payload))["client"]
        t = d.connect_tcp()
        t.exchange("ping", PONG)
        t.exchange("ping", PONG)
        t_id = dict(parse_kv(t.request("hello").payload))["client"]
        rows = {}

        def listing():
            f = c.request("clients")
            check(f.kind == "OK" and f.payload.endswith(b"\n"), "clients: %r" % f)
            rows.clear()
            for line in f.payload.decode().split("\n")[:-1]:
                m = line_re.fullmatch(line)
                check(m is not None, "clients line does not match the contract: %r" % line)
                rows[m.group(1)] = m
            # t's counters are updated by its own threads: let them settle
            return t_id in rows and rows[t_id].group(5) == "3" and rows[t_id].group(6) == "0"
        ipcdtest.wait_for_quietly(listing, 5)
        check(set(rows) == {my_id, t_id}, "clients lists %r, wanted %r" % (set(rows), {my_id, t_id}))
        check(rows[my_id].group(2) == "unix", "own transport")
        check(rows[t_id].group(2) == "tcp", "tcp transport")
        check(rows[t_id].group(3) == "127.0.0.1:%d" % t.sock.getsockname()[1],
              "tcp peer %r" % rows[t_id].group(3))
        check(str(os.getpid()) in rows[my_id].group(3), "unix peer %r" % rows[my_id].group(3))
        check(rows[t_id].group(5) == "3", "t ran 3 commands: %r" % rows[t_id].group(5))
        check(rows[t_id].group(6) == "0", "t has nothing queued: %r" % rows[t_id].group(6))
        c.close()
        t.close()


def test_quit():
    with Daemon(tcp=True) as d:
        for c in (d.connect(), d.connect_tcp()):
            c.exchange("ping", PONG)
            c.exchange("quit", b"OK 0\n\n")
            c.wait_eof()
            c.close()
        # requests pipelined behind quit are not answered
        c = d.connect()
        c.send(b"ping\nquit\nping\nping\n")
        check(c.read_frame_raw() == PONG, "ping before quit")
        check(c.read_frame_raw() == b"OK 0\n\n", "quit")
        c.wait_eof()
        c.close()
        d.connect().exchange("ping", PONG)


def test_half_close():
    """A client that sends its requests and shuts down its sending side
    (printf ... | nc -N) still gets every answer, then EOF."""
    with Daemon(tcp=True) as d:
        for c in (d.connect(), d.connect_tcp()):
            c.send(b"ping\necho half closed\nnosuch\n")
            c.sock.shutdown(socket.SHUT_WR)
            check(c.read_frame_raw() == PONG, "ping")
            check(c.read_frame_raw() == b"OK 11\nhalf closed\n", "echo")
            check(c.read_frame().word == "unknown-command", "nosuch")
            c.wait_eof()
            c.close()
        # a last line without LF at EOF is not a request: nothing answers it
        c = d.connect()
        c.send(b"ping\nping")
        c.sock.shutdown(socket.SHUT_WR)
        check(c.read_frame_raw() == PONG, "ping")
        c.wait_eof()
        c.close()
        d.connect().exchange("ping", PONG)


def socat_ping(target):
    """Type `ping` into socat as a person would; read what it prints."""
    p = ipcdtest.own(subprocess.Popen(["socat", "-", target], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        p.stdin.write(b"ping\n")
        p.stdin.flush()
        out = b""
        deadline = time.monotonic() + 10
        while len(out) < len(PONG) and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
        check(out == PONG, "socat %s printed %r" % (target, out))
        rest, err = p.communicate(b"quit\n", timeout=10)
        check(rest == b"OK 0\n\n", "socat %s after quit printed %r" % (target, rest))
        check(p.returncode == 0, "socat exited %s: %r" % (p.returncode, err))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_socat():
    if not shutil.which("socat"):
        ipcdtest.skip("socat is not installed")
    with Daemon(tcp=True) as d:
        socat_ping("UNIX-CONNECT:" + d.path)
        socat_ping("TCP:127.0.0.1:%d" % d.port)


def run_test_client(*args):
    p = subprocess.run([ipcdtest.TEST_CLIENT] + list(args), capture_output=True, timeout=60)
    check(p.returncode == 0, "test-client %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                             p.stderr.decode(errors="replace")))


def test_c_client():
    with Daemon(tcp=True) as d:
        run_test_client("unix:" + d.path)
        run_test_client("tcp:127.0.0.1:%d" % d.port)
        run_test_client("unix:" + d.path, "pipeline", "1000")
        run_test_client("tcp:127.0.0.1:%d" % d.port, "pipeline", "1000")


def pipeline(conn, n):
    """n distinct requests written in one go while a thread reads: every
    answer must come, in order, byte-exact."""
    data = b"".join(b"echo %d\n" % i for i in range(n))
    errors = []

    def reader():
        try:
            for i in range(n):
                want = frame("OK", b"%d" % i)
                got = conn.read_frame_raw()
                if got != want:
                    errors.append("answer %d: got %r, wanted %r" % (i, got, want))
                    return
        except Exception as e:
            errors.append("after %d answers: %r" % (i, e))

    t = threading.Thread(target=reader)
    t.start()
    conn.send(data)
    t.join(120)
    check(not t.is_alive(), "pipelined answers did not all arrive")
    check(not errors, errors[0] if errors else "")


def test_pipeline_10000():
    with Daemon(tcp=True) as d:
        c = d.connect(timeout=30)
        pipeline(c, 10000)
        c.exchange("ping", PONG)
        c.close()
        t = d.connect_tcp(timeout=30)
        pipeline(t, 10000)
        t.exchange("ping", PONG)
        t.close()


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_ipv6():
    if not have_ipv6_loopback():
        ipcdtest.skip("no ::1 on this machine")
    port = ipcdtest.free_port()
    with Daemon(extra_listen=["tcp:[::1]:%d" % port]) as d:
        c = ipcdtest.Conn(("::1", port))
        c.exchange("ping", PONG)
        h = dict(parse_kv(c.request("hello").payload))
        want_peer = "[::1]:%d" % c.sock.getsockname()[1]
        check(h["transport"] == "tcp" and h["peer"] == want_peer,
              "hello over ::1: %r, wanted peer %s" % (h, want_peer))
        check(h["role"] == "guest", "role over ::1: %r" % h["role"])
        listeners = d.stats()["listener"]
        check("tcp:[::1]:%d" % port in listeners, "listeners: %r" % listeners)
        run_test_client("tcp:[::1]:%d" % port)
        c.close()


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_ping,
        test_echo,
        test_quoting,
        test_crlf_and_blank_lines,
        test_unknown_and_bad_request,
        test_hello_unix,
        test_hello_tcp,
        test_help,
        test_stats,
        test_clients,
        test_quit,
        test_half_close,
        test_socat,
        test_c_client,
        test_pipeline_10000,
        test_ipv6,
    ])
