/*
 * cmdline.c - parsing and applying qemu-storage-daemon's options.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/chardev.h"
#include "blockd/export.h"
#include "blockd/json-stream.h"
#include "blockd/keyval.h"
#include "blockd/log.h"
#include "blockd/monitor.h"
#include "blockd/schema.h"
#include "cmdline.h"
#include "../monitor/monitor-internal.h"
#include "../monitor/qapi-schemas.h"
#include "version.h"


enum {
    OPT_BLOCKDEV = 256,
    OPT_CHARDEV,
    OPT_DAEMONIZE,
    OPT_EXPORT,
    OPT_MONITOR,
    OPT_NBD_SERVER,
    OPT_OBJECT,
    OPT_PIDFILE,
};

static void usage(const char *prog)
{
    (void)prog;
    printf("Usage: blockd [options]\n"
           "blockd " BLOCKD_VERSION " - a storage daemon compatible with qemu-storage-daemon\n"
           "\n"
           "  -h, --help                display this help and exit\n"
           "  -V, --version             output version information and exit\n"
           "\n"
           "  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
           "             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
           "             [,read-only=on|off][,auto-read-only=on|off]\n"
           "             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
           "             [,<driver options>]\n"
           "                            add a block node; JSON is accepted too:\n"
           "                            --blockdev '{\"driver\": \"file\", ...}'\n"
           "  --chardev socket,id=<id>[,path=<path>|,host=<host>,port=<port>|,fd=<fd>]\n"
           "            [,server=on|off][,wait=on|off][,nodelay=on|off]\n"
           "  --chardev stdio,id=<id>[,signal=on|off]\n"
           "  --chardev file,id=<id>,path=<path>[,input-path=<path>][,append=on|off]\n"
           "  --chardev ringbuf|memory,id=<id>[,size=<size>]\n"
           "  --chardev null,id=<id>\n"
           "                            a character device (for a monitor);\n"
           "                            --chardev help lists the backends\n"
           "  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
           "           [,writable=on|off][,description=<text>]\n"
           "           [,iothread=<id>][,fixed-iothread=on|off]\n"
           "                            export the specified block node over NBD\n"
           "                            (requires --nbd-server)\n"
           "  --monitor [chardev=]<id>[,mode=control][,pretty=on|off]\n"
           "                            serve QMP on the chardev\n"
           "  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
           "               [,max-connections=<n>][,handshake-max-seconds=<n>]\n"
           "  --nbd-server addr.type=unix,addr.path=<path>[,max-connections=<n>]\n"
           "               [,handshake-max-seconds=<n>]\n"
           "                            start an NBD server for exporting block nodes\n"
           "                            (at most 100 connections and 10 s to finish the\n"
           "                            handshake by default; 0: no limit)\n"
           "  --object iothread,id=<id>[,poll-max-ns=<ns>][,poll-grow=<n>]\n"
           "           [,poll-shrink=<n>][,aio-max-batch=<n>]\n"
           "           [,thread-pool-min=<n>][,thread-pool-max=<n>]\n"
           "                            an I/O thread; --object help lists the types,\n"
           "                            --object iothread,help its properties\n"
           "  --pidfile <path>          write the process id to <path>\n"
           "  --daemonize               run in the background once set up\n");
}

static void die(const char *option, const char *arg, Error *err)
{
    error_report("%s %s: %s", option, arg, error_get_pretty(err));
    if (error_get_hint(err)) {
        fputs(error_get_hint(err), stderr);
    }
    error_free(err);
    exit(1);
}

/*
 * QEMU's "help": a bare "help" or "?" among the key=value elements.
 * *@first gets the first element when it has no '=' (an implied value),
 * and *@type the value of @type_key; both NULL if absent.  Malloc'd.
 */
