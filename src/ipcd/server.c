/*
 * server.c - the main thread: listeners, the select() accept loop, the
 * admission of new clients into the registry, reload, the tick (health,
 * watchdog, status, idle exit) and the drain at shutdown. See server.h for
 * what other threads may touch.
 *
 * select() only ever sees the listening fds and the wake-up eventfd (all
 * checked to be below FD_SETSIZE at start); client fds belong to their
 * threads and never go near it.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "listener.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "time-util.h"

/* Thread stacks: small, since a client costs one or two threads. Sanitizers need
 * far more stack for their bookkeeping. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CLIENT_STACK_SIZE (1024 * 1024)
#else
#define CLIENT_STACK_SIZE (64 * 1024)
#endif
/* Clients accepted per listener per loop iteration, so that one busy
 * listener cannot starve the others or the wake-up fd. */
#define ACCEPT_BURST 64
/* After EMFILE and the like, stop accepting for this long. */
#define ACCEPT_BACKOFF_USEC (100 * 1000)

/* Written by the signal handler, read by the main loop. */
static volatile sig_atomic_t got_terminate, got_reload;
static int signal_wake_fd = -1;

static void on_signal(int sig)
{
        int saved = errno;
        uint64_t one = 1;

        if (sig == SIGHUP)
                got_reload = 1;
        else
                got_terminate = sig;
        if (signal_wake_fd >= 0)
                (void)!write(signal_wake_fd, &one, sizeof(one));
        errno = saved;
}

/* Only interrupts a reader's read(); the reader looks at its flags. */
static void on_wake(int sig)
{
}

static int server_signals(Server *s)
{
        /* No SA_RESTART: a reader's read() returns EINTR (client_kick). */
        struct sigaction sa = {.sa_handler = on_signal}, wake_sa = {.sa_handler = on_wake};

        signal_wake_fd = s->wake_fd;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
            sigaction(SIGHUP, &sa, NULL) < 0 || sigaction(CLIENT_WAKE_SIGNAL, &wake_sa, NULL) < 0)
                return log_error_errno(errno, "Failed to install signal handlers: %m");
        return 0;
}

int server_init(Server *s, Config *config, const ConfigOverrides *overrides)
{
        int r;

        *s = (Server){.overrides = *overrides, .wake_fd = -1, .handover = HANDOVER_FDS_INIT};
        s->start_usec = now_usec(CLOCK_MONOTONIC);
        r = registry_init(&s->registry, config);
        if (r < 0) {
                config_unref(config);
                return r;
        }

        s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->wake_fd < 0)
                return -errno;
        if (s->wake_fd >= FD_SETSIZE)
                return -EMFILE;
        /* Before any listener exists: a SIGHUP that comes as soon as one can
         * connect must not find the default action (terminate). */
        r = server_signals(s);
        if (r < 0)
                return r;

        r = pthread_mutex_init(&s->reload_lock, NULL);
        if (!r)
                r = pthread_mutex_init(&s->auth_lock, NULL);
        if (!r)
                r = pthread_mutex_init(&s->refusal_lock, NULL);
        if (r)
                return -r;
        r = events_init(&s->events);
        if (r < 0)
                return r;
        /* At most 20 journal entries about failed auth in 10 s, with a count
         * of what was left out; and 50 about other refused requests. */
        s->auth_log_rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 20);
        s->refusal_rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 50);

        r = pthread_attr_init(&s->thread_attr);
        if (r)
                return -r;
        r = pthread_attr_setstacksize(&s->thread_attr, CLIENT_STACK_SIZE);
        if (!r)
                r = pthread_attr_setdetachstate(&s->thread_attr, PTHREAD_CREATE_DETACHED);
        return -r;
}

void server_done(Server *s)
{
        /* The signal handler must never see a closed (or reused) fd. */
        signal_wake_fd = -1;
        s->wake_fd = safe_close(s->wake_fd);
        for (size_t i = 0; i < s->n_listeners; i++)
                listener_close(&s->listeners[i]);

        /* Threads that outlived the drain timeout may still use the rest
         * (`stats` reads the listener names): leave it to the process exit,
         * which is next, and they die with it. */
        if (registry_n_clients(&s->registry) > 0)
                return;
        free(s->listeners);
        s->listeners = NULL;
        s->n_listeners = 0;
        events_done(&s->events);
        registry_done(&s->registry);
        pthread_attr_destroy(&s->thread_attr);
        pthread_mutex_destroy(&s->refusal_lock);
        pthread_mutex_destroy(&s->auth_lock);
        pthread_mutex_destroy(&s->reload_lock);
}

