/*
 * main-loop.h - the main thread, its event loop, and the API-half markers.
 *
 * Every public function of blockd belongs to one half:
 *   global state (GS)  main thread only; starts with GLOBAL_STATE_CODE(),
 *                      which asserts it.  Graph changes, open/close, job
 *                      control, monitor commands.
 *   I/O                any thread that runs an event loop; starts with
 *                      IO_CODE(), which asserts the thread has a context.
 *   I/O or GS          callable from I/O code that GS code also uses;
 *                      IO_OR_GS_CODE().
 *   common             no marker, callable from anywhere.
 * Headers are split the same way (*-global-state.h, *-io.h, *-common.h).
 */
#ifndef BLOCKD_MAIN_LOOP_H
#define BLOCKD_MAIN_LOOP_H

#include <assert.h>
#include <stdbool.h>
#include "blockd/aio.h"

/*
 * Create the main context and make the calling thread the main thread.
 * Called once at start-up, before anything else in this header.
 */
void main_loop_init(void);

/* Tear down the main context (end of process, and between unit tests). */
void main_loop_cleanup(void);

/* The main thread's context.  Any thread. */
AioContext *main_aio_context(void);

/*
 * The "iohandler" context: fd handlers and BHs of the monitor live here.
 * Only the outermost main_loop_wait() polls it, so nested event loops in
 * the main thread (drain, job completion, ...) never start a new monitor
 * command.  Main thread.
 */
AioContext *iohandler_aio_context(void);

/* Is the caller the main thread?  Any thread. */
bool in_main_thread(void);

/*
 * One iteration of the outermost main loop: aio_poll() of the main context
 * and then the iohandler context.  Returns true on progress.  Main thread,
 * never nested.
 */
bool main_loop_wait(bool blocking);

#define GLOBAL_STATE_CODE() assert(in_main_thread())
#define IO_CODE()           assert(current_aio_context() != NULL)
#define IO_OR_GS_CODE()     assert(current_aio_context() != NULL)

#endif /* BLOCKD_MAIN_LOOP_H */
