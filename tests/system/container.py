"""A container booted with systemd as PID 1, for the tests that need a real
systemd (suites system and package).

systemd-nspawn boots the host's own OS, volatile: `--directory=/
--volatile=yes` makes the root a tmpfs holding the host's /usr, read-only,
with an empty /etc and /var that systemd populates at boot; the caller adds
what it needs with further nspawn options (an --overlay-ro= with a build
laid over /usr, a writable --overlay= for dpkg, --bind-ro= for files).
--private-network gives it a loopback of its own. On a host without a
running systemd (a CI sandbox) it adds --register=no --keep-unit; kernel
arguments go last.

Every command runs inside through `nsenter -t <PID 1> -a` with a clean
environment (CONTAINER_ENV). The Container belongs to the process that
booted it: shutdown() powers it off and waits, and kills it by pid if that
fails; if the test process itself is SIGKILLed, nspawn gets SIGTERM
(PR_SET_PDEATHSIG), on which it powers the container off.
"""
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ipcdtest import check, fail, wait_for  # noqa: E402

BOOT_TIMEOUT = 120

# Inside the container: a clean environment, nothing of the host's.
CONTAINER_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}

# The host's configuration that the tools used in the tests need in the
# container's empty /etc: PAM for user@.service, man-db for verify.
ETC_DEFAULT = ("pam.d", "security", "manpath.config")


def log(msg):
    print("# " + msg, flush=True)


