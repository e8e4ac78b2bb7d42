/*
 * client.c - a connected client: its identity, references, configuration,
 * the flush of its reader's batches into the outbox, and its sender thread
 * (outbox_send_all). The reader thread is in reader.c. See client.h for
 * ownership and locking.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

const char *transport_to_string(Transport t)
{
        return t == TRANSPORT_UNIX ? "unix" : "tcp";
}

static int peer_groups(int fd, gid_t **ret, size_t *n);

int client_new(Server *s, int fd, const struct sockaddr *sa, socklen_t salen, Transport transport,
               Client **ret)
{
        _cleanup_(client_unrefp) Client *c = NULL;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c || outbox_init(&c->outbox, fd, 0) < 0) {
                free(c);
                close(fd);
                return -ENOMEM;
        }
        c->server = s;
        c->fd = fd;
        atomic_init(&c->n_ref, 1);
        c->since_usec = now_usec(CLOCK_REALTIME);
        c->config = registry_config(&s->registry, &c->config_generation);
        outbox_set_limit(&c->outbox, c->config->queue_limit_bytes);
        outbox_set_send_timeout(&c->outbox, c->config->client_send_timeout_sec);

        /* The listener's kind decides, not the peer address family. */
        c->transport = transport;
        if (transport == TRANSPORT_UNIX) {
                socklen_t len = sizeof(c->cred);

                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0)
                        return -errno;
                snprintf(c->peer, sizeof(c->peer), "pid=%d uid=%u gid=%u", (int)c->cred.pid,
                         (unsigned)c->cred.uid, (unsigned)c->cred.gid);
                r = peer_groups(fd, &c->groups, &c->n_groups);
                if (r < 0)
                        return r;
                atomic_init(&c->role, client_identity_role(c, c->config));
        } else {
                c->cred = (struct ucred){.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
                if (address_peer_to_string(sa, salen, c->peer, sizeof(c->peer)) < 0)
                        snprintf(c->peer, sizeof(c->peer), "unknown");
                atomic_init(&c->role, ROLE_GUEST);
        }

        *ret = TAKE_PTR(c);
        return 0;
}

Client *client_ref(Client *c)
{
        atomic_fetch_add_explicit(&c->n_ref, 1, memory_order_relaxed);
        return c;
}

void client_unref(Client *c)
{
        if (!c)
                return;
        if (atomic_fetch_sub_explicit(&c->n_ref, 1, memory_order_acq_rel) != 1)
                return;
        safe_close(c->fd);
        outbox_done(&c->outbox);
        buffer_done(&c->in);
        buffer_done(&c->out);
        buffer_done(&c->scratch);
        proto_request_done(&c->req);
        config_unref(c->config);
        free(c->groups);
        for (unsigned i = 0; i < c->n_commands_used; i++)
                free(c->commands_used[i]);
        metrics_free(&c->metrics);
        free(c->subs); /* empty: events_client_gone() ran */
        free(c->fanout); /* empty: the reader delivered before it ended */
        free(c);
}

void client_counters(Client *c, ClientCounters *add)
{
        add->commands_ok += atomic_load_explicit(&c->n_ok, memory_order_relaxed);
        add->commands_failed += atomic_load_explicit(&c->n_failed, memory_order_relaxed);
        add->bytes_in += atomic_load_explicit(&c->n_bytes_in, memory_order_relaxed);
        add->bytes_out += outbox_bytes_out(&c->outbox);
}

bool client_in_groups(const Client *c, const gid_t *gids, size_t n)
{
        if (c->transport != TRANSPORT_UNIX)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (gids[i] == c->cred.gid)
                        return true;
                for (size_t j = 0; j < c->n_groups; j++)
                        if (gids[i] == c->groups[j])
                                return true;
        }
        return false;
}

Role client_identity_role(const Client *c, const Config *config)
{
        if (c->transport != TRANSPORT_UNIX)
                return ROLE_GUEST;
        if (c->cred.uid == 0 || client_in_groups(c, config->admin_gids, config->n_admin_gids))
                return ROLE_ADMIN;
        return ROLE_USER;
}

