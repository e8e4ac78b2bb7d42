/*
 * json.c - typed JSON for --json; see json.h.
 *
 * The daemon's answers are text meant for people (SPEC §5); here they are
 * turned into values a program can use without scraping: "key: value"
 * lines into an object (numbers as numbers, a repeated key as an array),
 * the `clients` lines into objects, help lines into {name, usage,
 * description}. A payload that does not have the expected shape is given
 * as a JSON string rather than guessed at.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if s[0] does not
 * start one (overlong forms, surrogates and values past U+10FFFF are
 * invalid). */
static size_t utf8_valid_len(const unsigned char *s, size_t len)
{
        unsigned char c = s[0];
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                n = 3;
                if (c == 0xe0)
                        lo = 0xa0;
                else if (c == 0xed)
                        hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                n = 4;
                if (c == 0xf0)
                        lo = 0x90;
                else if (c == 0xf4)
                        hi = 0x8f;
        } else
                return 0;

        if (len < n || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return n;
}

int json_append_string(Buffer *b, const void *data, size_t len)
{
        const unsigned char *s = data;
        size_t i = 0;
        int r;

        r = buffer_append(b, "\"", 1);
        while (r >= 0 && i < len) {
                unsigned char c = s[i];
                size_t n = utf8_valid_len(s + i, len - i);

                if (n == 1 && c >= 0x20 && c != 0x7f && c != '"' && c != '\\') {
                        /* Copy the whole run of plain ASCII at once. */
                        size_t j = i + 1;
                        while (j < len && s[j] >= 0x20 && s[j] < 0x7f && s[j] != '"' &&
                               s[j] != '\\')
                                j++;
                        r = buffer_append(b, s + i, j - i);
                        i = j;
                } else if (n == 1 && (c == '"' || c == '\\')) {
                        char esc[2] = {'\\', (char)c};
                        r = buffer_append(b, esc, 2);
                        i++;
                } else if (n > 1) {
                        r = buffer_append(b, s + i, n);
                        i += n;
                } else {
                        /* A control character, DEL, or a byte that is not
                         * valid UTF-8. */
                        r = buffer_printf(b, "\\u%04x", c);
                        i++;
                }
        }
        if (r >= 0)
                r = buffer_append(b, "\"", 1);
        return r;
}

