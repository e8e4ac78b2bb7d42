/*
 * test-proto.c - unit tests for wire protocol 1 (src/shared/proto.c): the
 * request parser, argument quoting, the frame encoder and the incremental
 * frame decoder. Plain C, no framework: a failed check prints file:line and
 * the test goes on; the exit status is non-zero if any check failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "macro.h"
#include "proto.h"

static unsigned n_failed, n_checks;

#define CHECK_AT(line, cond)                                                                       \
        ({                                                                                         \
                bool _ok = (cond);                                                                 \
                n_checks++;                                                                        \
                if (!_ok) {                                                                        \
                        n_failed++;                                                                \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, (line), #cond);     \
                }                                                                                  \
                _ok;                                                                               \
        })
#define CHECK(cond) CHECK_AT(__LINE__, cond)

/* A deterministic generator, so that a failure can be reproduced. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
        uint64_t x = rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return rng_state = x;
}

static size_t rng_below(size_t n)
{
        return n ? (size_t)(rng() % n) : 0;
}

static void dump(const char *what, const void *data, size_t len)
{
        const unsigned char *s = data;

        fprintf(stderr, "  %s (%zu bytes): \"", what, len);
        for (size_t i = 0; i < len && i < 200; i++) {
                if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' && s[i] != '"')
                        fputc(s[i], stderr);
                else
                        fprintf(stderr, "\\x%02x", s[i]);
        }
        fprintf(stderr, "%s\"\n", len > 200 ? "..." : "");
}

/* ---- request parser ---------------------------------------------------- */

typedef struct Want {
        const char *s;
        size_t len;
} Want;

/* A string literal that may contain NULs, with its length. */
#define W(x) { (x), sizeof(x) - 1 }

static ProtoRequest shared_req = PROTO_REQUEST_INIT;

static void parse_ok_at(int line, const char *in, size_t inlen, size_t n, const Want *want)
{
        const char *error = (const char *)1;
        int r = proto_request_parse(&shared_req, in, inlen, &error);

        if (!CHECK_AT(line, r == 0)) {
                dump("input", in, inlen);
                fprintf(stderr, "  r=%d error=%s\n", r, r < 0 && error ? error : "(null)");
                return;
        }
        CHECK_AT(line, error == NULL);
        if (!CHECK_AT(line, shared_req.n_args == n)) {
                dump("input", in, inlen);
                fprintf(stderr, "  n_args=%zu, wanted %zu\n", shared_req.n_args, n);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                const ProtoArg *a = &shared_req.args[i];
                if (!CHECK_AT(line, a->len == want[i].len && memcmp(a->data, want[i].s, a->len) == 0)) {
                        dump("input", in, inlen);
                        fprintf(stderr, "  argument %zu:\n", i);
                        dump("got", a->data, a->len);
                        dump("wanted", want[i].s, want[i].len);
                }
                CHECK_AT(line, a->data[a->len] == '\0');
        }
}

static void parse_bad_at(int line, const char *in, size_t inlen)
{
        const char *error = NULL;
        int r = proto_request_parse(&shared_req, in, inlen, &error);

        if (!CHECK_AT(line, r == -EINVAL)) {
                dump("input", in, inlen);
                fprintf(stderr, "  r=%d n_args=%zu (wanted -EINVAL)\n", r, shared_req.n_args);
                return;
        }
        /* The message becomes a one-line bad-request payload. */
        if (CHECK_AT(line, error != NULL))
                CHECK_AT(line, error[0] != '\0' && !strchr(error, '\n'));
}

#define PARSE_OK(in, ...)                                                                          \
        do {                                                                                       \
                static const Want _w[] = { __VA_ARGS__ };                                          \
                parse_ok_at(__LINE__, (in), sizeof(in) - 1, ELEMENTSOF(_w), _w);                   \
        } while (0)
#define PARSE_BLANK(in) parse_ok_at(__LINE__, (in), sizeof(in) - 1, 0, NULL)
#define PARSE_BAD(in) parse_bad_at(__LINE__, (in), sizeof(in) - 1)

static void test_parse_words(void)
{
        PARSE_OK("ping", W("ping"));
        PARSE_OK("echo a b c", W("echo"), W("a"), W("b"), W("c"));
        PARSE_OK("  \t echo \t\t a  \t b \t ", W("echo"), W("a"), W("b"));
        PARSE_OK("x", W("x"));
        /* Quotes and backslashes inside an unquoted word are ordinary bytes. */
        PARSE_OK("echo don't't", W("echo"), W("don't't"));
        PARSE_OK("echo a\"b\" c'd'", W("echo"), W("a\"b\""), W("c'd'"));
        PARSE_OK("echo \\n \\x41 back\\slash", W("echo"), W("\\n"), W("\\x41"), W("back\\slash"));
        /* Raw bytes in unquoted words: high bytes, control characters, NUL. */
        PARSE_OK("echo \xc3\xa9t\xc3\xa9 \xff\x80", W("echo"), W("\xc3\xa9t\xc3\xa9"), W("\xff\x80"));
        PARSE_OK("echo a\0b", W("echo"), W("a\0b"));
        PARSE_OK("echo a\x01" "b", W("echo"), W("a\x01" "b"));
}

