/*
 * chardev.h - character devices: the byte streams monitors talk over
 * (--chardev, chardev-add).
 *
 * Half: global state.  A chardev is a backend (a socket, standard
 * input/output, a file, a ring buffer, or nothing) with at most one
 * frontend (a QMP monitor) attached.  Its file descriptors are served in
 * the iohandler context, so only the outermost main loop runs them.
 *
 * The frontend sees a session: opened() when a peer is there (a client
 * connected to a server socket; at once for stdio, files and connected
 * sockets), receive() with each chunk of input, closed() when the peer
 * goes (a socket server then accepts the next client: one at a time, as
 * QEMU's socket chardev).  Output goes through chardev_write(), which
 * takes what fits without blocking; write_ready() says more may fit.
 */
#ifndef BLOCKD_CHARDEV_H
#define BLOCKD_CHARDEV_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "blockd/error.h"

typedef struct Chardev Chardev;

typedef struct ChardevHandlers {
    void (*opened)(void *opaque);
    void (*closed)(void *opaque);
    void (*receive)(void *opaque, const char *buf, size_t len);
    void (*write_ready)(void *opaque);
} ChardevHandlers;

/*
 * Create from the command line's flat options (ChardevOptions: backend,
 * id and the backend's keys, already typed by the schema).
 */
Chardev *chardev_new_flat(json_object *options, Error **errp);

/*
 * Create from QMP's ChardevBackend ({"type": ..., "data": {...}}), as
 * chardev-add.  @ret receives the command's return members (none for the
 * backends blockd has).
 */
Chardev *chardev_new_qmp(const char *id, json_object *backend, Error **errp);

Chardev *chardev_find(const char *id);
const char *chardev_id(Chardev *chr);
/* The backend's name ("socket", "stdio", ...). */
const char *chardev_backend(Chardev *chr);
/* query-chardev's "filename": "unix:/p,server=on", "disconnected:...",
 * "stdio", "file", "null", "ringbuf".  A new string. */
char *chardev_filename(Chardev *chr);
/* Is a peer connected (query-chardev's "frontend-open")? */
bool chardev_is_open(Chardev *chr);

/* Attach the frontend; one per chardev ("Chardev 'x' is busy"). */
bool chardev_attach(Chardev *chr, const ChardevHandlers *h, void *opaque, Error **errp);
bool chardev_has_frontend(Chardev *chr);

/* Write what fits now; returns the bytes taken, or -1 if the peer is
 * gone (closed() has then been called). */
ssize_t chardev_write(Chardev *chr, const char *buf, size_t len);
/* Ask for write_ready() once output can go on (false: stop asking). */
void chardev_want_write(Chardev *chr, bool on);
/* The frontend hangs up on its peer (a server socket accepts the next). */
void chardev_hangup(Chardev *chr);

/* Ring buffers (ringbuf-read, ringbuf-write): false with @errp if @chr is
 * not a ring buffer. */
bool chardev_ring_write(Chardev *chr, const char *buf, size_t len, Error **errp);
/* Up to @size bytes, oldest first; *@len set.  A new buffer. */
char *chardev_ring_read(Chardev *chr, size_t size, size_t *len, Error **errp);

/* Names of the backends blockd has (query-chardev-backends, help). */
extern const char *const chardev_backend_names[];

/* Does a stdio chardev own standard output (nothing else may print)? */
bool chardev_stdio_in_use(void);

void chardev_foreach(void (*fn)(Chardev *chr, void *opaque), void *opaque);
/* Free @chr; its frontend must be gone (chardev-remove checks). */
void chardev_free(Chardev *chr);
/* Shutdown: free every chardev (frontends first gone). */
void chardev_free_all(void);

#endif /* BLOCKD_CHARDEV_H */
