/*
 * server.c - the main thread: listeners, the select() accept loop, the
 * client registry and the drain at shutdown. See server.h for locking.
 *
 * select() only ever sees the listening fds and the wake-up eventfd (all
 * checked to be below FD_SETSIZE at start); client fds belong to their
 * threads and never go near it.
 */
#include <errno.h>
#include <inttypes.h>
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
#include "server.h"

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

int server_init(Server *s, Config *config, const ConfigOverrides *overrides)
{
        pthread_condattr_t ca;
        int r;

        *s = (Server){.config = config, .overrides = *overrides, .wake_fd = -1};
        s->start_usec = now_usec(CLOCK_MONOTONIC);

        s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->wake_fd < 0)
                return -errno;
        if (s->wake_fd >= FD_SETSIZE)
                return -EMFILE;

        r = pthread_mutex_init(&s->lock, NULL);
        if (!r)
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
        r = peers_init(&s->peers);
        if (r < 0)
                return r;
        /* At most 20 journal entries about failed auth in 10 s, with a count
         * of what was left out; and 50 about other refused requests. */
        s->auth_log_rl = RATELIMIT_INIT(10 * 1000000, 20);
        s->refusal_rl = RATELIMIT_INIT(10 * 1000000, 50);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        r = pthread_cond_init(&s->drained, &ca);
        pthread_condattr_destroy(&ca);
        if (r)
                return -r;

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
        unsigned left;

        /* The signal handler must never see a closed (or reused) fd. */
        signal_wake_fd = -1;
        s->wake_fd = safe_close(s->wake_fd);
        for (size_t i = 0; i < s->n_listeners; i++)
                listener_close(&s->listeners[i]);

        pthread_mutex_lock(&s->lock);
        left = s->n_clients;
        pthread_mutex_unlock(&s->lock);
        /* Threads that outlived the drain timeout may still use the rest
         * (`stats` reads the listener names): leave it to the process exit,
         * which is next, and they die with it. */
        if (left > 0)
                return;
        free(s->listeners);
        s->listeners = NULL;
        s->n_listeners = 0;
        config_unref(s->config);
        s->config = NULL;
        events_done(&s->events);
        peers_done(&s->peers);
        pthread_attr_destroy(&s->thread_attr);
        pthread_cond_destroy(&s->drained);
        pthread_mutex_destroy(&s->refusal_lock);
        pthread_mutex_destroy(&s->auth_lock);
        pthread_mutex_destroy(&s->reload_lock);
        pthread_mutex_destroy(&s->lock);
}

void server_counters(Server *s, ClientCounters *ret)
{
        pthread_mutex_lock(&s->lock);
        *ret = s->retired;
        for (Client *c = s->clients; c; c = c->next)
                client_counters(c, ret);
        pthread_mutex_unlock(&s->lock);
}

