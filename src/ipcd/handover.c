/*
 * handover.c - client sessions across a restart; see handover.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "events.h"
#include "handover.h"
#include "log.h"
#include "registry.h"
#include "server.h"
#include "time-util.h"

/* How long the exit waits for systemd to have taken every fd. */
#define HANDOVER_BARRIER_USEC (5 * USEC_PER_SEC)

unsigned handover_fdstore_max(void)
{
        const char *e = getenv("FDSTORE");
        unsigned long v;
        char *end;

        if (!e || !getenv("NOTIFY_SOCKET"))
                return 0;
        errno = 0;
        v = strtoul(e, &end, 10);
        if (errno || end == e || *end || v > 1000000)
                return 0;
        return (unsigned)v;
}

static int add_client_fd(HandoverFds *h, int fd)
{
        struct stat st;
        void *v;

        if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
                log_warning("Closing fd %d from systemd's store: not a socket", fd);
                close(fd);
                return 0;
        }
        v = realloc(h->clients, (h->n_clients + 1) * sizeof(*h->clients));
        if (!v) {
                close(fd);
                return -ENOMEM;
        }
        h->clients = v;
        h->clients[h->n_clients].ino = (uint64_t)st.st_ino;
        h->clients[h->n_clients++].fd = fd;
        return 0;
}

/* The client sockets queued in one end of the carrier (see store_carrier());
 * the other end has none. Closes it. */
static int take_carrier(HandoverFds *h, int carrier)
{
        int r = 0;

        for (;;) {
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(HANDOVER_FDS_PER_MESSAGE * sizeof(int))];
                } control;
                char byte;
                struct iovec iov = {.iov_base = &byte, .iov_len = 1};
                struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
                                   .msg_control = &control, .msg_controllen = sizeof(control)};
                ssize_t k = recvmsg(carrier, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        /* Not fatal: the sessions read so far are restored,
                         * the rest are lost, the daemon starts. */
                        if (k < 0 && errno != EAGAIN)
                                log_error_errno(-errno, "Failed to read the stored client "
                                                        "sockets, the rest are closed: %m");
                        break;
                }
                if (m.msg_flags & MSG_CTRUNC)
                        log_error("Some stored client sockets did not fit in a message; they are "
                                  "lost");
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
                        size_t n;
                        int *fds;

                        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                                continue;
                        n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        fds = (int *)CMSG_DATA(cm);
                        for (size_t i = 0; i < n; i++) {
                                int fd;

                                memcpy(&fd, fds + i, sizeof(fd));
                                if (r < 0)
                                        close(fd);
                                else
                                        r = add_client_fd(h, fd);
                        }
                }
        }
        close(carrier);
        return r;
}

int handover_take_fd(HandoverFds *h, int fd, const char *name)
{
        int r;

        if (strcmp(name, HANDOVER_STATE_NAME) == 0) {
                if (h->state_fd >= 0)
                        close(h->state_fd); /* only one: the later one wins */
                h->state_fd = fd;
                return 1;
        }
        if (strcmp(name, HANDOVER_CARRIER_NAME) == 0)
                r = take_carrier(h, fd);
        else if (strcmp(name, HANDOVER_CLIENT_NAME) == 0)
                r = add_client_fd(h, fd); /* as stored by version 1 */
        else
                return 0;
        return r < 0 ? r : 1;
}

/* ------------------------------------------------------------------ store */

static int append_hex(Buffer *b, const char *data, size_t len)
{
        static const char hex[] = "0123456789abcdef";
        int r = 0;

        if (len == 0)
                return buffer_append(b, "-", 1);
        for (size_t i = 0; i < len && r >= 0; i++) {
                char two[2] = {hex[(unsigned char)data[i] >> 4], hex[data[i] & 15]};
                r = buffer_append(b, two, 2);
        }
        return r;
}

