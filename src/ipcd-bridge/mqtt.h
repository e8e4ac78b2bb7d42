/*
 * mqtt.h - the broker side: one thread that owns the libmosquitto client.
 *
 * Every libmosquitto call happens on the MQTT thread (connect, the
 * read/write/misc loop steps, publish, subscribe, and the callbacks they
 * run), so the mosquitto object needs no lock of its own. The thread polls
 * the client's socket beside the `out` queue's eventfd: an event the main
 * thread pushes is published at once. It takes events from `out` only
 * while the broker has accepted the session and at most MQTT_WINDOW are in
 * libmosquitto's hands (sent, not yet acknowledged); so the bridge's own
 * bounded queue, not libmosquitto's unbounded one, holds what waits while
 * the broker is away. It pushes what the broker sends to `in`.
 *
 * Lifetime: mqtt_start() creates the thread, mqtt_stop() tells it to say
 * "offline", disconnect and end, and joins it. Between the two only the
 * thread touches the Mqtt, except `stop` (atomic).
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <mosquitto.h>

#include "bconf.h"
#include "evqueue.h"
#include "stats.h"

/* Messages handed to libmosquitto and not yet acknowledged, at most. */
#define MQTT_WINDOW 256

typedef struct Mqtt {
        const BridgeConfig *config;
        Stats *stats;
        EventQueue *out; /* consumed here */
        EventQueue *in;  /* produced here */
        struct mosquitto *mosq;
        mosquitto_property *origin; /* the user property on every publish */
        pthread_t thread;
        bool started;
        atomic_bool stop;
        /* The MQTT thread's alone: */
        bool socket_up, session_up, just_connected;
        unsigned backoff_ms;
        uint8_t pending[65536]; /* by mid: 0 none, 1 QoS 0, 2 QoS 1, 3 the status */
        unsigned n_pending;
} Mqtt;

/* Create the client (no network yet) and start the thread. */
int mqtt_start(Mqtt *m, const BridgeConfig *config, Stats *stats, EventQueue *out,
               EventQueue *in);
void mqtt_stop(Mqtt *m);
