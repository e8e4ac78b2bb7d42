/*
 * proto.c - wire protocol 1: request parser, argument quoting, frame
 * encoder and incremental frame decoder; see proto.h for the grammar.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"

static inline bool is_blank(char c)
{
        return c == ' ' || c == '\t';
}

static int unhex(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

bool proto_line_is_blank(const char *line, size_t len)
{
        if (len > 0 && line[len - 1] == '\r')
                len--;
        for (size_t i = 0; i < len; i++)
                if (!is_blank(line[i]))
                        return false;
        return true;
}

static int request_push(ProtoRequest *req, const char *data, size_t len)
{
        if (req->n_args == req->args_cap) {
                size_t cap = req->args_cap ? req->args_cap * 2 : 8;
                ProtoArg *a = realloc(req->args, cap * sizeof(*a));
                if (!a)
                        return -ENOMEM;
                req->args = a;
                req->args_cap = cap;
        }
        req->args[req->n_args++] = (ProtoArg){data, len};
        return 0;
}

/* A double-quoted argument from just after its opening quote: unescaped into
 * *out, *p moved past the closing quote. 0, or -EINVAL with *error set. */
static int unquote_double(const char **p, const char *end, char **out, const char **error)
{
        const char *q = *p;
        char *o = *out;

        for (;;) {
                int hi, lo;

                if (q >= end || (*q == '\\' && q + 1 >= end)) {
                        *error = "unterminated double quote";
                        return -EINVAL;
                }
                if (*q == '"')
                        break;
                if (*q != '\\') {
                        *o++ = *q++;
                        continue;
                }
                switch (*++q) {
                case '\\':
                case '"':
                        *o++ = *q++;
                        break;
                case 'n':
                        *o++ = '\n';
                        q++;
                        break;
                case 't':
                        *o++ = '\t';
                        q++;
                        break;
                case 'r':
                        *o++ = '\r';
                        q++;
                        break;
                case 'x':
                        hi = q + 1 < end ? unhex(q[1]) : -1;
                        lo = q + 2 < end ? unhex(q[2]) : -1;
                        if (hi < 0 || lo < 0) {
                                *error = "\\x needs two hex digits";
                                return -EINVAL;
                        }
                        *o++ = (char)(hi << 4 | lo);
                        q += 3;
                        break;
                default:
                        *error = "unknown escape sequence";
                        return -EINVAL;
                }
        }
        *p = q + 1;
        *out = o;
        return 0;
}

int proto_request_parse(ProtoRequest *req, const char *line, size_t len, const char **error)
{
        const char *p, *end;
        char *out;
        int r;

        *error = NULL;
        req->n_args = 0;
        if (len > 0 && line[len - 1] == '\r')
                len--;

        /* Unquoting never makes an argument longer than its source, and each
         * argument's NUL takes the place of at least one separator or quote,
         * so len + 1 bytes always suffice and the storage never moves while
         * arguments point into it. */
        if (req->storage_cap < len + 1) {
                size_t cap = len + 1 < 256 ? 256 : len + 1;
                char *s = realloc(req->storage, cap);
                if (!s)
                        return -ENOMEM;
                req->storage = s;
                req->storage_cap = cap;
        }

        out = req->storage;
        p = line;
        end = line + len;
        for (;;) {
                char *start;

                while (p < end && is_blank(*p))
                        p++;
                if (p >= end)
                        break;

                start = out;
                if (*p == '"') {
                        p++;
                        r = unquote_double(&p, end, &out, error);
                        if (r < 0)
                                return r;
                } else if (*p == '\'') {
                        const char *q = memchr(p + 1, '\'', end - p - 1);
                        if (!q) {
                                *error = "unterminated single quote";
                                return -EINVAL;
                        }
                        memcpy(out, p + 1, q - p - 1);
                        out += q - p - 1;
                        p = q + 1;
                } else {
                        while (p < end && !is_blank(*p))
                                *out++ = *p++;
                        goto push;
                }
                if (p < end && !is_blank(*p)) {
                        *error = "quoted argument must be followed by a blank";
                        return -EINVAL;
                }
        push:
                *out++ = '\0';
                r = request_push(req, start, out - start - 1);
                if (r < 0)
                        return r;
        }
        return 0;
}

