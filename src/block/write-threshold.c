/*
 * write-threshold.c - block-set-write-threshold: tell the user once when a
 * write reaches past a given offset of a node (thin provisioning: time to
 * grow the storage under it).
 *
 * The threshold is armed by the main thread and disarmed by the first
 * write that passes it, from whatever thread that write runs in; a
 * compare-and-swap makes sure exactly one write reports it.
 */
#include "blockd/atomic.h"
#include "blockd/block-global-state.h"
#include "blockd/block-io.h"
#include "blockd/block-int.h"
#include "blockd/main-loop.h"

static BlockEventSink *event_sink;

void bdrv_set_event_sink(BlockEventSink *sink)
{
    GLOBAL_STATE_CODE();
    event_sink = sink;
}

void bdrv_emit_event(const char *name, json_object *data)
{
    if (event_sink) {
        event_sink(name, data);
    } else {
        json_object_put(data);
    }
}

void bdrv_write_threshold_set(BlockDriverState *bs, uint64_t threshold)
{
    GLOBAL_STATE_CODE();
    atomic_set(&bs->write_threshold, threshold);
}

uint64_t bdrv_write_threshold_get(BlockDriverState *bs)
{
    return atomic_read(&bs->write_threshold);
}

void bdrv_write_threshold_check(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    uint64_t threshold = atomic_read(&bs->write_threshold);
    uint64_t end = (uint64_t)offset + bytes;
    json_object *data;

    if (!threshold || end <= threshold ||
        atomic_cmpxchg(&bs->write_threshold, threshold, 0) != threshold) {
        return;
    }
    data = json_object_new_object();
    json_object_object_add(data, "node-name", json_object_new_string(bs->node_name));
    json_object_object_add(data, "amount-exceeded", json_object_new_int64(end - threshold));
    json_object_object_add(data, "write-threshold", json_object_new_int64(threshold));
    bdrv_emit_event("BLOCK_WRITE_THRESHOLD", data);
}