static void test_parse_blank(void)
{
        PARSE_BLANK("");
        PARSE_BLANK(" ");
        PARSE_BLANK("\t");
        PARSE_BLANK(" \t  \t");
        PARSE_BLANK("\r");
        PARSE_BLANK("  \t\r");

        CHECK(proto_line_is_blank("", 0));
        CHECK(proto_line_is_blank(" \t ", 3));
        CHECK(proto_line_is_blank("\r", 1));
        CHECK(proto_line_is_blank(" \t\r", 3));
        CHECK(!proto_line_is_blank("a", 1));
        CHECK(!proto_line_is_blank(" a ", 3));
        CHECK(!proto_line_is_blank("\"\"", 2));
        CHECK(!proto_line_is_blank("\0", 1));
}

static void test_parse_cr(void)
{
        /* A trailing CR (the CR of a CRLF) is dropped, and only that one. */
        PARSE_OK("ping\r", W("ping"));
        PARSE_OK("echo a b\r", W("echo"), W("a"), W("b"));
        PARSE_OK("echo \"a\"\r", W("echo"), W("a"));
        PARSE_OK("echo 'a'\r", W("echo"), W("a"));
        PARSE_OK("echo a \r", W("echo"), W("a"));
        /* A CR that is not at the end is a byte like any other. */
        PARSE_OK("echo a\rb", W("echo"), W("a\rb"));
}

static void test_parse_double_quotes(void)
{
        PARSE_OK("echo \"a b\"", W("echo"), W("a b"));
        PARSE_OK("echo \"\"", W("echo"), W(""));
        PARSE_OK("echo \"\" \"\"", W("echo"), W(""), W(""));
        PARSE_OK("\"echo\"", W("echo"));
        PARSE_OK("echo \"\\\\\"", W("echo"), W("\\"));
        PARSE_OK("echo \"\\\"\"", W("echo"), W("\""));
        PARSE_OK("echo \"\\n\"", W("echo"), W("\n"));
        PARSE_OK("echo \"\\t\"", W("echo"), W("\t"));
        PARSE_OK("echo \"\\r\"", W("echo"), W("\r"));
        PARSE_OK("echo \"\\x41\\x62\\x7E\\x7e\"", W("echo"), W("Ab~~"));
        PARSE_OK("echo \"\\xff\\x80\\xFF\"", W("echo"), W("\xff\x80\xff"));
        /* \x00 gives an embedded NUL, counted in len. */
        PARSE_OK("echo \"a\\x00b\"", W("echo"), W("a\0b"));
        PARSE_OK("echo \"\\x00\"", W("echo"), W("\0"));
        PARSE_OK("echo \"\\x00\\x00\\x00\"", W("echo"), W("\0\0\0"));
        PARSE_OK("echo \"all: \\\\ \\\" \\n \\t \\r \\x00 \\x7f end\"", W("echo"),
                 W("all: \\ \" \n \t \r \0 \x7f end"));
        /* Single quotes inside double quotes are ordinary. */
        PARSE_OK("echo \"it's\"", W("echo"), W("it's"));
        /* Blanks, tabs and raw bytes inside double quotes are kept. */
        PARSE_OK("echo \" \t a \t \"", W("echo"), W(" \t a \t "));
        PARSE_OK("echo \"\xc3\xa9\"", W("echo"), W("\xc3\xa9"));
        /* A quoted word followed by a tab is fine. */
        PARSE_OK("echo \"a\"\t\"b\"", W("echo"), W("a"), W("b"));

        PARSE_BAD("echo \"abc");
        PARSE_BAD("echo \"");
        PARSE_BAD("echo \"abc\\\"");  /* the quote is escaped */
        PARSE_BAD("echo \"abc\\");    /* backslash at the end */
        PARSE_BAD("echo \"\\q\"");
        PARSE_BAD("echo \"\\0\"");
        PARSE_BAD("echo \"\\a\"");
        PARSE_BAD("echo \"\\'\"");
        PARSE_BAD("echo \"\\ \"");
        PARSE_BAD("echo \"\\x\"");
        PARSE_BAD("echo \"\\x4\"");
        PARSE_BAD("echo \"\\x4g\"");
        PARSE_BAD("echo \"\\xg4\"");
        PARSE_BAD("echo \"\\x");
        PARSE_BAD("echo \"\\x4");
        /* A quoted word must end at a blank or the end of the line. */
        PARSE_BAD("echo \"a\"b");
        PARSE_BAD("echo \"a\"\"b\"");
        PARSE_BAD("echo \"a\"'b'");
        PARSE_BAD("echo \"\"x");
        PARSE_BAD("\"echo\"x");
        /* The CR is dropped first, so this is an unterminated quote. */
        PARSE_BAD("echo \"abc\r");
}

