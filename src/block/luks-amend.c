/*
 * luks-amend.c - adding and erasing LUKS key slots (x-blockdev-amend's
 * QCryptoBlockAmendOptionsLUKS) in a container reached through callbacks:
 * a luks node's file, or the clusters of an encrypted qcow2 image.  A new
 * slot wraps the master key the node was opened with; an erased slot's
 * key material is overwritten with random bytes.  The header is written
 * last, then flushed.
 *
 * Half: global state (the amend job's coroutine), with the graph read lock
 * held by the caller for the container's I/O.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/options.h"
#include "blockd/secret.h"
#include "luks.h"

typedef struct Amend {
    bool activate;
    int64_t keyslot;                    /* -1: not given */
    int64_t iter_time;
    char *new_pw, *old_pw;
} Amend;

static bool parse_amend(json_object *o, Amend *a, Error **errp)
{
    static const char *const states[] = { "active", "inactive", NULL };
    const char *new_id = NULL, *old_id = NULL;
    int state = 0;

    a->keyslot = -1;
    a->iter_time = 2000;
    if (!opt_get_enum(o, "state", states, &state, errp) ||
        !opt_get_str(o, "new-secret", &new_id, errp) ||
        !opt_get_str(o, "old-secret", &old_id, errp) ||
        !opt_get_int(o, "keyslot", &a->keyslot, errp) ||
        !opt_get_int(o, "iter-time", &a->iter_time, errp)) {
        return false;
    }
    a->activate = state == 0;
    if (a->iter_time <= 0 || a->iter_time > INT32_MAX) {
        error_setg(errp, "Parameter 'iter-time' must be between 1 and %d", INT32_MAX);
        return false;
    }
    if (json_object_object_get_ex(o, "keyslot", NULL) &&
        (a->keyslot < 0 || a->keyslot >= LUKS_SLOTS)) {
        error_setg(errp, "Invalid keyslot %lld specified, must be between 0 and %d",
                   (long long)a->keyslot, LUKS_SLOTS - 1);
        return false;
    }
    if (a->activate && !new_id) {
        error_setg(errp, "'new-secret' is required to activate a keyslot");
        return false;
    }
    if (!a->activate && new_id) {
        error_setg(errp, "'new-secret' must not be given when erasing keyslots");
        return false;
    }
    if (a->activate && old_id) {
        error_setg(errp, "'old-secret' must not be given when activating keyslots");
        return false;
    }
    if (!a->activate && a->keyslot < 0 && !old_id) {
        error_setg(errp, "To erase keyslot(s), either explicit keyslot index or the password "
                   "currently contained in them must be given");
        return false;
    }
    if (new_id && !(a->new_pw = secret_lookup_as_utf8(new_id, errp))) {
        return false;
    }
    if (old_id && !(a->old_pw = secret_lookup_as_utf8(old_id, errp))) {
        return false;
    }
    return true;
}

static int coroutine_fn write_header(LuksContainer *c, Error **errp)
{
    uint8_t hdr[LUKS_HEADER_SIZE];
    int ret;

    luks_header_build(c->h, hdr);
    ret = c->write(c->opaque, 0, hdr, sizeof(hdr));
    if (ret == 0) {
        ret = c->flush(c->opaque);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot write the LUKS header");
    }
    return ret;
}

static int coroutine_fn add_slot(LuksContainer *c, Amend *a, bool force, Error **errp)
{
    int slot = (int)a->keyslot;
    int ret;

    if (slot < 0) {
        for (slot = 0; slot < LUKS_SLOTS && c->h->slots[slot].active; slot++) {
        }
        if (slot == LUKS_SLOTS) {
            error_setg(errp, "Can't add a keyslot - all keyslots are in use");
            return -EINVAL;
        }
    } else if (c->h->slots[slot].active && !force) {
        error_setg(errp, "Refusing to overwrite active keyslot %d - please erase it first",
                   slot);
        return -EINVAL;
    }
    /* The master key is the one the node was opened with. */
    ret = luks_store_slot(c->h, slot, a->new_pw, c->key, (uint64_t)a->iter_time, c->write,
                          c->opaque, errp);
    return ret < 0 ? ret : write_header(c, errp);
}

