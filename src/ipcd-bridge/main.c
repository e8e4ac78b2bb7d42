/*
 * main.c - ipcd-bridge: help(), parse_argv(), run().
 *
 * Threads: the main thread (this one: ipcd, signals, sd_notify; local.c)
 * and the MQTT thread (mqtt.c), started after the configuration is loaded
 * and joined before it is freed. They share only the two EventQueues and
 * the Stats, all created here and outliving both.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "bconf.h"
#include "blog.h"
#include "config.h"
#include "local.h"
#include "mqtt.h"

#define EXIT_USAGE 2

static const char *arg_config = SYSCONFDIR "/ipcd/bridge.conf";
static const char *arg_socket;
static bool arg_check_config;
static int arg_log_level = -1;

static void help(void)
{
        printf("Usage: ipcd-bridge [OPTIONS]\n"
               "\n"
               "Bridges events between ipcd and an MQTT broker: local events on the [Out]\n"
               "topics go to the broker, broker messages matching the [In] filters become\n"
               "local events. Only events cross; see ipcd-bridge(8) and bridge.conf(5).\n"
               "\n"
               "Options:\n"
               "  -c, --config FILE      read FILE instead of " SYSCONFDIR "/ipcd/bridge.conf\n"
               "      --check-config     check the configuration, print each problem as\n"
               "                         file:line: message, and exit (1 on errors)\n"
               "  -s, --socket PATH      ipcd's Unix socket (overrides Socket=)\n"
               "      --log-level LEVEL  err, warning, notice, info or debug (overrides\n"
               "                         LogLevel=)\n"
               "  -h, --help             show this help\n"
               "      --version          show the version\n");
}

static int parse_argv(int argc, char *argv[])
{
        enum {
                ARG_CHECK_CONFIG = 0x100,
                ARG_LOG_LEVEL,
                ARG_VERSION,
        };
        static const struct option options[] = {
            {"config", required_argument, NULL, 'c'},
            {"check-config", no_argument, NULL, ARG_CHECK_CONFIG},
            {"socket", required_argument, NULL, 's'},
            {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, ARG_VERSION},
            {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:s:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                case 's':
                        if (optarg[0] != '/') {
                                fprintf(stderr, "ipcd-bridge: --socket needs an absolute path\n");
                                return -EINVAL;
                        }
                        arg_socket = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        arg_log_level = log_level_from_string(optarg);
                        if (arg_log_level < 0) {
                                fprintf(stderr, "ipcd-bridge: invalid --log-level '%s'\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("ipcd-bridge %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'ipcd-bridge --help'.\n");
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "ipcd-bridge: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static int run(int argc, char *argv[])
{
        static Stats stats;
        static Mqtt mqtt;
        EventQueue out, in;
        Buffer errors = BUFFER_INIT;
        BridgeConfig *config = NULL;
        _cleanup_close_ int sfd = -1;
        sigset_t mask;
        Local local;
        int r;

        blog_open();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : 0;

        r = bridge_config_load(arg_config, arg_socket, &config, &errors);
        if (arg_check_config || r < 0) {
                if (errors.len > 0) {
                        if (arg_check_config)
                                fwrite(errors.data, 1, errors.len, stderr);
                        else
                                log_error("Invalid configuration:\n%.*s", (int)errors.len - 1,
                                          errors.data);
                }
                buffer_done(&errors);
                bridge_config_free(config);
                if (arg_check_config)
                        return r < 0 ? 1 : 0;
                return log_error_errno(r, "Failed to load %s: %m", arg_config);
        }
        buffer_done(&errors);
        atomic_store(&log_max_level, arg_log_level >= 0 ? arg_log_level : config->log_level);
        srand((unsigned)time(NULL) ^ (unsigned)getpid());

        /* ipcd or the broker going away must cost an EPIPE, not the process. */
        signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        /* Blocked before the MQTT thread starts, so that it inherits the mask. */
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
            (sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
                r = log_error_errno(errno, "Cannot set up signal handling: %m");
                bridge_config_free(config);
                return r;
        }

        r = evqueue_init(&out, config->queue_max_events, config->queue_max_bytes);
        if (r < 0) {
                bridge_config_free(config);
                return log_error_errno(r, "Cannot create a queue: %m");
        }
        r = evqueue_init(&in, config->queue_max_events, config->queue_max_bytes);
        if (r < 0) {
                evqueue_done(&out);
                bridge_config_free(config);
                return log_error_errno(r, "Cannot create a queue: %m");
        }
        r = local_init(&local, config, &stats, &out, &in);
        if (r >= 0)
                r = mqtt_start(&mqtt, config, &stats, &out, &in);
        if (r < 0) {
                log_error_errno(r, "Failed to start: %m");
                goto finish;
        }
        log_info("Bridging ipcd at %s and the broker %s as host %s: %zu [Out], %zu [In] rule(s)",
                 config->socket_path, config->broker, config->host, config->n_out, config->n_in);
        (void)sd_notify(false, "READY=1\nSTATUS=starting");

        r = local_run(&local, sfd);
        (void)sd_notify(false, "STOPPING=1");
finish:
        mqtt_stop(&mqtt);
        local_done(&local);
        if (atomic_load(&out.n_now) + atomic_load(&in.n_now) > 0)
                log_notice("Stopped with %zu event(s) for the broker and %zu for ipcd unsent",
                           atomic_load(&out.n_now), atomic_load(&in.n_now));
        evqueue_done(&in);
        evqueue_done(&out);
        bridge_config_free(config);
        return r;
}

int main(int argc, char *argv[])
{
        int r = run(argc, argv);

        if (r > 0)
                return r;
        if (r < 0) {
                (void)sd_notifyf(false, "STATUS=Failed: %s\nERRNO=%d", strerror(-r), -r);
                return 1;
        }
        return 0;
}
