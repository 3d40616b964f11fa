/*
 * authz-simple: --object authz-simple,id=ID,identity=NAME.  Allows the one
 * identity (for TLS, the client certificate's distinguished name as GnuTLS
 * prints it, e.g. "CN=client,O=example").
 */
#ifndef BJ_OBJECT_AUTHZ_H
#define BJ_OBJECT_AUTHZ_H

#include <stdbool.h>

#include "util/error.h"

/* True if the authz object id allows identity; false and *errp when it
 * does not, or when id names no authorization object. */
bool authz_is_allowed(const char *id, const char *identity, Error **errp);

#endif
