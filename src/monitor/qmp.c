/*
 * qmp.c - the QMP protocol: greeting, capabilities negotiation, a streaming
 * JSON reader, dispatch, replies and events.
 *
 * Input goes through a JSON stream (json-stream.h) as it arrives, so a
 * message split over several reads and several messages in one read both
 * work, and malformed input gets one error per bad value, after which the
 * next well-formed command runs, exactly as with QEMU.  Commands run in
 * order of arrival; "exec-oob" is accepted once negotiated, for the
 * commands marked allow_oob (qemu-storage-daemon has none).  Output is
 * queued per client and bounded: a client that stops reading is
 * disconnected rather than buffered for ever.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "blockd/json-stream.h"
#include "blockd/list.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/thread.h"

#define QMP_MAX_OUTPUT (16 * 1024 * 1024)

typedef struct Monitor {
    Chardev *chr;
    bool pretty;
    bool negotiated;
    bool oob;                    /* out-of-band execution enabled */
    JsonStream *in;
    char *out;
    size_t out_len;
    size_t out_cap;
    ListNode node;
} Monitor;

static ListNode monitors = LIST_INIT_STATIC(monitors);
bool qmp_quit_requested;

/* ---- Output --------------------------------------------------------------- */

static void monitor_flush(Monitor *mon)
{
    while (mon->out_len > 0) {
        ssize_t n = chardev_write(mon->chr, mon->out, mon->out_len);
        if (n < 0) {
            return;                 /* the peer went away: closed() ran */
        }
        if (n == 0) {
            break;
        }
        memmove(mon->out, mon->out + n, mon->out_len - n);
        mon->out_len -= n;
    }
    chardev_want_write(mon->chr, mon->out_len > 0);
}

static void monitor_write_ready(void *opaque)
{
    monitor_flush(opaque);
}

static void monitor_send(Monitor *mon, json_object *obj)
{
    int flags = JSON_C_TO_STRING_NOSLASHESCAPE |
                (mon->pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
                             : JSON_C_TO_STRING_PLAIN);
    const char *text = json_object_to_json_string_ext(obj, flags);
    size_t len = strlen(text);

    if (!chardev_is_open(mon->chr)) {
        return;
    }
    /* A client that left this much unread is not reading: let it go (one
     * large reply alone is fine). */
    if (mon->out_len > QMP_MAX_OUTPUT) {
        warn_report("QMP client on '%s' does not read its replies; disconnecting",
                    chardev_id(mon->chr));
        chardev_hangup(mon->chr);
        return;
    }
    if (mon->out_len + len + 1 > mon->out_cap) {
        mon->out_cap = (mon->out_len + len + 1) * 2;
        mon->out = realloc(mon->out, mon->out_cap);
        if (!mon->out) {
            abort();
        }
    }
    memcpy(mon->out + mon->out_len, text, len);
    mon->out[mon->out_len + len] = '\n';
    mon->out_len += len + 1;
    monitor_flush(mon);
}

static json_object *error_object(ErrorClass cls, const char *desc)
{
    json_object *err = json_object_new_object();
    json_object *reply = json_object_new_object();

    json_object_object_add(err, "class", json_object_new_string(error_class_name(cls)));
    json_object_object_add(err, "desc", json_object_new_string(desc));
    json_object_object_add(reply, "error", err);
    return reply;
}

static void send_error(Monitor *mon, bool has_id, json_object *id, ErrorClass cls,
                       const char *desc)
{
    json_object *reply = error_object(cls, desc);

    if (has_id) {
        json_object_object_add(reply, "id", json_object_get(id));
    }
    monitor_send(mon, reply);
    json_object_put(reply);
}

static void send_return(Monitor *mon, bool has_id, json_object *id, json_object *ret)
{
    json_object *reply = json_object_new_object();

    json_object_object_add(reply, "return", ret ? ret : json_object_new_object());
    if (has_id) {
        json_object_object_add(reply, "id", json_object_get(id));
    }
    monitor_send(mon, reply);
    json_object_put(reply);
}

/* ---- Dispatch ---------------------------------------------------------------- */

/*
 * The envelope of a request: "execute" (or, once out-of-band execution is
 * enabled, "exec-oob") naming the command, optional "arguments" and "id".
 */
