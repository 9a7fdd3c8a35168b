/*
 * nbd-handshake.c - the fixed-newstyle handshake of one NBD connection:
 * options (export info and go, list, structured replies, meta contexts)
 * until the client picks an export.  What is negotiated goes into the
 * NbdClient for the transmission phase (nbd-client.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-backend-io.h"
#include "blockd/dirty-bitmap.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "nbd-conn.h"
#include "nbd-internal.h"
#include "blockd/nbd-proto.h"

/* ---- Handshake ------------------------------------------------------------------ */

static bool coroutine_fn send_option_reply(NbdClient *c, uint32_t option, uint32_t type,
                                           const void *data, uint32_t len)
{
    uint8_t hdr[20];
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };

    nbd_put64(hdr, NBD_REP_MAGIC);
    nbd_put32(hdr + 8, option);
    nbd_put32(hdr + 12, type);
    nbd_put32(hdr + 16, len);
    return nbd_co_sendv(c, iov, len ? 2 : 1);
}

static uint16_t transmission_flags(NbdClient *c, BlockExport *exp)
{
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                     NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;

    /* Every connection uses the same node, and a flush flushes the node:
     * what one connection flushed, all see.  Hence multi-conn. */
    if (blk_exp_writable(exp)) {
        flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    } else {
        flags |= NBD_FLAG_READ_ONLY;
    }
    if (c->structured) {
        flags |= NBD_FLAG_SEND_DF;
    }
    return flags;
}

/* INFO and GO: send what the client may want to know about the export. */
static bool coroutine_fn send_export_info(NbdClient *c, uint32_t option, BlockExport *exp,
                                          const uint8_t *requests, int nrequests)
{
    uint8_t buf[14];
    bool want_name = false, want_desc = false;
    const char *desc = nbd_export_description(exp);

    for (int i = 0; i < nrequests; i++) {
        uint16_t r = nbd_get16(requests + 2 * i);
        want_name |= r == NBD_INFO_NAME;
        want_desc |= r == NBD_INFO_DESCRIPTION;
    }
    if (want_name) {
        size_t len = strlen(nbd_export_name(exp));
        char *info = malloc(2 + len);
        bool ok;
        nbd_put16((uint8_t *)info, NBD_INFO_NAME);
        memcpy(info + 2, nbd_export_name(exp), len);
        ok = send_option_reply(c, option, NBD_REP_INFO, info, 2 + len);
        free(info);
        if (!ok) {
            return false;
        }
    }
    if (want_desc && desc) {
        size_t len = strlen(desc);
        char *info = malloc(2 + len);
        bool ok;
        nbd_put16((uint8_t *)info, NBD_INFO_DESCRIPTION);
        memcpy(info + 2, desc, len);
        ok = send_option_reply(c, option, NBD_REP_INFO, info, 2 + len);
        free(info);
        if (!ok) {
            return false;
        }
    }
    /* Block sizes: any alignment works (the I/O path bounces); the
     * preferred size avoids read-modify-write; the maximum bounds buffers. */
    nbd_put16(buf, NBD_INFO_BLOCK_SIZE);
    nbd_put32(buf + 2, NBD_MIN_BLOCK_SIZE);
    nbd_put32(buf + 6, NBD_PREF_BLOCK_SIZE);
    nbd_put32(buf + 10, NBD_MAX_BUFFER_SIZE);
    if (!send_option_reply(c, option, NBD_REP_INFO, buf, 14)) {
        return false;
    }
    nbd_put16(buf, NBD_INFO_EXPORT);
    nbd_put64(buf + 2, blk_co_getlength(blk_exp_blk(exp)));
    nbd_put16(buf + 10, transmission_flags(c, exp));
    return send_option_reply(c, option, NBD_REP_INFO, buf, 12);
}

/* Parse INFO/GO: name, then a list of information requests. */
static bool parse_info_request(const uint8_t *data, uint32_t len, char *name,
                               const uint8_t **requests, int *nrequests)
{
    uint32_t namelen;

    if (len < 6) {
        return false;
    }
    namelen = nbd_get32(data);
    if (namelen > len - 6 || namelen > NBD_NAME_MAX) {
        return false;
    }
    memcpy(name, data + 4, namelen);
    name[namelen] = '\0';
    *nrequests = nbd_get16(data + 4 + namelen);
    *requests = data + 6 + namelen;
    return len == 6 + namelen + 2 * (uint32_t)*nrequests;
}

