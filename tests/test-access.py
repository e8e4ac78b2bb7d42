#!/usr/bin/env python3
"""Access (SPEC 6): roles from SO_PEERCRED and the peer's groups, tokens over
TCP (SecretFile=, Credential=), the failed-auth delay and limits, refusals
with ERR denied and a log line, and `help` showing only what a client may run.

A second identity is real: clients run as `nobody` through setpriv, with no
supplementary groups or with one given by number, so AdminGroups= and
AllowGroups= are checked against what the kernel reports for the peer."""
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import ipcdtest
from ipcdtest import Conn, Daemon, check, fail, parse_kv, wait_for

NOBODY_UID = 65534
ADMIN_GID = 4242      # groups given by number: no change to the host's /etc/group
ALLOW_GID = 4243
TOKEN_USER = "user-secret-7f3a"
TOKEN_ADMIN = "admin-secret-91c2"

GUEST_BUILTINS = {"ping", "echo", "hello", "help", "auth", "quit"}
USER_BUILTINS = GUEST_BUILTINS | {"subscribe", "unsubscribe", "publish", "stats", "metrics"}
ADMIN_BUILTINS = USER_BUILTINS | {"clients", "reload"}


def configured(conf, *args, **kw):
    """ipcdtest.configured with a socket other uids can connect to."""
    return ipcdtest.configured(conf, *args, open_socket=True, **kw)


def check_config(conf_path, env=None):
    r = subprocess.run([ipcdtest.IPCD, "--config", conf_path, "--check-config"],
                       capture_output=True, text=True, timeout=30,
                       env=ipcdtest.clean_env(env))
    return r.returncode, r.stdout + r.stderr


# A protocol client run as another user: sends each request, collects every
# frame up to the final one, prints its own identity and the answers as JSON.
PEER_CLIENT = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
buf = b""
def need(n):
    global buf
    while len(buf) < n:
        c = s.recv(65536)
        if not c:
            raise SystemExit("connection closed")
        buf += c
def frame():
    global buf
    while b"\n" not in buf:
        need(len(buf) + 1)
    head, rest = buf.split(b"\n", 1)
    parts = head.decode().split(" ")
    n = int(parts[-1])
    need(len(head) + 1 + n + 1)
    payload = buf[len(head) + 1:len(head) + 1 + n]
    assert buf[len(head) + 1 + n:len(head) + 2 + n] == b"\n", "no LF after the payload"
    buf = buf[len(head) + 2 + n:]
    return [parts[0], parts[1] if len(parts) == 3 else None, payload.decode("latin-1")]
answers = []
for line in sys.argv[2:]:
    s.sendall(line.encode() + b"\n")
    frames = []
    while True:
        f = frame()
        frames.append(f)
        if f[0] in ("OK", "ERR"):
            break
    answers.append(frames)
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
                  "groups": sorted(os.getgroups()), "answers": answers}))
