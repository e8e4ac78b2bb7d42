/*
 * events.h - subscribe, unsubscribe and publish (SPEC §5): events fan out
 * from the publisher's reader thread onto each subscriber's queue.
 */
#pragma once

#include "client.h"

/* Most topics one client may subscribe to. */
#define EVENTS_MAX_TOPICS 256

/* Each appends the final frame to c->out; 0 = OK, 1 = ERR, -ENOMEM. */
int events_subscribe(Client *c, const ProtoRequest *req);
int events_unsubscribe(Client *c, const ProtoRequest *req);
int events_publish(Client *c, const ProtoRequest *req);
