/*
 * registry.c - the list of connected clients, their admission, their
 * threads' comings and goings, and the current configuration. The lock
 * contract is in registry.h; everything here takes the lock itself.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "time-util.h"

int registry_init(Registry *r, Config *config)
{
        pthread_condattr_t ca;
        int k;

        *r = (Registry){.config = config};
        k = pthread_mutex_init(&r->lock, NULL);
        if (k)
                return -k;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        k = pthread_cond_init(&r->drained, &ca);
        pthread_condattr_destroy(&ca);
        if (k)
                return -k;
        return peers_init(&r->peers);
}

void registry_done(Registry *r)
{
        config_unref(r->config);
        r->config = NULL;
        peers_done(&r->peers);
        pthread_cond_destroy(&r->drained);
        pthread_mutex_destroy(&r->lock);
}

unsigned registry_n_clients(Registry *r)
{
        unsigned n;

        pthread_mutex_lock(&r->lock);
        n = r->n_clients;
        pthread_mutex_unlock(&r->lock);
        return n;
}

Config *registry_config(Registry *r, uint64_t *generation)
{
        Config *c;

        pthread_mutex_lock(&r->lock);
        c = config_ref(r->config);
        if (generation)
                *generation = atomic_load_explicit(&r->config_generation, memory_order_relaxed);
        pthread_mutex_unlock(&r->lock);
        return c;
}

bool registry_config_changed(Registry *r, uint64_t generation)
{
        return atomic_load_explicit(&r->config_generation, memory_order_acquire) != generation;
}

void registry_set_config(Registry *r, Config *config)
{
        Config *old;

        pthread_mutex_lock(&r->lock);
        old = r->config;
        r->config = config;
        atomic_fetch_add_explicit(&r->config_generation, 1, memory_order_release);
        pthread_mutex_unlock(&r->lock);
        config_unref(old);
}

/* MaxClients=, then the admin reserve above it (admin peers only), then the
 * caps per uid (Unix peers that are not admin) and per address (TCP). */
static Refusal admit_locked(Registry *r, Client *c, const Config *config, char *why, size_t size)
{
        bool admin = atomic_load(&c->role) == ROLE_ADMIN;

        if (r->n_clients >= config->max_clients + (admin ? config->admin_reserve : 0)) {
                snprintf(why, size, "too many clients (MaxClients=%u%s)", config->max_clients,
                         admin && config->admin_reserve ? " and the admin reserve" : "");
                return REFUSAL_MAX_CLIENTS;
        }
        c->admin_slot = r->n_clients >= config->max_clients;
        if (c->peer_key.kind == PEER_UID && !admin) {
                if (peers_count(&r->peers, &c->peer_key) >= config_max_per_uid(config)) {
                        snprintf(why, size, "too many clients for uid %u (MaxClientsPerUID=%u)",
                                 (unsigned)c->cred.uid, config_max_per_uid(config));
                        return REFUSAL_PER_UID;
                }
        } else if (c->peer_key.kind == PEER_ADDRESS) {
                if (peers_count(&r->peers, &c->peer_key) >= config_max_per_address(config)) {
                        snprintf(why, size,
                                 "too many clients from this address (MaxClientsPerAddress=%u)",
                                 config_max_per_address(config));
                        return REFUSAL_PER_ADDRESS;
                }
        }
        if (peers_add(&r->peers, &c->peer_key) < 0) {
                snprintf(why, size, "out of memory");
                return REFUSAL_MAX_CLIENTS;
        }
        return REFUSAL_NONE;
}

static void remove_locked(Registry *r, Client *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                r->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        r->n_clients--;
        peers_remove(&r->peers, &c->peer_key);
        client_counters(c, &r->retired); /* its last writer has ended */
        metrics_fold(&c->metrics);           /* in the same step as leaving the list */
        if (r->n_clients == 0)
                pthread_cond_broadcast(&r->drained); /* registry_drain() */
}

/* List c and start its reader, under the lock: -errno (c unlisted again) if
 * the thread cannot start. */