"""


def need_nobody():
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        ipcdtest.skip("needs root and setpriv to run clients as nobody")
    import pwd
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        ipcdtest.skip("no user nobody")


def as_nobody(path, *requests, groups=()):
    """Run PEER_CLIENT as nobody:nogroup with exactly `groups` as supplementary
    groups; returns its JSON (answers: per request, a list of [kind, word, payload])."""
    need_nobody()
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup"]
    argv += ["--groups=" + ",".join(str(g) for g in groups)] if groups else ["--clear-groups"]
    argv += [sys.executable, "-c", PEER_CLIENT, path] + list(requests)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")
    check(r.returncode == 0, "client as nobody: exit %d: %s" % (r.returncode, r.stderr))
    out = json.loads(r.stdout)
    check(out["uid"] == NOBODY_UID and out["groups"] == sorted(groups),
          "setpriv did not give the identity asked for: %r" % out)
    return out


def final(frames):
    """The final frame of one answer, as (kind, word, payload)."""
    return tuple(frames[-1])


def kv(payload):
    return dict(parse_kv(payload))


def help_names(payload):
    """The command names of a `help` payload (each line `USAGE - description`)."""
    if isinstance(payload, bytes):
        payload = payload.decode()
    check(payload.endswith("\n"), "help payload not ended by LF: %r" % payload)
    names = []
    for line in payload[:-1].split("\n"):
        check(re.match(r"^[A-Za-z0-9._-]+( \S.*)? - \S", line), "help line %r" % line)
        names.append(line.split(" ", 1)[0])
    check(len(names) == len(set(names)), "help lists a command twice: %r" % names)
    return set(names)


def expect_denied(f, command, role):
    check(f.kind == "ERR" and f.word == "denied", "%s: wanted ERR denied, got %r" % (command, f))
    check(f.payload == ("%s requires role %s" % (command, role)).encode(),
          "%s: denied reason %r" % (command, f.payload))


def auth(conn, token):
    """auth TOKEN; returns (frame, seconds it took)."""
    t0 = time.monotonic()
    f = conn.request('auth "%s"' % token)
    return f, time.monotonic() - t0


TOKENS_CONF = """
[Token deploy]
SecretFile=@DIR@/deploy.token
Role=user

