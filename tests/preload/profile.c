/* The heap profiler under LD_PRELOAD (set up by tests/profile.rs, with the
 * library built with the features override and profiling): starts sampling
 * through segalloc_prof_start (found with dlsym), leaks 20000 blocks of
 * 1000 bytes from leak_site, allocates and frees as many from churn_site,
 * and writes the profile with segalloc_prof_dump(argv[1]), checking after
 * the leaks that the statistics count sampled blocks as wholly requested
 * (as all small blocks in the C build). The test also
 * sets SEGALLOC_PROF_OUT, so the files are written again at exit. First the
 * profiler's options are set and read back through segalloc_option_set and
 * segalloc_option_get (a bad value refused, the value in force kept), and
 * the option prof set at run time, which must start sampling before
 * segalloc_prof_start does (option_site's blocks are sampled, at the rate
 * prof_rate was set to). With a second argument, sets prof_unwind to it.
 * Prints "ok" and exits 0. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *sink[20000];
static void *early[8192];

/* Allocates 8 MiB, kept, after the option prof was set at run time and
 * before segalloc_prof_start: sampled only if setting the option started
 * the profiler. */
__attribute__((noinline)) void option_site(void) {
  for (int i = 0; i < 8192; i++) {
    early[i] = malloc(1024);
    memset(early[i], i, 1024);
  }
}

__attribute__((noinline)) void leak_site(void) {
  for (int i = 0; i < 20000; i++) {
    sink[i] = malloc(1000);
    memset(sink[i], i, 1000);
  }
}

__attribute__((noinline)) void churn_site(void) {
  for (int i = 0; i < 20000; i++) {
    char *volatile p = malloc(1000);
    p[0] = 1;
    free(p);
  }
}

int main(int argc, char **argv) {
  void (*start)(size_t) = (void (*)(size_t))dlsym(RTLD_DEFAULT, "segalloc_prof_start");
  int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "segalloc_prof_dump");
  if (argc < 2 || !start || !dump) {
    fprintf(stderr, "usage: profile prefix, under the profiling preload\n");
    return 1;
  }
  int (*set)(const char *, const char *) =
      (int (*)(const char *, const char *))dlsym(RTLD_DEFAULT, "segalloc_option_set");
  long (*get)(const char *) = (long (*)(const char *))dlsym(RTLD_DEFAULT, "segalloc_option_get");
  if (!set || !get) {
    fprintf(stderr, "segalloc_option_set/get not found\n");
    return 1;
  }
  long unwind = get("prof_unwind");
  if (set("prof_rate", "128K") != 0 || get("prof_rate") != 128 * 1024 ||
      set("SEGALLOC_PROF_RATE", "often") == 0 || get("prof_rate") != 128 * 1024 ||
      set("prof_unwind", unwind == 1 ? "dwarf" : "fp") != 0 || get("prof_unwind") != 1 - unwind ||
      set("prof_unwind", "guess") == 0 || get("prof_unwind") != 1 - unwind ||
      set("SEGALLOC_PROF_UNWIND", unwind == 1 ? "fp" : "dwarf") != 0 || get("prof_unwind") != unwind) {
    fprintf(stderr, "profiler options through the C ABI: rate %ld, unwind %ld (was %ld)\n",
            get("prof_rate"), get("prof_unwind"), unwind);
    return 1;
  }
  /* 4 MiB allocated first, so that the profiler has looked at the option
   * (as it does every 1 MiB while stopped) before the program sets it. */
  for (int i = 0; i < 4096; i++) {
    char *volatile p = malloc(1024);
    p[0] = 1;
    free(p);
  }
  /* argv[2], if given: the unwinder to use (dwarf, fp or unwinder), set here through the C ABI
   * (the test reads which one took the stacks from the report). */
  long want = argv[2] == NULL ? 0 : argv[2][0] == 'f' ? 1 : argv[2][0] == 'u' ? 2 : 0;
  if (argc > 2 && (set("prof_unwind", argv[2]) != 0 || get("prof_unwind") != want)) {
    fprintf(stderr, "prof_unwind=%s through the C ABI: %ld\n", argv[2], get("prof_unwind"));
    return 1;
  }
  if (set("prof", "1") != 0 || get("prof") != 1) {
    fprintf(stderr, "prof through the C ABI: %ld\n", get("prof"));
    return 1;
  }
  option_site();
  start(64 * 1024);
  leak_site();
  /* The C build counts small blocks as wholly requested, sampled ones
   * too (they stand for 1024-byte blocks): with no large block live,
   * requested is allocated to the byte. */
  size_t st[15];
  int (*stats)(size_t *, size_t) = (int (*)(size_t *, size_t))dlsym(RTLD_DEFAULT, "segalloc_stats");
  if (!stats || stats(st, sizeof st) != 0 || st[12] != 0 || st[0] != st[1]) {
    fprintf(stderr, "statistics: requested %zu, allocated %zu, large objects %zu\n",
            stats ? st[0] : 0, stats ? st[1] : 0, stats ? st[12] : 0);
    return 1;
  }
  churn_site();
  int e = dump(argv[1]);
  if (e != 0) {
    fprintf(stderr, "segalloc_prof_dump: %d\n", e);
    return 1;
  }
  puts("ok");
  return 0;
}
