/*
 * verb-send.c - the one-request verbs: send COMMAND [ARG...], hello, stats
 * and publish TOPIC MESSAGE.... Each builds a request with proto_append_arg()
 * (so the user never quotes for the wire), sends it, and streams the MORE
 * payloads and the final OK payload to stdout as they arrive.
 *
 * -t bounds the whole operation: connecting, authenticating, writing the
 * request and receiving the final frame. EVENT frames are not answers and
 * are skipped.
 */
#include <errno.h>
#include <string.h>

#include "ipcctl.h"
#include "output.h"

static int send_request(char *const *argv, size_t n)
{
        _cleanup_conn_ Conn *c = NULL;
        usec_t deadline = deadline_after(arg_timeout);
        Output o;
        int r, wr;

        r = session_open(deadline, &c);
        if (r != 0)
                return r;

        r = conn_queue_request(c, argv, n);
        if (r < 0)
                return session_error(r);
        /* If writing fails, the server may still have answered (ERR busy,
         * ERR too-long): read what it said before giving up. */
        wr = conn_flush_wait(c, deadline);
        if (wr == -ETIME)
                return session_error(wr);

        output_init(&o, arg_json, arg_quiet);
        output_expect(&o, answer_kind(argv[0], n - 1));
        for (;;) {
                ProtoFrame f;

                r = conn_read_frame_wait(c, &f, deadline);
                if (r < 0) {
                        (void)output_flush(&o);
                        return session_error(wr < 0 && r == -ECONNRESET ? wr : r);
                }
                if (f.type == PROTO_FRAME_EVENT)
                        continue;
                r = output_answer(&o, &f);
                if (r >= 0)
                        r = output_flush(&o);
                if (r < 0)
                        return log_output_error(r);
                if (f.type == PROTO_FRAME_OK)
                        return EXIT_STATUS_OK;
                if (f.type == PROTO_FRAME_ERR)
                        return EXIT_STATUS_FAILED;
        }
}

int verb_send(int argc, char *argv[])
{
        if (argc < 2)
                return usage_error("send: missing COMMAND");
        return send_request(argv + 1, (size_t)argc - 1);
}

int verb_hello(int argc, char *argv[])
{
        if (argc > 1)
                return usage_error("hello takes no arguments");
        return send_request(argv, 1);
}

int verb_stats(int argc, char *argv[])
{
        if (argc > 1)
                return usage_error("stats takes no arguments");
        return send_request(argv, 1);
}

int verb_publish(int argc, char *argv[])
{
        /* The server joins the words after the topic, as echo does. */
        if (argc < 3)
                return usage_error(argc < 2 ? "publish: missing TOPIC and MESSAGE"
                                            : "publish: missing MESSAGE");
        if (!proto_topic_is_valid(argv[1], strlen(argv[1])))
                return usage_error("invalid topic '%s' (allowed: letters, digits and ._:/@+-)",
                                   argv[1]);
        return send_request(argv, (size_t)argc);
}
