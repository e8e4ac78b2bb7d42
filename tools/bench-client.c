/*
 * bench-client.c - the load client of tools/bench. One C program drives
 * every server under test (ipcd, the reference servers, redis-server) so
 * that the client's own cost is the same for all of them.
 *
 *   bench-client MODE (--unix PATH | --tcp HOST:PORT) [OPTIONS]
 *
 * Modes (each prints one line of key=value pairs on stdout):
 *   lat    one connection, one request at a time: round-trip latency
 *          (median_ns, p99_ns, mean_ns) and requests/s
 *   pipe   one connection, --depth requests in flight: requests/s
 *   conc   --clients connections, closed loop (one request in flight on
 *          each), driven by one epoll thread: requests/s
 *   idle   connect --clients connections, one round trip on each, print
 *          "ready", hold them until stdin reaches EOF
 *   first  connect and do one round trip: first_ns (for cold starts)
 *   spin   burn CPU until killed (the "busy process" of tools/bench)
 *   fanout --clients subscribers, one publisher with --depth publishes in
 *          flight, --payload bytes each: deliveries/s (dps), latency
 *          (median_ns, p99_ns); every delivery checked (bench-fanout.c)
 *
 * Framing: `ping\n` -> `OK 4\npong\n` (ipcd protocol 1), or with --redis
 * `PING\r\n` -> `+PONG\r\n`. Every response byte is checked.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *req = "ping\n";
static const char *resp = "OK 4\npong\n";
static size_t req_len, resp_len;

static const char *unix_path;
static const char *tcp_spec;
static double duration = 1.0;
static double warmup = 0.2;
static int depth = 64;
static int n_clients = 50;
static bool redis_mode;

_Noreturn static void die(const char *what)
{
        fprintf(stderr, "bench-client: %s: %s\n", what, strerror(errno));
        exit(1);
}

_Noreturn static void fail(const char *what)
{
        fprintf(stderr, "bench-client: %s\n", what);
        exit(1);
}

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int connect_server(void)
{
        int fd;

        if (unix_path) {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};

                if (strlen(unix_path) >= sizeof(sa.sun_path))
                        fail("socket path too long");
                strcpy(sa.sun_path, unix_path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        die("socket");
                while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                        if (errno != EINTR)
                                die("connect");
        } else {
                struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
                char host[256];
                const char *colon = strrchr(tcp_spec, ':');
                int one = 1;

                if (!colon || (size_t)(colon - tcp_spec) >= sizeof(host))
                        fail("--tcp wants HOST:PORT");
                memcpy(host, tcp_spec, colon - tcp_spec);
                host[colon - tcp_spec] = '\0';
                if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
                        fail("cannot resolve --tcp address");
                fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        die("socket");
                while (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
                        if (errno != EINTR)
                                die("connect");
                freeaddrinfo(ai);
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        return fd;
}

static void write_all(int fd, const char *p, size_t n)
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

/* Check `n` response bytes against the expected stream; *pos is where in
 * one response the connection is. Returns the responses completed. */
static unsigned check(const char *buf, size_t n, size_t *pos)
{
        unsigned done = 0;

        while (n > 0) {
                size_t m = resp_len - *pos;
                if (m > n)
                        m = n;
                if (memcmp(buf, resp + *pos, m) != 0) {
                        fprintf(stderr, "bench-client: unexpected response bytes: '%.*s'\n",
                                (int)(n > 64 ? 64 : n), buf);
                        exit(1);
                }
                buf += m;
                n -= m;
                *pos += m;
                if (*pos == resp_len) {
                        *pos = 0;
                        done++;
                }
        }
        return done;
}

/* Read until `want` whole responses have arrived. */
static void read_responses(int fd, unsigned want)
{
        char buf[4096];
        size_t pos = 0;

        while (want > 0) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die("read");
                }
                if (n == 0)
                        fail("server closed the connection");
                unsigned d = check(buf, (size_t)n, &pos);
                if (d > want || (d == want && pos != 0))
                        fail("more response bytes than requests");
                want -= d;
        }
}

/* The client's own CPU use since `since` (CLOCK_MONOTONIC ns), in CPUs: near
 * 1.0 means the client, not the server, may be the bottleneck. */
static uint64_t cpu_at_start;