Config *server_config(Server *s)
{
        Config *c;

        pthread_mutex_lock(&s->lock);
        c = config_ref(s->config);
        pthread_mutex_unlock(&s->lock);
        return c;
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
        static RateLimit rl = RATELIMIT_INIT(10 * 1000000, 5); /* main thread only */
        Buffer b = BUFFER_INIT;
        char why[160];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        /* Counted before the client can see the refusal. */
        atomic_fetch_add_explicit(&s->stats.clients_refused, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
        if (proto_append_err(&b, "busy", "%s", why) >= 0)
                (void)send(c->fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        buffer_done(&b);
        (void)shutdown(c->fd, SHUT_WR);
        if (ratelimit_below(&rl)) {
                log_warning("Refusing a client from %s: %s%s", c->peer, why,
                            rl.suppressed ? " (similar entries were suppressed)" : "");
                rl.suppressed = 0;
        }
        client_unref(c); /* closes the fd */
}

static void registry_remove_locked(Server *s, Client *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                s->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        s->n_clients--;
        peers_remove(&s->peers, &c->peer_key);
        client_counters(c, &s->retired); /* its last writer has ended */
        pthread_cond_broadcast(&s->drained);
}

void server_client_thread_done(Server *s, Client *c)
{
        bool gone;

        pthread_mutex_lock(&s->lock);
        if (c->reader_running && pthread_equal(c->reader, pthread_self()))
                c->reader_running = false;
        gone = --c->n_threads == 0;
        pthread_mutex_unlock(&s->lock);
        if (!gone)
                return;

        /* One entry per connection, carrying every command it ran as an
         * IPCD_COMMAND= field: `journalctl -u ipcd IPCD_COMMAND=ping` finds it
         * without a journal entry per request. */
        if (atomic_load_explicit(&log_max_level, memory_order_relaxed) >= LOG_INFO) {
                char list[256] = "";
                size_t o = 0;

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
        /* Only now: the drain waits for the registry to empty, and must not
         * exit before this entry is written. */
        pthread_mutex_lock(&s->lock);
        registry_remove_locked(s, c);
        pthread_mutex_unlock(&s->lock);
}

/*
 * Admission, under the registry lock: MaxClients=, then the admin reserve
 * above it (admin peers only), then the caps per uid (Unix peers that are
 * not admin) and per address (TCP peers). NULL if admitted, else why not.
 */
static atomic_uint_fast64_t *admit_locked(Server *s, Client *c, const Config *config, char *why,
                                          size_t size)
{
        bool admin = atomic_load(&c->role) == ROLE_ADMIN;
        unsigned n;

        if (s->n_clients >= config->max_clients + (admin ? config->admin_reserve : 0)) {
                snprintf(why, size, "too many clients (MaxClients=%u%s)", config->max_clients,
                         admin && config->admin_reserve ? " and the admin reserve" : "");
                return &s->stats.refused_max_clients;
        }
        c->admin_slot = s->n_clients >= config->max_clients;
        if (c->peer_key.kind == PEER_UID && !admin) {
                n = peers_count(&s->peers, &c->peer_key);
                if (n >= config_max_per_uid(config)) {
                        snprintf(why, size, "too many clients for uid %u (MaxClientsPerUID=%u)",
                                 (unsigned)c->cred.uid, config_max_per_uid(config));
                        return &s->stats.refused_per_uid;
                }
        } else if (c->peer_key.kind == PEER_ADDRESS) {
                n = peers_count(&s->peers, &c->peer_key);
                if (n >= config_max_per_address(config)) {
                        snprintf(why, size, "too many clients from this address "
                                            "(MaxClientsPerAddress=%u)",
                                 config_max_per_address(config));
                        return &s->stats.refused_per_address;
                }
        }
        if (peers_add(&s->peers, &c->peer_key) < 0) {
                snprintf(why, size, "out of memory");
                return &s->stats.refused_max_clients;
        }
        return NULL;
}

static void server_add_client(Server *s, Listener *l, int fd, const Address *a)
{
        atomic_uint_fast64_t *refused;
        sigset_t all, old;
        Config *config;
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

        config = c->config;
        pthread_mutex_lock(&s->lock);
        refused = admit_locked(s, c, config, why, sizeof(why));
        if (!refused) {
                c->id = ++s->next_id;
                c->next = s->clients;
                if (s->clients)
                        s->clients->prev = c;
                s->clients = c;
                s->n_clients++;
                c->n_threads = 1; /* the reader; it starts the sender when needed */
                c->reader_running = true;
                /* Client threads never take signals (the main loop does),
                 * but for the reader's wake-up signal, which it unblocks. */
                sigfillset(&all);
                pthread_sigmask(SIG_SETMASK, &all, &old);
                r = pthread_create(&c->reader, &s->thread_attr, client_reader_thread,
                                   client_ref(c));
                pthread_sigmask(SIG_SETMASK, &old, NULL);
                if (r) {
                        c->n_threads = 0;
                        c->reader_running = false;
                        registry_remove_locked(s, c);
                }
        }
        pthread_mutex_unlock(&s->lock);

        if (refused) {
                refuse(s, c, refused, "%s", why);
                return;
        }
        if (r) {
                client_unref(c); /* the reader's reference */
                log_warning_errno(r, "Failed to start a reader thread, refusing a client: %m");
                refuse(s, c, &s->stats.refused_threads, "server out of threads");
                return;
        }
        atomic_fetch_add_explicit(&s->stats.clients_total, 1, memory_order_relaxed);
        log_client(LOG_INFO, c, "connected on %s from %s%s", l->name, c->peer,
                   c->admin_slot ? " (admin reserve)" : "");
        client_unref(c);
}

static void server_accept(Server *s, Listener *l, uint64_t *paused_until)
{
        static RateLimit rl = RATELIMIT_INIT(10 * 1000000, 3);

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

/* How often the drain re-kicks readers that have not noticed the stop yet. */
#define DRAIN_KICK_USEC (20 * 1000)

static int server_drain(Server *s)
{
        Config *config = server_config(s);
        struct timespec ts;
        uint64_t until, now;
        unsigned n, left;

        (void)sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        for (size_t i = 0; i < s->n_listeners; i++)
                listener_close(&s->listeners[i]);

        until = now_usec(CLOCK_MONOTONIC) + (uint64_t)config->drain_timeout_sec * USEC_PER_SEC;

        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        n = s->n_clients;
        for (Client *c = s->clients; c; c = c->next)
                client_stop_reading_locked(c);
        pthread_mutex_unlock(&s->lock);
        log_info("Stopping: answering what %u client(s) already sent", n);

        /* Each reader answers what it had received, then lingers until its
         * answers are taken. A kick can come just before a reader blocks in
         * read(): kick again those that have not seen it. */
        pthread_mutex_lock(&s->lock);
        while (s->n_clients > 0 && (now = now_usec(CLOCK_MONOTONIC)) < until) {
                ts = usec_to_timespec(MIN(until, now + DRAIN_KICK_USEC));
                if (pthread_cond_timedwait(&s->drained, &s->lock, &ts) == ETIMEDOUT)
                        for (Client *c = s->clients; c; c = c->next)
                                if (!atomic_load(&c->stop_seen))
                                        client_kick_locked(c);
        }
        left = s->n_clients;
        if (left > 0) {
                for (Client *c = s->clients; c; c = c->next)
                        client_abort(c);
                ts = usec_to_timespec(now_usec(CLOCK_MONOTONIC) + USEC_PER_SEC);
                while (s->n_clients > 0)
                        if (pthread_cond_timedwait(&s->drained, &s->lock, &ts) == ETIMEDOUT)
                                break;
        }
        pthread_mutex_unlock(&s->lock);
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
        Config *n = NULL, *old;
        int r;

        pthread_mutex_lock(&s->reload_lock);
        (void)sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "\nSTATUS=Reloading",
                         now_usec(CLOCK_MONOTONIC));
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
                (void)sd_notify(false, "READY=1\nSTATUS=Reload failed, running configuration "
                                       "kept; see the journal");
                pthread_mutex_unlock(&s->reload_lock);
                return r;
        }

        pthread_mutex_lock(&s->lock);
        old = s->config;
        s->config = n;
        atomic_fetch_add_explicit(&s->config_generation, 1, memory_order_release);
        pthread_mutex_unlock(&s->lock);
        config_unref(old);
        atomic_store(&log_max_level, n->log_level);

        log_info("Reloaded the configuration: %zu command(s), %zu token(s)", n->n_commands,
                 n->n_tokens);
        (void)sd_notify(false, "READY=1\nSTATUS=Configuration reloaded");
        pthread_mutex_unlock(&s->reload_lock);
        return 0;
}

/*
 * Once a tick: health check, watchdog ping, STATUS=, idle exit. The health
 * check takes the registry lock with a deadline: if some thread wedged it,
 * the pings stop and systemd's watchdog restarts us. Returns true when the
 * daemon should exit for being idle.
 */
static bool server_tick(Server *s, bool watchdog, uint64_t *idle_since, uint64_t *last_status)
{
        static RateLimit wedged_rl = RATELIMIT_INIT(10 * 1000000, 1);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        struct timespec deadline = usec_to_timespec(now_usec(CLOCK_REALTIME) + 2 * USEC_PER_SEC);
        unsigned n_clients, exit_idle_sec;
        uint64_t commands;

        if (pthread_mutex_timedlock(&s->lock, &deadline) != 0) {
                if (ratelimit_below(&wedged_rl))
                        log_error("The client registry lock is wedged; withholding watchdog "
                                  "pings");
                return false;
        }
        n_clients = s->n_clients;
        exit_idle_sec = s->config->exit_idle_sec;
        /* Dropped clients whose sender could not finish in time (it is
         * stuck writing to a peer that does not read): cut them off. */
        for (Client *c = s->clients; c; c = c->next) {
                uint64_t d = atomic_load_explicit(&c->drop_deadline, memory_order_relaxed);
                if (d != 0 && now >= d) {
                        atomic_store(&c->drop_deadline, 0);
                        client_abort(c);
                }
        }
        pthread_mutex_unlock(&s->lock);

        if (watchdog)
                (void)sd_notify(false, "WATCHDOG=1");

        {
                ClientCounters k;

                server_counters(s, &k);
                commands = k.commands_ok + k.commands_failed;
        }
        if (commands + n_clients * 1000003ULL != *last_status) {
                *last_status = commands + n_clients * 1000003ULL;
                (void)sd_notifyf(false, "STATUS=%u client(s), %" PRIu64 " command(s) served",
                                 n_clients, commands);
        }

        if (!s->socket_activated || exit_idle_sec == 0 || n_clients > 0) {
                *idle_since = 0;
                return false;
        }
        if (*idle_since == 0)
                *idle_since = now;
        return now - *idle_since >= (uint64_t)exit_idle_sec * 1000000;
}

int server_run(Server *s)
{
        /* No SA_RESTART: a reader's read() returns EINTR (client_kick). */
        struct sigaction sa = {.sa_handler = on_signal}, wake_sa = {.sa_handler = on_wake};
        uint64_t paused_until = 0, next_tick, tick_usec = 1000000, watchdog_usec = 0;
        uint64_t idle_since = 0, last_status = UINT64_MAX;
        bool watchdog, idle_exit = false;
        int r;

        signal_wake_fd = s->wake_fd;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
            sigaction(SIGHUP, &sa, NULL) < 0 || sigaction(CLIENT_WAKE_SIGNAL, &wake_sa, NULL) < 0)
                return log_error_errno(errno, "Failed to install signal handlers: %m");

        watchdog = sd_watchdog_enabled(false, &watchdog_usec) > 0;
        if (watchdog)
                tick_usec = MIN(tick_usec, watchdog_usec / 4);

        for (size_t i = 0; i < s->n_listeners; i++)
                log_info("Listening on %s", s->listeners[i].name);
        (void)sd_notifyf(false, "READY=1\nSTATUS=Serving on %zu socket(s)", s->n_listeners);
        next_tick = now_usec(CLOCK_MONOTONIC);

        while (!got_terminate) {
                struct timeval tv;
                uint64_t now = now_usec(CLOCK_MONOTONIC), wake;
                bool paused = now < paused_until;
                fd_set rfds;
                int maxfd = s->wake_fd;

                if (now >= next_tick) {
                        if (server_tick(s, watchdog, &idle_since, &last_status)) {
                                idle_exit = true;
                                break;
                        }
                        next_tick = now + tick_usec;
                }

                FD_ZERO(&rfds);
                FD_SET(s->wake_fd, &rfds);
                if (!paused)
                        for (size_t i = 0; i < s->n_listeners; i++) {
                                FD_SET(s->listeners[i].fd, &rfds);
                                maxfd = MAX(maxfd, s->listeners[i].fd);
                        }
                wake = paused ? MIN(paused_until, next_tick) : next_tick;
                wake = wake > now ? wake - now : 0;
                tv = usec_to_timeval(wake);

                r = select(maxfd + 1, &rfds, NULL, NULL, &tv);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "select() failed: %m");
                }
                if (r == 0)
                        continue;
                if (FD_ISSET(s->wake_fd, &rfds)) {
                        uint64_t v;
                        (void)!read(s->wake_fd, &v, sizeof(v));
                }
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
                Config *config = server_config(s);

                log_info("No clients for ExitIdleSec=%u, exiting; systemd starts ipcd again on "
                         "the next connection",
                         config->exit_idle_sec);
                config_unref(config);
        }
        else
                log_info("Received %s", got_terminate == SIGINT ? "SIGINT" : "SIGTERM");
        return server_drain(s);
}