/* One query of NBD_OPT_LIST/SET_META_CONTEXT: which of our contexts it
 * names (a LIST query may name a namespace). */
#define BITMAP_PREFIX "qemu:dirty-bitmap:"

static bool is(const uint8_t *q, uint32_t qlen, const char *name)
{
    return qlen == strlen(name) && memcmp(q, name, qlen) == 0;
}

/* The contexts of @exp that query @q selects.  Listing, a bare namespace
 * ("base:", "qemu:", "qemu:dirty-bitmap:") selects all of its contexts. */
static void match_query(BlockExport *exp, const uint8_t *q, uint32_t qlen, bool set,
                        bool *alloc, bool *depth, uint64_t *bitmaps)
{
    size_t plen = strlen(BITMAP_PREFIX);
    bool all_qemu = !set && is(q, qlen, "qemu:");

    if (is(q, qlen, "base:allocation") || (!set && is(q, qlen, "base:"))) {
        *alloc = true;
    }
    if (is(q, qlen, "qemu:allocation-depth") || all_qemu) {
        *depth = true;
    }
    for (int i = 0; i < nbd_export_nbitmaps(exp); i++) {
        const char *name = dirty_bitmap_name(nbd_export_bitmap(exp, i));

        if (all_qemu || (!set && is(q, qlen, BITMAP_PREFIX)) ||
            (qlen == plen + strlen(name) && memcmp(q, BITMAP_PREFIX, plen) == 0 &&
             memcmp(q + plen, name, qlen - plen) == 0)) {
            *bitmaps |= 1ULL << i;
        }
    }
}

static bool coroutine_fn send_context(NbdClient *c, uint32_t option, uint32_t id,
                                      const char *prefix, const char *name)
{
    size_t plen = strlen(prefix), len = strlen(name);
    uint8_t *reply = malloc(4 + plen + len);
    bool ok;

    if (!reply) {
        abort();
    }
    nbd_put32(reply, id);
    memcpy(reply + 4, prefix, plen);
    memcpy(reply + 4 + plen, name, len);
    ok = send_option_reply(c, option, NBD_REP_META_CONTEXT, reply, 4 + plen + len);
    free(reply);
    return ok;
}

static void meta_clear(NbdClient *c)
{
    c->meta_allocation = c->meta_depth = false;
    c->meta_bitmaps = 0;
    free(c->meta_export);
    c->meta_export = NULL;
}

/* The export chosen: contexts selected for another one do not apply (the
 * bitmap numbers would name other bitmaps). */
static void meta_for_export(NbdClient *c, BlockExport *exp)
{
    if (c->meta_export && strcmp(c->meta_export, nbd_export_name(exp))) {
        meta_clear(c);
    }
    free(c->meta_export);
    c->meta_export = NULL;
}

/* The queries of a meta context option are well-formed: each length fits. */
static bool queries_valid(const uint8_t *data, uint32_t len, uint32_t off, uint32_t nqueries)
{
    for (uint32_t i = 0; i < nqueries; i++) {
        uint32_t qlen;

        if (off + 4 > len || (qlen = nbd_get32(data + off)) > len - off - 4) {
            return false;
        }
        off += 4 + qlen;
    }
    return off == len;
}

