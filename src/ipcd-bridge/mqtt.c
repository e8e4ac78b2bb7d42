/*
 * mqtt.c - the broker side of ipcd-bridge; see mqtt.h.
 *
 * Loops: every message the bridge publishes carries the MQTT v5 user
 * property ipcd-origin=<Host>; the bridge's subscriptions use the No Local
 * option (the broker never returns our own publications to us), and a
 * message whose ipcd-origin is our Host is dropped and counted as looped
 * anyway (a second bridge with our Host, a broker bridge in between).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <mqtt_protocol.h>

#include "blog.h"
#include "mqtt.h"
#include "time-util.h"

#define STATUS_ONLINE  "online"
#define STATUS_OFFLINE "offline"
/* The longest payload ipcd takes in one publish line (its default
 * MaxLineBytes, less room for the verb, topic and quoting). */
#define LOCAL_MAX_PAYLOAD (60 * 1024)

enum { PENDING_NONE, PENDING_QOS0, PENDING_QOS1, PENDING_STATUS };

static void pending_add(Mqtt *m, int mid, int kind)
{
        if (mid < 0 || mid > 65535)
                return;
        if (m->pending[mid] == PENDING_NONE)
                m->n_pending++;
        m->pending[mid] = (uint8_t)kind;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
        Mqtt *m = obj;
        const BridgeConfig *c = m->config;

        if (rc != 0) {
                log_full_errno(LOG_WARNING, 0, FIELDS(.broker = c->broker), "The broker %s refused the connection: %s",
                               c->broker, mosquitto_reason_string(rc));
                return;
        }
        m->session_up = true;
        m->backoff_ms = 0;
        atomic_store(&m->stats->broker_up, true);
        log_full_errno(LOG_INFO, 0, FIELDS(.broker = c->broker), "Connected to the broker %s as %s (%s session)", c->broker,
                       c->client_id, (flags & 1) ? "resumed" : "new");
        /* Subscribing and the status are done by the thread after the
         * loop step returns: libmosquitto holds its callback lock here, and
         * publishing under it orders its locks against themselves (TSan). */
        m->just_connected = true;
        (void)mosq;
        (void)props;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                          const mosquitto_property *props)
{
        Mqtt *m = obj;

        if (m->session_up)
                log_full_errno(LOG_WARNING, 0, FIELDS(.broker = m->config->broker),
                               "Lost the broker %s: %s", m->config->broker,
                               rc == 0 ? "disconnected" : mosquitto_reason_string(rc));
        m->session_up = false;
        atomic_store(&m->stats->broker_up, false);
        (void)mosq;
        (void)props;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
                       const mosquitto_property *props)
{
        Mqtt *m = obj;
        int kind;

        if (mid < 0 || mid > 65535 || m->pending[mid] == PENDING_NONE)
                return;
        kind = m->pending[mid];
        m->pending[mid] = PENDING_NONE;
        m->n_pending--;
        if (kind == PENDING_STATUS)
                return;
        if (reason >= 0x80) {
                atomic_fetch_add_explicit(&m->stats->lost, 1, memory_order_relaxed);
                log_warning("The broker refused an event (message id %d): %s", mid,
                            mosquitto_reason_string(reason));
        } else
                atomic_fetch_add_explicit(&m->stats->out, 1, memory_order_relaxed);
        (void)mosq;
        (void)props;
}

