/*
 * What every fuzz target defines.  Built with libFuzzer (-DBJ_LIBFUZZER,
 * clang -fsanitize=fuzzer) LLVMFuzzerTestOneInput is the entry point; built
 * without, replay-main.c calls it on each corpus file.
 */
#ifndef BJ_TESTS_FUZZ_H
#define BJ_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Optional: a target's deterministic mutated corpus, replayed after the
 * corpus files (0 on success). */
int fuzz_generated_replay(void);

#endif
