/*
 * authz.c - the authorization objects a TLS server checks a client's
 * identity (its certificate's distinguished name, or its PSK username)
 * against: authz-simple (one identity), authz-list (rules matching exact
 * names or glob patterns, then a default policy) and authz-listfile (the
 * same rules in a JSON file, read again when the file changes, with
 * refresh).
 *
 * Half: global state (objects, and the checks made by the NBD handshake,
 * which runs in the main thread).
 */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "blockd/tls.h"
#include "blockd/user-object.h"

static const char *const policy_names[] = { "deny", "allow", NULL };
static const char *const format_names[] = { "exact", "glob", NULL };

typedef struct AuthzRule {
    char *match;
    bool allow;
    bool glob;
} AuthzRule;

typedef struct Authz {
    UserObject obj;
    char *identity;             /* authz-simple */
    bool allow_by_default;      /* authz-list(-file) */
    AuthzRule *rules;
    int nrules;
    char *filename;             /* authz-listfile */
    bool refresh;
    struct timespec mtime;      /* of the file as last read */
} Authz;

static void free_rules(Authz *a)
{
    for (int i = 0; i < a->nrules; i++) {
        free(a->rules[i].match);
    }
    free(a->rules);
    a->rules = NULL;
    a->nrules = 0;
}

/* "policy" and "rules" of @o into @a (replacing what it had). */
static bool parse_list(Authz *a, json_object *o, Error **errp)
{
    json_object *rules = NULL;
    int policy = 0;
    size_t n;

    if (!opt_get_enum(o, "policy", policy_names, &policy, errp)) {
        return false;
    }
    json_object_object_get_ex(o, "rules", &rules);
    if (rules && !json_object_is_type(rules, json_type_array)) {
        error_setg(errp, "Invalid parameter type for 'rules', expected: array");
        return false;
    }
    n = rules ? json_object_array_length(rules) : 0;
    free_rules(a);
    a->allow_by_default = policy == 1;
    a->rules = calloc(n ? n : 1, sizeof(*a->rules));
    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(rules, i);
        const char *match = NULL;
        int rpolicy = 0, format = 0;

        if (!json_object_is_type(r, json_type_object) ||
            !opt_get_str(r, "match", &match, errp) ||
            !opt_get_enum(r, "policy", policy_names, &rpolicy, errp) ||
            !opt_get_enum(r, "format", format_names, &format, errp)) {
            if (errp && !*errp) {
                error_setg(errp, "Invalid parameter type for 'rules[%zu]', expected: object",
                           i);
            }
            return false;
        }
        if (!match) {
            error_setg(errp, "Parameter 'rules[%zu].match' is missing", i);
            return false;
        }
        a->rules[a->nrules++] = (AuthzRule){ strdup(match), rpolicy == 1, format == 1 };
    }
    return true;
}

static bool load_file(Authz *a, Error **errp)
{
    struct stat st;
    json_object *o;
    bool ok;

    if (stat(a->filename, &st) < 0 || !(o = json_object_from_file(a->filename))) {
        error_setg(errp, "Unable to read '%s'", a->filename);
        return false;
    }
    ok = json_object_is_type(o, json_type_object) && parse_list(a, o, errp);
    if (!ok && errp && !*errp) {
        error_setg(errp, "File '%s' does not hold an authorization list", a->filename);
    }
    json_object_put(o);
    a->mtime = st.st_mtim;
    return ok;
}

static bool authz_init_obj(UserObject *obj, json_object *args, Error **errp)
{
    Authz *a = (Authz *)obj;
    const char *type = obj->cls->type, *s = NULL;

    if (strcmp(type, "authz-simple") == 0) {
        if (!opt_get_str(args, "identity", &s, errp)) {
            return false;
        }
        if (!s) {
            error_setg(errp, "Parameter 'identity' is missing");
            return false;
        }
        a->identity = strdup(s);
        return true;
    }
    if (strcmp(type, "authz-list") == 0) {
        if (parse_list(a, args, errp)) {
            return true;
        }
        free_rules(a);
        return false;
    }
    a->refresh = true;
    if (!opt_get_str(args, "filename", &s, errp) ||
        !opt_get_bool(args, "refresh", &a->refresh, errp)) {
        return false;
    }
    if (!s) {
        error_setg(errp, "Parameter 'filename' is missing");
        return false;
    }
    a->filename = strdup(s);
    if (!load_file(a, errp)) {
        free_rules(a);
        free(a->filename);
        return false;
    }
    return true;
}

static void authz_finalize(UserObject *obj)
{
    Authz *a = (Authz *)obj;

    free_rules(a);
    free(a->identity);
    free(a->filename);
}

