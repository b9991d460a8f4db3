/* frag: external fragmentation left by random frees (issue 13's workload).
 *
 * Allocates N blocks (-n, default 2 million) of random sizes 16-512 bytes
 * (-a and -b set other bounds: -a 8192 -b 131072 -n 8000 is the variant of
 * blocks over 8 KiB, in pages of a few blocks each),
 * each filled with a pattern, frees a random P percent of them (-p, default
 * 90), and reports the process's resident memory (RSS, from /proc/self/statm):
 *   1. right after the frees;
 *   2. after W ms idle (-w, default 2000; 0 skips the wait, for CI) and
 *      malloc_trim(0) (and segalloc_collect(), if the allocator exports
 *      one; segalloc's malloc_trim already calls its collect());
 *   3. after a refill: blocks of 600-4000 bytes worth the bytes freed
 *      (-r 0 skips it).
 * Every surviving block's contents are checked after each step, and the
 * refill blocks' before they are freed, so the run also checks correctness.
 *
 * Output: one "rss:" line per step with MiB (and one "pss:" line, the
 * proportional set size once every live block has been read: meshing maps
 * a physical page at several addresses, which RSS counts at each), and what lies over the
 * baseline (the RSS before the fill, which holds the program's own arrays,
 * about 20 bytes per block) as a ratio to the live bytes requested, a summary line, and the checksum (over the tags of the blocks
 * that survive, and of the refill blocks). */
#include "common.h"
#include <dlfcn.h>
#include <malloc.h>

static long N = 2000000, PCT = 90, WAIT_MS = 2000, REFILL = 1, SEED = 42, MINSZ = 16, MAXSZ = 512;

static double rss_mib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long size = 0, res = 0;
  if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
  fclose(f);
  return (double)res * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

/* Proportional set size (Pss: of /proc/self/smaps_rollup), MiB: a page
 * mapped at two addresses (meshing) counts once, where RSS counts it once
 * per address whose page tables map it. -1 if unreadable. */
static double pss_mib(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "Pss: %ld kB", &kib) == 1) break;
  fclose(f);
  return kib < 0 ? -1 : (double)kib / 1024.0;
}

/* RSS and PSS before the fill, with the program's own arrays resident. */
static double base, pss_base;

/* PSS after a step, once every live block has been read. */
static void report_pss(const char *step, double live_mib) {
  double p = pss_mib();
  printf("pss: %-28s %8.1f MiB  (%.1f MiB over the baseline: %.2fx live, %.1f MiB)\n", step, p,
         p - pss_base, live_mib > 0 ? (p - pss_base) / live_mib : 0, live_mib);
  fflush(stdout);
}

static void report(const char *step, double live_mib) {
  double r = rss_mib();
  printf("rss: %-28s %8.1f MiB  (%.1f MiB over the baseline: %.2fx live, %.1f MiB)\n", step, r,
         r - base, live_mib > 0 ? (r - base) / live_mib : 0, live_mib);
  fflush(stdout);
}

/* The three figures for the summary line. */
static double rss_at[3];