static uint64_t cpu_ns(void)
{
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
               (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

static double client_cpu(uint64_t wall_ns)
{
        return wall_ns ? (double)(cpu_ns() - cpu_at_start) / (double)wall_ns : 0;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static void mode_lat(void)
{
        int fd = connect_server();
        uint64_t start = now_ns(), measure = start + (uint64_t)(warmup * 1e9),
                 end = measure + (uint64_t)(duration * 1e9), sum = 0;
        size_t n = 0, cap = 1 << 16;
        uint64_t *s = malloc(cap * sizeof(*s));

        if (!s)
                fail("out of memory");
        for (;;) {
                uint64_t t0 = now_ns(), t1;

                if (t0 >= end)
                        break;
                write_all(fd, req, req_len);
                read_responses(fd, 1);
                t1 = now_ns();
                if (t0 < measure)
                        continue;
                if (n == 0)
                        cpu_at_start = cpu_ns();
                if (n == cap) {
                        cap *= 2;
                        s = realloc(s, cap * sizeof(*s));
                        if (!s)
                                fail("out of memory");
                }
                s[n++] = t1 - t0;
                sum += t1 - t0;
        }
        if (n == 0)
                fail("no samples");
        qsort(s, n, sizeof(*s), cmp_u64);
        printf("ok=%zu median_ns=%llu p99_ns=%llu mean_ns=%llu rps=%.0f client_cpu=%.2f\n", n,
               (unsigned long long)s[n / 2], (unsigned long long)s[(size_t)(n * 0.99)],
               (unsigned long long)(sum / n), n / duration, client_cpu(now_ns() - measure));
        free(s);
        close(fd);
}

static void mode_pipe(void)
{
        int fd = connect_server();
        size_t pos = 0, reqs_len = req_len * (size_t)depth;
        char *reqs = malloc(reqs_len), buf[65536];
        uint64_t start, measure, end, t = 0, t_measure = 0, done = 0;
        bool measuring = false;

        if (!reqs)
                fail("out of memory");
        for (int i = 0; i < depth; i++)
                memcpy(reqs + i * req_len, req, req_len);

        start = now_ns();
        measure = start + (uint64_t)(warmup * 1e9);
        end = measure + (uint64_t)(duration * 1e9);
        write_all(fd, reqs, reqs_len);
        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                unsigned d;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die("read");
                }
                if (n == 0)
                        fail("server closed the connection");
                d = check(buf, (size_t)n, &pos);
                t = now_ns();
                if (measuring)
                        done += d;
                else if (t >= measure) {
                        measuring = true;
                        t_measure = t;
                        cpu_at_start = cpu_ns();
                }
                if (t >= end)
                        break;
                if (d > 0)
                        write_all(fd, reqs, d * req_len);
        }
        printf("ok=%llu rps=%.0f client_cpu=%.2f\n", (unsigned long long)done,
               done / ((t - t_measure) / 1e9), client_cpu(t - t_measure));
        free(reqs);
        close(fd);
}

typedef struct Conn {
        int fd;
        size_t pos;
} Conn;

static void mode_conc(void)
{
        Conn *c = calloc(n_clients, sizeof(*c));
        struct epoll_event *ev = calloc(n_clients, sizeof(*ev));
        int ep = epoll_create1(EPOLL_CLOEXEC);
        uint64_t start, measure, end, t = 0, t_measure = 0, done = 0;
        bool measuring = false;
        char buf[4096];

        if (!c || !ev)
                fail("out of memory");
        if (ep < 0)
                die("epoll_create1");
        for (int i = 0; i < n_clients; i++) {
                struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};

                c[i].fd = connect_server();
                if (epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &e) < 0)
                        die("epoll_ctl");
        }
        start = now_ns();
        measure = start + (uint64_t)(warmup * 1e9);
        end = measure + (uint64_t)(duration * 1e9);
        for (int i = 0; i < n_clients; i++)
                write_all(c[i].fd, req, req_len);
        while (t < end) {
                int k = epoll_wait(ep, ev, n_clients, 1000);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        die("epoll_wait");
                }
                if (k == 0)
                        fail("no response for 1 s");
                for (int j = 0; j < k; j++) {
                        Conn *cc = &c[ev[j].data.u32];
                        ssize_t n = read(cc->fd, buf, sizeof(buf));
                        unsigned d;

                        if (n < 0) {
                                if (errno == EINTR || errno == EAGAIN)
                                        continue;
                                die("read");
                        }
                        if (n == 0)
                                fail("server closed a connection");
                        d = check(buf, (size_t)n, &cc->pos);
                        if (d > 1)
                                fail("more responses than requests");
                        if (d == 1) {
                                if (measuring)
                                        done++;
                                write_all(cc->fd, req, req_len);
                        }
                }
                t = now_ns();
                if (!measuring && t >= measure) {
                        measuring = true;
                        t_measure = t;
                        cpu_at_start = cpu_ns();
                }
        }
        printf("ok=%llu rps=%.0f client_cpu=%.2f\n", (unsigned long long)done,
               done / ((t - t_measure) / 1e9), client_cpu(t - t_measure));
        for (int i = 0; i < n_clients; i++)
                close(c[i].fd);
        close(ep);
        free(c);
        free(ev);
}

