/* One runtime option's effect through the C ABI, under LD_PRELOAD (run by
 * tests/option_effects.rs): `option_effects NAME HOW VALUE` sets option
 * NAME to VALUE with segalloc_option_set (HOW "c"), or purge_min with
 * mallopt(M_TRIM_THRESHOLD, VALUE) (HOW "mallopt"), or leaves it alone (HOW
 * "none"); or (HOW "bad") checks that VALUE and an unknown name are refused;
 * then runs the probe of tests/option_effects.rs for NAME, which
 * checks that the effect shows exactly when the option was set. Effects
 * are read from segalloc_stats, the table segalloc_stats_print writes, and
 * /proc; verbose and show_stats write on stderr, which the test checks.
 * Prints "ok" and exits 0 when the probe held. Built with -fno-builtin, so
 * that the compiler keeps a malloc whose block is freed unused. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "segalloc.h"

#define MIB ((size_t)1 << 20)

/* segalloc's, found at run time: the program is linked without it. */
static int (*option_set)(const char *name, const char *value);
static long (*option_get)(const char *name);
static int (*stats_get)(SegallocStats *out, size_t size);
static void (*stats_print)(int fd);

static SegallocStats stats(void) {
  SegallocStats s;
  memset(&s, 0, sizeof s);
  stats_get(&s, sizeof s);
  return s;
}

/* The statistics table, as SEGALLOC_SHOW_STATS prints it. */
static char table[1 << 16];

static void read_table(void) {
  int fd = memfd_create("table", 0);
  stats_print(fd);
  ssize_t n = pread(fd, table, sizeof table - 1, 0);
  table[n < 0 ? 0 : n] = 0;
  close(fd);
}

/* The number right after `key` in the table (-1 if `key` is not there). */
static long number_after(const char *key) {
  read_table();
  const char *p = strstr(table, key);
  return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* The number right before `key` in the table (-1 if `key` is not there). */
static long number_before(const char *key) {
  read_table();
  const char *p = strstr(table, key);
  if (!p) return -1;
  while (p > table && p[-1] >= '0' && p[-1] <= '9') p--;
  return strtol(p, NULL, 10);
}

static int failed;

static void check(int ok, const char *what, long figure) {
  if (!ok) {
    fprintf(stderr, "%s (%ld)\n", what, figure);
    failed = 1;
  }
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&t, NULL);
}

/* `n` blocks of `size` bytes, each written. */
static char **blocks(size_t n, size_t size) {
  char **v = calloc(n, sizeof *v);
  for (size_t i = 0; i < n; i++) {
    v[i] = malloc(size);
    if (!v[i]) {
      fprintf(stderr, "malloc(%zu) failed\n", size);
      exit(3);
    }
    memset(v[i], 1, size);
  }
  return v;
}

static void free_all(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Frees all blocks of `v` but one in `k` (those stay in v[0..]); returns
 * how many stay. */
static size_t keep_one_in(char **v, size_t n, size_t k) {
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (i % k == 0)
      v[kept++] = v[i];
    else
      free(v[i]);
  }
  return kept;
}

static void purge_delay(int on) {
  size_t n = 32 << 10;
  char **v = blocks(n, 1000);
  n = keep_one_in(v, n, 1024);
  size_t r1 = stats().resident;
  sleep_ms(300);
  free(malloc(5000)); /* a slow path: a page of another class */
  size_t r2 = stats().resident;
  long fell = (long)r1 - (long)r2;
  if (on)
    check(fell < (long)(4 * MIB), "RSS fell before the purge delay", fell);
  else
    check(fell > (long)(16 * MIB), "RSS did not fall after the purge delay", fell);
  free_all(v, n);
}

/* With a long purge delay in both runs, so that a slow run does not see
 * the timed purge instead (also for segment_cache_resident). */
