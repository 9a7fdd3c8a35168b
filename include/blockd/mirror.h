/*
 * mirror.h - starting mirror and backup jobs (blockdev-mirror,
 * blockdev-backup).
 *
 * Half: global state.
 */
#ifndef BLOCKD_MIRROR_H
#define BLOCKD_MIRROR_H

#include "blockd/blockjob.h"

/* QAPI MirrorSyncMode; "incremental" is backup's "bitmap" with bitmap
 * mode "on-success", and only backup takes either. */
typedef enum MirrorSyncMode {
    MIRROR_SYNC_FULL,
    MIRROR_SYNC_TOP,
    MIRROR_SYNC_NONE,
    MIRROR_SYNC_BITMAP,
} MirrorSyncMode;

/* QAPI BitmapSyncMode: what a backup leaves in its bitmap. */
typedef enum BitmapSyncMode {
    BITMAP_SYNC_ON_SUCCESS,     /* the writes since the start, if it succeeded */
    BITMAP_SYNC_NEVER,          /* as it was, plus the writes since */
    BITMAP_SYNC_ALWAYS,         /* what is still not copied, plus the writes */
} BitmapSyncMode;

bool mirror_parse_sync(const char *s, MirrorSyncMode *out, Error **errp);
/* "background" or "write-blocking". */
bool mirror_parse_copy_mode(const char *s, bool *write_blocking, Error **errp);

typedef struct MirrorArgs {
    const char *job_id;
    BlockDriverState *source;
    BlockDriverState *target;
    BlockDriverState *to_replace;       /* NULL: the source */
    const char *filter_node_name;       /* NULL: automatic */
    JobTxn *txn;                        /* NULL: its own */
    MirrorSyncMode sync;
    int64_t speed;
    int64_t granularity;                /* 0: 64 KiB */
    int64_t buf_size;                   /* 0: 16 MiB */
    bool write_blocking;
    bool no_unmap;                      /* mirror unmap=false */
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    bool auto_finalize;
    bool auto_dismiss;
    /* Active commit (job type "commit"): @target is @source's backing
     * chain member @base; only what lies above it is copied, the layers
     * between are held, and a smaller base grows first. */
    BlockDriverState *base;
    /* drive-mirror: at the switch, @target gets @target_backing (NULL:
     * none) as its backing node, as the image it created names it. */
    bool set_target_backing;
    BlockDriverState *target_backing;
    /* The target reads as zeroes (an image the command just created):
     * sync "full" copies only what is allocated somewhere in the chain. */
    bool target_zeroed;
    /* backup's x-perf: copies in flight, bytes per copy (0: defaults) */
    int max_workers;
    int64_t max_chunk;
    /* backup: a named bitmap of the source (sync "bitmap" copies what it
     * marks), and what to leave in it. */
    struct BdrvDirtyBitmap *bitmap;
    BitmapSyncMode bitmap_mode;
    /* backup: write compressed clusters (the target's driver must store
     * them); discard on the source what was copied (the job then writes
     * the source, which its other users must allow). */
    bool compress;
    bool discard_source;
} MirrorArgs;

/* Start a mirror job; NULL and an error if it cannot start. */
Job *mirror_start(const MirrorArgs *a, Error **errp);

/*
 * Create a backup job (uses source, target, filter_node_name, txn, sync,
 * speed, error policies, auto-*); the copy-before-write filter is in place
 * when it returns.  It is started by backup_start_job() so that a QMP
 * transaction can start all its jobs at once.
 */
Job *backup_create(const MirrorArgs *a, Error **errp);
void backup_start_job(Job *job);

#endif /* BLOCKD_MIRROR_H */
