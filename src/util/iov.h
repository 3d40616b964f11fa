/*
 * Scatter/gather vectors for the request path.
 *
 * An IOVector owns its iovec array (not the buffers it points to).  Requests
 * pass IOVector * down the graph; drivers slice them with iov_vec_concat.
 */
#ifndef BJ_UTIL_IOV_H
#define BJ_UTIL_IOV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct IOVector {
    struct iovec *iov;
    int niov;
    int nalloc;
    size_t size;      /* sum of iov_len */
    /* Storage for iov_vec_init_buf's single element (iov points here), so
     * such a vector must not be copied by value. */
    struct iovec local;
} IOVector;

void iov_vec_init(IOVector *v, int alloc_hint);
/* Points v at a single buffer, with no allocation (nalloc = -1). */
void iov_vec_init_buf(IOVector *v, void *buf, size_t len);
void iov_vec_add(IOVector *v, void *base, size_t len);
/* Appends bytes [offset, offset+len) of src to dst. */
void iov_vec_concat(IOVector *dst, const IOVector *src, size_t offset,
                    size_t len);
void iov_vec_reset(IOVector *v);
void iov_vec_destroy(IOVector *v);

/* Copy between an iovec array and a flat buffer; returns bytes copied. */
size_t iov_to_buf(const struct iovec *iov, int niov, size_t offset,
                  void *buf, size_t bytes);
size_t iov_from_buf(const struct iovec *iov, int niov, size_t offset,
                    const void *buf, size_t bytes);
size_t iov_memset(const struct iovec *iov, int niov, size_t offset,
                  int c, size_t bytes);
/* True if bytes [offset, offset+bytes) are all zero. */
int iov_is_zero(const struct iovec *iov, int niov, size_t offset,
                size_t bytes);

static inline size_t iov_vec_to_buf(const IOVector *v, size_t off, void *buf,
                                    size_t n)
{
    return iov_to_buf(v->iov, v->niov, off, buf, n);
}

static inline size_t iov_vec_from_buf(const IOVector *v, size_t off,
                                      const void *buf, size_t n)
{
    return iov_from_buf(v->iov, v->niov, off, buf, n);
}

static inline size_t iov_vec_memset(const IOVector *v, size_t off, int c,
                                    size_t n)
{
    return iov_memset(v->iov, v->niov, off, c, n);
}

/* Aligned allocation for O_DIRECT bounce buffers; aborts on ENOMEM. */
void *blk_aligned_alloc(size_t align, size_t size);

#endif
