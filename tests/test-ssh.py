#!/usr/bin/env python3
"""ipcctl -H ssh:[USER@]HOST[:PORT] (issue 14), for real: an sshd of this
test's own on a free loopback port, with its own host key and config, a
user created here (removed at the end) with an authorized key, and the
far side's ipcctl --stdio-bridge connecting to a daemon of this build. The
daemon must see the SSH login's uid and give it role user.

Needs root (sshd, useradd) and openssh-server/-client; skipped otherwise.
Every process started here is killed by pid; every wait has a deadline.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys

import ipcdtest
from ipcdtest import (IPCCTL, Daemon, check, clean_env, fail, for_other_users, free_port, own,
                      public_tmpdir, skip, wait_for)

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def run(argv, env=None, input=None, timeout=60):
    p = own(subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        fail("%r did not finish in %ds" % (argv, timeout))
    return p.returncode, out, err


class SshSetup:
    """sshd on 127.0.0.1:PORT, a user, keys, and an ssh wrapper for
    $IPCCTL_SSH that uses this test's client config."""

    def __init__(self):
        if os.geteuid() != 0:
            skip("needs root (sshd, useradd)")
        for tool in (SSHD, "ssh", "ssh-keygen", "useradd", "userdel"):
            if not shutil.which(tool) and not os.path.exists(tool):
                skip("%s is not installed (openssh-server, openssh-client, passwd)" % tool)
        self.dir = public_tmpdir("ipcd-ssh-")
        self.user = "ipcdssh%d" % (os.getpid() % 100000)
        self.sshd = None
        self.made_user = False
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self):
        d = self.dir
        home = os.path.join(d, "home")
        os.mkdir(home)
        r = subprocess.run(["useradd", "-M", "-d", home, "-s", "/bin/sh", "-U", "-p", "*",
                            self.user],
                           capture_output=True, timeout=30)
        check(r.returncode == 0, "useradd: %r" % r.stderr)
        self.made_user = True
        pw = pwd.getpwnam(self.user)
        self.uid = pw.pw_uid
        os.chown(home, pw.pw_uid, pw.pw_gid)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(d, name)], check=True, timeout=30)
        os.mkdir(os.path.join(d, "keys"))
        shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "keys", self.user))
        os.chmod(os.path.join(d, "keys", self.user), 0o644)
        self.port = free_port()
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write("Port %d\nListenAddress 127.0.0.1\nHostKey %s/host_key\nPidFile none\n"
                    "AuthorizedKeysFile %s/keys/%%u\nStrictModes no\nUsePAM no\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "PermitRootLogin no\nAllowUsers %s\nX11Forwarding no\n"
                    "AllowTcpForwarding no\nLogLevel VERBOSE\n"
                    # the test's logins come one after another from one address,
                    # some refused on purpose: no start-up throttling
                    "MaxStartups 100:30:200\n" % (self.port, d, d, self.user))
        with open(os.path.join(d, "host_key.pub")) as f:
            hostkey = " ".join(f.read().split()[:2])
        with open(os.path.join(d, "known_hosts"), "w") as f:
            f.write("[127.0.0.1]:%d %s\n" % (self.port, hostkey))
        with open(os.path.join(d, "ssh_config"), "w") as f:
            f.write("Host *\n  IdentityFile %s/client_key\n  IdentitiesOnly yes\n"
                    "  UserKnownHostsFile %s/known_hosts\n  StrictHostKeyChecking yes\n"
                    "  BatchMode yes\n  ConnectTimeout 10\n" % (d, d))
        self.wrapper = os.path.join(d, "ssh")
        with open(self.wrapper, "w") as f:
            f.write('#!/bin/sh\nexec ssh -F %s/ssh_config "$@"\n' % d)
        os.chmod(self.wrapper, 0o755)
        # sshd wants its privilege separation directory (its chroot before
        # login). It stays: another sshd (another run of this suite, the
        # system's own) may need it at any time, so removing it after us
        # would break their logins with a reset at key exchange.
        os.makedirs("/run/sshd", 0o755, exist_ok=True)
        self.log = open(os.path.join(d, "sshd.log"), "wb")
        self.sshd = own(subprocess.Popen([SSHD, "-D", "-e", "-f", os.path.join(d, "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log, env=clean_env()))

        def listening():
            if self.sshd.poll() is not None:
                fail("sshd exited: %s" % self.sshd_log())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 20, "sshd to listen")

    def sshd_log(self):
        with open(os.path.join(self.dir, "sshd.log"), errors="replace") as f:
            return f.read()

    def env(self):
        return clean_env({"IPCCTL_SSH": self.wrapper,
                          "IPCCTL_SSH_REMOTE": for_other_users(IPCCTL)})

    def close(self):
        if self.sshd and self.sshd.poll() is None:
            os.kill(self.sshd.pid, signal.SIGTERM)
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.sshd.pid, signal.SIGKILL)
                self.sshd.wait()
        if self.made_user:
            subprocess.run(["userdel", self.user], capture_output=True, timeout=30)
            subprocess.run(["groupdel", self.user], capture_output=True, timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None and self.sshd is not None:
            # whatever failed, sshd's side of it
            print("sshd's log, last lines:\n" + self.sshd_log()[-3000:], file=sys.stderr)
        self.close()


def test_ssh():
    with SshSetup() as s, Daemon("--socket-mode", "0666") as d:
        target = "ssh:%s@127.0.0.1:%d" % (s.user, s.port)
        rc, out, err = run([IPCCTL, "-H", target, "-s", d.path, "hello"], env=s.env())
        check(rc == 0, "hello over ssh: %d %r %r\n%s" % (rc, out, err, s.sshd_log()[-2000:]))
        text = out.decode()
        check("uid=%d " % s.uid in text and "role: user\n" in text and "transport: unix\n" in text,
              "the daemon does not see the ssh login's uid and role: %r" % text)
        # arguments go over the protocol: no quoting for the far shell
        awkward = ["a b", "'q'", '"dq"', "$HOME", "`id`", "x;y", "back\\slash", ""]
        rc, out, err = run([IPCCTL, "-H", target, "-s", d.path, "send", "echo"] + awkward,
                           env=s.env())
        check(rc == 0 and out == (" ".join(awkward) + "\n").encode(), "echo: %r %r" % (out, err))
        # the user's role: admin commands are refused (exit 1), as locally
        rc, out, err = run([IPCCTL, "-H", target, "-s", d.path, "send", "clients"], env=s.env())
        check(rc == 1 and b"denied" in err, "clients as a user: %d %r" % (rc, err))
        # --json, and the pipe mode
        rc, out, err = run([IPCCTL, "--json", "-H", target, "-s", d.path, "hello"], env=s.env())
        check(rc == 0 and b'"role":"user"' in out, "--json hello: %r %r" % (out, err))
        rc, out, err = run([IPCCTL, "-H", target, "-s", d.path], env=s.env(),
                           input=b"ping\necho over ssh\nexit\n")
        check(rc == 0 and out == b"pong\nover ssh\n", "pipe over ssh: %d %r %r" % (rc, out, err))
        # the daemon's socket missing on the far side: the bridge says so, exit 3
        rc, out, err = run([IPCCTL, "-H", target, "-s", d.path + ".none", "hello"], env=s.env())
        check(rc == 3 and b"cannot connect" in err, "missing far socket: %d %r" % (rc, err))
        # ssh itself failing (nothing on that port): exit 3, ssh's words shown
        rc, out, err = run([IPCCTL, "-H", "ssh:%s@127.0.0.1:%d" % (s.user, free_port()),
                            "-s", d.path, "hello"], env=s.env())
        check(rc == 3 and b"ssh" in err.lower(), "ssh failing: %d %r" % (rc, err))
        # no such key for that user: refused by sshd, exit 3
        rc, out, err = run([IPCCTL, "-H", "ssh:nobody@127.0.0.1:%d" % s.port, "-s", d.path,
                            "hello"], env=s.env())
        check(rc == 3, "refused login: %d %r" % (rc, err))


if __name__ == "__main__":
    ipcdtest.run_tests([test_ssh])
