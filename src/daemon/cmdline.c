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
           "             [,read-only=on|off][,force-share=on|off]...\n"
           "                            add a block node; JSON is accepted too:\n"
           "                            --blockdev '{\"driver\": \"file\", ...}'\n"
           "  --chardev socket,id=<id>,path=<path>,server=on,wait=off\n"
           "  --chardev socket,id=<id>,host=<host>,port=<port>,server=on,wait=off\n"
           "                            a listening socket for a monitor\n"
           "  --monitor [chardev=]<id>[,pretty=on|off]\n"
           "                            serve QMP on the chardev\n"
           "  --object iothread,id=<id>[,poll-max-ns=<ns>][,poll-grow=<n>]\n"
           "           [,poll-shrink=<n>][,aio-max-batch=<n>]\n"
           "                            an I/O thread\n"
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
    json_object *o = parse_arg(arg, NULL, &qapi_blockdev_options, &err);

    if (!o || !qmp_blockdev_add_node(o, &err)) {
        json_object_put(o);
        die("--blockdev", arg, err);
    }
    json_object_put(o);
}

static void do_object(const char *arg)
{
    Error *err = NULL;
    json_object *o = parse_arg(arg, "qom-type", &qapi_object_add_args, &err);

    if (!o || !qmp_object_add_iothread(o, &err)) {
        json_object_put(o);
        die("--object", arg, err);
    }
    json_object_put(o);
}

static void do_chardev(const char *arg)
{
    Error *err = NULL;
    json_object *o = parse_arg(arg, "backend", &qapi_chardev_options, &err);

    if (!o || !chardev_new(o, &err)) {
        json_object_put(o);
        die("--chardev", arg, err);
    }
    json_object_put(o);
}

static void do_monitor(const char *arg)
{
    Error *err = NULL;
    json_object *o = parse_arg(arg, "chardev", &qapi_monitor_options, &err);
    json_object *v;
    Chardev *chr;
    bool pretty = false;

    if (!o) {
        die("--monitor", arg, err);
    }
    json_object_object_get_ex(o, "chardev", &v);
    chr = chardev_find(json_object_get_string(v));
    if (!chr) {
        error_setg(&err, "chardev \"%s\" not found", json_object_get_string(v));
    } else {
        if (json_object_object_get_ex(o, "pretty", &v)) {
            pretty = json_object_get_boolean(v);
        }
        monitor_new_qmp(chr, pretty, &err);
    }
    json_object_put(o);
    if (err) {
        die("--monitor", arg, err);
    }
}

static void do_nbd_server(const char *arg)
{
    Error *err = NULL;
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
