/* xmalloc: producer/consumer cross-thread free, after xmalloc-test (Lever and
 * Boreham, as in mimalloc-bench's "xmalloc-test"). P producer threads allocate
 * blocks of mixed sizes (16-256 bytes), fill them, and pass them in batches
 * through a bounded mutex-protected queue to C consumer threads, which check
 * and free them. Every block is freed by a thread other than its allocator.
 *
 * checksum: over the tags of every block freed; each producer draws its
 * sizes and tags from its own seeded generator, so the sum does not depend on
 * which consumer gets which batch. */
#include "common.h"
#include <pthread.h>

static long P = 1, C = 1, BLOCKS = 8000000, BATCH = 256, QCAP = 16, SEED = 42;

typedef struct batch {
  long n;
  void *obj[];
} batch_t;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  batch_t **ring;
  long head, count, producers_left;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0};

static void push(batch_t *b) {
  pthread_mutex_lock(&q.mu);
  while (q.count == QCAP) pthread_cond_wait(&q.not_full, &q.mu);
  q.ring[(q.head + q.count) % QCAP] = b;
  q.count++;
  pthread_cond_signal(&q.not_empty);
  pthread_mutex_unlock(&q.mu);
}

/* NULL when every producer is done and the queue is empty. */
static batch_t *pop(void) {
  pthread_mutex_lock(&q.mu);
  while (q.count == 0 && q.producers_left > 0) pthread_cond_wait(&q.not_empty, &q.mu);
  batch_t *b = NULL;
  if (q.count > 0) {
    b = q.ring[q.head];
    q.head = (q.head + 1) % QCAP;
    q.count--;
    pthread_cond_signal(&q.not_full);
  }
  pthread_mutex_unlock(&q.mu);
  return b;
}

/* Sizes as in many programs: mostly 16-64 bytes, some up to 256. */
static size_t pick_size(rng_t *r) {
  uint64_t k = rng_below(r, 8);
  if (k < 5) return (size_t)rng_range(r, 16, 64);
  if (k < 7) return (size_t)rng_range(r, 65, 128);
  return (size_t)rng_range(r, 129, 256);
}

static void *producer(void *arg) {
  long id = (long)(intptr_t)arg;
  rng_t r;
  rng_seed(&r, (uint64_t)SEED * 31u + (uint64_t)id);
  long left = BLOCKS / P + (id < BLOCKS % P ? 1 : 0);
  while (left > 0) {
    long n = left < BATCH ? left : BATCH;
    batch_t *b = xmalloc(sizeof(batch_t) + sizeof(void *) * (size_t)n);
    b->n = n;
    for (long i = 0; i < n; i++) {
      size_t sz = pick_size(&r);
      void *p = xmalloc(sz);
      fill_block(p, sz, rng_next(&r), 64);
      b->obj[i] = p;
    }
    push(b);
    left -= n;
  }
  pthread_mutex_lock(&q.mu);
  q.producers_left--;
  pthread_cond_broadcast(&q.not_empty);
  pthread_mutex_unlock(&q.mu);
  return NULL;
}

static void *consumer(void *arg) {
  uint64_t sum = 0;
  batch_t *b;
  while ((b = pop()) != NULL) {
    for (long i = 0; i < b->n; i++) {
      sum += mix64(check_block(b->obj[i], 256, 64, NULL));
      free(b->obj[i]);
    }
    free(b);
  }
  *(uint64_t *)arg = sum;
  return NULL;
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'p', "producer threads", &P},       {'c', "consumer threads", &C},
      {'n', "blocks in all", &BLOCKS},     {'b', "blocks per batch", &BATCH},
      {'q', "queue capacity in batches", &QCAP}, {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "xmalloc: producers allocate, consumers free", opts,
             sizeof opts / sizeof *opts);
  if (P < 1 || C < 1 || BATCH < 1 || QCAP < 1 || BLOCKS < 0) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  q.ring = xmalloc(sizeof(batch_t *) * (size_t)QCAP);
  q.producers_left = P;
  pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)(P + C));
  uint64_t *sums = calloc((size_t)C, sizeof(uint64_t));
  double t0 = now_sec();
  for (long i = 0; i < P + C; i++) {
    int e = i < C ? pthread_create(&th[P + i], NULL, consumer, &sums[i])
                  : pthread_create(&th[i - C], NULL, producer, (void *)(intptr_t)(i - C));
    if (e != 0) {
      perror("pthread_create");
      return 5;
    }
  }
  for (long i = 0; i < P + C; i++) pthread_join(th[i], NULL);
  double el = now_sec() - t0;
  uint64_t sum = 0;
  for (long i = 0; i < C; i++) sum += sums[i];
  printf("xmalloc: %ld producers, %ld consumers, %ld blocks: %.3f s, %.2f M blocks/s\n", P, C,
         BLOCKS, el, (double)BLOCKS / el / 1e6);
  print_checksum(sum);
  free(sums);
  free(th);
  free(q.ring);
  return 0;
}
