/*
 * tls-session.c - one TLS session over a non-blocking socket (tls.h):
 * the handshake, the peer's verification and identity, and records read
 * and written without ever blocking.
 *
 * Half: common; a session is used by one thread at a time.
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tls-internal.h"

struct TlsSession {
    gnutls_session_t g;
    TlsCreds *creds;
    bool server;
    int fd;
    char *hostname;
    char *peer;                 /* the peer's identity, once known */
};

/* GnuTLS's transport: plain send/recv, never SIGPIPE. */
static ssize_t push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
    TlsSession *s = p;
    ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);

    if (n < 0) {
        gnutls_transport_set_errno(s->g, errno);
    }
    return n;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    TlsSession *s = p;
    ssize_t n = recv(s->fd, buf, len, 0);

    if (n < 0) {
        gnutls_transport_set_errno(s->g, errno);
    }
    return n;
}

/* QEMU's priorities: "NORMAL" (or the object's), with the key exchanges
 * PSK and anonymous credentials need. */
static int set_priority(TlsSession *s, Error **errp)
{
    const char *base = s->creds->priority ? s->creds->priority : "NORMAL";
    const char *extra = s->creds->kind == TLS_PSK ? ":+ECDHE-PSK:+DHE-PSK:+PSK"
                        : s->creds->kind == TLS_ANON ? ":+ANON-ECDH:+ANON-DH" : "";
    char prio[512];
    const char *bad = NULL;
    int r;

    snprintf(prio, sizeof(prio), "%s%s", base, extra);
    r = gnutls_priority_set_direct(s->g, prio, &bad);
    if (r < 0) {
        error_setg(errp, "Unable to set TLS session priority %s: %s", prio,
                   gnutls_strerror(r));
    }
    return r;
}

static int set_credentials(TlsSession *s)
{
    TlsCreds *c = s->creds;

    switch (c->kind) {
    case TLS_X509:
        if (s->server && c->verify_peer) {
            gnutls_certificate_server_set_request(s->g, GNUTLS_CERT_REQUIRE);
        }
        return gnutls_credentials_set(s->g, GNUTLS_CRD_CERTIFICATE, c->x509);
    case TLS_PSK:
        return gnutls_credentials_set(s->g, GNUTLS_CRD_PSK,
                                      s->server ? (void *)c->psk_server : (void *)c->psk_client);
    default:
        return gnutls_credentials_set(s->g, GNUTLS_CRD_ANON,
                                      s->server ? (void *)c->anon_server
                                                : (void *)c->anon_client);
    }
}

TlsSession *tls_session_new(TlsCreds *creds, bool server, const char *hostname, int fd,
                            Error **errp)
{
    TlsSession *s = calloc(1, sizeof(*s));
    int r;

    if (!s) {
        abort();
    }
    s->creds = creds;
    s->server = server;
    s->fd = fd;
    s->hostname = hostname ? strdup(hostname) : NULL;
    r = gnutls_init(&s->g, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);
    if (r < 0) {
        error_setg(errp, "Cannot initialize TLS session: %s", gnutls_strerror(r));
        s->g = NULL;
        tls_session_free(s);
        return NULL;
    }
    if (set_priority(s, errp) < 0) {
        tls_session_free(s);
        return NULL;
    }
    r = set_credentials(s);
    if (r >= 0 && !server && hostname) {
        r = gnutls_server_name_set(s->g, GNUTLS_NAME_DNS, hostname, strlen(hostname));
    }
    if (r < 0) {
        error_setg(errp, "Cannot set TLS session credentials: %s", gnutls_strerror(r));
        tls_session_free(s);
        return NULL;
    }
    gnutls_transport_set_ptr(s->g, s);
    gnutls_transport_set_push_function(s->g, push);
    gnutls_transport_set_pull_function(s->g, pull);
    return s;
}

void tls_session_free(TlsSession *s)
{
    if (!s) {
        return;
    }
    if (s->g) {
        gnutls_deinit(s->g);
    }
    free(s->hostname);
    free(s->peer);
    free(s);
}

static int want(TlsSession *s)
{
    return gnutls_record_get_direction(s->g) ? TLS_WANT_WRITE : TLS_WANT_READ;
}

/* The peer's certificate: checked against the CA (and, by a client, the
 * host name); its distinguished name is the peer's identity. */
static int check_x509_peer(TlsSession *s, Error **errp)
{
    const gnutls_datum_t *certs;
    unsigned int status = 0, n = 0;
    gnutls_x509_crt_t crt;
    int r;

    certs = gnutls_certificate_get_peers(s->g, &n);
    if (!certs || n == 0) {
        if (s->server && !s->creds->verify_peer) {
            return 0;
        }
        error_setg(errp, "No certificate peers");
        return -1;
    }
    r = gnutls_certificate_verify_peers3(s->g, s->server ? NULL : s->hostname, &status);
    if (r < 0 || status) {
        gnutls_datum_t why = { NULL, 0 };

        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0);
        error_setg(errp, "Certificate failed verification: %s",
                   why.data ? (char *)why.data : gnutls_strerror(r));
        gnutls_free(why.data);
        return -1;
    }
    if (gnutls_x509_crt_init(&crt) < 0) {
        return -1;
    }
    /* The distinguished name as QEMU writes it ("C=GB,O=...,CN=..."), which
     * is what authorization rules written for QEMU match. */
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0) {
        size_t size = 0;

        gnutls_x509_crt_get_dn(crt, NULL, &size);
        s->peer = calloc(1, size + 1);
        if (s->peer && gnutls_x509_crt_get_dn(crt, s->peer, &size) < 0) {
            free(s->peer);
            s->peer = NULL;
        }
    }
    gnutls_x509_crt_deinit(crt);
    return 0;
}

int tls_session_handshake(TlsSession *s, Error **errp)
{
    int r = gnutls_handshake(s->g);

    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        return want(s);
    }
    if (r < 0) {
        error_setg(errp, "TLS handshake failed: %s", gnutls_strerror(r));
        return -1;
    }
    if (s->creds->kind == TLS_X509 && (!s->server || s->creds->verify_peer)) {
        return check_x509_peer(s, errp);
    }
    if (s->creds->kind == TLS_PSK && s->server) {
        const char *user = gnutls_psk_server_get_username(s->g);
        s->peer = user ? strdup(user) : NULL;
    }
    return 0;
}

ssize_t tls_session_read(TlsSession *s, void *buf, size_t len)
{
    ssize_t r = gnutls_record_recv(s->g, buf, len);

    if (r >= 0) {
        return r;
    }
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        return want(s);
    }
    /* A peer that hangs up without close_notify has simply left. */
    return r == GNUTLS_E_PREMATURE_TERMINATION ? 0 : -1;
}

ssize_t tls_session_write(TlsSession *s, const void *buf, size_t len)
{
    ssize_t r = gnutls_record_send(s->g, buf, len);

    if (r >= 0) {
        return r;
    }
    return r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED ? want(s) : -1;
}

const char *tls_session_peer_name(TlsSession *s)
{
    return s->peer;
}
