/*
 * block-init.c - register the drivers and wire drain into the graph lock.
 */
#include "blockd/block.h"
#include "blockd/block-global-state.h"
#include "blockd/main-loop.h"
#include "blockd/throttle.h"
#include "block-internal.h"


static bool initialised;

void bdrv_init(void)
{
    GLOBAL_STATE_CODE();
    if (!initialised) {
        bdrv_register(&bdrv_null_co);
        bdrv_register(&bdrv_null_aio);
        bdrv_register(&bdrv_compress);
        bdrv_register(&bdrv_nbd);
        bdrv_register(&bdrv_rbd);
        bdrv_register(&bdrv_host_device);
        bdrv_register(&bdrv_copy_on_read);
        bdrv_register(&bdrv_preallocate);
        bdrv_register(&bdrv_throttle);
        bdrv_register(&bdrv_luks);
        bdrv_register(&bdrv_blkverify);
        bdrv_register(&bdrv_quorum);
        throttle_groups_init();
        bdrv_register(&bdrv_file);
        bdrv_register(&bdrv_raw);
        bdrv_register(&bdrv_blkdebug);
        bdrv_register(&bdrv_qcow2);
        bdrv_register(&bdrv_copy_before_write);
        bdrv_register(&bdrv_snapshot_access);
        initialised = true;
    }
    /* A graph writer quiesces every node so readers cannot starve it. */
    graph_lock_set_drain_hooks(bdrv_drain_all_begin_nopoll, bdrv_drain_all_end);
}
