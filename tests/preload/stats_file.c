/* The statistics file from C (tests/capi_preload.rs,
 * `a_c_program_s_statistics_file_follows_it_while_it_runs`; run under
 * LD_PRELOAD with SEGALLOC_STATS_FILE=<dir>/c.%p).
 *
 * Makes 5,000 blocks of 1,000 bytes and waits (5 s at most) for a report
 * in its file showing them live in the "pages now" line; frees them all and
 * waits for a report showing under 1 MB live. The program calls nothing of
 * segalloc's: the background thread writes the file. Prints "ok", or what
 * it saw. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N 5000
#define SIZE 1000

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double unit(const char *u) {
  if (!strcmp(u, "B")) return 1;
  if (!strcmp(u, "KiB")) return 1024;
  if (!strcmp(u, "MiB")) return 1048576;
  if (!strcmp(u, "GiB")) return 1073741824;
  return -1;
}

/* The live bytes of the report at `path` written by `pid`, or -1 if there
 * is none (yet) or it is not whole. */
static double live_in(const char *path, int pid) {
  static char buf[1 << 16];
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char head[64];
  snprintf(head, sizeof head, "segalloc statistics of pid %d,", pid);
  if (strncmp(buf, head, strlen(head)) || !strstr(buf, "\noptions: ")) return -1;
  const char *l = strstr(buf, "\npages now: ");
  if (!l) return -1;
  size_t pages;
  double held, live;
  char hu[8], lu[8];
  if (sscanf(l, "\npages now: %zu pages of small blocks hold %lf %7[A-Za-z]: %lf %7[A-Za-z] in live blocks",
             &pages, &held, hu, &live, lu) != 5)
    return -1;
  return live * unit(lu);
}

/* Waits up to 5 s for a report whose live bytes satisfy `ok`; returns the
 * last figure read. */
static double wait_for(const char *path, int pid, int (*ok)(double)) {
  double t0 = now(), live = -1;
  while (now() - t0 < 5) {
    live = live_in(path, pid);
    if (live >= 0 && ok(live)) break;
    usleep(20000);
  }
  return live;
}

static int all_live(double live) { return live >= 0.95 * N * SIZE; }
static int none_live(double live) { return live < 1e6; }

int main(void) {
  const char *var = getenv("SEGALLOC_STATS_FILE");
  if (!var) {
    printf("SEGALLOC_STATS_FILE is not set\n");
    return 1;
  }
  char path[1024];
  const char *p = strstr(var, "%p");
  if (!p) {
    printf("SEGALLOC_STATS_FILE has no %%p: %s\n", var);
    return 1;
  }
  snprintf(path, sizeof path, "%.*s%d%s", (int)(p - var), var, (int)getpid(), p + 2);
  static char *blocks[N];
  for (int i = 0; i < N; i++) {
    blocks[i] = malloc(SIZE);
    if (!blocks[i]) return 2;
    memset(blocks[i], i, SIZE);
  }
  double live = wait_for(path, getpid(), all_live);
  if (!all_live(live)) {
    printf("no report of %d live bytes in %s within 5 s: %.0f\n", N * SIZE, path, live);
    return 1;
  }
  for (int i = 0; i < N; i++) free(blocks[i]);
  live = wait_for(path, getpid(), none_live);
  if (!none_live(live)) {
    printf("no report of the frees in %s within 5 s: %.0f live\n", path, live);
    return 1;
  }
  printf("ok\n");
  return 0;
}