void client_refresh_config(Client *c)
{
        Registry *reg = &c->server->registry;
        Config *old;
        Role role;

        if (_likely_(!registry_config_changed(reg, c->config_generation)))
                return;

        old = c->config;
        c->config = registry_config(reg, &c->config_generation);
        config_unref(old);

        /* New limits and AdminGroups= apply from the next request on; a role
         * won with auth stays for the life of the connection. */
        outbox_set_limit(&c->outbox, c->config->queue_limit_bytes);
        role = client_identity_role(c, c->config);
        atomic_store(&c->role, MAX(role, c->auth_role));
        outbox_set_send_timeout(&c->outbox, c->config->client_send_timeout_sec);
}

/* The peer's supplementary groups, as the kernel recorded them at connect(). */
static int peer_groups(int fd, gid_t **ret, size_t *n)
{
        socklen_t len = 16 * sizeof(gid_t);
        gid_t *g = NULL;

        for (;;) {
                gid_t *ng = realloc(g, len ? len : sizeof(gid_t));
                if (!ng) {
                        free(g);
                        return -ENOMEM;
                }
                g = ng;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0)
                        break;
                if (errno != ERANGE) {
                        free(g);
                        return -errno;
                }
        }
        *ret = g;
        *n = len / sizeof(gid_t);
        return 0;
}

void client_kick_locked(Client *c)
{
        if (c->reader_running)
                (void)pthread_kill(c->reader, CLIENT_WAKE_SIGNAL);
}

void client_kick(Client *c)
{
        registry_kick(&c->server->registry, c);
}

void client_stop_reading_locked(Client *c)
{
        atomic_store(&c->stop_requested, true);
        client_kick_locked(c);
}

int client_drop_queue(Client *c, const char *code, const char *message)
{
        Buffer b = BUFFER_INIT;

        if (proto_append_frame(&b, PROTO_FRAME_ERR, code, message, strlen(message)) < 0) {
                buffer_done(&b);
                outbox_kill(&c->outbox);
        } else if (outbox_drop_and_close(&c->outbox, b.data, b.len) < 0) /* b.data taken over */
                return -EPIPE;
        atomic_store(&c->dropped, true);
        atomic_store(&c->drop_deadline, now_usec(CLOCK_MONOTONIC) + CLIENT_DROP_GRACE_USEC);
        return 0;
}

void client_abort(Client *c)
{
        outbox_kill(&c->outbox);
        (void)shutdown(c->fd, SHUT_RDWR);
}

void client_log_refusal(Client *c, const char *command, const char *result, const char *fmt, ...)
{
        Server *s = c->server;
        char msg[512];
        va_list ap;
        bool ok = false;

        if (c->n_refusals_logged < CLIENT_REFUSALS_LOGGED &&
            atomic_load_explicit(&log_max_level, memory_order_relaxed) >= LOG_NOTICE) {
                pthread_mutex_lock(&s->refusal_lock);
                ok = ratelimit_below(&s->refusal_rl);
                pthread_mutex_unlock(&s->refusal_lock);
        }
        if (!ok) {
                c->n_refusals_suppressed++;
                atomic_fetch_add_explicit(&s->stats.refusals_not_logged, 1, memory_order_relaxed);
                return;
        }
        c->n_refusals_logged++;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_full(LOG_NOTICE, 0, c, command ? &command : NULL, command ? 1 : 0, result, UINT64_MAX,
                 "%s%s", msg,
                 c->n_refusals_logged == CLIENT_REFUSALS_LOGGED
                     ? " (further refusals on this connection are only counted)"
                     : "");
}

/* A write failed for good: say why if it is worth saying, and break the connection. */
static void write_failed(Client *c, int error)
{
        if (error == EAGAIN || error == EWOULDBLOCK) {
                atomic_fetch_add_explicit(&c->server->stats.send_timeouts, 1,
                                          memory_order_relaxed);
                log_client(LOG_NOTICE, c,
                           "its socket took no data for ClientSendTimeoutSec=%u, closing "
                           "connection",
                           outbox_send_timeout(&c->outbox));
        } else if (error != EPIPE && error != ECONNRESET)
                log_client(LOG_DEBUG, c, "write failed: %s", strerror(error));
        client_abort(c); /* wakes the reader, drops what is queued */
}