static void mode_idle(void)
{
        int *fds = calloc(n_clients, sizeof(int));
        uint64_t t0 = now_ns();
        char buf[64];

        if (!fds)
                fail("out of memory");
        /* Connect and ask in batches, so that a server that accepts slowly
         * never sees a backlog overflow. */
        for (int i = 0; i < n_clients; i += 256) {
                int m = n_clients - i < 256 ? n_clients - i : 256;

                for (int j = i; j < i + m; j++) {
                        fds[j] = connect_server();
                        write_all(fds[j], req, req_len);
                }
                for (int j = i; j < i + m; j++)
                        read_responses(fds[j], 1);
        }
        printf("ready clients=%d connect_ms=%.0f\n", n_clients, (now_ns() - t0) / 1e6);
        fflush(stdout);
        while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
                ;
        for (int i = 0; i < n_clients; i++)
                close(fds[i]);
        free(fds);
}

static void mode_first(void)
{
        uint64_t t0 = now_ns();
        int fd = connect_server();

        write_all(fd, req, req_len);
        read_responses(fd, 1);
        printf("first_ns=%llu\n", (unsigned long long)(now_ns() - t0));
        close(fd);
}

#include "bench-fanout.c"

_Noreturn static void mode_spin(void)
{
        volatile uint64_t x = 0;

        for (;;)
                x++;
}

static void help(void)
{
        printf("Usage: bench-client MODE (--unix PATH | --tcp HOST:PORT) [OPTIONS]\n"
               "\n"
               "The load client of tools/bench. Modes: lat, pipe, conc, idle, first, fanout, spin.\n"
               "\n"
               "  -u, --unix PATH      connect to a Unix socket\n"
               "  -t, --tcp HOST:PORT  connect over TCP\n"
               "  -r, --redis          redis framing (PING -> +PONG)\n"
               "  -d, --duration SEC   measured time (default 1)\n"
               "  -w, --warmup SEC     unmeasured time before (default 0.2)\n"
               "  -p, --depth N        requests in flight for pipe (default 64)\n"
               "  -c, --clients N      connections for conc and idle, subscribers for\n"
               "                       fanout (default 50)\n"
               "  -P, --payload BYTES  fanout: event payload size (default 64)\n"
               "  -h, --help           show this help\n");
}

int main(int argc, char *argv[])
{
        static const struct option options[] = {
            {"unix", required_argument, NULL, 'u'},  {"tcp", required_argument, NULL, 't'},
            {"redis", no_argument, NULL, 'r'},       {"duration", required_argument, NULL, 'd'},
            {"warmup", required_argument, NULL, 'w'}, {"depth", required_argument, NULL, 'p'},
            {"clients", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
            {"payload", required_argument, NULL, 'P'},
            {},
        };
        const char *mode;
        int o;

        while ((o = getopt_long(argc, argv, "u:t:rd:w:p:c:P:h", options, NULL)) >= 0) {
                switch (o) {
                case 'u':
                        unix_path = optarg;
                        break;
                case 't':
                        tcp_spec = optarg;
                        break;
                case 'r':
                        req = "PING\r\n";
                        resp = "+PONG\r\n";
                        redis_mode = true;
                        break;
                case 'd':
                        duration = atof(optarg);
                        break;
                case 'w':
                        warmup = atof(optarg);
                        break;
                case 'p':
                        depth = atoi(optarg);
                        break;
                case 'c':
                        n_clients = atoi(optarg);
                        break;
                case 'P':
                        payload_size = atoi(optarg);
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return 2;
                }
        }
        if (optind != argc - 1) {
                help();
                return 2;
        }
        mode = argv[optind];
        req_len = strlen(req);
        resp_len = strlen(resp);
        signal(SIGPIPE, SIG_IGN);
        if (strcmp(mode, "spin") == 0)
                mode_spin();
        if (!unix_path == !tcp_spec)
                fail("give one of --unix PATH or --tcp HOST:PORT");
        if (duration <= 0 || depth < 1 || n_clients < 1)
                fail("bad --duration, --depth or --clients");

        if (strcmp(mode, "lat") == 0)
                mode_lat();
        else if (strcmp(mode, "pipe") == 0)
                mode_pipe();
        else if (strcmp(mode, "conc") == 0)
                mode_conc();
        else if (strcmp(mode, "idle") == 0)
                mode_idle();
        else if (strcmp(mode, "first") == 0)
                mode_first();
        else if (strcmp(mode, "fanout") == 0) {
                if (payload_size < 48 || payload_size > 1 << 20)
                        fail("--payload: 48 to 1M bytes");
                mode_fanout(redis_mode);
        } else
                fail("unknown mode (lat, pipe, conc, idle, first, fanout, spin)");
        return 0;
}
