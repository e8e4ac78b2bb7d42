#!/usr/bin/env python3
"""What an operator meets first (issue 14): ipcd's start-up entry and
--check-config naming the files read, --socket-mode/--socket-group and
SocketMode=/SocketGroup= for standalone Unix sockets, and ipcctl's publish
and listen against the real daemon.

Every wait is for a condition with a deadline; every process is killed by
pid when its test ends (ipcdtest.own).
"""
import grp
import os
import stat
import subprocess
import tempfile

import ipcdtest
from ipcdtest import IPCCTL, IPCD, Daemon, check, clean_env, configured, own, wait_for


def run(argv, timeout=30, **kw):
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=clean_env(), **kw)


def test_check_config_names_files():
    with tempfile.TemporaryDirectory(prefix="ipcd-conf-") as cdir:
        conf = os.path.join(cdir, "ipcd.conf")
        with open(conf, "w") as f:
            f.write("[Command a]\nExec=/bin/true\n[Command b]\nExec=/bin/true\n")
        r = run([IPCD, "--config", conf, "--check-config"], text=True)
        check(r.returncode == 0, "check-config failed: %r" % r.stderr)
        check("read %s\n" % conf in r.stdout, "--check-config does not name %s: %r"
              % (conf, r.stdout))
        check("2 command(s)" in r.stdout, "--check-config does not count: %r" % r.stdout)
        # no file at all (a --config that is missing is an error; the default
        # main file missing is a warning, and the defaults are used)
        r = run([IPCD, "--check-config"], text=True)
        if r.returncode == 0:
            check("warning:" in r.stderr and "does not exist" in r.stderr,
                  "a missing main file is not a warning: %r %r" % (r.stdout, r.stderr))
        r = run([IPCD, "--config", conf + ".missing", "--check-config"], text=True)
        check(r.returncode != 0 and "cannot open" in r.stderr, "missing --config: %r" % r.stderr)


def test_startup_entry():
    conf = "[Command a]\nExec=/bin/true\n"
    with configured(conf) as d:
        wait_for(lambda: "Starting ipcd" in d.log(), what="the start-up entry")
        line = [l for l in d.log().splitlines() if "Starting ipcd" in l][0]
        v = run([IPCD, "--version"], text=True).stdout.split()[1]
        check(v in line and d.conf in line and "1 command(s)" in line,
              "start-up entry lacks version, file or count: %r" % line)


def test_socket_mode_and_group():
    group = "nogroup"
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        group, gid = "0", 0
    with Daemon("--socket-mode", "0660", "--socket-group", group) as d:
        st = os.stat(d.path)
        check(stat.S_IMODE(st.st_mode) == 0o660, "mode %o" % stat.S_IMODE(st.st_mode))
        check(st.st_gid == gid, "group %d, not %d" % (st.st_gid, gid))
    # the same from ipcd.conf; the command line wins over it
    with configured("[Daemon]\nSocketMode=0666\n") as d:
        check(stat.S_IMODE(os.stat(d.path).st_mode) == 0o666, "SocketMode=0666 not applied")
    with configured("[Daemon]\nSocketMode=0666\n", "--socket-mode", "600") as d:
        check(stat.S_IMODE(os.stat(d.path).st_mode) == 0o600, "--socket-mode does not win")
    for bad in ("888", "01000", "rw", ""):
        r = run([IPCD, "--socket-mode", bad, "--check-config"])
        check(r.returncode == 2, "--socket-mode %r accepted" % bad)
    r = run([IPCD, "--socket-group", "no-such-group-xyz", "--check-config"])
    check(r.returncode == 2, "unknown --socket-group accepted")
    with tempfile.TemporaryDirectory(prefix="ipcd-conf-") as cdir:
        conf = os.path.join(cdir, "ipcd.conf")
        with open(conf, "w") as f:
            f.write("[Daemon]\nSocketMode=999\nSocketGroup=no-such-group-xyz\n")
        r = run([IPCD, "--config", conf, "--check-config"], text=True)
        check(r.returncode == 1 and "%s:2: SocketMode=" % conf in r.stderr
              and "%s:3: SocketGroup=" % conf in r.stderr, "bad Socket*=: %r" % r.stderr)


def test_publish_and_listen():
    with Daemon() as d:
        listen = own(subprocess.Popen([IPCCTL, "-s", d.path, "listen", "--count", "2", "a", "b"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=clean_env()))
        # publish joins the words after the topic, as the server does
        def published():
            r = run([IPCCTL, "-s", d.path, "publish", "a", "two", "words"])
            return r.stdout == b"1\n"
        wait_for(published, what="listen to subscribe")
        r = run([IPCCTL, "-s", d.path, "publish", "b", "x"])
        check(r.stdout == b"1\n", "publish b: %r" % r.stdout)
        out, err = listen.communicate(timeout=30)
        check(out == b"[a] two words\n[b] x\n", "listen with two topics: %r %r" % (out, err))


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_check_config_names_files,
        test_startup_entry,
        test_socket_mode_and_group,
        test_publish_and_listen,
    ])