static void test_parse_single_quotes(void)
{
        PARSE_OK("echo 'a b'", W("echo"), W("a b"));
        PARSE_OK("echo ''", W("echo"), W(""));
        PARSE_OK("echo '' ''", W("echo"), W(""), W(""));
        /* Literal: backslashes and double quotes are kept as they are. */
        PARSE_OK("echo 'a\\nb\\x41\\\\'", W("echo"), W("a\\nb\\x41\\\\"));
        PARSE_OK("echo '\"'", W("echo"), W("\""));
        PARSE_OK("echo 'x\\'", W("echo"), W("x\\"));
        PARSE_OK("echo ' \t '", W("echo"), W(" \t "));
        PARSE_OK("'ping'", W("ping"));

        PARSE_BAD("echo 'abc");
        PARSE_BAD("echo '");
        PARSE_BAD("echo 'a'b");
        PARSE_BAD("echo 'it''s'");
        PARSE_BAD("echo 'a'\"b\"");
        PARSE_BAD("echo ''x");
}

static void test_parse_many_args(void)
{
        Buffer b = BUFFER_INIT;
        const char *error;
        bool ok = true;
        int r;

        CHECK(buffer_append_str(&b, "echo") == 0);
        for (unsigned i = 0; i < 10000; i++)
                CHECK(buffer_printf(&b, i % 3 == 0 ? " %u" : i % 3 == 1 ? "\t\"q%u\"" : " 's%u'", i) == 0);
        r = proto_request_parse(&shared_req, b.data, b.len, &error);
        CHECK(r == 0);
        if (r == 0 && CHECK(shared_req.n_args == 10001)) {
                CHECK(strcmp(shared_req.args[0].data, "echo") == 0);
                for (unsigned i = 0; ok && i < 10000; i++) {
                        char want[32];
                        snprintf(want, sizeof(want), i % 3 == 0 ? "%u" : i % 3 == 1 ? "q%u" : "s%u", i);
                        ok = CHECK(shared_req.args[i + 1].len == strlen(want) &&
                                   strcmp(shared_req.args[i + 1].data, want) == 0);
                }
        }
        buffer_done(&b);
}

/* One ProtoRequest reused for many parses of different sizes, with errors in
 * between: every result must be as if the request were fresh. */
static void test_parse_reuse(void)
{
        ProtoRequest req = PROTO_REQUEST_INIT;
        Buffer line = BUFFER_INIT;
        const char *error;
        bool ok = true;

        for (unsigned iter = 0; ok && iter < 20000; iter++) {
                size_t n = iter % 97 == 0 ? 500 + rng_below(500) : rng_below(6);
                int r;

                buffer_clear(&line);
                if (iter % 13 == 0) {
                        /* an error part-way through must not leak into the next parse */
                        buffer_append_str(&line, "echo a b \"unterminated");
                        r = proto_request_parse(&req, line.data, line.len, &error);
                        ok = CHECK(r == -EINVAL && error);
                        continue;
                }
                if (iter % 17 == 0) {
                        r = proto_request_parse(&req, "   ", 3, &error);
                        ok = CHECK(r == 0 && req.n_args == 0);
                        continue;
                }
                buffer_printf(&line, "cmd%u", iter);
                for (size_t i = 0; i < n; i++)
                        buffer_printf(&line, " \"a%zu-%u\\x00\"", i, iter);
                r = proto_request_parse(&req, line.data, line.len, &error);
                ok = CHECK(r == 0) && CHECK(req.n_args == n + 1);
                for (size_t i = 0; ok && i < n; i++) {
                        char want[64];
                        int wl = snprintf(want, sizeof(want), "a%zu-%u", i, iter);
                        ok = CHECK(req.args[i + 1].len == (size_t)wl + 1 &&
                                   memcmp(req.args[i + 1].data, want, wl) == 0 &&
                                   req.args[i + 1].data[wl] == '\0');
                }
        }
        proto_request_done(&req);
        CHECK(req.args == NULL && req.storage == NULL && req.n_args == 0);
        proto_request_done(&req); /* twice is harmless */
        buffer_done(&line);
}

/* ---- argument quoting -------------------------------------------------- */

