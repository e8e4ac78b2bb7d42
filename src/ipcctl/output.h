/*
 * output.h - how ipcctl presents the frames it receives: payload bytes on
 * stdout as they arrive, ERR as "ipcctl: CODE: message" on stderr, one typed
 * JSON value per answer with --json (json.h), one object per frame with
 * --json=frames, no payloads with --quiet.
 *
 * An Output belongs to the verb that prints; it only remembers whether the
 * response being printed has left a line open, and which kind of answer it
 * is printing (set by the caller, who knows what was asked). Functions return -errno when
 * stdout cannot be written (ENOMEM for JSON encoding); they never print
 * diagnostics of their own.
 */
#pragma once

#include <stdbool.h>

#include "buffer.h"
#include "json.h"
#include "proto.h"

typedef struct Output {
        JsonMode json;
        AnswerKind kind; /* how --json types the answer being printed */
        bool quiet;
        bool line_open; /* this response printed bytes and the last was not LF */
} Output;

void output_init(Output *o, JsonMode json, bool quiet);
/* The next answer is to a command of this kind (answer_kind()); --json
 * types it accordingly. */
void output_expect(Output *o, AnswerKind kind);

/*
 * One frame of an answer: MORE prints its payload, OK its payload and ends
 * the response (adding an LF if the output so far does not end in one), ERR
 * ends the response and reports the error. EVENT frames are not answers and
 * are ignored here.
 */
int output_answer(Output *o, const ProtoFrame *f);

/* An EVENT: its payload, after "[TOPIC] " if with_topic, and an LF
 * (listen), or only what completes the line if complete_line
 * (interactive); with --json the object in every case. */
int output_event(Output *o, const ProtoFrame *f, bool with_topic, bool complete_line);

int output_flush(Output *o);

/*
 * The kinds of the answers still owed, in request order, for the modes
 * that pipeline (pipe, interactive): pushed when a request is queued,
 * taken when its final frame arrives.
 */
typedef struct KindFifo {
        Buffer b;    /* one byte (an AnswerKind) per request */
        size_t head; /* the next to take */
} KindFifo;

#define KIND_FIFO_INIT ((KindFifo){BUFFER_INIT, 0})

int kind_fifo_push(KindFifo *q, AnswerKind kind);
/* The kind of the oldest answer owed (ANSWER_STREAM if none). */
AnswerKind kind_fifo_peek(const KindFifo *q);
void kind_fifo_pop(KindFifo *q);
void kind_fifo_done(KindFifo *q);
