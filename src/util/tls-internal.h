/*
 * tls-internal.h - the credentials object shared by tls-creds.c (the
 * objects) and tls-session.c (sessions over them).  Not for other files.
 */
#ifndef BLOCKD_TLS_INTERNAL_H
#define BLOCKD_TLS_INTERNAL_H

#include <gnutls/gnutls.h>

#include "blockd/tls.h"
#include "blockd/user-object.h"

enum { TLS_X509, TLS_PSK, TLS_ANON };

struct TlsCreds {
    UserObject obj;
    int kind;                   /* TLS_X509 ... */
    bool server;                /* endpoint=server */
    bool verify_peer;
    bool sanity_check;
    char *dir, *priority, *username, *password_id;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_anon_server_credentials_t anon_server;
    gnutls_anon_client_credentials_t anon_client;
};

/* Free what the object holds (also after a failed init). */
void tls_creds_release(TlsCreds *c);

#endif /* BLOCKD_TLS_INTERNAL_H */
