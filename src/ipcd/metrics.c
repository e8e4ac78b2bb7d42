/*
 * metrics.c - per-command counts and latency histograms, and the `metrics`
 * exposition; see metrics.h.
 *
 * Threads and locks: metrics_slot() runs on any reader thread
 * (command_dispatch()); metrics_record() on a client's reader, into that
 * client's own entries (struct MetricsEntry: one writer, so a count is a
 * plain load and store, and no request touches a cache line that another
 * client's requests touch too); metrics_fold() under the registry lock when
 * a client is removed; metrics_format() on the reader of the client that
 * asked, which adds up the table and every listed client's entries in one
 * hold of the registry lock, so that a client leaving meanwhile is counted
 * exactly once and no counter ever goes back. Its own lock, metrics_lock,
 * is a leaf: it guards the creation of slots and nothing is taken inside it.
 *
 * The per-command table is global (one daemon per process). A slot's name
 * is written once, under `metrics_lock`, before n_table publishes it
 * (release); after that the slot's counters are atomics (folds, and the
 * overflow of a client that used more than CLIENT_METRICS_SLOTS commands).
 * A request's duration runs from the end of the one before it in the same
 * read batch (or the batch's start) to its end: one clock read per request.
 * The built-ins that answer at once (ping, echo, hello, publish) are not
 * timed one by one: the time from the last timed point to the next (a
 * timed request, a flush, the batch's end) is split evenly among them
 * (commands_settle_timing()), one clock read for a whole pipelined batch.
 * The names
 * are those of the built-in and configured commands, never what a
 * client typed: an unknown name counts as "unknown", so a client cannot
 * grow the table (and a scraper's series) at will. A command removed by a
 * reload keeps its series: counters never go back.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "time-util.h"
#include "metrics.h"

/* Upper bounds in seconds; the last bucket is +Inf. */
static const double bucket_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                   0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                   5,      10,      30,     60,    300};
#define N_BUCKETS (ELEMENTSOF(bucket_le) + 1)
#define MAX_NAMES 512

typedef struct CommandMetrics {
        char name[64]; /* immutable once published */
        atomic_uint_fast64_t ok, failed;
        atomic_uint_fast64_t bucket[N_BUCKETS]; /* not cumulative here */
        atomic_uint_fast64_t sum_usec;
} CommandMetrics;

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER; /* creates slots */
static CommandMetrics table[MAX_NAMES];
static atomic_size_t n_table;

int metrics_slot(const char *name)
{
        size_t n = atomic_load_explicit(&n_table, memory_order_acquire);
        int slot = -1;

        if (!name || strlen(name) >= sizeof(table[0].name))
                name = "unknown";
        for (size_t i = 0; i < n; i++)
                if (strcmp(table[i].name, name) == 0)
                        return (int)i;
        pthread_mutex_lock(&metrics_lock);
        n = atomic_load_explicit(&n_table, memory_order_relaxed);
        for (size_t i = 0; i < n && slot < 0; i++)
                if (strcmp(table[i].name, name) == 0)
                        slot = (int)i;
        if (slot < 0 && n < MAX_NAMES) {
                snprintf(table[n].name, sizeof(table[n].name), "%s", name);
                slot = (int)n;
                atomic_store_explicit(&n_table, n + 1, memory_order_release);
        }
        pthread_mutex_unlock(&metrics_lock);
        return slot;
}

static size_t bucket_of(uint64_t usec)
{
        size_t b = 0;

        while (b < ELEMENTSOF(bucket_le) && (double)usec > bucket_le[b] * 1e6)
                b++;
        return b;
}

/* n_ok + n_failed runs that took `usec` each, into the server-wide table:
 * lock-free, but a shared cache line (folds, and the overflow of a client
 * that used more than CLIENT_METRICS_SLOTS commands). */
