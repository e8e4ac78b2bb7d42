/*
 * registry.h - the clients that are connected now, and the configuration
 * they are served with.
 *
 * The Server owns one Registry (server.h); it lives from server_init() to
 * server_done(). Its lock, the registry lock, is the daemon's one lock over
 * more than one client. It guards, and nothing outside registry.c touches:
 *
 *   - the client list (`clients`, each Client's `prev`/`next`), `n_clients`,
 *     `n_readers`, `next_id`, the per-peer counts (`peers`) and `retired`, the counters
 *     of the clients that have gone;
 *   - each Client's `n_threads`, `reader` and `reader_running`: a Client is
 *     listed while one of its threads runs, so a Client found in the list
 *     under the lock has an open fd, and its reader may be signalled;
 *   - `config`, the current configuration: replaced by registry_set_config()
 *     (reload), read only through registry_config(), which takes a
 *     reference. `config_generation` (atomic) lets a reader see cheaply
 *     that its own reference is out of date.
 *
 * Held only for memory work: no socket call, no logging, no waiting. Inside
 * it a Client's events lock (EventIndex.lock, via events_append_topics())
 * and a Outbox's lock may be taken, never the other way round. Every
 * function here may be called from any thread and takes the lock itself,
 * but for the callbacks of registry_foreach(), which run under it.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "client.h"
#include "conf.h"
#include "peers.h"

typedef enum Refusal {
        REFUSAL_NONE,
        REFUSAL_MAX_CLIENTS, /* MaxClients= (and the admin reserve), or no memory */
        REFUSAL_PER_UID,     /* MaxClientsPerUID= */
        REFUSAL_PER_ADDRESS, /* MaxClientsPerAddress= */
        REFUSAL_THREADS,     /* its reader thread could not start */
} Refusal;

typedef struct Registry {
        pthread_mutex_t lock;
        pthread_cond_t drained; /* broadcast when n_clients or n_readers reaches 0 */
        Client *clients;
        unsigned n_clients;
        unsigned n_readers; /* clients whose reader_running is set */
        uint64_t next_id;
        PeerTable peers;
        ClientCounters retired;
        Config *config; /* owned: one reference */
        atomic_uint_fast64_t config_generation;
} Registry;

/* Takes over the reference to `config`. */
int registry_init(Registry *r, Config *config);
void registry_done(Registry *r);
unsigned registry_n_clients(Registry *r);

/* The current configuration, referenced (config_unref() it); with the
 * generation it belongs to, when `generation` is given. */
Config *registry_config(Registry *r, uint64_t *generation);

/* Whether a configuration newer than `generation` was swapped in. No lock. */
bool registry_config_changed(Registry *r, uint64_t generation);

/* Swap in `config` (taking over its reference); drops the old one. */
void registry_set_config(Registry *r, Config *config);

/*
 * Admit `c` under `config`'s limits, list it with a new id, and start its
 * reader thread (`reader`, a reference of c's for it) with `attr`, all
 * under the lock, so that nobody can see it listed without a reader.
 * Returns REFUSAL_NONE when it runs, else why not; `why` (size bytes) then
 * says so for the client's ERR busy.
 */
Refusal registry_add(Registry *r, Client *c, const Config *config, const pthread_attr_t *attr,
                     void *(*reader)(void *), char *why, size_t size);

/* A client restored after a restart (handover.c), with the id it had: listed
 * and its reader started as registry_add() does, without the admission
 * limits (it was admitted before). 0 or -errno. */
int registry_restore(Registry *r, Client *c, const pthread_attr_t *attr, void *(*reader)(void *));

/* One more thread of c runs (its sender), or one less failed to start. */
void registry_thread_started(Registry *r, Client *c);
void registry_thread_not_started(Registry *r, Client *c);

/* A thread of c ends (the calling one): true if it was its last, and then
 * the caller must registry_remove() it once its last words are logged. */
bool registry_thread_ended(Registry *r, Client *c);
void registry_remove(Registry *r, Client *c);

/* Interrupt c's reader if it runs (client_kick_locked()). */
void registry_kick(Registry *r, Client *c);

/* The request counters of every client, gone ones too. */
void registry_counters(Registry *r, ClientCounters *ret);

/* fn(c, userdata) for each listed client, under the lock (see the head);
 * stops at the first negative return, which it returns. */
int registry_foreach(Registry *r, int (*fn)(Client *c, void *userdata), void *userdata);

/*
 * Shutdown: every reader answers what it has received and ends
 * (client_stop_reading_locked()); returns how many clients there were.
 */
unsigned registry_stop_reading(Registry *r);

/*
 * Wait until every client has gone or `until` (CLOCK_MONOTONIC µs) has
 * passed, kicking again every `kick_usec` the readers that have not seen the
 * stop yet; then abort those left and wait 1 s more for them. Returns how
 * many were left at `until`.
 */
unsigned registry_drain(Registry *r, uint64_t until, uint64_t kick_usec);

/*
 * The tick's health check: the lock taken within 2 s, else -ETIMEDOUT (a
 * wedged registry); clients past their drop deadline (client_drop) aborted.
 * Returns the number of clients, and the configuration's ExitIdleSec=.
 */
int registry_check(Registry *r, uint64_t now, unsigned *ret_exit_idle_sec);

/* A reference to each listed client, in a new array (NULL without memory);
 * returns how many. For the handover, which must outlive their threads. */
size_t registry_ref_all(Registry *r, Client ***ret);

/* Wait until no listed client's reader runs, or `until` (CLOCK_MONOTONIC
 * µs), kicking again every `kick_usec` the readers that have not seen the
 * stop; true if none runs. */
bool registry_wait_readers(Registry *r, uint64_t until, uint64_t kick_usec);