[Token ops]
SecretFile=@DIR@/ops.token
Role=admin
"""
TOKEN_FILES = {"deploy.token": (TOKEN_USER + "\n", 0o600),
               "ops.token": (TOKEN_ADMIN, 0o640)}


# ---------------------------------------------------------------- Unix roles


def test_unix_roles_root_and_nobody():
    with configured("[Daemon]\nLogLevel=info\n") as d:
        c = d.connect()
        hello = kv(c.request("hello").payload)
        check(hello["role"] == "admin", "root is admin: %r" % hello)
        check(hello["peer"] == "pid=%d uid=0 gid=%d" % (os.getpid(), os.getgid()),
              "root's peer: %r" % hello["peer"])
        check(c.request("clients").kind == "OK", "root may run clients")

        out = as_nobody(d.path, "hello", "stats", "clients", "reload", "ping")
        hello = kv(final(out["answers"][0])[2])
        check(hello["peer"] == "pid=%d uid=%d gid=%d" % (out["pid"], NOBODY_UID, out["gid"]),
              "nobody's peer must be its real pid/uid/gid: %r vs %r" % (hello, out))
        check(hello["role"] == "user", "nobody is a user: %r" % hello)
        check(final(out["answers"][1])[0] == "OK", "a user may run stats: %r" % out["answers"][1])
        for i, name in ((2, "clients"), (3, "reload")):
            f = final(out["answers"][i])
            check(f[:2] == ("ERR", "denied") and f[2] == "%s requires role admin" % name,
                  "user %s: %r" % (name, f))
        check(final(out["answers"][4]) == ("OK", None, "pong"), "the connection stays usable")
        # the monitor topic is for admins; nobody publishes on the daemon's topics
        out2 = as_nobody(d.path, "subscribe ipcd.monitor", "publish ipcd.monitor x")
        for a in out2["answers"]:
            check(final(a)[:2] == ("ERR", "denied"), "a user on ipcd.monitor: %r" % (a,))
        cid = int(hello["client"])
        for name in ("clients", "reload"):
            wait_for(lambda: re.search(r"client %d: denied %s: requires role admin, client has user"
                                       % (cid, name), d.log()),
                     what="the log line for the denied %s" % name)
        # The refused reload did nothing.
        check("Reloaded" not in d.log(), "a denied reload reloaded")
        c.close()


def test_admin_groups_supplementary_member_is_admin():
    with configured("[Daemon]\nAdminGroups=%d\n" % ADMIN_GID) as d:
        out = as_nobody(d.path, "hello", "clients", groups=[ADMIN_GID])
        hello = kv(final(out["answers"][0])[2])
        check(hello["role"] == "admin", "a member of AdminGroups= is admin: %r" % hello)
        check("uid=%d " % NOBODY_UID in hello["peer"], "still uid nobody: %r" % hello)
        f = final(out["answers"][1])
        check(f[0] == "OK" and re.search(r"^id=%s transport=unix .* role=admin " % hello["client"],
                                         f[2], re.M),
              "an AdminGroups= member runs clients and is listed as admin: %r" % (f,))
        # The same user in other groups only is a user.
        out = as_nobody(d.path, "hello", "clients", groups=[ALLOW_GID])
        check(kv(final(out["answers"][0])[2])["role"] == "user", "non-member: %r" % out)
        check(final(out["answers"][1])[:2] == ("ERR", "denied"), "non-member runs clients")
        out = as_nobody(d.path, "hello")
        check(kv(final(out["answers"][0])[2])["role"] == "user", "no groups: %r" % out)


def test_allow_groups_opens_an_admin_command():
    conf = ("[Command adm-task]\nExec=/bin/echo adm-ran\nRole=admin\nAllowGroups=%d\n"
            "Description=an admin task\n" % ALLOW_GID)
    with configured(conf, tcp=True, files={}) as d:
        member = as_nobody(d.path, "hello", "adm-task", "help", "help adm-task", "clients",
                           groups=[ALLOW_GID])
        a = member["answers"]
        check(kv(final(a[0])[2])["role"] == "user", "AllowGroups= does not raise the role")
        check(a[1] == [["MORE", None, "adm-ran\n"], ["OK", None, ""]],
              "an AllowGroups= member runs the admin command: %r" % a[1])
        check("adm-task" in help_names(final(a[2])[2]), "help lists it for a member: %r" % a[2])
        check(final(a[3]) == ("OK", None, "adm-task - an admin task\n"), "help adm-task: %r" % a[3])
        check(final(a[4])[:2] == ("ERR", "denied"), "AllowGroups= opens that command only")

        other = as_nobody(d.path, "adm-task", "help", "help adm-task")
        a = other["answers"]
        check(a[0] == [["ERR", "denied", "adm-task requires role admin"]],
              "a non-member is refused: %r" % a[0])
        check("adm-task" not in help_names(final(a[1])[2]), "help hides it from a non-member")
        check(final(a[2])[:2] == ("ERR", "unknown-command"), "help adm-task for a non-member: %r"
              % a[2])
        wait_for(lambda: re.search(r"denied adm-task: requires role admin, client has user",
                                   d.log()), what="the log line for the denied adm-task")
        # TCP peers have no groups.
        t = d.connect_tcp()
        expect_denied(t.request("adm-task"), "adm-task", "admin")
        t.close()
        # root is admin anyway
        c = d.connect()
        check(c.request("adm-task").kind == "MORE" and c.read_frame().kind == "OK", "root runs it")
        c.close()


# ---------------------------------------------------------------- TCP and tokens


def test_tcp_guest_until_auth():
    with configured(TOKENS_CONF, tcp=True, files=TOKEN_FILES) as d:
        t = d.connect_tcp()
        hello = kv(t.request("hello").payload)
        check(hello["role"] == "guest" and hello["transport"] == "tcp", "TCP hello: %r" % hello)
        cid = int(hello["client"])
        expect_denied(t.request("stats"), "stats", "user")
        wait_for(lambda: re.search(r"client %d: denied stats: requires role user, client has guest"
                                   % cid, d.log()), what="the log line for the denied stats")

        for wrong in ("wrong", TOKEN_USER[:-1], TOKEN_USER + "x", TOKEN_USER.upper()):
            f, took = auth(t, wrong)
            check(f.kind == "ERR" and f.word == "denied", "auth %r: %r" % (wrong, f))
            check(f.payload == b"authentication failed", "reason: %r" % f.payload)
            check(took >= 0.9, "a failed auth must be delayed (~1s): %.3fs" % took)
            check(took < 5, "a failed auth took %.1fs" % took)
        log = d.log()
        check(re.search(r"client %d: authentication failed \(1 attempt" % cid, log),
              "the failed auth is logged: " + log[-2000:])
        check(TOKEN_USER not in log and "wrong" not in log, "the log leaks a token")
        expect_denied(t.request("stats"), "stats", "user")   # still a guest

        f, took = auth(t, TOKEN_USER)
        check(f.kind == "OK" and f.payload == b"role: user\n", "right token: %r" % f)
        check(took < 0.8, "a right token is not delayed: %.3fs" % took)
        check(kv(t.request("stats").payload)["activation"] == "standalone", "stats after auth")
        check(kv(t.request("hello").payload)["role"] == "user", "hello after auth")
        expect_denied(t.request("clients"), "clients", "admin")
        wait_for(lambda: re.search(r"client %d: authenticated with token deploy, role user" % cid,
                                   d.log()), what="the auth log line")
        # the admin token on the same connection raises it further
        f, _ = auth(t, TOKEN_ADMIN)
        check(f.payload == b"role: admin\n", "admin token: %r" % f)
        check(t.request("clients").kind == "OK", "admin over TCP runs clients")
        t.close()


def test_five_failures_close_the_connection():
    with configured(TOKENS_CONF, tcp=True, files=TOKEN_FILES) as d:
        t = d.connect_tcp(timeout=30)
        t0 = time.monotonic()
        t.send("auth a\nauth b\nauth c\nauth d\nauth e\nping\n")
        for i in range(4):
            f = t.read_frame()
            check(f.kind == "ERR" and f.word == "denied" and f.payload == b"authentication failed",
                  "failure %d: %r" % (i + 1, f))
        f = t.read_frame()
        check(f.kind == "ERR" and f.word == "denied" and b"closing" in f.payload,
              "the fifth failure: %r" % f)
        took = time.monotonic() - t0
        check(took >= 4.5, "five failures took only %.2fs (1s delay each)" % took)
        t.wait_eof()       # the ping after the fifth failure is never answered
        t.close()
        # a new connection may try again, and the right token still works
        t = d.connect_tcp()
        f, _ = auth(t, TOKEN_USER)
        check(f.payload == b"role: user\n", "after another connection's failures: %r" % f)
        t.close()


def test_wrong_tokens_never_lock_out_a_right_one():
    """commands.c: wrong tokens from other connections (the same source
    address, even) never make a right token fail: each token is always
    compared. Guessing is bounded per connection (a fixed delay, 5 tries)
    and per source (past 20 failures a minute, each failure closes)."""
    with configured(TOKENS_CONF, tcp=True, files=TOKEN_FILES) as d:
        attackers = [d.connect_tcp() for _ in range(15)]
        for i, a in enumerate(attackers):
            a.send("auth wrong-%d\n" % i)
        wait_for(lambda: d.log().count("authentication failed") >= 10, timeout=5,
                 what="ten failed attempts to be logged")
        for _ in range(3):
            victim = d.connect_tcp()
            f, took = auth(victim, TOKEN_USER)
            check(f.kind == "OK" and f.payload == b"role: user\n",
                  "a right token during a wrong-token attack: %r" % f)
            check(took < 0.5, "the right token took %.3fs" % took)
            victim.close()
        for a in attackers:
            f = a.read_frame()
            check(f.kind == "ERR" and f.word == "denied", "attacker: %r" % f)
        # 15 failures so far from 127.0.0.1; 6 more pass the source's budget
        # of 20: that failure closes its connection at once
        closed = 0
        for a in attackers[:6]:
            a.send("auth wrong-again\n")
        for a in attackers[:6]:
            f = a.read_frame()
            check(f.kind == "ERR" and f.word == "denied", "attacker: %r" % f)
            if b"closing" in f.payload:
                a.wait_eof()
                closed += 1
        check(closed >= 1, "no connection closed past the source's budget")
        victim = d.connect_tcp()
        f, _ = auth(victim, TOKEN_USER)
        check(f.payload == b"role: user\n", "right token after the budget: %r" % f)
        for a in attackers:
            a.close()
        log = d.log()
        check(log.count("authentication failed") <= 20,
              "failed attempts must be logged rate limited:\n" + log[-3000:])


def test_help_lists_what_the_client_may_run():
    conf = """
