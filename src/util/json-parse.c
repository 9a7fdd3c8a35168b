/*
 * json-parse.c - build json-c values from one value's tokens, refusing
 * what RFC 8259 refuses, with QEMU's messages.
 *
 * json-c keeps the values (and writes replies); its own tokener is not
 * used for input because it accepts what QMP must refuse (NaN, comments,
 * trailing commas, raw control characters, duplicate keys) and cannot
 * resynchronise a stream the way QMP clients rely on.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-internal.h"

typedef struct Parser {
    const JsonToken *tokens;
    size_t count, pos;
    const char *text;
    Error *err;
} Parser;

static void parse_error(Parser *p, const char *fmt, const char *arg)
{
    char msg[1024];

    if (p->err) {
        return;                 /* the first error is the one reported */
    }
    snprintf(msg, sizeof(msg), fmt, arg ? arg : "");
    error_setg(&p->err, "JSON parse error, %s", msg);
}

static const JsonToken *peek(Parser *p)
{
    return p->pos < p->count ? &p->tokens[p->pos] : NULL;
}

static const JsonToken *next(Parser *p)
{
    return p->pos < p->count ? &p->tokens[p->pos++] : NULL;
}

/* ---- Unicode ------------------------------------------------------------------ */

static bool codepoint_valid(long cp)
{
    return cp >= 0 && cp <= 0x10FFFF &&
           !(cp >= 0xD800 && cp <= 0xDFFF) &&              /* surrogates */
           !(cp >= 0xFDD0 && cp <= 0xFDEF) &&              /* noncharacters */
           (cp & 0xFFFE) != 0xFFFE;
}

/*
 * Decode one UTF-8 sequence at @s (at most @len bytes).  Returns the code
 * point and sets *@used, or -1 for anything invalid.  "\xC0\x80" is
 * U+0000 (modified UTF-8); other overlong forms are invalid.
 */
static long utf8_decode(const unsigned char *s, size_t len, size_t *used)
{
    static const long min_for_len[] = { 0, 0, 0x80, 0x800, 0x10000 };
    size_t n;
    long cp;

    if (s[0] < 0x80) {
        *used = 1;
        return s[0];
    }
    if (len >= 2 && s[0] == 0xC0 && s[1] == 0x80) {
        *used = 2;
        return 0;
    }
    if ((s[0] & 0xE0) == 0xC0) {
        n = 2, cp = s[0] & 0x1F;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3, cp = s[0] & 0x0F;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4, cp = s[0] & 0x07;
    } else {
        return -1;
    }
    if (n > len) {
        return -1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return -1;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min_for_len[n] || !codepoint_valid(cp)) {
        return -1;
    }
    *used = n;
    return cp;
}

