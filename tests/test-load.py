#!/usr/bin/env python3
"""Many clients at once: 200 concurrent clients (Unix and TCP), each doing
100 round trips with every answer checked; then concurrent pipelining."""
import socket
import threading
import time

import ipcdtest
from ipcdtest import Daemon, check, frame

N_CLIENTS = 200
N_ROUND_TRIPS = 100
TIME_LIMIT = 120


def run_clients(d, n, body):
    """Run body(i, conn) in n threads, all connected before any starts;
    returns the errors."""
    errors = []
    barrier = threading.Barrier(n + 1, timeout=60)

    def worker(i):
        try:
            conn = d.connect_tcp(timeout=60) if i % 4 == 3 else d.connect(timeout=60)
        except Exception as e:
            errors.append("client %d: connect: %r" % (i, e))
            barrier.abort()
            return
        try:
            barrier.wait()
            body(i, conn)
        except threading.BrokenBarrierError:
            errors.append("client %d: barrier broken" % i)
        except SystemExit as e:      # a failed check() in this thread
            errors.append("client %d: check failed (%s)" % (i, e))
        except Exception as e:
            errors.append("client %d: %r" % (i, e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    deadline = time.monotonic() + TIME_LIMIT
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        errors.append("%d clients did not finish within %ds" % (stuck, TIME_LIMIT))
    return errors


def test_concurrent_round_trips():
    with Daemon(tcp=True) as d:
        ctl = d.connect()
        d.wait_clients(1, via=ctl)
        ok0 = int(d.stats(via=ctl)["commands_ok"])

        def body(i, conn):
            for j in range(N_ROUND_TRIPS):
                if j % 10 == 0:
                    req, want = b"ping", b"OK 4\npong\n"
                else:
                    text = b"client-%d-request-%d" % (i, j)
                    req, want = b"echo " + text, frame("OK", text)
                conn.send(req + b"\n")
                got = conn.read_frame_raw()
                if got != want:
                    raise AssertionError("request %d: got %r, wanted %r" % (j, got, want))

        start = time.monotonic()
        errors = run_clients(d, N_CLIENTS, body)
        elapsed = time.monotonic() - start
        check(not errors, "%d clients failed, first: %s" % (len(errors), errors[:3]))
        check(d.alive(), "ipcd died")
        s = d.stats(via=ctl)
        done = int(s["commands_ok"]) - ok0
        check(done >= N_CLIENTS * N_ROUND_TRIPS, "commands_ok grew by %d, wanted >= %d"
              % (done, N_CLIENTS * N_ROUND_TRIPS))
        d.wait_clients(1, via=ctl, timeout=30)
        print("  %d round trips by %d clients in %.1fs (%.0f/s)" % (
            N_CLIENTS * N_ROUND_TRIPS, N_CLIENTS, elapsed,
            N_CLIENTS * N_ROUND_TRIPS / elapsed))


def test_concurrent_pipelines():
    n_clients, depth = 40, 2000

    with Daemon(tcp=True) as d:
        def body(i, conn):
            reqs = b"".join(b"echo %d:%d\n" % (i, j) for j in range(depth))
            sender = ipcdtest.send_in_background(conn, reqs)
            for j in range(depth):
                want = frame("OK", b"%d:%d" % (i, j))
                got = conn.read_frame_raw()
                if got != want:
                    raise AssertionError("answer %d: got %r, wanted %r" % (j, got, want))
            sender.join(30)
            conn.exchange("ping", b"OK 4\npong\n")

        start = time.monotonic()
        errors = run_clients(d, n_clients, body)
        check(not errors, "%d clients failed, first: %s" % (len(errors), errors[:3]))
        print("  %d pipelined requests by %d clients in %.1fs" % (
            n_clients * depth, n_clients, time.monotonic() - start))


def test_connection_churn():
    """2000 short-lived connections (connect, maybe a request, close) leave
    no clients, fds or threads behind."""
    n = 2000
    with Daemon(tcp=True) as d:
        ctl = d.connect()
        d.wait_clients(1, via=ctl)
        total0 = int(d.stats(via=ctl)["clients_total"])
        fds0 = ipcdtest.n_fds(d.pid)
        threads0 = ipcdtest.n_threads(d.pid)
        start = time.monotonic()
        for i in range(n):
            s = socket.socket(socket.AF_UNIX if i % 2 else socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(d.path if i % 2 else ("127.0.0.1", d.port))
            if i % 3 == 0:
                s.sendall(b"ping\n")
                if i % 6 == 0:
                    got = b""
                    while len(got) < 10:
                        chunk = s.recv(10 - len(got))
                        if not chunk:
                            break
                        got += chunk
                    check(got == b"OK 4\npong\n", "churn ping %d: %r" % (i, got))
            s.close()
        elapsed = time.monotonic() - start

        def settled():
            st = d.stats(via=ctl)
            return (int(st["clients_total"]) - total0 >= n and st["clients"] == "1" and
                    ipcdtest.n_fds(d.pid) <= fds0 and ipcdtest.n_threads(d.pid) <= threads0)
        if not ipcdtest.wait_for_quietly(settled, 30):
            st = d.stats(via=ctl)
            ipcdtest.fail("after %d connections: clients_total +%d, clients %s, fds %d (were %d), "
                          "threads %d (were %d)" % (n, int(st["clients_total"]) - total0,
                                                    st["clients"], ipcdtest.n_fds(d.pid), fds0,
                                                    ipcdtest.n_threads(d.pid), threads0))
        check(int(d.stats(via=ctl)["clients_refused"]) == 0, "clients refused during churn")
        print("  %d connections in %.1fs" % (n, elapsed))


def test_client_fds_above_fd_setsize():
    """Client fds never go through select(): clients whose fds are beyond
    FD_SETSIZE (1024) are served like any other."""
    # fds 3..9 stay free for the listener and the daemon's own; every other
    # fd below 1100 is taken, so that most clients land above 1100
    with Daemon(tcp=True, preexec_fn=ipcdtest.fill_fds(10, 1100)) as d:
        conns = [d.connect_tcp() if i % 2 else d.connect() for i in range(20)]
        for i, c in enumerate(conns):
            c.exchange("echo high %d" % i, frame("OK", b"high %d" % i))
        high = [fd for fd in ipcdtest.socket_fds(d.pid) if fd >= 1024]
        check(len(high) >= 10, "test set-up: only %d client fds above 1024" % len(high))
        for c in conns:
            c.exchange("ping", b"OK 4\npong\n")
            c.close()
        d.connect().exchange("ping", b"OK 4\npong\n")
        check(d.alive(), "ipcd died")


if __name__ == "__main__":
    ipcdtest.run_tests([
        test_concurrent_round_trips,
        test_concurrent_pipelines,
        test_connection_churn,
        test_client_fds_above_fd_setsize,
    ])
