/*
 * address.h - socket addresses as ipcd and ipcctl spell them:
 * "unix:PATH", "tcp:HOST:PORT", "tcp:[V6ADDR]:PORT", and the embedded
 * default socket path (SPEC §3). Shared so that the daemon and the client
 * find each other the same way. Pure functions; nothing here logs.
 */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct Address {
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
                struct sockaddr_storage storage;
        };
        socklen_t len;
} Address;

/* Longest string address_to_string() produces. */
#define ADDRESS_STRING_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) + 64)

/*
 * Split "HOST", "HOST:PORT", "[V6]" or "[V6]:PORT" (a bare IPv6 literal with
 * several colons is a host without a port). *host and *port are malloc'd;
 * *port is NULL when none was given.
 */
int address_split_host_port(const char *s, char **host, char **port);

/* A Unix socket address; -ENAMETOOLONG if the path does not fit. */
int address_from_unix_path(const char *path, Address *a);

/*
 * Parse a --listen specification: "unix:PATH" or "tcp:HOST:PORT" (HOST
 * resolved numerically or by name, the first result taken; PORT defaults
 * to 9966). -EINVAL for a malformed spec, -EADDRNOTAVAIL if HOST does not
 * resolve.
 */
int address_parse_listen(const char *spec, Address *a);

/* "unix:/run/ipcd/ipcd.sock", "tcp:127.0.0.1:9966", "tcp:[::1]:9966". */
int address_to_string(const Address *a, char *buf, size_t size);

/* A TCP peer as "127.0.0.1:4242" or "[::1]:4242". */
int address_peer_to_string(const struct sockaddr *sa, socklen_t len, char *buf, size_t size);

/*
 * The embedded default socket path: $RUNTIME_DIRECTORY/ipcd.sock (the first
 * entry when systemd gives several), else /run/ipcd/ipcd.sock for root,
 * else $XDG_RUNTIME_DIR/ipcd.sock. -ENXIO when none applies.
 */
int address_default_socket_path(char *buf, size_t size);

/*
 * Where a client looks by default: /run/ipcd/ipcd.sock for root; for
 * others $XDG_RUNTIME_DIR/ipcd.sock (a per-user ipcd) when that socket
 * exists, else the system socket /run/ipcd/ipcd.sock. $RUNTIME_DIRECTORY
 * is not consulted: it names the runtime directory of whatever service
 * runs the client, not ipcd's.
 */
int address_client_socket_path(char *buf, size_t size);