static size_t random_arg(unsigned char *s, size_t max)
{
        static const unsigned char special[] = { 0,    '"', '\'', '\\', '\r', '\n', '\t', ' ',
                                                 0x7f, 0xff, 0x80, 'x',  '0',  ':',  '#' };
        size_t len;

        switch (rng_below(8)) {
        case 0:
                len = 0;
                break;
        case 1:
                len = 1;
                break;
        default:
                len = rng_below(max + 1);
        }
        for (size_t i = 0; i < len; i++)
                s[i] = rng_below(3) == 0 ? special[rng_below(sizeof(special))]
                                         : (unsigned char)rng_below(256);
        return len;
}

static bool round_trip(Buffer *line, size_t n, unsigned char (*args)[64], const size_t *lens)
{
        const char *error;
        int r;

        buffer_clear(line);
        for (size_t i = 0; i < n; i++)
                if (!CHECK(proto_append_arg(line, args[i], lens[i]) == 0))
                        return false;

        /* One request line: no raw LF, NUL, or a trailing CR the parser would drop. */
        if (!CHECK(!memchr(line->data, '\n', line->len) && !memchr(line->data, '\0', line->len) &&
                   line->data[line->len - 1] != '\r')) {
                dump("line", line->data, line->len);
                return false;
        }
        r = proto_request_parse(&shared_req, line->data, line->len, &error);
        if (!CHECK(r == 0 && shared_req.n_args == n)) {
                dump("line", line->data, line->len);
                fprintf(stderr, "  r=%d error=%s n_args=%zu wanted=%zu\n", r, error ? error : "-",
                        shared_req.n_args, n);
                return false;
        }
        for (size_t i = 0; i < n; i++)
                if (!CHECK(shared_req.args[i].len == lens[i] &&
                           memcmp(shared_req.args[i].data, args[i], lens[i]) == 0)) {
                        dump("line", line->data, line->len);
                        dump("argument", args[i], lens[i]);
                        dump("parsed as", shared_req.args[i].data, shared_req.args[i].len);
                        return false;
                }
        return true;
}

static void test_append_arg(void)
{
        Buffer b = BUFFER_INIT;
        unsigned char args[8][64];
        size_t lens[8];

        /* Plain words stay plain; the separator is one space. */
        CHECK(proto_append_arg(&b, "echo", 4) == 0);
        CHECK(b.len == 4 && memcmp(b.data, "echo", 4) == 0);
        CHECK(proto_append_arg(&b, "don't", 5) == 0);
        CHECK(proto_append_arg(&b, "", 0) == 0);
        CHECK(proto_append_arg(&b, "a b", 3) == 0);
        if (CHECK(b.len == 19))
                CHECK(memcmp(b.data, "echo don't \"\" \"a b\"", 19) == 0);
        else
                dump("built", b.data, b.len);
        buffer_done(&b);

        /* Every byte value on its own, then all 256 in one argument. */
        for (unsigned c = 0; c < 256; c++) {
                args[0][0] = 'x';
                lens[0] = 1;
                args[1][0] = (unsigned char)c;
                lens[1] = 1;
                if (!round_trip(&b, 2, args, lens))
                        break;
        }
        {
                unsigned char all[256];
                const char *error;
                for (unsigned c = 0; c < 256; c++)
                        all[c] = (unsigned char)c;
                buffer_clear(&b);
                CHECK(proto_append_arg(&b, "echo", 4) == 0);
                CHECK(proto_append_arg(&b, all, 256) == 0);
                CHECK(proto_request_parse(&shared_req, b.data, b.len, &error) == 0);
                CHECK(shared_req.n_args == 2 && shared_req.args[1].len == 256 &&
                      memcmp(shared_req.args[1].data, all, 256) == 0);
        }

        /* 10,000 random requests (fixed seed) of 1-8 random arguments. */
        for (unsigned i = 0; i < 10000; i++) {
                size_t n = 1 + rng_below(8);
                for (size_t j = 0; j < n; j++)
                        lens[j] = random_arg(args[j], sizeof(args[j]));
                if (!round_trip(&b, n, args, lens)) {
                        fprintf(stderr, "  random case %u\n", i);
                        break;
                }
        }
        buffer_done(&b);
}

/* ---- frame encoder ----------------------------------------------------- */

#define CHECK_BUF(b, lit)                                                                          \
        do {                                                                                       \
                if (!CHECK((b)->len == sizeof(lit) - 1 && memcmp((b)->data, lit, (b)->len) == 0)) {  \
                        dump("got", (b)->data, (b)->len);                                          \
                        dump("wanted", lit, sizeof(lit) - 1);                                      \
                }                                                                                  \
        } while (0)

