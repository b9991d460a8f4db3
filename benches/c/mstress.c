/* mstress: multi-threaded stress with mixed sizes, after mimalloc's
 * test-stress (mimalloc-bench's "mstress"). Threads are started and joined in
 * waves. Each thread keeps a local array of blocks and, at random, replaces a
 * block, frees one, or swaps one with a slot of a shared transfer array by an
 * atomic exchange, so blocks move between threads and are freed by whoever
 * holds them. At exit a thread frees half of what it holds and pushes the
 * rest into the transfer array, so blocks outlive their thread and are freed
 * by threads of later waves. Sizes are mostly small, 1 in 100 up to 64 KiB,
 * 1 in 10000 up to 1 MiB.
 *
 * The random choices never depend on what a slot holds, so the set of blocks
 * allocated is deterministic; every block is freed exactly once whatever the
 * schedule, and the checksum over the freed tags equals the one over the
 * allocated tags (checked). */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>

#define MAXSZ (1u << 20)

static long T = 2, WAVES = 100, OPS = 100000, LOCAL = 500, TRANSFER = 1000, SEED = 42;
static _Atomic(void *) *transfer;

typedef struct {
  long id, wave;
  uint64_t alloc_sum, free_sum, allocs, frees;
} work_t;

static void *alloc_one(rng_t *r, work_t *w) {
  uint64_t k = rng_below(r, 10000);
  size_t sz;
  if (k == 0)
    sz = (size_t)rng_range(r, 65537, MAXSZ);
  else if (k <= 100)
    sz = (size_t)rng_range(r, 1025, 65536);
  else if (k <= 2000)
    sz = (size_t)rng_range(r, 257, 1024);
  else
    sz = (size_t)rng_range(r, 16, 256);
  uint64_t tag = rng_next(r);
  void *p = xmalloc(sz);
  fill_block(p, sz, tag, 64);
  w->alloc_sum += mix64(tag);
  w->allocs++;
  return p;
}

static void free_one(void *p, work_t *w) {
  if (!p) return;
  w->free_sum += mix64(check_block(p, MAXSZ, 64, NULL));
  w->frees++;
  free(p);
}

static void *stress(void *arg) {
  /* Counted in a copy on this thread's stack: the workers' entries share
   * cache lines, and writing them per operation would measure false sharing
   * that depends on where the allocator put the array. */
  work_t acc = *(work_t *)arg, *w = &acc;
  rng_t r;
  rng_seed(&r, (uint64_t)SEED * 1000003u + (uint64_t)w->wave * 131u + (uint64_t)w->id);
  void **local = calloc((size_t)LOCAL, sizeof(void *));
  for (long k = 0; k < OPS; k++) {
    uint64_t x = rng_below(&r, 100);
    long j = (long)rng_below(&r, (uint64_t)LOCAL);
    if (x < 60) {
      free_one(local[j], w);
      local[j] = alloc_one(&r, w);
    } else if (x < 75) {
      free_one(local[j], w);
      local[j] = NULL;
    } else {
      long t = (long)rng_below(&r, (uint64_t)TRANSFER);
      local[j] = atomic_exchange_explicit(&transfer[t], local[j], memory_order_acq_rel);
    }
  }
  for (long j = 0; j < LOCAL; j++) {
    if (rng_below(&r, 2) == 0) {
      free_one(local[j], w);
    } else {
      long t = (long)rng_below(&r, (uint64_t)TRANSFER);
      free_one(atomic_exchange_explicit(&transfer[t], local[j], memory_order_acq_rel), w);
    }
  }
  free(local);
  *(work_t *)arg = acc;
  return NULL;
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'t', "threads per wave", &T},          {'w', "waves", &WAVES},
      {'o', "operations per thread", &OPS},   {'l', "local slots per thread", &LOCAL},
      {'x', "transfer slots", &TRANSFER},     {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "mstress: mixed sizes passed between threads, threads in waves", opts,
             sizeof opts / sizeof *opts);
  if (T < 1 || WAVES < 1 || LOCAL < 1 || TRANSFER < 1 || OPS < 0) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  transfer = calloc((size_t)TRANSFER, sizeof(*transfer));
  work_t *w = xmalloc(sizeof(work_t) * (size_t)T);
  pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)T);
  uint64_t alloc_sum = 0, free_sum = 0, allocs = 0, frees = 0;
  double t0 = now_sec();
  for (long wave = 0; wave < WAVES; wave++) {
    for (long i = 0; i < T; i++) {
      w[i] = (work_t){.id = i, .wave = wave};
      if (pthread_create(&th[i], NULL, stress, &w[i]) != 0) {
        perror("pthread_create");
        return 5;
      }
    }
    for (long i = 0; i < T; i++) {
      pthread_join(th[i], NULL);
      alloc_sum += w[i].alloc_sum;
      free_sum += w[i].free_sum;
      allocs += w[i].allocs;
      frees += w[i].frees;
    }
  }
  work_t last = {0};
  for (long t = 0; t < TRANSFER; t++) free_one(atomic_load(&transfer[t]), &last);
  free_sum += last.free_sum;
  frees += last.frees;
  double el = now_sec() - t0;
  printf("mstress: %ld waves of %ld threads, %" PRIu64 " blocks: %.3f s\n", WAVES, T, allocs, el);
  if (allocs != frees || alloc_sum != free_sum) {
    fprintf(stderr, "LOST OR DOUBLE-FREED BLOCKS: %" PRIu64 " allocated, %" PRIu64 " freed\n",
            allocs, frees);
    return 1;
  }
  print_checksum(free_sum);
  free(th);
  free(w);
  free(transfer);
  return 0;
}