static int list_and_start_locked(Registry *r, Client *c, const pthread_attr_t *attr,
                                 void *(*reader)(void *))
{
        sigset_t all, old;
        int k;

        c->next = r->clients;
        if (r->clients)
                r->clients->prev = c;
        r->clients = c;
        r->n_clients++;
        c->n_threads = 1; /* the reader; it starts the sender when needed */
        c->reader_running = true;
        r->n_readers++;
        /* Client threads never take signals (the main loop does), but for
         * the reader's wake-up signal, which it unblocks. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        k = pthread_create(&c->reader, attr, reader, client_ref(c));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (k) {
                client_unref(c); /* the reader's reference */
                c->n_threads = 0;
                c->reader_running = false;
                r->n_readers--;
                remove_locked(r, c);
                return -k;
        }
        return 0;
}

Refusal registry_add(Registry *r, Client *c, const Config *config, const pthread_attr_t *attr,
                     void *(*reader)(void *), char *why, size_t size)
{
        Refusal refused;

        pthread_mutex_lock(&r->lock);
        refused = admit_locked(r, c, config, why, size);
        if (refused == REFUSAL_NONE) {
                c->id = ++r->next_id;
                if (list_and_start_locked(r, c, attr, reader) < 0) {
                        snprintf(why, size, "server out of threads");
                        refused = REFUSAL_THREADS;
                }
        }
        pthread_mutex_unlock(&r->lock);
        return refused;
}

int registry_restore(Registry *r, Client *c, const pthread_attr_t *attr, void *(*reader)(void *))
{
        int k;

        pthread_mutex_lock(&r->lock);
        k = peers_add(&r->peers, &c->peer_key);
        if (k >= 0) {
                r->next_id = MAX(r->next_id, c->id);
                k = list_and_start_locked(r, c, attr, reader);
        }
        pthread_mutex_unlock(&r->lock);
        return k;
}

void registry_thread_started(Registry *r, Client *c)
{
        pthread_mutex_lock(&r->lock);
        c->n_threads++;
        pthread_mutex_unlock(&r->lock);
}

void registry_thread_not_started(Registry *r, Client *c)
{
        pthread_mutex_lock(&r->lock);
        c->n_threads--; /* never the last: the caller is one of its threads */
        pthread_mutex_unlock(&r->lock);
}

bool registry_thread_ended(Registry *r, Client *c)
{
        bool last;

        pthread_mutex_lock(&r->lock);
        if (c->reader_running && pthread_equal(c->reader, pthread_self())) {
                c->reader_running = false;
                if (--r->n_readers == 0)
                        pthread_cond_broadcast(&r->drained); /* registry_wait_readers() */
        }
        last = --c->n_threads == 0;
        pthread_mutex_unlock(&r->lock);
        return last;
}

void registry_remove(Registry *r, Client *c)
{
        pthread_mutex_lock(&r->lock);
        remove_locked(r, c);
        pthread_mutex_unlock(&r->lock);
}

void registry_kick(Registry *r, Client *c)
{
        pthread_mutex_lock(&r->lock);
        client_kick_locked(c);
        pthread_mutex_unlock(&r->lock);
}

void registry_counters(Registry *r, ClientCounters *ret)
{
        pthread_mutex_lock(&r->lock);
        *ret = r->retired;
        for (Client *c = r->clients; c; c = c->next)
                client_counters(c, ret);
        pthread_mutex_unlock(&r->lock);
}

int registry_foreach(Registry *r, int (*fn)(Client *c, void *userdata), void *userdata)
{
        int k = 0;

        pthread_mutex_lock(&r->lock);
        for (Client *c = r->clients; c && k >= 0; c = c->next)
                k = fn(c, userdata);
        pthread_mutex_unlock(&r->lock);
        return k;
}

unsigned registry_stop_reading(Registry *r)
{
        unsigned n;

        pthread_mutex_lock(&r->lock);
        n = r->n_clients;
        for (Client *c = r->clients; c; c = c->next)
                client_stop_reading_locked(c);
        pthread_mutex_unlock(&r->lock);
        return n;
}

