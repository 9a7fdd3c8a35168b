/*
 * chardev.c - character devices: the registry, the frontend session, byte
 * I/O on file descriptors, and the stdio, null, file and ring buffer
 * backends (sockets are in chardev-socket.c).
 *
 * Both forms of options end up in one flat set of keys (the command
 * line's): QMP's {"type": T, "data": {...}} is flattened first, so both
 * create a chardev the same way and refuse the same things.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <termios.h>
#include <unistd.h>

#include "blockd/main-loop.h"
#include "blockd/options.h"
#include "chardev-internal.h"

#define RINGBUF_DEFAULT_SIZE 65536

const char *const chardev_backend_names[] = {
    "socket", "stdio", "null", "file", "ringbuf", "memory", NULL,
};

/* QEMU backends blockd does not have: refused with a message naming them. */
static const char *const unsupported_backends[] = {
    "pty", "udp", "pipe", "serial", "parallel", "mux", "vc", "spicevmc",
    "spiceport", "qemu-vdagent", "dbus", "braille", "msmouse", "wctablet",
    "testdev", "console", NULL,
};

static ListNode chardevs = LIST_INIT_STATIC(chardevs);
static bool stdio_in_use;
static struct termios saved_tty;
static int saved_stdin_flags;

Chardev *chardev_find(const char *id)
{
    GLOBAL_STATE_CODE();
    list_for_each(n, &chardevs) {
        Chardev *chr = list_entry(n, Chardev, node);
        if (strcmp(chr->id, id) == 0) {
            return chr;
        }
    }
    return NULL;
}

const char *chardev_id(Chardev *chr) { return chr->id; }
const char *chardev_backend(Chardev *chr) { return chr->backend; }
bool chardev_is_open(Chardev *chr) { return chr->open; }
bool chardev_has_frontend(Chardev *chr) { return chr->h != NULL; }
bool chardev_stdio_in_use(void) { return stdio_in_use; }

void chardev_foreach(void (*fn)(Chardev *chr, void *opaque), void *opaque)
{
    GLOBAL_STATE_CODE();
    list_for_each_safe(n, &chardevs) {
        fn(list_entry(n, Chardev, node), opaque);
    }
}

char *chardev_filename(Chardev *chr)
{
    char *s;

    switch (chr->kind) {
    case CHR_SOCKET:
        if (asprintf(&s, "%s%s%s", chr->open || !chr->server ? "" : "disconnected:",
                     chr->address, chr->server ? ",server=on" : "") < 0) {
            abort();
        }
        return s;
    case CHR_STDIO:   return strdup("stdio");
    case CHR_NULL:    return strdup("null");
    case CHR_FILE:    return strdup("file");
    case CHR_RINGBUF: return strdup("ringbuf");
    }
    abort();
}

/* ---- The session: byte I/O on the peer's descriptors ------------------------- */

static void chardev_update_handlers(Chardev *chr);

/* A TLS session: what it has decrypted, record by record (GnuTLS may
 * hold more than the socket shows readable), until it needs the socket. */
static void tls_readable(Chardev *chr)
{
    char buf[16384];

    while (chr->open && chr->tls) {
        ssize_t n = tls_session_read(chr->tls, buf, sizeof(buf));

        if (n == TLS_WANT_READ || n == TLS_WANT_WRITE) {
            return;
        }
        if (n <= 0) {
            chardev_session_close(chr);
            return;
        }
        if (chr->h) {
            chr->h->receive(chr->opaque, buf, n);
        }
    }
}

static void chardev_readable(void *opaque)
{
    Chardev *chr = opaque;
    char buf[65536];
    ssize_t n;

    if (chr->tls) {
        tls_readable(chr);
        return;
    }
    n = read(chr->in_fd, buf, sizeof(buf));

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        chardev_session_close(chr);
        return;
    }
    if (chr->h) {
        chr->h->receive(chr->opaque, buf, n);
    }
}

static void chardev_writable(void *opaque)
{
    Chardev *chr = opaque;

    if (chr->h && chr->want_write) {
        chr->h->write_ready(chr->opaque);
    }
}

