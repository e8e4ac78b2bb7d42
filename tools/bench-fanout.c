/*
 * bench-fanout.c - the `fanout` mode of bench-client (included by it):
 * --clients subscribers of one topic, read by one epoll thread, and one
 * closed-loop publisher on its own thread with --depth publishes in
 * flight, each payload (--payload bytes) carrying its sequence number and
 * send time. Every delivery is checked: each subscriber must see every
 * sequence number once, in order; a lost, duplicated or reordered event
 * fails the run. Prints deliveries/s (over the measured time, after the
 * warm-up, until the last delivery) and the publish-to-delivery latency
 * median and p99 of a sample.
 *
 * Framing: ipcd `subscribe bench` / `publish bench PAYLOAD` / EVENT
 * frames, or with --redis SUBSCRIBE / PUBLISH / "message" pushes.
 */
#include <pthread.h>
#include <stdatomic.h>

static int payload_size = 64;

typedef struct Sub {
        int fd;
        char *buf;
        size_t len, cap;
        uint64_t next_seq; /* the sequence number it must see next */
        bool subscribed;
} Sub;

static Sub *subs;
static _Atomic uint64_t published;      /* publishes answered */
static _Atomic bool publishing = true;
static uint64_t measure_from_ns;        /* after the warm-up */
static _Atomic uint64_t deliveries;
static uint64_t deliveries_measured, last_delivery_ns;
/* The publisher waits while more than --depth events per subscriber are
 * on their way: the backlog stays bounded, and latency means something. */
static pthread_mutex_t window_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t window_cond = PTHREAD_COND_INITIALIZER;
static _Atomic bool publisher_waiting;
static uint64_t *lat_sample;
static size_t n_lat, lat_cap = 1 << 20;

static void write_all_fd(int fd, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        die("write");
                }
                p += k;
                n -= (size_t)k;
        }
}

/* One event's payload seen by subscriber s: check and count it. */
static void delivered(Sub *s, const char *p, size_t n)
{
        unsigned long long seq, ts;
        uint64_t now = now_ns();
        char *end;

        /* strtoull, not sscanf: sscanf measures the whole rest of the
         * buffer first (strlen), which costs the client more than the
         * server's delivery. Both protocols' paths parse alike. */
        if (n != (size_t)payload_size)
                fail("a delivery with a bad payload");
        seq = strtoull(p, &end, 10);
        if (end == p || *end != ':')
                fail("a delivery with a bad payload");
        ts = strtoull(end + 1, &end, 10);
        if (end != p + 41) /* "%020llu:%020llu", then padding */
                fail("a delivery with a bad payload");
        if (seq != s->next_seq) {
                fprintf(stderr, "bench-client: subscriber fd %d: got event %llu, wanted %llu\n",
                        s->fd, seq, (unsigned long long)s->next_seq);
                fail(seq < s->next_seq ? "duplicated or reordered event" : "lost event");
        }
        s->next_seq++;
        atomic_fetch_add_explicit(&deliveries, 1, memory_order_relaxed);
        if (ts >= measure_from_ns) {
                deliveries_measured++;
                last_delivery_ns = now;
                if (n_lat < lat_cap && (deliveries_measured & 7) == 0)
                        lat_sample[n_lat++] = now - ts;
        }
}

