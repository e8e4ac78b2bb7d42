/*
 * handover.h - client sessions kept across a restart, in systemd's fd store.
 *
 * On SIGTERM, when systemd keeps an fd store for ipcd ($FDSTORE, see
 * handover_fdstore_max()), the drain hands every quiet client over instead
 * of closing it: its socket goes into the store (FDNAME=ipcd-client),
 * and what cannot be read off the socket again goes into one memfd stored
 * before them (FDNAME=ipcd-handover): the client id, the socket's inode
 * (which tells the sockets apart: they all go as FDNAME=ipcd-client, up to
 * 253 in one message, so that systemd handles a few messages, not one per
 * client), transport, the role won by `auth`, its counters, its
 * subscriptions and its partial request line. A restart passes them to the next process beside the listeners; it
 * restores every client before it accepts anyone and before READY=1, and
 * removes them from the store (FDSTOREREMOVE=1), so that a crash later
 * never hands out a stale session. On a stop systemd closes the store:
 * the clients see their connection end after their answers.
 *
 * The state is text, one client per line, after a version line
 * "ipcd-handover 1"; a process refuses a version it does not know, and
 * closes what came with it. Client sockets without a state line, and state
 * lines without a socket, are closed and logged, never guessed at.
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
#define HANDOVER_CLIENT_NAME  "ipcd-client" /* every client socket; told apart by inode */
#define HANDOVER_VERSION      1

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
