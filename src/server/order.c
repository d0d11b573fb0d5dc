/*
 * order.c - the turn of one connection's requests at the index locks (see
 * order.h for why).
 *
 * The request a worker thread handles is thread-local: the dispatcher's lock
 * step and the FAISSx adapter (which runs several requests of ours for one
 * of its own) need no extra argument, and only the first lock of a request
 * waits for its turn. A request waits only for requests of its own
 * connection that arrived earlier, and those are already at workers (the
 * broker hands them out in order), so the wait always ends.
 */
#include "order.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct fpx_order {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t turn; /* the ticket that may lock next */
};

typedef struct current {
    fpx_order *o;
    uint64_t ticket;
    int passed;
} current;

static _Thread_local current cur;

/* A release/acquire pair between the broker and the workers (below). */
static atomic_uint handoff;

fpx_order *fpx_order_new(void) {
    fpx_order *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    /* The broker hands o to workers inside ZeroMQ messages, whose lock-free
     * queue no sanitizer sees: this release, acquired by fpx_order_enter,
     * makes the initialisation visibly precede every worker's use of o. */
    atomic_fetch_add_explicit(&handoff, 1, memory_order_release);
    return o;
}

void fpx_order_free(fpx_order *o) {
    if (!o)
        return;
    /* ... and every worker's last use (fpx_order_leave) precede the free */
    (void)atomic_load_explicit(&handoff, memory_order_acquire);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
}

void fpx_order_enter(fpx_order *o, uint64_t ticket) {
    (void)atomic_load_explicit(&handoff, memory_order_acquire);
    cur.o = o;
    cur.ticket = ticket;
    cur.passed = 0;
}

void fpx_order_wait(atomic_int *blocked) {
    fpx_order *o = cur.o;
    if (!o || cur.passed)
        return;
    pthread_mutex_lock(&o->mu);
    if (o->turn != cur.ticket) {
        if (blocked)
            atomic_fetch_add(blocked, 1);
        while (o->turn != cur.ticket)
            pthread_cond_wait(&o->cv, &o->mu);
        if (blocked)
            atomic_fetch_sub(blocked, 1);
    }
    pthread_mutex_unlock(&o->mu);
}

void fpx_order_pass(void) {
    fpx_order *o = cur.o;
    if (!o || cur.passed)
        return;
    pthread_mutex_lock(&o->mu);
    o->turn = cur.ticket + 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    cur.passed = 1;
}

void fpx_order_leave(void) {
    fpx_order_wait(NULL);
    fpx_order_pass();
    cur.o = NULL;
    atomic_fetch_add_explicit(&handoff, 1, memory_order_release);
}
