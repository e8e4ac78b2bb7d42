/*
 * output.c - presenting frames on stdout/stderr; see output.h.
 *
 * stdout is written through stdio and flushed by the caller before it
 * waits, so that thousands of pipelined answers cost few write()s while a
 * slow stream still shows up as it arrives.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "output.h"

void output_init(Output *o, bool json, bool quiet)
{
        *o = (Output){.json = json, .quiet = quiet};
}

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

static int print_json(const ProtoFrame *f)
{
        Buffer b = BUFFER_INIT;
        int r;

        r = buffer_printf(&b, "{\"type\":\"%s\"", proto_frame_type_to_string(f->type));
        if (r >= 0 && f->type == PROTO_FRAME_ERR)
                r = buffer_printf(&b, ",\"code\":\"%s\"", f->word);
        else if (r >= 0 && f->type == PROTO_FRAME_EVENT)
                r = buffer_printf(&b, ",\"topic\":\"%s\"", f->word);
        if (r >= 0)
                r = buffer_append_str(&b, ",\"payload\":");
        if (r >= 0)
                r = json_append_string(&b, f->payload, f->len);
        if (r >= 0)
                r = buffer_append(&b, "}\n", 2);
        if (r >= 0 && fwrite(b.data, 1, b.len, stdout) != b.len)
                r = errno ? -errno : -EIO;
        buffer_done(&b);
        return r;
}

static int print_bytes(Output *o, const void *data, size_t len)
{
        if (len == 0)
                return 0;
        if (fwrite(data, 1, len, stdout) != len)
                return errno ? -errno : -EIO;
        o->line_open = ((const char *)data)[len - 1] != '\n';
        return 0;
}

/* End the response: the output of a command always ends with a LF. */
static int end_response(Output *o)
{
        int r = 0;

        if (o->line_open && putchar('\n') == EOF)
                r = errno ? -errno : -EIO;
        o->line_open = false;
        return r;
}

static int print_error(Output *o, const ProtoFrame *f)
{
        size_t len = f->len;
        int r;

        if (o->json && !o->quiet)
                return print_json(f);

        r = end_response(o);
        /* stderr is unbuffered: flush stdout first so that a terminal shows
         * both in the order they came. */
        if (fflush(stdout) == EOF && r >= 0)
                r = errno ? -errno : -EIO;
        if (len > 0 && f->payload[len - 1] == '\n')
                len--;
        fprintf(stderr, "ipcctl: %s: ", f->word);
        fwrite(f->payload, 1, len, stderr);
        fputc('\n', stderr);
        return r;
}

int output_answer(Output *o, const ProtoFrame *f)
{
        int r;

        switch (f->type) {
        case PROTO_FRAME_MORE:
        case PROTO_FRAME_OK:
                if (o->quiet)
                        return 0;
                if (o->json)
                        return print_json(f);
                r = print_bytes(o, f->payload, f->len);
                if (r >= 0 && f->type == PROTO_FRAME_OK)
                        r = end_response(o);
                return r;
        case PROTO_FRAME_ERR:
                return print_error(o, f);
        case PROTO_FRAME_EVENT:
                break;
        }
        return 0;
}

int output_event(Output *o, const ProtoFrame *f, bool with_topic)
{
        bool lf;
        int r;

        if (o->quiet)
                return 0;
        if (o->json)
                return print_json(f);

        /* An event may come between two MORE frames of an answer: give it a
         * line of its own. */
        r = end_response(o);
        if (r < 0)
                return r;
        if (with_topic && printf("[%s] ", f->word) < 0)
                return errno ? -errno : -EIO;
        if (f->len > 0 && fwrite(f->payload, 1, f->len, stdout) != f->len)
                return errno ? -errno : -EIO;
        /* listen prints exactly one LF after each payload, so that one event
         * is one line for a script; the interactive display only completes
         * the line. */
        lf = !with_topic || f->len == 0 || f->payload[f->len - 1] != '\n';
        if (lf && putchar('\n') == EOF)
                return errno ? -errno : -EIO;
        return 0;
}

int output_flush(Output *o)
{
        if (fflush(stdout) == EOF)
                return errno ? -errno : -EIO;
        return 0;
}
