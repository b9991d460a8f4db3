/* malloc-large-style workload, after mimalloc-bench's malloc-large: blocks of
 * random size between MIN and MAX bytes (default 1 to 32 MiB) are allocated,
 * one byte written per 4 KiB page, and freed, with up to LIVE blocks alive at
 * once (a random slot is replaced each iteration). Prints a checksum, so every
 * allocator must compute the same thing, and the wall time of the loop.
 *
 *   cc -O2 -o malloc-large scripts/malloc-large.c
 *   ./malloc-large [ITERS=5000] [LIVE=5] [MIN_MIB=1] [MAX_MIB=32]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 5000;
  int live = argc > 2 ? atoi(argv[2]) : 5;
  size_t min = (size_t)(argc > 3 ? atol(argv[3]) : 1) << 20;
  size_t max = (size_t)(argc > 4 ? atol(argv[4]) : 32) << 20;
  if (live < 1 || live > 64 || max < min) return 2;
  unsigned char *slot[64] = {0};
  size_t len[64] = {0};
  uint64_t sum = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < iters; i++) {
    int k = (int)(next() % (uint64_t)live);
    if (slot[k]) {
      /* the bytes written at allocation are still there */
      for (size_t off = 0; off < len[k]; off += 4096)
        if (slot[k][off] != (unsigned char)(off >> 12 ^ len[k])) {
          fprintf(stderr, "corrupted at %zu\n", off);
          return 1;
        }
      free(slot[k]);
    }
    size_t n = min + (size_t)(next() % (max - min + 1));
    unsigned char *p = malloc(n);
    if (!p) return 1;
    for (size_t off = 0; off < n; off += 4096) p[off] = (unsigned char)(off >> 12 ^ n);
    sum += p[(n / 2) & ~(size_t)4095] + n;
    slot[k] = p;
    len[k] = n;
  }
  for (int k = 0; k < live; k++) free(slot[k]);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("checksum %llu time %.3f\n", (unsigned long long)sum,
         (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  return 0;
}
