/*
 * json-stream.h - JSON values out of a byte stream, with QEMU's rules.
 *
 * Half: common (no global state; one stream is used by one thread).
 *
 * QMP clients write a stream of JSON texts with no framing.  This module
 * splits the stream into values the way QEMU's monitor does, so that a
 * client sees the same replies from blockd as from qemu-storage-daemon
 * after any input, malformed input included:
 *
 *   - Tokens are those of RFC 8259, plus single-quoted strings and the
 *     escape \' (QEMU's extensions).  A byte that cannot continue or start
 *     a token (a control character inside a string, NaN, a comment, a
 *     stray byte 0xFF, "01") ends the current value with one error
 *     "JSON parse error, stray '<text>'"; the stream then skips input up
 *     to a byte that may start something well-formed: a structural
 *     character ([ ] { } : ,), an ASCII control character other than tab,
 *     or 0xFE/0xFF.  So an unterminated string ends at the end of its
 *     line, and the next line is read afresh.
 *   - A value is complete when its brackets balance: a token at depth 0
 *     (a lone "}" too) is parsed at once.  Nothing is ever re-read: every
 *     byte is looked at once, whatever the input.
 *   - The parser refuses what RFC 8259 refuses (trailing commas, missing
 *     separators, unknown keywords, duplicate keys) with QEMU's messages
 *     ("JSON parse error, expecting value", "... duplicate key", ...).
 *   - Strings must be valid UTF-8 (QEMU's modified UTF-8: "\xC0\x80" is
 *     U+0000); surrogates, noncharacters and overlong forms are refused,
 *     as are \u escapes naming them.  The resulting json-c string may
 *     contain U+0000 (use json_object_get_string_len()).
 *   - Integers are int64 when they fit, else uint64, else double.  A
 *     number beyond the range of a double is refused ("number out of
 *     range"); QEMU accepts it and then writes "inf", which is not JSON.
 *   - Limits per value: 64 MiB of token text, 2^21 tokens, nesting 1024
 *     (messages as QEMU's: "JSON token size limit exceeded", ...).
 */
#ifndef BLOCKD_JSON_STREAM_H
#define BLOCKD_JSON_STREAM_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "blockd/error.h"

typedef struct JsonStream JsonStream;

/*
 * Called for each value (@err NULL; @value may be NULL for JSON null) or
 * each error (@value NULL).  The callee owns @value and @err.  Returning
 * false stops json_stream_feed() at once (the consumer went away); the
 * rest of that input is dropped.
 */
typedef bool JsonStreamEmit(void *opaque, json_object *value, Error *err);

JsonStream *json_stream_new(JsonStreamEmit *emit, void *opaque);
void json_stream_free(JsonStream *js);

/* Feed @len bytes; values and errors are emitted as they complete. */
void json_stream_feed(JsonStream *js, const char *buf, size_t len);

/* Forget any partial value (a new client on the same monitor). */
void json_stream_reset(JsonStream *js);

/*
 * Parse @text as exactly one JSON value (the command line's JSON form).
 * Returns true with *@value set (NULL for null); false with @errp set,
 * also for an empty text or more than one value.
 */
bool json_parse_text(const char *text, json_object **value, Error **errp);

/* Copy @len bytes of @s into a new string, every invalid UTF-8 sequence
 * replaced by U+FFFD (for echoing arbitrary bytes in JSON output). */
char *json_sanitize_utf8(const char *s, size_t len);

#endif /* BLOCKD_JSON_STREAM_H */