static bool from_us(const Mqtt *m, const mosquitto_property *props)
{
        const mosquitto_property *p = props;
        bool skip_first = false;

        for (;;) {
                char *name = NULL, *value = NULL;
                bool ours;

                p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value,
                                                        skip_first);
                if (!p)
                        return false;
                ours = name && value && !strcmp(name, "ipcd-origin") &&
                       !strcmp(value, m->config->host);
                free(name);
                free(value);
                if (ours)
                        return true;
                skip_first = true;
        }
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
        Mqtt *m = obj;
        const BridgeConfig *c = m->config;

        if (from_us(m, props)) {
                atomic_fetch_add_explicit(&m->stats->looped, 1, memory_order_relaxed);
                log_full_errno(LOG_DEBUG, 0,
                               FIELDS(.direction = "in", .mqtt_topic = msg->topic),
                               "Dropped a message on %s that this bridge published", msg->topic);
                return;
        }
        for (size_t i = 0; i < c->n_in; i++) {
                const InRule *r = &c->in[i];
                bool match = false;
                size_t dropped;
                Event *e;

                if (mosquitto_topic_matches_sub(r->mqtt_filter, msg->topic, &match) !=
                        MOSQ_ERR_SUCCESS ||
                    !match || (msg->retain && !r->retained))
                        continue;
                if (msg->payloadlen > LOCAL_MAX_PAYLOAD) {
                        atomic_fetch_add_explicit(&m->stats->lost, 1, memory_order_relaxed);
                        log_full_errno(LOG_WARNING, 0,
                                       FIELDS(.direction = "in", .topic = r->local_topic,
                                                    .mqtt_topic = msg->topic),
                                       "Dropped a %d-byte message on %s: larger than %d bytes",
                                       msg->payloadlen, msg->topic, LOCAL_MAX_PAYLOAD);
                        continue;
                }
                e = event_new(r->local_topic, msg->payload, (size_t)msg->payloadlen, 0, false);
                if (!e) {
                        atomic_fetch_add_explicit(&m->stats->lost, 1, memory_order_relaxed);
                        continue;
                }
                dropped = evqueue_push(m->in, e);
                if (dropped)
                        log_full_errno(LOG_WARNING, 0,
                                       FIELDS(.direction = "in", .topic = r->local_topic),
                                       "Queue to ipcd full: dropped %zu event(s), %" PRIuFAST64
                                       " in all",
                                       dropped, atomic_load(&m->in->dropped));
        }
        (void)mosq;
}

/* The session was accepted: subscribe, and say "online". */
static void session_started(Mqtt *m)
{
        struct mosquitto *mosq = m->mosq;
        const BridgeConfig *c = m->config;
        int mid = 0, r;

        m->just_connected = false;
        for (size_t i = 0; i < c->n_in; i++) {
                int opts = MQTT_SUB_OPT_NO_LOCAL;

                if (!c->in[i].retained)
                        opts |= MQTT_SUB_OPT_SEND_RETAIN_NEVER;
                r = mosquitto_subscribe_v5(mosq, NULL, c->in[i].mqtt_filter, c->in[i].qos, opts,
                                           NULL);
                if (r != MOSQ_ERR_SUCCESS)
                        log_warning("Cannot subscribe to %s: %s", c->in[i].mqtt_filter,
                                    mosquitto_strerror(r));
        }
        r = mosquitto_publish_v5(mosq, &mid, c->status_topic, (int)strlen(STATUS_ONLINE),
                                 STATUS_ONLINE, 1, true, m->origin);
        if (r == MOSQ_ERR_SUCCESS)
                pending_add(m, mid, PENDING_STATUS);
}

/* Hand queued events to libmosquitto while the window allows. */
static void pump(Mqtt *m)
{
        while (m->session_up && m->n_pending < MQTT_WINDOW) {
                Event *e = evqueue_pop(m->out);
                int mid = 0, r;

                if (!e)
                        return;
                r = mosquitto_publish_v5(m->mosq, &mid, e->topic, (int)e->len, e->payload, e->qos,
                                         e->retain, m->origin);
                if (r == MOSQ_ERR_NO_CONN || r == MOSQ_ERR_NOMEM) {
                        evqueue_push_front(m->out, e); /* try again when connected */
                        return;
                }
                if (r != MOSQ_ERR_SUCCESS) {
                        atomic_fetch_add_explicit(&m->stats->lost, 1, memory_order_relaxed);
                        log_full_errno(LOG_WARNING, 0,
                                       FIELDS(.direction = "out", .mqtt_topic = e->topic),
                                       "Cannot publish on %s: %s", e->topic,
                                       mosquitto_strerror(r));
                } else
                        pending_add(m, mid, e->qos == 0 ? PENDING_QOS0 : PENDING_QOS1);
                event_free(e);
        }
}

/* The connection broke: QoS 0 messages not yet written are gone, QoS 1
 * ones stay with libmosquitto, which sends them again after reconnecting. */
static void connection_lost(Mqtt *m, int rc)
{
        unsigned lost = 0;

        if (m->session_up || m->socket_up)
                on_disconnect(m->mosq, m, rc, NULL);
        m->socket_up = false;
        m->session_up = false;
        for (size_t i = 0; i < ELEMENTSOF(m->pending); i++)
                if (m->pending[i] == PENDING_QOS0 || m->pending[i] == PENDING_STATUS) {
                        lost += m->pending[i] == PENDING_QOS0;
                        m->pending[i] = PENDING_NONE;
                        m->n_pending--;
                }
        if (lost) {
                atomic_fetch_add_explicit(&m->stats->lost, lost, memory_order_relaxed);
                log_warning("%u QoS 0 event(s) were in flight when the broker went away", lost);
        }
}