/*
 * Reader thread, when no sender thread can be started (out of threads):
 * write what waits in the outbox itself, blocking for at most
 * ClientSendTimeoutSec= per write. Nothing already answered is lost.
 */
int client_send_now(Client *c)
{
        int r = outbox_send_now(&c->outbox);

        if (r < 0) {
                write_failed(c, -r);
                return -EPIPE;
        }
        return 0;
}

/* Hand the batch built in c->out to the sender: one push, one wake-up. */
int client_flush(Client *c)
{
        char *data;
        size_t len;
        ssize_t n;

        if (c->n_fanout > 0)
                events_deliver(c); /* the events of this batch, one write per subscriber */
        if (c->out.len == 0)
                return 0;
        data = c->out.data;
        len = c->out.len;
        c->out = BUFFER_INIT;
        n = outbox_write_or_push(&c->outbox, data, len);
        if (n >= 0 && (size_t)n < len && client_start_sender(c) < 0 && client_send_now(c) < 0)
                return -EPIPE; /* what is left has to wait: the sender, or we, write it */
        if (n < 0 && n != -EPIPE) {
                if (n != -ECONNRESET)
                        log_client(LOG_DEBUG, c, "write failed: %s", strerror((int)-n));
                client_abort(c);
                return -EPIPE;
        }
        return n < 0 ? (int)n : 0;
}

int client_start_sender(Client *c)
{
        Server *s = c->server;
        sigset_t all, old;
        pthread_t t;
        int r;

        if (c->sender_started)
                return 0;
        /* the reader still runs: the client stays registered */
        registry_thread_started(&s->registry, c);

        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&t, &s->thread_attr, client_sender_thread, client_ref(c));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r) {
                client_unref(c);
                registry_thread_not_started(&s->registry, c);
                log_client(LOG_WARNING, c,
                           "cannot start a sender thread (%s); the reader writes itself",
                           strerror(r));
                return -r;
        }
        c->sender_started = true;
        return 0;
}

/*
 * The end of one of c's threads; after the last, one journal entry per
 * connection, carrying every command it ran as an IPCD_COMMAND= field
 * (`journalctl -u ipcd IPCD_COMMAND=ping` finds it without an entry per
 * request), and only then out of the registry: the drain waits for the
 * registry to empty, and must not exit before this entry is written.
 */
void client_thread_done(Client *c)
{
        Registry *reg = &c->server->registry;
        char list[256] = "";
        size_t o = 0;

        if (!registry_thread_ended(reg, c))
                return;
        if (atomic_load(&c->handed_over))
                log_client(LOG_DEBUG, c, "kept for the next process");
        else if (atomic_load_explicit(&log_max_level, memory_order_relaxed) >= LOG_INFO) {
                for (unsigned i = 0; i < c->n_commands_used && o < sizeof(list); i++)
                        o += snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : " (",
                                      c->commands_used[i]);
                if (o > 0 && o < sizeof(list) - 1)
                        strcat(list, ")");
                if (c->n_refusals_suppressed > 0)
                        snprintf(list + strlen(list), sizeof(list) - strlen(list),
                                 "; %" PRIu64 " more refused request(s) not logged",
                                 c->n_refusals_suppressed);
                log_full(LOG_INFO, 0, c, (const char *const *)c->commands_used, c->n_commands_used,
                         NULL, UINT64_MAX, "disconnected after %" PRIu64 " command(s)%s",
                         (uint64_t)atomic_load(&c->n_commands), list);
        }
        registry_remove(reg, c);
}

void *client_sender_thread(void *userdata)
{
        Client *c = userdata;
        int r;

        (void)pthread_setname_np(pthread_self(), "ipcd-sender");
        r = outbox_send_all(&c->outbox);
        if (r < 0)
                write_failed(c, -r);
        else if (atomic_load(&c->handed_over))
                ; /* the socket goes on in the next process */
        else if (!outbox_is_dead(&c->outbox))
                (void)shutdown(c->fd, SHUT_WR); /* everything answered: EOF */
        else
                (void)shutdown(c->fd, SHUT_RDWR);

        client_thread_done(c);
        client_unref(c);
        return NULL;
}
