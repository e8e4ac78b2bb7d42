/*
 * proto.h - wire protocol 1 (SPEC §4, ipcd-protocol(7)), shared by ipcd and
 * ipcctl so that the two can never disagree.
 *
 * Requests are one line: NAME [ARG ...], LF-terminated (a CR before the LF
 * is dropped). Arguments are separated by blanks (space, tab). A word that
 * starts with '"' is a C-escaped string (\\ \" \n \t \r \xHH), one that
 * starts with '\'' is taken literally up to the next '\''; a quoted word must
 * be followed by a blank or the end of the line. Unquoted words are literal
 * bytes (quotes inside them are ordinary characters). Blank lines are
 * ignored.
 *
 * Responses are frames: a header line, <n> payload bytes, and an LF:
 *     OK <n> | ERR <code> <n> | MORE <n> | EVENT <topic> <n>
 *
 * Nothing here does I/O, allocates behind the caller's back (all memory is
 * in the caller's ProtoRequest/ProtoDecoder/Buffer) or logs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "buffer.h"

#define PROTO_VERSION 1
/* Longest header line a decoder accepts (type, word and length). */
#define PROTO_HEADER_MAX 1024
/* Longest error code or topic. */
#define PROTO_WORD_MAX     255
#define PROTO_DEFAULT_PORT 9966

typedef struct ProtoArg {
        const char *data; /* NUL-terminated as a convenience; may contain NULs */
        size_t len;
} ProtoArg;

/*
 * A parsed request. args[0] is the command name. The storage is reused
 * from one parse to the next, so the reader thread of a client keeps one
 * ProtoRequest for its whole life and parses without allocating.
 */
typedef struct ProtoRequest {
        ProtoArg *args;
        size_t n_args;
        size_t args_cap;
        char *storage;
        size_t storage_cap;
} ProtoRequest;

#define PROTO_REQUEST_INIT ((ProtoRequest){0})

/*
 * Parse one request line (without its LF; a trailing CR is dropped here).
 * Returns 0 with n_args == 0 for a blank line, 0 with n_args >= 1 for a
 * request, -EINVAL for a malformed one (*error is then a static message
 * for a bad-request answer), or -ENOMEM.
 */
int proto_request_parse(ProtoRequest *req, const char *line, size_t len, const char **error);
void proto_request_done(ProtoRequest *req);

/* True if the line (without LF) would be ignored as blank by the parser. */
bool proto_line_is_blank(const char *line, size_t len);

/*
 * Append one argument to a request being built, preceded by a space when
 * the buffer is not empty, quoted so that the parser gives back exactly
 * these bytes.
 */
int proto_append_arg(Buffer *b, const void *arg, size_t len);

typedef enum ProtoFrameType {
        PROTO_FRAME_OK,
        PROTO_FRAME_ERR,
        PROTO_FRAME_MORE,
        PROTO_FRAME_EVENT,
} ProtoFrameType;

const char *proto_frame_type_to_string(ProtoFrameType t);

/* True for a valid error code ([a-z0-9-], 1..PROTO_WORD_MAX bytes). */
bool proto_code_is_valid(const char *code, size_t len);
/* True for a valid topic ([A-Za-z0-9._:/@+-], 1..PROTO_WORD_MAX bytes). */
bool proto_topic_is_valid(const char *topic, size_t len);

/*
 * Append a whole frame. `word` is the code for ERR, the topic for EVENT and
 * must be NULL for OK and MORE.
 */
int proto_append_frame(Buffer *b, ProtoFrameType type, const char *word, const void *payload,
                       size_t len);
int proto_append_ok(Buffer *b, const void *payload, size_t len);
int proto_append_err(Buffer *b, const char *code, const char *fmt, ...) _printf_(3, 4);

typedef struct ProtoFrame {
        ProtoFrameType type;
        char word[PROTO_WORD_MAX + 1]; /* code or topic, "" for OK/MORE */
        const char *payload;           /* valid until the next decoder call */
        size_t len;
} ProtoFrame;

/*
 * Incremental frame decoder for clients: feed it whatever read() returned,
 * then take frames out until it says it needs more.
 */
typedef struct ProtoDecoder {
        Buffer buf;
        size_t pos;         /* start of the next undecoded frame in buf */
        size_t max_payload; /* larger payloads are an error */
} ProtoDecoder;

void proto_decoder_init(ProtoDecoder *d, size_t max_payload);
int proto_decoder_feed(ProtoDecoder *d, const void *data, size_t len);
/*
 * Returns 1 and fills *f when a whole frame is buffered, 0 when more input
 * is needed, -EBADMSG on a malformed frame, -EMSGSIZE when a payload is
 * larger than max_payload. After an error the decoder is unusable.
 */
int proto_decoder_next(ProtoDecoder *d, ProtoFrame *f);
/* Bytes buffered that are not part of a returned frame yet. */
size_t proto_decoder_pending(const ProtoDecoder *d);
void proto_decoder_done(ProtoDecoder *d);
