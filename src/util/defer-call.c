/*
 * defer-call.c - per-thread deferral sections.
 *
 * The pending calls live in a small thread-local array; batches are short
 * (one entry per distinct backend touched in a section), so a linear search
 * for duplicates beats anything cleverer.  If the array is full the call
 * simply runs at once: deferral only batches, it never changes results.
 * A section begins and ends in the same thread: a coroutine must not move
 * between contexts inside one.
 */
#include <assert.h>

#include "blockd/compiler.h"
#include "blockd/defer-call.h"

#define DEFER_MAX 64

typedef struct DeferredCall {
    DeferCallFn *fn;
    void *opaque;
} DeferredCall;

typedef struct DeferState {
    unsigned nesting;
    unsigned count;
    unsigned next_to_run;    /* entries before this one have already run */
    DeferredCall calls[DEFER_MAX];
} DeferState;

static __thread DeferState defer_state;

/* Not inlined: a coroutine may run in another thread than last time. */
static __attribute__((noinline)) DeferState *defer_state_get(void)
{
    DeferState *p = &defer_state;
    __asm__ __volatile__("" : "+r"(p));
    return p;
}

void defer_call_begin(void)
{
    defer_state_get()->nesting++;
}

void defer_call_end(void)
{
    DeferState *s = defer_state_get();

    assert(s->nesting > 0);
    if (s->nesting > 1) {
        s->nesting--;
        return;
    }
    /* Still "inside" while running: what the calls defer joins this loop. */
    while (s->next_to_run < s->count) {
        DeferredCall call = s->calls[s->next_to_run++];
        call.fn(call.opaque);
    }
    s->count = 0;
    s->next_to_run = 0;
    s->nesting--;
}

void defer_call(DeferCallFn *fn, void *opaque)
{
    DeferState *s = defer_state_get();

    if (s->nesting == 0) {
        fn(opaque);
        return;
    }
    for (unsigned i = s->next_to_run; i < s->count; i++) {
        if (s->calls[i].fn == fn && s->calls[i].opaque == opaque) {
            return;
        }
    }
    if (s->count == DEFER_MAX) {
        fn(opaque);
        return;
    }
    s->calls[s->count++] = (DeferredCall){ fn, opaque };
}
