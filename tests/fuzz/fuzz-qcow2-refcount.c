/*
 * Fuzz target for the qcow2 refcounts: the reftable and refcount blocks of
 * a fuzzed image, through what reads and changes them.  The image (the
 * input) is opened read-write with lazy refcounts and the smallest caches
 * (so refcount blocks are evicted and written back all the time); an image
 * with the dirty bit set is recounted and repaired at open.  Then
 * allocation (writes to 24 clusters spread over the disk, which may need
 * new refcount blocks and a larger reftable), deallocation (discards and
 * unmapping zeroes, whose frees are deferred until the L2 tables are
 * durable) and a flush; finally the image we wrote is opened again.
 *
 * Properties checked: no crash, leak, over-read or hang; a refused image
 * says why.
 */
#include <stdint.h>

#include "fuzz-qcow2-img.h"
#include "fuzz.h"

static const char *const options =
    "\"lazy-refcounts\": true, \"l2-cache-size\": 0, "
    "\"refcount-cache-size\": 0";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzImg img;

    fuzz_img_create(&img, data, size);
    if (fuzz_img_open(&img, false, options)) {
        int64_t len = img.size;

        for (int k = 0; k < 24; k++) {
            fuzz_img_write(&img, len / 24 * k, 512, (uint8_t)k);
        }
        for (int k = 0; k < 24; k += 3) {
            fuzz_img_discard(&img, len / 24 * k, 512);
            fuzz_img_zeroes(&img, len / 24 * (k + 1), 4096, true);
        }
        bdrv_flush(img.bs);
        fuzz_img_write(&img, len / 2, 8192, 0xee);
        fuzz_img_close(&img);
        if (fuzz_img_open(&img, false, NULL)) {
            fuzz_img_write(&img, 0, 512, 0xff);
        }
    }
    fuzz_img_destroy(&img);
    return 0;
}