static int server_add_listener(Server *s, Listener *l)
{
        Listener *n = realloc(s->listeners, (s->n_listeners + 1) * sizeof(*n));

        if (!n)
                return -ENOMEM;
        s->listeners = n;
        s->listeners[s->n_listeners++] = *l;
        return 0;
}

static int open_from_systemd(Server *s, int n)
{
        char **names = NULL;
        int r = 0;

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to take sockets from systemd: %m");

        s->socket_activated = true;
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *fdname = names && names[i] ? names[i] : "unknown";
                Listener l = {.fd = -1};

                if (r < 0) {
                        close(fd); /* after a failure: close what is left */
                        continue;
                }
                r = handover_take_fd(&s->handover, fd, fdname);
                if (r != 0)
                        continue; /* a session kept across a restart */
                r = listener_from_fd(fd, &l);
                if (r < 0) {
                        log_error_errno(r,
                                        "Socket fd %d (%s) from systemd is not a listening "
                                        "AF_UNIX/AF_INET/AF_INET6 stream socket below "
                                        "FD_SETSIZE: %m",
                                        fd, fdname);
                        close(fd);
                        continue;
                }
                r = server_add_listener(s, &l);
                if (r < 0)
                        listener_close(&l);
        }
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        return r;
}

int server_open_listeners(Server *s, char **specs, size_t n_specs)
{
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char default_spec[sizeof(path) + 8];
        char *default_specs[] = {default_spec};
        int n, r;

        n = sd_listen_fds(false);
        if (n < 0)
                return log_error_errno(n, "Failed to parse $LISTEN_FDS: %m");
        if (n > 0) {
                if (n_specs > 0)
                        log_warning("Socket-activated: ignoring %zu --listen option(s)", n_specs);
                return open_from_systemd(s, n);
        }

        if (n_specs == 0) {
                char *slash;

                r = address_default_socket_path(path, sizeof(path));
                if (r < 0)
                        return log_error_errno(r, "No socket given and no default socket path "
                                                  "($RUNTIME_DIRECTORY, root's /run/ipcd, "
                                                  "$XDG_RUNTIME_DIR): %m");
                slash = strrchr(path, '/');
                if (slash && slash != path) {
                        *slash = '\0';
                        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                                return log_error_errno(errno, "Failed to create %s: %m", path);
                        *slash = '/';
                }
                snprintf(default_spec, sizeof(default_spec), "unix:%s", path);
                specs = default_specs;
                n_specs = 1;
        }

        for (size_t i = 0; i < n_specs; i++) {
                Listener l = {.fd = -1};

                r = listener_bind(specs[i], &l);
                if (r == -EINVAL)
                        return log_error_errno(r,
                                               "Invalid listen address '%s': expected "
                                               "unix:PATH or tcp:HOST:PORT",
                                               specs[i]);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen on %s: %m", specs[i]);
                r = server_add_listener(s, &l);
                if (r < 0) {
                        listener_close(&l);
                        return log_error_errno(r, "Failed to add listener: %m");
                }
        }
        return 0;
}

/* Answer `ERR busy` and close: for clients refused before they get threads. */
static void refuse(Server *s, Client *c, atomic_uint_fast64_t *counter, const char *fmt, ...)
        _printf_(4, 5);

static void refuse(Server *s, Client *c, atomic_uint_fast64_t *counter, const char *fmt, ...)
{
        static RateLimit rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 5); /* main thread only */
        Buffer b = BUFFER_INIT;
        char why[160];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        /* Counted before the client can see the refusal. */
        atomic_fetch_add_explicit(&s->stats.clients_refused, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
        if (proto_append_err(&b, "busy", "%s", why) >= 0) {
                /* never blocks; what the socket does not take goes with c */
                (void)outbox_write_or_push(&c->outbox, b.data, b.len);
                b = BUFFER_INIT;
        }
        buffer_done(&b);
        (void)shutdown(c->fd, SHUT_WR);
        if (ratelimit_below(&rl)) {
                log_warning("Refusing a client from %s: %s%s", c->peer, why,
                            rl.suppressed ? " (similar entries were suppressed)" : "");
                rl.suppressed = 0;
        }
        client_unref(c); /* closes the fd */
}