static void purge_min(int on) {
  option_set("purge_delay_ms", "3600000");
  size_t n = 32 << 10, odd = 0;
  char **v = blocks(n, 1000);
  for (size_t i = 0; i < n; i++) {
    if (((uintptr_t)v[i] >> 16) % 2 == 1)
      v[odd++] = v[i];
    else
      free(v[i]);
  }
  size_t r1 = stats().resident;
  char **big = blocks(128, 128 << 10);
  size_t r2 = stats().resident;
  long grew = (long)r2 - (long)r1;
  /* 16 MiB more in use: the RSS grows by as much, unless the free holes
   * were purged meanwhile. */
  if (on)
    check(grew > (long)(12 * MIB), "free holes purged under purge_min", grew);
  else
    check(grew < (long)(6 * MIB), "free holes not purged", grew);
  free_all(big, 128);
  free_all(v, odd);
}

static void segment_cache(int on) {
  size_t n = 24 << 10;
  char **v = blocks(n, 1000);
  size_t m1 = stats().mapped;
  free_all(v, n);
  long dropped = (long)m1 - (long)stats().mapped;
  if (on)
    check(dropped > (long)(8 * MIB), "free segments stayed mapped", dropped);
  else
    check(dropped < (long)(4 * MIB), "free segments unmapped", dropped);
}

static void segment_cache_resident(int on) {
  option_set("purge_delay_ms", "3600000");
  size_t n = 24 << 10;
  char **v = blocks(n, 1000);
  size_t r1 = stats().resident;
  free_all(v, n);
  long fell = (long)r1 - (long)stats().resident;
  if (on)
    check(fell < (long)(8 * MIB), "cached segments purged", fell);
  else
    check(fell > (long)(12 * MIB), "cached segments stayed resident", fell);
}

static void large_cache(int on) {
  char *p = malloc(8 * MIB);
  memset(p, 1, 8 * MIB);
  free(p);
  size_t cached = stats().large_cached;
  check((cached == 0) == on, "large_cached", (long)cached);
}

static void *leak_one(void *arg) {
  (void)arg;
  char *p = malloc(100);
  memset(p, 7, 100);
  return p;
}

static void parked_heaps(int on) {
  pthread_t t;
  void *p;
  pthread_create(&t, NULL, leak_one, NULL);
  pthread_join(t, &p);
  long abandoned = number_before(" abandoned)");
  free(p);
  check(abandoned == on, "segments abandoned", abandoned);
}

static void *small_blocks(void *arg) {
  (void)arg;
  free_all(blocks(50000, 64), 50000);
  return NULL;
}

static void page_source(int on) {
  pthread_t t;
  pthread_create(&t, NULL, small_blocks, NULL);
  pthread_join(t, NULL);
  long brk = number_after(" brk ");
  check((brk > 0) == on, "brk calls", brk);
}

static void limit(int on) {
  errno = 0;
  char *p = malloc(100 * MIB);
  check((p == NULL && errno == ENOMEM) == on, "malloc(100 MiB) under the limit: errno", errno);
  free(p);
}

static void limit_soft(int on) {
  size_t n = 40 << 10;
  char **v = blocks(n, 1000);
  large_cache(on);
  free_all(v, n);
}

static void thp(int on) {
  char *p = malloc(8 * MIB);
  memset(p, 1, 8 * MIB);
  uintptr_t a = (uintptr_t)p;
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  int inside = 0, advised = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      inside = lo <= a && a < hi;
    } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
      advised = strstr(line, " hg") != NULL;
      break;
    }
  }
  fclose(f);
  check(advised == on, "VmFlags hg on the block's mapping", advised);
  free(p);
}

static void sub_purge(int on) {
  size_t n = 16 << 10;
  char **v = blocks(n, 1000);
  n = keep_one_in(v, n, 64);
  malloc_trim(0);
  read_table();
  int none = strstr(table, "(0 B more purged)") != NULL;
  check(none == on, "purged inside pages: none", none);
  free_all(v, n);
}

