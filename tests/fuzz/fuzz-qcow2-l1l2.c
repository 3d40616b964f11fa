/*
 * Fuzz target for the qcow2 driver's mapping through L1 and L2 tables:
 * the input is a whole image file, opened read-write through the real
 * driver (fuzz-qcow2-img.c), then mapped (block status over the whole
 * disk), read at eight places, and written to: a cluster-sized write at
 * the start, an unaligned one-byte write (read-modify-write of a cluster,
 * possibly compressed), write-zeroes with and without unmap, a discard;
 * then flushed (L2 tables and L1 written back) and mapped again.
 *
 * Properties checked: no crash, leak, over-read or hang; a refused image
 * says why; block status always makes progress inside the disk.
 */
#include <stdint.h>

#include "fuzz-qcow2-img.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzImg img;

    fuzz_img_create(&img, data, size);
    if (fuzz_img_open(&img, false, NULL)) {
        int64_t len = img.size;

        fuzz_img_map(&img, 64);
        for (int k = 0; k < 8; k++) {
            fuzz_img_read(&img, len / 8 * k, 4096);
        }
        fuzz_img_write(&img, 0, 65536, 0xa1);
        fuzz_img_write(&img, len / 2 + 1, 1, 0xa2);
        fuzz_img_zeroes(&img, len / 4, 4096, false);
        fuzz_img_zeroes(&img, len / 8 * 5, 65536, true);
        fuzz_img_discard(&img, len / 8 * 3, 65536);
        fuzz_img_read(&img, len / 2, 4096);
        bdrv_flush(img.bs);
        fuzz_img_map(&img, 64);
    }
    fuzz_img_destroy(&img);
    return 0;
}
