/*
 * test-keyval - the key=value,... parser: every rule and every message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blockd/error.h"
#include "blockd/keyval.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

typedef struct KvCase {
    const char *input;
    const char *implied;    /* implied key, or NULL */
    const char *json;       /* the expected object, or NULL if an error */
    const char *error;      /* the expected message */
} KvCase;

static const KvCase cases[] = {
    /* Plain pairs */
    { "", NULL, "{}", NULL },
    { "a=1", NULL, "{\"a\":\"1\"}", NULL },
    { "a=1,b=2", NULL, "{\"a\":\"1\",\"b\":\"2\"}", NULL },
    { "a=", NULL, "{\"a\":\"\"}", NULL },
    { "a=b=c", NULL, "{\"a\":\"b=c\"}", NULL },
    { "id=666", NULL, "{\"id\":\"666\"}", NULL },
    { "a-b_c=1,A9=2", NULL, "{\"a-b_c\":\"1\",\"A9\":\"2\"}", NULL },
    { "__com.redhat_x=1", NULL, "{\"__com.redhat_x\":\"1\"}", NULL },

    /* Commas: ",," escapes, one trailing ',' is ignored */
    { "x=y,", NULL, "{\"x\":\"y\"}", NULL },
    { "x=y,,", NULL, "{\"x\":\"y,\"}", NULL },
    { "x=,,id=bar", NULL, "{\"x\":\",id=bar\"}", NULL },
    { "x=a,,,,b", NULL, "{\"x\":\"a,,b\"}", NULL },
    { "x=1,,2,y=3", NULL, "{\"x\":\"1,2\",\"y\":\"3\"}", NULL },
    { "filename=/tmp/a,,b.img,driver=file", NULL,
      "{\"filename\":\"/tmp/a,b.img\",\"driver\":\"file\"}", NULL },

    /* The same key twice: the last one wins */
    { "a=1,b=2,,x,a=3", NULL, "{\"a\":\"3\",\"b\":\"2,x\"}", NULL },
    { "id=foo,id=bar", NULL, "{\"id\":\"bar\"}", NULL },

    /* Dotted keys */
    { "a.b.c=1,a.b.c=2,d=3", NULL, "{\"a\":{\"b\":{\"c\":\"2\"}},\"d\":\"3\"}", NULL },
    { "file.driver=file,file.filename=/tmp/x", NULL,
      "{\"file\":{\"driver\":\"file\",\"filename\":\"/tmp/x\"}}", NULL },
    { "a.b=1,a.c=2", NULL, "{\"a\":{\"b\":\"1\",\"c\":\"2\"}}", NULL },

    /* Lists: numbered objects, any order, leading zeros ignored */
    { "list.0=null,list.2=zwei,list.1=eins", NULL,
      "{\"list\":{\"0\":\"null\",\"1\":\"eins\",\"2\":\"zwei\"}}", NULL },
    { "list.1=goner,list.0=null,list.01=eins,list.2=zwei", NULL,
      "{\"list\":{\"0\":\"null\",\"1\":\"eins\",\"2\":\"zwei\"}}", NULL },
    { "a.list.1=eins,a.list.00=null,a.list.2=zwei", NULL,
      "{\"a\":{\"list\":{\"0\":\"null\",\"1\":\"eins\",\"2\":\"zwei\"}}}", NULL },
    { "a.0.b=x,a.1.b=y", NULL, "{\"a\":{\"0\":{\"b\":\"x\"},\"1\":{\"b\":\"y\"}}}", NULL },
    { "a.0=x,a.1.b=y", NULL, "{\"a\":{\"0\":\"x\",\"1\":{\"b\":\"y\"}}}", NULL },

    /* Implied key: the first element only, ends at ',' or '=' */
    { "an,aus=off,noaus=", "implied",
      "{\"implied\":\"an\",\"aus\":\"off\",\"noaus\":\"\"}", NULL },
    { "val", "eins.zwei", "{\"eins\":{\"zwei\":\"val\"}}", NULL },
    { "m0", "chardev", "{\"chardev\":\"m0\"}", NULL },
    { "file.x", "node", "{\"node\":\"file.x\"}", NULL },
    { "a=b", "implied", "{\"a\":\"b\"}", NULL },
    { "", "implied", "{}", NULL },
    { "a=1,b", "implied", NULL, "Expected '=' after parameter 'b'" },
    { "x,y", "implied", NULL, "Expected '=' after parameter 'y'" },

    /* Key syntax */
    { "=val", NULL, NULL, "Invalid parameter ''" },
    { ".", NULL, NULL, "Invalid parameter '.'" },
    { "key.", NULL, NULL, "Invalid parameter 'key.'" },
    { ".a=1", NULL, NULL, "Invalid parameter '.a'" },
    { "a..b=1", NULL, NULL, "Invalid parameter 'a..b'" },
    { "7up=val", NULL, NULL, "Invalid parameter '7up'" },
    { "key[0]=val", NULL, NULL, "Invalid parameter 'key[0]'" },
    { "a b=1", NULL, NULL, "Invalid parameter 'a b'" },
    { "a.0x=1", NULL, NULL, "Invalid parameter 'a.0x'" },
    { "_x=1", NULL, NULL, "Invalid parameter '_x'" },
    { "0=1", NULL, NULL, "Invalid parameter '0'" },
    { "a=1,=2", NULL, NULL, "Invalid parameter ''" },
    { ",", NULL, NULL, "Invalid parameter ''" },
    { ",", "implied", NULL, "Invalid parameter ''" },
    { ",,,a=1", "implied", NULL, "Invalid parameter ''" },
    { "val,,ue", "implied", NULL, "Invalid parameter ''" },
    { "=val", "implied", NULL, "Invalid parameter ''" },

    /* Missing '=' */
    { "an,noaus,noaus=", NULL, NULL, "Expected '=' after parameter 'an'" },
    { "no", NULL, NULL, "Expected '=' after parameter 'no'" },
    { "help", NULL, NULL, "Expected '=' after parameter 'help'" },
    { "a.b", NULL, NULL, "Expected '=' after parameter 'a.b'" },
    { "a=1,b.c,d=2", NULL, NULL, "Expected '=' after parameter 'b.c'" },

    /* A value and a parent at once */
    { "a.b=1,a=2", NULL, NULL, "Parameters 'a.*' used inconsistently" },
    { "a=2,a.b=1", NULL, NULL, "Parameters 'a.*' used inconsistently" },
    { "a.b=1,a.b.c=2", NULL, NULL, "Parameters 'a.b.*' used inconsistently" },
    { "a.b.c=1,a.b=2", NULL, NULL, "Parameters 'a.b.*' used inconsistently" },
    /* ... checked fragment by fragment, after each fragment's syntax */
    { "a=1,a.b c=2", NULL, NULL, "Invalid parameter 'a.b c'" },
    { "a=1,a.b.c d=2", NULL, NULL, "Parameters 'a.*' used inconsistently" },

    /* Lists: no mixing with names, no gaps */
    { "a.b.c=1,a.b.0=2", NULL, NULL, "Parameters 'a.b.*' used inconsistently" },
    { "a.0.c=1,a.b.c=2", NULL, NULL, "Parameters 'a.*' used inconsistently" },
    { "list.1=lonely", NULL, NULL, "Parameter 'list.0' missing" },
    { "list.0=null,list.2=eins,list.02=zwei", NULL, NULL, "Parameter 'list.1' missing" },
    { "a.x.0=1,a.x.2=3", NULL, NULL, "Parameter 'a.x.1' missing" },
    { "a.0.0=1,a.1.1=2", NULL, NULL, "Parameter 'a.1.0' missing" },
    /* syntax errors come before list errors */
    { "list.1=lonely,7=x", NULL, NULL, "Invalid parameter '7'" },
};