static void table_add(int slot, unsigned n_ok, unsigned n_failed, uint64_t usec)
{
        CommandMetrics *t = &table[slot];

        atomic_fetch_add_explicit(&t->ok, n_ok, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->failed, n_failed, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->bucket[bucket_of(usec)], n_ok + n_failed,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&t->sum_usec, usec * (n_ok + n_failed), memory_order_relaxed);
}

/* One client's counters of one command: one writer (the client's reader),
 * so a count is a load and a store, not a locked add. */
struct MetricsEntry {
        int slot;
        atomic_uint_fast64_t ok, failed;
        atomic_uint_fast64_t bucket[N_BUCKETS];
        atomic_uint_fast64_t sum_usec;
};

static void bump(atomic_uint_fast64_t *v, uint64_t by)
{
        atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + by,
                              memory_order_relaxed);
}

void metrics_record_n(ClientMetrics *m, int slot, unsigned n_ok, unsigned n_failed, uint64_t usec)
{
        unsigned n = atomic_load_explicit(&m->n, memory_order_relaxed);
        struct MetricsEntry *e = NULL;

        if (slot < 0 || n_ok + n_failed == 0)
                return;
        for (unsigned i = 0; i < n && !e; i++)
                if (m->e[i]->slot == slot)
                        e = m->e[i];
        if (!e) {
                if (n == CLIENT_METRICS_SLOTS || !(e = calloc(1, sizeof(*e)))) {
                        table_add(slot, n_ok, n_failed, usec);
                        return;
                }
                e->slot = slot;
                m->e[n] = e;
                atomic_store_explicit(&m->n, n + 1, memory_order_release);
        }
        if (n_ok)
                bump(&e->ok, n_ok);
        if (n_failed)
                bump(&e->failed, n_failed);
        bump(&e->bucket[bucket_of(usec)], n_ok + n_failed);
        bump(&e->sum_usec, usec * (n_ok + n_failed));
}

void metrics_record(ClientMetrics *m, int slot, bool ok, uint64_t usec)
{
        metrics_record_n(m, slot, ok, !ok, usec);
}

void metrics_fold(ClientMetrics *m)
{
        unsigned n = atomic_load_explicit(&m->n, memory_order_acquire);

        for (unsigned i = 0; i < n; i++) {
                const struct MetricsEntry *e = m->e[i];
                CommandMetrics *t = &table[e->slot];

#define FOLD(f) atomic_fetch_add_explicit(&t->f, atomic_load_explicit(&e->f, memory_order_relaxed), \
                                          memory_order_relaxed)
                FOLD(ok);
                FOLD(failed);
                FOLD(sum_usec);
                for (size_t k = 0; k < N_BUCKETS; k++)
                        FOLD(bucket[k]);
#undef FOLD
        }
}

void metrics_free(ClientMetrics *m)
{
        unsigned n = atomic_load_explicit(&m->n, memory_order_acquire);

        for (unsigned i = 0; i < n; i++)
                free(m->e[i]);
        atomic_store_explicit(&m->n, 0, memory_order_relaxed);
}

static int family(Buffer *b, const char *name, const char *type, const char *help)
{
        return buffer_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int counter(Buffer *b, const char *name, const char *help, uint64_t v)
{
        int r = family(b, name, "counter", help);
        return r < 0 ? r : buffer_printf(b, "%s %" PRIu64 "\n", name, v);
}

/* Clients by transport and role, under the registry lock (registry_foreach). */
static int count_client(Client *c, void *userdata)
{
        unsigned(*by)[3] = userdata;
        Role role = atomic_load(&c->role);

        by[c->transport == TRANSPORT_TCP][role <= ROLE_ADMIN ? role : ROLE_ADMIN]++;
        return 0;
}

/* One slot's counters, each read once. */
typedef struct CommandSnapshot {
        char name[64];
        uint64_t ok, failed, bucket[N_BUCKETS], sum_usec;
} CommandSnapshot;

static CommandSnapshot *metrics_snapshot(size_t *ret_n)
{
        size_t n = atomic_load_explicit(&n_table, memory_order_acquire);
        CommandSnapshot *copy = calloc(n ? n : 1, sizeof(*copy));

        if (!copy)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                memcpy(copy[i].name, table[i].name, sizeof(copy[i].name));
                copy[i].ok = atomic_load_explicit(&table[i].ok, memory_order_relaxed);
                copy[i].failed = atomic_load_explicit(&table[i].failed, memory_order_relaxed);
                copy[i].sum_usec = atomic_load_explicit(&table[i].sum_usec, memory_order_relaxed);
                for (size_t k = 0; k < N_BUCKETS; k++)
                        copy[i].bucket[k] =
                            atomic_load_explicit(&table[i].bucket[k], memory_order_relaxed);
        }
        *ret_n = n;
        return copy;
}

