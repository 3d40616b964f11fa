/*
 * Fuzz target for the qcow2 persistent bitmaps: the bitmaps extension, the
 * bitmap directory and the bitmap tables of a fuzzed image (the input).
 * Opened read-only, the driver loads every bitmap (directory entries,
 * names, granularities, tables and their data clusters); the harness walks
 * each bitmap's dirty bits.  Opened read-write, it also marks the bitmaps
 * in use and rewrites them for the crash-consistent mode; a write then
 * marks bits before it lands, and closing stores the bitmaps back.  The
 * stored image is loaded once more.
 *
 * Properties checked: no crash, leak, over-read or hang; a refused image
 * says why; a loaded bitmap's dirty bits lie inside the disk.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "block/dirty-bitmap.h"
#include "fuzz-qcow2-img.h"
#include "fuzz.h"

static void walk_bitmaps(FuzzImg *img)
{
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(img->bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(img->bs, bm)) {
        uint64_t count = bdrv_get_dirty_count(bm);
        if (count > (uint64_t)img->size) {
            fprintf(stderr, "bitmap %s: %llu dirty bytes on a %lld disk\n",
                    bdrv_dirty_bitmap_name(bm), (unsigned long long)count,
                    (long long)img->size);
            abort();
        }
        int64_t off = 0;
        for (int i = 0; i < 64 && off < img->size; i++) {
            off = bdrv_dirty_bitmap_next_dirty(bm, off, img->size - off);
            if (off < 0) {
                break;
            }
            off += bdrv_dirty_bitmap_granularity(bm);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzImg img;

    fuzz_img_create(&img, data, size);
    if (fuzz_img_open(&img, true, NULL)) {
        walk_bitmaps(&img);
        fuzz_img_close(&img);
        if (fuzz_img_open(&img, false, NULL)) {
            walk_bitmaps(&img);
            fuzz_img_write(&img, 0, 512, 0x5a);
            fuzz_img_write(&img, img.size / 2, 4096, 0x5b);
            fuzz_img_close(&img);
            if (fuzz_img_open(&img, true, NULL)) {
                walk_bitmaps(&img);
            }
        }
    }
    fuzz_img_destroy(&img);
    return 0;
}
