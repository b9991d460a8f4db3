/* Every runtime option through the C ABI (tests/capi_preload.rs): each is
 * set with segalloc_option_set, by its name and by its variable's name, and
 * read back with segalloc_option_get; a malformed or out-of-range value and
 * an unknown name give EINVAL and change nothing; mallopt(M_TRIM_THRESHOLD)
 * sets purge_min. Allocates between the steps, so the options are consulted
 * by slow paths while they change. Prints "ok" when everything held. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* segalloc's, found at run time: the program is linked without it. */
static int (*segalloc_option_set)(const char *name, const char *value);
static long (*segalloc_option_get)(const char *name);

static int failures;

static void expect(const char *what, long got, long want) {
  if (got != want) {
    fprintf(stderr, "%s: got %ld, want %ld\n", what, got, want);
    failures++;
  }
}

static void churn(void) {
  void *p[1000];
  for (int i = 0; i < 1000; i++) p[i] = malloc((size_t)(16 + i * 8));
  for (int i = 0; i < 1000; i++) free(p[i]);
  free(malloc((size_t)3 << 20));
}

/* name, a good value, its number, a bad value. */
static const struct {
  const char *name, *good;
  long number;
  const char *bad;
} cases[] = {
    {"purge_delay_ms", "250", 250, "soon"},
    {"purge_min", "2M", 2L << 20, "2Q"},
    {"segment_cache", "3", 3, "-1"},
    {"segment_cache_resident", "1M", 1L << 20, "lots"},
    {"large_cache", "64M", 64L << 20, "64X"},
    {"parked_heaps", "2", 2, "two"},
    {"page_source", "mmap", 0, "disk"},
    {"limit", "64G", 64L << 30, "1T1"},
    {"limit_soft", "32G", 32L << 30, "x"},
    {"thp", "0", 0, "maybe"},
    {"background", "0", 0, "2"},
    {"sub_purge", "0", 0, "half"},
    {"mesh", "1", 1, "-"},
    {"verbose", "0", 0, "loud"},
    {"show_stats", "0", 0, "7"},
};

int main(void) {
  char env_name[64];
  segalloc_option_set = (int (*)(const char *, const char *))dlsym(RTLD_DEFAULT, "segalloc_option_set");
  segalloc_option_get = (long (*)(const char *))dlsym(RTLD_DEFAULT, "segalloc_option_get");
  if (!segalloc_option_set || !segalloc_option_get) {
    fprintf(stderr, "segalloc's option functions not found (not preloaded?)\n");
    return 2;
  }
  /* Asked before the program's first allocation: the environment's value
   * (the test sets SEGALLOC_PURGE_DELAY_MS), not the default. */
  const char *delay = getenv("SEGALLOC_PURGE_DELAY_MS");
  if (delay) expect("purge_delay_ms before any allocation", segalloc_option_get("purge_delay_ms"), atol(delay));
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *n = cases[i].name;
    churn();
    long before = segalloc_option_get(n);
    if (before < 0) {
      fprintf(stderr, "%s: unknown to segalloc_option_get\n", n);
      failures++;
      continue;
    }
    expect(n, segalloc_option_set(n, cases[i].bad), EINVAL);
    expect(n, segalloc_option_get(n), before);
    expect(n, segalloc_option_set(n, cases[i].good), 0);
    expect(n, segalloc_option_get(n), cases[i].number);
    churn();
    /* By the variable's name too, back to the value before. */
    strcpy(env_name, "SEGALLOC_");
    for (size_t k = 0; n[k] && k < 40; k++) {
      char c = n[k];
      env_name[9 + k] = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
      env_name[10 + k] = 0;
    }
    char value[32];
    snprintf(value, sizeof value, "%ld", before);
    expect(env_name, segalloc_option_set(env_name, value), 0);
    expect(env_name, segalloc_option_get(env_name), before);
  }
  expect("unknown name", segalloc_option_set("no_such_option", "1"), EINVAL);
  expect("unknown name", segalloc_option_get("no_such_option"), -1);
  expect("null name", segalloc_option_set(NULL, "1"), EINVAL);
  expect("null name", segalloc_option_get(NULL), -1);
  expect("mallopt(M_TRIM_THRESHOLD)", mallopt(M_TRIM_THRESHOLD, 12345), 1);
  expect("purge_min after mallopt", segalloc_option_get("purge_min"), 12345);
  churn();
  if (failures) return 1;
  puts("ok");
  return 0;
}