static int check_case(const KvCase *c)
{
    Error *err = NULL;
    json_object *got = keyval_parse(c->input, c->implied, &err);
    int failed = 0;

    if (c->error) {
        if (got) {
            fprintf(stderr, "FAIL \"%s\" [%s]: got %s, expected error \"%s\"\n", c->input,
                    c->implied ? c->implied : "-", json_object_to_json_string(got), c->error);
            failed = 1;
        } else if (!err || strcmp(error_get_pretty(err), c->error) != 0) {
            fprintf(stderr, "FAIL \"%s\" [%s]: error \"%s\", expected \"%s\"\n", c->input,
                    c->implied ? c->implied : "-", err ? error_get_pretty(err) : "(none)",
                    c->error);
            failed = 1;
        }
    } else {
        json_object *want = json_tokener_parse(c->json);

        assert_non_null(want);
        if (!got) {
            fprintf(stderr, "FAIL \"%s\" [%s]: error \"%s\", expected %s\n", c->input,
                    c->implied ? c->implied : "-", err ? error_get_pretty(err) : "(none)",
                    c->json);
            failed = 1;
        } else if (!json_object_equal(got, want)) {
            fprintf(stderr, "FAIL \"%s\" [%s]: got %s, expected %s\n", c->input,
                    c->implied ? c->implied : "-", json_object_to_json_string(got), c->json);
            failed = 1;
        }
        json_object_put(want);
    }
    json_object_put(got);
    error_free(err);
    return failed;
}

