/* include/segalloc.h, linked as a library (cc ... -lsegalloc, no preload):
 * every function it declares, called as declared, and the struct's size
 * contract (a shorter struct gets only its own fields). Prints "ok". */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segalloc.h"

/* Blocks of 48 bytes: over a dozen 64 KiB pages, most not current. */
#define N 20000

static int failures;
#define CHECK(c)                                                   \
  do {                                                             \
    if (!(c)) {                                                    \
      fprintf(stderr, "header.c:%d: %s failed\n", __LINE__, #c);   \
      failures++;                                                  \
    }                                                              \
  } while (0)

int main(void) {
  SegallocStats before, after;
  CHECK(segalloc_stats_get(&before) == 0);
  /* Linked before libc, segalloc serves malloc: its counts move. */
  static void *ps[N];
  for (int i = 0; i < N; i++) {
    ps[i] = malloc(48);
    CHECK(ps[i] != NULL);
    memset(ps[i], i & 0xff, 48);
  }
  CHECK(segalloc_stats_get(&after) == 0);
  CHECK(after.allocated >= before.allocated + N * 48);
  CHECK(after.committed >= after.allocated);
  CHECK(after.mapped >= after.committed);

  /* A struct cut short at large_cached: that field is never written. */
  memset(&after, 0xab, sizeof after);
  CHECK(segalloc_stats(&after, offsetof(SegallocStats, large_cached)) == 0);
  CHECK(after.large_cached == (size_t)0xabababababababab);
  CHECK(after.allocated != (size_t)0xabababababababab);
  CHECK(segalloc_stats(NULL, sizeof after) == EINVAL);
  CHECK(segalloc_stats(&after, 0) == EINVAL);

  CHECK(segalloc_option_set("purge_delay_ms", "250") == 0);
  CHECK(segalloc_option_get("purge_delay_ms") == 250);
  CHECK(segalloc_option_get("SEGALLOC_PURGE_DELAY_MS") == 250);
  CHECK(segalloc_option_set("purge_delay_ms", "soon") == EINVAL);
  CHECK(segalloc_option_get("purge_delay_ms") == 250);
  CHECK(segalloc_option_get("no_such_option") == -1);
  CHECK(segalloc_option_set("purge_delay_ms", "100") == 0);

  /* Free 15 of every 16: most pages are sparse now. */
  int moved = 0;
  for (int i = 0; i < N; i++)
    if (i % 16) {
      free(ps[i]);
      ps[i] = NULL;
    }
  for (int i = 0; i < N; i += 16) {
    int m = segalloc_should_move(ps[i]);
    CHECK(m == 0 || m == 1);
    if (m) {
      unsigned char *q = segalloc_defrag_realloc(ps[i], 48);
      CHECK(q != NULL);
      for (int k = 0; q && k < 48; k++) CHECK(q[k] == (i & 0xff));
      ps[i] = q;
      moved++;
    }
  }
  CHECK(moved > 0);
  CHECK(segalloc_should_move(NULL) == 0);
  for (int i = 0; i < N; i += 16) free(ps[i]);

  int fd = open("/dev/null", O_WRONLY);
  CHECK(fd >= 0);
  segalloc_stats_print(fd);
  close(fd);
  if (failures) return 1;
  printf("ok\n");
  return 0;
}
