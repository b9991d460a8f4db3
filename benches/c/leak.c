/* leak: a slowly leaking program, after mimalloc-bench's "mleak". In each
 * round the program allocates a batch of blocks (mostly 16-512 bytes, some up
 * to 8 KiB), frees them again in a shuffled order, but deliberately keeps
 * (leaks) about one in L of them. The leaked blocks stay scattered among
 * memory that is freed and reused, so the heap grows by the leaked amount
 * plus whatever fragmentation the allocator lets them cause; peak RSS is the
 * interesting column here. The leaked blocks are checked at the end and never
 * freed.
 *
 * checksum: over the tags of the freed blocks and of the leaked ones. */
#include "common.h"

static long ROUNDS = 4000, BATCH = 2000, LEAK = 50, SEED = 42;

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'n', "rounds", &ROUNDS}, {'b', "blocks per round", &BATCH},
      {'l', "leak one block in L", &LEAK}, {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "leak: allocate, free most, leak a fraction", opts,
             sizeof opts / sizeof *opts);
  if (ROUNDS < 0 || BATCH < 1 || LEAK < 1) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  rng_t r;
  rng_seed(&r, (uint64_t)SEED);
  void **batch = xmalloc(sizeof(void *) * (size_t)BATCH);
  size_t leak_cap = 1024, nleak = 0;
  void **leaked = xmalloc(sizeof(void *) * leak_cap);
  uint64_t sum = 0;
  double leaked_bytes = 0;
  double t0 = now_sec();
  for (long round = 0; round < ROUNDS; round++) {
    for (long i = 0; i < BATCH; i++) {
      size_t sz = rng_below(&r, 16) == 0 ? (size_t)rng_range(&r, 513, 8192)
                                         : (size_t)rng_range(&r, 16, 512);
      batch[i] = xmalloc(sz);
      fill_block(batch[i], sz, rng_next(&r), 64);
    }
    for (long i = BATCH - 1; i > 0; i--) { /* shuffle, then free in that order */
      long j = (long)rng_below(&r, (uint64_t)i + 1);
      void *t = batch[i];
      batch[i] = batch[j];
      batch[j] = t;
    }
    for (long i = 0; i < BATCH; i++) {
      if (rng_below(&r, (uint64_t)LEAK) == 0) {
        if (nleak == leak_cap) {
          leak_cap *= 2;
          leaked = realloc(leaked, sizeof(void *) * leak_cap);
          if (!leaked) return 4;
        }
        leaked[nleak++] = batch[i];
        continue;
      }
      sum += mix64(check_block(batch[i], 8192, 64, NULL));
      free(batch[i]);
    }
  }
  for (size_t i = 0; i < nleak; i++) {
    size_t sz;
    sum += mix64(check_block(leaked[i], 8192, 64, &sz));
    leaked_bytes += (double)sz;
  }
  double el = now_sec() - t0;
  printf("leak: %ld rounds of %ld blocks, %zu leaked (%.1f MiB): %.3f s\n", ROUNDS, BATCH, nleak,
         leaked_bytes / 1048576.0, el);
  print_checksum(sum);
  return 0;
}
