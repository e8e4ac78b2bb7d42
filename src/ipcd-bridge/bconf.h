/*
 * bconf.h - bridge.conf(5): the broker, the rules, the limits.
 *
 * A BridgeConfig is loaded once on the main thread before any other thread
 * starts and is immutable afterwards, so both threads read it without a
 * lock; bridge_config_free() runs after they are joined.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "buffer.h"

/* [Out NAME]: local events on LocalTopic go to the broker as MqttTopic. */
typedef struct OutRule {
        char *name;
        char *local_topic;
        char *mqtt_topic; /* %H expanded; no wildcards */
        int qos;          /* 0 or 1 */
        bool retain;
        char *where; /* "file:line", for messages */
} OutRule;

/* [In NAME]: messages matching MqttTopic (a filter) become local events on
 * LocalTopic. */
typedef struct InRule {
        char *name;
        char *mqtt_filter; /* %H expanded */
        char *local_topic;
        int qos;
        bool retained; /* accept retained messages */
        char *where;
} InRule;

typedef struct BridgeConfig {
        char *broker;      /* as written, for messages */
        char *broker_host; /* from Broker= */
        int broker_port;
        bool tls; /* mqtts:// */
        char *host; /* Host=, the name in topics (%H); default: gethostname() */
        char *client_id;
        unsigned keepalive_sec;
        char *username;
        char *password; /* read from PasswordFile=; never logged */
        char *ca_file, *ca_path, *cert_file, *key_file;
        char *socket_path; /* ipcd's Unix socket */
        char *status_topic;
        size_t queue_max_events, queue_max_bytes;
        bool clean_session;
        unsigned session_expiry_sec;
        unsigned reconnect_max_sec;
        int log_level;
        OutRule *out;
        size_t n_out;
        InRule *in;
        size_t n_in;
} BridgeConfig;

/*
 * Load `path` (must exist). Every problem is appended to `errors` as
 * "file:line: message\n"; -EINVAL if there was any. `socket_override`,
 * when set, replaces Socket=.
 */
int bridge_config_load(const char *path, const char *socket_override, BridgeConfig **ret,
                       Buffer *errors);
BridgeConfig *bridge_config_free(BridgeConfig *c);

/* True for an MQTT topic name (publishable) / filter (subscribable). */
bool mqtt_topic_name_is_valid(const char *s);
bool mqtt_topic_filter_is_valid(const char *s);