/* Parse what subscriber s has buffered; returns false when it needs more. */
static bool parse_one(Sub *s, bool redis, size_t *off)
{
        char *b = s->buf + *off, *e = s->buf + s->len, *nl;
        size_t avail = s->len - *off, used;

        if (!redis) {
                static const char ev[] = "EVENT bench ";
                unsigned long n;

                nl = memchr(b, '\n', avail);
                if (!nl)
                        return false;
                if (!s->subscribed) {
                        /* "OK 1\n1\n" */
                        if (avail < 7)
                                return false;
                        if (strncmp(b, "OK 1\n1\n", 7) != 0)
                                fail("subscribe was not answered OK");
                        s->subscribed = true;
                        used = 7;
                } else {
                        if (avail < sizeof(ev) - 1 || memcmp(b, ev, sizeof(ev) - 1) != 0)
                                fail("not an EVENT frame");
                        n = strtoul(b + sizeof(ev) - 1, NULL, 10);
                        if ((size_t)(e - nl - 1) < n + 1)
                                return false;
                        delivered(s, nl + 1, n);
                        used = (size_t)(nl + 1 - b) + n + 1;
                }
        } else {
                /* *3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$N\r\nPAYLOAD\r\n, and the
                 * subscribe confirmation *3 ... :1\r\n */
                static const char conf[] = "*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n";
                static const char msg[] = "*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$";
                unsigned long n;

                if (!s->subscribed) {
                        if (avail < sizeof(conf) - 1)
                                return false;
                        if (memcmp(b, conf, sizeof(conf) - 1) != 0)
                                fail("SUBSCRIBE was not confirmed");
                        s->subscribed = true;
                        used = sizeof(conf) - 1;
                } else {
                        if (avail < sizeof(msg) - 1)
                                return false;
                        if (memcmp(b, msg, sizeof(msg) - 1) != 0)
                                fail("not a message push");
                        nl = memchr(b + sizeof(msg) - 1, '\n', avail - (sizeof(msg) - 1));
                        if (!nl)
                                return false;
                        n = strtoul(b + sizeof(msg) - 1, NULL, 10);
                        if ((size_t)(e - nl - 1) < n + 2)
                                return false;
                        delivered(s, nl + 1, n);
                        used = (size_t)(nl + 1 - b) + n + 2;
                }
        }
        *off += used;
        return true;
}

static void *publisher(void *userdata)
{
        bool redis = *(bool *)userdata;
        int fd = connect_server();
        char *line = malloc((size_t)payload_size + 64), rbuf[65536];
        size_t rlen = 0;
        uint64_t seq = 0, answered = 0;

        if (!line)
                fail("out of memory");
        while (atomic_load(&publishing) || answered < seq) {
                /* Keep --depth publishes in flight, each written as sent,
                 * and no more than --depth events undelivered. */
                while (atomic_load(&publishing) &&
                       seq * (uint64_t)n_clients - atomic_load(&deliveries) >
                           (uint64_t)depth * (uint64_t)n_clients) {
                        pthread_mutex_lock(&window_lock);
                        atomic_store(&publisher_waiting, true);
                        if (seq * (uint64_t)n_clients - atomic_load(&deliveries) >
                            (uint64_t)depth * (uint64_t)n_clients)
                                pthread_cond_wait(&window_cond, &window_lock);
                        atomic_store(&publisher_waiting, false);
                        pthread_mutex_unlock(&window_lock);
                }
                while (atomic_load(&publishing) && seq - answered < (uint64_t)depth) {
                        int h = snprintf(line, 64, "%s bench ", redis ? "PUBLISH" : "publish");
                        int k = snprintf(line + h, 64, "%020llu:%020llu", (unsigned long long)seq,
                                         (unsigned long long)now_ns());

                        memset(line + h + k, 'x', (size_t)payload_size - (size_t)k);
                        memcpy(line + h + payload_size, redis ? "\r\n" : "\n", redis ? 3 : 2);
                        write_all_fd(fd, line, (size_t)h + (size_t)payload_size + (redis ? 2 : 1));
                        seq++;
                }
                if (answered == seq)
                        continue; /* nothing to wait for (stopped while waiting above) */
                ssize_t n = read(fd, rbuf + rlen, sizeof(rbuf) - rlen);
                if (n <= 0)
                        die("publisher read");
                rlen += (size_t)n;
                /* ipcd "OK k\nN\n", redis ":N\r\n": count the final newlines. */
                for (;;) {
                        char *nl = memchr(rbuf, '\n', rlen);
                        size_t used;

                        if (!nl)
                                break;
                        if (!redis) {
                                char *nl2 = memchr(nl + 1, '\n', rlen - (size_t)(nl + 1 - rbuf));
                                if (rbuf[0] != 'O')
                                        fail("publish was not answered OK");
                                if (!nl2)
                                        break;
                                used = (size_t)(nl2 + 1 - rbuf);
                                if ((unsigned long)atol(nl + 1) != (unsigned long)n_clients)
                                        fail("publish reached fewer subscribers than connected");
                        } else {
                                if (rbuf[0] != ':' ||
                                    (unsigned long)atol(rbuf + 1) != (unsigned long)n_clients)
                                        fail("PUBLISH reached fewer subscribers than connected");
                                used = (size_t)(nl + 1 - rbuf);
                        }
                        memmove(rbuf, rbuf + used, rlen - used);
                        rlen -= used;
                        answered++;
                }
        }
        atomic_store(&published, seq);
        close(fd);
        free(line);
        return NULL;
}

