/*
 * buffer.c - a growable byte buffer; see buffer.h.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "buffer.h"

int buffer_reserve(Buffer *b, size_t extra)
{
        size_t need, cap;
        char *p;

        if (extra > SIZE_MAX - b->len)
                return -ENOMEM;
        need = b->len + extra;
        if (need <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 256;
        while (cap < need)
                cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        p = realloc(b->data, cap);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->cap = cap;
        return 0;
}

int buffer_append(Buffer *b, const void *data, size_t len)
{
        int r;

        if (len == 0)
                return 0;
        r = buffer_reserve(b, len);
        if (r < 0)
                return r;
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

int buffer_append_str(Buffer *b, const char *s)
{
        return buffer_append(b, s, strlen(s));
}

int buffer_vprintf(Buffer *b, const char *fmt, va_list ap)
{
        va_list aq;
        int n, r;

        va_copy(aq, ap);
        n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, aq);
        va_end(aq);
        if (n < 0)
                return -EINVAL;
        if ((size_t)n < b->cap - b->len) {
                b->len += n;
                return 0;
        }
        r = buffer_reserve(b, (size_t)n + 1);
        if (r < 0)
                return r;
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        if (n < 0)
                return -EINVAL;
        b->len += n;
        return 0;
}

int buffer_printf(Buffer *b, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = buffer_vprintf(b, fmt, ap);
        va_end(ap);
        return r;
}

void buffer_consume(Buffer *b, size_t n)
{
        if (n >= b->len) {
                b->len = 0;
                return;
        }
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
}

void buffer_done(Buffer *b)
{
        free(b->data);
        *b = BUFFER_INIT;
}
