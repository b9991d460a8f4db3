/* The background purger's nudge from C (tests/capi_preload.rs,
 * `background_purger_nudges_a_c_program_that_allocates_from_what_it_freed`;
 * run with SEGALLOC_BACKGROUND=1 and a 50 ms purge delay).
 *
 * Fills 160,000 blocks of 256-512 bytes, frees nine in ten at random, then,
 * as a server after a burst of deletions, allocates and frees 8 blocks of
 * 300 bytes every 2 ms: every allocation is served from the blocks just
 * freed, so no allocation slow path runs unless the purger brings the
 * thread there. Prints "ok" once RSS fell by 8 MiB or more (the sub-page
 * purge gives back about a quarter of the 54 MiB freed), within 5 s, and
 * the live blocks read back right; else says what it saw. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N 160000

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, res = 0;
  if (!f || fscanf(f, "%ld %ld", &size, &res) != 2)
    return -1;
  fclose(f);
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned long long s = 0x9e3779b97f4a7c15ull;
static unsigned long long rnd(void) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

static unsigned char *p[N];
static size_t len[N];

int main(void) {
  for (long i = 0; i < N; i++) {
    len[i] = 256 + (size_t)(rnd() % 257);
    p[i] = malloc(len[i]);
    if (!p[i])
      return 1;
    memset(p[i], (int)(i & 255), len[i]);
  }
  for (long i = 0; i < N; i++)
    if (rnd() % 10 != 0) {
      free(p[i]);
      p[i] = NULL;
    }
  long freed = rss_kib(), last = freed;
  double t0 = now();
  while (now() - t0 < 5.0 && freed - last < 8 * 1024) {
    void *q[8];
    for (int j = 0; j < 8; j++) {
      q[j] = malloc(300);
      if (!q[j])
        return 1;
      memset(q[j], j, 300);
    }
    for (int j = 0; j < 8; j++)
      free(q[j]);
    usleep(2000);
    last = rss_kib();
  }
  for (long i = 0; i < N; i++)
    if (p[i])
      for (size_t k = 0; k < len[i]; k++)
        if (p[i][k] != (unsigned char)(i & 255)) {
          printf("block %ld changed\n", i);
          return 1;
        }
  if (freed - last < 8 * 1024) {
    printf("RSS %ld KiB after the frees, %ld KiB after %.1f s\n", freed, last, now() - t0);
    return 1;
  }
  printf("ok\n");
  return 0;
}
