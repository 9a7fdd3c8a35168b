/*
 * export-driver.h - for the authors of an export type (NBD, and the next
 * ones): what blk_exp_add() does for every type, and what a type adds.
 *
 * The generic part (export.c) owns the export: its id, its BlockBackend
 * on the node (write permission if "writable"), the contexts it runs in
 * ("iothread", "fixed-iothread", blockd's "iothreads"), its users (NBD
 * connections, ...) and what they do in drained sections.  A type parses
 * its own options, serves its users, and ends them when asked.
 *
 * Half: global state, except where noted.
 */
#ifndef BLOCKD_EXPORT_DRIVER_H
#define BLOCKD_EXPORT_DRIVER_H

#include "blockd/export.h"
#include "blockd/list.h"

typedef struct BlockExportDriver {
    const char *type;                   /* BlockExportOptions' "type" */
    /* Checks that come before anything is set up (@options as given);
     * QEMU's messages.  NULL: none. */
    bool (*check)(json_object *options, Error **errp);
    /* The type's part of @exp (its BlockBackend and contexts are ready):
     * its state, or NULL with @errp set. */
    void *(*create)(BlockExport *exp, json_object *options, Error **errp);
    /* Ask every user of @exp to end; blk_exp_del() then waits until the
     * last one called blk_exp_remove_user(). */
    void (*request_shutdown)(BlockExport *exp);
    /* The node changed size.  Any thread (the one that resized it): the
     * type hands the news to its own context.  NULL: nothing to tell. */
    void (*resized)(BlockExport *exp);
    /* Free the state create() returned (the last reference is gone). */
    void (*free)(void *state);
} BlockExportDriver;

/* The state the type's create() returned.  Common. */
void *blk_exp_state(BlockExport *exp);
/* The driver of @exp.  Common. */
const BlockExportDriver *blk_exp_driver(BlockExport *exp);

/* A user (a connection) starts or stops using @exp; @link is the user's,
 * kept on the export's list for request_shutdown. */
void blk_exp_add_user(BlockExport *exp, ListNode *link);
void blk_exp_remove_user(BlockExport *exp, ListNode *link);
/* Call @fn for each user's link (request_shutdown). */
void blk_exp_foreach_user(BlockExport *exp, void (*fn)(ListNode *link));

/* Requests of all users in flight (any thread, atomic): a drain of the
 * node waits for them. */
void blk_exp_request_begin(BlockExport *exp);
void blk_exp_request_end(BlockExport *exp);
/* A request begins in a coroutine: counted, and not while the node is
 * drained (it waits for the drained section to end).  Ends with
 * blk_exp_request_end(). */
void coroutine_fn blk_exp_co_request_begin(BlockExport *exp);
/* "writethrough": the backend's write cache is off.  Common. */
bool blk_exp_writethrough(BlockExport *exp);
/* Is the node drained right now (no new request may start)?  Any thread. */
bool blk_exp_quiesced(BlockExport *exp);
/* Wait until it is not (coroutine, in one of the export's contexts). */
void coroutine_fn blk_exp_wait_unquiesced(BlockExport *exp);

#endif /* BLOCKD_EXPORT_DRIVER_H */