bool json_is_number(const char *s, size_t len)
{
        size_t i = 0;

        if (len > 0 && s[0] == '-')
                i++;
        if (i >= len || s[i] < '0' || s[i] > '9' || len > 24)
                return false;
        /* No leading zeros: "007" is a name, not a number. */
        if (s[i] == '0' && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9')
                return false;
        while (i < len && s[i] >= '0' && s[i] <= '9')
                i++;
        if (i < len && s[i] == '.') {
                i++;
                if (i >= len)
                        return false;
                while (i < len && s[i] >= '0' && s[i] <= '9')
                        i++;
        }
        return i == len;
}

static int append_value(Buffer *b, const char *s, size_t len)
{
        if (json_is_number(s, len))
                return buffer_append(b, s, len);
        return json_append_string(b, s, len);
}

typedef struct Span {
        const char *s;
        size_t len;
} Span;

static bool span_eq(Span a, Span b)
{
        return a.len == b.len && memcmp(a.s, b.s, a.len) == 0;
}

/* Keys that are lists even when they appear once (stats: listener). */
static bool key_is_list(Span k)
{
        return k.len == 8 && memcmp(k.s, "listener", 8) == 0;
}

/* Split "key: value" lines; false if a line has no ": " or the payload
 * does not end in LF. The caller frees *ret. */
static bool split_kv(const char *p, size_t len, Span **ret, size_t *n_ret)
{
        _cleanup_free_ Span *kv = NULL;
        size_t n = 0, cap = 0;

        if (len == 0 || p[len - 1] != '\n')
                return false;
        for (const char *line = p, *end = p + len; line < end;) {
                const char *lf = memchr(line, '\n', (size_t)(end - line)), *sep;

                sep = memmem(line, (size_t)(lf - line), ": ", 2);
                if (!sep || sep == line)
                        return false;
                if (n + 2 > cap) {
                        Span *m = realloc(kv, (cap = cap ? cap * 2 : 32) * sizeof(Span));
                        if (!m)
                                return false;
                        kv = m;
                }
                kv[n++] = (Span){line, (size_t)(sep - line)};
                kv[n++] = (Span){sep + 2, (size_t)(lf - sep - 2)};
                line = lf + 1;
        }
        *ret = TAKE_PTR(kv);
        *n_ret = n / 2;
        return true;
}

/* reload: "reloaded: N command(s), M token(s)" */
static bool reload_counts(Span v, unsigned long *commands, unsigned long *tokens)
{
        char buf[64];
        int end = 0;

        if (v.len >= sizeof(buf))
                return false;
        memcpy(buf, v.s, v.len);
        buf[v.len] = '\0';
        return sscanf(buf, "%lu command(s), %lu token(s)%n", commands, tokens, &end) == 2 &&
               (size_t)end == v.len;
}

int json_append_kv(Buffer *b, const char *payload, size_t len, bool *ok)
{
        _cleanup_free_ Span *kv = NULL;
        size_t n = 0;
        int r;

        *ok = split_kv(payload, len, &kv, &n);
        if (!*ok)
                return 0;

        r = buffer_append(b, "{", 1);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                Span k = kv[2 * i], v = kv[2 * i + 1];
                size_t count = 0;
                bool first = true;
                unsigned long nc, nt;

                for (size_t j = 0; j < i; j++)
                        if (span_eq(kv[2 * j], k))
                                first = false;
                if (!first)
                        continue; /* printed with its first occurrence */
                for (size_t j = i; j < n; j++)
                        if (span_eq(kv[2 * j], k))
                                count++;

                if (b->data[b->len - 1] != '{')
                        r = buffer_append(b, ",", 1);
                if (r >= 0 && k.len == 8 && memcmp(k.s, "reloaded", 8) == 0 &&
                    reload_counts(v, &nc, &nt)) {
                        r = buffer_printf(b, "\"commands\":%lu,\"tokens\":%lu", nc, nt);
                        continue;
                }
                if (r >= 0)
                        r = json_append_string(b, k.s, k.len);
                if (r >= 0)
                        r = buffer_append(b, ":", 1);
                if (r >= 0 && count == 1 && !key_is_list(k)) {
                        r = append_value(b, v.s, v.len);
                        continue;
                }
                if (r >= 0)
                        r = buffer_append(b, "[", 1);
                for (size_t j = i, m = 0; r >= 0 && j < n; j++)
                        if (span_eq(kv[2 * j], k)) {
                                if (m++ > 0)
                                        r = buffer_append(b, ",", 1);
                                if (r >= 0)
                                        r = append_value(b, kv[2 * j + 1].s, kv[2 * j + 1].len);
                        }
                if (r >= 0)
                        r = buffer_append(b, "]", 1);
        }
        if (r >= 0)
                r = buffer_append(b, "}", 1);
        return r;
}

/* One `clients` line: "id=N transport=T peer=P since=S role=R commands=N
 * queued=B topics=a,b" as an object; peer gets back its blanks ("pid=1
 * uid=0 gid=0", as hello shows it), topics is an array. */
static int append_client(Buffer *b, const char *line, size_t len)
{
        const char *end = line + len;
        int r = buffer_append(b, "{", 1);

        for (const char *w = line; r >= 0 && w < end;) {
                const char *sp = memchr(w, ' ', (size_t)(end - w)), *eq;
                size_t wl;

                if (!sp)
                        sp = end;
                wl = (size_t)(sp - w);
                eq = memchr(w, '=', wl);
                if (wl == 0) {
                        w = sp + 1;
                        continue;
                }
                if (b->data[b->len - 1] != '{')
                        r = buffer_append(b, ",", 1);
                if (!eq) {
                        if (r >= 0)
                                r = json_append_string(b, w, wl);
                        if (r >= 0)
                                r = buffer_append_str(b, ":true");
                        w = sp + 1;
                        continue;
                }
                Span k = {w, (size_t)(eq - w)}, v = {eq + 1, (size_t)(sp - eq - 1)};
                if (r >= 0)
                        r = json_append_string(b, k.s, k.len);
                if (r >= 0)
                        r = buffer_append(b, ":", 1);
                if (r >= 0 && k.len == 6 && memcmp(k.s, "topics", 6) == 0) {
                        r = buffer_append(b, "[", 1);
                        for (const char *t = v.s, *vend = v.s + v.len; r >= 0 && t < vend;) {
                                const char *comma = memchr(t, ',', (size_t)(vend - t));
                                if (!comma)
                                        comma = vend;
                                if (b->data[b->len - 1] != '[')
                                        r = buffer_append(b, ",", 1);
                                if (r >= 0)
                                        r = json_append_string(b, t, (size_t)(comma - t));
                                t = comma + 1;
                        }
                        if (r >= 0)
                                r = buffer_append(b, "]", 1);
                } else if (r >= 0 && k.len == 4 && memcmp(k.s, "peer", 4) == 0) {
                        _cleanup_free_ char *p = strndup(v.s, v.len);
                        if (!p)
                                return -ENOMEM;
                        if (strstr(p, "pid=") == p)
                                for (char *q = p; *q; q++)
                                        if (*q == ',')
                                                *q = ' ';
                        r = json_append_string(b, p, v.len);
                } else if (r >= 0)
                        r = append_value(b, v.s, v.len);
                w = sp + 1;
        }
        if (r >= 0)
                r = buffer_append(b, "}", 1);
        return r;
}