static bool coroutine_fn handle_meta_context(NbdClient *c, uint32_t option,
                                             const uint8_t *data, uint32_t len)
{
    char name[NBD_NAME_MAX + 1];
    uint32_t namelen, nqueries, off;
    bool set = option == NBD_OPT_SET_META_CONTEXT;
    bool want_alloc = false, want_depth = false;
    uint64_t want_bitmaps = 0;
    BlockExport *exp;

    if (set) {
        /* A new selection replaces the old one, a failed one leaves none. */
        meta_clear(c);
    }
    if (set && !c->structured) {
        return send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
    }
    if (len < 8 || (namelen = nbd_get32(data)) > len - 8 || namelen > NBD_NAME_MAX) {
        return send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
    }
    memcpy(name, data + 4, namelen);
    name[namelen] = '\0';
    nqueries = nbd_get32(data + 4 + namelen);
    off = 8 + namelen;
    if (!queries_valid(data, len, off, nqueries)) {
        return send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
    }
    exp = nbd_export_find(name);
    if (!exp) {
        return send_option_reply(c, option, NBD_REP_ERR_UNKNOWN, NULL, 0);
    }
    for (uint32_t i = 0; i < nqueries; i++) {
        uint32_t qlen = nbd_get32(data + off);

        match_query(exp, data + off + 4, qlen, set, &want_alloc, &want_depth, &want_bitmaps);
        off += 4 + qlen;
    }
    if (!set && nqueries == 0) {
        /* List everything. */
        want_alloc = want_depth = true;
        want_bitmaps = nbd_export_nbitmaps(exp) ? ~0ULL >> (64 - nbd_export_nbitmaps(exp)) : 0;
    }
    want_depth = want_depth && nbd_export_allocation_depth(exp);
    if (set) {
        c->meta_allocation = want_alloc;
        c->meta_depth = want_depth;
        c->meta_bitmaps = want_bitmaps;
        c->meta_export = strdup(name);
    }
    /* The export is referenced across the sends (it may be deleted). */
    blk_exp_ref(exp);
    bool ok = (!want_alloc ||
               send_context(c, option, NBD_META_BASE_ALLOCATION_ID, "", "base:allocation")) &&
              (!want_depth ||
               send_context(c, option, NBD_META_ALLOCATION_DEPTH_ID, "", "qemu:allocation-depth"));
    for (int i = 0; ok && i < nbd_export_nbitmaps(exp); i++) {
        if (want_bitmaps & (1ULL << i)) {
            ok = send_context(c, option, NBD_META_DIRTY_BITMAP_ID_BASE + i, BITMAP_PREFIX,
                              dirty_bitmap_name(nbd_export_bitmap(exp, i)));
        }
    }
    nbd_handshake_put_exp(exp);
    return ok && send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
}

typedef struct NameList {
    char **names;
    char **descs;
    int n;
} NameList;

static void collect_name(BlockExport *exp, void *opaque)
{
    NameList *l = opaque;
    const char *desc = nbd_export_description(exp);

    l->names = realloc(l->names, (l->n + 1) * sizeof(*l->names));
    l->descs = realloc(l->descs, (l->n + 1) * sizeof(*l->descs));
    if (!l->names || !l->descs || !(l->names[l->n] = strdup(nbd_export_name(exp))) ||
        !(l->descs[l->n] = strdup(desc ? desc : ""))) {
        abort();
    }
    l->n++;
}

static bool coroutine_fn handle_list(NbdClient *c, uint32_t len)
{
    NameList l = { NULL, NULL, 0 };
    bool ok = true;

    if (len != 0) {
        return send_option_reply(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, NULL, 0);
    }
    /* Copy the names first: sending may yield, and exports may change. */
    blk_exp_foreach(collect_name, &l);
    for (int i = 0; i < l.n; i++) {
        /* Name length, name, then the description (what is left). */
        size_t nlen = strlen(l.names[i]), dlen = strlen(l.descs[i]);
        uint8_t *reply = malloc(4 + nlen + dlen);
        if (!reply) {
            abort();
        }
        nbd_put32(reply, nlen);
        memcpy(reply + 4, l.names[i], nlen);
        memcpy(reply + 4 + nlen, l.descs[i], dlen);
        ok = ok && send_option_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, reply, 4 + nlen + dlen);
        free(reply);
        free(l.names[i]);
        free(l.descs[i]);
    }
    free(l.names);
    free(l.descs);
    return ok && send_option_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* Drop a reference the handshake held: outside the coroutine, since the
 * last one frees the BlockBackend (which waits). */
static void exp_unref_bh(void *opaque)
{
    blk_exp_unref(opaque);
}

void nbd_handshake_put_exp(BlockExport *exp)
{
    aio_bh_schedule_oneshot(main_aio_context(), exp_unref_bh, exp);
}

/* After a send that may have yielded: is @exp still served as @name?
 * (block-export-del may have run meanwhile.) */
static bool exp_still_there(BlockExport *exp, const char *name)
{
    return nbd_export_find(name) == exp;
}

/*
 * Run the option haggling.  Returns the chosen export with a reference
 * the caller drops (nbd_handshake_put_exp), or NULL to end the connection.
 * Sending may yield, and the export may be deleted meanwhile: it is
 * referenced across every send that uses it.
 */
