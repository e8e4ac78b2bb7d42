/*
 * output.h - how ipcctl presents the frames it receives: payload bytes on
 * stdout as they arrive, ERR as "ipcctl: CODE: message" on stderr, one JSON
 * object per frame with --json, no payloads with --quiet.
 *
 * An Output belongs to the verb that prints; it only remembers whether the
 * response being printed has left a line open. Functions return -errno when
 * stdout cannot be written (ENOMEM for JSON encoding); they never print
 * diagnostics of their own.
 */
#pragma once

#include <stdbool.h>

#include "buffer.h"
#include "proto.h"

typedef struct Output {
        bool json;
        bool quiet;
        bool line_open; /* this response printed bytes and the last was not LF */
} Output;

void output_init(Output *o, bool json, bool quiet);

/*
 * One frame of an answer: MORE prints its payload, OK its payload and ends
 * the response (adding an LF if the output so far does not end in one), ERR
 * ends the response and reports the error. EVENT frames are not answers and
 * are ignored here.
 */
int output_answer(Output *o, const ProtoFrame *f);

/* An EVENT: its payload and an LF (listen), or "[TOPIC] payload" on a line
 * of its own (interactive); with --json the object in both cases. */
int output_event(Output *o, const ProtoFrame *f, bool with_topic);

int output_flush(Output *o);

/*
 * Append bytes as a JSON string (with the quotes). Valid UTF-8 passes
 * through; '"', '\\', control characters and DEL are escaped as \u00XX;
 * a byte that is not part of valid UTF-8 becomes \u00XX of its value.
 */
int json_append_string(Buffer *b, const void *data, size_t len);
