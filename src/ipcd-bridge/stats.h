/*
 * stats.h - the bridge's counters, shared by its two threads as atomics
 * (relaxed: they are reported, never used to synchronise anything). The
 * Stats object lives in run() and outlives both threads.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct Stats {
        atomic_bool broker_up;        /* CONNACK accepted, not lost since */
        atomic_bool ipcd_up;          /* hello and subscribe answered */
        atomic_uint_fast64_t out;     /* local events acknowledged by the broker */
        atomic_uint_fast64_t in;      /* broker messages published on ipcd */
        atomic_uint_fast64_t looped;  /* dropped because they came from this bridge */
        atomic_uint_fast64_t lost;    /* QoS 0 in flight at a disconnect, refused by the
                                       * broker, too large for ipcd, or unanswered by ipcd */
        atomic_uint_fast64_t mqtt_heartbeat_usec; /* CLOCK_MONOTONIC; the MQTT thread runs */
} Stats;