def _sigterm_when_parent_dies():
    # If the test is SIGKILLed, nspawn gets SIGTERM, on which it powers the
    # container off: no container outlives its test run.
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Container:
    """One systemd-nspawn container, owned by this process.

    nspawn_args: options added to the common ones (see the module's doc).
    etc: entries of the host's /etc copied into the container after boot.
    """

    def __init__(self, name, logpath, nspawn_args=(), etc=ETC_DEFAULT, directory="/",
                 volatile="yes"):
        self.name = name
        self.directory = directory
        self.volatile = volatile
        self.logpath = logpath
        self.nspawn_args = list(nspawn_args)
        self.etc = etc
        self.proc = None
        self.leader = None
        self.logfile = None

    def boot(self):
        # Without a systemd on the host (a CI sandbox) there is no machined to
        # register with and no manager to make a scope: keep our own cgroup.
        host_systemd = os.path.isdir("/run/systemd/system")
        # First boot with an empty /etc applies the presets, and Debian's
        # enable everything: the host's other services (an sshd, a broker
        # without their /etc) would start, fail and restart. Only ours.
        self.preset_dir = tempfile.mkdtemp(prefix="ipcd-preset-")
        preset = os.path.join(self.preset_dir, "00-ipcd-tests.preset")
        with open(preset, "w") as f:
            f.write("# the ipcd test container: nothing of the host's starts by itself\n"
                    "enable ipcd.socket\ndisable *\n")
        argv = ["systemd-nspawn", "--quiet", "--volatile=" + self.volatile,
                "--directory=" + self.directory, "--boot", "--private-network",
                "--machine=" + self.name,
                "--bind-ro=%s:/etc/systemd/system-preset/00-ipcd-tests.preset" % preset] + \
            self.nspawn_args
        if not host_systemd:
            argv += ["--register=no", "--keep-unit"]
        argv += ["systemd.firstboot=off"]
        log("boot: " + " ".join(argv))
        self.logfile = open(self.logpath, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logfile,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_sigterm_when_parent_dies)
        self.leader = wait_for(self._find_leader, timeout=30, interval=0.05,
                               what="the container's PID 1 to appear")
        start = time.monotonic()
        state = wait_for(self._booted, timeout=BOOT_TIMEOUT, interval=0.2,
                         what="the container's systemd to finish booting")
        log("container %s: leader pid %d, %s after %.1fs"
            % (self.name, self.leader, state, time.monotonic() - start))
        if state == "degraded":
            log("failed units:\n" + self.run(["systemctl", "--failed", "--no-legend"]).stdout)
        if self.volatile == "yes":
            self.copy_in("/etc", self.etc)

    def copy_in(self, base, entries):
        """Copy BASE/ENTRY (files or trees) of the OS tree that was booted (the
        host's, or the one in `directory`) to the same place in the container."""
        src = os.path.join(self.directory, base.lstrip("/"))
        entries = [e for e in entries if os.path.lexists(os.path.join(src, e))]
        if not entries:
            return
        tar = subprocess.run(["tar", "-C", src, "-cf", "-"] + entries,
                             capture_output=True, check=True).stdout
        self.ok(["mkdir", "-p", base])
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--", "tar", "-C", base,
                            "-xf", "-"], input=tar, env=CONTAINER_ENV, capture_output=True)
        check(r.returncode == 0, "copying %s/%s into the container: %r" % (base, entries, r.stderr))

    def _find_leader(self):
        if self.proc.poll() is not None:
            fail("systemd-nspawn exited with %d before the container booted:\n%s"
                 % (self.proc.returncode, self.console()))
        return self._child_systemd()

    def _child_systemd(self):
        # nspawn's child is the container's PID 1 (systemd).
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and "(systemd)" in stat:
                return int(pid)
        return None

    def _booted(self):
        if self.proc.poll() is not None:
            fail("systemd-nspawn exited with %d during boot:\n%s"
                 % (self.proc.returncode, self.console()))
        r = self.run(["systemctl", "is-system-running"], timeout=10)
        state = r.stdout.strip()
        return state if state in ("running", "degraded") else None

    def console(self, lines=60):
        try:
            with open(self.logpath, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def popen(self, argv, **kw):
        return subprocess.Popen(["nsenter", "-t", str(self.leader), "-a", "--"] + argv,
                                env=CONTAINER_ENV, **kw)

    def run(self, argv, timeout=60, input=None):
        """Run argv in the container; returns the CompletedProcess (text)."""
        try:
            return subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--"] + argv,
                                  env=CONTAINER_ENV, input=input, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("timed out after %ss: %s" % (timeout, " ".join(argv)))

    def ok(self, argv, timeout=60, input=None):
        """Run argv in the container; fail the test unless it exits 0."""
        r = self.run(argv, timeout=timeout, input=input)
        if r.returncode != 0:
            fail("%s: exit %d\nstdout: %s\nstderr: %s"
                 % (" ".join(argv), r.returncode, r.stdout, r.stderr))
        return r.stdout

    def python(self, code, *args, timeout=120):
        """Run a Python snippet in the container; returns its JSON output."""
        out = self.ok(["/usr/bin/python3", "-c", code] + [str(a) for a in args],
                      timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def shutdown(self):
        """Power the container off and wait for nspawn; kill it if that fails."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.leader:
            try:
                subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--",
                                "systemctl", "--no-block", "poweroff"],
                               env=CONTAINER_ENV, capture_output=True, timeout=30)
                self.proc.wait(60)
                log("container %s powered off, nspawn exit %d"
                    % (self.name, self.proc.returncode))
            except subprocess.TimeoutExpired:
                log("container %s did not power off within 60s, killing it" % self.name)
        self.kill()
        if self.logfile:
            self.logfile.close()
        if getattr(self, "preset_dir", None):
            shutil.rmtree(self.preset_dir, ignore_errors=True)

    def kill(self):
        """SIGKILL the container's PID 1 (which takes its pid namespace with it), then nspawn."""
        if self.proc is None or self.proc.poll() is not None:
            return
        leader = self.leader or self._child_systemd()
        for pid in (leader, self.proc.pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait(30)


def nspawn_run(directory, argv, binds=(), timeout=1800):
    """Run argv in the OS tree `directory` without booting it (systemd-nspawn
    --as-pid2), on a throw-away overlay (--volatile=overlay: the tree itself
    is never written) and a private network (loopback only). binds: (host
    path, container path[, "ro"]). Returns stdout and stderr together; fails
    the test unless argv exits 0."""
    cmd = ["systemd-nspawn", "--quiet", "--directory=" + directory, "--volatile=overlay",
           "--as-pid2", "--console=pipe", "--private-network", "--register=no",
           "--machine=ipcd-run-%d" % os.getpid(), "--setenv=LANG=C.UTF-8",
           "--setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    if not os.path.isdir("/run/systemd/system"):
        cmd.append("--keep-unit")
    for b in binds:
        cmd.append("--%s=%s:%s" % ("bind-ro" if b[2:] == ("ro",) else "bind", b[0], b[1]))
    cmd += ["--"] + list(argv)
    log("+ " + " ".join(cmd))
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           start_new_session=True, preexec_fn=_sigterm_when_parent_dies)
    except subprocess.TimeoutExpired:
        fail("timed out after %ds in %s: %s" % (timeout, directory, " ".join(argv)))
    # nspawn's own complaint about the volatile overlay's propagation directory.
    out = "\n".join(l for l in r.stdout.splitlines() if "Attempted to remove disk file" not in l)
    if r.returncode != 0:
        print(out[-30000:])
        fail("in %s: %s: exit %d" % (directory, " ".join(argv), r.returncode))
    return out
