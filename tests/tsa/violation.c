/*
 * Must NOT compile under clang -Wthread-safety -Werror: proves that the
 * annotations are checked (scripts/check.sh expects this file to fail).
 */
#include "blockd/block-int.h"
#include "blockd/coroutine.h"
#include "blockd/thread.h"

static BdMutex global_lock;
static int global_counter TSA_GUARDED_BY(global_lock);

int read_without_lock(void);
int read_without_lock(void)
{
    return global_counter;            /* error: requires holding global_lock */
}

bool peek_without_lock(CoMutex *m);
bool peek_without_lock(CoMutex *m)
{
    return m->locked;                 /* error: requires holding m->lock */
}

/* A job that looks at its source's backing file without the graph lock. */
bool has_backing_without_lock(BlockDriverState *bs);
bool has_backing_without_lock(BlockDriverState *bs)
{
    return bs->backing != NULL;       /* error: requires holding graph_lock */
}

/* A permission change under the read lock only. */
void set_perm_under_read_lock(BdrvChild *c);
void set_perm_under_read_lock(BdrvChild *c) GRAPH_RDLOCK
{
    c->perm = 0;                      /* error: requires holding graph_lock exclusively */
}
