/*
 * Shared by the qcow2 fuzz targets: the input becomes an image file (a
 * memfd, so nothing touches the disk) opened through the real block layer
 * (bdrv_open_blockdev: qcow2 over file), with a root child to send requests
 * through, as the unit tests and an NBD export do.
 */
#ifndef BJ_TESTS_FUZZ_QCOW2_IMG_H
#define BJ_TESTS_FUZZ_QCOW2_IMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/block.h"

typedef struct FuzzImg {
    int fd;                /* the memfd holding the image */
    BlockNode *bs;         /* the qcow2 node, NULL when not open */
    BlockChild *root;
    int64_t size;          /* virtual size once open */
} FuzzImg;

/* Puts data in a new memfd (img->fd); aborts on failure. */
void fuzz_img_create(FuzzImg *img, const uint8_t *data, size_t size);
/* Opens the memfd as qcow2 (backing: null, so no other file is ever
 * opened); extra_json, if set, adds members ("\"lazy-refcounts\": true").
 * False if the driver refuses the image (with a message, checked). */
bool fuzz_img_open(FuzzImg *img, bool read_only, const char *extra_json);
/* Flushes and closes the node; the memfd stays for a reopen. */
void fuzz_img_close(FuzzImg *img);
/* Closes the node if open, then the memfd. */
void fuzz_img_destroy(FuzzImg *img);

/* Requests on the root child; return 0 or -errno. */
int fuzz_img_read(FuzzImg *img, int64_t offset, int64_t bytes);
int fuzz_img_write(FuzzImg *img, int64_t offset, int64_t bytes, uint8_t fill);
int fuzz_img_zeroes(FuzzImg *img, int64_t offset, int64_t bytes, bool unmap);
int fuzz_img_discard(FuzzImg *img, int64_t offset, int64_t bytes);
/* Walks block status over the whole image, at most max_steps extents. */
void fuzz_img_map(FuzzImg *img, int max_steps);

#endif
