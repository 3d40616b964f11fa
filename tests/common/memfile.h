/*
 * A growable in-memory "file": the write callback that
 * qcow2_create_image() writes a new image through, shared by the qcow2
 * unit tests and the qcow2 fuzz harness.
 */
#ifndef BJ_TESTS_MEMFILE_H
#define BJ_TESTS_MEMFILE_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct MemFile {
    uint8_t *data;      /* malloc'd; the owner frees it */
    size_t len;
} MemFile;

/* Writes len bytes of buf at off into the MemFile opaque, growing it
 * (the gap reads as zeroes); returns 0. */
static inline int memfile_write(void *opaque, uint64_t off, const void *buf,
                                size_t len)
{
    MemFile *m = opaque;

    if (off + len > m->len) {
        m->data = realloc(m->data, off + len);
        assert(m->data);
        memset(m->data + m->len, 0, off + len - m->len);
        m->len = off + len;
    }
    memcpy(m->data + off, buf, len);
    return 0;
}

#endif