static void server_add_client(Server *s, Listener *l, int fd, const Address *a)
{
        atomic_uint_fast64_t *const counters[] = {
                [REFUSAL_MAX_CLIENTS] = &s->stats.refused_max_clients,
                [REFUSAL_PER_UID] = &s->stats.refused_per_uid,
                [REFUSAL_PER_ADDRESS] = &s->stats.refused_per_address,
                [REFUSAL_THREADS] = &s->stats.refused_threads,
        };
        Refusal refused;
        char why[128];
        Client *c = NULL;
        int r;

        r = client_new(s, fd, &a->sa, a->len, l->transport, &c);
        if (r < 0) {
                log_warning_errno(r, "Failed to set up a client on %s, dropping it: %m", l->name);
                return;
        }
        if (c->transport == TRANSPORT_UNIX && atomic_load(&c->role) != ROLE_ADMIN)
                c->peer_key = peer_key_uid(c->cred.uid);
        else if (c->transport == TRANSPORT_TCP)
                c->peer_key = peer_key_address(&a->sa);

        refused = registry_add(&s->registry, c, c->config, &s->thread_attr, client_reader_thread,
                               why, sizeof(why));
        if (refused != REFUSAL_NONE) {
                if (refused == REFUSAL_THREADS)
                        log_warning("Failed to start a reader thread, refusing a client");
                refuse(s, c, counters[refused], "%s", why);
                return;
        }
        atomic_fetch_add_explicit(&s->stats.clients_total, 1, memory_order_relaxed);
        log_client(LOG_INFO, c, "connected on %s from %s%s", l->name, c->peer,
                   c->admin_slot ? " (admin reserve)" : "");
        client_unref(c);
}

static void server_accept(Server *s, Listener *l, uint64_t *paused_until)
{
        static RateLimit rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 3);

        for (int i = 0; i < ACCEPT_BURST; i++) {
                Address a = {.len = sizeof(a.storage)};
                int fd = accept4(l->fd, &a.sa, &a.len, SOCK_CLOEXEC);

                if (fd >= 0) {
                        server_add_client(s, l, fd, &a);
                        continue;
                }
                switch (errno) {
                case EAGAIN:
#if EAGAIN != EWOULDBLOCK
                case EWOULDBLOCK:
#endif
                        return;
                case EINTR:
                case ECONNABORTED:
                case EPROTO:
                        continue;
                default:
                        /* EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending
                         * connection stays in the backlog; back off instead
                         * of spinning on a listener that stays readable. */
                        if (ratelimit_below(&rl))
                                log_warning_errno(errno,
                                                  "Failed to accept on %s, pausing accepts for "
                                                  "%d ms%s: %m",
                                                  l->name, ACCEPT_BACKOFF_USEC / 1000,
                                                  rl.suppressed ? " (repeated errors suppressed)"
                                                                : "");
                        *paused_until = now_usec(CLOCK_MONOTONIC) + ACCEPT_BACKOFF_USEC;
                        return;
                }
        }
}

/* How often the tick returns the heaps' free memory to the system. */
#define TRIM_EVERY_USEC (10 * USEC_PER_SEC)

/* How often the drain re-kicks readers that have not noticed the stop yet. */
#define DRAIN_KICK_USEC (20 * 1000)

/*
 * The drain of a restart: readers stop at a request boundary with their
 * subscriptions in place, so that what the last of them publish still
 * reaches everyone; once none runs, the outboxes close, the senders write
 * what is left, and the sessions go to systemd's fd store. Returns the
 * clients left when `until` passed.
 */
