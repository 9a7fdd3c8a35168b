/*
 * defer-call.h - batch work until the end of a section.
 *
 * Half: I/O (thread-local; any thread).
 *
 * A request source that is about to submit several requests (one NBD read
 * loop, one job iteration) wraps them in defer_call_begin()/end().  Code
 * below that wants to act once per batch -- typically "submit everything
 * queued to io_uring" -- calls defer_call(fn, opaque) instead of acting at
 * once; fn runs at the outermost defer_call_end(), once per distinct
 * (fn, opaque) pair, in the order first deferred.  Outside a section
 * defer_call() runs fn immediately.  Sections nest.
 */
#ifndef BLOCKD_DEFER_CALL_H
#define BLOCKD_DEFER_CALL_H

typedef void DeferCallFn(void *opaque);

void defer_call_begin(void);
void defer_call_end(void);
void defer_call(DeferCallFn *fn, void *opaque);

#endif /* BLOCKD_DEFER_CALL_H */