static void test_encoder(void)
{
        Buffer b = BUFFER_INIT;
        char big[5000];

        CHECK(proto_append_ok(&b, "pong", 4) == 0);
        CHECK_BUF(&b, "OK 4\npong\n");

        buffer_clear(&b);
        CHECK(proto_append_ok(&b, NULL, 0) == 0);
        CHECK_BUF(&b, "OK 0\n\n");

        buffer_clear(&b);
        CHECK(proto_append_err(&b, "busy", "too many clients") == 0);
        CHECK_BUF(&b, "ERR busy 16\ntoo many clients\n");

        buffer_clear(&b);
        CHECK(proto_append_err(&b, "unknown-command", "unknown command: %s", "nosuch") == 0);
        CHECK_BUF(&b, "ERR unknown-command 23\nunknown command: nosuch\n");

        buffer_clear(&b);
        CHECK(proto_append_err(&b, "exit-3", "%s", "") == 0);
        CHECK_BUF(&b, "ERR exit-3 0\n\n");

        buffer_clear(&b);
        CHECK(proto_append_frame(&b, PROTO_FRAME_EVENT, "deploy", "done", 4) == 0);
        CHECK_BUF(&b, "EVENT deploy 4\ndone\n");

        buffer_clear(&b);
        CHECK(proto_append_frame(&b, PROTO_FRAME_MORE, NULL, "a\nb", 3) == 0);
        CHECK_BUF(&b, "MORE 3\na\nb\n");

        buffer_clear(&b);
        CHECK(proto_append_frame(&b, PROTO_FRAME_OK, NULL, "\0\n\r\xff", 4) == 0);
        CHECK_BUF(&b, "OK 4\n\0\n\r\xff\n");

        /* Frames append; they never replace what is there. */
        buffer_clear(&b);
        CHECK(proto_append_ok(&b, "a", 1) == 0);
        CHECK(proto_append_frame(&b, PROTO_FRAME_ERR, "bad-request", "x", 1) == 0);
        CHECK(proto_append_frame(&b, PROTO_FRAME_EVENT, "a.b/c:d@e+f-g_h", "", 0) == 0);
        CHECK_BUF(&b, "OK 1\na\nERR bad-request 1\nx\nEVENT a.b/c:d@e+f-g_h 0\n\n");

        /* A large payload, and the length in decimal. */
        memset(big, 'z', sizeof(big));
        buffer_clear(&b);
        CHECK(proto_append_ok(&b, big, sizeof(big)) == 0);
        CHECK(b.len == 8 + 5000 + 1 && memcmp(b.data, "OK 5000\n", 8) == 0 && b.data[b.len - 1] == '\n');

        /* The word must be there exactly for ERR and EVENT. */
        buffer_clear(&b);
        CHECK(proto_append_frame(&b, PROTO_FRAME_OK, "x", "", 0) == -EINVAL);
        CHECK(proto_append_frame(&b, PROTO_FRAME_MORE, "x", "", 0) == -EINVAL);
        CHECK(proto_append_frame(&b, PROTO_FRAME_ERR, NULL, "", 0) == -EINVAL);
        CHECK(proto_append_frame(&b, PROTO_FRAME_EVENT, NULL, "", 0) == -EINVAL);
        {
                char word[PROTO_WORD_MAX + 2];
                memset(word, 'a', sizeof(word) - 1);
                word[sizeof(word) - 1] = '\0';
                CHECK(proto_append_frame(&b, PROTO_FRAME_ERR, word, "", 0) == -EINVAL);
                word[PROTO_WORD_MAX] = '\0';
                CHECK(b.len == 0);
                CHECK(proto_append_frame(&b, PROTO_FRAME_ERR, word, "", 0) == 0);
        }

        /* An over-long error message is truncated, never overflowed. */
        buffer_clear(&b);
        {
                char msg[2000];
                memset(msg, 'm', sizeof(msg) - 1);
                msg[sizeof(msg) - 1] = '\0';
                CHECK(proto_append_err(&b, "failed", "%s", msg) == 0);
                CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
        }

        CHECK(strcmp(proto_frame_type_to_string(PROTO_FRAME_OK), "OK") == 0);
        CHECK(strcmp(proto_frame_type_to_string(PROTO_FRAME_ERR), "ERR") == 0);
        CHECK(strcmp(proto_frame_type_to_string(PROTO_FRAME_MORE), "MORE") == 0);
        CHECK(strcmp(proto_frame_type_to_string(PROTO_FRAME_EVENT), "EVENT") == 0);

        CHECK(proto_code_is_valid("busy", 4));
        CHECK(proto_code_is_valid("exit-12", 7));
        CHECK(!proto_code_is_valid("", 0));
        CHECK(!proto_code_is_valid("Busy", 4));
        CHECK(!proto_code_is_valid("a b", 3));
        CHECK(!proto_code_is_valid("a_b", 3));
        CHECK(proto_topic_is_valid("Deploy.v1/x:y@z+w-q", 19));
        CHECK(!proto_topic_is_valid("", 0));
        CHECK(!proto_topic_is_valid("a b", 3));
        CHECK(!proto_topic_is_valid("a\nb", 3));
        CHECK(!proto_topic_is_valid("a\0b", 3));

        buffer_done(&b);
}

