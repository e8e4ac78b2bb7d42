/*
 * fuzz-request.c - libFuzzer harness for the request parser (src/shared/
 * proto.c), fed line by line like a client's reader thread, with one
 * ProtoRequest reused across the lines.
 *
 * Properties checked (abort on violation):
 *  - a line parses to no arguments exactly when proto_line_is_blank();
 *  - an error comes with a message;
 *  - quoting every parsed argument with proto_append_arg() and parsing the
 *    result gives back the same arguments, byte for byte;
 *  - quoting is a fixed point: re-quoting the re-parsed arguments gives
 *    the same line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-request: check failed: %s (line %d)\n", #cond,      \
                                __LINE__);                                                         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static void quote_all(const ProtoRequest *req, Buffer *b)
{
        buffer_clear(b);
        for (size_t i = 0; i < req->n_args; i++) {
                CHECK(req->args[i].data[req->args[i].len] == '\0');
                CHECK(proto_append_arg(b, req->args[i].data, req->args[i].len) == 0);
        }
}

static void check_line(ProtoRequest *req, ProtoRequest *again, Buffer *b1, Buffer *b2,
                       const char *line, size_t len)
{
        const char *error = NULL;
        int r;

        r = proto_request_parse(req, line, len, &error);
        if (r < 0) {
                CHECK(r == -EINVAL);
                CHECK(error && *error);
                CHECK(!proto_line_is_blank(line, len));
                return;
        }
        CHECK(r == 0);
        CHECK((req->n_args == 0) == proto_line_is_blank(line, len));
        if (req->n_args == 0)
                return;

        quote_all(req, b1);
        r = proto_request_parse(again, b1->data, b1->len, &error);
        if (r != 0)
                fprintf(stderr, "fuzz-request: quoted line does not parse (%s): %.*s\n",
                        error ? error : "?", (int)b1->len, b1->data);
        CHECK(r == 0);
        CHECK(again->n_args == req->n_args);
        for (size_t i = 0; i < req->n_args; i++) {
                CHECK(again->args[i].len == req->args[i].len);
                CHECK(memcmp(again->args[i].data, req->args[i].data, req->args[i].len) == 0);
        }
        quote_all(again, b2);
        CHECK(b1->len == b2->len && memcmp(b1->data, b2->data, b1->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static ProtoRequest req = PROTO_REQUEST_INIT, again = PROTO_REQUEST_INIT;
        static Buffer b1 = BUFFER_INIT, b2 = BUFFER_INIT;
        const char *p = (const char *)data, *end = p + size;

        /* Lines as the reader splits them: up to each LF; the rest too. */
        while (p < end) {
                const char *lf = memchr(p, '\n', end - p);
                size_t len = lf ? (size_t)(lf - p) : (size_t)(end - p);

                check_line(&req, &again, &b1, &b2, p, len);
                p += len + (lf ? 1 : 0);
        }
        /* The whole input as one line too (LFs and all). */
        check_line(&req, &again, &b1, &b2, (const char *)data, size);
        return 0;
}