[Token deploy]
SecretFile=@DIR@/deploy.token
Role=user

[Command g-cmd]
Exec=/bin/echo g
Role=guest

[Command u-cmd]
Exec=/bin/echo u
Arguments=any
Role=user
Description=a user command

[Command a-cmd]
Exec=/bin/echo a
"""
    with configured(conf, tcp=True, files={"deploy.token": (TOKEN_USER, 0o600)}) as d:
        t = d.connect_tcp()
        guest = help_names(t.request("help").payload)
        check(guest == GUEST_BUILTINS | {"g-cmd"}, "guest help: %r" % sorted(guest))
        check(t.request("help u-cmd").word == "unknown-command", "guest: help u-cmd")
        check(t.request("help stats").word == "unknown-command", "guest: help stats")
        check(t.request("help g-cmd").payload == b"g-cmd - run /bin/echo\n", "help g-cmd")
        check(t.request("g-cmd").kind == "MORE" and t.read_frame().kind == "OK",
              "a guest runs a Role=guest command")

        out = as_nobody(d.path, "help", "help u-cmd", "help a-cmd", "help clients")
        user = help_names(final(out["answers"][0])[2])
        check(user == USER_BUILTINS | {"g-cmd", "u-cmd"}, "user help: %r" % sorted(user))
        check(final(out["answers"][1]) == ("OK", None, "u-cmd [ARG...] - a user command\n"),
              "help u-cmd: %r" % (out["answers"][1],))
        for i in (2, 3):
            check(final(out["answers"][i])[:2] == ("ERR", "unknown-command"),
                  "user: %r" % (out["answers"][i],))

        c = d.connect()
        admin = help_names(c.request("help").payload)
        check(admin == ADMIN_BUILTINS | {"g-cmd", "u-cmd", "a-cmd"},
              "admin help: %r" % sorted(admin))
        check(c.request("help reload").payload.startswith(b"reload - "), "admin: help reload")
        c.close()

        # Whatever help does not list for the guest, the guest is refused.
        for name in sorted(admin - guest):
            f = t.request(name)
            check(f.kind == "ERR" and f.word == "denied", "guest ran %s: %r" % (name, f))
        # After auth, help follows the new role.
        check(auth(t, TOKEN_USER)[0].kind == "OK", "auth")
        after = help_names(t.request("help").payload)
        check(after == USER_BUILTINS | {"g-cmd", "u-cmd"}, "help after auth: %r" % sorted(after))
        t.close()


# ---------------------------------------------------------------- secrets


def test_world_readable_secret_refused():
    cdir = tempfile.mkdtemp(prefix="ipcd-conf-")
    try:
        secret = os.path.join(cdir, "tok")
        with open(secret, "w") as f:
            f.write("do-not-print-me-ever\n")
        conf = os.path.join(cdir, "ipcd.conf")
        with open(conf, "w") as f:
            f.write("[Daemon]\nLogLevel=info\n\n[Token deploy]\nRole=user\nSecretFile=%s\n" % secret)
        os.chmod(secret, 0o644)
        rc, out = check_config(conf)
        check(rc != 0, "--check-config accepted a world-readable secret: %r" % out)
        check(re.search(r"^%s:6: .*%s.* readable by everyone" % (re.escape(conf), re.escape(secret)),
                        out, re.M), "no file:line error for the secret's mode: %r" % out)
        check("do-not-print-me-ever" not in out, "the secret leaked: %r" % out)
        # ipcd does not start with it either
        r = subprocess.run([ipcdtest.IPCD, "--config", conf, "--listen",
                            "unix:" + os.path.join(cdir, "s")], capture_output=True, text=True,
                           timeout=30, env=ipcdtest.clean_env())
        check(r.returncode != 0 and "%s:6:" % conf in r.stderr,
              "ipcd started with a world-readable secret: %d %r" % (r.returncode, r.stderr))
        # group-readable is the admin's choice; accepted
        os.chmod(secret, 0o640)
        rc, out = check_config(conf)
        check(rc == 0 and out == "read %s\nconfiguration ok: 0 command(s), 1 token(s)\n" % conf,
              "0640 secret: %d %r" % (rc, out))
    finally:
        shutil.rmtree(cdir, ignore_errors=True)


def test_credential_token():
    creds = tempfile.mkdtemp(prefix="ipcd-creds-")
    try:
        with open(os.path.join(creds, "deploy"), "w") as f:
            f.write("cred-secret-55-long-enough\n")
        os.chmod(os.path.join(creds, "deploy"), 0o400)
        conf = "[Token deploy]\nCredential=deploy\nRole=admin\n"
        with configured(conf, tcp=True, env={"CREDENTIALS_DIRECTORY": creds}) as d:
            t = d.connect_tcp()
            f, _ = auth(t, "cred-secret-55-long-enough")
            check(f.kind == "OK" and f.payload == b"role: admin\n", "credential token: %r" % f)
            check(t.request("clients").kind == "OK", "admin by credential")
            t.close()
            # without $CREDENTIALS_DIRECTORY the same file is an error, with file:line
            rc, out = check_config(d.conf)
            check(rc != 0 and re.search(r"^%s:2: .*CREDENTIALS_DIRECTORY" % re.escape(d.conf),
                                        out, re.M),
                  "Credential= without $CREDENTIALS_DIRECTORY: %d %r" % (rc, out))
            rc, out = check_config(d.conf, env={"CREDENTIALS_DIRECTORY": creds})
            check(rc == 0, "with it: %d %r" % (rc, out))
    finally:
        shutil.rmtree(creds, ignore_errors=True)


# ---------------------------------------------------------------- commands as nobody


def test_command_environment_of_another_user():
    conf = "[Command env]\nExec=/usr/bin/env\nRole=user\n"
    with configured(conf) as d:
        out = as_nobody(d.path, "hello", "env", groups=[ALLOW_GID])
        hello = kv(final(out["answers"][0])[2])
        frames = out["answers"][1]
        check(frames[-1] == ["OK", None, ""], "env as nobody: %r" % frames)
        env = dict(l.split("=", 1) for l in "".join(p for k, _, p in frames[:-1]).splitlines())
        want = {"IPCD_PEER_UID": str(NOBODY_UID), "IPCD_PEER_GID": str(out["gid"]),
                "IPCD_PEER_PID": str(out["pid"]), "IPCD_ROLE": "user",
                "IPCD_CLIENT_ID": hello["client"], "IPCD_COMMAND": "env",
                "IPCD_TRANSPORT": "unix"}
        for k, v in want.items():
            check(env.get(k) == v, "%s=%r, want %r (env %r)" % (k, env.get(k), v, env))
        wait_for(lambda: re.search(r"client %s: ran env as user: ok after \d+ ms"
                                   % hello["client"], d.log()), what="the run's log line")


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_unix_roles_root_and_nobody,
        test_admin_groups_supplementary_member_is_admin,
        test_allow_groups_opens_an_admin_command,
        test_tcp_guest_until_auth,
        test_five_failures_close_the_connection,
        test_wrong_tokens_never_lock_out_a_right_one,
        test_help_lists_what_the_client_may_run,
        test_world_readable_secret_refused,
        test_credential_token,
        test_command_environment_of_another_user,
    ])
