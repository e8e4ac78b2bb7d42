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
        # (an installed package has the default main file: then it is read)
        if r.returncode == 0 and not r.stdout.startswith("read "):
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


def parse_exposition(text):
    """Prometheus text format 0.0.4, checked as promtool would for what ipcd
    writes: every sample's family has HELP and TYPE first, counters end in
    _total, histogram buckets are cumulative and end in +Inf == _count."""
    import re
    types, samples = {}, {}
    for line in text.splitlines():
        m = re.match(r"# (HELP|TYPE) (\w+) (.+)$", line)
        if m:
            if m.group(1) == "TYPE":
                types[m.group(2)] = m.group(3)
            continue
        m = re.match(r'^(\w+)(\{[^}]*\})? (\S+)$', line)
        check(m, "not a sample line: %r" % line)
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        check(fam in types, "sample %s before its TYPE" % name)
        if types[fam] == "counter":
            check(name.endswith("_total"), "counter %s without _total" % name)
        samples[name + labels] = value
    return types, samples


def test_metrics():
    import shutil
    conf = "[Command nap]\nExec=/bin/sleep 0.05\nRole=user\n"
    with configured(conf) as d:
        for args in (["ping"], ["ping"], ["nap"], ["nope"]):
            run([IPCCTL, "-s", d.path, "send"] + args)
        r = run([IPCCTL, "-s", d.path, "send", "metrics"], text=True)
        check(r.returncode == 0, "metrics: %r" % r.stderr)
        types, m1 = parse_exposition(r.stdout)
        check(types.get("ipcd_command_duration_seconds") == "histogram", "no histogram")
        check(m1['ipcd_command_runs_total{command="ping",result="ok"}'] == 2, "ping count")
        check(m1['ipcd_command_runs_total{command="nap",result="ok"}'] == 1, "nap count")
        check(m1['ipcd_command_runs_total{command="unknown",result="failed"}'] == 1,
              "an unknown name counts as unknown, never as what was typed")
        check(not any("nope" in k for k in m1), "a typed name became a label")
        check(m1['ipcd_clients{transport="unix",role="admin"}'] == 1, "clients by role")
        b = [v for k, v in m1.items() if k.startswith('ipcd_command_duration_seconds_bucket'
                                                       '{command="nap"')]
        check(b == sorted(b) and b[-1] == m1['ipcd_command_duration_seconds_count'
                                             '{command="nap"}'] == 1, "nap buckets: %r" % b)
        check(m1['ipcd_command_duration_seconds_bucket{command="nap",le="0.025"}'] == 0 and
              m1['ipcd_command_duration_seconds_sum{command="nap"}'] >= 0.05,
              "nap took 50 ms: %r" % b)
        # reading does not reset anything
        r2 = run([IPCCTL, "-s", d.path, "send", "metrics"], text=True)
        _, m2 = parse_exposition(r2.stdout)
        for k, v in m1.items():
            if k.endswith("_total") or "_total{" in k or "_count" in k or "_bucket" in k:
                check(m2.get(k, -1) >= v, "%s went from %s to %s" % (k, v, m2.get(k)))
        check(m2['ipcd_command_runs_total{command="metrics",result="ok"}'] == 1, "metrics counted")
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=r2.stdout.encode(),
                               capture_output=True, timeout=60)
            check(p.returncode == 0 and not p.stdout.strip(),
                  "promtool check metrics: %r %r" % (p.stdout, p.stderr))



def test_metrics_add_up_under_load():
    """Each client counts its own requests and `metrics` adds them up (one
    writer per counter, no shared cache line per request): with clients
    pinging in pipelined batches, coming and going, while another scrapes,
    no counter ever goes back and the total comes out exact. Under TSan too
    (the integration suite runs there)."""
    import threading
    key = 'ipcd_command_runs_total{command="ping",result="ok"}'
    workers, conns, batches, depth = 6, 3, 10, 20
    with Daemon() as d:
        errors = []

        def ping():
            try:
                for _ in range(conns):
                    c = d.connect()
                    for _ in range(batches):
                        c.send("ping\n" * depth)
                        for _ in range(depth):
                            f = c.read_frame()
                            if f.payload != b"pong":
                                raise AssertionError("ping: %r" % (f,))
                    c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        done = threading.Event()
        seen = []

        def scrape():
            s = d.connect()
            try:
                while not done.is_set() or len(seen) < 3:
                    _, m = parse_exposition(s.request("metrics").payload.decode())
                    seen.append(m.get(key, 0))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("scraper: %r" % e)
        threads = [threading.Thread(target=ping) for _ in range(workers)]
        scraper = threading.Thread(target=scrape)
        scraper.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        done.set()
        scraper.join(60)
        check(not errors, "clients failed: %s" % errors)
        check(all(a <= b for a, b in zip(seen, seen[1:])),
              "the ping count went back while clients came and went: %s" % seen)
        _, m = parse_exposition(d.connect().request("metrics").payload.decode())
        check(m.get(key) == workers * conns * batches * depth,
              "%s is %s, not %d" % (key, m.get(key), workers * conns * batches * depth))
        b = [v for k, v in m.items()
             if k.startswith('ipcd_command_duration_seconds_bucket{command="ping"')]
        check(b == sorted(b) and b[-1] == m.get(key), "ping buckets: %r" % b)

if __name__ == "__main__":
    ipcdtest.run_tests([
        test_check_config_names_files,
        test_startup_entry,
        test_socket_mode_and_group,
        test_publish_and_listen,
        test_metrics,
        test_metrics_add_up_under_load,
    ])
