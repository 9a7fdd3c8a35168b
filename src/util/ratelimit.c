/*
 * ratelimit.c - bytes-per-second limiting in time slices.
 *
 * Time is cut in slices of slice_ns; each slice allows slice_quota bytes.
 * Work done beyond the quota pushes the end of the slice out by as many
 * slices as it used, and the caller waits until then.
 */
#include "blockd/ratelimit.h"

void ratelimit_init(RateLimit *rl)
{
    bd_mutex_init(&rl->lock);
    bd_mutex_lock(&rl->lock);
    rl->slice_ns = 100 * 1000 * 1000;
    rl->slice_quota = 0;
    rl->slice_start_ns = rl->slice_end_ns = 0;
    rl->dispatched = 0;
    bd_mutex_unlock(&rl->lock);
}

void ratelimit_destroy(RateLimit *rl)
{
    bd_mutex_destroy(&rl->lock);
}

void ratelimit_set_speed(RateLimit *rl, uint64_t speed, int64_t slice_ns)
{
    /* At least one byte per slice, so a tiny speed still moves. */
    uint64_t quota = speed ? (speed * (uint64_t)slice_ns + 999999999) / 1000000000 : 0;

    bd_mutex_lock(&rl->lock);
    /* A new speed counts from now: work done before (perhaps unlimited)
     * is not owed to it.  The same speed again changes nothing, or asking
     * for it repeatedly would lift the limit. */
    if (quota != rl->slice_quota || slice_ns != rl->slice_ns) {
        rl->slice_start_ns = rl->slice_end_ns = 0;
        rl->dispatched = 0;
    }
    rl->slice_ns = slice_ns;
    rl->slice_quota = quota;
    bd_mutex_unlock(&rl->lock);
}

void ratelimit_account(RateLimit *rl, uint64_t bytes)
{
    int64_t now = clock_now_ns();

    bd_mutex_lock(&rl->lock);
    if (!rl->slice_quota) {
        bd_mutex_unlock(&rl->lock);   /* unlimited: nothing to remember */
        return;
    }
    if (now >= rl->slice_end_ns) {
        rl->slice_start_ns = now;
        rl->slice_end_ns = now + rl->slice_ns;
        rl->dispatched = 0;
    }
    rl->dispatched += bytes;
    bd_mutex_unlock(&rl->lock);
}

int64_t ratelimit_delay_ns(RateLimit *rl)
{
    int64_t now = clock_now_ns(), end, delay = 0;

    bd_mutex_lock(&rl->lock);
    if (rl->slice_quota && rl->dispatched > rl->slice_quota) {
        end = rl->slice_start_ns + (int64_t)(rl->dispatched / rl->slice_quota) * rl->slice_ns;
        if (end > rl->slice_end_ns) {
            rl->slice_end_ns = end;
        }
        delay = rl->slice_end_ns - now;
        if (delay < 0) {
            delay = 0;
        }
    }
    bd_mutex_unlock(&rl->lock);
    return delay;
}
