/*
 * local.h - the ipcd side of the bridge, and the main thread's loop.
 *
 * A Local owns the connection to ipcd (a Conn from ipcctl's conn.c, on the
 * shared protocol module), the ring of requests awaiting their answers and
 * the echo list; only the main thread touches it. It subscribes to the
 * local topics of the [Out] rules, turns each EVENT into one Event per
 * rule on the `out` queue, and publishes each Event of the `in` queue with
 * `publish TOPIC MESSAGE` — the only two requests besides `hello` it ever
 * sends, whatever the broker says: a broker can make events, never run
 * commands.
 *
 * Echoes: ipcd delivers an event to every subscriber, the publisher
 * included. When the bridge publishes a broker message on a local topic it
 * is itself subscribed to (an [In] and an [Out] rule on the same topic, as
 * in a fleet where every host sends and receives "deploy"), it remembers
 * (topic, payload) and drops the first EVENT that matches, so a message
 * from the broker never goes back out.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "bconf.h"
#include "conn.h"
#include "evqueue.h"
#include "stats.h"

/* Requests sent to ipcd and not answered yet, at most. */
#define LOCAL_WINDOW 128

typedef enum AnswerKind {
        ANSWER_HELLO,
        ANSWER_SUBSCRIBE,
        ANSWER_PUBLISH,
} AnswerKind;

typedef struct Pending {
        AnswerKind kind;
        Event *event; /* ANSWER_PUBLISH: kept until answered, re-sent after a reconnect */
} Pending;

typedef struct Echo {
        struct Echo *next;
        Event *event; /* topic and payload of a publish we expect back */
} Echo;

typedef struct Local {
        const BridgeConfig *config;
        Stats *stats;
        EventQueue *out; /* produced here */
        EventQueue *in;  /* consumed here */
        Conn *conn;
        Pending pending[LOCAL_WINDOW + 2];
        size_t p_head, p_n;
        Echo *echo_head, *echo_tail;
        size_t n_echo;
        const char **topics; /* distinct [Out] local topics, into config */
        size_t n_topics;
        unsigned backoff_ms;
        uint64_t next_attempt;
        bool failing;
} Local;

int local_init(Local *l, const BridgeConfig *c, Stats *stats, EventQueue *out, EventQueue *in);
void local_done(Local *l);

/*
 * The main loop: ipcd's socket, the `in` queue, the signals (signalfd `sfd`:
 * SIGTERM and SIGINT end it) and the sd_notify timers (STATUS, WATCHDOG).
 * Returns 0 on a signal, -errno on a failure of the loop itself.
 */
int local_run(Local *l, int sfd);