/* Can epoll watch @fd?  Not a regular file or /dev/null: those are always
 * ready, and are read and written without waiting. */
static bool fd_pollable(int fd)
{
    struct epoll_event ev = { .events = EPOLLIN };
    int ep = epoll_create1(EPOLL_CLOEXEC);
    bool ok;

    if (ep < 0) {
        return false;
    }
    ok = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
    close(ep);
    return ok;
}

/* Input that cannot be watched is read in chunks from a bottom half until
 * its end. */
static void file_input_bh(void *opaque)
{
    Chardev *chr = opaque;
    char buf[65536];
    ssize_t n;

    if (!chr->open || chr->in_fd < 0 || !chr->h) {
        return;
    }
    n = read(chr->in_fd, buf, sizeof(buf));
    if (n <= 0) {
        close(chr->in_fd);          /* the end: output goes on */
        chr->in_fd = -1;
        return;
    }
    chr->h->receive(chr->opaque, buf, n);
    if (chr->open && chr->in_fd >= 0) {
        bh_schedule(chr->input_bh);
    }
}

static void chardev_update_handlers(Chardev *chr)
{
    AioContext *ctx = iohandler_aio_context();
    bool want = chr->want_write && chr->h;

    if (!chr->open) {
        return;
    }
    if (chr->in_fd >= 0 && !chr->in_pollable) {
        if (chr->h) {
            if (!chr->input_bh) {
                chr->input_bh = aio_bh_new(ctx, file_input_bh, chr);
            }
            bh_schedule(chr->input_bh);
        }
    }
    if (!chr->out_pollable) {
        want = false;           /* writes to it never wait */
    }
    if (chr->in_fd >= 0 && chr->in_fd == chr->out_fd && chr->in_pollable) {
        aio_set_fd_handler(ctx, chr->in_fd, chr->h ? chardev_readable : NULL,
                           want ? chardev_writable : NULL, NULL, chr);
        return;
    }
    if (chr->in_fd >= 0 && chr->in_pollable) {
        aio_set_fd_handler(ctx, chr->in_fd, chr->h ? chardev_readable : NULL, NULL, NULL, chr);
    }
    if (chr->out_fd >= 0 && chr->out_pollable) {
        aio_set_fd_handler(ctx, chr->out_fd, NULL, want ? chardev_writable : NULL, NULL, chr);
    }
}

static void clear_handlers(Chardev *chr)
{
    if (chr->in_fd >= 0 && chr->in_pollable) {
        aio_set_fd_handler(iohandler_aio_context(), chr->in_fd, NULL, NULL, NULL, NULL);
    }
    if (chr->out_fd >= 0 && chr->out_fd != chr->in_fd && chr->out_pollable) {
        aio_set_fd_handler(iohandler_aio_context(), chr->out_fd, NULL, NULL, NULL, NULL);
    }
}

void chardev_session_open(Chardev *chr, int in_fd, int out_fd, bool own)
{
    chr->in_fd = in_fd;
    chr->out_fd = out_fd;
    chr->in_pollable = in_fd >= 0 && fd_pollable(in_fd);
    chr->out_pollable = out_fd >= 0 && fd_pollable(out_fd);
    chr->own_fds = own;
    chr->open = true;
    chardev_update_handlers(chr);
    if (chr->h) {
        chr->h->opened(chr->opaque);
    }
}

void chardev_session_close(Chardev *chr)
{
    if (!chr->open) {
        return;
    }
    clear_handlers(chr);
    tls_session_free(chr->tls);
    chr->tls = NULL;
    if (chr->own_fds) {
        if (chr->in_fd >= 0) {
            close(chr->in_fd);
        }
        if (chr->out_fd >= 0 && chr->out_fd != chr->in_fd) {
            close(chr->out_fd);
        }
    }
    chr->in_fd = chr->out_fd = -1;
    chr->open = false;
    chr->want_write = false;
    if (chr->h) {
        chr->h->closed(chr->opaque);
    }
    if (chr->kind == CHR_SOCKET && chr->server) {
        chardev_socket_listen_again(chr);
    }
}