static bool help_requested(const char *arg, const char *type_key, char **first, char **type)
{
    bool help = false;
    size_t klen = type_key ? strlen(type_key) : 0;

    *first = *type = NULL;
    if (arg[0] == '{') {
        return false;
    }
    for (const char *p = arg; *p; ) {
        const char *end = p;
        while (*end && !(end[0] == ',' && end[1] != ',')) {
            end += end[0] == ',' ? 2 : 1;        /* ",," is a literal comma */
        }
        size_t len = end - p;
        if ((len == 4 && !strncmp(p, "help", 4)) || (len == 1 && *p == '?')) {
            help = true;
        } else if (p == arg && !memchr(p, '=', len)) {
            *first = strndup(p, len);
        } else if (type_key && len > klen && !strncmp(p, type_key, klen) && p[klen] == '=') {
            *type = strndup(p + klen + 1, len - klen - 1);
        }
        p = *end ? end + 1 : end;
    }
    return help;
}

static const char *help_type_name(SchemaType t)
{
    switch (t) {
    case SCHEMA_INT:  return "<int>";
    case SCHEMA_SIZE: return "<size>";
    case SCHEMA_BOOL: return "<bool (on/off)>";
    case SCHEMA_NUMBER: return "<num>";
    default:          return "<str>";
    }
}

static int compare_names(const void *a, const void *b)
{
    return strcmp((*(const SchemaField *const *)a)->name, (*(const SchemaField *const *)b)->name);
}

/* "<title>:" and each member as "  name=<type>", sorted as QEMU lists them. */
static void print_members(const char *title, const SchemaField *fields, const char *skip)
{
    const SchemaField *sorted[64];
    size_t n = 0;

    for (const SchemaField *f = fields; f->name && n < 64; f++) {
        if (!skip || strcmp(f->name, skip) != 0) {
            sorted[n++] = f;
        }
    }
    qsort(sorted, n, sizeof(sorted[0]), compare_names);
    printf("%s:\n", title);
    for (size_t i = 0; i < n; i++) {
        printf("  %s=%s\n", sorted[i]->name, help_type_name(sorted[i]->type));
    }
}

/* --object help, --object TYPE,help, --chardev help: print and exit as
 * qemu-storage-daemon does; other options have no help. */
static void maybe_help(const char *option, const char *arg)
{
    char *first, *type, title[64];
    bool help;

    help = help_requested(arg, strcmp(option, "--object") == 0 ? "qom-type" : NULL,
                          &first, &type);
    if (!help) {
        free(first);
        free(type);
        return;
    }
    if (strcmp(option, "--object") == 0) {
        const char *t = type ? type : first;
        const SchemaVariant *v = qapi_object_add_args.variants;
        while (t && v->value && strcmp(v->value, t) != 0) {
            v++;
        }
        if (t && v->value) {
            snprintf(title, sizeof(title), "%s options", v->value);
            print_members(title, v->object->fields, NULL);
        } else {
            printf("List of user creatable objects:\n");
            for (v = qapi_object_add_args.variants; v->value; v++) {
                printf("  %s\n", v->value);
            }
        }
        exit(0);
    }
    if (strcmp(option, "--chardev") == 0) {
        if (!first) {
            printf("Available chardev backend types: \n");
            for (int i = 0; chardev_backend_names[i]; i++) {
                printf("  %s\n", chardev_backend_names[i]);
            }
            exit(0);
        }
        print_members("chardev options", qapi_chardev_options.fields, NULL);
        exit(1);
    }
    error_report("%s %s: Help is not available for this option", option, arg);
    exit(1);
}

/* JSON when it starts with '{', else key=value typed by @schema. */
static json_object *parse_arg(const char *arg, const char *implied_key,
                              const SchemaObject *schema, Error **errp)
{
    json_object *obj, *kv;

    if (arg[0] == '{') {
        if (!json_parse_text(arg, &obj, errp)) {
            return NULL;
        }
        if (!json_object_is_type(obj, json_type_object)) {
            json_object_put(obj);
            error_setg(errp, "Invalid JSON");
            return NULL;
        }
        if (!schema_check(schema, obj, errp)) {
            json_object_put(obj);
            return NULL;
        }
        return obj;
    }
    kv = keyval_parse(arg, implied_key, errp);
    if (!kv) {
        return NULL;
    }
    obj = schema_from_keyval(schema, kv, errp);
    json_object_put(kv);
    return obj;
}

