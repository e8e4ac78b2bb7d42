#!/usr/bin/env python3
"""ipcd-bridge between two "hosts" (two standalone ipcd instances, A and B)
through a mosquitto broker on a random loopback port:

1. 10,000 events published on A reach a listener on B at QoS 1; none lost,
   duplicates counted (QoS 1 allows some); nothing loops back to A, B
   sends nothing back out; events/s reported.
2. Latency, closed loop (one event in flight): A -> bridge -> broker ->
   bridge -> B, against mosquitto_pub -l | broker | mosquitto_sub on the
   same broker; p50/p99 and the difference reported.
3. The broker stopped for 5 s and started again: every event that fits the
   bridge's bounded queue arrives, the ones past it are counted as dropped
   (STATUS) and logged.
4. ipcd A killed and started again: the bridge reconnects and carries on.
5. The bridge killed with SIGKILL: the broker publishes its offline will.

Figures go to stdout (meson test -v shows them). BRIDGE_EVENTS (default
10000) scales phase 1. Everything waits for conditions, bounded in time;
only processes started here are killed, by pid.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import ipcdtest
from ipcdtest import Conn, Daemon, Notify, check, fail, free_port, own, skip, wait_for

BRIDGE = os.environ.get("IPCD_BRIDGE", "")
N_EVENTS = int(os.environ.get("BRIDGE_EVENTS", "10000"))
N_LATENCY = int(os.environ.get("BRIDGE_LATENCY_SAMPLES", "500"))
STATUS_RE = re.compile(r"broker (\w+), ipcd (\w+); out (\d+), in (\d+), queued (\d+)/(\d+), "
                       r"dropped (\d+)/(\d+), looped (\d+), lost (\d+)")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100.0))]


class Broker:
    """mosquitto on a free loopback port, persistent (sessions survive a
    restart, as on a real broker), started and stopped by pid."""

    def __init__(self):
        # mosquitto started as root runs as user mosquitto: let it save its
        # persistence file here, in a directory that user can reach (TMPDIR
        # may be private, the tree under /root).
        self.dir = ipcdtest.public_tmpdir("ipcd-bridge-broker-")
        os.chmod(self.dir, 0o1777)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    "persistence_location %s/\nmax_queued_messages 1000000\n"
                    "max_inflight_messages 100\n" % (self.port, self.dir))
        self.proc = None
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = own(subprocess.Popen(["mosquitto", "-c", self.conf], stdout=self.log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait_for(self._accepts, 10, "mosquitto to listen on port %d" % self.port)

    def _accepts(self):
        if self.proc.poll() is not None:
            fail("mosquitto exited: %s" % open(os.path.join(self.dir, "log")).read())
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Bridge:
    """ipcd-bridge for one host, with a NOTIFY_SOCKET to read its STATUS."""

    def __init__(self, host, ipcd, broker, extra=""):
        self.dir = tempfile.mkdtemp(prefix="ipcd-bridge-%s-" % host)
        self.host = host
        self.conf = os.path.join(self.dir, "bridge.conf")
        with open(self.conf, "w") as f:
            f.write("[Bridge]\nBroker=mqtt://127.0.0.1:%d\nHost=%s\nKeepaliveSec=5\n"
                    "ReconnectMaxSec=2\n%s\n"
                    "[Out deploy]\nQoS=1\n\n"
                    "[In fleet-deploy]\nMqttTopic=ipcd/+/deploy\nLocalTopic=deploy\nQoS=1\n"
                    % (broker.port, host, extra))
        r = subprocess.run([BRIDGE, "--check-config", "-c", self.conf], capture_output=True,
                           text=True)
        check(r.returncode == 0, "--check-config: %s" % r.stderr)
        self.notify = Notify(self.dir)
        env = ipcdtest.clean_env({"NOTIFY_SOCKET": self.notify.path})
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = own(subprocess.Popen([BRIDGE, "-c", self.conf, "-s", ipcd.path], env=env,
                                         stderr=self.stderr, stdin=subprocess.DEVNULL))
        self.notify.wait("READY=1")

    def status(self):
        if self.proc.poll() is not None:
            fail("bridge %s exited with %s: %s" % (self.host, self.proc.returncode, self.log()))
        last = [m for m in self.notify.poll() if m.startswith("STATUS=broker")]
        if not last:
            return None
        m = STATUS_RE.search(last[-1])
        check(m, "unparsable STATUS: %r" % last[-1])
        g = m.groups()
        return {"broker": g[0], "ipcd": g[1], "out": int(g[2]), "in": int(g[3]),
                "queued_out": int(g[4]), "queued_in": int(g[5]), "dropped_out": int(g[6]),
                "dropped_in": int(g[7]), "looped": int(g[8]), "lost": int(g[9])}

    def wait(self, cond, what, timeout=30):
        last = [None]

        def ok():
            last[0] = self.status()
            return last[0] is not None and cond(last[0])
        if not ipcdtest.wait_for_quietly(ok, timeout):
            fail("bridge %s: timed out waiting for %s; STATUS %r; log:\n%s"
                 % (self.host, what, last[0], self.log()[-3000:]))
        return last[0]

    def connected(self, timeout=30):
        return self.wait(lambda s: s["broker"] == "connected" and s["ipcd"] == "connected",
                         "both sides connected", timeout)

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.proc.wait(20)
        self.stderr.close()
        report = ipcdtest.sanitizer_report(self.log())
        check(report is None, "bridge %s: %s" % (self.host, report))
        return self.proc.returncode


class Listener(threading.Thread):
    """A subscriber of `deploy` on one ipcd; records (payload, monotonic ns)."""

    def __init__(self, ipcd):
        super().__init__(daemon=True)
        self.conn = ipcd.connect(timeout=120)
        f = self.conn.request("subscribe deploy")
        check(f.kind == "OK", "subscribe: %r" % f)
        self.got = []
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.start()

    def run(self):
        try:
            while True:
                f = self.conn.read_frame()
                t = time.monotonic_ns()
                if f.kind == "EVENT":
                    with self.cv:
                        self.got.append((f.payload.decode(), t))
                        self.cv.notify_all()
        except (EOFError, OSError):
            pass

    def count(self):
        with self.lock:
            return len(self.got)

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while len(self.got) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True

    def clear(self):
        with self.lock:
            self.got = []


def publish_many(ipcd, payloads):
    """Pipeline `publish deploy P` for each P on one connection; every answer
    must be OK. Returns the monotonic ns at which each was sent."""
    c = ipcd.connect(timeout=120)
    sent = {}
    batch = 200
    for i in range(0, len(payloads), batch):
        chunk = payloads[i:i + batch]
        now = time.monotonic_ns()
        c.send("".join("publish deploy %s\n" % p for p in chunk))
        for p in chunk:
            sent[p] = now
        for _ in chunk:
            f = c.read_frame()
            check(f.kind == "OK", "publish: %r" % f)
    c.close()
    return sent


def phase_throughput(A, B, bA, bB, lA, lB):
    payloads = ["t%d" % i for i in range(N_EVENTS)]
    base_out, base_in = bA.status()["out"], bB.status()["in"]
    t0 = time.monotonic_ns()
    publish_many(A, payloads)
    if not lB.wait_count(N_EVENTS, 120 * ipcdtest_multiplier()):
        fail("B got %d of %d events; bridge A %r, bridge B %r"
             % (lB.count(), N_EVENTS, bA.status(), bB.status()))
    t1 = max(t for _, t in lB.got)
    # Nothing more may come: both bridges have settled (everything acknowledged,
    # nothing queued), and then the counts are final.
    bA.wait(lambda s: s["out"] - base_out >= N_EVENTS and s["queued_out"] == 0, "A's out count")
    bB.wait(lambda s: s["in"] - base_in >= N_EVENTS and s["queued_in"] == 0, "B's in count")
    wait_for(lambda: lA.count() >= N_EVENTS, 30, "A's own listener")
    # A round trip through both ipcds and the broker flushes anything in flight.
    marker_sent = publish_many(A, ["marker"])
    check(lB.wait_count(N_EVENTS + 1, 30), "the marker did not reach B")
    got = [p for p, _ in lB.got if p != "marker"]
    uniq = set(got)
    lost = len(set(payloads) - uniq)
    dups = len(got) - len(uniq)
    rate = N_EVENTS / ((t1 - t0) / 1e9)
    sA, sB = bA.status(), bB.status()
    print("phase 1: %d events A -> B at QoS 1: %d received, %d lost, %d duplicate(s); "
          "%.0f events/s through the bridges" % (N_EVENTS, len(got), lost, dups, rate))
    print("phase 1: bridge A %r" % sA)
    print("phase 1: bridge B %r" % sB)
    check(lost == 0, "%d events lost" % lost)
    # Loops: A's own listener saw each local event once (nothing came back),
    # A's bridge took nothing in, B's bridge sent nothing out.
    a_got = [p for p, _ in lA.got if p != "marker"]
    check(len(a_got) == N_EVENTS, "A's listener got %d events for %d published: a loop"
          % (len(a_got), N_EVENTS))
    check(sA["in"] == 0 and sB["out"] == 0 and sA["looped"] == 0,
          "something looped: A %r, B %r" % (sA, sB))
    del marker_sent
    lA.clear()
    lB.clear()
    return rate, lost, dups


def ipcdtest_multiplier():
    return 4 if os.environ.get("ASAN_OPTIONS") or os.environ.get("TSAN_OPTIONS") else 1


def phase_latency(A, lB, broker):
    """Closed loop: the next event goes when the previous one arrived."""
    c = A.connect()
    bridge = []
    for i in range(N_LATENCY):
        p = "l%d" % i
        t = time.monotonic_ns()
        f = c.request("publish deploy %s" % p)
        check(f.kind == "OK", "publish: %r" % f)
        check(lB.wait_count(i + 1, 30), "latency event %d did not arrive" % i)
        bridge.append((lB.got[i][1] - t) / 1000.0)
    c.close()
    lB.clear()

    sub = own(subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-t",
                                "direct/bench", "-F", "%p"], stdout=subprocess.PIPE,
                               stdin=subprocess.DEVNULL))
    pub = own(subprocess.Popen(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t",
                                "direct/bench", "-l"], stdin=subprocess.PIPE))
    direct = []
    # mosquitto_sub is subscribed once a probe published comes through.
    while True:
        pub.stdin.write(b"probe\n")
        pub.stdin.flush()
        import select
        r, _, _ = select.select([sub.stdout], [], [], 0.2)
        if r:
            sub.stdout.readline()
            break
    for i in range(N_LATENCY):
        t = time.monotonic_ns()
        pub.stdin.write(b"d%d\n" % i)
        pub.stdin.flush()
        while True:
            line = sub.stdout.readline()
            check(line, "mosquitto_sub ended")
            if line.strip() == b"d%d" % i:
                break
        direct.append((time.monotonic_ns() - t) / 1000.0)
    pub.stdin.close()
    pub.wait(10)
    os.kill(sub.pid, signal.SIGTERM)
    sub.wait(10)
    b50, b99, d50, d99 = (percentile(bridge, 50), percentile(bridge, 99),
                          percentile(direct, 50), percentile(direct, 99))
    print("phase 2: latency, %d events one at a time: ipcctl-level A -> B through two bridges "
          "p50 %.0f us, p99 %.0f us; mosquitto_pub -> mosquitto_sub direct p50 %.0f us, "
          "p99 %.0f us; added p50 %.0f us, p99 %.0f us"
          % (N_LATENCY, b50, b99, d50, d99, b50 - d50, b99 - d99))


def phase_broker_outage(A, B, broker, lB):
    """Bridge A with a queue of 1000: 1500 events while the broker is down
    for 5 s; the last 1000 arrive, 500 are counted as dropped."""
    bA = Bridge("A", A, broker, "QueueMaxEvents=1000")
    bA.connected()
    broker.stop()
    bA.wait(lambda s: s["broker"] == "disconnected", "the broker to be gone")
    down_since = time.monotonic()
    payloads = ["o%d" % i for i in range(1500)]
    publish_many(A, payloads)
    s = bA.wait(lambda s: s["queued_out"] == 1000 and s["dropped_out"] == 500,
                "1000 queued, 500 dropped")
    # The broker stays away for 5 s (the scenario), then comes back.
    while time.monotonic() - down_since < 5.0:
        time.sleep(0.1)
    broker.start()
    bA.connected()
    if not lB.wait_count(1000, 60):
        with open(os.path.join(broker.dir, "log"), errors="replace") as f:
            blog = f.read()[-3000:]
        fail("after the outage B got %d of 1000; bridge A %r\n--- broker log:\n%s"
             % (lB.count(), bA.status(), blog))
    got = set(p for p, _ in lB.got)
    want = set(payloads[500:])
    check(want <= got, "missing after the outage: %r" % sorted(want - got)[:10])
    check(not (got - want), "unexpected after the outage: %r" % sorted(got - want)[:10])
    check("dropped 500 event(s)" in bA.log() or "500 in all" in bA.log(),
          "the drops are not logged:\n" + bA.log()[-2000:])
    print("phase 3: broker down 5 s, 1500 events on A, queue 1000: %d arrived, "
          "%d dropped (counted: %d), duplicates %d"
          % (len(got), 1500 - len(got), s["dropped_out"], len(lB.got) - len(got)))
    lB.clear()
    return bA


def phase_config_errors():
    """--check-config names each problem with its file and line (the rules'
    with their section), and exits non-zero."""
    d = tempfile.mkdtemp(prefix="ipcd-bridge-conf-")
    try:
        conf = os.path.join(d, "bridge.conf")
        with open(conf, "w") as f:
            f.write("[Bridge]\nBroker=mqtt://127.0.0.1:1\nStatusTopic=a/#\nCertFile=/x\n"
                    "[Out deploy]\nMqttTopic=fleet/+/deploy\n"
                    "[In bad]\nLocalTopic=no spaces\nMqttTopic=a/b#\n"
                    "[In none]\n")
        r = subprocess.run([BRIDGE, "--check-config", "-c", conf], capture_output=True,
                           text=True, timeout=30)
        check(r.returncode != 0, "--check-config accepted a bad file: %r" % r.stdout)
        for want in ("invalid StatusTopic=a/#", "CertFile= and KeyFile= go together",
                     "[Out deploy]: invalid MqttTopic=fleet/+/deploy",
                     "bridge.conf:8: invalid LocalTopic=no spaces", "[In bad]: invalid MqttTopic=a/b#",
                     "[In none]: MqttTopic= is missing"):
            check(want in r.stderr, "--check-config does not say %r:\n%s" % (want, r.stderr))
        check(re.search(r"bridge\.conf:7: \[In bad\]", r.stderr) is not None,
              "rule errors name file and line: %s" % r.stderr)
        check(":0:" not in r.stderr and "bridge.conf: CertFile=" in r.stderr,
              "whole-file problems name the file, no line 0: %s" % r.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("config errors: each named with file and line")


def main():
    if not BRIDGE or not os.path.exists(BRIDGE):
        skip("ipcd-bridge is not built (no libmosquitto)")
    phase_config_errors()
    for prog in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        if not shutil.which(prog):
            skip("%s is not installed (mosquitto, mosquitto-clients)" % prog)

    broker = Broker()
    A = Daemon()
    B = Daemon()
    bA = Bridge("A", A, broker)
    bB = Bridge("B", B, broker)
    bA.connected()
    bB.connected()
    lA = Listener(A)
    lB = Listener(B)
    # The bridges subscribe on the broker after connecting: wait until an
    # event goes through before measuring.
    publish_many(A, ["warmup"])
    check(lB.wait_count(1, 30), "the warm-up event did not reach B")
    lA.clear()
    lB.clear()

    phase_throughput(A, B, bA, bB, lA, lB)
    phase_latency(A, lB, broker)
    bA.stop()
    check("offline" in subprocess.run(
        ["mosquitto_sub", "-p", str(broker.port), "-t", "ipcd/A/status", "-C", "1", "-W", "10"],
        capture_output=True, text=True).stdout, "no retained offline after a clean stop")

    bA = phase_broker_outage(A, B, broker, lB)
    bB.connected()

    # ipcd A killed and started again on the same socket.
    path = A.path
    A.stop(signal.SIGKILL)
    bA.wait(lambda s: s["ipcd"] == "disconnected", "ipcd A to be gone")
    os.unlink(path)
    A = Daemon(path=path)
    bA.connected()
    publish_many(A, ["k%d" % i for i in range(100)])
    check(lB.wait_count(100, 30), "after ipcd A restarted, B got %d of 100" % lB.count())
    print("phase 4: ipcd A killed and restarted: the bridge reconnected, 100 of 100 arrived")

    # SIGKILL: the will (retained offline) after keepalive * 1.5.
    watch = own(subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-t", "ipcd/A/status",
                                  "-v"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL))
    line = watch.stdout.readline().decode()
    check(line.strip() == "ipcd/A/status online", "status before the kill: %r" % line)
    t = time.monotonic()
    os.kill(bA.proc.pid, signal.SIGKILL)
    bA.proc.wait()
    result = []
    reader = threading.Thread(target=lambda: result.append(watch.stdout.readline().decode()),
                              daemon=True)
    reader.start()
    reader.join(30)
    check(result and result[0].strip() == "ipcd/A/status offline",
          "no offline will within 30 s: %r" % result)
    print("phase 5: bridge A killed with SIGKILL: offline will after %.1f s"
          % (time.monotonic() - t))
    os.kill(watch.pid, signal.SIGTERM)
    watch.wait()

    bB.stop()
    broker.stop()
    A.stop()
    B.stop()
    print("ok")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, ipcdtest._on_sigterm)
    main()