bool chardev_attach(Chardev *chr, const ChardevHandlers *h, void *opaque, Error **errp)
{
    GLOBAL_STATE_CODE();
    if (chr->h) {
        error_setg(errp, "Chardev '%s' is busy", chr->id);
        return false;
    }
    chr->h = h;
    chr->opaque = opaque;
    chardev_update_handlers(chr);
    if (chr->open) {
        h->opened(opaque);
    }
    return true;
}

static void ring_put(Chardev *chr, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        chr->ring[chr->prod++ & (chr->ring_size - 1)] = buf[i];
        if (chr->prod - chr->cons > chr->ring_size) {
            chr->cons = chr->prod - chr->ring_size;     /* the oldest byte goes */
        }
    }
}

ssize_t chardev_write(Chardev *chr, const char *buf, size_t len)
{
    ssize_t n;

    if (chr->kind == CHR_RINGBUF) {
        ring_put(chr, buf, len);
        return len;
    }
    if (chr->kind == CHR_NULL || !chr->open || chr->out_fd < 0) {
        return chr->kind == CHR_NULL || chr->open ? (ssize_t)len : -1;
    }
    /* Standard output may be a blocking pipe: a write of at most a page
     * fits once the loop reported it writable. */
    if (chr->kind == CHR_STDIO && len > 4096) {
        len = 4096;
    }
    if (chr->tls) {
        /* (After a wait, the caller offers the same bytes again, as GnuTLS
         * wants.) */
        n = tls_session_write(chr->tls, buf, len);
        if (n == TLS_WANT_READ || n == TLS_WANT_WRITE) {
            return 0;
        }
        if (n < 0) {
            chardev_session_close(chr);
            return -1;
        }
        return n;
    }
    n = write(chr->out_fd, buf, len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            return 0;
        }
        chardev_session_close(chr);
        return -1;
    }
    if (chr->log_fd >= 0 && n > 0 && write(chr->log_fd, buf, n) < 0) {
        /* The log is a copy; losing it must not end the session. */
    }
    return n;
}

void chardev_want_write(Chardev *chr, bool on)
{
    if (chr->want_write != on) {
        chr->want_write = on;
        chardev_update_handlers(chr);
    }
}

void chardev_hangup(Chardev *chr)
{
    GLOBAL_STATE_CODE();
    chardev_session_close(chr);
}

/* ---- Ring buffers ---------------------------------------------------------------- */

bool chardev_ring_write(Chardev *chr, const char *buf, size_t len, Error **errp)
{
    if (chr->kind != CHR_RINGBUF) {
        error_setg(errp, "%s is not a ringbuf device", chr->id);
        return false;
    }
    ring_put(chr, buf, len);
    return true;
}

char *chardev_ring_read(Chardev *chr, size_t size, size_t *len, Error **errp)
{
    char *out;
    size_t n = 0;

    if (chr->kind != CHR_RINGBUF) {
        error_setg(errp, "%s is not a ringbuf device", chr->id);
        return NULL;
    }
    if (size > chr->prod - chr->cons) {
        size = chr->prod - chr->cons;
    }
    out = malloc(size + 1);
    if (!out) {
        abort();
    }
    while (n < size && chr->cons < chr->prod) {
        out[n++] = chr->ring[chr->cons++ & (chr->ring_size - 1)];
    }
    out[n] = '\0';
    *len = n;
    return out;
}

/* ---- Backends -------------------------------------------------------------------- */

static bool open_stdio(Chardev *chr, json_object *opts, Error **errp)
{
    bool signal = true;

    if (!opt_get_bool(opts, "signal", &signal, errp)) {
        return false;
    }
    if (stdio_in_use) {
        error_setg(errp, "cannot use stdio by multiple character devices");
        return false;
    }
    /* signal=off: ^C on a terminal is input for the monitor, not SIGINT. */
    if (!signal && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tty) == 0) {
        struct termios raw = saved_tty;
        raw.c_lflag &= ~(tcflag_t)ISIG;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        chr->restore_tty = true;
    }
    saved_stdin_flags = fcntl(STDIN_FILENO, F_GETFL);
    fcntl(STDIN_FILENO, F_SETFL, saved_stdin_flags | O_NONBLOCK);
    stdio_in_use = true;
    chardev_session_open(chr, STDIN_FILENO, STDOUT_FILENO, false);
    return true;
}

