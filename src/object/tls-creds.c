/*
 * tls-creds-x509 and tls-creds-psk objects (see tls-creds.h).  The GnuTLS
 * credentials are built at creation from the directory, so a missing or
 * unreadable file fails object-add / --object, as in qemu.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "object/object-int.h"
#include "object/secret.h"
#include "object/tls-creds.h"
#include "util/alloc.h"

struct TlsCreds {
    Object base;
    TlsCredsKind kind;
    TlsEndpoint endpoint;
    char *dir;
    bool verify_peer;
    bool sanity_check;         /* x509; as given, for qom-get */
    char *username;            /* psk client */
    char *priority;            /* NULL: default */
    char *passwordid;          /* x509: secret decrypting the key */
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_dh_params_t dh;
};

static const char *const endpoints[] = { "client", "server", NULL };

static const ArgSpec x509_props[] = {
    { .name = "dir", .type = ARG_STR, .optional = true },
    { .name = "endpoint", .type = ARG_ENUM, .optional = true,
      .enum_values = endpoints },
    { .name = "verify-peer", .type = ARG_BOOL, .optional = true },
    { .name = "priority", .type = ARG_STR, .optional = true },
    { .name = "sanity-check", .type = ARG_BOOL, .optional = true },
    { .name = "passwordid", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

static const ArgSpec psk_props[] = {
    { .name = "dir", .type = ARG_STR, .optional = true },
    { .name = "endpoint", .type = ARG_ENUM, .optional = true,
      .enum_values = endpoints },
    { .name = "verify-peer", .type = ARG_BOOL, .optional = true },
    { .name = "username", .type = ARG_STR, .optional = true },
    { .name = "priority", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

/* dir/name; NULL for an optional file that is not there, NULL and *errp
 * for a required one (or one we may not read). */
static char *cred_path(const TlsCreds *tc, const char *name, bool required,
                       Error **errp)
{
    char *path = bj_asprintf("%s/%s", tc->dir, name);

    if (access(path, R_OK) == 0) {
        return path;
    }
    if (!required && errno == ENOENT) {
        free(path);
        return NULL;
    }
    error_setg(errp, "Unable to access credentials %s: %s", path,
               strerror(errno));
    free(path);
    return NULL;
}

static TlsCreds *creds_new(json_t *props, TlsCredsKind kind, Error **errp)
{
    TlsCreds *tc;

    if (!json_object_get(props, "dir")) {
        error_setg(errp, "Missing 'dir' property value");
        return NULL;
    }
    tc = bj_calloc(1, sizeof(*tc));
    tc->kind = kind;
    tc->dir = bj_strdup(arg_str(props, "dir", ""));
    tc->endpoint = arg_enum(props, "endpoint", endpoints,
                            TLS_ENDPOINT_CLIENT);
    tc->verify_peer = arg_bool(props, "verify-peer", true);
    tc->sanity_check = arg_bool(props, "sanity-check", true);
    if (arg_str(props, "passwordid", NULL)) {
        tc->passwordid = bj_strdup(arg_str(props, "passwordid", NULL));
    }
    if (arg_str(props, "priority", NULL)) {
        tc->priority = bj_strdup(arg_str(props, "priority", NULL));
    }
    return tc;
}

static void creds_destroy(Object *obj)
{
    TlsCreds *tc = container_of(obj, TlsCreds, base);

    if (tc->x509) {
        gnutls_certificate_free_credentials(tc->x509);
    }
    if (tc->psk_server) {
        gnutls_psk_free_server_credentials(tc->psk_server);
    }
    if (tc->psk_client) {
        gnutls_psk_free_client_credentials(tc->psk_client);
    }
    if (tc->dh) {
        gnutls_dh_params_deinit(tc->dh);
    }
    free(tc->dir);
    free(tc->username);
    free(tc->priority);
    free(tc->passwordid);
    free(tc);
}

/* dh-params.pem, when there is one. */
static bool load_dh(TlsCreds *tc, Error **errp)
{
    Error *err = NULL;
    char *path = cred_path(tc, "dh-params.pem", false, &err);
    gnutls_datum_t data = { NULL, 0 };
    int ret;

    if (!path) {
        error_propagate(errp, err);
        return !err;
    }
    ret = gnutls_load_file(path, &data);
    if (ret >= 0) {
        ret = gnutls_dh_params_init(&tc->dh);
    }
    if (ret >= 0) {
        ret = gnutls_dh_params_import_pkcs3(tc->dh, &data,
                                            GNUTLS_X509_FMT_PEM);
    }
    gnutls_free(data.data);
    if (ret < 0) {
        error_setg(errp, "Unable to load DH parameters from %s: %s", path,
                   gnutls_strerror(ret));
        free(path);
        return false;
    }
    free(path);
    return true;
}

static bool load_x509(TlsCreds *tc, Error **errp)
{
    bool server = tc->endpoint == TLS_ENDPOINT_SERVER;
    char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    Error *err = NULL;
    bool ok = false;
    int ret;

    ca = cred_path(tc, "ca-cert.pem", true, errp);
    if (!ca) {
        return false;
    }
    crl = cred_path(tc, "ca-crl.pem", false, &err);
    if (err) {
        goto out;
    }
    cert = cred_path(tc, server ? "server-cert.pem" : "client-cert.pem",
                     server, &err);
    if (err) {
        goto out;
    }
    key = cred_path(tc, server ? "server-key.pem" : "client-key.pem",
                    server, &err);
    if (err) {
        goto out;
    }
    ret = gnutls_certificate_allocate_credentials(&tc->x509);
    if (ret < 0) {
        error_setg(&err, "Cannot allocate credentials: %s",
                   gnutls_strerror(ret));
        goto out;
    }
    /* The number of certificates found: none is as bad as an error. */
    ret = gnutls_certificate_set_x509_trust_file(tc->x509, ca,
                                                 GNUTLS_X509_FMT_PEM);
    if (ret <= 0) {
        error_setg(&err, "Unable to import CA certificate list %s", ca);
        goto out;
    }
    if (crl) {
        ret = gnutls_certificate_set_x509_crl_file(tc->x509, crl,
                                                   GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            error_setg(&err, "Cannot load CRL '%s': %s", crl,
                       gnutls_strerror(ret));
            goto out;
        }
    }
    if (cert && key) {
        char *password = NULL;

        if (tc->passwordid) {
            size_t len;
            const uint8_t *pw = secret_lookup(tc->passwordid, &len, &err);
            if (!pw) {
                goto out;
            }
            password = bj_strndup((const char *)pw, len);
        }
        ret = gnutls_certificate_set_x509_key_file2(tc->x509, cert, key,
                                                    GNUTLS_X509_FMT_PEM,
                                                    password, 0);
        if (password) {
            memset(password, 0, strlen(password));
            free(password);
        }
        if (ret < 0) {
            error_setg(&err, "Cannot load certificate '%s' & key '%s': %s",
                       cert, key, gnutls_strerror(ret));
            goto out;
        }
    }
    if (server) {
        if (!load_dh(tc, &err)) {
            goto out;
        }
        if (tc->dh) {
            gnutls_certificate_set_dh_params(tc->x509, tc->dh);
        }
    }
    ok = true;
out:
    error_propagate(errp, err);
    free(ca);
    free(crl);
    free(cert);
    free(key);
    return ok;
}

static Object *x509_create(const char *id, json_t *props, Error **errp)
{
    TlsCreds *tc = creds_new(props, TLS_CREDS_X509, errp);

    if (!tc) {
        return NULL;
    }
    if (!load_x509(tc, errp)) {
        creds_destroy(&tc->base);
        return NULL;
    }
    return &tc->base;
}

/* The hex key of username in the psk file at path (a new string), or
 * NULL if the user has none. */
static char *psk_find_key(const char *path, const char *username,
                          Error **errp)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    size_t ulen = strlen(username);
    char *key = NULL;

    if (!f) {
        error_setg(errp, "Unable to access credentials %s: %s", path,
                   strerror(errno));
        return NULL;
    }
    while (!key && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, username, ulen) && line[ulen] == ':') {
            char *k = line + ulen + 1;
            k[strcspn(k, "\r\n")] = '\0';
            key = bj_strdup(k);
        }
    }
    fclose(f);
    if (!key) {
        error_setg(errp, "Username %s not found in PSK file %s", username,
                   path);
    }
    return key;
}

static Object *psk_create(const char *id, json_t *props, Error **errp)
{
    TlsCreds *tc = creds_new(props, TLS_CREDS_PSK, errp);
    char *path, *key;
    int ret;

    if (!tc) {
        return NULL;
    }
    path = cred_path(tc, "keys.psk", true, errp);
    if (!path) {
        goto fail;
    }
    if (tc->endpoint == TLS_ENDPOINT_SERVER) {
        ret = gnutls_psk_allocate_server_credentials(&tc->psk_server);
        if (ret >= 0) {
            ret = gnutls_psk_set_server_credentials_file(tc->psk_server,
                                                         path);
        }
        if (ret < 0) {
            error_setg(errp, "Cannot set PSK server credentials: %s",
                       gnutls_strerror(ret));
            free(path);
            goto fail;
        }
        if (!load_dh(tc, errp)) {
            free(path);
            goto fail;
        }
        if (tc->dh) {
            gnutls_psk_set_server_dh_params(tc->psk_server, tc->dh);
        }
    } else {
        gnutls_datum_t datum;

        tc->username = bj_strdup(arg_str(props, "username", "qemu"));
        key = psk_find_key(path, tc->username, errp);
        if (!key) {
            free(path);
            goto fail;
        }
        datum.data = (unsigned char *)key;
        datum.size = strlen(key);
        ret = gnutls_psk_allocate_client_credentials(&tc->psk_client);
        if (ret >= 0) {
            ret = gnutls_psk_set_client_credentials(
                tc->psk_client, tc->username, &datum, GNUTLS_PSK_KEY_HEX);
        }
        memset(key, 0, datum.size);
        free(key);
        if (ret < 0) {
            error_setg(errp, "Cannot set PSK client credentials: %s",
                       gnutls_strerror(ret));
            free(path);
            goto fail;
        }
    }
    free(path);
    return &tc->base;
fail:
    creds_destroy(&tc->base);
    return NULL;
}

/* qom-get: what qsd shows ("" for an unset string). */
static json_t *creds_prop_get(Object *obj, const char *name)
{
    TlsCreds *tc = container_of(obj, TlsCreds, base);
    bool x509 = obj->type == &tls_creds_x509_type;

    if (!strcmp(name, "dir")) {
        return json_string(tc->dir);
    } else if (!strcmp(name, "endpoint")) {
        return json_string(endpoints[tc->endpoint]);
    } else if (!strcmp(name, "verify-peer")) {
        return json_boolean(tc->verify_peer);
    } else if (!strcmp(name, "priority")) {
        return json_string(tc->priority ? tc->priority : "");
    } else if (!strcmp(name, "loaded")) {
        return json_true();
    } else if (x509 && !strcmp(name, "sanity-check")) {
        return json_boolean(tc->sanity_check);
    } else if (x509 && !strcmp(name, "passwordid")) {
        return json_string(tc->passwordid ? tc->passwordid : "");
    } else if (!x509 && !strcmp(name, "username")) {
        return json_string(tc->username ? tc->username : "");
    }
    return NULL;
}

static const QomProp x509_qom[] = {
    { "sanity-check", "bool" }, { "passwordid", "string" },
    { "loaded", "bool" }, { NULL, NULL },
};

static const QomProp psk_qom[] = {
    { "username", "string" }, { "loaded", "bool" }, { NULL, NULL },
};

const ObjectType tls_creds_x509_type = {
    .name = "tls-creds-x509",
    .prop_get = creds_prop_get,
    .qom_parent = "tls-creds",
    .qom_props = x509_qom,
    .props = x509_props,
    .create = x509_create,
    .destroy = creds_destroy,
};

const ObjectType tls_creds_psk_type = {
    .name = "tls-creds-psk",
    .prop_get = creds_prop_get,
    .qom_parent = "tls-creds",
    .qom_props = psk_qom,
    .props = psk_props,
    .create = psk_create,
    .destroy = creds_destroy,
};

TlsCreds *tls_creds_lookup(const char *id, TlsEndpoint want, Error **errp)
{
    Object *o = object_find(id);
    TlsCreds *tc;

    if (!o) {
        error_setg(errp, "No TLS credentials with id '%s'", id);
        return NULL;
    }
    if (o->type != &tls_creds_x509_type && o->type != &tls_creds_psk_type) {
        error_setg(errp, "Object with id '%s' is not TLS credentials", id);
        return NULL;
    }
    tc = container_of(o, TlsCreds, base);
    if (tc->endpoint != want) {
        error_setg(errp, "Expected TLS credentials for a %s endpoint",
                   want == TLS_ENDPOINT_SERVER ? "server" : "client");
        return NULL;
    }
    return tc;
}

void tls_creds_ref(TlsCreds *tc)
{
    object_use(&tc->base);
}

void tls_creds_unref(TlsCreds *tc)
{
    object_unuse(&tc->base);
}

const char *tls_creds_id(const TlsCreds *tc)
{
    return tc->base.id;
}

TlsCredsKind tls_creds_kind(const TlsCreds *tc)
{
    return tc->kind;
}

TlsEndpoint tls_creds_endpoint(const TlsCreds *tc)
{
    return tc->endpoint;
}

const char *tls_creds_dir(const TlsCreds *tc)
{
    return tc->dir;
}

bool tls_creds_verify_peer(const TlsCreds *tc)
{
    return tc->verify_peer;
}

const char *tls_creds_username(const TlsCreds *tc)
{
    return tc->username;
}

const char *tls_creds_priority(const TlsCreds *tc)
{
    return tc->priority;
}

int tls_creds_apply(const TlsCreds *tc, void *session)
{
    gnutls_session_t s = session;
    const char *base = tc->priority ? tc->priority : "NORMAL";
    int ret;

    if (tc->kind == TLS_CREDS_PSK) {
        char *prio = bj_asprintf("%s:+ECDHE-PSK:+DHE-PSK:+PSK", base);
        ret = gnutls_priority_set_direct(s, prio, NULL);
        free(prio);
        if (ret < 0) {
            return ret;
        }
        if (tc->endpoint == TLS_ENDPOINT_SERVER) {
            return gnutls_credentials_set(s, GNUTLS_CRD_PSK, tc->psk_server);
        }
        return gnutls_credentials_set(s, GNUTLS_CRD_PSK, tc->psk_client);
    }
    ret = gnutls_priority_set_direct(s, base, NULL);
    if (ret < 0) {
        return ret;
    }
    ret = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, tc->x509);
    if (ret < 0) {
        return ret;
    }
    if (tc->endpoint == TLS_ENDPOINT_SERVER && tc->verify_peer) {
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    }
    return 0;
}

