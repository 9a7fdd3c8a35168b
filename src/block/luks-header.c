/*
 * luks-header.c - the LUKS1 header: 592 big-endian bytes at the start of
 * the container (luks.h, docs/luks.md).  Parsing checks everything a key
 * slot operation or the payload will rely on, so a hostile header fails
 * here with its reason: strings without their NUL, bad slot states, slots
 * overlapping the header, each other or the payload, iteration counts no
 * real image has.
 */
#include <endian.h>
#include <stdio.h>
#include <string.h>

#include "luks.h"

#define SLOT_ENABLED 0x00AC71F3u
#define SLOT_DISABLED 0x0000DEADu
#define HEADER_SECTORS ((LUKS_HEADER_SIZE + LUKS_SECTOR - 1) / LUKS_SECTOR)

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return be32toh(v);
}

static void put32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

/* A fixed-size header string: it must hold its NUL. */
static bool get_string(const uint8_t *p, size_t size, char *out, size_t outsize,
                       const char *what, Error **errp)
{
    if (!memchr(p, 0, size) || strlen((const char *)p) >= outsize) {
        error_setg(errp, "LUKS header %s is not NUL terminated", what);
        return false;
    }
    strcpy(out, (const char *)p);
    return true;
}

size_t luks_key_material_len(const LuksHeader *h)
{
    size_t len = h->spec.key_len * LUKS_STRIPES;

    return (len + LUKS_SECTOR - 1) / LUKS_SECTOR * LUKS_SECTOR;
}

static bool parse_slot(const uint8_t *p, int i, LuksSlot *s, Error **errp)
{
    uint32_t state = get32(p);

    s->iterations = get32(p + 4);
    memcpy(s->salt, p + 8, LUKS_SALT_LEN);
    s->offset_sector = get32(p + 40);
    s->stripes = get32(p + 44);
    if (state != SLOT_ENABLED && state != SLOT_DISABLED) {
        error_setg(errp, "Keyslot %d state (active/disable) is corrupted", i);
        return false;
    }
    s->active = state == SLOT_ENABLED;
    if (s->stripes != LUKS_STRIPES) {
        error_setg(errp, "Keyslot %d is corrupted (stripes %u != %d)", i, s->stripes,
                   LUKS_STRIPES);
        return false;
    }
    if (s->active && (s->iterations == 0 || s->iterations > LUKS_MAX_ITERATIONS)) {
        error_setg(errp, "Keyslot %d has %u PBKDF2 iterations (blockd takes 1 to %u)", i,
                   s->iterations, LUKS_MAX_ITERATIONS);
        return false;
    }
    return true;
}

/* Slots lie between the header and the payload, apart from each other. */
static bool check_layout(const LuksHeader *h, uint64_t size, Error **errp)
{
    uint64_t len = luks_key_material_len(h) / LUKS_SECTOR;

    for (int i = 0; i < LUKS_SLOTS; i++) {
        uint64_t start = h->slots[i].offset_sector;

        if (start < HEADER_SECTORS) {
            error_setg(errp, "Keyslot %d is overlapping with the LUKS header", i);
            return false;
        }
        if (start + len > h->payload_sector) {
            error_setg(errp, "Keyslot %d is overlapping with the encrypted payload", i);
            return false;
        }
        for (int j = i + 1; j < LUKS_SLOTS; j++) {
            uint64_t other = h->slots[j].offset_sector;

            if (start < other + len && other < start + len) {
                error_setg(errp, "Keyslots %d and %d are overlapping in the header", i, j);
                return false;
            }
        }
    }
    if (size && (uint64_t)h->payload_sector * LUKS_SECTOR > size) {
        error_setg(errp, "LUKS payload offset %llu lies beyond the end of the image",
                   (unsigned long long)h->payload_sector * LUKS_SECTOR);
        return false;
    }
    return true;
}