static void mode_fanout(bool redis)
{
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event evs[256];
        uint64_t start, stop_at, deadline = 0, want;
        pthread_t t;
        int ready = 0;

        if (ep < 0)
                die("epoll_create1");
        subs = calloc((size_t)n_clients, sizeof(*subs));
        lat_sample = malloc(lat_cap * sizeof(*lat_sample));
        if (!subs || !lat_sample)
                fail("out of memory");
        for (int i = 0; i < n_clients; i++) {
                Sub *s = &subs[i];
                const char *sub = redis ? "SUBSCRIBE bench\r\n" : "subscribe bench\n";

                s->fd = connect_server();
                s->cap = 1 << 16;
                s->buf = malloc(s->cap);
                if (!s->buf)
                        fail("out of memory");
                write_all_fd(s->fd, sub, strlen(sub));
                if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd,
                              &(struct epoll_event){.events = EPOLLIN, .data.ptr = s}) < 0)
                        die("epoll_ctl");
        }
        /* Every subscription confirmed before the first publish. */
        while (ready < n_clients) {
                int n = epoll_wait(ep, evs, 256, 10000);
                if (n <= 0)
                        fail("subscriptions not confirmed within 10 s");
                for (int i = 0; i < n; i++) {
                        Sub *s = evs[i].data.ptr;
                        ssize_t k = read(s->fd, s->buf + s->len, s->cap - s->len);
                        if (k <= 0)
                                die("subscriber read");
                        s->len += (size_t)k;
                        size_t off = 0;

                        if (!s->subscribed && parse_one(s, redis, &off)) {
                                memmove(s->buf, s->buf + off, s->len - off);
                                s->len -= off;
                                ready++;
                        }
                }
        }

        start = now_ns();
        measure_from_ns = start + (uint64_t)(warmup * 1e9);
        stop_at = measure_from_ns + (uint64_t)(duration * 1e9);
        if (pthread_create(&t, NULL, publisher, &redis) != 0)
                fail("pthread_create");
        for (;;) {
                uint64_t now = now_ns();
                int n;

                if (now >= stop_at && atomic_load(&publishing))
                        atomic_store(&publishing, false);
                if (!atomic_load(&publishing) && atomic_load(&published) > 0) {
                        want = atomic_load(&published) * (uint64_t)n_clients;
                        if (deliveries == want)
                                break;
                        if (deadline == 0)
                                deadline = now + 30ULL * 1000000000ULL;
                        else if (now > deadline)
                                fail("not every event was delivered within 30 s");
                }
                if (atomic_load(&publisher_waiting)) {
                        pthread_mutex_lock(&window_lock);
                        pthread_cond_signal(&window_cond);
                        pthread_mutex_unlock(&window_lock);
                }
                n = epoll_wait(ep, evs, 256, 20);
                for (int i = 0; i < n; i++) {
                        Sub *s = evs[i].data.ptr;
                        ssize_t k;

                        if (s->cap - s->len < 8192) {
                                s->cap *= 2;
                                s->buf = realloc(s->buf, s->cap);
                                if (!s->buf)
                                        fail("out of memory");
                        }
                        k = read(s->fd, s->buf + s->len, s->cap - s->len);
                        if (k == 0)
                                fail("a subscriber was disconnected (a slow consumer?)");
                        if (k < 0) {
                                if (errno == EINTR || errno == EAGAIN)
                                        continue;
                                die("subscriber read");
                        }
                        s->len += (size_t)k;
                        {
                                size_t off = 0;

                                while (parse_one(s, redis, &off))
                                        ;
                                memmove(s->buf, s->buf + off, s->len - off);
                                s->len -= off;
                        }
                }
        }
        pthread_join(t, NULL);
        qsort(lat_sample, n_lat, sizeof(*lat_sample), cmp_u64);
        printf("deliveries=%llu published=%llu dps=%.0f median_ns=%llu p99_ns=%llu\n",
               (unsigned long long)deliveries, (unsigned long long)atomic_load(&published),
               last_delivery_ns > measure_from_ns
                   ? (double)deliveries_measured / ((double)(last_delivery_ns - measure_from_ns) / 1e9)
                   : 0.0,
               (unsigned long long)(n_lat ? lat_sample[n_lat / 2] : 0),
               (unsigned long long)(n_lat ? lat_sample[n_lat * 99 / 100] : 0));
        for (int i = 0; i < n_clients; i++)
                close(subs[i].fd);
}
