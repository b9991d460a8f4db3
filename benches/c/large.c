/* large: large-block churn, after mimalloc-bench's "malloc-large". A few
 * slots hold blocks of 1 to 32 MiB (random sizes); each step frees the block
 * in a random slot and allocates a new one, touching one word in every 4 KiB
 * page of it, so the program pays for whatever page faults and system calls
 * the allocator makes it take. The pattern in every page is checked before
 * the block is freed.
 *
 * checksum: over the tags of every block freed. */
#include "common.h"

#define MIB (1024 * 1024)

static long LIVE = 4, STEPS = 400, MINMB = 1, MAXMB = 32, SEED = 42;

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'l', "live blocks (slots)", &LIVE}, {'n', "steps (blocks allocated)", &STEPS},
      {'m', "minimum size in MiB", &MINMB}, {'M', "maximum size in MiB", &MAXMB},
      {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "large: churn of 1-32 MiB blocks", opts, sizeof opts / sizeof *opts);
  if (LIVE < 1 || STEPS < 0 || MINMB < 1 || MAXMB < MINMB) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  rng_t r;
  rng_seed(&r, (uint64_t)SEED);
  void **slot = calloc((size_t)LIVE, sizeof(void *));
  size_t *size = calloc((size_t)LIVE, sizeof(size_t));
  uint64_t *tag = calloc((size_t)LIVE, sizeof(uint64_t));
  uint64_t sum = 0;
  double bytes = 0;
  double t0 = now_sec();
  for (long s = 0; s < STEPS + LIVE; s++) {
    long i = s < LIVE ? s : (long)rng_below(&r, (uint64_t)LIVE);
    if (slot[i]) {
      check_block_is(slot[i], size[i], tag[i], 4096);
      free(slot[i]);
      sum += mix64(tag[i]);
      slot[i] = NULL;
    }
    if (s >= STEPS) continue; /* the last LIVE steps only free */
    /* any byte count in range, not only whole MiB */
    size[i] = (size_t)rng_range(&r, (uint64_t)MINMB * MIB, (uint64_t)MAXMB * MIB);
    tag[i] = rng_next(&r);
    slot[i] = xmalloc(size[i]);
    fill_block(slot[i], size[i], tag[i], 4096);
    bytes += (double)size[i];
  }
  for (long i = 0; i < LIVE; i++) { /* the ones the last steps did not pick */
    if (!slot[i]) continue;
    check_block_is(slot[i], size[i], tag[i], 4096);
    free(slot[i]);
    sum += mix64(tag[i]);
  }
  double el = now_sec() - t0;
  printf("large: %ld blocks of %ld-%ld MiB, %ld live: %.3f s, %.1f GiB allocated\n", STEPS, MINMB,
         MAXMB, LIVE, el, bytes / (1024.0 * MIB));
  print_checksum(sum);
  free(tag);
  free(size);
  free(slot);
  return 0;
}
