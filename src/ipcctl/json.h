/*
 * json.h - the typed JSON of --json (ipcctl(1), JSON OUTPUT): what an
 * answer's payload becomes, by the command that asked for it.
 *
 * Everything here appends to a caller's Buffer and returns -ENOMEM or 0;
 * nothing prints.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "buffer.h"

typedef enum JsonMode {
        JSON_OFF,
        JSON_TYPED,  /* --json: one JSON value per answer, typed by command */
        JSON_FRAMES, /* --json=frames: one object per frame, as received */
} JsonMode;

typedef enum AnswerKind {
        ANSWER_STREAM,  /* configured commands: {"chunk": ...} per output frame */
        ANSWER_TEXT,    /* ping, echo, quit, metrics: a JSON string */
        ANSWER_KV,      /* hello, stats, auth, reload: one object */
        ANSWER_CLIENTS, /* clients: an array of objects */
        ANSWER_HELP,    /* help: an array of {name, usage, description} */
        ANSWER_HELP1,   /* help NAME: one such object */
        ANSWER_NUMBER,  /* subscribe, unsubscribe, publish: a number */
        ANSWER_MONITOR, /* monitor: each event's payload as an object */
} AnswerKind;

/* How the answer to the command NAME (with n_args arguments after it) is typed. */
AnswerKind answer_kind(const char *name, size_t n_args);

/* The OK payload of an answer of this kind, as one JSON value (no LF). */
int json_append_typed(Buffer *b, AnswerKind kind, const char *payload, size_t len);

/* "key: value" lines as one object; false if the payload is not such lines
 * (nothing is then appended). */
int json_append_kv(Buffer *b, const char *payload, size_t len, bool *ok);

/* True if s[0..len) is a JSON number as ipcd writes them (-?digits[.digits]). */
bool json_is_number(const char *s, size_t len);

/*
 * Append bytes as a JSON string (with the quotes). Valid UTF-8 passes
 * through; '"', '\\', control characters and DEL are escaped as \u00XX;
 * a byte that is not part of valid UTF-8 becomes \u00XX of its value.
 */
int json_append_string(Buffer *b, const void *data, size_t len);
