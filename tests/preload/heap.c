/* First-class heaps from C (include/segalloc.h), under LD_PRELOAD: blocks
 * of every size range with their contents checked, calloc, realloc across
 * the small and large ranges, aligned blocks, frees through
 * segalloc_heap_free and through plain free from another thread, exact
 * statistics of the heap's own frees, reset and reuse, two heaps side by side, destroy. Prints
 * "ok". */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segalloc.h"

static int failures;
#define CHECK(c)                                               \
  do {                                                         \
    if (!(c)) {                                                \
      fprintf(stderr, "heap.c:%d: %s failed\n", __LINE__, #c); \
      failures++;                                              \
    }                                                          \
  } while (0)

#define N 3000

static size_t size_for(int i) {
  return i % 500 == 7 ? (size_t)(1 << 20) + (size_t)i * 4096 /* large */
         : i % 50 == 3 ? 20000 + (size_t)i                    /* mid */
                       : 1 + (size_t)(i * 37) % 900;
}

static void fill(unsigned char *p, size_t n, int id) {
  for (size_t k = 0; k < n; k++) p[k] = (unsigned char)(id * 13 + k);
}

static int same(const unsigned char *p, size_t n, int id) {
  for (size_t k = 0; k < n; k++)
    if (p[k] != (unsigned char)(id * 13 + k)) return 0;
  return 1;
}

static void *free_all(void *arg) {
  void **ps = arg;
  for (int i = 0; i < N; i += 2) free(ps[i]); /* plain free, another thread */
  return NULL;
}

static size_t live(SegallocHeap *h) {
  SegallocStats s;
  CHECK(segalloc_heap_stats(h, &s, sizeof s) == 0);
  return s.allocated;
}

int main(void) {
  SegallocHeap *h = segalloc_heap_new();
  CHECK(h != NULL);
  CHECK(live(h) == 0);
  static void *ps[N];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < N; i++) {
      ps[i] = segalloc_heap_malloc(h, size_for(i));
      CHECK(ps[i] != NULL && ((uintptr_t)ps[i] & 15) == 0);
      fill(ps[i], size_for(i), i);
    }
    CHECK(live(h) >= (size_t)N);
    for (int i = 0; i < N; i++) CHECK(same(ps[i], size_for(i), i));
    if (round == 0) {
      for (int i = 0; i < N; i++) segalloc_heap_free(h, ps[i]);
    } else {
      segalloc_heap_reset(h); /* everything at once */
    }
    CHECK(live(h) == 0);
  }
  SegallocStats s;
  CHECK(segalloc_heap_stats(h, &s, sizeof s) == 0);
  CHECK(s.allocated == 0 && s.large_objects == 0);
  CHECK(segalloc_heap_stats(h, NULL, sizeof s) == EINVAL);

  /* calloc: zeroed, also over reused memory; overflow fails. */
  unsigned char *z = segalloc_heap_malloc(h, 4000);
  memset(z, 0xff, 4000);
  segalloc_heap_free(h, z);
  for (int i = 0; i < 50; i++) {
    unsigned char *c = segalloc_heap_calloc(h, 100, 40);
    CHECK(c != NULL);
    for (int k = 0; c && k < 4000; k++) CHECK(c[k] == 0);
  }
  errno = 0;
  CHECK(segalloc_heap_calloc(h, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
  segalloc_heap_reset(h);

  /* realloc through small, large and back, contents kept. */
  unsigned char *r = segalloc_heap_realloc(h, NULL, 10);
  fill(r, 10, 5);
  size_t sizes[] = {100, 5000, 300000, 3 << 20, 9 << 20, 2 << 20, 70000, 24, 8};
  size_t prev = 10;
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    unsigned char *q = segalloc_heap_realloc(h, r, sizes[k]);
    CHECK(q != NULL);
    size_t kept = prev < sizes[k] ? prev : sizes[k];
    CHECK(same(q, kept, 5));
    fill(q, sizes[k], 5);
    r = q;
    prev = sizes[k];
  }
  CHECK(segalloc_heap_realloc(h, r, 0) == NULL);
  CHECK(live(h) == 0);

  /* A block of malloc moves into the heap. */
  unsigned char *m = malloc(100);
  fill(m, 100, 9);
  unsigned char *mh = segalloc_heap_realloc(h, m, 200);
  CHECK(mh != NULL && same(mh, 100, 9));
  CHECK(live(h) >= 200);
  segalloc_heap_free(h, mh);

  /* Aligned blocks, small to past the segment size. */
  for (size_t a = 16; a <= (8u << 20); a <<= 3) {
    void *p = segalloc_heap_aligned_alloc(h, a, 100);
    CHECK(p != NULL && ((uintptr_t)p & (a - 1)) == 0);
    segalloc_heap_free(h, p);
  }
  errno = 0;
  CHECK(segalloc_heap_aligned_alloc(h, 48, 100) == NULL && errno == EINVAL);
  CHECK(live(h) == 0);

  /* Half freed here, half with plain free by another thread; those reach
   * the heap at its next allocation that needs a page (the other thread's
   * figures count them, not the heap's). The memory serves new blocks. */
  for (int i = 0; i < N; i++) {
    ps[i] = segalloc_heap_malloc(h, size_for(i));
    fill(ps[i], size_for(i), i);
  }
  for (int i = 1; i < N; i += 2) segalloc_heap_free(h, ps[i]);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, free_all, ps) == 0);
  pthread_join(t, NULL);
  for (int i = 0; i < 20000; i++) {
    unsigned char *p = segalloc_heap_malloc(h, 64);
    CHECK(p != NULL);
    fill(p, 64, i);
    CHECK(same(p, 64, i));
    segalloc_heap_free(h, p);
  }
  segalloc_heap_reset(h);

  /* Two heaps side by side: destroying one leaves the other intact. */
  SegallocHeap *g = segalloc_heap_new();
  void *in_g = segalloc_heap_malloc(g, 300);
  void *in_h = segalloc_heap_malloc(h, 300);
  fill(in_g, 300, 1);
  fill(in_h, 300, 2);
  segalloc_heap_destroy(g);
  CHECK(same(in_h, 300, 2));
  segalloc_heap_free(h, in_h);
  segalloc_heap_destroy(h);
  segalloc_heap_destroy(NULL);
  if (failures) return 1;
  printf("ok\n");
  return 0;
}