/* One help line "USAGE - description" as {name, usage, description}. */
static int append_help(Buffer *b, const char *line, size_t len)
{
        const char *sep = memmem(line, len, " - ", 3), *sp;
        size_t ulen = sep ? (size_t)(sep - line) : len;
        int r;

        sp = memchr(line, ' ', ulen);
        r = buffer_append_str(b, "{\"name\":");
        if (r >= 0)
                r = json_append_string(b, line, sp ? (size_t)(sp - line) : ulen);
        if (r >= 0)
                r = buffer_append_str(b, ",\"usage\":");
        if (r >= 0)
                r = json_append_string(b, line, ulen);
        if (r >= 0)
                r = buffer_append_str(b, ",\"description\":");
        if (r >= 0)
                r = sep ? json_append_string(b, sep + 3, len - ulen - 3) : buffer_append_str(b, "\"\"");
        if (r >= 0)
                r = buffer_append(b, "}", 1);
        return r;
}

/* Each line through `one`, as an array (or only the first, unbracketed). */
static int append_lines(Buffer *b, const char *p, size_t len, bool array,
                        int (*one)(Buffer *b, const char *line, size_t len))
{
        int r = array ? buffer_append(b, "[", 1) : 0;
        bool any = false;

        for (const char *line = p, *end = p + len; r >= 0 && line < end;) {
                const char *lf = memchr(line, '\n', (size_t)(end - line));
                if (!lf)
                        lf = end;
                if (lf > line) {
                        if (any && !array)
                                break;
                        if (any)
                                r = buffer_append(b, ",", 1);
                        if (r >= 0)
                                r = one(b, line, (size_t)(lf - line));
                        any = true;
                }
                line = lf + 1;
        }
        if (r >= 0 && array)
                r = buffer_append(b, "]", 1);
        if (r >= 0 && !array && !any)
                r = buffer_append_str(b, "null");
        return r;
}

AnswerKind answer_kind(const char *name, size_t n_args)
{
        static const struct {
                const char *name;
                AnswerKind kind;
        } table[] = {
            {"ping", ANSWER_TEXT},
            {"echo", ANSWER_TEXT},
            {"quit", ANSWER_TEXT},
            {"metrics", ANSWER_TEXT},
            {"hello", ANSWER_KV},
            {"stats", ANSWER_KV},
            {"auth", ANSWER_KV},
            {"reload", ANSWER_KV},
            {"clients", ANSWER_CLIENTS},
            {"help", ANSWER_HELP},
            {"subscribe", ANSWER_NUMBER},
            {"unsubscribe", ANSWER_NUMBER},
            {"publish", ANSWER_NUMBER},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strcmp(table[i].name, name) == 0)
                        return table[i].kind == ANSWER_HELP && n_args > 0 ? ANSWER_HELP1
                                                                          : table[i].kind;
        return ANSWER_STREAM;
}

int json_append_typed(Buffer *b, AnswerKind kind, const char *payload, size_t len)
{
        size_t trimmed = len > 0 && payload[len - 1] == '\n' ? len - 1 : len;
        bool ok;
        int r;

        switch (kind) {
        case ANSWER_KV:
        case ANSWER_MONITOR:
                r = json_append_kv(b, payload, len, &ok);
                if (r < 0 || ok)
                        return r;
                break;
        case ANSWER_CLIENTS:
                return append_lines(b, payload, len, true, append_client);
        case ANSWER_HELP:
                return append_lines(b, payload, len, true, append_help);
        case ANSWER_HELP1:
                return append_lines(b, payload, len, false, append_help);
        case ANSWER_NUMBER:
                if (json_is_number(payload, trimmed))
                        return buffer_append(b, payload, trimmed);
                break;
        case ANSWER_TEXT:
        case ANSWER_STREAM:
                break;
        }
        return json_append_string(b, payload, len);
}
