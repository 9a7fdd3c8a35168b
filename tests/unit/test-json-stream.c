/*
 * test-json-stream - splitting a byte stream into JSON values: the same
 * values and errors however the input is cut into reads, resynchronisation
 * after bad input, limits, and the one-value form of the command line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blockd/json-stream.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* What the stream emitted, one line per value or error. */
typedef struct Log {
    char text[65536];
    size_t len;
    int stop_after;         /* > 0: ask the stream to stop after N emits */
    int emits;
} Log;

static bool log_emit(void *opaque, json_object *value, Error *err)
{
    Log *log = opaque;
    const char *s;

    if (err) {
        s = error_get_pretty(err);
    } else {
        s = value ? json_object_to_json_string_ext(value, JSON_C_TO_STRING_PLAIN) : "null";
    }
    log->len += snprintf(log->text + log->len, sizeof(log->text) - log->len, "%s%s\n",
                         err ? "E:" : "", s);
    json_object_put(value);
    error_free(err);
    return log->stop_after == 0 || ++log->emits < log->stop_after;
}

static void feed_in_pieces(const char *in, size_t len, size_t piece, Log *log)
{
    JsonStream *js = json_stream_new(log_emit, log);

    for (size_t off = 0; off < len; off += piece) {
        json_stream_feed(js, in + off, len - off < piece ? len - off : piece);
    }
    json_stream_free(js);
}

typedef struct StreamCase {
    const char *in;
    const char *out;
} StreamCase;

static const StreamCase stream_cases[] = {
    { "{\"a\": 1}\n", "{\"a\":1}\n" },
    { "{\"a\":1}{\"b\":[true,false,null]}", "{\"a\":1}\n{\"b\":[true,false,null]}\n" },
    { "}\n", "E:JSON parse error, expecting value\n" },
    { "{\"a\": \n}\n{\"b\":2}\n", "E:JSON parse error, expecting value\n{\"b\":2}\n" },
    { "{\"a\":\"x\n{\"b\":2}\n", "E:JSON parse error, stray '\"x\n'\n{\"b\":2}\n" },
    { "{\"a\":NaN}\n", "E:JSON parse error, stray 'N'\nE:JSON parse error, expecting value\n" },
    { "{\"a\":1,\"a\":2}", "E:JSON parse error, duplicate key\n" },
    { "{\"a\":[1,]}", "E:JSON parse error, expecting value\n" },
    { "{\"a\" 1}", "E:JSON parse error, missing : in object pair\n" },
    { "{\"a\":1 \"b\":2}", "E:JSON parse error, expected separator in dict\n" },
    { "[1 2]", "E:JSON parse error, expected separator in list\n" },
    { "{1:2}", "E:JSON parse error, key is not a string in object\n" },
    { "[tru]", "E:JSON parse error, invalid keyword 'tru'\n" },
    { "\xff[1]", "E:JSON parse error, stray '\xef\xbf\xbd'\n[1]\n" },
    { "['it''s']", "E:JSON parse error, expected separator in list\n" },
    { "['a\\'b\"c']", "[\"a'b\\\"c\"]\n" },
    { "[\"\\u00e9\\ud83d\\ude00\"]", "[\"\xc3\xa9\xf0\x9f\x98\x80\"]\n" },
    { "[\"\\ud800\"]", "E:JSON parse error, \\ud800 is not a valid Unicode character\n" },
    { "[\"\xed\xa0\x80\"]", "E:JSON parse error, invalid UTF-8 sequence in string\n" },
    { "[0, -0, 0.5, 1e2, -1E-2, 0e1]", "[0,0,0.5,100.0,-0.01,0.0]\n" },
    { "[01]", "E:JSON parse error, stray '01'\nE:JSON parse error, expecting value\n" },
    { "[1e400]", "E:JSON parse error, number out of range\n" },
    { "[18446744073709551615, -9223372036854775808]",
      "[18446744073709551615,-9223372036854775808]\n" },
    { "  \t\r\n", "" },
    { "42 ", "42\n" },
};

/* Whole, then byte by byte, then in 3-byte pieces: the same emits. */
static void test_stream_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(stream_cases); i++) {
        const StreamCase *c = &stream_cases[i];
        size_t pieces[] = { strlen(c->in), 1, 3 };
        for (size_t p = 0; p < ARRAY_SIZE(pieces); p++) {
            Log log = { 0 };
            feed_in_pieces(c->in, strlen(c->in), pieces[p] ? pieces[p] : 1, &log);
            if (strcmp(log.text, c->out) != 0) {
                fail_msg("case %zu (%s), pieces of %zu: got\n%s\nwanted\n%s", i, c->in,
                         pieces[p], log.text, c->out);
            }
        }
    }
}

static void test_nesting_limit(void **state)
{
    char in[1100];
    Log log = { 0 };

    (void)state;
    memset(in, '[', 1025);
    strcpy(in + 1025, "\n[1]");
    feed_in_pieces(in, strlen(in), strlen(in), &log);
    assert_string_equal(log.text, "E:JSON nesting depth limit exceeded\n[1]\n");
}

/* A consumer that stops the feed sees nothing more from that read. */
static void test_stop(void **state)
{
    Log log = { .stop_after = 1 };
    const char *in = "[1][2][3]";

    (void)state;
    feed_in_pieces(in, strlen(in), strlen(in), &log);
    assert_string_equal(log.text, "[1]\n");
}

/* A huge unterminated string is dropped once it passes the limit, without
 * keeping it in memory. */
static void test_token_size_limit(void **state)
{
    size_t chunk = 1 << 20;
    char *buf = malloc(chunk);
    Log log = { 0 };
    JsonStream *js = json_stream_new(log_emit, &log);

    (void)state;
    memset(buf, 'x', chunk);
    json_stream_feed(js, "[\"", 2);
    for (int i = 0; i < 70; i++) {
        json_stream_feed(js, buf, chunk);
    }
    json_stream_feed(js, "\n[7]", 4);
    json_stream_free(js);
    free(buf);
    assert_string_equal(log.text, "E:JSON token size limit exceeded\n[7]\n");
}

static void test_parse_text(void **state)
{
    json_object *v;
    Error *err = NULL;

    (void)state;
    assert_true(json_parse_text("{\"driver\": \"null-co\"}", &v, &err));
    assert_string_equal(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
                        "{\"driver\":\"null-co\"}");
    json_object_put(v);
    assert_true(json_parse_text("17", &v, &err));
    assert_int_equal(json_object_get_int(v), 17);
    json_object_put(v);

    static const struct { const char *in, *msg; } bad[] = {
        { "", "Expecting a JSON value" },
        { "{\"a\": 1", "JSON parse error, premature end of input" },
        { "{} {}", "Expecting at most one JSON value" },
        { "{\"a\": NaN}", "JSON parse error, stray 'N'" },
        { "{\"a\": 1,}", "JSON parse error, expecting value" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        v = NULL;
        assert_false(json_parse_text(bad[i].in, &v, &err));
        assert_null(v);
        assert_string_equal(error_get_pretty(err), bad[i].msg);
        error_free(err);
        err = NULL;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_cases),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_token_size_limit),
        cmocka_unit_test(test_parse_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