static int purger_runs(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int found = 0;
  while (!found && (e = readdir(d))) {
    char path[300], comm[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    found = fgets(comm, sizeof comm, f) && strcmp(comm, "segalloc-purge\n") == 0;
    fclose(f);
  }
  closedir(d);
  return found;
}

static void background(int on) {
  free_all(blocks(4096, 1000), 4096);
  for (int i = 0; i < 200 && !purger_runs(); i++) sleep_ms(10);
  check(purger_runs() == on, "a segalloc-purge thread", purger_runs());
}

static void mesh(int on) {
  size_t bs = 256, n = 256 * (64 << 10) / 256, kept = 0;
  char **v = blocks(n, bs);
  for (size_t i = 0; i < n; i++) {
    uintptr_t p = (uintptr_t)v[i];
    if ((p & 0xffff) / bs % 4 == (p >> 16) % 4)
      v[kept++] = v[i];
    else
      free(v[i]);
  }
  malloc_trim(0);
  long meshed = number_after("meshing: ");
  check((meshed > 0) == on, "pages meshed", meshed);
  free_all(v, kept);
}

static void verbose(int on) {
  (void)on;
  /* A mapping that fails: with verbose, a line (the test reads it). */
  volatile size_t huge = (size_t)1 << 60;
  void *p = malloc(huge);
  check(p == NULL, "malloc(2^60)", 0);
}

static void show_stats(int on) {
  (void)on;
  free(malloc(100));
}

static const struct {
  const char *name;
  void (*probe)(int on);
} probes[] = {
    {"purge_delay_ms", purge_delay}, {"purge_min", purge_min},
    {"segment_cache", segment_cache}, {"segment_cache_resident", segment_cache_resident},
    {"large_cache", large_cache},    {"parked_heaps", parked_heaps},
    {"page_source", page_source},    {"limit", limit},
    {"limit_soft", limit_soft},      {"thp", thp},
    {"sub_purge", sub_purge},        {"background", background},
    {"mesh", mesh},                  {"verbose", verbose},
    {"show_stats", show_stats},
};

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s NAME c|mallopt|none|bad VALUE\n", argv[0]);
    return 2;
  }
  const char *name = argv[1], *how = argv[2], *value = argv[3];
  option_set = (int (*)(const char *, const char *))dlsym(RTLD_DEFAULT, "segalloc_option_set");
  stats_get = (int (*)(SegallocStats *, size_t))dlsym(RTLD_DEFAULT, "segalloc_stats");
  stats_print = (void (*)(int))dlsym(RTLD_DEFAULT, "segalloc_stats_print");
  option_get = (long (*)(const char *))dlsym(RTLD_DEFAULT, "segalloc_option_get");
  if (!option_set || !stats_get || !stats_print || !option_get) {
    fprintf(stderr, "segalloc's functions not found (not preloaded?)\n");
    return 2;
  }
  if (strcmp(how, "c") == 0) {
    if (option_set(name, value) != 0) {
      fprintf(stderr, "segalloc_option_set(%s, %s) failed\n", name, value);
      return 2;
    }
  } else if (strcmp(how, "mallopt") == 0) {
    if (mallopt(M_TRIM_THRESHOLD, atoi(value)) != 1) {
      fprintf(stderr, "mallopt(M_TRIM_THRESHOLD, %s) failed\n", value);
      return 2;
    }
  } else if (strcmp(how, "bad") == 0) {
    /* Refused: VALUE for NAME, then an unknown name; the value in force
     * stays (the test checks the two lines on stderr). */
    long before = option_get(name);
    check(option_set(name, value) == EINVAL, "a bad value accepted", before);
    check(option_get(name) == before, "the value changed", option_get(name));
    check(option_set("no_such_option", "1") == EINVAL, "an unknown name accepted", 0);
    if (failed) return 1;
    puts("ok");
    return 0;
  } else if (strcmp(how, "none") != 0) {
    fprintf(stderr, "how: %s\n", how);
    return 2;
  }
  for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
    if (strcmp(probes[i].name, name) == 0) {
      probes[i].probe(strcmp(how, "none") != 0);
      if (failed) return 1;
      puts("ok");
      return 0;
    }
  }
  fprintf(stderr, "no probe for %s\n", name);
  return 2;
}
