/*
 * tls.h - TLS credentials (the tls-creds-x509, tls-creds-psk and
 * tls-creds-anon objects) and TLS sessions over a non-blocking socket,
 * on GnuTLS.  docs/tls.md describes the files each credential type reads.
 *
 * Half: credentials are global state (objects, main thread).  A session
 * is used by one thread at a time, the one serving its connection; it
 * never blocks: a call that would returns TLS_WANT_READ or
 * TLS_WANT_WRITE, and the caller waits for the socket and calls again
 * with the same arguments.
 */
#ifndef BLOCKD_TLS_H
#define BLOCKD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "blockd/error.h"

typedef struct TlsCreds TlsCreds;
typedef struct TlsSession TlsSession;

#define TLS_WANT_READ  (-1000)
#define TLS_WANT_WRITE (-1001)

/* Register the object types (once, at start). */
void tls_creds_init(void);
/* The credentials object @id for a @server (or client) endpoint, with a
 * reference the caller drops with tls_creds_unref(); QEMU's messages for a
 * missing object or the wrong endpoint.  Global state. */
TlsCreds *tls_creds_lookup(const char *id, bool server, Error **errp);
void tls_creds_unref(TlsCreds *creds);
/* Does the server require a certificate from its clients?  (x509 with
 * verify-peer: the identity an authorization list checks.) */
bool tls_creds_verify_peer(TlsCreds *creds);

/* Another reference to @creds.  Global state. */
void tls_creds_ref(TlsCreds *creds);

/* A session on @fd with @creds, which the caller keeps a reference to for
 * as long as the session lives (sessions are made in any thread); a
 * client checks the server's certificate against @hostname if not NULL. */
TlsSession *tls_session_new(TlsCreds *creds, bool server, const char *hostname, int fd,
                            Error **errp);
void tls_session_free(TlsSession *s);
/* One step of the handshake: 0 when done, TLS_WANT_*, or -1 with @errp
 * set (a failed handshake or peer verification). */
int tls_session_handshake(TlsSession *s, Error **errp);
/* Decrypted bytes (> 0), 0 at the peer's end, TLS_WANT_*, or -1. */
ssize_t tls_session_read(TlsSession *s, void *buf, size_t len);
/* Bytes taken (> 0, maybe fewer than @len), TLS_WANT_*, or -1.  After a
 * TLS_WANT_*, call again with the same data. */
ssize_t tls_session_write(TlsSession *s, const void *buf, size_t len);
/* The peer's identity once the handshake is done: its certificate's
 * distinguished name, or the PSK username; NULL if it has none.  Valid
 * until the session is freed. */
const char *tls_session_peer_name(TlsSession *s);

/* ---- Authorization (authz-simple, authz-list, authz-listfile) ---- */

/* Register the authz object types (once, at start). */
void authz_init(void);
/* Is @identity (NULL: none) allowed by authz object @id?  An unknown id
 * is an error: "No authorization object with id '%s'". */
bool authz_is_allowed(const char *id, const char *identity, Error **errp);
/* Does object @id exist and is it an authorization object? */
bool authz_exists(const char *id, Error **errp);

#endif /* BLOCKD_TLS_H */
