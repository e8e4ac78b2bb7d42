/*
 * fuzz-frame.c - libFuzzer harness for the incremental frame decoder
 * (ProtoDecoder, src/shared/proto.c), fed the input in pseudo-random pieces
 * (the sizes come from a hash of the input, so a crash reproduces).
 *
 * Properties checked (abort on violation):
 *  - every frame re-encoded with proto_append_frame() equals the bytes the
 *    decoder consumed for it (the wire format is canonical);
 *  - fed in pieces or all at once, the decoder returns the same frames and
 *    ends in the same state;
 *  - consumed + pending == fed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-frame: check failed: %s (line %d)\n", #cond,        \
                                __LINE__);                                                         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

#define MAX_FRAMES 4096

typedef struct Result {
        size_t n_frames;
        size_t ends[MAX_FRAMES]; /* stream offset after each frame */
        int final;               /* last decoder_next() result */
        size_t consumed;
} Result;

static uint64_t rng;

static uint64_t next_rand(void)
{
        /* xorshift64* */
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return rng * 2685821657736338717ULL;
}

/* Take every whole frame out of the decoder; returns the last result. */
static int drain(ProtoDecoder *d, Result *res, Buffer *enc)
{
        for (;;) {
                ProtoFrame f;
                size_t before = d->pos;
                int r = proto_decoder_next(d, &f);

                if (r <= 0) {
                        CHECK(r == 0 || r == -EBADMSG || r == -EMSGSIZE);
                        CHECK(r != 0 || d->pos == before);
                        return r;
                }
                CHECK(r == 1);
                CHECK(f.len <= d->max_payload);
                buffer_clear(enc);
                CHECK(proto_append_frame(enc, f.type,
                                         f.type == PROTO_FRAME_ERR || f.type == PROTO_FRAME_EVENT
                                             ? f.word
                                             : NULL,
                                         f.payload, f.len) == 0);
                if (enc->len != d->pos - before ||
                    memcmp(enc->data, d->buf.data + before, enc->len) != 0) {
                        fprintf(stderr, "fuzz-frame: consumed '%.*s' but re-encoded '%.*s'\n",
                                (int)(d->pos - before), d->buf.data + before, (int)enc->len,
                                enc->data);
                        abort();
                }
                res->consumed += d->pos - before;
                if (res->n_frames < MAX_FRAMES)
                        res->ends[res->n_frames] = res->consumed;
                res->n_frames++;
        }
}

static void decode(const uint8_t *data, size_t size, size_t max_payload, bool pieces, Result *res,
                   Buffer *enc)
{
        ProtoDecoder d;
        size_t off = 0;
        int r = 0;

        memset(res, 0, sizeof(*res));
        proto_decoder_init(&d, max_payload);
        while (off < size) {
                size_t n = size - off;

                if (pieces) {
                        /* Mostly small pieces, sometimes a big one. */
                        uint64_t x = next_rand();
                        size_t k = (x & 7) == 0 ? (size_t)(x >> 8) % 4096 + 1 : (size_t)(x >> 8) % 16 + 1;
                        if (k < n)
                                n = k;
                }
                CHECK(proto_decoder_feed(&d, data + off, n) == 0);
                off += n;
                r = drain(&d, res, enc);
                if (r < 0)
                        break; /* the decoder is unusable after an error */
        }
        res->final = r;
        if (r >= 0)
                CHECK(res->consumed + proto_decoder_pending(&d) == size);
        proto_decoder_done(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static Buffer enc = BUFFER_INIT;
        static Result whole, pieces;
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        size_t max_payload;

        for (size_t i = 0; i < size; i++)
                h = (h ^ data[i]) * 1099511628211ULL;
        rng = h | 1;
        /* Small limits exercise -EMSGSIZE, the big one everything else. */
        max_payload = (h >> 60) == 0 ? (size_t)(h >> 32) % 64 : 1 << 20;

        decode(data, size, max_payload, false, &whole, &enc);
        decode(data, size, max_payload, true, &pieces, &enc);
        CHECK(whole.n_frames == pieces.n_frames);
        CHECK(whole.final == pieces.final);
        CHECK(whole.consumed == pieces.consumed);
        for (size_t i = 0; i < whole.n_frames && i < MAX_FRAMES; i++)
                CHECK(whole.ends[i] == pieces.ends[i]);
        return 0;
}