static void test_table(void **state)
{
    int failed = 0;

    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        failed += check_case(&cases[i]);
    }
    printf("%zu cases, %d failed\n", ARRAY_SIZE(cases), failed);
    assert_int_equal(failed, 0);
}

/* Keys and fragments of 127 characters pass, 128 do not. */
static void test_long_keys(void **state)
{
    char k127[128], k128[129];
    char input[300], json[300], msg[300];
    int failed = 0;

    (void)state;
    memset(k127, 'a', 126);
    k127[126] = 'z';
    k127[127] = '\0';
    memset(k128, 'a', 127);
    k128[127] = 'z';
    k128[128] = '\0';

    snprintf(input, sizeof(input), "%s=v", k127);
    snprintf(json, sizeof(json), "{\"%s\":\"v\"}", k127);
    failed += check_case(&(KvCase){ input, NULL, json, NULL });

    snprintf(input, sizeof(input), "k.%s=v", k127);
    snprintf(json, sizeof(json), "{\"k\":{\"%s\":\"v\"}}", k127);
    failed += check_case(&(KvCase){ input, NULL, json, NULL });

    snprintf(input, sizeof(input), "%s=v", k128);
    snprintf(msg, sizeof(msg), "Parameter '%s' is too long", k128);
    failed += check_case(&(KvCase){ input, NULL, NULL, msg });

    snprintf(input, sizeof(input), "k.%s=v", k128);
    snprintf(msg, sizeof(msg), "Parameter fragment '%s' is too long", k128);
    failed += check_case(&(KvCase){ input, NULL, NULL, msg });

    snprintf(input, sizeof(input), "%s.k=v", k128);
    snprintf(msg, sizeof(msg), "Parameter fragment '%s' is too long", k128);
    failed += check_case(&(KvCase){ input, NULL, NULL, msg });

    /* an index fragment too */
    memset(k128, '1', 128);
    snprintf(input, sizeof(input), "k.%s=v", k128);
    snprintf(msg, sizeof(msg), "Parameter fragment '%s' is too long", k128);
    failed += check_case(&(KvCase){ input, NULL, NULL, msg });

    assert_int_equal(failed, 0);
}

/* Huge indexes are capped, not wrapped; NULL input and NULL errp work. */
static void test_misc(void **state)
{
    Error *err = NULL;
    json_object *o;

    (void)state;
    o = keyval_parse("l.99999999999999999999=x", NULL, &err);
    assert_null(o);
    assert_string_equal(error_get_pretty(err), "Parameter 'l.0' missing");
    error_free(err);

    o = keyval_parse(NULL, NULL, &error_abort);
    assert_int_equal(json_object_object_length(o), 0);
    json_object_put(o);

    assert_null(keyval_parse("a.b=1,a=2", NULL, NULL));

    /* The result is a fresh tree the caller owns. */
    o = keyval_parse("a.b=1", NULL, &error_abort);
    assert_true(json_object_is_type(o, json_type_object));
    json_object_put(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_long_keys),
        cmocka_unit_test(test_misc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