static json_object *authz_get(UserObject *obj, const char *prop, Error **errp)
{
    Authz *a = (Authz *)obj;

    if (strcmp(prop, "identity") == 0) {
        return json_object_new_string(a->identity);
    }
    if (strcmp(prop, "policy") == 0) {
        return json_object_new_string(policy_names[a->allow_by_default]);
    }
    if (strcmp(prop, "filename") == 0) {
        return json_object_new_string(a->filename);
    }
    if (strcmp(prop, "refresh") == 0) {
        return json_object_new_boolean(a->refresh);
    }
    if (strcmp(prop, "rules") == 0) {
        json_object *list = json_object_new_array();
        for (int i = 0; i < a->nrules; i++) {
            json_object *r = json_object_new_object();
            json_object_object_add(r, "match", json_object_new_string(a->rules[i].match));
            json_object_object_add(r, "policy",
                                   json_object_new_string(policy_names[a->rules[i].allow]));
            json_object_object_add(r, "format",
                                   json_object_new_string(format_names[a->rules[i].glob]));
            json_object_array_add(list, r);
        }
        return list;
    }
    error_setg(errp, "Property '%s.%s' is not readable", obj->cls->type, prop);
    return NULL;
}

static bool authz_set(UserObject *obj, const char *prop, json_object *value, Error **errp)
{
    (void)value;
    error_setg(errp, "Property '%s.%s' cannot be changed at run time", obj->cls->type, prop);
    return false;
}

static const char *const simple_props[] = { "identity", NULL };
static const char *const simple_types[] = { "string", NULL };
static const char *const list_props[] = { "policy", "rules", NULL };
static const char *const list_types[] = { "QAuthZListPolicy", "QAuthZListRule", NULL };
static const char *const file_props[] = { "filename", "refresh", NULL };
static const char *const file_types[] = { "string", "bool", NULL };

#define AUTHZ_CLASS(name, props, types) {                                   \
    .type = name, .parent = "authz", .instance_size = sizeof(Authz),       \
    .prop_names = props, .prop_types = types, .init = authz_init_obj,      \
    .finalize = authz_finalize, .get = authz_get, .set = authz_set,        \
}

static const UserObjectClass simple_class = AUTHZ_CLASS("authz-simple", simple_props,
                                                        simple_types);
static const UserObjectClass list_class = AUTHZ_CLASS("authz-list", list_props, list_types);
static const UserObjectClass file_class = AUTHZ_CLASS("authz-listfile", file_props,
                                                      file_types);

void authz_init(void)
{
    user_object_register(&simple_class);
    user_object_register(&list_class);
    user_object_register(&file_class);
}

static Authz *find(const char *id, Error **errp)
{
    UserObject *obj = user_object_find(id, NULL);

    if (!obj || (obj->cls != &simple_class && obj->cls != &list_class &&
                 obj->cls != &file_class)) {
        error_setg(errp, "No authorization object with id '%s'", id);
        return NULL;
    }
    return (Authz *)obj;
}

bool authz_exists(const char *id, Error **errp)
{
    GLOBAL_STATE_CODE();
    return find(id, errp) != NULL;
}

/* authz-listfile with refresh: read the file again if it changed (a
 * file that became unreadable keeps the last good rules). */
static void maybe_reload(Authz *a)
{
    struct stat st;

    if (a->filename && a->refresh && stat(a->filename, &st) == 0 &&
        (st.st_mtim.tv_sec != a->mtime.tv_sec || st.st_mtim.tv_nsec != a->mtime.tv_nsec)) {
        Error *err = NULL;
        Authz fresh = { .filename = a->filename };

        if (load_file(&fresh, &err)) {
            free_rules(a);
            a->rules = fresh.rules;
            a->nrules = fresh.nrules;
            a->allow_by_default = fresh.allow_by_default;
            a->mtime = fresh.mtime;
        } else {
            free_rules(&fresh);
            error_free(err);
        }
    }
}

bool authz_is_allowed(const char *id, const char *identity, Error **errp)
{
    Authz *a;

    GLOBAL_STATE_CODE();
    if (!(a = find(id, errp))) {
        return false;
    }
    if (!identity) {
        return false;
    }
    if (a->identity) {
        return strcmp(a->identity, identity) == 0;
    }
    maybe_reload(a);
    for (int i = 0; i < a->nrules; i++) {
        const AuthzRule *r = &a->rules[i];

        if (r->glob ? fnmatch(r->match, identity, 0) == 0 : strcmp(r->match, identity) == 0) {
            return r->allow;
        }
    }
    return a->allow_by_default;
}