void proto_request_done(ProtoRequest *req)
{
        free(req->args);
        free(req->storage);
        *req = PROTO_REQUEST_INIT;
}

int proto_append_arg(Buffer *b, const void *arg, size_t len)
{
        static const char hex[] = "0123456789abcdef";
        const unsigned char *s = arg;
        bool quote = len == 0 || s[0] == '"' || s[0] == '\'';
        int r;

        for (size_t i = 0; !quote && i < len; i++)
                if (s[i] <= ' ' || s[i] == 0x7f)
                        quote = true;

        /* Worst case every byte becomes \xHH, plus quotes and a space. */
        if (len > (SIZE_MAX - 3) / 4)
                return -ENOMEM;
        r = buffer_reserve(b, 4 * len + 3);
        if (r < 0)
                return r;
        if (b->len > 0)
                b->data[b->len++] = ' ';
        if (!quote) {
                memcpy(b->data + b->len, s, len);
                b->len += len;
                return 0;
        }

        b->data[b->len++] = '"';
        for (size_t i = 0; i < len; i++) {
                unsigned char c = s[i];
                char *o = b->data + b->len;

                switch (c) {
                case '\\':
                case '"':
                        o[0] = '\\';
                        o[1] = c;
                        b->len += 2;
                        break;
                case '\n':
                        memcpy(o, "\\n", 2);
                        b->len += 2;
                        break;
                case '\t':
                        memcpy(o, "\\t", 2);
                        b->len += 2;
                        break;
                case '\r':
                        memcpy(o, "\\r", 2);
                        b->len += 2;
                        break;
                default:
                        if (c < ' ' || c == 0x7f) {
                                o[0] = '\\';
                                o[1] = 'x';
                                o[2] = hex[c >> 4];
                                o[3] = hex[c & 15];
                                b->len += 4;
                        } else {
                                o[0] = c;
                                b->len += 1;
                        }
                }
        }
        b->data[b->len++] = '"';
        return 0;
}

const char *proto_frame_type_to_string(ProtoFrameType t)
{
        switch (t) {
        case PROTO_FRAME_OK:
                return "OK";
        case PROTO_FRAME_ERR:
                return "ERR";
        case PROTO_FRAME_MORE:
                return "MORE";
        case PROTO_FRAME_EVENT:
                return "EVENT";
        }
        return NULL;
}

bool proto_code_is_valid(const char *code, size_t len)
{
        if (len == 0 || len > PROTO_WORD_MAX)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = code[i];
                if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                        return false;
        }
        return true;
}

bool proto_topic_is_valid(const char *topic, size_t len)
{
        if (len == 0 || len > PROTO_WORD_MAX)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = topic[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      (c != '\0' && strchr("._:/@+-", c))))
                        return false;
        }
        return true;
}

/* len in decimal at p (room for 20 digits); the number of digits. */
static size_t format_size(char *p, size_t len)
{
        char digits[24];
        size_t n = 0;

        do {
                digits[n++] = (char)('0' + len % 10);
                len /= 10;
        } while (len > 0);
        for (size_t i = 0; i < n; i++)
                p[i] = digits[n - 1 - i];
        return n;
}

int proto_append_frame(Buffer *b, ProtoFrameType type, const char *word, const void *payload,
                       size_t len)
{
        const char *t = proto_frame_type_to_string(type);
        size_t wlen = word ? strlen(word) : 0;
        int n, r;

        if (!t || (type == PROTO_FRAME_ERR || type == PROTO_FRAME_EVENT) != !!word ||
            wlen > PROTO_WORD_MAX)
                return -EINVAL;
        r = buffer_reserve(b, wlen + 32 + len);
        if (r < 0)
                return r;
        /* "TYPE [WORD ]LEN\n" by hand: this runs once per answer and per
         * event, and snprintf() cost a tenth of the pipelined server's time. */
        n = (int)strlen(t);
        memcpy(b->data + b->len, t, (size_t)n);
        b->len += (size_t)n;
        b->data[b->len++] = ' ';
        if (word) {
                memcpy(b->data + b->len, word, wlen);
                b->len += wlen;
                b->data[b->len++] = ' ';
        }
        b->len += format_size(b->data + b->len, len);
        b->data[b->len++] = '\n';
        if (len)
                memcpy(b->data + b->len, payload, len);
        b->len += len;
        b->data[b->len++] = '\n';
        return 0;
}