static size_t utf8_encode(long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

char *json_sanitize_utf8(const char *s, size_t len)
{
    /* Each invalid byte becomes 3 bytes at most. */
    char *out = malloc(len * 3 + 1), *o = out;
    size_t i = 0, used;

    if (!out) {
        abort();
    }
    while (i < len) {
        long cp = utf8_decode((const unsigned char *)s + i, len - i, &used);
        if (cp < 0) {
            o += utf8_encode(0xFFFD, o);
            i++;
        } else {
            memcpy(o, s + i, used);
            o += used;
            i += used;
        }
    }
    *o = '\0';
    return out;
}

/* ---- Values -------------------------------------------------------------------- */

static long hex4(const char *s, const char *end)
{
    long v = 0;

    for (int i = 0; i < 4; i++) {
        char c = s + i < end ? s[i] : '\0';
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* The four hex digits of a \u escape at @s (just after the 'u'), joined
 * with the low half when a surrogate pair's second escape follows. */
static long decode_u_escape(const char **s, const char *end)
{
    long cp = hex4(*s, end), low;

    *s += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF && end - *s >= 6 && (*s)[0] == '\\' &&
        (*s)[1] == 'u') {
        low = hex4(*s + 2, end);
        if (low < 0xDC00 || low > 0xDFFF) {
            return -1;
        }
        *s += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    return codepoint_valid(cp) ? cp : -1;
}

static bool unescape(Parser *p, const char *s, const char *end, char *out, size_t *out_len)
{
    static const char simple_in[] = "\"'\\/bfnrt", simple_out[] = "\"'\\/\b\f\n\r\t";
    char *o = out;
    size_t used;

    while (s < end) {
        if (*s == '\\') {
            const char *esc = s++;
            const char *hit = strchr(simple_in, *s);
            if (*s == 'u') {
                long cp;
                s++;
                cp = decode_u_escape(&s, end);
                if (cp < 0) {
                    char shown[16];
                    snprintf(shown, sizeof(shown), "%.*s",
                             (int)(s > end ? end - esc : s - esc), esc);
                    parse_error(p, "%s is not a valid Unicode character", shown);
                    return false;
                }
                o += utf8_encode(cp, o);
            } else if (*s && hit) {
                *o++ = simple_out[hit - simple_in];
                s++;
            } else {
                parse_error(p, "invalid escape sequence in string", NULL);
                return false;
            }
            continue;
        }
        if (utf8_decode((const unsigned char *)s, end - s, &used) < 0) {
            parse_error(p, "invalid UTF-8 sequence in string", NULL);
            return false;
        }
        if (used == 2 && (unsigned char)s[0] == 0xC0) {
            *o++ = '\0';
        } else {
            memcpy(o, s, used);
            o += used;
        }
        s += used;
    }
    *out_len = o - out;
    return true;
}

/* A string token's value; NULL after an error. */
static json_object *parse_string(Parser *p, const JsonToken *t)
{
    const char *s = p->text + t->off + 1, *end = p->text + t->off + t->len - 1;
    /* Decoded text is never longer than its source. */
    char *buf = malloc(t->len);
    size_t len;
    json_object *str = NULL;

    if (!buf) {
        abort();
    }
    if (unescape(p, s, end, buf, &len)) {
        str = json_object_new_string_len(buf, (int)len);
    }
    free(buf);
    return str;
}

static bool parse_number(Parser *p, const JsonToken *t, json_object **value)
{
    char buf[64], *big = NULL, *s = buf, *endp;
    double d;

    if (t->len >= sizeof(buf)) {
        s = big = malloc(t->len + 1);
        if (!big) {
            abort();
        }
    }
    memcpy(s, p->text + t->off, t->len);
    s[t->len] = '\0';
    if (t->type == JSON_TK_INTEGER) {
        errno = 0;
        long long v = strtoll(s, &endp, 10);
        if (errno == 0) {
            *value = json_object_new_int64(v);
            goto out;
        }
        if (s[0] != '-') {
            errno = 0;
            unsigned long long u = strtoull(s, &endp, 10);
            if (errno == 0) {
                *value = json_object_new_uint64(u);
                goto out;
            }
        }
    }
    d = strtod(s, &endp);
    if (isinf(d)) {
        parse_error(p, "number out of range", NULL);
        free(big);
        return false;
    }
    *value = json_object_new_double(d);
out:
    free(big);
    return true;
}

static bool parse_value(Parser *p, json_object **value, int depth);

static bool parse_word(Parser *p, const JsonToken *t, json_object **value)
{
    char word[64];

    snprintf(word, sizeof(word), "%.*s", (int)t->len, p->text + t->off);
    if (strcmp(word, "true") == 0 || strcmp(word, "false") == 0) {
        *value = json_object_new_boolean(word[0] == 't');
        return true;
    }
    if (strcmp(word, "null") == 0) {
        *value = NULL;
        return true;
    }
    parse_error(p, "invalid keyword '%s'", word);
    return false;
}

static bool parse_member(Parser *p, json_object *obj, int depth)
{
    const JsonToken *t = peek(p);
    json_object *key = NULL, *val = NULL;
    bool ok = false;

    if (!t || t->type != JSON_TK_STRING) {
        /* A value that is not a string, or no value at all. */
        if (parse_value(p, &key, depth)) {
            parse_error(p, "key is not a string in object", NULL);
        }
        goto out;
    }
    if (!parse_value(p, &key, depth)) {
        goto out;
    }
    t = next(p);
    if (!t) {
        parse_error(p, "premature EOI", NULL);
        goto out;
    }
    if (t->type != JSON_TK_COLON) {
        parse_error(p, "missing : in object pair", NULL);
        goto out;
    }
    if (!parse_value(p, &val, depth)) {
        goto out;
    }
    if (json_object_object_get_ex(obj, json_object_get_string(key), NULL)) {
        parse_error(p, "duplicate key", NULL);
        json_object_put(val);
        goto out;
    }
    json_object_object_add(obj, json_object_get_string(key), val);
    ok = true;
out:
    json_object_put(key);
    return ok;
}

/* After '{' or '[': members or elements up to the closing token. */
static bool parse_container(Parser *p, json_object *c, bool is_object, int depth)
{
    JsonTokenType close = is_object ? JSON_TK_RBRACE : JSON_TK_RBRACKET;
    const JsonToken *t = peek(p);

    if (t && t->type == close) {
        next(p);
        return true;
    }
    for (;;) {
        if (is_object) {
            if (!parse_member(p, c, depth)) {
                return false;
            }
        } else {
            json_object *elem;
            if (!parse_value(p, &elem, depth)) {
                return false;
            }
            json_object_array_add(c, elem);
        }
        t = next(p);
        if (!t) {
            parse_error(p, "premature EOI", NULL);
            return false;
        }
        if (t->type == close) {
            return true;
        }
        if (t->type != JSON_TK_COMMA) {
            parse_error(p, is_object ? "expected separator in dict"
                                     : "expected separator in list", NULL);
            return false;
        }
    }
}

static bool parse_value(Parser *p, json_object **value, int depth)
{
    const JsonToken *t = next(p);
    json_object *c;

    *value = NULL;
    if (!t) {
        parse_error(p, "premature EOI", NULL);
        return false;
    }
    switch (t->type) {
    case JSON_TK_LBRACE:
    case JSON_TK_LBRACKET:
        /* The stream limits nesting; this guards direct callers. */
        if (depth >= 1100) {
            parse_error(p, "nesting too deep", NULL);
            return false;
        }
        c = t->type == JSON_TK_LBRACE ? json_object_new_object() : json_object_new_array();
        if (!parse_container(p, c, t->type == JSON_TK_LBRACE, depth + 1)) {
            json_object_put(c);
            return false;
        }
        *value = c;
        return true;
    case JSON_TK_STRING:
        *value = parse_string(p, t);
        return *value != NULL;
    case JSON_TK_INTEGER:
    case JSON_TK_FLOAT:
        return parse_number(p, t, value);
    case JSON_TK_WORD:
        return parse_word(p, t, value);
    default:
        parse_error(p, "expecting value", NULL);
        return false;
    }
}

bool json_parse_tokens(const JsonToken *tokens, size_t count, const char *text,
                       json_object **value, Error **errp)
{
    Parser p = { .tokens = tokens, .count = count, .text = text };

    if (parse_value(&p, value, 0) && p.pos < p.count) {
        /* Balanced values end the token list; anything else is stray. */
        json_object_put(*value);
        parse_error(&p, "expecting value", NULL);
    }
    if (p.err) {
        *value = NULL;
        error_propagate(errp, p.err);
        return false;
    }
    return true;
}
