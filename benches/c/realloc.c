/* realloc: vectors grown and shrunk with realloc, after mimalloc-bench's
 * "realloc-large" idea and the growth of std::vector-like buffers. B big
 * vectors grow together by doubling from 16 bytes to 8 MiB, then shrink back
 * by halving; between steps, small vectors (16 bytes to 4 KiB) grow by a few
 * bytes at a time or are cut back. Each vector holds a pattern at fixed
 * offsets (one word per 64 bytes), checked after every realloc over the part
 * that must have survived, then extended over the new part.
 *
 * checksum: over every vector's tag and length at each check. */
#include "common.h"

typedef struct {
  char *p;
  size_t n;
  uint64_t tag;
} vec_t;

static long BIG = 4, MAXLOG = 23, SMALL = 1000, SMALLOPS = 2000, CYCLES = 40, SEED = 42;

/* Pattern positions: 0 and 8 (every vector has at least 16 bytes), then
 * every multiple of 64. */
static void vec_fill(vec_t *v, size_t from) { /* positions o with o + 8 > from */
  for (size_t o = 0; o < 16; o += 8)
    if (o + 8 > from) put64(v->p + o, pat_word(v->tag, o));
  size_t start = from < 8 ? 64 : ((from - 8) / 64 + 1) * 64;
  if (start < 64) start = 64;
  for (size_t o = start; o + 8 <= v->n; o += 64) put64(v->p + o, pat_word(v->tag, o));
}

static uint64_t vec_check(const vec_t *v, size_t upto) {
  for (size_t o = 0; o < 16; o += 8)
    if (get64(v->p + o) != pat_word(v->tag, o))
      fail_block(v->p, v->n, o, pat_word(v->tag, o), get64(v->p + o), "vector head");
  for (size_t o = 64; o + 8 <= upto; o += 64)
    if (get64(v->p + o) != pat_word(v->tag, o))
      fail_block(v->p, v->n, o, pat_word(v->tag, o), get64(v->p + o), "vector body");
  return mix64(v->tag + upto);
}

/* Resizes, checks what survived, fills the new part. */
static uint64_t vec_resize(vec_t *v, size_t n) {
  char *q = realloc(v->p, n);
  if (!q) {
    fprintf(stderr, "realloc(%zu) returned NULL\n", n);
    _exit(4);
  }
  size_t keep = n < v->n ? n : v->n;
  v->p = q;
  v->n = n;
  uint64_t h = vec_check(v, keep);
  vec_fill(v, keep);
  return h;
}

static uint64_t small_ops(vec_t *s, rng_t *r) {
  uint64_t h = 0;
  for (long k = 0; k < SMALLOPS; k++) {
    vec_t *v = &s[rng_below(r, (uint64_t)SMALL)];
    size_t n;
    if (rng_below(r, 10) < 7) {
      n = v->n + (size_t)rng_range(r, 1, 64);
      if (n > 4096) n = 16;
    } else {
      n = v->n / 2 < 16 ? 16 : v->n / 2;
    }
    h += vec_resize(v, n);
  }
  return h;
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'b', "big vectors", &BIG},
      {'L', "log2 of the big vectors' largest size", &MAXLOG},
      {'v', "small vectors", &SMALL},
      {'o', "small-vector operations between big steps", &SMALLOPS},
      {'c', "cycles (grow and shrink)", &CYCLES},
      {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "realloc: vectors grown by doubling and shrunk back", opts,
             sizeof opts / sizeof *opts);
  if (BIG < 1 || MAXLOG < 5 || MAXLOG > 34 || SMALL < 1 || SMALLOPS < 0 || CYCLES < 0) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  rng_t r;
  rng_seed(&r, (uint64_t)SEED);
  vec_t *small = xmalloc(sizeof(vec_t) * (size_t)SMALL);
  vec_t *big = xmalloc(sizeof(vec_t) * (size_t)BIG);
  for (long i = 0; i < SMALL; i++) {
    small[i] = (vec_t){xmalloc(16), 16, rng_next(&r)};
    vec_fill(&small[i], 0);
  }
  uint64_t h = 0;
  double t0 = now_sec();
  for (long c = 0; c < CYCLES; c++) {
    for (long i = 0; i < BIG; i++) {
      big[i] = (vec_t){xmalloc(16), 16, rng_next(&r)};
      vec_fill(&big[i], 0);
    }
    for (long lg = 5; lg <= MAXLOG; lg++) { /* grow together */
      for (long i = 0; i < BIG; i++) h += vec_resize(&big[i], (size_t)1 << lg);
      h += small_ops(small, &r);
    }
    for (long lg = MAXLOG - 1; lg >= 4; lg--) { /* and shrink back */
      for (long i = 0; i < BIG; i++) h += vec_resize(&big[i], (size_t)1 << lg);
      h += small_ops(small, &r);
    }
    for (long i = 0; i < BIG; i++) {
      h += vec_check(&big[i], big[i].n);
      free(big[i].p);
    }
  }
  for (long i = 0; i < SMALL; i++) {
    h += vec_check(&small[i], small[i].n);
    free(small[i].p);
  }
  double el = now_sec() - t0;
  printf("realloc: %ld cycles of %ld vectors 16 B - %ld MiB and back, %ld small vectors: %.3f s\n",
         CYCLES, BIG, (1L << MAXLOG) >> 20, SMALL, el);
  print_checksum(h);
  free(big);
  free(small);
  return 0;
}
