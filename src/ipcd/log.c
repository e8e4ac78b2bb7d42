/*
 * log.c - journal or stderr logging; see log.h.
 *
 * Any thread, no lock: each entry is one sd_journal_sendv() or one
 * fprintf() of a line formatted beforehand. The journal decision is taken
 * once in log_open(), on the main thread before any other starts; after
 * that only the atomic level changes (at start, and by server_reload()
 * on whichever thread reloads).
 * Never call it under the registry or the events lock (DEVELOPERS.md). A
 * RateLimit is guarded by whoever owns it (auth_lock, refusal_lock).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <inttypes.h>

#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include "client.h"
#include "log.h"

atomic_int log_max_level = LOG_INFO;
static bool use_journal;

static const char *const level_names[] = {
    [LOG_EMERG] = "emerg",     [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit", [LOG_ERR] = "err",
    [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_open(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        use_journal = false;
        if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0)
                use_journal = st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

int log_level_from_string(const char *s)
{
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (strcmp(s, level_names[i]) == 0)
                        return (int)i;
        if (strcmp(s, "error") == 0)
                return LOG_ERR;
        if (strcmp(s, "warn") == 0)
                return LOG_WARNING;
        return -EINVAL;
}

static const char *log_level_to_string(int level)
{
        if (level < 0 || (size_t)level >= ELEMENTSOF(level_names))
                return NULL;
        return level_names[level];
}

uint64_t now_usec(int clock)
{
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int log_full(int level, int error, const struct Client *c, const char *const *commands,
             size_t n_commands, const char *result, uint64_t duration_usec, const char *fmt, ...)
{
        char msg[1024];
        va_list ap;

        if (error < 0)
                error = -error;
        errno = error;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        if (!use_journal) {
                if (c)
                        fprintf(stderr, "ipcd: <%s> client %" PRIu64 ": %s\n",
                                log_level_to_string(level), c->id, msg);
                else
                        fprintf(stderr, "ipcd: <%s> %s\n", log_level_to_string(level), msg);
                return -error;
        }

        {
                /* One journal entry, only the fields that apply. */
                char f[10 + CLIENT_COMMANDS_LOGGED][160];
                struct iovec iov[10 + CLIENT_COMMANDS_LOGGED];
                size_t n = 0;

#define FIELD(...)                                                                                 \
        do {                                                                                       \
                snprintf(f[n], sizeof(f[n]), __VA_ARGS__);                                         \
                n++;                                                                               \
        } while (0)
                char mf[sizeof(msg) + 64];

                if (c)
                        snprintf(mf, sizeof(mf), "MESSAGE=client %" PRIu64 ": %s", c->id, msg);
                else
                        snprintf(mf, sizeof(mf), "MESSAGE=%s", msg);
                n++; /* iov[0] is the message */
                FIELD("PRIORITY=%d", level);
                if (error)
                        FIELD("ERRNO=%d", error);
                if (c) {
                        FIELD("IPCD_CLIENT_ID=%" PRIu64, c->id);
                        FIELD("IPCD_TRANSPORT=%s", c->transport == TRANSPORT_UNIX ? "unix" : "tcp");
                        if (c->transport == TRANSPORT_UNIX) {
                                FIELD("IPCD_PEER_UID=%u", (unsigned)c->cred.uid);
                                FIELD("IPCD_PEER_PID=%d", (int)c->cred.pid);
                        } else
                                FIELD("IPCD_PEER_ADDR=%s", c->peer);
                }
                for (size_t i = 0; i < n_commands && i < CLIENT_COMMANDS_LOGGED; i++)
                        FIELD("IPCD_COMMAND=%.120s", commands[i]);
                if (result)
                        FIELD("IPCD_RESULT=%.120s", result);
                if (duration_usec != UINT64_MAX)
                        FIELD("IPCD_DURATION_USEC=%" PRIu64, duration_usec);
#undef FIELD
                iov[0] = (struct iovec){mf, strlen(mf)};
                for (size_t i = 1; i < n; i++)
                        iov[i] = (struct iovec){f[i], strlen(f[i])};
                sd_journal_sendv(iov, (int)n);
        }
        return -error;
}

bool ratelimit_below(RateLimit *rl)
{
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (rl->begin == 0 || now - rl->begin >= rl->interval_usec) {
                rl->begin = now;
                rl->n = 0;
        }
        if (rl->n < rl->burst) {
                rl->n++;
                return true;
        }
        rl->suppressed++;
        return false;
}