static int broker_connect(Mqtt *m)
{
        const BridgeConfig *c = m->config;
        mosquitto_property *props = NULL;
        int r;

        if (!c->clean_session &&
            mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                         c->session_expiry_sec) != MOSQ_ERR_SUCCESS)
                return MOSQ_ERR_NOMEM;
        r = mosquitto_connect_bind_v5(m->mosq, c->broker_host, c->broker_port,
                                      (int)c->keepalive_sec, NULL, props);
        mosquitto_property_free_all(&props);
        return r;
}

static void wait_until(Mqtt *m, uint64_t until)
{
        while (!atomic_load(&m->stop)) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                struct pollfd p = {.fd = m->out->efd, .events = POLLIN};

                atomic_store_explicit(&m->stats->mqtt_heartbeat_usec, now, memory_order_relaxed);
                if (now >= until)
                        return;
                (void)poll(&p, 1, MIN(poll_timeout_ms(until, now), 1000));
                /* An event pushed meanwhile stays queued; only the wakeup goes. */
                if (p.revents)
                        evqueue_clear_wakeup(m->out);
        }
}

/* Say "offline" ourselves (a clean disconnect sends no will) and go. */
static void say_goodbye(Mqtt *m)
{
        usec_t until = now_usec(CLOCK_MONOTONIC) + 2 * USEC_PER_SEC;
        int mid = -1;

        if (!m->session_up)
                return;
        if (mosquitto_publish_v5(m->mosq, &mid, m->config->status_topic,
                                 (int)strlen(STATUS_OFFLINE), STATUS_OFFLINE, 1, true,
                                 m->origin) == MOSQ_ERR_SUCCESS)
                pending_add(m, mid, PENDING_STATUS);
        while (mid >= 0 && m->pending[mid] != PENDING_NONE && now_usec(CLOCK_MONOTONIC) < until) {
                struct pollfd p = {.fd = mosquitto_socket(m->mosq), .events = POLLIN};

                if (mosquitto_want_write(m->mosq))
                        p.events |= POLLOUT;
                if (poll(&p, 1, 100) < 0 && errno != EINTR)
                        break;
                if (mosquitto_loop_read(m->mosq, 1) != MOSQ_ERR_SUCCESS ||
                    mosquitto_loop_write(m->mosq, 1) != MOSQ_ERR_SUCCESS)
                        break;
        }
        (void)mosquitto_disconnect_v5(m->mosq, 0, NULL);
}

static void *mqtt_thread(void *p)
{
        Mqtt *m = p;
        const BridgeConfig *c = m->config;
        uint64_t next_attempt = 0;
        bool failing = false;

        while (!atomic_load(&m->stop)) {
                struct pollfd pf[2];
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                int rc = MOSQ_ERR_SUCCESS;

                atomic_store_explicit(&m->stats->mqtt_heartbeat_usec, now, memory_order_relaxed);
                if (!m->socket_up) {
                        if (now < next_attempt) {
                                wait_until(m, next_attempt);
                                continue;
                        }
                        rc = broker_connect(m);
                        if (rc != MOSQ_ERR_SUCCESS) {
                                unsigned max = c->reconnect_max_sec * 1000u;

                                m->backoff_ms = m->backoff_ms == 0 ? 500 : MIN(m->backoff_ms * 2, max);
                                /* 50-100% of the backoff, so a fleet does not come back in step */
                                next_attempt = now_usec(CLOCK_MONOTONIC) + USEC_PER_MSEC * (m->backoff_ms / 2 +
                                                                        (unsigned)rand() % (m->backoff_ms / 2 + 1));
                                log_full_errno(failing ? LOG_DEBUG : LOG_WARNING,
                                               rc == MOSQ_ERR_ERRNO ? errno : 0,
                                               FIELDS(.broker = c->broker),
                                               "Cannot connect to the broker %s: %s; retrying with "
                                               "backoff up to %us",
                                               c->broker, mosquitto_strerror(rc),
                                               c->reconnect_max_sec);
                                failing = true;
                                continue;
                        }
                        failing = false;
                        m->socket_up = true;
                }

                pf[0] = (struct pollfd){.fd = mosquitto_socket(m->mosq), .events = POLLIN};
                if (mosquitto_want_write(m->mosq))
                        pf[0].events |= POLLOUT;
                pf[1] = (struct pollfd){.fd = m->out->efd, .events = POLLIN};
                /* TLS may hold decrypted bytes the socket no longer shows: look again soon. */
                if (poll(pf, 2, c->tls ? 20 : 1000) < 0 && errno != EINTR)
                        rc = MOSQ_ERR_ERRNO;
                if (pf[1].revents)
                        evqueue_clear_wakeup(m->out);
                if (rc == MOSQ_ERR_SUCCESS && (pf[0].revents || c->tls))
                        rc = mosquitto_loop_read(m->mosq, 1);
                if (rc == MOSQ_ERR_SUCCESS && m->just_connected)
                        session_started(m);
                if (rc == MOSQ_ERR_SUCCESS)
                        pump(m);
                if (rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(m->mosq))
                        rc = mosquitto_loop_write(m->mosq, 1);
                if (rc == MOSQ_ERR_SUCCESS)
                        rc = mosquitto_loop_misc(m->mosq);
                if (rc != MOSQ_ERR_SUCCESS) {
                        connection_lost(m, rc);
                        m->backoff_ms = m->backoff_ms == 0 ? 500 : MIN(m->backoff_ms * 2,
                                                                       c->reconnect_max_sec * 1000u);
                        next_attempt = now_usec(CLOCK_MONOTONIC) + USEC_PER_MSEC * m->backoff_ms / 2;
                }
        }
        say_goodbye(m);
        return NULL;
}