/* The server-wide part: uptime, clients, and the counters of `stats`. */
static int format_server(Server *s, Buffer *b)
{
        static const char *const transports[] = {"unix", "tcp"};
        static const char *const roles[] = {"guest", "user", "admin"};
        unsigned by[2][3] = {{0}};
        Stats *st = &s->stats;
        ClientCounters cnt;
        unsigned max_clients;
        Config *config;
        int r;

        registry_counters(&s->registry, &cnt);
        (void)registry_foreach(&s->registry, count_client, by);
        config = registry_config(&s->registry, NULL);
        max_clients = config->max_clients;
        config_unref(config);

#define LOAD(x) ((uint64_t)atomic_load_explicit(&st->x, memory_order_relaxed))
        r = family(b, "ipcd_uptime_seconds", "gauge", "Seconds since ipcd started.");
        if (r >= 0)
                r = buffer_printf(b, "ipcd_uptime_seconds %" PRIu64 "\n",
                                  (now_usec(CLOCK_MONOTONIC) - s->start_usec) / USEC_PER_SEC);
        if (r >= 0)
                r = family(b, "ipcd_clients", "gauge", "Clients connected now, by transport and role.");
        for (size_t t = 0; r >= 0 && t < 2; t++)
                for (size_t k = 0; r >= 0 && k < 3; k++)
                        r = buffer_printf(b, "ipcd_clients{transport=\"%s\",role=\"%s\"} %u\n",
                                          transports[t], roles[k], by[t][k]);
        if (r >= 0)
                r = family(b, "ipcd_max_clients", "gauge", "MaxClients=: clients beyond are refused.");
        if (r >= 0)
                r = buffer_printf(b, "ipcd_max_clients %u\n", max_clients);
        if (r >= 0)
                r = counter(b, "ipcd_connections_total", "Clients accepted since start.",
                            LOAD(clients_total));
        if (r >= 0)
                r = counter(b, "ipcd_connections_refused_total",
                            "Clients refused since start (MaxClients=).", LOAD(clients_refused));
        if (r >= 0)
                r = family(b, "ipcd_requests_total", "counter",
                           "Requests answered, by result (failed: any ERR, bad requests too).");
        if (r >= 0)
                r = buffer_printf(b,
                                  "ipcd_requests_total{result=\"ok\"} %" PRIu64 "\n"
                                  "ipcd_requests_total{result=\"failed\"} %" PRIu64 "\n",
                                  cnt.commands_ok, cnt.commands_failed);
        if (r >= 0)
                r = counter(b, "ipcd_received_bytes_total", "Bytes received from clients.",
                            cnt.bytes_in);
        if (r >= 0)
                r = counter(b, "ipcd_sent_bytes_total", "Bytes sent to clients.", cnt.bytes_out);
        if (r >= 0)
                r = counter(b, "ipcd_events_published_total", "Events published.",
                            LOAD(events_published));
        if (r >= 0)
                r = counter(b, "ipcd_events_delivered_total", "Events queued for subscribers.",
                            LOAD(events_delivered));
        if (r >= 0)
                r = counter(b, "ipcd_events_dropped_total", "Events dropped (slow consumers).",
                            LOAD(events_dropped));
        if (r >= 0)
                r = counter(b, "ipcd_slow_consumer_disconnects_total",
                            "Subscribers disconnected for falling QueueLimitBytes behind.",
                            LOAD(slow_consumer_disconnects));
#undef LOAD
        return r;
}

