/*
 * qmp.c - the QMP protocol: greeting, capabilities negotiation, a streaming
 * JSON reader, dispatch, replies and events.
 *
 * Input is fed to a json-c tokener as it arrives, so a message split over
 * several reads and several messages in one read both work.  A malformed
 * message gets an error reply and the rest of its line is dropped; the
 * connection stays usable.  Output is queued per client and bounded: a
 * client that stops reading is disconnected rather than buffered for ever.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "blockd/list.h"
#include "blockd/log.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"

#define QMP_MAX_DEPTH 1024
#define QMP_MAX_MESSAGE (64 * 1024 * 1024)
#define QMP_MAX_OUTPUT (16 * 1024 * 1024)

typedef struct Monitor {
    Chardev *chr;
    int fd;                      /* -1: no client */
    bool pretty;
    bool negotiated;
    json_tokener *tok;
    size_t message_bytes;        /* fed into the current message so far */
    bool skip_line;              /* after a parse error: drop up to '\n' */
    char *out;
    size_t out_len;
    size_t out_cap;
    ListNode node;
} Monitor;

static ListNode monitors = LIST_INIT_STATIC(monitors);
bool qmp_quit_requested;

/* ---- Output --------------------------------------------------------------- */

static void monitor_disconnect(Monitor *mon);
static void monitor_flush(Monitor *mon);
static void monitor_update_handlers(Monitor *mon);

static void monitor_write_ready(void *opaque)
{
    monitor_flush(opaque);
}

static void monitor_flush(Monitor *mon)
{
    while (mon->fd >= 0 && mon->out_len > 0) {
        ssize_t n = write(mon->fd, mon->out, mon->out_len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                break;
            }
            monitor_disconnect(mon);
            return;
        }
        memmove(mon->out, mon->out + n, mon->out_len - n);
        mon->out_len -= n;
    }
    if (mon->fd >= 0) {
        monitor_update_handlers(mon);
    }
}

static void monitor_send(Monitor *mon, json_object *obj)
{
    int flags = JSON_C_TO_STRING_NOSLASHESCAPE |
                (mon->pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
                             : JSON_C_TO_STRING_PLAIN);
    const char *text = json_object_to_json_string_ext(obj, flags);
    size_t len = strlen(text);

    if (mon->fd < 0) {
        return;
    }
    if (mon->out_len + len + 1 > QMP_MAX_OUTPUT) {
        warn_report("QMP client on '%s' does not read its replies; disconnecting",
                    chardev_id(mon->chr));
        monitor_disconnect(mon);
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

static void send_error(Monitor *mon, json_object *id, ErrorClass cls, const char *desc)
{
    json_object *reply = error_object(cls, desc);

    if (id) {
        json_object_object_add(reply, "id", json_object_get(id));
    }
    monitor_send(mon, reply);
    json_object_put(reply);
}

static void send_return(Monitor *mon, json_object *id, json_object *ret)
{
    json_object *reply = json_object_new_object();

    json_object_object_add(reply, "return", ret ? ret : json_object_new_object());
    if (id) {
        json_object_object_add(reply, "id", json_object_get(id));
    }
    monitor_send(mon, reply);
    json_object_put(reply);
}

/* ---- Dispatch ---------------------------------------------------------------- */

static bool check_envelope(json_object *req, json_object **args, const char **name,
                           Error **errp)
{
    json_object *execute = NULL;

    *args = NULL;
    json_object_object_foreach(req, key, val) {
        if (strcmp(key, "execute") == 0) {
            execute = val;
        } else if (strcmp(key, "arguments") == 0) {
            *args = val;
        } else if (strcmp(key, "id") != 0) {
            error_setg(errp, "QMP input member '%s' is unexpected", key);
            return false;
        }
    }
    if (!execute) {
        error_setg(errp, "QMP input lacks member 'execute'");
        return false;
    }
    if (!json_object_is_type(execute, json_type_string)) {
        error_setg(errp, "QMP input member 'execute' must be a string");
        return false;
    }
    if (*args && !json_object_is_type(*args, json_type_object)) {
        error_setg(errp, "QMP input member 'arguments' must be an object");
        return false;
    }
    *name = json_object_get_string(execute);
    return true;
}

static json_object *dispatch(Monitor *mon, const char *name, json_object *args,
                             Error **errp)
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
    if (!args) {
        args = empty = json_object_new_object();
    }
    if (cmd->args) {
        if (!schema_check(cmd->args, args, errp)) {
            json_object_put(empty);
            return NULL;
        }
    } else {
        json_object_object_foreach(args, key, val) {
            (void)val;
            error_setg(errp, "Parameter '%s' is unexpected", key);
            json_object_put(empty);
            return NULL;
        }
    }
    ret = cmd->fn(args, errp);
    json_object_put(empty);
    if (ret == NULL && !*errp) {
        ret = json_object_new_object();
    }
    if (strcmp(name, "qmp_capabilities") == 0 && ret) {
        mon->negotiated = true;
    }
    return ret;
}

static void handle_message(Monitor *mon, json_object *req)
{
    Error *err = NULL;
    json_object *args, *id = NULL, *ret;
    const char *name;

    if (!json_object_is_type(req, json_type_object)) {
        send_error(mon, NULL, ERROR_CLASS_GENERIC_ERROR, "QMP input must be a JSON object");
        return;
    }
    json_object_object_get_ex(req, "id", &id);
    if (!check_envelope(req, &args, &name, &err)) {
        send_error(mon, id, error_get_class(err), error_get_pretty(err));
        error_free(err);
        return;
    }
    ret = dispatch(mon, name, args, &err);
    if (err) {
        send_error(mon, id, error_get_class(err), error_get_pretty(err));
        error_free(err);
        json_object_put(ret);
        return;
    }
    send_return(mon, id, ret);
}

/* ---- Input ------------------------------------------------------------------- */

static void feed(Monitor *mon, const char *buf, size_t len)
{
    size_t off = 0;

    while (off < len && mon->fd >= 0) {
        json_object *obj;
        enum json_tokener_error jerr;
        size_t used;

        if (mon->skip_line) {
            const char *nl = memchr(buf + off, '\n', len - off);
            if (!nl) {
                return;
            }
            off = nl - buf + 1;
            mon->skip_line = false;
            continue;
        }
        obj = json_tokener_parse_ex(mon->tok, buf + off, (int)(len - off));
        jerr = json_tokener_get_error(mon->tok);
        used = json_tokener_get_parse_end(mon->tok);
        if (jerr == json_tokener_continue) {
            mon->message_bytes += len - off;
            if (mon->message_bytes > QMP_MAX_MESSAGE) {
                send_error(mon, NULL, ERROR_CLASS_GENERIC_ERROR,
                           "JSON parse error, message too large");
                monitor_disconnect(mon);
            }
            return;
        }
        json_tokener_reset(mon->tok);
        mon->message_bytes = 0;
        if (jerr != json_tokener_success) {
            char desc[256];
            snprintf(desc, sizeof(desc), "JSON parse error, %s",
                     json_tokener_error_desc(jerr));
            send_error(mon, NULL, ERROR_CLASS_GENERIC_ERROR, desc);
            /* Resynchronise at the next line. */
            off += used;
            mon->skip_line = buf[off > 0 ? off - 1 : 0] != '\n';
            continue;
        }
        off += used;
        handle_message(mon, obj);
        json_object_put(obj);
    }
}

static void monitor_read(void *opaque)
{
    Monitor *mon = opaque;
    char buf[65536];
    ssize_t n = read(mon->fd, buf, sizeof(buf));

    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        monitor_disconnect(mon);
        return;
    }
    if (n > 0) {
        feed(mon, buf, n);
    }
}

