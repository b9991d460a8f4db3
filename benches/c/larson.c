/* larson: a server simulation after Larson and Krishnan's benchmark (as in
 * mimalloc-bench's "larson"). T chains of threads each own an array of slots;
 * a thread repeatedly picks a random slot, frees its block and allocates a new
 * one of random size. After its share of operations in a round, the thread
 * starts a new thread that inherits its array and exits, so most blocks are
 * freed by a thread other than the one that allocated them, by threads that
 * come and go. Unlike the original (which runs for a fixed time) every thread
 * does a fixed number of operations, so the result is deterministic.
 *
 * checksum: over the tags of every block freed (all of them, by the end). */
#include "common.h"
#include <pthread.h>
#include <semaphore.h>

typedef struct {
  void *p;
  uint64_t tag;
  uint32_t size;
} slot_t;

typedef struct {
  int chain;
  long round;
  slot_t *slots;
  uint64_t sum;
} chain_t;

static long T = 2, SLOTS = 1000, ROUNDS = 200, OPS = 60000, MINSZ = 16, MAXSZ = 1000, SEED = 42;
static sem_t done;

static void new_block(slot_t *s, rng_t *r) {
  s->size = (uint32_t)rng_range(r, (uint64_t)MINSZ, (uint64_t)MAXSZ);
  s->tag = rng_next(r);
  s->p = xmalloc(s->size);
  fill_block(s->p, s->size, s->tag, 64);
}

static void free_block(slot_t *s, uint64_t *sum) {
  check_block_is(s->p, s->size, s->tag, 64);
  free(s->p);
  *sum += mix64(s->tag);
}

static void *worker(void *arg) {
  chain_t *c = arg;
  rng_t r;
  rng_seed(&r, (uint64_t)SEED * 1000003u + (uint64_t)c->chain * 7919u + (uint64_t)c->round);
  /* Summed in a local: the chains' entries share a cache line, and writing
   * them per operation would measure false sharing that depends on where
   * the allocator put the array (it did: 1.7 to 2 times the time under
   * allocators that put the 64-byte array in one line, segalloc and
   * mimalloc, not under glibc, which did not). */
  uint64_t sum = 0;
  for (long i = 0; i < OPS; i++) {
    slot_t *s = &c->slots[rng_below(&r, (uint64_t)SLOTS)];
    free_block(s, &sum);
    new_block(s, &r);
  }
  c->sum += sum;
  if (++c->round < ROUNDS) {
    /* Hand the array to a new thread and exit. */
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, worker, c) != 0) {
      perror("pthread_create");
      _exit(5);
    }
    pthread_attr_destroy(&attr);
  } else {
    sem_post(&done);
  }
  return NULL;
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'t', "threads (chains)", &T},        {'n', "slots per thread", &SLOTS},
      {'r', "rounds (thread replacements)", &ROUNDS},
      {'o', "operations per thread per round", &OPS},
      {'m', "minimum block size", &MINSZ},  {'M', "maximum block size", &MAXSZ},
      {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "larson: threads replacing each other's blocks", opts,
             sizeof opts / sizeof *opts);
  if (T < 1 || SLOTS < 1 || ROUNDS < 1 || MINSZ < 16 || MAXSZ < MINSZ) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  sem_init(&done, 0, 0);
  chain_t *chains = xmalloc(sizeof(chain_t) * (size_t)T);
  /* The main thread allocates the initial blocks; the workers free them. */
  rng_t r;
  rng_seed(&r, (uint64_t)SEED);
  for (long t = 0; t < T; t++) {
    chains[t] = (chain_t){.chain = (int)t, .round = 0, .sum = 0};
    chains[t].slots = xmalloc(sizeof(slot_t) * (size_t)SLOTS);
    for (long i = 0; i < SLOTS; i++) new_block(&chains[t].slots[i], &r);
  }
  double t0 = now_sec();
  for (long t = 0; t < T; t++) {
    pthread_t th;
    if (pthread_create(&th, NULL, worker, &chains[t]) != 0) {
      perror("pthread_create");
      return 5;
    }
    pthread_detach(th);
  }
  for (long t = 0; t < T; t++) sem_wait(&done);
  double el = now_sec() - t0;
  uint64_t sum = 0;
  for (long t = 0; t < T; t++) {
    sum += chains[t].sum;
    for (long i = 0; i < SLOTS; i++) free_block(&chains[t].slots[i], &sum);
    free(chains[t].slots);
  }
  free(chains);
  double ops = (double)T * (double)ROUNDS * (double)OPS;
  printf("larson: %ld threads x %ld rounds x %ld ops: %.3f s, %.2f M ops/s\n", T, ROUNDS, OPS, el,
         ops / el / 1e6);
  print_checksum(sum);
  return 0;
}