/* The distinguished name of the peer's certificate (a new string), or
 * NULL when it sent none. */
static char *peer_dn(gnutls_session_t s)
{
    const gnutls_datum_t *certs;
    unsigned n = 0;
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = { NULL, 0 };
    char *res = NULL;

    certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || n == 0 || gnutls_x509_crt_init(&crt) < 0) {
        return NULL;
    }
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
        gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
        res = bj_strndup((const char *)dn.data, dn.size);
    }
    gnutls_free(dn.data);
    gnutls_x509_crt_deinit(crt);
    return res;
}

bool tls_creds_check_peer(const TlsCreds *tc, void *session,
                          char **identity, Error **errp)
{
    gnutls_session_t s = session;

    *identity = NULL;
    if (tc->kind == TLS_CREDS_PSK) {
        const char *u = gnutls_psk_server_get_username(s);
        *identity = u ? bj_strdup(u) : NULL;
        return true;
    }
    if (tc->verify_peer) {
        unsigned status = 0;
        int ret = gnutls_certificate_verify_peers2(s, &status);

        if (ret < 0) {
            error_setg(errp, "Verify failed: %s", gnutls_strerror(ret));
            return false;
        }
        if (status) {
            error_setg(errp, "The peer's certificate is not trusted "
                       "(status 0x%x)", status);
            return false;
        }
    }
    *identity = peer_dn(s);
    if (tc->verify_peer && !*identity) {
        error_setg(errp, "No certificate was found");
        return false;
    }
    return true;
}
