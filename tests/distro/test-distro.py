#!/usr/bin/env python3
"""This tree on the other Debian release: built and tested in a Debian 13
"trixie" root from a Debian 12 machine (on a Debian 13 machine it skips,
unless IPCD_TEST_SUITE=bookworm asks for a Debian 12 root).

1. root: a trixie root made with mmdebstrap (--variant=important, systemd,
   dbus, and every build dependency of debian/control, nocheck ones too),
   cached in /var/cache/ipcd-tests/trixie-KEY, KEY a hash of debian/control's
   Build-Depends and of this recipe: a change to either makes a new root,
   anything else reuses it. It is built beside its final name and renamed
   when complete, under a lock, so an interrupted or concurrent run never
   leaves or uses half a root. The cache is never written to afterwards:
   every container below runs on a throw-away overlay of it.
2. build: in the root (systemd-nspawn, no boot, --volatile=overlay, a
   private network), meson setup --prefix=/usr -Dwerror=true, compile, the
   unit and integration suites, and meson install into a staging tree; the
   build directory is under /srv (world-traversable, for the tests that run
   as other users).
3. system: the system suite (tests/system/test-systemd.py) with that
   staging tree laid over the root's /usr, booted (systemd 257 as PID 1).
4. package: the package suite (tests/package/test-package.py): the .deb
   built with the root's debhelper, lintian'ed with its lintian, installed,
   upgraded over itself, autopkgtest'ed and purged in the booted root.

Root only. Skips (77) without root or systemd-nspawn, and when the root is
not cached and the Debian archive cannot be reached. Installs mmdebstrap if
it is missing.

Usage: test-distro.py --source-root DIR --work-dir DIR [STEP...]
"""
import fcntl
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "system"))
from ipcdtest import SKIP, fail  # noqa: E402
from container import log, nspawn_run  # noqa: E402

# The release to check besides the machine's own: Debian 13 from 12.
# IPCD_TEST_SUITE=bookworm checks Debian 12 from a Debian 13 machine (not
# run by default there: the other suites ran on 13 already).
SUITE = os.environ.get("IPCD_TEST_SUITE", "trixie")
CACHE = os.environ.get("IPCD_TEST_CACHE", "/var/cache/ipcd-tests")
# What the root holds besides the build dependencies: a booted systemd, the
# tools of a package build, man (systemd-analyze verify checks
# Documentation=), ip.
INCLUDE = ["systemd", "systemd-sysv", "dbus", "build-essential", "dpkg-dev", "fakeroot",
           "man-db", "iproute2"]
RECIPE = 1      # bump when the way the root is made changes
BUILD = "/srv/ipcd-distro"   # the work directory, inside the containers

S = {}



def unmount_under(path):
    """Unmount whatever is mounted at or below path (deepest first), so that
    removing it can never reach into a bind-mounted /proc or /dev."""
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        points = [l.split()[1].replace("\\040", " ") for l in f]
    for m in sorted((m for m in points if m == path or m.startswith(path + "/")),
                    key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)

def sh(argv, timeout=1800, **kw):
    log("+ " + " ".join(argv))
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired:
        fail("timed out after %ds: %s" % (timeout, " ".join(argv)))
    if r.returncode != 0:
        print(r.stdout[-20000:])
        fail("%s: exit %d" % (" ".join(argv), r.returncode))
    return r.stdout


def build_depends(control):
    """The Build-Depends field of debian/control, as written."""
    with open(control) as f:
        text = f.read()
    m = re.search(r"^Build-Depends:(.*?)^(?=\S)", text, re.M | re.S)
    return re.sub(r"^#.*\n", "", m.group(1), flags=re.M) if m else ""


def root_key(control):
    h = hashlib.sha256()
    h.update(("%d %s %s\n" % (RECIPE, SUITE, " ".join(INCLUDE))).encode())
    h.update(build_depends(control).encode())
    return h.hexdigest()[:16]


def archive_mirror():
    """The Debian archive this machine's apt uses (its first Debian source)."""
    if os.environ.get("IPCD_TEST_MIRROR"):
        return os.environ["IPCD_TEST_MIRROR"]
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        uris = re.findall(r"^\s*URIs:\s*(.+)$", text, re.M)
        uris = [u for line in uris for u in line.split()]
        uris += re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        for u in uris:
            if u.rstrip("/").endswith("/debian"):
                return u.rstrip("/")
    return None


