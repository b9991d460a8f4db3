/* Helpers shared by the C benchmark programs: a seeded random generator,
 * a content pattern written into blocks and checked before they are freed,
 * a wall clock, and option parsing.
 *
 * Block pattern (fill_block/check_block): a block of n >= 16 bytes holds
 *   word 0: the block's tag (a 64-bit value chosen by the program),
 *   word 1: n mixed with the tag,
 *   one 64-bit word every `stride` bytes after that, and the last 8 bytes,
 * each derived from the tag and its offset. So every cache line (stride 64) or
 * every page (stride 4096) of the block is written and read back, a block
 * handed to the wrong owner or overlapping another one is caught, and a
 * block's size and tag can be read back from the block alone (blocks that
 * travel between threads carry their own description). A mismatch prints
 * what was found and exits with status 3. */
#ifndef CBENCH_COMMON_H
#define CBENCH_COMMON_H

#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define K_MIX 0x9E3779B97F4A7C15ull

static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

/* splitmix64: tiny, good enough, and deterministic across platforms. */
typedef struct { uint64_t s; } rng_t;
static inline void rng_seed(rng_t *r, uint64_t seed) { r->s = mix64(seed + K_MIX); }
static inline uint64_t rng_next(rng_t *r) {
  r->s += K_MIX;
  return mix64(r->s);
}
/* Uniform in [0, n), n > 0 (multiply-shift; the bias is irrelevant here). */
static inline uint64_t rng_below(rng_t *r, uint64_t n) {
  return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}
static inline uint64_t rng_range(rng_t *r, uint64_t lo, uint64_t hi) { /* [lo, hi] */
  return lo + rng_below(r, hi - lo + 1);
}

static inline double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline uint64_t pat_word(uint64_t tag, size_t off) { return tag ^ ((uint64_t)off * K_MIX); }

static inline void put64(void *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint64_t get64(const void *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static void fail_block(const void *p, size_t n, size_t off, uint64_t want, uint64_t got,
                       const char *what) {
  fprintf(stderr, "CONTENT MISMATCH (%s): block %p size %zu offset %zu: want %016" PRIx64
                  " got %016" PRIx64 "\n", what, p, n, off, want, got);
  fflush(stderr);
  _exit(3);
}

/* Writes the pattern described above. n >= 16. */
static inline void fill_block(void *p, size_t n, uint64_t tag, size_t stride) {
  char *b = (char *)p;
  put64(b, tag);
  put64(b + 8, (uint64_t)n ^ mix64(tag));
  for (size_t off = stride; off + 16 <= n; off += stride) put64(b + off, pat_word(tag, off));
  if (n >= 24) put64(b + n - 8, pat_word(tag, n - 8));
}

/* Checks a block written by fill_block and returns its tag; its size is
 * stored in *size_out if not NULL. max_n bounds a believable size. */
static inline uint64_t check_block(const void *p, size_t max_n, size_t stride, size_t *size_out) {
  const char *b = (const char *)p;
  uint64_t tag = get64(b);
  size_t n = (size_t)(get64(b + 8) ^ mix64(tag));
  if (n < 16 || n > max_n) fail_block(p, n, 8, 0, get64(b + 8), "size word");
  for (size_t off = stride; off + 16 <= n; off += stride) {
    uint64_t w = get64(b + off);
    if (w != pat_word(tag, off)) fail_block(p, n, off, pat_word(tag, off), w, "body");
  }
  if (n >= 24) {
    uint64_t w = get64(b + n - 8);
    if (w != pat_word(tag, n - 8)) fail_block(p, n, n - 8, pat_word(tag, n - 8), w, "tail");
  }
  if (size_out) *size_out = n;
  return tag;
}

/* As check_block, and also checks the size and tag the caller expected. */
static inline void check_block_is(const void *p, size_t n, uint64_t tag, size_t stride) {
  size_t got_n;
  uint64_t got = check_block(p, n, stride, &got_n);
  if (got != tag) fail_block(p, n, 0, tag, got, "tag");
  if (got_n != n) fail_block(p, n, 8, n, got_n, "size");
}

static inline void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    fprintf(stderr, "malloc(%zu) returned NULL\n", n);
    _exit(4);
  }
  return p;
}

/* Option parsing: every program takes "-x VALUE" integer options and -h. */
typedef struct {
  char flag;
  const char *help;
  long *value;
} opt_t;

static void parse_opts(int argc, char **argv, const char *what, opt_t *opts, int nopts) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int found = 0;
    if (a[0] == '-' && a[1] && !a[2]) {
      for (int k = 0; k < nopts; k++) {
        if (opts[k].flag == a[1] && i + 1 < argc) {
          char *end;
          *opts[k].value = strtol(argv[++i], &end, 0);
          if (*end) goto usage;
          found = 1;
          break;
        }
      }
    }
    if (!found) goto usage;
  }
  return;
usage:
  fprintf(stderr, "%s\nusage: %s [options]\n", what, argv[0]);
  for (int k = 0; k < nopts; k++)
    fprintf(stderr, "  -%c N   %s (default %ld)\n", opts[k].flag, opts[k].help, *opts[k].value);
  exit(2);
}

/* The line the runner compares between allocators. */
static inline void print_checksum(uint64_t c) { printf("checksum: %016" PRIx64 "\n", c); }

#endif
