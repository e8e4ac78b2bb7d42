/*
 * evqueue.c - the bounded cross-thread event FIFO; see evqueue.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "evqueue.h"
#include "macro.h"

/* What an event costs against max_bytes: its bytes plus its bookkeeping. */
static size_t event_cost(const Event *e)
{
        return sizeof(*e) + strlen(e->topic) + 1 + e->len;
}

Event *event_new(const char *topic, const void *payload, size_t len, int qos, bool retain)
{
        Event *e = calloc(1, sizeof(*e));

        if (!e)
                return NULL;
        e->topic = strdup(topic);
        e->payload = malloc(len + 1);
        if (!e->topic || !e->payload) {
                event_free(e);
                return NULL;
        }
        if (len > 0)
                memcpy(e->payload, payload, len);
        e->payload[len] = 0;
        e->len = len;
        e->qos = qos;
        e->retain = retain;
        return e;
}

void event_free(Event *e)
{
        if (!e)
                return;
        free(e->topic);
        free(e->payload);
        free(e);
}

int evqueue_init(EventQueue *q, size_t max_n, size_t max_bytes)
{
        *q = (EventQueue){.max_n = max_n, .max_bytes = max_bytes};
        q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (q->efd < 0)
                return -errno;
        pthread_mutex_init(&q->lock, NULL);
        return 0;
}

void evqueue_done(EventQueue *q)
{
        Event *e;

        while ((e = evqueue_pop(q)))
                event_free(e);
        pthread_mutex_destroy(&q->lock);
        q->efd = safe_close(q->efd);
}

void evqueue_wakeup(EventQueue *q)
{
        uint64_t one = 1;

        (void)!write(q->efd, &one, sizeof(one));
}

size_t evqueue_push(EventQueue *q, Event *e)
{
        size_t dropped = 0;

        e->next = NULL;
        pthread_mutex_lock(&q->lock);
        while (q->head && (q->n + 1 > q->max_n || q->bytes + event_cost(e) > q->max_bytes)) {
                Event *old = q->head;
                q->head = old->next;
                if (!q->head)
                        q->tail = NULL;
                q->n--;
                q->bytes -= event_cost(old);
                event_free(old);
                dropped++;
        }
        if (q->tail)
                q->tail->next = e;
        else
                q->head = e;
        q->tail = e;
        q->n++;
        q->bytes += event_cost(e);
        atomic_store(&q->n_now, q->n);
        pthread_mutex_unlock(&q->lock);
        if (dropped)
                atomic_fetch_add(&q->dropped, dropped);
        evqueue_wakeup(q);
        return dropped;
}

void evqueue_push_front(EventQueue *q, Event *e)
{
        pthread_mutex_lock(&q->lock);
        e->next = q->head;
        q->head = e;
        if (!q->tail)
                q->tail = e;
        q->n++;
        q->bytes += event_cost(e);
        atomic_store(&q->n_now, q->n);
        pthread_mutex_unlock(&q->lock);
}

Event *evqueue_pop(EventQueue *q)
{
        Event *e;

        pthread_mutex_lock(&q->lock);
        e = q->head;
        if (e) {
                q->head = e->next;
                if (!q->head)
                        q->tail = NULL;
                q->n--;
                q->bytes -= event_cost(e);
                e->next = NULL;
        }
        atomic_store(&q->n_now, q->n);
        pthread_mutex_unlock(&q->lock);
        return e;
}

void evqueue_clear_wakeup(EventQueue *q)
{
        uint64_t v;

        (void)!read(q->efd, &v, sizeof(v));
}
