/* threadchurn: blocks that outlive their thread. Waves of short-lived
 * threads each allocate many small blocks (16-256 bytes), free a quarter of
 * them themselves, hand the rest to the main thread and exit. The main thread
 * frees a wave's blocks while the next wave runs, so the frees land in memory
 * whose owning thread is gone (mimalloc's abandoned segments) while new
 * threads are allocating. Like the thread-replacement part of larson and
 * mstress, and the "threadtest"/"sh6bench" family.
 *
 * checksum: over the tags of every block freed. */
#include "common.h"
#include <pthread.h>

static long WAVES = 300, T = 4, BLOCKS = 10000, SEED = 42;

typedef struct {
  long id, wave, nkept;
  void **kept;
  uint64_t sum;
} work_t;

static void *run(void *arg) {
  work_t *w = arg;
  rng_t r;
  rng_seed(&r, (uint64_t)SEED * 1000003u + (uint64_t)w->wave * 131u + (uint64_t)w->id);
  void **all = xmalloc(sizeof(void *) * (size_t)BLOCKS);
  for (long i = 0; i < BLOCKS; i++) {
    size_t sz = (size_t)(rng_below(&r, 4) == 0 ? rng_range(&r, 65, 256) : rng_range(&r, 16, 64));
    all[i] = xmalloc(sz);
    fill_block(all[i], sz, rng_next(&r), 64);
  }
  /* Free a random quarter here, keep the rest for the main thread. */
  /* Counted in locals: the workers' entries share cache lines, and writing
   * them per block would measure false sharing that depends on where the
   * allocator put the array. */
  long nkept = 0;
  uint64_t sum = 0;
  for (long i = 0; i < BLOCKS; i++) {
    if (rng_below(&r, 4) == 0) {
      sum += mix64(check_block(all[i], 256, 64, NULL));
      free(all[i]);
    } else {
      all[nkept++] = all[i];
    }
  }
  w->kept = all;
  w->nkept = nkept;
  w->sum = sum;
  return NULL;
}

static uint64_t free_wave(work_t *w) {
  uint64_t sum = 0;
  for (long t = 0; t < T; t++) {
    sum += w[t].sum;
    for (long i = 0; i < w[t].nkept; i++) {
      sum += mix64(check_block(w[t].kept[i], 256, 64, NULL));
      free(w[t].kept[i]);
    }
    free(w[t].kept);
  }
  return sum;
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'w', "waves", &WAVES}, {'t', "threads per wave", &T},
      {'n', "blocks per thread", &BLOCKS}, {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "threadchurn: short-lived threads hand their blocks to main", opts,
             sizeof opts / sizeof *opts);
  if (WAVES < 1 || T < 1 || BLOCKS < 1) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  work_t *cur = xmalloc(sizeof(work_t) * (size_t)T), *prev = xmalloc(sizeof(work_t) * (size_t)T);
  pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)T);
  uint64_t sum = 0;
  double t0 = now_sec();
  for (long wave = 0; wave < WAVES; wave++) {
    for (long t = 0; t < T; t++) {
      cur[t] = (work_t){.id = t, .wave = wave};
      if (pthread_create(&th[t], NULL, run, &cur[t]) != 0) {
        perror("pthread_create");
        return 5;
      }
    }
    if (wave > 0) sum += free_wave(prev); /* while the new wave runs */
    for (long t = 0; t < T; t++) pthread_join(th[t], NULL);
    work_t *x = prev;
    prev = cur;
    cur = x;
  }
  sum += free_wave(prev);
  double el = now_sec() - t0;
  printf("threadchurn: %ld waves of %ld threads x %ld blocks: %.3f s\n", WAVES, T, BLOCKS, el);
  print_checksum(sum);
  free(th);
  free(cur);
  free(prev);
  return 0;
}