int mqtt_start(Mqtt *m, const BridgeConfig *c, Stats *stats, EventQueue *out, EventQueue *in)
{
        int r;

        m->config = c;
        m->stats = stats;
        m->out = out;
        m->in = in;
        mosquitto_lib_init();
        m->mosq = mosquitto_new(c->client_id, c->clean_session, m);
        if (!m->mosq)
                return -errno ?: -ENOMEM;
        r = mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
        if (r == MOSQ_ERR_SUCCESS)
                r = mosquitto_int_option(m->mosq, MOSQ_OPT_TCP_NODELAY, 1);
        if (r == MOSQ_ERR_SUCCESS)
                r = mosquitto_property_add_string_pair(&m->origin, MQTT_PROP_USER_PROPERTY,
                                                       "ipcd-origin", c->host);
        /* The will: retained "offline", sent by the broker when we vanish
         * (keepalive * 1.5 without a word) instead of disconnecting. */
        if (r == MOSQ_ERR_SUCCESS)
                r = mosquitto_will_set_v5(m->mosq, c->status_topic, (int)strlen(STATUS_OFFLINE),
                                          STATUS_OFFLINE, 1, true, NULL);
        if (r == MOSQ_ERR_SUCCESS && c->username)
                r = mosquitto_username_pw_set(m->mosq, c->username, c->password);
        if (r == MOSQ_ERR_SUCCESS && c->tls) {
                r = mosquitto_int_option(m->mosq, MOSQ_OPT_TLS_USE_OS_CERTS,
                                         !c->ca_file && !c->ca_path);
                if (r == MOSQ_ERR_SUCCESS && (c->ca_file || c->ca_path || c->cert_file))
                        r = mosquitto_tls_set(m->mosq, c->ca_file, c->ca_path, c->cert_file,
                                              c->key_file, NULL);
        }
        if (r != MOSQ_ERR_SUCCESS) {
                log_error("Cannot set up the MQTT client: %s", mosquitto_strerror(r));
                return r == MOSQ_ERR_NOMEM ? -ENOMEM : -EINVAL;
        }
        mosquitto_connect_v5_callback_set(m->mosq, on_connect);
        mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
        mosquitto_publish_v5_callback_set(m->mosq, on_publish);
        mosquitto_message_v5_callback_set(m->mosq, on_message);

        r = pthread_create(&m->thread, NULL, mqtt_thread, m);
        if (r != 0)
                return -r;
        m->started = true;
        return 0;
}

void mqtt_stop(Mqtt *m)
{
        if (m->started) {
                atomic_store(&m->stop, true);
                evqueue_wakeup(m->out);
                pthread_join(m->thread, NULL);
                m->started = false;
        }
        if (m->mosq)
                mosquitto_destroy(m->mosq);
        m->mosq = NULL;
        mosquitto_property_free_all(&m->origin);
        mosquitto_lib_cleanup();
}