static void do_blockdev(const char *arg)
{
    Error *err = NULL;

    maybe_help("--blockdev", arg);
    json_object *o = parse_arg(arg, "driver", &qapi_blockdev_options, &err);

    if (!o || !qmp_blockdev_add_node(o, &err)) {
        json_object_put(o);
        die("--blockdev", arg, err);
    }
    json_object_put(o);
}

static void do_object(const char *arg)
{
    Error *err = NULL;

    maybe_help("--object", arg);
    json_object *o = parse_arg(arg, "qom-type", &qapi_object_add_args, &err);

    if (!o || !qmp_object_add_checked(o, &err)) {
        json_object_put(o);
        die("--object", arg, err);
    }
    json_object_put(o);
}

static void do_chardev(const char *arg)
{
    Error *err = NULL;

    maybe_help("--chardev", arg);
    json_object *o = parse_arg(arg, "backend", &qapi_chardev_options, &err);

    if (!o || !chardev_new_flat(o, &err)) {
        json_object_put(o);
        die("--chardev", arg, err);
    }
    json_object_put(o);
}

static void do_monitor(const char *arg)
{
    Error *err = NULL;

    maybe_help("--monitor", arg);
    json_object *o = parse_arg(arg, "chardev", &qapi_monitor_options, &err);

    if (!o || !qmp_monitor_add(o, &err)) {
        json_object_put(o);
        die("--monitor", arg, err);
    }
    json_object_put(o);
}

static void do_nbd_server(const char *arg)
{
    Error *err = NULL;

    maybe_help("--nbd-server", arg);
    json_object *o = parse_arg(arg, NULL, &qapi_nbd_server_options, &err);

    if (!o || !qmp_nbd_server_start_flat(o, &err)) {
        json_object_put(o);
        die("--nbd-server", arg, err);
    }
    json_object_put(o);
}

static void do_export(const char *arg)
{
    Error *err = NULL;

    maybe_help("--export", arg);
    json_object *o = parse_arg(arg, "type", &qapi_block_export_options, &err);

    if (!o || !blk_exp_add(o, &err)) {
        json_object_put(o);
        die("--export", arg, err);
    }
    json_object_put(o);
}

void cmdline_process(int argc, char **argv, DaemonOptions *opts)
{
    static const struct option long_options[] = {
        { "blockdev", required_argument, NULL, OPT_BLOCKDEV },
        { "chardev", required_argument, NULL, OPT_CHARDEV },
        { "daemonize", no_argument, NULL, OPT_DAEMONIZE },
        { "export", required_argument, NULL, OPT_EXPORT },
        { "help", no_argument, NULL, 'h' },
        { "monitor", required_argument, NULL, OPT_MONITOR },
        { "nbd-server", required_argument, NULL, OPT_NBD_SERVER },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "pidfile", required_argument, NULL, OPT_PIDFILE },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    opterr = 0;   /* our own messages, in QEMU's words */
    while ((c = getopt_long(argc, argv, "-hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(argv[0]);
            exit(0);
        case 'V':
            printf("blockd version " BLOCKD_VERSION "\n");
            exit(0);
        case OPT_BLOCKDEV:
            do_blockdev(optarg);
            break;
        case OPT_CHARDEV:
            do_chardev(optarg);
            break;
        case OPT_MONITOR:
            do_monitor(optarg);
            break;
        case OPT_OBJECT:
            do_object(optarg);
            break;
        case OPT_PIDFILE:
            opts->pidfile = optarg;
            break;
        case OPT_DAEMONIZE:
            opts->daemonize = true;
            break;
        case OPT_NBD_SERVER:
            do_nbd_server(optarg);
            break;
        case OPT_EXPORT:
            do_export(optarg);
            break;
        case 1:
            error_report("Unexpected argument: %s", optarg);
            exit(1);
        case '?':
        default:
            if (optopt && optopt < 256) {
                error_report("invalid option -- '%c'", optopt);
            } else if (optopt) {
                error_report("option '%s' requires an argument", argv[optind - 1]);
            } else {
                error_report("unrecognized option '%s'", argv[optind - 1]);
            }
            exit(1);
        }
    }
}