/* ---- frame decoder ----------------------------------------------------- */

/* Decode `in` fed in one go; expect exactly one frame or the given error. */
static void decode_one_at(int line, const char *in, size_t len, size_t max, int want_r,
                          ProtoFrameType type, const char *word, const char *payload, size_t plen)
{
        ProtoDecoder d;
        ProtoFrame f;
        int r;

        proto_decoder_init(&d, max);
        CHECK_AT(line, proto_decoder_feed(&d, in, len) == 0);
        r = proto_decoder_next(&d, &f);
        if (!CHECK_AT(line, r == want_r)) {
                dump("input", in, len);
                fprintf(stderr, "  r=%d, wanted %d\n", r, want_r);
        } else if (r == 1) {
                CHECK_AT(line, f.type == type);
                CHECK_AT(line, strcmp(f.word, word) == 0);
                if (!CHECK_AT(line, f.len == plen && memcmp(f.payload, payload, plen) == 0))
                        dump("payload", f.payload, f.len);
        }
        proto_decoder_done(&d);
}

#define DECODE_OK(in, type, word, payload)                                                         \
        decode_one_at(__LINE__, in, sizeof(in) - 1, 1 << 20, 1, type, word, payload,               \
                      sizeof(payload) - 1)
#define DECODE_R(in, max, r) decode_one_at(__LINE__, in, sizeof(in) - 1, max, r, 0, "", "", 0)

static void test_decoder_basic(void)
{
        DECODE_OK("OK 4\npong\n", PROTO_FRAME_OK, "", "pong");
        DECODE_OK("OK 0\n\n", PROTO_FRAME_OK, "", "");
        DECODE_OK("MORE 0\n\n", PROTO_FRAME_MORE, "", "");
        DECODE_OK("ERR busy 16\ntoo many clients\n", PROTO_FRAME_ERR, "busy", "too many clients");
        DECODE_OK("ERR exit-1 0\n\n", PROTO_FRAME_ERR, "exit-1", "");
        DECODE_OK("EVENT deploy 4\ndone\n", PROTO_FRAME_EVENT, "deploy", "done");
        /* Payloads are counted, never scanned: LF and frame-like text inside. */
        DECODE_OK("OK 9\nOK 3\nabc\n\n", PROTO_FRAME_OK, "", "OK 3\nabc\n");
        DECODE_OK("MORE 3\n\n\n\n\n", PROTO_FRAME_MORE, "", "\n\n\n");
        DECODE_OK("OK 3\n\0\xff\r\n", PROTO_FRAME_OK, "", "\0\xff\r");

        /* Incomplete: need more input. */
        DECODE_R("", 100, 0);
        DECODE_R("OK", 100, 0);
        DECODE_R("OK 4", 100, 0);
        DECODE_R("OK 4\n", 100, 0);
        DECODE_R("OK 4\npong", 100, 0);
        DECODE_R("ERR busy 3\nab", 100, 0);

        /* Malformed headers. */
        DECODE_R("ok 4\npong\n", 100, -EBADMSG);
        DECODE_R("Ok 4\npong\n", 100, -EBADMSG);
        DECODE_R("OK\npong\n", 100, -EBADMSG);
        DECODE_R("OK \npong\n", 100, -EBADMSG);
        DECODE_R("OK 04\npong\n", 100, -EBADMSG);
        DECODE_R("OK 00\n\n", 100, -EBADMSG);
        DECODE_R("OK -4\npong\n", 100, -EBADMSG);
        DECODE_R("OK +4\npong\n", 100, -EBADMSG);
        DECODE_R("OK 4x\npong\n", 100, -EBADMSG);
        DECODE_R("OK x\npong\n", 100, -EBADMSG);
        DECODE_R("OK  4\npong\n", 100, -EBADMSG);
        DECODE_R("OK 4 \npong\n", 100, -EBADMSG);
        DECODE_R(" OK 4\npong\n", 100, -EBADMSG);
        DECODE_R("OK 4\r\npong\n", 100, -EBADMSG);
        DECODE_R("OKAY 4\npong\n", 100, -EBADMSG);
        DECODE_R("NOPE 4\npong\n", 100, -EBADMSG);
        DECODE_R("\n", 100, -EBADMSG);
        DECODE_R("OK 99999999999999999999\n", 100, -EBADMSG);
        DECODE_R("ERR 4\npong\n", 100, -EBADMSG);
        DECODE_R("ERR Busy 4\npong\n", 100, -EBADMSG);
        DECODE_R("ERR bu_sy 4\npong\n", 100, -EBADMSG);
        DECODE_R("ERR  4\npong\n", 100, -EBADMSG);
        DECODE_R("ERR busy  4\npong\n", 100, -EBADMSG);
        DECODE_R("EVENT 4\npong\n", 100, -EBADMSG);
        DECODE_R("EVENT bad!topic 4\npong\n", 100, -EBADMSG);
        DECODE_R("EVENT a\0b 4\npong\n", 100, -EBADMSG);
        DECODE_R("ERR a\0b 4\npong\n", 100, -EBADMSG);
        DECODE_R("MORE x 4\npong\n", 100, -EBADMSG);
        DECODE_R("OK 4 4\npong\n", 100, -EBADMSG);

        /* The LF after the payload is required. */
        DECODE_R("OK 4\npongX", 100, -EBADMSG);
        DECODE_R("OK 4\npong\r\n", 100, -EBADMSG);
        DECODE_R("OK 3\npong\n", 100, -EBADMSG);

        /* Payload limit: reported as soon as the header is known. */
        DECODE_R("OK 11\n", 10, -EMSGSIZE);
        DECODE_R("ERR failed 1000\nxx", 999, -EMSGSIZE);
        DECODE_R("OK 1\n", 0, -EMSGSIZE);
        decode_one_at(__LINE__, "OK 10\n0123456789\n", 17, 10, 1, PROTO_FRAME_OK, "", "0123456789", 10);
        decode_one_at(__LINE__, "OK 0\n\n", 6, 0, 1, PROTO_FRAME_OK, "", "", 0);

        /* A word of exactly PROTO_WORD_MAX bytes is fine, one more is not. */
        {
                char in[PROTO_WORD_MAX + 32], word[PROTO_WORD_MAX + 1];
                int n;

                memset(word, 'w', PROTO_WORD_MAX);
                word[PROTO_WORD_MAX] = '\0';

                memset(in, 'w', sizeof(in));
                memcpy(in, "ERR ", 4);
                n = 4 + PROTO_WORD_MAX;
                n += snprintf(in + n, sizeof(in) - n, " 1\nx\n");
                decode_one_at(__LINE__, in, n, 100, 1, PROTO_FRAME_ERR, word, "x", 1);
                memset(in, 'w', sizeof(in));
                memcpy(in, "ERR ", 4);
                n = 4 + PROTO_WORD_MAX + 1;
                n += snprintf(in + n, sizeof(in) - n, " 1\nx\n");
                decode_one_at(__LINE__, in, n, 100, -EBADMSG, 0, "", "", 0);
        }
}

