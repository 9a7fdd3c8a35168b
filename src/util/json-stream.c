/*
 * json-stream.c - split a byte stream into JSON values (see json-stream.h
 * for the rules).
 *
 * Two stages, each looking at every byte once:
 *   the lexer turns bytes into tokens; a byte that fits no token makes an
 *   error token and puts the lexer into recovery, where it skips up to a
 *   byte that may start something well-formed;
 *   the streamer collects tokens and counts brackets; when they balance
 *   (or go negative) it hands the tokens to the parser, and when a token
 *   is an error or a limit is hit it drops them and reports the error.
 * Token texts of the value being collected live in one growing buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/json-stream.h"
#include "json-internal.h"

#define JSON_MAX_TEXT (64u << 20)
#define JSON_MAX_TOKENS (2u << 20)
#define JSON_MAX_NESTING 1024

typedef enum LexState {
    LX_START,
    LX_RECOVER,       /* after an error: skip to a resynchronisation byte */
    LX_STRING,        /* inside "..." */
    LX_STRING_ESC,    /* after a backslash in "..." */
    LX_SQ_STRING,     /* inside '...' */
    LX_SQ_STRING_ESC,
    LX_SIGN,          /* after '-' */
    LX_ZERO,          /* a leading 0 */
    LX_DIGITS,        /* integer digits */
    LX_POINT,         /* after '.', a digit must follow */
    LX_FRACTION,
    LX_EXP_MARK,      /* after 'e'/'E' */
    LX_EXP_SIGN,      /* after the exponent's sign, a digit must follow */
    LX_EXP_DIGITS,
    LX_WORD,          /* [a-z]+ */
} LexState;

struct JsonStream {
    JsonStreamEmit *emit;
    void *opaque;
    bool stopped;             /* the consumer asked to stop this feed */

    LexState state;
    size_t tok_start;         /* where the token being lexed starts in text */

    char *text;               /* token texts of the current value */
    size_t text_len, text_cap;
    JsonToken *tokens;
    size_t ntokens, tokens_cap;
    int braces, brackets;     /* open minus closed */
};

JsonStream *json_stream_new(JsonStreamEmit *emit, void *opaque)
{
    JsonStream *js = calloc(1, sizeof(*js));

    if (!js) {
        abort();
    }
    js->emit = emit;
    js->opaque = opaque;
    return js;
}

void json_stream_free(JsonStream *js)
{
    if (js) {
        free(js->text);
        free(js->tokens);
        free(js);
    }
}

static void drop_value(JsonStream *js)
{
    js->text_len = 0;
    js->tok_start = 0;
    js->ntokens = 0;
    js->braces = js->brackets = 0;
}

void json_stream_reset(JsonStream *js)
{
    drop_value(js);
    js->state = LX_START;
}

static void emit(JsonStream *js, json_object *value, Error *err)
{
    if (!js->emit(js->opaque, value, err)) {
        js->stopped = true;
    }
}

static void emit_error(JsonStream *js, const char *fmt, const char *arg)
{
    Error *err = NULL;

    error_setg(&err, fmt, arg);
    emit(js, NULL, err);
}

static void append_byte(JsonStream *js, unsigned char c)
{
    if (js->text_len == js->text_cap) {
        js->text_cap = js->text_cap ? js->text_cap * 2 : 256;
        js->text = realloc(js->text, js->text_cap);
        if (!js->text) {
            abort();
        }
    }
    js->text[js->text_len++] = (char)c;
}

/* The bytes of the token being lexed make an error token. */
static void lex_error(JsonStream *js)
{
    size_t len = js->text_len - js->tok_start;
    char *shown = json_sanitize_utf8(js->text + js->tok_start, len);

    drop_value(js);
    js->state = LX_RECOVER;
    emit_error(js, "JSON parse error, stray '%s'", shown);
    free(shown);
}

static void parse_and_emit(JsonStream *js)
{
    json_object *value = NULL;
    Error *err = NULL;
    bool ok = json_parse_tokens(js->tokens, js->ntokens, js->text, &value, &err);

    drop_value(js);
    emit(js, ok ? value : NULL, ok ? NULL : err);
}