static unsigned server_hand_over(Server *s, uint64_t until)
{
        Client **held = NULL;
        size_t n;
        unsigned left = 0;

        uint64_t t0 = now_usec(CLOCK_MONOTONIC), t_readers;

        n = registry_ref_all(&s->registry, &held);
        (void)registry_stop_reading(&s->registry);
        log_info("Stopping for a restart: answering what %zu client(s) already sent, then "
                 "keeping their sessions in systemd's fd store",
                 n);
        if (!registry_wait_readers(&s->registry, until, DRAIN_KICK_USEC)) {
                log_warning("DrainTimeoutSec= passed with readers still running; their clients "
                            "are closed");
                for (size_t i = 0; i < n; i++)
                        outbox_close(&held[i]->outbox);
                left = registry_drain(&s->registry, until, DRAIN_KICK_USEC);
        } else {
                /* Nothing more can be queued. A sender with nothing left to
                 * write is not woken: it sleeps until the process ends. The
                 * others write what is left, and we wait for that, not for
                 * their threads to end. */
                t_readers = now_usec(CLOCK_MONOTONIC);
                for (size_t i = 0; i < n; i++)
                        (void)outbox_close_quietly(&held[i]->outbox);
                for (size_t i = 0; i < n; i++)
                        if (outbox_wait_drained(&held[i]->outbox, until) < 0) {
                                client_abort(held[i]); /* not kept: see handover_store() */
                                left++;
                        }
                log_info("Every reader stopped after %.1f ms, every answer owed was written "
                         "%.1f ms later",
                         (t_readers - t0) / 1000.0,
                         (now_usec(CLOCK_MONOTONIC) - t_readers) / 1000.0);
        }
        (void)handover_store(held, n);
        for (size_t i = 0; i < n; i++)
                client_unref(held[i]);
        free(held);
        return left;
}

static int server_drain(Server *s, bool restartable)
{
        Config *config = registry_config(&s->registry, NULL);
        uint64_t until;
        unsigned left;

        notify_stopping();
        for (size_t i = 0; i < s->n_listeners; i++)
                listener_close(&s->listeners[i]);

        until = now_usec(CLOCK_MONOTONIC) + (uint64_t)config->drain_timeout_sec * USEC_PER_SEC;
        if (restartable && handover_fdstore_max() > 2) {
                atomic_store(&s->handing_over, true);
                left = server_hand_over(s, until);
        } else {
                unsigned n = registry_stop_reading(&s->registry);

                log_info("Stopping: answering what %u client(s) already sent", n);
                /* Each reader answers what it had received, then lingers
                 * until its answers are taken. */
                left = registry_drain(&s->registry, until, DRAIN_KICK_USEC);
        }
        if (left > 0)
                log_warning("DrainTimeoutSec=%u passed, closed %u client(s) that did not "
                            "take their answers",
                            config->drain_timeout_sec, left);
        config_unref(config);
        log_info("Stopped");
        return 0;
}

int server_reload(Server *s, Buffer *errors)
{
        Config *n = NULL;
        int r;

        pthread_mutex_lock(&s->reload_lock);
        notify_reloading();
        r = config_load(&s->overrides, &n, errors);
        if (r < 0) {
                char *line = errors->data, *end = errors->data + errors->len, *nl;

                /* One journal entry per problem, each naming file and line. */
                while (line && line < end && (nl = memchr(line, '\n', end - line))) {
                        log_error("Configuration error, keeping the running configuration: %.*s",
                                  (int)(nl - line), line);
                        line = nl + 1;
                }
                if (r != -EINVAL)
                        log_error_errno(r, "Failed to reload the configuration: %m");
                notify_reloaded(false);
                pthread_mutex_unlock(&s->reload_lock);
                return r;
        }

        atomic_store(&log_max_level, n->log_level);
        log_info("Reloaded the configuration: %zu command(s), %zu token(s)", n->n_commands,
                 n->n_tokens);
        registry_set_config(&s->registry, n); /* n's reference goes with it */
        notify_reloaded(true);
        pthread_mutex_unlock(&s->reload_lock);
        return 0;
}

/*
 * Once a tick: health check, watchdog ping, STATUS=, idle exit. The health
 * check takes the registry lock with a deadline: if some thread wedged it,
 * the pings stop and systemd's watchdog restarts us. Returns true when the
 * daemon should exit for being idle.
 */
