/*
 * conf.c - value parsers for the daemon's settings; see conf.h.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "conf.h"

int parse_uint(const char *s, unsigned long max, unsigned long *ret)
{
        unsigned long v;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || *end)
                return -EINVAL;
        if (v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_size(const char *s, size_t *ret)
{
        unsigned long long v, mult = 1;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno)
                return -EINVAL;
        switch (*end) {
        case '\0':
                break;
        case 'K':
        case 'k':
                mult = 1ULL << 10;
                end++;
                break;
        case 'M':
                mult = 1ULL << 20;
                end++;
                break;
        case 'G':
                mult = 1ULL << 30;
                end++;
                break;
        default:
                return -EINVAL;
        }
        if (*end == 'B' || *end == 'i') /* tolerate 1MB / 1MiB */
                end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
        if (*end)
                return -EINVAL;
        if (v > SIZE_MAX / mult)
                return -ERANGE;
        *ret = (size_t)(v * mult);
        return 0;
}