static bool all_gone_locked(Registry *r)
{
        return r->n_clients == 0;
}

static bool no_reader_runs_locked(Registry *r)
{
        return r->n_readers == 0;
}

/*
 * Under the lock: wait for `done` or `until` (CLOCK_MONOTONIC µs). A kick
 * can come just before a reader blocks in read(): every `kick_usec`, kick
 * again those that have not seen the stop. Returns done().
 */
static bool wait_kicking_locked(Registry *r, bool (*done)(Registry *r), uint64_t until,
                                uint64_t kick_usec)
{
        uint64_t now;

        while (!done(r) && (now = now_usec(CLOCK_MONOTONIC)) < until) {
                struct timespec ts = usec_to_timespec(MIN(until, now + kick_usec));

                if (pthread_cond_timedwait(&r->drained, &r->lock, &ts) == ETIMEDOUT)
                        for (Client *c = r->clients; c; c = c->next)
                                if (!atomic_load(&c->stop_seen))
                                        client_kick_locked(c);
        }
        return done(r);
}

unsigned registry_drain(Registry *r, uint64_t until, uint64_t kick_usec)
{
        struct timespec ts;
        unsigned left;

        pthread_mutex_lock(&r->lock);
        (void)wait_kicking_locked(r, all_gone_locked, until, kick_usec);
        left = r->n_clients;
        if (left > 0) {
                for (Client *c = r->clients; c; c = c->next)
                        client_abort(c);
                ts = usec_to_timespec(now_usec(CLOCK_MONOTONIC) + USEC_PER_SEC);
                while (r->n_clients > 0)
                        if (pthread_cond_timedwait(&r->drained, &r->lock, &ts) == ETIMEDOUT)
                                break;
        }
        pthread_mutex_unlock(&r->lock);
        return left;
}

int registry_check(Registry *r, uint64_t now, unsigned *ret_exit_idle_sec)
{
        struct timespec deadline = usec_to_timespec(now_usec(CLOCK_REALTIME) + 2 * USEC_PER_SEC);
        unsigned n;

        if (pthread_mutex_timedlock(&r->lock, &deadline) != 0)
                return -ETIMEDOUT;
        n = r->n_clients;
        *ret_exit_idle_sec = r->config->exit_idle_sec;
        /* Dropped clients whose sender could not finish in time (it is stuck
         * writing to a peer that does not read): cut them off. */
        for (Client *c = r->clients; c; c = c->next) {
                uint64_t d = atomic_load_explicit(&c->drop_deadline, memory_order_relaxed);
                if (d != 0 && now >= d) {
                        atomic_store(&c->drop_deadline, 0);
                        client_abort(c);
                }
        }
        pthread_mutex_unlock(&r->lock);
        return (int)n;
}

size_t registry_ref_all(Registry *r, Client ***ret)
{
        Client **v = NULL;
        size_t n, cap = 0;

        /* The array is allocated outside the lock; should the list have
         * grown meanwhile, again with its new size. */
        for (;;) {
                pthread_mutex_lock(&r->lock);
                if (v && r->n_clients <= cap)
                        break;
                cap = r->n_clients + 16;
                pthread_mutex_unlock(&r->lock);
                free(v);
                v = malloc(cap * sizeof(*v));
                if (!v) {
                        *ret = NULL;
                        return 0;
                }
        }
        n = 0;
        for (Client *c = r->clients; c; c = c->next)
                v[n++] = client_ref(c);
        pthread_mutex_unlock(&r->lock);
        *ret = v;
        return n;
}

bool registry_wait_readers(Registry *r, uint64_t until, uint64_t kick_usec)
{
        bool none;

        pthread_mutex_lock(&r->lock);
        none = wait_kicking_locked(r, no_reader_runs_locked, until, kick_usec);
        pthread_mutex_unlock(&r->lock);
        return none;
}
