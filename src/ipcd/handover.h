/*
 * handover.h - client sessions kept across a restart, in systemd's fd store.
 *
 * On SIGTERM, when systemd keeps an fd store for ipcd ($FDSTORE, see
 * handover_fdstore_max()), the drain hands every quiet client over instead
 * of closing it. Two fds go into the store: a memfd with what cannot be
 * read off the sockets again (FDNAME=ipcd-handover): the client id, the
 * socket's inode (which tells the sockets apart), transport, the role won
 * by `auth`, its counters, its subscriptions and its partial request line;
 * and the carrier (FDNAME=ipcd-clients), a socket pair with every client
 * socket queued in one end (SCM_RIGHTS), so that systemd takes three fds,
 * not one per client. A restart passes them to the next process
 * beside the listeners; it restores every client before it accepts anyone
 * and before READY=1, and removes them from the store (FDSTOREREMOVE=1), so
 * that a crash later never hands out a stale session. On a stop systemd
 * closes the store, and with the carrier the sockets in it: the clients see
 * their connection end after their answers.
 *
 * The state is text, one client per line, after a version line
 * "ipcd-handover 2"; a process refuses a version it does not know, and
 * closes what came with it. Version 1 (the same lines, each socket stored
 * on its own as FDNAME=ipcd-client) is still read. Client sockets without
 * a state line, and state lines without a socket, are closed and logged,
 * never guessed at.
 *
 * Main thread only: handover_store() runs at the end of the drain, when no
 * client thread runs any more; handover_restore() before the first client
 * thread starts.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "client.h"

struct Server;

#define HANDOVER_STATE_NAME   "ipcd-handover"
#define HANDOVER_CARRIER_NAME "ipcd-clients" /* the socket pair's end that holds them */
#define HANDOVER_CLIENT_NAME  "ipcd-client"  /* version 1: one client socket each */
#define HANDOVER_VERSION      2
#define HANDOVER_FDS_PER_MESSAGE 253 /* SCM_MAX_FD */

/* What systemd passed back from the store (server_open_listeners). */
typedef struct HandoverFds {
        int state_fd; /* -1: none */
        struct {
                uint64_t ino; /* the socket's inode, which the state names */
                int fd;
        } *clients;
        size_t n_clients;
} HandoverFds;

#define HANDOVER_FDS_INIT ((HandoverFds){.state_fd = -1})

/* How many fds systemd's store takes for ipcd ($FDSTORE); 0: no store, or
 * not under systemd. */
unsigned handover_fdstore_max(void);

/* Set aside an fd systemd passed under `name` if it is one of ours: 1 if
 * taken (kept in h), 0 if not ours, -errno. */
int handover_take_fd(HandoverFds *h, int fd, const char *name);

/*
 * Store `clients` (those whose reader stopped for the handover, with
 * nothing left in their outbox) and their state; returns how many were
 * stored. The others are left to close as on a stop.
 */
int handover_store(Client **clients, size_t n);

/* Take the stored clients back: listed, subscribed and running; returns how
 * many. Closes whatever it cannot restore. */
int handover_restore(struct Server *s, HandoverFds *h);
