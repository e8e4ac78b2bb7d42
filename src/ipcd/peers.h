/*
 * peers.h - how many connections each peer holds: per uid for Unix peers
 * (MaxClientsPerUID=), per address for TCP peers (MaxClientsPerAddress=).
 *
 * A PeerTable belongs to the server's registry and is used only under the
 * registry lock. Memory work only.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef enum PeerKind {
        PEER_NONE, /* not counted */
        PEER_UID,
        PEER_ADDRESS,
} PeerKind;

typedef struct PeerKey {
        PeerKind kind;
        uint8_t bytes[16]; /* the uid, or the IPv6 (or v4-mapped) address */
} PeerKey;

typedef struct PeerCount PeerCount;

typedef struct PeerTable {
        PeerCount **buckets;
        size_t n_buckets;
} PeerTable;

PeerKey peer_key_uid(uid_t uid);
/* The address of an AF_INET or AF_INET6 peer, without its port. */
PeerKey peer_key_address(const struct sockaddr *sa);

int peers_init(PeerTable *t);
void peers_done(PeerTable *t);
unsigned peers_count(const PeerTable *t, const PeerKey *k);
/* One more connection for k; -ENOMEM. */
int peers_add(PeerTable *t, const PeerKey *k);
void peers_remove(PeerTable *t, const PeerKey *k);