static bool server_tick(Server *s, bool watchdog, uint64_t *idle_since)
{
        static RateLimit wedged_rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 1);
        static RateLimit trim_rl = RATELIMIT_INIT(TRIM_EVERY_USEC, 1);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        unsigned exit_idle_sec;
        ClientCounters k;
        int n_clients;

        n_clients = registry_check(&s->registry, now, &exit_idle_sec);
        if (n_clients < 0) {
                if (ratelimit_below(&wedged_rl))
                        log_error("The client registry lock is wedged; withholding watchdog "
                                  "pings");
                return false;
        }
        if (watchdog)
                notify_watchdog();
        /* What the heaps keep free (main.c, M_TRIM_THRESHOLD) goes back to
         * the system now and then, not after every burst of frees. */
        if (ratelimit_below(&trim_rl))
                (void)malloc_trim(0);
        registry_counters(&s->registry, &k);
        notify_serving(n_clients, k.commands_ok + k.commands_failed);

        if (!s->socket_activated || exit_idle_sec == 0 || n_clients > 0) {
                *idle_since = 0;
                return false;
        }
        if (*idle_since == 0)
                *idle_since = now;
        return now - *idle_since >= (uint64_t)exit_idle_sec * USEC_PER_SEC;
}


/* select() on the wake-up fd and, unless paused, the listeners, until `until`
 * (CLOCK_MONOTONIC µs); the wake-up fd is emptied. Returns select()'s
 * result, or -errno. */
static int server_select(Server *s, bool paused, uint64_t now, uint64_t until, fd_set *rfds)
{
        uint64_t wait = until > now ? until - now : 0;
        struct timeval tv = usec_to_timeval(wait);
        int maxfd = s->wake_fd, r;

        FD_ZERO(rfds);
        FD_SET(s->wake_fd, rfds);
        if (!paused)
                for (size_t i = 0; i < s->n_listeners; i++) {
                        FD_SET(s->listeners[i].fd, rfds);
                        maxfd = MAX(maxfd, s->listeners[i].fd);
                }
        r = select(maxfd + 1, rfds, NULL, NULL, &tv);
        if (r < 0)
                return -errno;
        if (r > 0 && FD_ISSET(s->wake_fd, rfds)) {
                uint64_t v;
                (void)!read(s->wake_fd, &v, sizeof(v));
        }
        return r;
}

int server_run(Server *s)
{
        uint64_t paused_until = 0, next_tick, tick_usec = USEC_PER_SEC, watchdog_usec = 0;
        uint64_t idle_since = 0;
        bool watchdog, idle_exit = false;
        int r;

        watchdog = notify_watchdog_enabled(&watchdog_usec);
        if (watchdog)
                tick_usec = MIN(tick_usec, watchdog_usec / 4);

        /* The sessions of the previous process, back before anyone new. */
        (void)handover_restore(s, &s->handover);
        for (size_t i = 0; i < s->n_listeners; i++)
                log_info("Listening on %s", s->listeners[i].name);
        notify_ready(s->n_listeners);
        next_tick = now_usec(CLOCK_MONOTONIC);

        while (!got_terminate) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                bool paused = now < paused_until;
                fd_set rfds;

                if (now >= next_tick) {
                        if (server_tick(s, watchdog, &idle_since)) {
                                idle_exit = true;
                                break;
                        }
                        next_tick = now + tick_usec;
                }

                r = server_select(s, paused, now, paused ? MIN(paused_until, next_tick) : next_tick,
                                  &rfds);
                if (r == -EINTR || r == 0)
                        continue;
                if (r < 0)
                        return log_error_errno(r, "select() failed: %m");
                if (got_terminate)
                        break;
                if (got_reload) {
                        Buffer errors = BUFFER_INIT;

                        got_reload = 0;
                        (void)server_reload(s, &errors);
                        buffer_done(&errors);
                }
                if (paused)
                        continue;
                for (size_t i = 0; i < s->n_listeners; i++)
                        if (FD_ISSET(s->listeners[i].fd, &rfds))
                                server_accept(s, &s->listeners[i], &paused_until);
        }

        if (idle_exit) {
                Config *config = registry_config(&s->registry, NULL);

                log_info("No clients for ExitIdleSec=%u, exiting; systemd starts ipcd again on "
                         "the next connection",
                         config->exit_idle_sec);
                config_unref(config);
        }
        else
                log_info("Received %s", got_terminate == SIGINT ? "SIGINT" : "SIGTERM");
        return server_drain(s, !idle_exit);
}