static bool open_file(Chardev *chr, json_object *opts, Error **errp)
{
    const char *path = NULL, *in = NULL;
    bool append = false;
    int out_fd, in_fd = -1;

    if (!opt_get_str(opts, "path", &path, errp) ||
        !opt_get_str(opts, "input-path", &in, errp) ||
        !opt_get_bool(opts, "append", &append, errp)) {
        return false;
    }
    if (!path) {
        error_setg(errp, "chardev: file: no filename given");
        return false;
    }
    out_fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0666);
    if (out_fd < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", path);
        return false;
    }
    fcntl(out_fd, F_SETFL, fcntl(out_fd, F_GETFL) | O_NONBLOCK);
    if (in && (in_fd = open(in, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", in);
        close(out_fd);
        return false;
    }
    chardev_session_open(chr, in_fd, out_fd, true);
    return true;
}

static bool open_ringbuf(Chardev *chr, json_object *opts, Error **errp)
{
    int64_t size = RINGBUF_DEFAULT_SIZE;

    if (!opt_get_size(opts, "size", &size, errp)) {
        return false;
    }
    if (size <= 0 || (size & (size - 1))) {
        error_setg(errp, "size of ringbuf chardev must be power of two");
        return false;
    }
    chr->ring = calloc(1, size);
    if (!chr->ring) {
        error_setg(errp, "ringbuf chardev of %lld bytes: out of memory", (long long)size);
        return false;
    }
    chr->ring_size = size;
    chr->kind = CHR_RINGBUF;
    return true;
}

static bool open_logfile(Chardev *chr, json_object *opts, Error **errp)
{
    const char *logfile = NULL;
    bool logappend = false;

    if (!opt_get_str(opts, "logfile", &logfile, errp) ||
        !opt_get_bool(opts, "logappend", &logappend, errp)) {
        return false;
    }
    if (logfile) {
        chr->log_fd = open(logfile, O_WRONLY | O_CREAT | O_CLOEXEC |
                           (logappend ? O_APPEND : O_TRUNC), 0666);
        if (chr->log_fd < 0) {
            error_setg_errno(errp, errno, "Unable to open logfile %s", logfile);
            return false;
        }
    }
    return true;
}

static bool chardev_open(Chardev *chr, const char *backend, json_object *opts, Error **errp)
{
    if (!open_logfile(chr, opts, errp)) {
        return false;
    }
    if (strcmp(backend, "socket") == 0) {
        chr->kind = CHR_SOCKET;
        return chardev_socket_open(chr, opts, errp);
    } else if (strcmp(backend, "stdio") == 0) {
        chr->kind = CHR_STDIO;
        return open_stdio(chr, opts, errp);
    } else if (strcmp(backend, "null") == 0) {
        chr->kind = CHR_NULL;
        return true;
    } else if (strcmp(backend, "file") == 0) {
        chr->kind = CHR_FILE;
        return open_file(chr, opts, errp);
    } else if (strcmp(backend, "ringbuf") == 0 || strcmp(backend, "memory") == 0) {
        return open_ringbuf(chr, opts, errp);
    }
    for (int i = 0; unsupported_backends[i]; i++) {
        if (strcmp(backend, unsupported_backends[i]) == 0) {
            error_setg(errp, "chardev backend '%s' is not supported by blockd", backend);
            return false;
        }
    }
    error_setg(errp, "'%s' is not a valid char driver name", backend);
    return false;
}

static Chardev *chardev_create(const char *id, const char *backend, json_object *opts,
                               Error **errp)
{
    Chardev *chr;

    GLOBAL_STATE_CODE();
    if (chardev_find(id)) {
        error_setg(errp, "Chardev with id '%s' already exists", id);
        return NULL;
    }
    chr = calloc(1, sizeof(*chr));
    if (!chr) {
        abort();
    }
    chr->id = strdup(id);
    chr->in_fd = chr->out_fd = chr->listen_fd = chr->log_fd = -1;
    for (int i = 0; chardev_backend_names[i]; i++) {
        if (strcmp(backend, chardev_backend_names[i]) == 0) {
            chr->backend = chardev_backend_names[i];
        }
    }
    if (!chardev_open(chr, backend, opts, errp)) {
        if (chr->log_fd >= 0) {
            close(chr->log_fd);
        }
        free(chr->id);
        free(chr);
        return NULL;
    }
    list_add_tail(&chardevs, &chr->node);
    return chr;
}

Chardev *chardev_new_flat(json_object *options, Error **errp)
{
    const char *id = NULL, *backend = NULL;

    if (!opt_get_str(options, "id", &id, errp) ||
        !opt_get_str(options, "backend", &backend, errp)) {
        return NULL;
    }
    return chardev_create(id, backend, options, errp);
}

/* QMP's SocketAddressLegacy into the flat keys: path, host+port, fd. */
static void flatten_addr(json_object *addr, json_object *flat)
{
    json_object *type, *data;

    json_object_object_get_ex(addr, "type", &type);
    json_object_object_get_ex(addr, "data", &data);
    if (strcmp(json_object_get_string(type), "fd") == 0) {
        json_object_object_add(flat, "fd", json_object_get(json_object_object_get(data, "str")));
        return;
    }
    json_object_object_foreach(data, key, val) {
        json_object_object_add(flat, key, json_object_get(val));
    }
}

Chardev *chardev_new_qmp(const char *id, json_object *backend, Error **errp)
{
    json_object *type, *data = NULL, *flat = json_object_new_object();
    const char *t;
    Chardev *chr;

    json_object_object_get_ex(backend, "type", &type);
    json_object_object_get_ex(backend, "data", &data);
    t = json_object_get_string(type);
    if (strcmp(t, "socket") == 0) {
        /* QMP's ChardevSocket defaults, unlike the command line's. */
        json_object_object_add(flat, "server", json_object_new_boolean(true));
        json_object_object_add(flat, "wait", json_object_new_boolean(false));
    }
    json_object_object_foreach(data, key, val) {
        if (strcmp(key, "addr") == 0) {
            flatten_addr(val, flat);
        } else if (strcmp(key, "out") == 0) {
            json_object_object_add(flat, "path", json_object_get(val));
        } else if (strcmp(key, "in") == 0) {
            json_object_object_add(flat, "input-path", json_object_get(val));
        } else {
            json_object_object_add(flat, key, json_object_get(val));
        }
    }
    if (strcmp(t, "socket") == 0 &&
        json_object_get_boolean(json_object_object_get(flat, "server")) &&
        json_object_get_boolean(json_object_object_get(flat, "wait"))) {
        /* Waiting for a client here would stop every other monitor. */
        json_object_put(flat);
        error_setg(errp, "Failed to add chardev '%s': 'wait' is only possible at startup", id);
        return NULL;
    }
    chr = chardev_create(id, t, flat, errp);
    json_object_put(flat);
    if (!chr) {
        error_prepend(errp, "Failed to add chardev '%s': ", id);
    }
    return chr;
}

void chardev_free(Chardev *chr)
{
    GLOBAL_STATE_CODE();
    chr->h = NULL;              /* no closed() to a frontend that is gone */
    chardev_session_close(chr);
    if (chr->kind == CHR_SOCKET) {
        chardev_socket_free(chr);
    }
    if (chr->kind == CHR_STDIO) {
        if (chr->restore_tty) {
            tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
        }
        fcntl(STDIN_FILENO, F_SETFL, saved_stdin_flags);
        stdio_in_use = false;
    }
    if (chr->input_bh) {
        bh_delete(chr->input_bh);
    }
    if (chr->log_fd >= 0) {
        close(chr->log_fd);
    }
    list_del(&chr->node);
    free(chr->ring);
    free(chr->id);
    free(chr);
}

void chardev_free_all(void)
{
    while (!list_empty(&chardevs)) {
        chardev_free(list_entry(chardevs.next, Chardev, node));
    }
}
