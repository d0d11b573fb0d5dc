/*
 * order.h - one connection's requests take their index locks in the order
 * they arrived.
 *
 * The broker (net.c) hands a connection's requests to the workers in arrival
 * order, but workers run in parallel: without this, two pipelined
 * add_vectors of one DEALER connection could reach the index lock in either
 * order, and unkeyed vectors would get their labels out of order. Each
 * request carries a ticket, its rank among its connection's requests; a
 * request takes its turn (fpx_order_wait) before its index lock and gives it
 * to the next one (fpx_order_pass) once it holds the lock, so requests still
 * run in parallel, only their locks are taken in order. A request that takes
 * no lock passes its turn when it ends.
 */
#ifndef FPX_ORDER_H
#define FPX_ORDER_H

#include <stdatomic.h>
#include <stdint.h>

/* The turn of one connection: the ticket whose request may lock next. */
typedef struct fpx_order fpx_order;

/* NULL when out of memory (the connection's requests are then not ordered). */
fpx_order *fpx_order_new(void);
/* After the last of its requests ended. */
void fpx_order_free(fpx_order *o);

/* The request the calling thread handles from now on: ticket of o (o NULL:
 * not ordered, as for internal requests). */
void fpx_order_enter(fpx_order *o, uint64_t ticket);
/* Waits for the calling thread's request's turn (at once when it had it),
 * counting itself in blocked meanwhile (net.c grows the pool when every
 * worker waits). */
void fpx_order_wait(atomic_int *blocked);
/* Gives the turn to the connection's next request (once; later calls do
 * nothing). */
void fpx_order_pass(void);
/* The request ends: passes the turn if it has not, after waiting for it. */
void fpx_order_leave(void);

#endif
