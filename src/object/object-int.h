/* Inside src/object/: the type tables each file provides. */
#ifndef BJ_OBJECT_OBJECT_INT_H
#define BJ_OBJECT_OBJECT_INT_H

#include "object/object.h"

extern const ObjectType secret_type;
extern const ObjectType authz_simple_type;
extern const ObjectType tls_creds_x509_type;
extern const ObjectType tls_creds_psk_type;
extern const ObjectType iothread_object_type;
extern const ObjectType throttle_group_type;

/* The object called id if it is of type t, else NULL. */
Object *object_find_type(const char *id, const ObjectType *t);

#endif