/* "client ID INO TRANSPORT AUTH_ROLE COMMANDS OK FAILED IN OUT SINCE TOPICS PARTIAL" */
static int append_client(Buffer *b, Client *c)
{
        struct stat st;
        size_t mark;
        int r;

        if (fstat(c->fd, &st) < 0)
                return -errno;
        r = buffer_printf(b, "client %" PRIu64 " %" PRIu64 " %s %s %" PRIu64 " %" PRIu64
                             " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " ",
                          c->id, (uint64_t)st.st_ino, transport_to_string(c->transport),
                          role_to_string(c->auth_role),
                          (uint64_t)atomic_load(&c->n_commands), (uint64_t)atomic_load(&c->n_ok),
                          (uint64_t)atomic_load(&c->n_failed),
                          (uint64_t)atomic_load(&c->n_bytes_in), outbox_bytes_out(&c->outbox),
                          c->since_usec);
        mark = b->len;
        if (r >= 0)
                r = events_append_topics(c, b);
        if (r >= 0 && b->len == mark)
                r = buffer_append(b, "-", 1);
        if (r >= 0)
                r = buffer_append(b, " ", 1);
        if (r >= 0)
                r = append_hex(b, c->in.data, c->in.len);
        if (r >= 0)
                r = buffer_append(b, "\n", 1);
        return r;
}

