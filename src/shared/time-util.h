/*
 * time-util.h - microsecond time for all three programs: reading a clock,
 * converting to the struct timespec/timeval that the system calls take, and
 * the poll() timeout that ends at a deadline.
 *
 * Plain functions of their arguments and the clock; no state, no locks,
 * callable from any thread. A deadline is an absolute time of the clock it
 * was read from; USEC_INFINITY means none.
 */
#pragma once

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

typedef uint64_t usec_t;

#define USEC_INFINITY ((usec_t)UINT64_MAX)
#define USEC_PER_SEC  ((usec_t)1000000ULL)
#define USEC_PER_MSEC ((usec_t)1000ULL)
#define NSEC_PER_USEC ((uint64_t)1000ULL)

/* The clock (CLOCK_MONOTONIC, CLOCK_REALTIME, ...) in microseconds. */
usec_t now_usec(clockid_t clock);

struct timespec usec_to_timespec(usec_t u);
struct timeval usec_to_timeval(usec_t u);

/* The CLOCK_MONOTONIC deadline that lies `timeout` from now; a timeout of
 * 0 means none (USEC_INFINITY). */
usec_t deadline_after(usec_t timeout);

/*
 * The timeout for poll() that ends at `deadline`, seen at `now`: -1 for
 * USEC_INFINITY, 0 once it has passed, otherwise the milliseconds left
 * rounded up (so that poll() never returns early and spins), at most
 * INT32_MAX.
 */
int poll_timeout_ms(usec_t deadline, usec_t now);
