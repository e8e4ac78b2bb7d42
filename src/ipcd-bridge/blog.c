/*
 * blog.c - journal or stderr logging for ipcd-bridge; see blog.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include "blog.h"

static bool use_journal;

void blog_open(void)
{
        use_journal = log_stderr_is_journal();
}

int log_full(int level, int error, const LogFields *lf, const char *fmt, ...)
{
        char msg[1024], f[8][300];
        struct iovec iov[8];
        va_list ap;
        int n = 0;

        if (error < 0)
                error = -error;
        errno = error;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        if (!use_journal) {
                fprintf(stderr, "ipcd-bridge: <%s> %s\n", log_level_to_string(level & 7), msg);
                return -error;
        }

#define FIELD(...)                                                                                 \
        do {                                                                                       \
                snprintf(f[n], sizeof(f[n]), __VA_ARGS__);                                         \
                iov[n] = (struct iovec){f[n], strlen(f[n])};                                       \
                n++;                                                                               \
        } while (0)
        FIELD("MESSAGE=%.280s", msg);
        FIELD("PRIORITY=%d", level);
        if (error)
                FIELD("ERRNO=%d", error);
        if (lf && lf->direction)
                FIELD("IPCD_BRIDGE_DIRECTION=%s", lf->direction);
        if (lf && lf->topic)
                FIELD("IPCD_TOPIC=%.255s", lf->topic);
        if (lf && lf->mqtt_topic)
                FIELD("IPCD_MQTT_TOPIC=%.255s", lf->mqtt_topic);
        if (lf && lf->broker)
                FIELD("IPCD_BROKER=%.255s", lf->broker);
#undef FIELD
        sd_journal_sendv(iov, n);
        return -error;
}