static int state_memfd(const Buffer *b)
{
        _cleanup_close_ int fd = -1;
        size_t off = 0;

        fd = memfd_create(HANDOVER_STATE_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        while (off < b->len) {
                ssize_t k = write(fd, b->data + off, b->len - off);
                if (k < 0 && errno != EINTR)
                        return -errno;
                off += k > 0 ? (size_t)k : 0;
        }
        (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
        return TAKE_FD(fd);
}

static bool storable(Client *c)
{
        return atomic_load(&c->handed_over) && !outbox_is_dead(&c->outbox) &&
               outbox_bytes(&c->outbox) == 0;
}

/*
 * The client sockets go into systemd's store inside one fd, the carrier: a
 * socket pair whose one end carries them (SCM_RIGHTS, up to
 * HANDOVER_FDS_PER_MESSAGE a message) to the other, which keeps them queued
 * and goes into the store alone. systemd's store takes fds one by one,
 * comparing each with all it holds (1.2 s for 1,000 on systemd 252); the
 * carrier costs it two: both ends go into the store, for systemd drops a
 * stored fd that reports POLLHUP, as the receiving end would once the
 * sending end were closed. Sockets queued in the carrier stay open for as
 * long as the store holds it; a stop closes it, and them.
 */
static int store_carrier(Client **clients, size_t n, size_t *ret_stored)
{
        _cleanup_close_ int tx = -1, rx = -1;
        int pair[2], r;
        size_t stored = 0;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        rx = pair[0];
        tx = pair[1];
        for (size_t i = 0; i < n;) {
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(HANDOVER_FDS_PER_MESSAGE * sizeof(int))];
                } control = {0};
                int fds[HANDOVER_FDS_PER_MESSAGE];
                size_t k = 0;
                char byte = 'c';
                struct iovec iov = {.iov_base = &byte, .iov_len = 1};
                struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control};
                struct cmsghdr *cm;

                for (; i < n && k < ELEMENTSOF(fds); i++)
                        if (storable(clients[i]))
                                fds[k++] = clients[i]->fd;
                if (k == 0)
                        break;
                m.msg_controllen = CMSG_SPACE(k * sizeof(int));
                cm = CMSG_FIRSTHDR(&m);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(k * sizeof(int));
                memcpy(CMSG_DATA(cm), fds, k * sizeof(int));
                while ((r = (int)sendmsg(tx, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
                        ;
                if (r < 0)
                        return -errno; /* ETOOMANYREFS: beyond RLIMIT_NOFILE in flight */
                stored += k;
        }
        r = sd_pid_notify_with_fds(0, false, "FDSTORE=1\nFDNAME=" HANDOVER_CARRIER_NAME, pair, 2);
        if (r <= 0)
                return r ? r : -ENOTCONN;
        *ret_stored = stored;
        return 0;
}

int handover_store(Client **clients, size_t n)
{
        unsigned room = handover_fdstore_max();
        Buffer b = BUFFER_INIT;
        size_t stored = 0;
        int fd, r;

        uint64_t t0 = now_usec(CLOCK_MONOTONIC), t_fds;

        if (room < 3) /* the state and the carrier's two ends */
                return 0;
        r = buffer_printf(&b, "ipcd-handover %d\n", HANDOVER_VERSION);
        for (size_t i = 0; r >= 0 && i < n; i++)
                if (storable(clients[i]))
                        r = append_client(&b, clients[i]);
        if (r < 0) {
                buffer_done(&b);
                return log_error_errno(r, "Failed to write the sessions down, closing them: %m");
        }
        fd = state_memfd(&b);
        buffer_done(&b);
        if (fd < 0)
                return log_error_errno(fd, "Failed to create the handover memfd: %m");
        /* The state first: should we die half-way, sockets without state are
         * closed by the next process, never restored wrongly. */
        r = sd_pid_notify_with_fds(0, false, "FDSTORE=1\nFDNAME=" HANDOVER_STATE_NAME, &fd, 1);
        close(fd);
        if (r <= 0)
                return log_error_errno(r ? r : -ENOTCONN,
                                       "Failed to store the sessions with systemd: %m");
        r = store_carrier(clients, n, &stored);
        if (r < 0) {
                (void)sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" HANDOVER_STATE_NAME);
                return log_error_errno(r, "Failed to store the client sockets with systemd, "
                                          "closing them: %m");
        }
        t_fds = now_usec(CLOCK_MONOTONIC);
        r = sd_notify_barrier(0, HANDOVER_BARRIER_USEC);
        if (r < 0)
                log_warning_errno(r, "systemd did not confirm the stored sessions: %m");
        log_info("Kept %zu client session(s) for the next process in systemd's fd store (%.1f ms "
                 "to send, %.1f ms until systemd had them all)",
                 stored, (t_fds - t0) / 1000.0, (now_usec(CLOCK_MONOTONIC) - t_fds) / 1000.0);
        return (int)stored;
}

/* ---------------------------------------------------------------- restore */

typedef struct Saved {
        uint64_t id, ino, n_commands, ok, failed, in, out, since;
        Transport transport;
        Role auth_role;
        const char *topics; /* "a,b" or "", in the state's text */
        char *partial;      /* unhexed, in the state's text; partial_len bytes */
        size_t partial_len;
} Saved;

static int unhex_digit(char ch)
{
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        return -1;
}

static int parse_u64(const char *s, uint64_t *ret)
{
        char *end;

        errno = 0;
        *ret = strtoull(s, &end, 10);
        return errno || end == s || *end ? -EINVAL : 0;
}

static int parse_role(const char *s, Role *ret)
{
        for (Role r = ROLE_GUEST; r <= ROLE_ADMIN; r++)
                if (strcmp(s, role_to_string(r)) == 0) {
                        *ret = r;
                        return 0;
                }
        return -EINVAL;
}

/* "client ID INO TRANSPORT AUTH_ROLE COMMANDS OK FAILED IN OUT SINCE TOPICS PARTIAL" */
static int parse_line(char *line, Saved *ret)
{
        uint64_t *const numbers[] = {&ret->n_commands, &ret->ok, &ret->failed,
                                     &ret->in, &ret->out, &ret->since};
        char *f[13], *p = line;
        size_t n = 0, len;

        *ret = (Saved){0};
        while (n < ELEMENTSOF(f) && p)
                f[n++] = strsep(&p, " ");
        if (n != ELEMENTSOF(f) || p || strcmp(f[0], "client") != 0 ||
            parse_u64(f[1], &ret->id) < 0 || ret->id == 0 || parse_u64(f[2], &ret->ino) < 0)
                return -EINVAL;
        if (strcmp(f[3], "unix") == 0)
                ret->transport = TRANSPORT_UNIX;
        else if (strcmp(f[3], "tcp") == 0)
                ret->transport = TRANSPORT_TCP;
        else
                return -EINVAL;
        if (parse_role(f[4], &ret->auth_role) < 0)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(numbers); i++)
                if (parse_u64(f[5 + i], numbers[i]) < 0)
                        return -EINVAL;
        ret->topics = strcmp(f[11], "-") == 0 ? f[11] + 1 : f[11]; /* "" or "a,b" */
        len = strcmp(f[12], "-") == 0 ? 0 : strlen(f[12]);
        if (len % 2)
                return -EINVAL;
        /* unhexed in place: the bytes fit where their digits were */
        ret->partial = f[12];
        for (size_t i = 0; i < len; i += 2) {
                int hi = unhex_digit(f[12][i]), lo = unhex_digit(f[12][i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                ret->partial[ret->partial_len++] = (char)(hi << 4 | lo);
        }
        return 0;
}

/* The state memfd's lines; NULL (logged) if it cannot be trusted. */
static char *read_state(int fd)
{
        struct stat st;
        char *data, version[32];
        size_t off = 0;

        if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size > (64 << 20)) {
                log_error("The stored session state is unreadable; closing the stored clients");
                return NULL;
        }
        data = malloc((size_t)st.st_size + 1);
        if (!data)
                return NULL;
        while (off < (size_t)st.st_size) {
                ssize_t k = pread(fd, data + off, (size_t)st.st_size - off, (off_t)off);
                if (k <= 0) {
                        free(data);
                        log_error("The stored session state is unreadable; closing the stored "
                                  "clients");
                        return NULL;
                }
                off += (size_t)k;
        }
        data[off] = '\0';
        if (sscanf(data, "ipcd-handover %31s", version) != 1 ||
            (strcmp(version, "1") != 0 && strcmp(version, "2") != 0)) {
                log_error("The stored session state has version '%s', which this ipcd does not "
                          "know; closing the stored clients",
                          sscanf(data, "ipcd-handover %31s", version) == 1 ? version : "?");
                free(data);
                return NULL;
        }
        return data;
}

static int take_fd_of(HandoverFds *h, uint64_t ino)
{
        for (size_t i = 0; i < h->n_clients; i++)
                if (h->clients[i].ino == ino && h->clients[i].fd >= 0) {
                        int fd = h->clients[i].fd;
                        h->clients[i].fd = -1;
                        return fd;
                }
        return -1;
}

/* A Client from its socket and its saved state, subscribed, not yet running. */
static int restore_one(Server *s, int fd, const Saved *v, Client **ret)
{
        Address a = {.len = sizeof(a.storage)};
        _cleanup_(client_unrefp) Client *c = NULL;
        Role role;
        int r;

        if (getpeername(fd, &a.sa, &a.len) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        r = client_new(s, fd, &a.sa, a.len, v->transport, &c);
        if (r < 0)
                return r;
        c->id = v->id;
        c->since_usec = v->since;
        c->auth_role = v->auth_role;
        role = client_identity_role(c, c->config);
        atomic_store(&c->role, MAX(role, c->auth_role));
        atomic_store(&c->n_commands, v->n_commands);
        atomic_store(&c->n_ok, v->ok);
        atomic_store(&c->n_failed, v->failed);
        atomic_store(&c->n_bytes_in, v->in);
        atomic_store(&c->outbox.bytes_out, v->out);
        if (v->partial_len > 0) {
                r = buffer_append(&c->in, v->partial, v->partial_len);
                if (r < 0)
                        return r;
                c->line_since_usec = now_usec(CLOCK_MONOTONIC);
        }
        r = events_restore(c, v->topics);
        if (r < 0) {
                events_client_gone(c); /* what it did subscribe */
                return r;
        }
        if (c->transport == TRANSPORT_UNIX && atomic_load(&c->role) != ROLE_ADMIN)
                c->peer_key = peer_key_uid(c->cred.uid);
        else if (c->transport == TRANSPORT_TCP)
                c->peer_key = peer_key_address(&a.sa);
        *ret = TAKE_PTR(c);
        return 0;
}

/* Whether a client sent something while the daemon restarted: it waits for
 * an answer. */
static bool restored_waits(const Client *c)
{
        int avail = 0;

        return ioctl(c->fd, FIONREAD, &avail) == 0 && avail > 0;
}

/*
 * Start the readers of the restored clients (taking over their references):
 * first those that sent something while the daemon restarted, since they
 * wait for an answer, then the rest. Each pass goes backwards: the registry
 * lists its newest client first and the state was saved in that order, so
 * the list keeps its order across restarts. The number started.
 */
static size_t start_restored(Server *s, Client **restored, size_t n, size_t *failed)
{
        size_t running = 0;

        for (int pass = 0; pass < 2; pass++)
                for (size_t i = n; i-- > 0;) {
                        Client *c = restored[i];

                        if (!c || (pass == 0 && !restored_waits(c)))
                                continue;
                        if (registry_restore(&s->registry, c, &s->thread_attr,
                                             client_reader_thread) < 0) {
                                log_warning("Failed to start a reader for restored client "
                                            "%" PRIu64 ", closing it",
                                            c->id);
                                events_client_gone(c);
                                (*failed)++;
                        } else
                                running++;
                        client_unref(c);
                        restored[i] = NULL;
                }
        return running;
}

int handover_restore(Server *s, HandoverFds *h)
{
        Client **restored = NULL;
        size_t n = 0, failed = 0, running = 0;
        char *state = NULL, *line, *save = NULL;

        uint64_t t0 = now_usec(CLOCK_MONOTONIC), t_read;

        if (h->state_fd < 0 && h->n_clients == 0)
                return 0;
        /* Out of the store first: a crash from here on must not restore
         * these again. */
        (void)sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" HANDOVER_STATE_NAME);
        (void)sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" HANDOVER_CARRIER_NAME);
        (void)sd_notify(false, "FDSTOREREMOVE=1\nFDNAME=" HANDOVER_CLIENT_NAME);
        if (h->state_fd >= 0) {
                state = read_state(h->state_fd);
                h->state_fd = safe_close(h->state_fd);
        } else
                log_error("%zu client socket(s) in systemd's store without their state; closing "
                          "them",
                          h->n_clients);
        restored = calloc(h->n_clients ? h->n_clients : 1, sizeof(*restored));
        for (line = state && restored ? strtok_r(state, "\n", &save) : NULL; line;
             line = strtok_r(NULL, "\n", &save)) {
                Saved v;
                int fd, r;

                if (strncmp(line, "ipcd-handover ", 14) == 0)
                        continue;
                r = parse_line(line, &v);
                if (r < 0) {
                        log_error("Ignoring a stored session that cannot be read: %.60s", line);
                        failed++;
                        continue;
                }
                fd = take_fd_of(h, v.ino);
                if (fd < 0) {
                        log_warning("Stored session of client %" PRIu64 " came without its "
                                    "socket; dropping it",
                                    v.id);
                        failed++;
                } else if (restore_one(s, fd, &v, &restored[n]) < 0) {
                        log_warning("Failed to restore client %" PRIu64 ", closing it", v.id);
                        failed++;
                } else
                        n++;
        }
        free(state);
        for (size_t i = 0; i < h->n_clients; i++)
                if (h->clients[i].fd >= 0) {
                        log_warning("A client socket (inode %" PRIu64 ") came without its "
                                    "state; closing it",
                                    h->clients[i].ino);
                        h->clients[i].fd = safe_close(h->clients[i].fd);
                        failed++;
                }
        free(h->clients);
        *h = HANDOVER_FDS_INIT;
        t_read = now_usec(CLOCK_MONOTONIC);

        /* Every subscription is back before any reader runs, so that no
         * event published meanwhile misses a restored subscriber. */
        running = start_restored(s, restored, n, &failed);
        free(restored);
        if (running > 0 || failed > 0)
                log_info("Restored %zu client session(s) from the previous process in %.1f ms "
                         "(%.1f ms to read them back, %.1f ms to start their threads)%s",
                         running, (now_usec(CLOCK_MONOTONIC) - t0) / 1000.0,
                         (t_read - t0) / 1000.0, (now_usec(CLOCK_MONOTONIC) - t_read) / 1000.0,
                         failed ? "; see above for those that were not" : "");
        return (int)running;
}
