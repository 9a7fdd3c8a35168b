/*
 * json-internal.h - what the JSON stream (json-stream.c) hands the JSON
 * parser (json-parse.c): one value's tokens.  Common code.
 */
#ifndef BLOCKD_JSON_INTERNAL_H
#define BLOCKD_JSON_INTERNAL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "blockd/error.h"
#include "blockd/json-stream.h"

typedef enum JsonTokenType {
    JSON_TK_LBRACE,
    JSON_TK_RBRACE,
    JSON_TK_LBRACKET,
    JSON_TK_RBRACKET,
    JSON_TK_COLON,
    JSON_TK_COMMA,
    JSON_TK_STRING,        /* with its quotes, escapes not yet decoded */
    JSON_TK_INTEGER,
    JSON_TK_FLOAT,
    JSON_TK_WORD,          /* [a-z]+: true, false, null or an error */
} JsonTokenType;

typedef struct JsonToken {
    JsonTokenType type;
    size_t off;            /* into the text buffer */
    size_t len;
} JsonToken;

/*
 * Build the value that @tokens (a balanced sequence, or one that ended
 * with an unbalanced closing bracket) describe; @text holds their bytes.
 * True with *@value set (NULL is JSON null), or false with @errp set to
 * "JSON parse error, ...".
 */
bool json_parse_tokens(const JsonToken *tokens, size_t count, const char *text,
                       json_object **value, Error **errp);

#endif /* BLOCKD_JSON_INTERNAL_H */
