/*
 * test-time-util.c - unit tests for src/shared/time-util.c and fd-util.c:
 * the conversions at their edges, the poll() timeout's rounding and its
 * limits, and O_NONBLOCK set and cleared without touching other flags.
 * Plain C; a failed check prints file:line, and the exit status is non-zero
 * if any check failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "fd-util.h"
#include "macro.h"
#include "time-util.h"

static unsigned n_failed, n_checks;

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                n_checks++;                                                                        \
                if (!(cond)) {                                                                     \
                        n_failed++;                                                                \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
                }                                                                                  \
        } while (0)

static void test_conversions(void)
{
        struct timespec ts = usec_to_timespec(2 * USEC_PER_SEC + 345678);
        struct timeval tv = usec_to_timeval(2 * USEC_PER_SEC + 345678);

        CHECK(ts.tv_sec == 2 && ts.tv_nsec == 345678000);
        CHECK(tv.tv_sec == 2 && tv.tv_usec == 345678);
        ts = usec_to_timespec(0);
        CHECK(ts.tv_sec == 0 && ts.tv_nsec == 0);
        ts = usec_to_timespec(USEC_PER_SEC - 1);
        CHECK(ts.tv_sec == 0 && ts.tv_nsec == 999999000);
}

static void test_now(void)
{
        usec_t a = now_usec(CLOCK_MONOTONIC), b = now_usec(CLOCK_MONOTONIC);
        struct timespec ts;

        CHECK(a > 0 && b >= a);
        clock_gettime(CLOCK_REALTIME, &ts);
        CHECK(now_usec(CLOCK_REALTIME) / USEC_PER_SEC >= (usec_t)ts.tv_sec);
        CHECK(deadline_after(0) == USEC_INFINITY);
        CHECK(deadline_after(USEC_INFINITY - 1) == USEC_INFINITY);
        a = now_usec(CLOCK_MONOTONIC);
        b = deadline_after(5 * USEC_PER_SEC);
        CHECK(b >= a + 5 * USEC_PER_SEC && b < a + 6 * USEC_PER_SEC);
}

static void test_poll_timeout(void)
{
        CHECK(poll_timeout_ms(USEC_INFINITY, 0) == -1);
        CHECK(poll_timeout_ms(100, 100) == 0);
        CHECK(poll_timeout_ms(100, 200) == 0);
        /* Rounded up: never early. */
        CHECK(poll_timeout_ms(1001, 1000) == 1);
        CHECK(poll_timeout_ms(2000, 1000) == 1);
        CHECK(poll_timeout_ms(2001, 1000) == 2);
        CHECK(poll_timeout_ms(USEC_INFINITY - 1, 0) == INT32_MAX);
}

static void test_nonblock(void)
{
        int p[2];

        if (pipe2(p, O_CLOEXEC) < 0) {
                CHECK(!"pipe2");
                return;
        }
        CHECK(fd_nonblock(p[0], true) == 0);
        CHECK(fcntl(p[0], F_GETFL) & O_NONBLOCK);
        CHECK(fcntl(p[0], F_GETFD) & FD_CLOEXEC);
        CHECK(fd_nonblock(p[0], true) == 0);
        CHECK(fd_nonblock(p[0], false) == 0);
        CHECK(!(fcntl(p[0], F_GETFL) & O_NONBLOCK));
        safe_close(p[0]);
        safe_close(p[1]);
        CHECK(fd_nonblock(p[0], true) == -EBADF);
}

int main(void)
{
        test_conversions();
        test_now();
        test_poll_timeout();
        test_nonblock();
        printf("%u checks, %u failed\n", n_checks, n_failed);
        return n_failed ? 1 : 0;
}
