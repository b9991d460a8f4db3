/* Under SEGALLOC_LIMIT=64M (set by tests/capi_preload.rs): a request past the
 * limit fails with ENOMEM instead of growing the process, smaller ones keep
 * working, and freeing makes room again. Prints "ok" and exits 0 on success. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
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
  puts("ok");
  return 0;
}