def reachable(mirror):
    url = "%s/dists/%s/InRelease" % (mirror, SUITE)
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status == 200, "HTTP %d" % r.status
    except Exception as e:  # noqa: BLE001  (any failure means: not reachable)
        return False, str(e)


def ensure_mmdebstrap():
    if shutil.which("mmdebstrap"):
        return
    log("mmdebstrap is missing: apt-get install mmdebstrap")
    sh(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
        "-o", "DPkg::Lock::Timeout=600", "mmdebstrap"], timeout=900)


def prune_old_roots(keep):
    """Other roots of this suite (older Build-Depends) that no run is using."""
    for d in glob.glob(os.path.join(CACHE, SUITE + "-*")):
        if d == keep or d.endswith((".tmp", ".lock")) or not os.path.isdir(d):
            continue
        with open(d + ".lock", "a") as lk:
            try:
                fcntl.flock(lk, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            log("removing the old root " + d)
            shutil.rmtree(d, ignore_errors=True)
            os.unlink(d + ".lock")


def step_root():
    control = os.path.join(S["source"], "debian", "control")
    key = root_key(control)
    root = os.path.join(CACHE, "%s-%s" % (SUITE, key))
    os.makedirs(CACHE, exist_ok=True)
    S["root"] = root
    # Held (shared) while the root is used, so that no other run prunes it.
    S["root_lock"] = open(root + ".lock", "a")
    with open(os.path.join(CACHE, ".build.lock"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(root, "etc", "os-release")):
            log("cached root %s (key: Build-Depends and recipe %d)" % (root, RECIPE))
        else:
            build_root(root, control)
        fcntl.flock(S["root_lock"], fcntl.LOCK_SH)
        prune_old_roots(root)
    release = sh(["sh", "-c", ". '%s/etc/os-release' && echo $PRETTY_NAME" % root]).strip()
    versions = sh(["chroot", root, "dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                   "systemd", "debhelper", "lintian", "meson", "gcc"])
    log("%s: %s" % (release, " | ".join(versions.split("\n")).strip(" |")))


def build_root(root, control):
    mirror = archive_mirror()
    if not mirror:
        print("skip: no Debian archive in this machine's apt sources (set IPCD_TEST_MIRROR): "
              "the %s root cannot be built" % SUITE)
        sys.exit(SKIP)
    ok, why = reachable(mirror)
    if not ok:
        print("skip: the Debian archive %s does not answer for %s (%s): the %s root is not "
              "cached (%s) and cannot be built" % (mirror, SUITE, why, SUITE, root))
        sys.exit(SKIP)
    ensure_mmdebstrap()
    tmp = root + ".tmp"
    unmount_under(tmp)  # an interrupted mmdebstrap may have left /proc, /dev in it
    shutil.rmtree(tmp, ignore_errors=True)
    # Only debian/control and debian/changelog go in, for apt-get build-dep.
    ctl = os.path.join(S["work"], "builddeps")
    shutil.rmtree(ctl, ignore_errors=True)
    os.makedirs(os.path.join(ctl, "debian"))
    for f in ("control", "changelog"):
        shutil.copy(os.path.join(os.path.dirname(control), f), os.path.join(ctl, "debian", f))
    start = time.monotonic()
    sh(["mmdebstrap", "--variant=important", "--skip=cleanup/apt/lists",
        "--include=" + ",".join(INCLUDE),
        "--customize-hook=mkdir -p \"$1/tmp/ipcd-builddeps\"",
        "--customize-hook=cp -r '%s/debian' \"$1/tmp/ipcd-builddeps/\"" % ctl,
        "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get build-dep "
        "-y -q /tmp/ipcd-builddeps",
        "--customize-hook=rm -rf \"$1/tmp/ipcd-builddeps\"",
        "--customize-hook=chroot \"$1\" apt-get clean",
        SUITE, tmp, mirror], timeout=1800)
    os.rename(tmp, root)
    log("built the %s root %s in %.0fs" % (SUITE, root, time.monotonic() - start))


def in_root(argv, timeout=1800):
    """argv in the cached root (no boot, throw-away overlay), the work directory at BUILD."""
    binds = [(S["work"], BUILD), (S["source"], "/srv/ipcd-src", "ro")]
    return nspawn_run(S["root"], argv, binds=binds, timeout=timeout)


def step_build():
    os.chmod(S["work"], 0o755)
    script = r"""
set -eu
b=%(b)s/build
rm -rf "$b" %(b)s/destdir
meson setup --prefix=/usr -Dwerror=true "$b" /srv/ipcd-src >"$b.setup.log" 2>&1 ||
    { cat "$b.setup.log"; exit 1; }
grep -E '^ *(systemd|Build type|C compiler)' "$b.setup.log" || true
meson compile -C "$b" >"$b.compile.log" 2>&1 || { cat "$b.compile.log"; exit 1; }
if grep -n 'warning:' "$b.compile.log"; then echo "compiler warnings"; exit 1; fi
echo "compiled, no warnings: $(cc --version | head -1)"
meson test -C "$b" --suite unit --suite integration --print-errorlogs
meson install -C "$b" --no-rebuild --destdir %(b)s/destdir >"$b.install.log" 2>&1 ||
    { cat "$b.install.log"; exit 1; }
grep -E '^(PrivateTmp|ProtectControlGroups)=' "$b/systemd/ipcd.service"
""" % {"b": BUILD}
    out = in_root(["sh", "-c", script])
    print(out[-6000:])
    S["destdir"] = os.path.join(S["work"], "destdir")


def sub_suite(script, args, timeout):
    """Another suite's script, on the host, against the root; its output as it comes."""
    argv = [sys.executable, os.path.join(S["source"], "tests", script)] + args
    log("+ " + " ".join(argv))
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    S["child"] = p
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(60)
        fail("%s timed out after %ds" % (script, timeout))
    finally:
        S["child"] = None
    if rc != 0:
        fail("%s: exit %d" % (script, rc))


def step_system():
    sub_suite("system/test-systemd.py", ["--build-root=" + os.path.join(S["work"], "build"),
                                         "--source-root=" + S["source"], "--prefix=/usr",
                                         "--os-root=" + S["root"],
                                         "--destdir=" + S["destdir"]], timeout=900)


def step_package():
    sub_suite("package/test-package.py", ["--source-root=" + S["source"],
                                          "--work-dir=" + os.path.join(S["work"], "package"),
                                          "--os-root=" + S["root"]], timeout=1200)


STEPS = [step_root, step_build, step_system, step_package]


def host_codename():
    try:
        with open("/etc/os-release") as f:
            m = re.search(r"^VERSION_CODENAME=\"?(\w+)", f.read(), re.M)
        return m.group(1) if m else None
    except OSError:
        return None


def parse_args():
    opts = {"source-root": os.path.dirname(os.path.dirname(HERE)), "work-dir": None}
    rest = []
    args = sys.argv[1:]
    while args:
        a = args.pop(0)
        key = a[2:].split("=", 1)[0] if a.startswith("--") else None
        if key in opts:
            opts[key] = a.split("=", 1)[1] if "=" in a else args.pop(0)
        else:
            rest.append(a)
    if not opts["work-dir"]:
        fail("--work-dir is required")
    return opts, rest


def main():
    if os.geteuid() != 0:
        print("skip: the distro suite needs root")
        sys.exit(SKIP)
    if not shutil.which("systemd-nspawn"):
        print("skip: systemd-nspawn is missing (apt-get install systemd-container)")
        sys.exit(SKIP)
    opts, only = parse_args()
    host = host_codename()
    if host == SUITE:
        print("skip: this machine runs Debian %s already, and the other suites ran on it "
              "(IPCD_TEST_SUITE=bookworm checks Debian 12 from here)" % SUITE)
        sys.exit(SKIP)
    S["source"] = os.path.abspath(opts["source-root"])
    S["work"] = os.path.abspath(opts["work-dir"])
    os.makedirs(S["work"], exist_ok=True)

    def terminate(signum, frame):
        child = S.get("child")
        if child and child.poll() is None:
            child.terminate()   # it powers its container off
        sys.exit("terminated by signal %d" % signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    # STEP... names the steps to run (the root is always made).
    steps = [s for s in STEPS if s is step_root or not only or s.__name__ in only
             or s.__name__[5:] in only]
    passed = failed = 0
    started = time.monotonic()
    for step in steps:
        t = time.monotonic()
        try:
            step()
        except SystemExit as e:
            if e.code == SKIP:
                raise
            failed += 1
            print("FAIL %s (%.1fs)" % (step.__name__, time.monotonic() - t), flush=True)
            break
        passed += 1
        print("ok   %s (%.1fs)" % (step.__name__, time.monotonic() - t), flush=True)
    print("%d passed, %d failed (%.1fs)" % (passed, failed, time.monotonic() - started))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