static bool check_envelope(Monitor *mon, json_object *req, json_object **args,
                           const char **name, bool *oob, Error **errp)
{
    json_object *execute = NULL, *exec_oob = NULL;

    *args = NULL;
    json_object_object_foreach(req, key, val) {
        if (strcmp(key, "execute") == 0) {
            execute = val;
        } else if (strcmp(key, "exec-oob") == 0 && mon->oob) {
            exec_oob = val;
        } else if (strcmp(key, "arguments") == 0) {
            *args = val;
        } else if (strcmp(key, "id") != 0) {
            error_setg(errp, "QMP input member '%s' is unexpected", key);
            return false;
        }
    }
    if (execute && exec_oob) {
        error_setg(errp, "QMP input member 'execute' clashes with 'exec-oob'");
        return false;
    }
    *oob = exec_oob != NULL;
    if (exec_oob) {
        execute = exec_oob;
    }
    if (!execute) {
        error_setg(errp, "QMP input lacks member 'execute'");
        return false;
    }
    if (!json_object_is_type(execute, json_type_string)) {
        error_setg(errp, "QMP input member '%s' must be a string",
                   *oob ? "exec-oob" : "execute");
        return false;
    }
    if (*args && !json_object_is_type(*args, json_type_object)) {
        error_setg(errp, "QMP input member 'arguments' must be an object");
        return false;
    }
    *name = json_object_get_string(execute);
    return true;
}

static bool check_arguments(const QmpCommand *cmd, json_object *args, Error **errp)
{
    if (cmd->args) {
        return schema_check(cmd->args, args, errp);
    }
    json_object_object_foreach(args, key, val) {
        (void)val;
        error_setg(errp, "Parameter '%s' is unexpected", key);
        return false;
    }
    return true;
}

/* Does @args of qmp_capabilities ask for out-of-band execution? */
static bool wants_oob(json_object *args)
{
    json_object *enable;

    if (!args || !json_object_object_get_ex(args, "enable", &enable)) {
        return false;
    }
    for (size_t i = 0; i < json_object_array_length(enable); i++) {
        if (strcmp(json_object_get_string(json_object_array_get_idx(enable, i)),
                   "oob") == 0) {
            return true;
        }
    }
    return false;
}

static json_object *dispatch(Monitor *mon, const char *name, json_object *args,
                             bool oob, Error **errp)
{
    const QmpCommand *cmd;
    json_object *empty = NULL, *ret;

    if (!mon->negotiated && strcmp(name, "qmp_capabilities") != 0) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Expecting capabilities negotiation with 'qmp_capabilities'");
        return NULL;
    }
    if (mon->negotiated && strcmp(name, "qmp_capabilities") == 0) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Capabilities negotiation is already complete, command ignored");
        return NULL;
    }
    cmd = qmp_find_command(name);
    if (!cmd) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "The command %s has not been found", name);
        return NULL;
    }
    if (oob && !cmd->allow_oob) {
        error_setg(errp, "The command %s does not support OOB", name);
        return NULL;
    }
    if (!args) {
        args = empty = json_object_new_object();
    }
    if (!check_arguments(cmd, args, errp)) {
        json_object_put(empty);
        return NULL;
    }
    ret = cmd->fn(args, errp);
    if (ret == NULL && !*errp) {
        ret = json_object_new_object();
    }
    if (strcmp(name, "qmp_capabilities") == 0 && ret) {
        mon->negotiated = true;
        mon->oob = wants_oob(args);
    }
    json_object_put(empty);
    return ret;
}

static void handle_message(Monitor *mon, json_object *req)
{
    Error *err = NULL;
    json_object *args, *id = NULL, *ret;
    const char *name;
    bool oob;

    if (!json_object_is_type(req, json_type_object)) {
        send_error(mon, false, NULL, ERROR_CLASS_GENERIC_ERROR,
                   "QMP input must be a JSON object");
        return;
    }
    /* "id": null is an id too, and comes back as null. */
    bool has_id = json_object_object_get_ex(req, "id", &id);
    if (!check_envelope(mon, req, &args, &name, &oob, &err)) {
        send_error(mon, has_id, id, error_get_class(err), error_get_pretty(err));
        error_free(err);
        return;
    }
    ret = dispatch(mon, name, args, oob, &err);
    if (err) {
        send_error(mon, has_id, id, error_get_class(err), error_get_pretty(err));
        error_free(err);
        json_object_put(ret);
        return;
    }
    send_return(mon, has_id, id, ret);
}

/* ---- Input ------------------------------------------------------------------- */

/* One value or one parse error from the client's stream. */
static bool monitor_input(void *opaque, json_object *value, Error *err)
{
    Monitor *mon = opaque;

    if (err) {
        send_error(mon, false, NULL, error_get_class(err), error_get_pretty(err));
        error_free(err);
    } else {
        handle_message(mon, value);
        json_object_put(value);
    }
    /* The reply may have overflowed the output, or the command ended the
     * connection: the rest of the input then has no one to answer. */
    return chardev_is_open(mon->chr);
}

static void monitor_receive(void *opaque, const char *buf, size_t len)
{
    Monitor *mon = opaque;

    json_stream_feed(mon->in, buf, len);
}

static void monitor_closed(void *opaque)
{
    Monitor *mon = opaque;

    mon->out_len = 0;
    mon->negotiated = false;
    mon->oob = false;
    json_stream_reset(mon->in);
}

