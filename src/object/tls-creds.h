/*
 * TLS credentials: tls-creds-x509 and tls-creds-psk objects, in qemu's
 * directory layout, so one directory serves blockjobd and qemu alike:
 *
 *   x509: ca-cert.pem, [ca-crl.pem], server-cert.pem + server-key.pem
 *         (endpoint=server), [client-cert.pem + client-key.pem]
 *         (endpoint=client), [dh-params.pem]; verify-peer (default on);
 *         passwordid names a secret that decrypts an encrypted key
 *   psk:  keys.psk, lines "username:hexkey"; a client uses `username`
 *         (default "qemu")
 *
 * The files are read and checked when the object is created.  The server
 * side of NBD takes the GnuTLS credentials from here; a client (libnbd)
 * takes the directory, verify-peer and username and loads them itself.
 */
#ifndef BJ_OBJECT_TLS_CREDS_H
#define BJ_OBJECT_TLS_CREDS_H

#include <stdbool.h>

#include "util/error.h"

typedef enum TlsEndpoint {
    TLS_ENDPOINT_CLIENT,
    TLS_ENDPOINT_SERVER,
} TlsEndpoint;

typedef enum TlsCredsKind {
    TLS_CREDS_X509,
    TLS_CREDS_PSK,
} TlsCredsKind;

typedef struct TlsCreds TlsCreds;

/*
 * The credentials called id for an endpoint of kind want, with qsd's words
 * when there are none: "No TLS credentials with id 'X'", "Object with id
 * 'X' is not TLS credentials", "Expected TLS credentials for a server
 * endpoint" (or client).  Main loop.  The result is borrowed: a user that
 * keeps it calls tls_creds_ref (object-del is refused until the matching
 * tls_creds_unref).
 */
TlsCreds *tls_creds_lookup(const char *id, TlsEndpoint want, Error **errp);
void tls_creds_ref(TlsCreds *tc);
void tls_creds_unref(TlsCreds *tc);

const char *tls_creds_id(const TlsCreds *tc);
TlsCredsKind tls_creds_kind(const TlsCreds *tc);
TlsEndpoint tls_creds_endpoint(const TlsCreds *tc);
const char *tls_creds_dir(const TlsCreds *tc);
/* x509: the peer's certificate is required and checked against the CA. */
bool tls_creds_verify_peer(const TlsCreds *tc);
/* psk client: the username; NULL otherwise. */
const char *tls_creds_username(const TlsCreds *tc);
/* The GnuTLS priority string, or NULL for the default. */
const char *tls_creds_priority(const TlsCreds *tc);

/*
 * For GnuTLS users (nbd/tls.c): sets the credentials on a session of this
 * endpoint (gnutls_session_t passed as void * so this header needs no
 * GnuTLS headers).  Returns a GnuTLS error code (0 on success).
 */
int tls_creds_apply(const TlsCreds *tc, void *gnutls_session);
/*
 * After a server's handshake: checks the client's certificate when
 * verify-peer asks for it, and returns the peer's identity in *identity
 * (x509: the certificate's distinguished name; psk: the username; NULL if
 * none), for authz.  False and *errp when the peer is not trusted.
 */
bool tls_creds_check_peer(const TlsCreds *tc, void *gnutls_session,
                          char **identity, Error **errp);

#endif