bool luks_header_parse(const uint8_t *buf, uint64_t size, LuksHeader *h, Error **errp)
{
    char name[32], mode[32];
    uint64_t total = 0;
    uint32_t key_len;

    memset(h, 0, sizeof(*h));
    if (memcmp(buf, luks_magic, sizeof(luks_magic)) != 0) {
        error_setg(errp, "Volume is not in LUKS format");
        return false;
    }
    if ((buf[6] << 8 | buf[7]) != 1) {
        error_setg(errp, "LUKS version %u is not supported", buf[6] << 8 | buf[7]);
        return false;
    }
    if (!get_string(buf + 8, 32, name, sizeof(name), "cipher name", errp) ||
        !get_string(buf + 40, 32, mode, sizeof(mode), "cipher mode", errp) ||
        !get_string(buf + 72, 32, h->hash, sizeof(h->hash), "hash spec", errp) ||
        !get_string(buf + 168, 40, h->uuid, sizeof(h->uuid), "UUID", errp)) {
        return false;
    }
    h->payload_sector = get32(buf + 104);
    key_len = get32(buf + 108);
    if (key_len == 0 || key_len > LUKS_MAX_KEY_LEN) {
        error_setg(errp, "LUKS master key length %u is not supported", key_len);
        return false;
    }
    if (!luks_cipher_spec_parse(name, mode, key_len, &h->spec, errp)) {
        return false;
    }
    if (!luks_hash_len(h->hash)) {
        error_setg(errp, "Hash algorithm '%s' is not supported by blockd", h->hash);
        return false;
    }
    memcpy(h->mk_digest, buf + 112, LUKS_DIGEST_LEN);
    memcpy(h->mk_salt, buf + 132, LUKS_SALT_LEN);
    h->mk_iterations = get32(buf + 164);
    if (h->mk_iterations == 0 || h->mk_iterations > LUKS_MAX_ITERATIONS) {
        error_setg(errp, "LUKS master key digest has %u PBKDF2 iterations (blockd takes 1 "
                   "to %u)", h->mk_iterations, LUKS_MAX_ITERATIONS);
        return false;
    }
    for (int i = 0; i < LUKS_SLOTS; i++) {
        if (!parse_slot(buf + 208 + 48 * i, i, &h->slots[i], errp)) {
            return false;
        }
        total += h->slots[i].active ? h->slots[i].iterations + h->mk_iterations : 0;
    }
    if (total > LUKS_MAX_TOTAL_ITERATIONS) {
        error_setg(errp, "The LUKS key slots ask for %llu PBKDF2 iterations in all (blockd "
                   "takes up to %u)", (unsigned long long)total, LUKS_MAX_TOTAL_ITERATIONS);
        return false;
    }
    return check_layout(h, size, errp);
}

void luks_header_build(const LuksHeader *h, uint8_t *buf)
{
    char name[32] = { 0 }, mode[32] = { 0 };

    memset(buf, 0, LUKS_HEADER_SIZE);
    memcpy(buf, luks_magic, sizeof(luks_magic));
    buf[7] = 1;
    luks_cipher_spec_names(&h->spec, name, mode);
    memcpy(buf + 8, name, strlen(name));
    memcpy(buf + 40, mode, strlen(mode));
    memcpy(buf + 72, h->hash, strlen(h->hash));
    put32(buf + 104, h->payload_sector);
    put32(buf + 108, (uint32_t)h->spec.key_len);
    memcpy(buf + 112, h->mk_digest, LUKS_DIGEST_LEN);
    memcpy(buf + 132, h->mk_salt, LUKS_SALT_LEN);
    put32(buf + 164, h->mk_iterations);
    memcpy(buf + 168, h->uuid, strlen(h->uuid));
    for (int i = 0; i < LUKS_SLOTS; i++) {
        uint8_t *p = buf + 208 + 48 * i;
        const LuksSlot *s = &h->slots[i];

        put32(p, s->active ? SLOT_ENABLED : SLOT_DISABLED);
        put32(p + 4, s->iterations);
        memcpy(p + 8, s->salt, LUKS_SALT_LEN);
        put32(p + 40, s->offset_sector);
        put32(p + 44, s->stripes);
    }
}

json_object *luks_info_json(const LuksHeader *h, int64_t payload_offset)
{
    static const char *const ivs[] = { "plain", "plain64", "essiv" };
    json_object *data = json_object_new_object(), *slots = json_object_new_array();

    json_object_object_add(data, "cipher-alg", json_object_new_string(h->spec.alg));
    json_object_object_add(data, "cipher-mode", json_object_new_string(h->spec.mode));
    json_object_object_add(data, "ivgen-alg", json_object_new_string(ivs[h->spec.ivgen]));
    if (h->spec.ivgen == LUKS_IV_ESSIV) {
        json_object_object_add(data, "ivgen-hash-alg",
                               json_object_new_string(h->spec.ivgen_hash));
    }
    json_object_object_add(data, "hash-alg", json_object_new_string(h->hash));
    json_object_object_add(data, "payload-offset", json_object_new_int64(payload_offset));
    json_object_object_add(data, "master-key-iters", json_object_new_int64(h->mk_iterations));
    json_object_object_add(data, "uuid", json_object_new_string(h->uuid));
    for (int i = 0; i < LUKS_SLOTS; i++) {
        const LuksSlot *sl = &h->slots[i];
        json_object *o = json_object_new_object();

        json_object_object_add(o, "active", json_object_new_boolean(sl->active));
        if (sl->active) {
            json_object_object_add(o, "iters", json_object_new_int64(sl->iterations));
            json_object_object_add(o, "stripes", json_object_new_int64(sl->stripes));
        }
        json_object_object_add(o, "key-offset",
                               json_object_new_int64((int64_t)sl->offset_sector * LUKS_SECTOR));
        json_object_array_add(slots, o);
    }
    json_object_object_add(data, "slots", slots);
    return data;
}
