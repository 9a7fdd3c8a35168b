/*
 * virtqueue.c - split virtqueues in untrusted guest memory.
 *
 * Everything the guest can change is read once into a local copy and
 * checked there: an index or address checked and then read again could
 * have changed in between.  Little-endian hosts only (virtio 1.x rings
 * are little-endian, and so is x86-64).
 */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "blockd/atomic.h"
#include "virtqueue.h"

#define VRING_DESC_F_NEXT       1
#define VRING_DESC_F_WRITE      2
#define VRING_DESC_F_INDIRECT   4
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];                    /* then used_event */
};

struct vq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct vq_used {
    uint16_t flags;
    uint16_t idx;
    struct vq_used_elem ring[];         /* then avail_event */
};

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio rings are little-endian");

/* ---- Guest memory ---------------------------------------------------------- */

static void *region_lookup(const VuMem *mem, uint64_t addr, uint64_t len, bool by_qva)
{
    if (len > UINT64_MAX - addr) {
        return NULL;
    }
    for (int i = 0; i < mem->nregions; i++) {
        const VuRegion *r = &mem->regions[i];
        uint64_t start = by_qva ? r->qva : r->gpa;

        if (addr >= start && addr - start <= r->size && len <= r->size - (addr - start)) {
            return r->host + (addr - start);
        }
    }
    return NULL;
}

void *vu_gpa_to_host(const VuMem *mem, uint64_t gpa, uint64_t len)
{
    return region_lookup(mem, gpa, len, false);
}

void *vu_qva_to_host(const VuMem *mem, uint64_t qva, uint64_t len)
{
    return region_lookup(mem, qva, len, true);
}

void vu_mem_unmap(VuMem *mem)
{
    for (int i = 0; i < mem->nregions; i++) {
        munmap(mem->regions[i].map, mem->regions[i].map_size);
    }
    mem->nregions = 0;
}

/* ---- Setting a queue up ----------------------------------------------------- */

bool vq_map(VirtQueue *vq, const VuMem *mem, unsigned num, uint64_t desc_qva,
            uint64_t avail_qva, uint64_t used_qva, bool event_idx, const char **why)
{
    /* With EVENT_IDX each ring has one more u16 at its end. */
    uint64_t desc_len = (uint64_t)num * sizeof(struct vq_desc);
    uint64_t avail_len = 4 + 2 * (uint64_t)num + (event_idx ? 2 : 0);
    uint64_t used_len = 4 + (uint64_t)num * sizeof(struct vq_used_elem) + (event_idx ? 2 : 0);

    if (num == 0 || num > VQ_MAX_SIZE || (num & (num - 1))) {
        *why = "ring size is not a power of 2 up to 32768";
        return false;
    }
    if ((desc_qva & 15) || (avail_qva & 1) || (used_qva & 3)) {
        *why = "ring address misaligned";
        return false;
    }
    vq->desc = vu_qva_to_host(mem, desc_qva, desc_len);
    vq->avail = vu_qva_to_host(mem, avail_qva, avail_len);
    vq->used = vu_qva_to_host(mem, used_qva, used_len);
    if (!vq->desc || !vq->avail || !vq->used) {
        *why = "ring outside guest memory";
        return false;
    }
    vq->mem = mem;
    vq->num = num;
    vq->event_idx = event_idx;
    vq->used_idx = vq->used->idx;       /* ours, unless the guest meddled */
    vq->signalled_valid = false;
    return true;
}

/* ---- Taking requests ------------------------------------------------------------ */

/* One descriptor, read once. */
static struct vq_desc read_desc(volatile struct vq_desc *table, unsigned i)
{
    struct vq_desc d;

    d.addr = table[i].addr;
    d.len = table[i].len;
    d.flags = table[i].flags;
    d.next = table[i].next;
    return d;
}

/* Append to @elem the part of the buffer [addr, addr + len) that lies in
 * one region (a buffer may span several); its length in *@piece. */
static bool add_piece(const VuMem *mem, VqElem *elem, uint64_t addr, uint32_t len,
                      uint32_t *piece, const char **why)
{
    int n = elem->out_num + elem->in_num;

    for (int i = 0; i < mem->nregions; i++) {
        const VuRegion *r = &mem->regions[i];
        uint64_t left;

        if (addr < r->gpa || addr - r->gpa >= r->size) {
            continue;
        }
        if (n == VQ_MAX_SEGMENTS) {
            *why = "too many buffers in one request";
            return false;
        }
        left = r->size - (addr - r->gpa);
        *piece = left < len ? (uint32_t)left : len;
        elem->iov[n] = (struct iovec){ .iov_base = r->host + (addr - r->gpa),
                                       .iov_len = *piece };
        return true;
    }
    *why = "buffer outside guest memory";
    return false;
}

