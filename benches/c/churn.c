/* churn: fixed-size allocation churn, after glibc's bench-malloc-simple and
 * bench-malloc-thread (mimalloc-bench's "glibc-simple" and "glibc-thread").
 * Each of T threads (-t, default 1) repeatedly allocates a batch of blocks of
 * one size, fills them, then checks and frees them all. Nothing crosses
 * threads: this measures the allocator's thread-local fast path.
 *
 * checksum: over the tags of every block freed. */
#include "common.h"
#include <pthread.h>

static long T = 1, SIZE = 64, BATCH = 100, ITERS = 600000, SEED = 42;

typedef struct {
  long id;
  uint64_t sum;
} work_t;

static void *run(void *arg) {
  work_t *w = arg;
  rng_t r;
  rng_seed(&r, (uint64_t)SEED * 7u + (uint64_t)w->id);
  void **blocks = xmalloc(sizeof(void *) * (size_t)BATCH);
  uint64_t *tags = xmalloc(sizeof(uint64_t) * (size_t)BATCH);
  uint64_t sum = 0;
  for (long it = 0; it < ITERS; it++) {
    for (long i = 0; i < BATCH; i++) {
      tags[i] = rng_next(&r);
      blocks[i] = xmalloc((size_t)SIZE);
      fill_block(blocks[i], (size_t)SIZE, tags[i], 64);
    }
    for (long i = 0; i < BATCH; i++) {
      check_block_is(blocks[i], (size_t)SIZE, tags[i], 64);
      free(blocks[i]);
      sum += mix64(tags[i]);
    }
  }
  free(tags);
  free(blocks);
  w->sum = sum;
  return NULL;
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'t', "threads", &T},         {'z', "block size in bytes", &SIZE},
      {'b', "blocks per batch", &BATCH}, {'n', "batches per thread", &ITERS},
      {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "churn: fixed-size batches allocated then freed, per thread", opts,
             sizeof opts / sizeof *opts);
  if (T < 1 || SIZE < 16 || BATCH < 1 || ITERS < 0) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  work_t *w = xmalloc(sizeof(work_t) * (size_t)T);
  pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)T);
  double t0 = now_sec();
  if (T == 1) {
    w[0] = (work_t){.id = 0};
    run(&w[0]); /* single-threaded: no thread is ever created */
  } else {
    for (long i = 0; i < T; i++) {
      w[i] = (work_t){.id = i};
      if (pthread_create(&th[i], NULL, run, &w[i]) != 0) {
        perror("pthread_create");
        return 5;
      }
    }
    for (long i = 0; i < T; i++) pthread_join(th[i], NULL);
  }
  double el = now_sec() - t0;
  uint64_t sum = 0;
  for (long i = 0; i < T; i++) sum += w[i].sum;
  double pairs = (double)T * (double)ITERS * (double)BATCH;
  printf("churn: %ld threads, %ld-byte blocks: %.3f s, %.1f ns per malloc/free pair per thread\n",
         T, SIZE, el, el * 1e9 * (double)T / pairs);
  print_checksum(sum);
  free(th);
  free(w);
  return 0;
}