static void test_decoder_header_max(void)
{
        char in[PROTO_HEADER_MAX + 10];
        ProtoDecoder d;
        ProtoFrame f;

        /* No LF within PROTO_HEADER_MAX bytes: an error, not an endless wait. */
        memset(in, '7', sizeof(in));
        memcpy(in, "OK ", 3);
        proto_decoder_init(&d, 1 << 20);
        CHECK(proto_decoder_feed(&d, in, PROTO_HEADER_MAX) == 0);
        CHECK(proto_decoder_next(&d, &f) <= 0); /* may wait or fail, must not succeed */
        proto_decoder_done(&d);

        proto_decoder_init(&d, 1 << 20);
        CHECK(proto_decoder_feed(&d, in, PROTO_HEADER_MAX + 1) == 0);
        CHECK(proto_decoder_next(&d, &f) == -EBADMSG);
        proto_decoder_done(&d);

        /* The same fed byte by byte. */
        memset(in, 'A', sizeof(in));
        proto_decoder_init(&d, 1 << 20);
        {
                int r = 0;
                size_t i;
                for (i = 0; i < sizeof(in) && r == 0; i++) {
                        CHECK(proto_decoder_feed(&d, in + i, 1) == 0);
                        r = proto_decoder_next(&d, &f);
                }
                CHECK(r == -EBADMSG);
                CHECK(i <= PROTO_HEADER_MAX + 1);
        }
        proto_decoder_done(&d);
}

typedef struct TestFrame {
        ProtoFrameType type;
        char word[16];
        unsigned char payload[300];
        size_t len;
} TestFrame;