/* Watch for input always, for writability only while output is queued. */
static void monitor_update_handlers(Monitor *mon)
{
    aio_set_fd_handler(iohandler_aio_context(), mon->fd, monitor_read,
                       mon->out_len ? monitor_write_ready : NULL, NULL, mon);
}

static void monitor_disconnect(Monitor *mon)
{
    if (mon->fd < 0) {
        return;
    }
    aio_set_fd_handler(iohandler_aio_context(), mon->fd, NULL, NULL, NULL, NULL);
    close(mon->fd);
    mon->fd = -1;
    mon->out_len = 0;
    mon->negotiated = false;
    json_tokener_reset(mon->tok);
    chardev_client_closed(mon->chr);
}

static void monitor_greet(Monitor *mon)
{
    json_object *qmp = json_object_new_object(), *greeting = json_object_new_object();

    json_object_object_add(qmp, "version", qmp_version_object());
    json_object_object_add(qmp, "capabilities", json_object_new_array());
    json_object_object_add(greeting, "QMP", qmp);
    monitor_send(mon, greeting);
    json_object_put(greeting);
}

static void monitor_connected(Chardev *chr, int fd, void *opaque)
{
    Monitor *mon = opaque;

    (void)chr;
    mon->fd = fd;
    mon->negotiated = false;
    mon->skip_line = false;
    mon->message_bytes = 0;
    json_tokener_reset(mon->tok);
    monitor_update_handlers(mon);
    monitor_greet(mon);
}

bool monitor_new_qmp(Chardev *chr, bool pretty, Error **errp)
{
    Monitor *mon = calloc(1, sizeof(*mon));

    GLOBAL_STATE_CODE();
    if (!mon) {
        abort();
    }
    mon->chr = chr;
    mon->fd = -1;
    mon->pretty = pretty;
    mon->tok = json_tokener_new_ex(QMP_MAX_DEPTH);
    json_tokener_set_flags(mon->tok, JSON_TOKENER_VALIDATE_UTF8);
    if (!chardev_set_handler(chr, monitor_connected, mon, errp)) {
        json_tokener_free(mon->tok);
        free(mon);
        return false;
    }
    list_add_tail(&monitors, &mon->node);
    return true;
}

void monitor_cleanup(void)
{
    while (!list_empty(&monitors)) {
        Monitor *mon = list_entry(monitors.next, Monitor, node);
        monitor_flush(mon);
        monitor_disconnect(mon);
        list_del(&mon->node);
        json_tokener_free(mon->tok);
        free(mon->out);
        free(mon);
    }
}

/* ---- Events ------------------------------------------------------------------ */

static void broadcast(json_object *event)
{
    list_for_each(n, &monitors) {
        Monitor *mon = list_entry(n, Monitor, node);
        if (mon->fd >= 0 && mon->negotiated) {
            monitor_send(mon, event);
        }
    }
}

static void event_bh(void *opaque)
{
    json_object *event = opaque;
    broadcast(event);
    json_object_put(event);
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
        broadcast(event);
        json_object_put(event);
    } else {
        aio_bh_schedule_oneshot(iohandler_aio_context(), event_bh, event);
    }
}