/* The token being lexed is complete: give it to the streamer. */
static void push_token(JsonStream *js, JsonTokenType type)
{
    const char *limit = NULL;

    if (js->ntokens == js->tokens_cap) {
        js->tokens_cap = js->tokens_cap ? js->tokens_cap * 2 : 64;
        js->tokens = realloc(js->tokens, js->tokens_cap * sizeof(*js->tokens));
        if (!js->tokens) {
            abort();
        }
    }
    js->tokens[js->ntokens++] = (JsonToken){
        .type = type, .off = js->tok_start, .len = js->text_len - js->tok_start,
    };
    js->tok_start = js->text_len;
    js->state = LX_START;

    switch (type) {
    case JSON_TK_LBRACE:   js->braces++;   break;
    case JSON_TK_RBRACE:   js->braces--;   break;
    case JSON_TK_LBRACKET: js->brackets++; break;
    case JSON_TK_RBRACKET: js->brackets--; break;
    default: break;
    }
    if (js->braces < 0 || js->brackets < 0 || (js->braces == 0 && js->brackets == 0)) {
        parse_and_emit(js);
        return;
    }
    if (js->text_len > JSON_MAX_TEXT) {
        limit = "JSON token size limit exceeded";
    } else if (js->ntokens > JSON_MAX_TOKENS) {
        limit = "JSON token count limit exceeded";
    } else if (js->braces + js->brackets > JSON_MAX_NESTING) {
        limit = "JSON nesting depth limit exceeded";
    }
    if (limit) {
        drop_value(js);
        emit_error(js, "%s", limit);
    }
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* A byte after which the lexer leaves recovery (and reads it afresh). */
static bool resyncs(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c >= 0xFE || c == '[' || c == ']' ||
           c == '{' || c == '}' || c == ':' || c == ',';
}

static void lex_start(JsonStream *js, unsigned char c)
{
    static const struct { char c; JsonTokenType type; } structural[] = {
        { '{', JSON_TK_LBRACE }, { '}', JSON_TK_RBRACE },
        { '[', JSON_TK_LBRACKET }, { ']', JSON_TK_RBRACKET },
        { ':', JSON_TK_COLON }, { ',', JSON_TK_COMMA },
    };

    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        return;
    }
    append_byte(js, c);
    for (size_t i = 0; i < sizeof(structural) / sizeof(structural[0]); i++) {
        if (c == (unsigned char)structural[i].c) {
            push_token(js, structural[i].type);
            return;
        }
    }
    if (c == '"') {
        js->state = LX_STRING;
    } else if (c == '\'') {
        js->state = LX_SQ_STRING;
    } else if (c == '-') {
        js->state = LX_SIGN;
    } else if (c == '0') {
        js->state = LX_ZERO;
    } else if (is_digit(c)) {
        js->state = LX_DIGITS;
    } else if (c >= 'a' && c <= 'z') {
        js->state = LX_WORD;
    } else {
        lex_error(js);
    }
}

/* Inside a string quoted by @quote.  Control bytes and 0xFE/0xFF end it
 * with an error; UTF-8 is checked by the parser. */
static void lex_string(JsonStream *js, unsigned char c, char quote, LexState esc)
{
    append_byte(js, c);
    if (c < 0x20 || c >= 0xFE) {
        lex_error(js);
    } else if (c == (unsigned char)quote) {
        push_token(js, JSON_TK_STRING);
    } else if (c == '\\') {
        js->state = esc;
    }
}

static void lex_string_escape(JsonStream *js, unsigned char c, LexState back)
{
    append_byte(js, c);
    if (c < 0x20 || c >= 0xFE) {
        lex_error(js);
    } else {
        js->state = back;
    }
}

/*
 * A byte in a number or word.  Returns false when the byte is not part of
 * the token: the token is complete and the byte must be lexed afresh.
 */