BlockExport *coroutine_fn nbd_handshake(NbdClient *c)
{
    uint8_t greeting[18], cflags[4], opt[16];
    uint32_t client_flags;

    nbd_put64(greeting, NBD_MAGIC);
    nbd_put64(greeting + 8, NBD_OPTS_MAGIC);
    nbd_put16(greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if (!nbd_co_send(c, greeting, sizeof(greeting)) || !nbd_co_recv_full(c, cflags, 4)) {
        return NULL;
    }
    client_flags = nbd_get32(cflags);
    if (client_flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        return NULL;
    }
    c->no_zeroes = client_flags & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint32_t option, len;
        uint8_t *data = NULL;
        BlockExport *exp = NULL;
        bool ok = true;

        if (!nbd_co_recv_full(c, opt, sizeof(opt)) || nbd_get64(opt) != NBD_OPTS_MAGIC) {
            return NULL;
        }
        option = nbd_get32(opt + 8);
        len = nbd_get32(opt + 12);
        if (len > NBD_MAX_OPTION_LEN) {
            return NULL;   /* not worth reading: the client is broken */
        }
        data = malloc(len + 1);
        if (!data || !nbd_co_recv_full(c, data, len)) {
            free(data);
            return NULL;
        }
        data[len] = '\0';

        /* With TLS configured, nothing but STARTTLS before it (not even
         * ABORT, as in QEMU: the client hangs up then anyway). */
        if (nbd_server_tls_creds() && !c->tls && option != NBD_OPT_STARTTLS) {
            free(data);
            if (option == NBD_OPT_EXPORT_NAME ||
                !send_option_reply(c, option, NBD_REP_ERR_TLS_REQD, NULL, 0)) {
                return NULL;    /* NBD_OPT_EXPORT_NAME can take no error reply */
            }
            continue;
        }
        switch (option) {
        case NBD_OPT_EXPORT_NAME: {
            uint8_t reply[8 + 2 + 124] = { 0 };
            if (memchr(data, '\0', len) || !(exp = nbd_export_find((char *)data))) {
                free(data);
                return NULL;        /* the protocol allows no error here */
            }
            blk_exp_ref(exp);
            nbd_put64(reply, blk_co_getlength(blk_exp_blk(exp)));
            nbd_put16(reply + 8, transmission_flags(c, exp));
            ok = nbd_co_send(c, reply, c->no_zeroes ? 10 : sizeof(reply)) &&
                 exp_still_there(exp, (char *)data);
            free(data);
            if (!ok) {
                nbd_handshake_put_exp(exp);
                return NULL;
            }
            meta_for_export(c, exp);
            return exp;
        }
        case NBD_OPT_ABORT:
            send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
            free(data);
            return NULL;
        case NBD_OPT_LIST:
            ok = handle_list(c, len);
            break;
        case NBD_OPT_STARTTLS:
            if (!nbd_server_tls_creds()) {
                ok = send_option_reply(c, option, NBD_REP_ERR_POLICY, NULL, 0);
            } else if (c->tls) {
                ok = send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
            } else if (len != 0) {
                /* A broken client: told so, then hung up on, as QEMU does. */
                send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
                ok = false;
            } else {
                ok = send_option_reply(c, option, NBD_REP_ACK, NULL, 0) &&
                     nbd_co_start_tls(c, nbd_server_tls_creds());
            }
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
            char name[NBD_NAME_MAX + 1];
            const uint8_t *requests;
            int nrequests;
            if (!parse_info_request(data, len, name, &requests, &nrequests)) {
                ok = send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
            } else if (!(exp = nbd_export_find(name))) {
                ok = send_option_reply(c, option, NBD_REP_ERR_UNKNOWN, NULL, 0);
            } else {
                blk_exp_ref(exp);
                ok = send_export_info(c, option, exp, requests, nrequests) &&
                     send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
                if (ok && option == NBD_OPT_GO) {
                    if (exp_still_there(exp, name)) {
                        free(data);
                        meta_for_export(c, exp);
                        return exp;
                    }
                    ok = false;     /* deleted while we told the client about it */
                }
                nbd_handshake_put_exp(exp);
            }
            break;
        }
        case NBD_OPT_STRUCTURED_REPLY:
            if (len != 0) {
                ok = send_option_reply(c, option, NBD_REP_ERR_INVALID, NULL, 0);
            } else {
                c->structured = true;
                ok = send_option_reply(c, option, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            ok = handle_meta_context(c, option, data, len);
            break;
        default:
            ok = send_option_reply(c, option, NBD_REP_ERR_UNSUP, NULL, 0);
            break;
        }
        free(data);
        if (!ok) {
            return NULL;
        }
    }
}