/* The descriptors of one chain from @table (of @size entries), starting at
 * @i, into @elem.  @nested: @table is an indirect table. */
static bool walk_chain(VirtQueue *vq, volatile struct vq_desc *table, unsigned size,
                       unsigned i, bool nested, VqElem *elem, const char **why)
{
    unsigned count = 0;

    for (;;) {
        struct vq_desc d = read_desc(table, i);
        uint64_t addr = d.addr;
        uint32_t len = d.len;

        if (++count > size) {
            *why = "descriptor chain loops";
            return false;
        }
        if (d.flags & VRING_DESC_F_INDIRECT) {
            if (nested || count > 1 || (d.flags & VRING_DESC_F_NEXT)) {
                *why = nested ? "indirect descriptor in an indirect table"
                              : "indirect descriptor inside a chain";
                return false;
            }
            if (len == 0 || len % sizeof(struct vq_desc) ||
                len / sizeof(struct vq_desc) > VQ_MAX_SIZE) {
                *why = "indirect table of a bad size";
                return false;
            }
            table = vu_gpa_to_host(vq->mem, addr, len);
            if (!table) {
                *why = "indirect table outside guest memory";
                return false;
            }
            return walk_chain(vq, table, len / sizeof(struct vq_desc), 0, true, elem, why);
        }
        if (len > UINT64_MAX - addr) {
            *why = "buffer length overflows";
            return false;
        }
        if (!(d.flags & VRING_DESC_F_WRITE) && elem->in_num > 0) {
            *why = "device-readable buffer after a device-writable one";
            return false;
        }
        while (len > 0) {
            uint32_t piece;

            if (!add_piece(vq->mem, elem, addr, len, &piece, why)) {
                return false;
            }
            if (d.flags & VRING_DESC_F_WRITE) {
                elem->in_num++;
            } else {
                elem->out_num++;
            }
            addr += piece;
            len -= piece;
        }
        if (!(d.flags & VRING_DESC_F_NEXT)) {
            return true;
        }
        i = d.next;
        if (i >= size) {
            *why = "descriptor index out of range";
            return false;
        }
    }
}

int vq_pop(VirtQueue *vq, VqElem *elem, const char **why)
{
    uint16_t avail_idx = atomic_load_acquire(&vq->avail->idx);
    unsigned head;

    if ((uint16_t)(avail_idx - vq->last_avail) > vq->num) {
        *why = "available index ahead of the ring";
        return -1;
    }
    if (avail_idx == vq->last_avail) {
        return 0;
    }
    if (vq->inuse >= vq->num) {
        *why = "more requests in flight than the ring has entries";
        return -1;
    }
    smp_rmb();          /* the entry after the index that published it */
    head = vq->avail->ring[vq->last_avail & (vq->num - 1)];
    if (head >= vq->num) {
        *why = "head index out of range";
        return -1;
    }
    elem->head = head;
    elem->out_num = 0;
    elem->in_num = 0;
    if (!walk_chain(vq, vq->desc, vq->num, head, false, elem, why)) {
        return -1;
    }
    vq->last_avail++;
    vq->inuse++;
    return 1;
}

/* ---- Giving them back -------------------------------------------------------------- */

void vq_push(VirtQueue *vq, unsigned head, uint32_t len)
{
    volatile struct vq_used_elem *e = &vq->used->ring[vq->used_idx & (vq->num - 1)];

    e->id = head;
    e->len = len;
    vq->used_idx++;
    vq->inuse--;
    /* The element before the index that publishes it. */
    atomic_store_release(&vq->used->idx, vq->used_idx);
}

static volatile uint16_t *used_event(VirtQueue *vq)
{
    return &vq->avail->ring[vq->num];
}

static volatile uint16_t *avail_event(VirtQueue *vq)
{
    return (volatile uint16_t *)&vq->used->ring[vq->num];
}

bool vq_should_notify(VirtQueue *vq)
{
    uint16_t old = vq->signalled_used, now = vq->used_idx, event;
    bool valid = vq->signalled_valid;

    smp_mb();           /* used->idx before the guest's suppression fields */
    if (!vq->event_idx) {
        return !(vq->avail->flags & VRING_AVAIL_F_NO_INTERRUPT);
    }
    vq->signalled_used = now;
    vq->signalled_valid = true;
    if (!valid) {
        return true;
    }
    event = *used_event(vq);
    /* Did used->idx pass used_event since the last notification? */
    return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}

bool vq_enable_kicks(VirtQueue *vq)
{
    if (vq->event_idx) {
        *avail_event(vq) = vq->last_avail;
    }
    smp_mb();           /* avail_event before re-reading avail->idx */
    return atomic_load_acquire(&vq->avail->idx) != vq->last_avail;
}