/* Per command: runs by result, and the latency histogram. */
static int format_commands(const CommandSnapshot *copy, size_t n, Buffer *b)
{
        int r;

        r = family(b, "ipcd_command_runs_total", "counter",
                   "Commands run (built-in and configured), by command and result.");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = buffer_printf(b,
                                  "ipcd_command_runs_total{command=\"%s\",result=\"ok\"} %" PRIu64
                                  "\n"
                                  "ipcd_command_runs_total{command=\"%s\",result=\"failed\"} "
                                  "%" PRIu64 "\n",
                                  copy[i].name, copy[i].ok, copy[i].name, copy[i].failed);
        if (r >= 0)
                r = family(b, "ipcd_command_duration_seconds", "histogram",
                           "Time from a command's request to its final frame, by command.");
        for (size_t i = 0; r >= 0 && i < n; i++) {
                uint64_t cum = 0;

                for (size_t k = 0; r >= 0 && k < N_BUCKETS; k++) {
                        cum += copy[i].bucket[k];
                        if (k < ELEMENTSOF(bucket_le))
                                r = buffer_printf(b,
                                                  "ipcd_command_duration_seconds_bucket{command="
                                                  "\"%s\",le=\"%g\"} %" PRIu64 "\n",
                                                  copy[i].name, bucket_le[k], cum);
                        else
                                r = buffer_printf(b,
                                                  "ipcd_command_duration_seconds_bucket{command="
                                                  "\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                                                  copy[i].name, cum);
                }
                if (r >= 0)
                        r = buffer_printf(b,
                                          "ipcd_command_duration_seconds_sum{command=\"%s\"} "
                                          "%.6f\n"
                                          "ipcd_command_duration_seconds_count{command=\"%s\"} "
                                          "%" PRIu64 "\n",
                                          copy[i].name, (double)copy[i].sum_usec / 1e6,
                                          copy[i].name, cum);
        }
        return r;
}

/* metrics_format()'s walk over the clients, under the registry lock. */
typedef struct Totals {
        CommandSnapshot *copy;
        size_t n;
        bool taken; /* the table was copied */
} Totals;

static int add_client(Client *c, void *userdata)
{
        Totals *t = userdata;
        unsigned n;

        /* The table in the same hold of the lock as the clients: a client
         * removed meanwhile is counted once, in one or the other. */
        if (!t->taken) {
                t->taken = true;
                t->copy = metrics_snapshot(&t->n);
                if (!t->copy)
                        return -ENOMEM;
        }
        n = atomic_load_explicit(&c->metrics.n, memory_order_acquire);
        for (unsigned i = 0; i < n; i++) {
                const struct MetricsEntry *e = c->metrics.e[i];
                CommandSnapshot *d;

                if ((size_t)e->slot >= t->n)
                        continue; /* made after the snapshot: counted next time */
                d = &t->copy[e->slot];
                d->ok += atomic_load_explicit(&e->ok, memory_order_relaxed);
                d->failed += atomic_load_explicit(&e->failed, memory_order_relaxed);
                d->sum_usec += atomic_load_explicit(&e->sum_usec, memory_order_relaxed);
                for (size_t k = 0; k < N_BUCKETS; k++)
                        d->bucket[k] += atomic_load_explicit(&e->bucket[k], memory_order_relaxed);
        }
        return 0;
}

int metrics_format(Server *s, Buffer *b)
{
        Totals t = {};
        int r;

        r = format_server(s, b);
        if (r >= 0) {
                (void)registry_foreach(&s->registry, add_client, &t);
                if (!t.taken) /* no client listed (not even the one asking) */
                        t.copy = metrics_snapshot(&t.n);
                if (!t.copy)
                        return -ENOMEM;
                r = format_commands(t.copy, t.n, b);
                free(t.copy);
        }
        return r < 0 ? -ENOMEM : 0;
}