int proto_append_ok(Buffer *b, const void *payload, size_t len)
{
        return proto_append_frame(b, PROTO_FRAME_OK, NULL, payload, len);
}

int proto_append_err(Buffer *b, const char *code, const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        return proto_append_frame(b, PROTO_FRAME_ERR, code, msg, MIN((size_t)n, sizeof(msg) - 1));
}

void proto_decoder_init(ProtoDecoder *d, size_t max_payload)
{
        d->buf = BUFFER_INIT;
        d->pos = 0;
        d->max_payload = max_payload;
}

int proto_decoder_feed(ProtoDecoder *d, const void *data, size_t len)
{
        if (d->pos > 0) {
                buffer_consume(&d->buf, d->pos);
                d->pos = 0;
        }
        return buffer_append(&d->buf, data, len);
}

size_t proto_decoder_pending(const ProtoDecoder *d)
{
        return d->buf.len - d->pos;
}

/* A length: decimal digits, no sign, no leading zero except "0" itself. */
static int parse_length(const char *s, size_t n, uint64_t *ret)
{
        uint64_t v = 0;

        if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EBADMSG;
                v = v * 10 + (uint64_t)(s[i] - '0');
        }
        *ret = v;
        return 0;
}

int proto_decoder_next(ProtoDecoder *d, ProtoFrame *f)
{
        const char *start = d->buf.data + d->pos, *lf, *sp1, *sp2, *hend;
        size_t avail = d->buf.len - d->pos, hlen, tlen;
        uint64_t n;
        int r;

        if (avail == 0)
                return 0;
        lf = memchr(start, '\n', MIN(avail, (size_t)PROTO_HEADER_MAX + 1));
        if (!lf)
                return avail > PROTO_HEADER_MAX ? -EBADMSG : 0;
        hend = lf;
        hlen = hend - start;

        sp1 = memchr(start, ' ', hlen);
        if (!sp1)
                return -EBADMSG;
        tlen = sp1 - start;
        if (tlen == 2 && memcmp(start, "OK", 2) == 0)
                f->type = PROTO_FRAME_OK;
        else if (tlen == 3 && memcmp(start, "ERR", 3) == 0)
                f->type = PROTO_FRAME_ERR;
        else if (tlen == 4 && memcmp(start, "MORE", 4) == 0)
                f->type = PROTO_FRAME_MORE;
        else if (tlen == 5 && memcmp(start, "EVENT", 5) == 0)
                f->type = PROTO_FRAME_EVENT;
        else
                return -EBADMSG;

        f->word[0] = '\0';
        if (f->type == PROTO_FRAME_ERR || f->type == PROTO_FRAME_EVENT) {
                size_t wlen;

                sp2 = memchr(sp1 + 1, ' ', hend - sp1 - 1);
                if (!sp2)
                        return -EBADMSG;
                wlen = sp2 - sp1 - 1;
                if (f->type == PROTO_FRAME_ERR ? !proto_code_is_valid(sp1 + 1, wlen)
                                               : !proto_topic_is_valid(sp1 + 1, wlen))
                        return -EBADMSG;
                memcpy(f->word, sp1 + 1, wlen);
                f->word[wlen] = '\0';
        } else
                sp2 = sp1;

        r = parse_length(sp2 + 1, hend - sp2 - 1, &n);
        if (r < 0)
                return r;
        if (n > d->max_payload)
                return -EMSGSIZE;
        if (avail - hlen - 1 < n + 1)
                return 0; /* payload not complete yet */
        if (lf[1 + n] != '\n')
                return -EBADMSG;

        f->payload = lf + 1;
        f->len = n;
        d->pos += hlen + 1 + n + 1;
        return 1;
}

void proto_decoder_done(ProtoDecoder *d)
{
        buffer_done(&d->buf);
        d->pos = 0;
}