static int active_slots(const LuksHeader *h)
{
    int n = 0;

    for (int i = 0; i < LUKS_SLOTS; i++) {
        n += h->slots[i].active;
    }
    return n;
}

/* Overwrite a slot's key material with random bytes and turn it off. */
static int coroutine_fn erase_slot(LuksContainer *c, int slot, Error **errp)
{
    size_t len = luks_key_material_len(c->h);
    uint8_t *junk = malloc(len);
    int ret = gnutls_rnd(GNUTLS_RND_RANDOM, junk, len) == 0 ? 0 : -EIO;

    if (ret == 0) {
        ret = c->write(c->opaque, (uint64_t)c->h->slots[slot].offset_sector * LUKS_SECTOR, junk,
                       len);
    }
    free(junk);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot erase LUKS key slot %d", slot);
        return ret;
    }
    c->h->slots[slot].active = false;
    c->h->slots[slot].iterations = 0;
    memset(c->h->slots[slot].salt, 0, LUKS_SALT_LEN);
    return 0;
}

/* The active slots @password opens, as a bit mask. */
static int coroutine_fn slots_opened_by(LuksContainer *c, const char *password)
{
    uint8_t key[LUKS_MAX_KEY_LEN];
    int mask = 0;

    for (int i = 0; i < LUKS_SLOTS; i++) {
        LuksHeader one = *c->h;
        int slot;

        if (!c->h->slots[i].active) {
            continue;
        }
        for (int j = 0; j < LUKS_SLOTS; j++) {
            one.slots[j].active = j == i;
        }
        if (luks_unlock(&one, password, c->read, c->opaque, key, &slot, NULL) == 0) {
            mask |= 1 << i;
        }
    }
    explicit_bzero(key, sizeof(key));
    return mask;
}

static int coroutine_fn remove_slots(LuksContainer *c, Amend *a, bool force, Error **errp)
{
    int mask, ret = 0;

    if (a->keyslot >= 0) {
        if (!c->h->slots[a->keyslot].active) {
            error_setg(errp, "Given keyslot %lld is already erased (inactive) ",
                       (long long)a->keyslot);
            return -EINVAL;
        }
        mask = 1 << a->keyslot;
        if (a->old_pw && !(slots_opened_by(c, a->old_pw) & mask)) {
            error_setg(errp, "Given keyslot %lld doesn't contain the given old password for "
                       "erase operation", (long long)a->keyslot);
            return -EINVAL;
        }
        if (active_slots(c->h) == 1 && !force) {
            error_setg(errp, "Attempt to erase the only active keyslot %lld which will "
                       "erase all the data in the image irreversibly - refusing operation",
                       (long long)a->keyslot);
            return -EINVAL;
        }
    } else {
        mask = slots_opened_by(c, a->old_pw);
        if (!mask) {
            error_setg(errp, "No keyslots match given (old) password for erase operation");
            return -EINVAL;
        }
        if (__builtin_popcount((unsigned)mask) == active_slots(c->h) && !force) {
            error_setg(errp, "All the active keyslots match the (old) password that was "
                       "given and erasing them will erase all the data in the image "
                       "irreversibly - refusing operation");
            return -EINVAL;
        }
    }
    for (int i = 0; i < LUKS_SLOTS && ret == 0; i++) {
        if (mask & (1 << i)) {
            ret = erase_slot(c, i, errp);
        }
    }
    return ret < 0 ? ret : write_header(c, errp);
}

int coroutine_fn luks_amend(LuksContainer *c, json_object *options, bool force, Error **errp)
{
    Amend a = { 0 };
    int ret = -EINVAL;

    if (parse_amend(options, &a, errp)) {
        ret = a.activate ? add_slot(c, &a, force, errp) : remove_slots(c, &a, force, errp);
    }
    if (a.new_pw) {
        secret_free(a.new_pw, strlen(a.new_pw));
    }
    if (a.old_pw) {
        secret_free(a.old_pw, strlen(a.old_pw));
    }
    return ret;
}
