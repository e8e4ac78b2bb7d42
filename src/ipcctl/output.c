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

void output_init(Output *o, JsonMode json, bool quiet)
{
        *o = (Output){.json = json, .quiet = quiet, .kind = ANSWER_STREAM};
}

void output_expect(Output *o, AnswerKind kind)
{
        o->kind = kind;
}

static int write_buffer(Buffer *b)
{
        int r = 0;

        if (fwrite(b->data, 1, b->len, stdout) != b->len)
                r = errno ? -errno : -EIO;
        buffer_done(b);
        return r;
}

/* --json: one typed value per answer (json.h), chunks for streamed output. */
static int print_typed(Output *o, const ProtoFrame *f)
{
        Buffer b = BUFFER_INIT;
        size_t len = f->len;
        int r = 0;

        switch (f->type) {
        case PROTO_FRAME_MORE:
                if (len == 0)
                        return 0;
                r = buffer_append_str(&b, "{\"chunk\":");
                if (r >= 0)
                        r = json_append_string(&b, f->payload, len);
                if (r >= 0)
                        r = buffer_append(&b, "}", 1);
                break;
        case PROTO_FRAME_OK:
                if (o->kind == ANSWER_STREAM) {
                        /* A configured command's OK is empty: its output came
                         * as chunks already. */
                        if (len == 0)
                                return 0;
                        r = buffer_append_str(&b, "{\"chunk\":");
                        if (r >= 0)
                                r = json_append_string(&b, f->payload, len);
                        if (r >= 0)
                                r = buffer_append(&b, "}", 1);
                } else
                        r = json_append_typed(&b, o->kind, f->payload, len);
                break;
        case PROTO_FRAME_ERR:
                if (len > 0 && f->payload[len - 1] == '\n')
                        len--;
                r = buffer_append_str(&b, "{\"error\":");
                if (r >= 0)
                        r = json_append_string(&b, f->word, strlen(f->word));
                if (r >= 0)
                        r = buffer_append_str(&b, ",\"message\":");
                if (r >= 0)
                        r = json_append_string(&b, f->payload, len);
                if (r >= 0)
                        r = buffer_append(&b, "}", 1);
                break;
        case PROTO_FRAME_EVENT:
                if (o->kind == ANSWER_MONITOR) {
                        bool ok;
                        r = json_append_kv(&b, f->payload, len, &ok);
                        if (r >= 0 && ok)
                                break;
                        buffer_clear(&b);
                }
                r = buffer_append_str(&b, "{\"topic\":");
                if (r >= 0)
                        r = json_append_string(&b, f->word, strlen(f->word));
                if (r >= 0)
                        r = buffer_append_str(&b, ",\"payload\":");
                if (r >= 0)
                        r = json_append_string(&b, f->payload, len);
                if (r >= 0)
                        r = buffer_append(&b, "}", 1);
                break;
        }
        if (r >= 0)
                r = buffer_append(&b, "\n", 1);
        if (r < 0) {
                buffer_done(&b);
                return r;
        }
        return write_buffer(&b);
}

static int print_json(const Output *o, const ProtoFrame *f)
{
        Buffer b = BUFFER_INIT;
        int r;

        if (o->json == JSON_TYPED)
                return print_typed((Output *)o, f);

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
        if (r < 0) {
                buffer_done(&b);
                return r;
        }
        return write_buffer(&b);
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
                return print_json(o, f);

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
                        return print_json(o, f);
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

int output_event(Output *o, const ProtoFrame *f, bool with_topic, bool complete_line)
{
        bool lf;
        int r;

        if (o->quiet)
                return 0;
        if (o->json)
                return print_json(o, f);

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
        lf = !complete_line || f->len == 0 || f->payload[f->len - 1] != '\n';
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

int kind_fifo_push(KindFifo *q, AnswerKind kind)
{
        unsigned char k = (unsigned char)kind;

        /* Compact now and then, so that a long pipelined run stays small. */
        if (q->head > 4096 && q->head * 2 > q->b.len) {
                buffer_consume(&q->b, q->head);
                q->head = 0;
        }
        return buffer_append(&q->b, &k, 1);
}

AnswerKind kind_fifo_peek(const KindFifo *q)
{
        return q->head < q->b.len ? (AnswerKind)(unsigned char)q->b.data[q->head] : ANSWER_STREAM;
}

void kind_fifo_pop(KindFifo *q)
{
        if (q->head < q->b.len)
                q->head++;
        if (q->head == q->b.len)
                q->head = q->b.len = 0;
}

void kind_fifo_done(KindFifo *q)
{
        buffer_done(&q->b);
        q->head = 0;
}
