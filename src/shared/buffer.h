/*
 * buffer.h - a growable byte buffer.
 *
 * A Buffer owns its data; buffer_done() frees it, buffer_steal() hands it
 * to the caller. Not thread-safe: each Buffer belongs to one thread at a
 * time.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "macro.h"

typedef struct Buffer {
        char *data;
        size_t len;
        size_t cap;
} Buffer;

#define BUFFER_INIT ((Buffer){NULL, 0, 0})

/* Make room for at least `extra` more bytes; -ENOMEM on failure. */
int buffer_reserve(Buffer *b, size_t extra);
int buffer_append(Buffer *b, const void *data, size_t len);
int buffer_append_str(Buffer *b, const char *s);
int buffer_printf(Buffer *b, const char *fmt, ...) _printf_(2, 3);
int buffer_vprintf(Buffer *b, const char *fmt, va_list ap) _printf_(2, 0);
/* Drop the first n bytes, moving the rest to the front. */
void buffer_consume(Buffer *b, size_t n);
void buffer_done(Buffer *b);

static inline void buffer_clear(Buffer *b)
{
        b->len = 0;
}
