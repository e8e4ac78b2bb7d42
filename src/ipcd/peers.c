/*
 * peers.c - connection counts per peer; see peers.h.
 *
 * The PeerTable is the registry's: every call is made under the registry
 * lock (Server.lock), on the main thread (accept) or a reader thread (a
 * client going away). Memory work only: no socket call, no logging.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "peers.h"

struct PeerCount {
        PeerCount *next;
        PeerKey key;
        unsigned n;
};

#define PEERS_BUCKETS 1024

PeerKey peer_key_uid(uid_t uid)
{
        PeerKey k = {.kind = PEER_UID};
        uint32_t u = (uint32_t)uid;

        memcpy(k.bytes, &u, sizeof(u));
        return k;
}

PeerKey peer_key_address(const struct sockaddr *sa)
{
        PeerKey k = {.kind = PEER_ADDRESS};

        if (sa->sa_family == AF_INET6)
                memcpy(k.bytes, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        else if (sa->sa_family == AF_INET) {
                /* ::ffff:a.b.c.d, the same key as a v4-mapped IPv6 peer */
                k.bytes[10] = k.bytes[11] = 0xff;
                memcpy(k.bytes + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        } else
                k.kind = PEER_NONE;
        return k;
}

static size_t bucket(const PeerKey *k)
{
        uint64_t h = 14695981039346656037ULL ^ (uint64_t)k->kind;

        for (size_t i = 0; i < sizeof(k->bytes); i++)
                h = (h ^ k->bytes[i]) * 1099511628211ULL;
        return h & (PEERS_BUCKETS - 1);
}

static bool key_equal(const PeerKey *a, const PeerKey *b)
{
        return a->kind == b->kind && memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

int peers_init(PeerTable *t)
{
        t->n_buckets = PEERS_BUCKETS;
        t->buckets = calloc(PEERS_BUCKETS, sizeof(*t->buckets));
        return t->buckets ? 0 : -ENOMEM;
}

void peers_done(PeerTable *t)
{
        for (size_t i = 0; t->buckets && i < t->n_buckets; i++)
                for (PeerCount *p = t->buckets[i], *n; p; p = n) {
                        n = p->next;
                        free(p);
                }
        free(t->buckets);
        t->buckets = NULL;
}

unsigned peers_count(const PeerTable *t, const PeerKey *k)
{
        if (k->kind == PEER_NONE)
                return 0;
        for (PeerCount *p = t->buckets[bucket(k)]; p; p = p->next)
                if (key_equal(&p->key, k))
                        return p->n;
        return 0;
}

int peers_add(PeerTable *t, const PeerKey *k)
{
        size_t b = bucket(k);
        PeerCount *p;

        if (k->kind == PEER_NONE)
                return 0;
        for (p = t->buckets[b]; p; p = p->next)
                if (key_equal(&p->key, k)) {
                        p->n++;
                        return 0;
                }
        p = malloc(sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (PeerCount){.next = t->buckets[b], .key = *k, .n = 1};
        t->buckets[b] = p;
        return 0;
}

void peers_remove(PeerTable *t, const PeerKey *k)
{
        if (k->kind == PEER_NONE)
                return;
        for (PeerCount **p = &t->buckets[bucket(k)]; *p; p = &(*p)->next)
                if (key_equal(&(*p)->key, k)) {
                        if (--(*p)->n == 0) {
                                PeerCount *gone = *p;
                                *p = gone->next;
                                free(gone);
                        }
                        return;
                }
}
