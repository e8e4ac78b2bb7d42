/*
 * server.h - the daemon: listeners, the select() accept loop, the client
 * registry, statistics and shutdown.
 *
 * The main thread owns the Server and everything in it that is not under
 * `lock`. `lock` (the registry lock) guards the client list, n_clients,
 * next_id and stopping; it is held only for short, non-blocking work, and
 * a Queue's lock may be taken inside it (never the other way round).
 * Statistics are atomics, updated by any thread without a lock.
 */
#pragma once

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "address.h"
#include "client.h"
#include "conf.h"
#include "log.h"

typedef struct Listener {
        int fd; /* owned */
        Transport transport;
        char name[ADDRESS_STRING_MAX]; /* "unix:/run/ipcd/ipcd.sock", "tcp:127.0.0.1:9966" */
        char *unlink_path;             /* standalone Unix socket we created; removed at exit */
} Listener;

typedef struct Stats {
        atomic_uint_fast64_t clients_total;
        atomic_uint_fast64_t clients_refused;
        atomic_uint_fast64_t commands_ok;
        atomic_uint_fast64_t commands_failed;
        atomic_uint_fast64_t bytes_in;
        atomic_uint_fast64_t bytes_out;
        atomic_uint_fast64_t events_published;
        atomic_uint_fast64_t events_delivered;
        atomic_uint_fast64_t events_dropped;
        atomic_uint_fast64_t slow_consumer_disconnects;
} Stats;

typedef struct Server {
        Config *config;                         /* current; swapped under `lock` (server_reload) */
        atomic_uint_fast64_t config_generation; /* bumped after each swap */
        pthread_mutex_t reload_lock;            /* one reload at a time (SIGHUP, `reload`) */
        atomic_uint n_running;                  /* configured commands running now (MaxRunning=) */
        pthread_mutex_t auth_lock;              /* guards the two auth rate limits */
        RateLimit auth_failures_rl;             /* failed auth attempts, server-wide */
        RateLimit auth_log_rl;                  /* journal entries about them */
        ConfigOverrides overrides;              /* the command line, re-applied on reload */
        Listener *listeners;
        size_t n_listeners;
        bool socket_activated;
        int wake_fd;                /* eventfd: signals and threads wake the main loop */
        uint64_t start_usec;        /* CLOCK_MONOTONIC */
        pthread_attr_t thread_attr; /* small stacks, detached */
        Stats stats;

        pthread_mutex_t lock;
        pthread_cond_t drained; /* signalled when a client leaves the registry */
        Client *clients;
        unsigned n_clients;
        uint64_t next_id;
        bool stopping;
} Server;

/* Takes over the reference to `config`. */
int server_init(Server *s, Config *config, const ConfigOverrides *overrides);

void server_done(Server *s);

/* Listeners: from systemd when LISTEN_FDS is set, else bind `specs`. */
int server_open_listeners(Server *s, char **specs, size_t n_specs);

/* Serve until SIGTERM/SIGINT, then drain; returns 0 or -errno. */
int server_run(Server *s);

/*
 * Re-read the configuration and swap it in; a bad one leaves the running
 * one in place and its problems ("file:line: message" lines) in `errors`.
 * Any thread may call it.
 */
int server_reload(Server *s, Buffer *errors);

/* A client's thread has ended; the last one takes it out of the registry. */
void server_client_thread_done(Server *s, Client *c);
