/*
 * export-types.h - the export types export.c dispatches to (one
 * BlockExportDriver each).
 */
#ifndef BLOCKD_EXPORT_TYPES_H
#define BLOCKD_EXPORT_TYPES_H

#include "blockd/export-driver.h"

extern const BlockExportDriver blk_exp_nbd;     /* nbd-export.c */
extern const BlockExportDriver blk_exp_fuse;    /* fuse-export.c */
extern const BlockExportDriver blk_exp_vhost_user_blk;  /* vhost-user-blk.c */

#endif /* BLOCKD_EXPORT_TYPES_H */
