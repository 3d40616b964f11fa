/*
 * Scatter/gather vectors.  An IOVector owns its iovec array only; the
 * buffers belong to whoever added them.
 */
#include "util/iov.h"
#include "util/alloc.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void iov_vec_init(IOVector *v, int alloc_hint)
{
    assert(alloc_hint >= 0);
    v->iov = alloc_hint ? bj_reallocarray(NULL, alloc_hint, sizeof(*v->iov))
                        : NULL;
    v->niov = 0;
    v->nalloc = alloc_hint;
    v->size = 0;
}

void iov_vec_init_buf(IOVector *v, void *buf, size_t len)
{
    v->local.iov_base = buf;
    v->local.iov_len = len;
    v->iov = &v->local;
    v->niov = 1;
    v->nalloc = -1;
    v->size = len;
}

void iov_vec_add(IOVector *v, void *base, size_t len)
{
    assert(v->nalloc >= 0);   /* a fixed single-buffer vector cannot grow */
    if (len == 0) {
        return;
    }
    /* Merge with the previous element when contiguous: drivers slicing a
     * request into pieces then hand fewer iovecs to the kernel. */
    if (v->niov > 0) {
        struct iovec *last = &v->iov[v->niov - 1];
        if ((char *)last->iov_base + last->iov_len == (char *)base) {
            last->iov_len += len;
            v->size += len;
            return;
        }
    }
    if (v->niov == v->nalloc) {
        int n = v->nalloc ? v->nalloc * 2 : 4;
        v->iov = bj_reallocarray(v->iov, n, sizeof(*v->iov));
        v->nalloc = n;
    }
    v->iov[v->niov].iov_base = base;
    v->iov[v->niov].iov_len = len;
    v->niov++;
    v->size += len;
}

void iov_vec_concat(IOVector *dst, const IOVector *src, size_t offset,
                    size_t len)
{
    assert(offset <= src->size && len <= src->size - offset);
    for (int i = 0; i < src->niov && len > 0; i++) {
        size_t l = src->iov[i].iov_len;
        if (offset >= l) {
            offset -= l;
            continue;
        }
        size_t n = l - offset < len ? l - offset : len;
        iov_vec_add(dst, (char *)src->iov[i].iov_base + offset, n);
        offset = 0;
        len -= n;
    }
}

void iov_vec_reset(IOVector *v)
{
    assert(v->nalloc >= 0);
    v->niov = 0;
    v->size = 0;
}

void iov_vec_destroy(IOVector *v)
{
    if (v->nalloc >= 0) {
        free(v->iov);
    }
    v->iov = NULL;
    v->niov = 0;
    v->nalloc = 0;
    v->size = 0;
}

/*
 * Calls fn on each piece of the bytes [offset, offset + bytes) of the
 * vector, in order; done is how many bytes of the range came before the
 * piece.  Stops when fn returns false.  Returns the bytes walked.
 */
typedef bool IovPieceFn(char *piece, size_t n, size_t done, void *opaque);

static size_t iov_walk(const struct iovec *iov, int niov, size_t offset,
                       size_t bytes, IovPieceFn *fn, void *opaque)
{
    size_t done = 0;
    for (int i = 0; i < niov && done < bytes; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t n = iov[i].iov_len - offset;
        if (n > bytes - done) {
            n = bytes - done;
        }
        if (!fn((char *)iov[i].iov_base + offset, n, done, opaque)) {
            break;
        }
        done += n;
        offset = 0;
    }
    return done;
}

static bool piece_to_buf(char *piece, size_t n, size_t done, void *buf)
{
    memcpy((char *)buf + done, piece, n);
    return true;
}

size_t iov_to_buf(const struct iovec *iov, int niov, size_t offset,
                  void *buf, size_t bytes)
{
    return iov_walk(iov, niov, offset, bytes, piece_to_buf, buf);
}

static bool piece_from_buf(char *piece, size_t n, size_t done, void *buf)
{
    memcpy(piece, (const char *)buf + done, n);
    return true;
}

size_t iov_from_buf(const struct iovec *iov, int niov, size_t offset,
                    const void *buf, size_t bytes)
{
    return iov_walk(iov, niov, offset, bytes, piece_from_buf, (void *)buf);
}

static bool piece_memset(char *piece, size_t n, size_t done, void *c)
{
    memset(piece, *(int *)c, n);
    return true;
}

size_t iov_memset(const struct iovec *iov, int niov, size_t offset, int c,
                  size_t bytes)
{
    return iov_walk(iov, niov, offset, bytes, piece_memset, &c);
}

static bool buf_is_zero(const unsigned char *p, size_t n)
{
    /* Check the first bytes one by one, then compare the buffer with itself
     * shifted: memcmp is vectorised, a byte loop is not. */
    size_t head = n < 16 ? n : 16;
    for (size_t i = 0; i < head; i++) {
        if (p[i]) {
            return false;
        }
    }
    return n <= 16 || memcmp(p, p + 16, n - 16) == 0;
}

static bool piece_is_zero(char *piece, size_t n, size_t done,
                          void *all_zero)
{
    if (!buf_is_zero((unsigned char *)piece, n)) {
        *(bool *)all_zero = false;
    }
    return *(bool *)all_zero;
}

int iov_is_zero(const struct iovec *iov, int niov, size_t offset,
                size_t bytes)
{
    bool all_zero = true;

    iov_walk(iov, niov, offset, bytes, piece_is_zero, &all_zero);
    return all_zero;
}

void *blk_aligned_alloc(size_t align, size_t size)
{
    void *p = NULL;
    /* posix_memalign refuses size 0 on some libcs' checkers; ask for one
     * block so callers always get a freeable, aligned pointer. */
    int ret = posix_memalign(&p, align, size ? size : align);
    if (ret != 0) {
        bj_out_of_memory(size);
    }
    return p;
}
