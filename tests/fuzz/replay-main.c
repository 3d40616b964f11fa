/*
 * main() for a fuzz target built without libFuzzer (the gcc and ASan
 * builds): replays every file of the corpus directories (or single files)
 * named on the command line through LLVMFuzzerTestOneInput, then the
 * target's own generated corpus if it has one.  This is what `meson test`
 * runs, so every input the fuzzer ever kept, crashes included, is checked
 * on every build.
 *
 * A directory that is missing or holds no file is an error: a test that
 * replays nothing would pass while checking nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Weak: only the targets that generate their own mutated corpus (the
 * three older ones) define it; for the others it stays NULL. */
int fuzz_generated_replay(void) __attribute__((weak));

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        fclose(f);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    /* Exactly len bytes (1 for an empty file): ASan sees any over-read. */
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf || fread(buf, 1, len, f) != len) {
        fprintf(stderr, "%s: short read\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays path (a file, or every regular file of a directory, in name
 * order so a failure is reproducible).  Returns the count, or -1. */
static int replay_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        return replay_file(path) < 0 ? -1 : 1;
    }
    struct dirent **names;
    int n = scandir(path, &names, NULL, NULL);
    if (n < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    qsort(names, (size_t)n, sizeof(names[0]), compare_names);
    int count = 0;
    for (int i = 0; i < n; i++) {
        char *full = NULL;
        if (count >= 0 && names[i]->d_name[0] != '.' &&
            asprintf(&full, "%s/%s", path, names[i]->d_name) > 0) {
            struct stat fst;
            if (stat(full, &fst) == 0 && S_ISREG(fst.st_mode)) {
                count = replay_file(full) < 0 ? -1 : count + 1;
            }
            free(full);
        }
        free(names[i]);
    }
    free(names);
    if (count == 0) {
        fprintf(stderr, "%s: no input to replay\n", path);
        return -1;
    }
    return count;
}

int main(int argc, char **argv)
{
    int total = 0;

    for (int i = 1; i < argc; i++) {
        int n = replay_path(argv[i]);
        if (n < 0) {
            return 1;
        }
        printf("%s: %d inputs replayed\n", argv[i], n);
        total += n;
    }
    if (fuzz_generated_replay && fuzz_generated_replay() != 0) {
        return 1;
    }
    printf("%d corpus inputs, no crash\n", total);
    return 0;
}
