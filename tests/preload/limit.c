/* Under SEGALLOC_LIMIT=64M (set by tests/capi_preload.rs): a request past the
 * limit fails with ENOMEM instead of growing the process, smaller ones keep
 * working, and freeing makes room again. With "unbounded" as its argument
 * (under SEGALLOC_LIMIT=256M): allocates without bound, small and large
 * blocks, until malloc gives ENOMEM, which must come within a few MiB of the
 * limit; frees the older half and goes on, three times. Under 64M it also
 * allocates 64-byte blocks until malloc gives ENOMEM. Prints "ok" and
 * exits 0 on success. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unbounded(void) {
  enum { MAX = 1 << 17 };
  static void *held[MAX];
  size_t n = 0;
  for (int round = 0; round < 3; round++) {
    size_t bytes = 0, i = 0;
    for (;; i++) {
      size_t size = i % 64 == 63 ? (size_t)3 << 20 : 4000;
      errno = 0;
      char *p = malloc(size);
      if (!p) {
        if (errno != ENOMEM) {
          fprintf(stderr, "malloc failed with errno %d\n", errno);
          return 4;
        }
        break;
      }
      memset(p, round + 1, size);
      held[n++] = p;
      bytes += size;
      if (n == MAX) {
        fprintf(stderr, "no failure in %zu blocks\n", n);
        return 5;
      }
    }
    struct mallinfo2 mi = mallinfo2();
    size_t total = mi.arena + mi.hblkhd;
    fprintf(stderr, "round %d: %zu blocks held, %zu MiB in use, %zu MiB committed at ENOMEM\n", round, n,
            (size_t)mi.uordblks >> 20, total >> 20);
    if (total > (size_t)256 << 20 || total + ((size_t)8 << 20) < (size_t)256 << 20) {
      fprintf(stderr, "ENOMEM at %zu MiB committed, not near the 256 MiB limit\n", total >> 20);
      return 6;
    }
    /* Free the older half: the program goes on. */
    size_t half = n / 2;
    for (size_t k = 0; k < half; k++) free(held[k]);
    memmove(held, held + half, (n - half) * sizeof held[0]);
    n -= half;
    char *big = malloc((size_t)32 << 20);
    if (!big) {
      fprintf(stderr, "malloc(32 MiB) failed after freeing half\n");
      return 7;
    }
    memset(big, 9, (size_t)32 << 20);
    free(big);
  }
  while (n) free(held[--n]);
  puts("ok");
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "unbounded") == 0) return unbounded();
  errno = 0;
  void *big = malloc((size_t)100 << 20);
  if (big != NULL || errno != ENOMEM) {
    fprintf(stderr, "malloc(100 MiB) = %p, errno %d\n", big, errno);
    return 1;
  }
  for (int round = 0; round < 3; round++) {
    char *p = malloc((size_t)40 << 20);
    if (!p) {
      fprintf(stderr, "malloc(40 MiB) failed in round %d\n", round);
      return 2;
    }
    memset(p, round, (size_t)40 << 20);
    free(p);
  }
  void *z = calloc((size_t)1 << 20, 100);
  if (z != NULL) {
    fprintf(stderr, "calloc of 100 MiB succeeded\n");
    return 3;
  }
  /* Small blocks up to the limit: the failure comes from malloc's own slow
   * path (which sets errno itself, the fast path having no frame to do it),
   * and freeing them makes room again. */
  enum { SMALL = 1 << 21 };
  static void *small[SMALL];
  size_t k = 0;
  for (; k < SMALL; k++) {
    errno = 0;
    small[k] = malloc(64);
    if (!small[k]) break;
    memset(small[k], 5, 64);
  }
  if (k == SMALL || errno != ENOMEM) {
    fprintf(stderr, "64-byte mallocs: %zu succeeded, then errno %d\n", k, errno);
    return 4;
  }
  while (k) free(small[--k]);
  char *again = malloc(64);
  if (!again) {
    fprintf(stderr, "malloc(64) failed after freeing\n");
    return 5;
  }
  free(again);
  puts("ok");
  return 0;
}
