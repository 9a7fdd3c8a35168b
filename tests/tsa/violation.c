/*
 * Must NOT compile under clang -Wthread-safety -Werror: proves that the
 * annotations are checked (scripts/check.sh expects this file to fail).
 */
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