static void check_live(void **blocks, const uint64_t *tags, const uint32_t *sizes, long n) {
  for (long i = 0; i < n; i++)
    if (blocks[i]) check_block_is(blocks[i], sizes[i], tags[i], 64);
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'n', "blocks allocated", &N},
      {'p', "percent of them freed, at random", &PCT},
      {'w', "idle wait in ms before malloc_trim (0: none)", &WAIT_MS},
      {'r', "refill with 600-4000 byte blocks worth the bytes freed (0: no)", &REFILL},
      {'s', "seed", &SEED},
      {'a', "smallest block, bytes", &MINSZ},
      {'b', "largest block, bytes", &MAXSZ},
  };
  parse_opts(argc, argv, "frag: fill, free most at random, idle, trim, refill with other sizes", opts,
             sizeof opts / sizeof *opts);
  if (N < 1 || PCT < 0 || PCT > 100 || WAIT_MS < 0 || MINSZ < 16 || MAXSZ < MINSZ ||
      MAXSZ > (1L << 30)) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  rng_t r;
  rng_seed(&r, (uint64_t)SEED);
  /* The bookkeeping is allocated before the baseline and stays resident;
   * it is counted in every figure (about 20 bytes per block). */
  void **blocks = xmalloc(sizeof(void *) * (size_t)N);
  uint64_t *tags = xmalloc(sizeof(uint64_t) * (size_t)N);
  uint32_t *sizes = xmalloc(sizeof(uint32_t) * (size_t)N);
  memset(blocks, 0, sizeof(void *) * (size_t)N);
  memset(tags, 0, sizeof(uint64_t) * (size_t)N);
  memset(sizes, 0, sizeof(uint32_t) * (size_t)N);
  base = rss_mib();
  pss_base = pss_mib();
  double t0 = now_sec();
  size_t total = 0;
  for (long i = 0; i < N; i++) {
    size_t n = (size_t)rng_range(&r, (uint64_t)MINSZ, (uint64_t)MAXSZ);
    tags[i] = rng_next(&r);
    sizes[i] = (uint32_t)n;
    blocks[i] = xmalloc(n);
    fill_block(blocks[i], n, tags[i], 64);
    total += n;
  }
  printf("rss: %-28s %8.1f MiB  (%.1f MiB requested, baseline %.1f MiB)\n", "after the fill",
         rss_mib(), (double)total / 1048576.0, base);
  /* Free a random PCT percent: a partial Fisher-Yates over the indices. */
  long nfree = (long)((double)N * (double)PCT / 100.0);
  uint32_t *idx = xmalloc(sizeof(uint32_t) * (size_t)N);
  for (long i = 0; i < N; i++) idx[i] = (uint32_t)i;
  size_t freed = 0;
  for (long k = 0; k < nfree; k++) {
    long j = k + (long)rng_below(&r, (uint64_t)(N - k));
    uint32_t t = idx[k];
    idx[k] = idx[j];
    idx[j] = t;
    long i = idx[k];
    check_block_is(blocks[i], sizes[i], tags[i], 64);
    free(blocks[i]);
    blocks[i] = NULL;
    freed += sizes[i];
  }
  free(idx);
  size_t live = total - freed;
  double live_mib = (double)live / 1048576.0;
  report("after the frees", live_mib);
  rss_at[0] = rss_mib();
  check_live(blocks, tags, sizes, N);
  report_pss("after the frees", live_mib);

  if (WAIT_MS > 0) {
    struct timespec ts = {WAIT_MS / 1000, (WAIT_MS % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  double t_trim = now_sec();
  malloc_trim(0);
  void (*collect)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "segalloc_collect");
  if (collect) collect();
  t_trim = now_sec() - t_trim;
  char step[64];
  snprintf(step, sizeof step, "after %ld ms idle + trim", WAIT_MS);
  report(step, live_mib);
  rss_at[1] = rss_mib();
  check_live(blocks, tags, sizes, N);
  report_pss(step, live_mib);

  uint64_t sum = 0;
  for (long i = 0; i < N; i++)
    if (blocks[i]) sum += mix64(tags[i]);
  rss_at[2] = 0;
  if (REFILL) {
    size_t cap = freed / 600 + 1, m = 0, got = 0;
    void **rb = xmalloc(sizeof(void *) * cap);
    uint64_t *rt = xmalloc(sizeof(uint64_t) * cap);
    uint32_t *rs = xmalloc(sizeof(uint32_t) * cap);
    while (got < freed && m < cap) {
      size_t n = (size_t)rng_range(&r, 600, 4000);
      rt[m] = rng_next(&r);
      rs[m] = (uint32_t)n;
      rb[m] = xmalloc(n);
      fill_block(rb[m], n, rt[m], 64);
      got += n;
      m++;
    }
    report("after the refill", (double)(live + got) / 1048576.0);
    rss_at[2] = rss_mib();
    check_live(blocks, tags, sizes, N);
    report_pss("after the refill", (double)(live + got) / 1048576.0);
    for (size_t k = 0; k < m; k++) {
      check_block_is(rb[k], rs[k], rt[k], 64);
      sum += mix64(rt[k]);
      free(rb[k]);
    }
    free(rs);
    free(rt);
    free(rb);
  }
  for (long i = 0; i < N; i++) free(blocks[i]);
  double el = now_sec() - t0;
  printf("frag: %ld blocks, %ld%% freed, %.1f MiB live: RSS %.1f / %.1f / %.1f MiB "
         "(frees / idle+trim / refill), %.3f s (idle excluded), malloc_trim %.1f ms\n",
         N, PCT, live_mib, rss_at[0], rss_at[1], rss_at[2], el - (double)WAIT_MS / 1000.0,
         t_trim * 1e3);
  print_checksum(sum);
  free(sizes);
  free(tags);
  free(blocks);
  return 0;
}
