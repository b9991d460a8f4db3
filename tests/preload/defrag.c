/* Active defragmentation through the C ABI under LD_PRELOAD (run by
 * tests/capi_preload.rs): a table of blocks of many sizes loses 7 of 8, then
 * every survivor that segalloc_should_move picks is moved with
 * segalloc_defrag_realloc. Contents must survive, a second pass must move
 * almost nothing, and other threads' blocks move too. Prints "ok" and exits
 * 0 on success. */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 60000

static int (*should_move)(const void *);
static void *(*defrag_realloc)(void *, size_t);
static unsigned char *blocks[N];
static size_t sizes[N];

static size_t size_of_block(size_t i) { return 1 + (i * 131) % 2500; }

static void fill(size_t from, size_t to) {
  for (size_t i = from; i < to; i++) {
    sizes[i] = size_of_block(i);
    blocks[i] = malloc(sizes[i]);
    memset(blocks[i], (int)(i & 0xff), sizes[i]);
  }
}

static void *fill_half(void *arg) {
  (void)arg;
  fill(N / 2, N);
  return NULL;
}

/* Moves what should_move picks; returns how many moved, or -1 on a fault. */
static long pass(void) {
  long moved = 0;
  for (size_t i = 0; i < N; i++) {
    if (!blocks[i] || !should_move(blocks[i]))
      continue;
    unsigned char *q = defrag_realloc(blocks[i], sizes[i]);
    if (!q)
      return -1;
    blocks[i] = q;
    moved++;
  }
  return moved;
}

static int intact(void) {
  for (size_t i = 0; i < N; i++) {
    if (!blocks[i])
      continue;
    for (size_t j = 0; j < sizes[i]; j++)
      if (blocks[i][j] != (unsigned char)(i & 0xff))
        return 0;
  }
  return 1;
}

int main(void) {
  should_move = (int (*)(const void *))dlsym(RTLD_DEFAULT, "segalloc_should_move");
  defrag_realloc = (void *(*)(void *, size_t))dlsym(RTLD_DEFAULT, "segalloc_defrag_realloc");
  if (!should_move || !defrag_realloc) {
    fprintf(stderr, "segalloc_should_move / segalloc_defrag_realloc not found\n");
    return 1;
  }
  /* Half the blocks from another thread, which has exited when we move them. */
  pthread_t t;
  pthread_create(&t, NULL, fill_half, NULL);
  fill(0, N / 2);
  pthread_join(t, NULL);
  size_t live = 0;
  for (size_t i = 0; i < N; i++) {
    if (i % 8 != 7) {
      free(blocks[i]);
      blocks[i] = NULL;
    } else {
      live++;
    }
  }
  /* The other thread's pages count our frees only once collected: its heap
   * waits parked, and malloc_trim retires it (collect() in Rust). */
  malloc_trim(0);
  long first = pass();
  if (first < (long)live / 2 || !intact()) {
    fprintf(stderr, "first pass moved %ld of %zu (contents %s)\n", first, live,
            intact() ? "intact" : "changed");
    return 2;
  }
  long second = pass();
  if (second < 0 || second * 40 > (long)live || !intact()) {
    fprintf(stderr, "second pass moved %ld of %zu\n", second, live);
    return 3;
  }
  /* Edge cases: NULL, large blocks, realloc-like sizes. */
  void *big = malloc((size_t)4 << 20);
  unsigned char *p = defrag_realloc(NULL, 100);
  if (should_move(NULL) || should_move(big) || !p) {
    fprintf(stderr, "edge cases\n");
    return 4;
  }
  memset(p, 9, 100);
  p = defrag_realloc(p, 50);
  if (!p || p[49] != 9 || ((uintptr_t)p & 15) != 0) {
    fprintf(stderr, "shrinking move\n");
    return 5;
  }
  p = defrag_realloc(p, (size_t)2 << 20); /* as realloc: a large block */
  if (!p || p[49] != 9) {
    fprintf(stderr, "growing to a large block\n");
    return 6;
  }
  if (defrag_realloc(p, 0) != NULL) { /* as realloc(p, 0): freed */
    fprintf(stderr, "size 0\n");
    return 7;
  }
  errno = 0;
  if (defrag_realloc(NULL, SIZE_MAX) != NULL || errno != ENOMEM) {
    fprintf(stderr, "SIZE_MAX\n");
    return 8;
  }
  free(big);
  for (size_t i = 0; i < N; i++)
    free(blocks[i]);
  printf("ok\n");
  return 0;
}
