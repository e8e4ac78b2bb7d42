/*
 * time-util.c - microsecond time; see time-util.h.
 */
#include "time-util.h"

usec_t now_usec(clockid_t clock)
{
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / NSEC_PER_USEC;
}

struct timespec usec_to_timespec(usec_t u)
{
        return (struct timespec){
            .tv_sec = (time_t)(u / USEC_PER_SEC),
            .tv_nsec = (long)((u % USEC_PER_SEC) * NSEC_PER_USEC),
        };
}

struct timeval usec_to_timeval(usec_t u)
{
        return (struct timeval){
            .tv_sec = (time_t)(u / USEC_PER_SEC),
            .tv_usec = (suseconds_t)(u % USEC_PER_SEC),
        };
}

usec_t deadline_after(usec_t timeout)
{
        usec_t n;

        if (timeout == 0)
                return USEC_INFINITY;
        n = now_usec(CLOCK_MONOTONIC);
        return timeout >= USEC_INFINITY - n ? USEC_INFINITY : n + timeout;
}

int poll_timeout_ms(usec_t deadline, usec_t now)
{
        usec_t left;

        if (deadline == USEC_INFINITY)
                return -1;
        if (now >= deadline)
                return 0;
        left = deadline - now;
        left = left / USEC_PER_MSEC + (left % USEC_PER_MSEC != 0);
        return left > INT32_MAX ? INT32_MAX : (int)left;
}
