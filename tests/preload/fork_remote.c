/* fork while blocks travel between threads (batched remote frees pending,
 * heaps of exited threads parked), under LD_PRELOAD.
 *
 * Four worker threads pass blocks to each other through a shared slot
 * table: each takes a random slot, checks and frees the block there (most
 * often another thread's: a remote free, gathered into a batch) and puts a
 * new one of its own; workers exit and are replaced now and then (their
 * heaps parked or abandoned while others hold their blocks). Meanwhile the
 * main thread forks 30 times. Each child (one thread, the fork's copy of
 * the heap) checks every block in the table, frees them all (blocks of
 * heaps whose threads do not exist in the child), allocates and frees a
 * burst of its own, runs two threads that free each other's blocks, and
 * exits 0; an alarm turns a hang into a failure. The parent checks every
 * child's status, stops the workers, checks and frees what is left, and
 * prints "ok". Any block handed out twice would carry another block's
 * pattern, in the parent or in a child.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOTS 512
#define WORKERS 4

struct blk {
  uint64_t id;
  size_t size;
};

static struct blk *slot[SLOTS];
static pthread_mutex_t lock[SLOTS];
static volatile int stop;
static int failed;

static void fail(const char *what, uint64_t id) {
  fprintf(stderr, "fork_remote: %s (block %llu)\n", what, (unsigned long long)id);
  failed = 1;
}

static unsigned char pat(uint64_t id, size_t i) { return (unsigned char)(id * 31 + i * 7 + (id >> 9)); }

static struct blk *make(uint64_t id, size_t size) {
  struct blk *b = malloc(size);
  if (!b) return NULL;
  b->id = id;
  b->size = size;
  unsigned char *p = (unsigned char *)b;
  for (size_t i = sizeof *b; i < size; i++) p[i] = pat(id, i);
  return b;
}

static int check(const struct blk *b) {
  const unsigned char *p = (const unsigned char *)b;
  for (size_t i = sizeof *b; i < b->size; i++)
    if (p[i] != pat(b->id, i)) return 0;
  return 1;
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static size_t size_of(uint64_t r) {
  /* Mostly small (batched remote frees), some mid-sized, a few large. */
  return r % 97 == 0 ? 70000 + r % 200000 : 16 + r % (r % 5 == 0 ? 4000 : 300);
}

static void *worker(void *arg) {
  uint64_t s = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  uint64_t id = (uint64_t)(uintptr_t)arg << 40;
  /* A worker lives for a few thousand swaps, then exits: its heap is
   * parked while the others still hold and free its blocks. */
  for (int n = 0; !stop && n < 3000; n++) {
    uint64_t r = rnd(&s);
    size_t k = r % SLOTS;
    struct blk *nb = make(++id, size_of(r >> 12));
    if (!nb) {
      fail("malloc failed", id);
      return NULL;
    }
    pthread_mutex_lock(&lock[k]);
    struct blk *old = slot[k];
    slot[k] = nb;
    pthread_mutex_unlock(&lock[k]);
    if (old) {
      if (!check(old)) fail("a block changed while live", old->id);
      free(old);
    }
  }
  return NULL;
}

static void *child_thread(void *arg) {
  struct blk **mine = arg;
  /* Free the other thread's half, keep checking our own. */
  for (int i = 0; i < 200; i++) {
    if (!check(mine[i])) return NULL;
    free(mine[i]);
  }
  return mine;
}

static int in_child(void) {
  alarm(20);
  /* The table as the fork copied it: locks may be held by workers that do
   * not exist here, so read it without them (no one else runs). */
  for (size_t k = 0; k < SLOTS; k++) {
    struct blk *b = slot[k];
    if (!b) continue;
    if (!check(b)) return 2;
    free(b);
    slot[k] = NULL;
  }
  void *burst[4096];
  for (int i = 0; i < 4096; i++) burst[i] = make(i, size_of((uint64_t)i * 2654435761u));
  for (int i = 0; i < 4096; i++) {
    if (!burst[i] || !check(burst[i])) return 3;
    free(burst[i]);
  }
  /* Two threads that free each other's blocks. */
  struct blk *a[200], *b[200];
  for (int i = 0; i < 200; i++) {
    a[i] = make(1000 + i, 24 + i);
    b[i] = make(5000 + i, 40 + i);
  }
  pthread_t t1, t2;
  if (pthread_create(&t1, NULL, child_thread, b) || pthread_create(&t2, NULL, child_thread, a))
    return 4;
  void *r1, *r2;
  pthread_join(t1, &r1);
  pthread_join(t2, &r2);
  if (!r1 || !r2) return 5;
  for (int i = 0; i < 100000; i++) {
    void *p = malloc(16 + i % 512);
    if (!p) return 6;
    memset(p, 1, 16);
    free(p);
  }
  return 0;
}

int main(void) {
  for (size_t k = 0; k < SLOTS; k++) pthread_mutex_init(&lock[k], NULL);
  pthread_t w[WORKERS];
  uintptr_t next = 1;
  for (int i = 0; i < WORKERS; i++) pthread_create(&w[i], NULL, worker, (void *)next++);
  for (int f = 0; f < 30 && !failed; f++) {
    usleep(3000);
    pid_t pid = fork();
    if (pid == 0) _exit(in_child());
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
      fail("fork or waitpid failed", f);
      break;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "fork_remote: child %d: %s %d\n", f,
              WIFEXITED(status) ? "exit" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      failed = 1;
    }
    /* Replace a worker now and then: thread churn around the forks. */
    int i = f % WORKERS;
    pthread_join(w[i], NULL);
    pthread_create(&w[i], NULL, worker, (void *)next++);
  }
  stop = 1;
  for (int i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
  for (size_t k = 0; k < SLOTS; k++) {
    if (slot[k] && !check(slot[k])) fail("a block changed while live", slot[k]->id);
    free(slot[k]);
  }
  if (failed) return 1;
  printf("ok\n");
  return 0;
}
