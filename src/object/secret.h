/*
 * The secret object: --object secret,id=ID,data=STRING|file=PATH
 * [,format=raw|base64][,keyid=SECRET,iv=BASE64].  The bytes are decoded
 * (and with keyid decrypted: AES-256-CBC under the 32-byte secret keyid,
 * as libvirt passes secrets) once at creation; users (Ceph and LUKS keys,
 * a TLS key password) look them up by id.
 */
#ifndef BJ_OBJECT_SECRET_H
#define BJ_OBJECT_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* The secret's bytes (owned by the object: valid until object-del; take
 * object_use on it to keep it) and their length; NULL and *errp when id is
 * missing or not a secret ("No secret with id 'X'"). */
const uint8_t *secret_lookup(const char *id, size_t *len, Error **errp);

#endif