static void random_frame(TestFrame *t)
{
        static const char *const codes[] = { "busy", "bad-request", "exit-1", "x" };
        static const char *const topics[] = { "deploy", "a.b/c", "T:1@h+x-y" };
        static const char *const texts[] = { "OK 3\n", "ERR busy 4\n", "\n", "EVENT a 1\n", "MORE 0\n\n" };

        t->type = (ProtoFrameType)rng_below(4);
        t->word[0] = '\0';
        if (t->type == PROTO_FRAME_ERR)
                snprintf(t->word, sizeof(t->word), "%s", codes[rng_below(ELEMENTSOF(codes))]);
        else if (t->type == PROTO_FRAME_EVENT)
                snprintf(t->word, sizeof(t->word), "%s", topics[rng_below(ELEMENTSOF(topics))]);
        t->len = rng_below(5) == 0 ? 0 : rng_below(sizeof(t->payload) - 16);
        for (size_t i = 0; i < t->len;) {
                if (rng_below(10) == 0) {
                        const char *s = texts[rng_below(ELEMENTSOF(texts))];
                        size_t n = MIN(strlen(s), t->len - i);
                        memcpy(t->payload + i, s, n);
                        i += n;
                } else
                        t->payload[i++] = (unsigned char)rng_below(256);
        }
}

/* Encode frames, feed the stream in chunks of random size (or byte by byte
 * when max_chunk is 1) and check that the same frames come out in order. */
static void decode_stream(size_t max_chunk)
{
        enum { N = 2000 };
        static TestFrame frames[N];
        Buffer stream = BUFFER_INIT;
        ProtoDecoder d;
        size_t pos = 0, got = 0;
        bool ok = true;

        for (size_t i = 0; i < N; i++) {
                random_frame(&frames[i]);
                CHECK(proto_append_frame(&stream, frames[i].type,
                                         frames[i].word[0] ? frames[i].word : NULL,
                                         frames[i].payload, frames[i].len) == 0);
        }

        proto_decoder_init(&d, 1 << 20);
        while (ok && pos < stream.len) {
                size_t n = max_chunk == 1 ? 1 : 1 + rng_below(max_chunk); /* not inside MIN() */
                ProtoFrame f;
                int r;

                n = MIN(n, stream.len - pos);
                ok = CHECK(proto_decoder_feed(&d, stream.data + pos, n) == 0);
                pos += n;
                while (ok && (r = proto_decoder_next(&d, &f)) != 0) {
                        const TestFrame *t = &frames[got];
                        ok = CHECK(r == 1) && CHECK(got < N) && CHECK(f.type == t->type) &&
                             CHECK(strcmp(f.word, t->word) == 0) &&
                             CHECK(f.len == t->len && memcmp(f.payload, t->payload, t->len) == 0);
                        if (!ok)
                                fprintf(stderr, "  frame %zu, r=%d, chunk %zu\n", got, r, max_chunk);
                        got++;
                }
        }
        CHECK(got == N);
        if (!CHECK(proto_decoder_pending(&d) == 0))
                fprintf(stderr, "  pending %zu after %zu frames, chunk %zu\n", proto_decoder_pending(&d), got, max_chunk);
        proto_decoder_done(&d);
        buffer_done(&stream);
}

static void test_decoder_pending(void)
{
        ProtoDecoder d;
        ProtoFrame f;

        proto_decoder_init(&d, 100);
        CHECK(proto_decoder_pending(&d) == 0);
        CHECK(proto_decoder_feed(&d, "OK 4\npong\nOK 1", 14) == 0);
        CHECK(proto_decoder_pending(&d) == 14);
        CHECK(proto_decoder_next(&d, &f) == 1);
        CHECK(f.len == 4 && memcmp(f.payload, "pong", 4) == 0);
        CHECK(proto_decoder_pending(&d) == 4);
        CHECK(proto_decoder_next(&d, &f) == 0);
        CHECK(proto_decoder_next(&d, &f) == 0); /* asking again changes nothing */
        CHECK(proto_decoder_feed(&d, "\n", 1) == 0);
        CHECK(proto_decoder_next(&d, &f) == 0);
        CHECK(proto_decoder_feed(&d, "x\n", 2) == 0);
        CHECK(proto_decoder_next(&d, &f) == 1);
        CHECK(f.type == PROTO_FRAME_OK && f.len == 1 && f.payload[0] == 'x');
        CHECK(proto_decoder_pending(&d) == 0);
        CHECK(proto_decoder_next(&d, &f) == 0);
        proto_decoder_done(&d);
        proto_decoder_done(&d); /* twice is harmless */
}

int main(void)
{
        test_parse_words();
        test_parse_blank();
        test_parse_cr();
        test_parse_double_quotes();
        test_parse_single_quotes();
        test_parse_many_args();
        test_parse_reuse();
        test_append_arg();
        test_encoder();
        test_decoder_basic();
        test_decoder_header_max();
        decode_stream(1);
        decode_stream(7);
        decode_stream(300);
        decode_stream(5000);
        test_decoder_pending();

        proto_request_done(&shared_req);
        if (n_failed) {
                fprintf(stderr, "test-proto: %u of %u checks failed\n", n_failed, n_checks);
                return EXIT_FAILURE;
        }
        printf("test-proto: all %u checks passed\n", n_checks);
        return EXIT_SUCCESS;
}