static bool lex_number_or_word(JsonStream *js, unsigned char c)
{
    LexState next;

    switch (js->state) {
    case LX_SIGN:
        next = c == '0' ? LX_ZERO : is_digit(c) ? LX_DIGITS : LX_START;
        break;
    case LX_ZERO:
        if (is_digit(c)) {
            next = LX_START;           /* "01": an error */
            break;
        }
        /* 0.5 and 0e1 go on as other integers do */
        /* fall through */
    case LX_DIGITS:
        if (is_digit(c)) {
            next = LX_DIGITS;
        } else if (c == '.') {
            next = LX_POINT;
        } else if (c == 'e' || c == 'E') {
            next = LX_EXP_MARK;
        } else {
            push_token(js, JSON_TK_INTEGER);
            return false;
        }
        break;
    case LX_POINT:
        next = is_digit(c) ? LX_FRACTION : LX_START;
        break;
    case LX_FRACTION:
        if (is_digit(c) || c == 'e' || c == 'E') {
            next = is_digit(c) ? LX_FRACTION : LX_EXP_MARK;
            break;
        }
        push_token(js, JSON_TK_FLOAT);
        return false;
    case LX_EXP_MARK:
        next = (c == '+' || c == '-') ? LX_EXP_SIGN : is_digit(c) ? LX_EXP_DIGITS : LX_START;
        break;
    case LX_EXP_SIGN:
        next = is_digit(c) ? LX_EXP_DIGITS : LX_START;
        break;
    case LX_EXP_DIGITS:
        if (is_digit(c)) {
            next = LX_EXP_DIGITS;
            break;
        }
        push_token(js, JSON_TK_FLOAT);
        return false;
    case LX_WORD:
        if (c >= 'a' && c <= 'z') {
            next = LX_WORD;
            break;
        }
        push_token(js, JSON_TK_WORD);
        return false;
    default:
        abort();
    }
    append_byte(js, c);
    if (next == LX_START) {
        lex_error(js);          /* the byte cannot continue the number */
    } else {
        js->state = next;
    }
    return true;
}

static void lex_byte(JsonStream *js, unsigned char c)
{
    for (;;) {
        switch (js->state) {
        case LX_START:
            lex_start(js, c);
            return;
        case LX_RECOVER:
            if (!resyncs(c)) {
                return;
            }
            js->state = LX_START;
            continue;
        case LX_STRING:
            lex_string(js, c, '"', LX_STRING_ESC);
            return;
        case LX_SQ_STRING:
            lex_string(js, c, '\'', LX_SQ_STRING_ESC);
            return;
        case LX_STRING_ESC:
            lex_string_escape(js, c, LX_STRING);
            return;
        case LX_SQ_STRING_ESC:
            lex_string_escape(js, c, LX_SQ_STRING);
            return;
        default:
            if (lex_number_or_word(js, c) || js->stopped) {
                return;
            }
            continue;           /* the token ended before @c */
        }
    }
}

void json_stream_feed(JsonStream *js, const char *buf, size_t len)
{
    js->stopped = false;
    for (size_t i = 0; i < len && !js->stopped; i++) {
        lex_byte(js, (unsigned char)buf[i]);
        /* A single token may not grow without bound either. */
        if (js->text_len > JSON_MAX_TEXT && js->state != LX_RECOVER) {
            drop_value(js);
            js->state = LX_RECOVER;
            emit_error(js, "%s", "JSON token size limit exceeded");
        }
    }
}

/* ---- One value from a whole text ------------------------------------------ */

typedef struct TextParse {
    int count;
    json_object *value;
    Error *err;
} TextParse;

static bool collect_one(void *opaque, json_object *value, Error *err)
{
    TextParse *tp = opaque;

    if (err || tp->err) {
        json_object_put(value);
        error_propagate(&tp->err, err);
        return false;
    }
    if (++tp->count > 1) {
        json_object_put(value);
        error_setg(&tp->err, "Expecting at most one JSON value");
        return false;
    }
    tp->value = value;
    return true;
}

bool json_parse_text(const char *text, json_object **value, Error **errp)
{
    TextParse tp = { 0 };
    JsonStream *js = json_stream_new(collect_one, &tp);

    json_stream_feed(js, text, strlen(text));
    /* End of input completes a trailing number or word ("42", "true"). */
    if (!js->stopped && js->state != LX_START && js->state != LX_RECOVER) {
        json_stream_feed(js, " ", 1);
    }
    if (!tp.err && (js->ntokens > 0 || js->state != LX_START)) {
        error_setg(&tp.err, "JSON parse error, premature end of input");
    }
    json_stream_free(js);
    if (!tp.err && tp.count == 0) {
        error_setg(&tp.err, "Expecting a JSON value");
    }
    if (tp.err) {
        json_object_put(tp.value);
        error_propagate(errp, tp.err);
        return false;
    }
    *value = tp.value;
    return true;
}