static void monitor_greet(Monitor *mon)
{
    json_object *qmp = json_object_new_object(), *greeting = json_object_new_object();
    json_object *caps = json_object_new_array();

    json_object_array_add(caps, json_object_new_string("oob"));
    json_object_object_add(qmp, "version", qmp_version_object());
    json_object_object_add(qmp, "capabilities", caps);
    json_object_object_add(greeting, "QMP", qmp);
    monitor_send(mon, greeting);
    json_object_put(greeting);
}

static void monitor_opened(void *opaque)
{
    Monitor *mon = opaque;

    monitor_closed(mon);        /* a fresh session */
    monitor_greet(mon);
}

static const ChardevHandlers monitor_handlers = {
    .opened = monitor_opened,
    .closed = monitor_closed,
    .receive = monitor_receive,
    .write_ready = monitor_write_ready,
};

bool monitor_new_qmp(Chardev *chr, bool pretty, Error **errp)
{
    Monitor *mon = calloc(1, sizeof(*mon));

    GLOBAL_STATE_CODE();
    if (!mon) {
        abort();
    }
    mon->chr = chr;
    mon->pretty = pretty;
    mon->in = json_stream_new(monitor_input, mon);
    list_add_tail(&monitors, &mon->node);
    if (!chardev_attach(chr, &monitor_handlers, mon, errp)) {
        list_del(&mon->node);
        json_stream_free(mon->in);
        free(mon);
        return false;
    }
    return true;
}

static void throttles_free(void);

void monitor_cleanup(void)
{
    throttles_free();
    while (!list_empty(&monitors)) {
        Monitor *mon = list_entry(monitors.next, Monitor, node);
        monitor_flush(mon);
        chardev_free(mon->chr);
        list_del(&mon->node);
        json_stream_free(mon->in);
        free(mon->out);
        free(mon);
    }
}

/* ---- Events ------------------------------------------------------------------ */

static void broadcast(json_object *event)
{
    list_for_each(n, &monitors) {
        Monitor *mon = list_entry(n, Monitor, node);
        if (chardev_is_open(mon->chr) && mon->negotiated) {
            monitor_send(mon, event);
        }
    }
}

/*
 * Events a guest can cause at will are sent at most once a second, as
 * QEMU sends them: the first at once; later ones within the second are
 * held, the last one replacing the others, and sent when it ends (which
 * starts another second).  Main thread.
 */
typedef struct Throttle {
    const char *name;
    AioTimer *timer;
    json_object *held;
    bool active;                    /* within a second after a send */
} Throttle;

static Throttle throttles[] = {
    { .name = "QUORUM_FAILURE" },
    { .name = "QUORUM_REPORT_BAD" },
};

#define THROTTLE_NS 1000000000LL

static void throttle_end(void *opaque)
{
    Throttle *t = opaque;

    if (!t->held) {
        t->active = false;
        return;
    }
    broadcast(t->held);
    json_object_put(t->held);
    t->held = NULL;
    timer_mod(t->timer, clock_now_ns() + THROTTLE_NS);
}

static void emit(json_object *event)
{
    const char *name = json_object_get_string(json_object_object_get(event, "event"));
    Throttle *t = NULL;

    for (size_t i = 0; i < sizeof(throttles) / sizeof(throttles[0]); i++) {
        t = strcmp(throttles[i].name, name) == 0 ? &throttles[i] : t;
    }
    if (t && t->active) {
        json_object_put(t->held);
        t->held = event;
        return;
    }
    broadcast(event);
    json_object_put(event);
    if (t) {
        if (!t->timer) {
            t->timer = aio_timer_new(iohandler_aio_context(), throttle_end, t);
        }
        t->active = true;
        timer_mod(t->timer, clock_now_ns() + THROTTLE_NS);
    }
}

static void event_bh(void *opaque)
{
    emit(opaque);
}

/* At exit: held events are dropped (no monitor is left to read them). */
static void throttles_free(void)
{
    for (size_t i = 0; i < sizeof(throttles) / sizeof(throttles[0]); i++) {
        json_object_put(throttles[i].held);
        throttles[i].held = NULL;
        if (throttles[i].timer) {
            timer_free(throttles[i].timer);
            throttles[i].timer = NULL;
        }
        throttles[i].active = false;
    }
}

void qmp_event(const char *name, json_object *data)
{
    json_object *event = json_object_new_object(), *ts = json_object_new_object();
    struct timeval tv;

    gettimeofday(&tv, NULL);
    json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
    json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
    json_object_object_add(event, "event", json_object_new_string(name));
    if (data) {
        json_object_object_add(event, "data", data);
    }
    json_object_object_add(event, "timestamp", ts);
    if (in_main_thread()) {
        emit(event);
    } else {
        aio_bh_schedule_oneshot(iohandler_aio_context(), event_bh, event);
    }
}
