/* segalloc's thread-local heap pointer in a library loaded late: threads
 * that exist before dlopen, threads made after it, and a forked child all
 * allocate through the dlopen'ed library's malloc/free (found with dlsym:
 * the program's own malloc stays glibc's). Every block is filled with a
 * pattern and checked before it is freed; blocks live at the same time in
 * different threads must not overlap. Prints "ok" and exits 0 on success.
 *
 * usage: tls_dlopen /path/to/libsegalloc.so */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 4
#define LIVE 2000
#define ROUNDS 20

static void *(*seg_malloc)(size_t);
static void (*seg_free)(void *);
static void *(*seg_realloc)(void *, size_t);
static pthread_barrier_t loaded, filled, checked;
static unsigned char *blocks[THREADS + 1][LIVE];
static size_t sizes[THREADS + 1][LIVE];

static void fail(const char *what, int t) {
  fprintf(stderr, "tls_dlopen: %s (thread %d)\n", what, t);
  exit(1);
}

static size_t size_of(int t, int i, int r) { return 16 + (size_t)((i * 37 + t * 11 + r * 5) % 700); }

/* One round for slot t: LIVE blocks filled with t's pattern. */
static void fill(int t, int r) {
  for (int i = 0; i < LIVE; i++) {
    size_t n = size_of(t, i, r);
    unsigned char *p = seg_malloc(n);
    if (!p) fail("malloc returned null", t);
    if ((uintptr_t)p % 16) fail("block not 16-aligned", t);
    memset(p, 'A' + t, n);
    blocks[t][i] = p;
    sizes[t][i] = n;
  }
}

static void check_and_free(int t, int owner) {
  for (int i = 0; i < LIVE; i++) {
    unsigned char *p = blocks[owner][i];
    for (size_t k = 0; k < sizes[owner][i]; k++)
      if (p[k] != 'A' + owner) fail("block overwritten: blocks overlap", t);
    if (i % 3 == 0) {
      p = seg_realloc(p, sizes[owner][i] * 2);
      if (!p) fail("realloc returned null", t);
      for (size_t k = 0; k < sizes[owner][i]; k++)
        if (p[k] != 'A' + owner) fail("realloc lost contents", t);
    }
    seg_free(p);
  }
}

static void *early_thread(void *arg) {
  int t = (int)(intptr_t)arg;
  /* This thread exists before the library is loaded. */
  pthread_barrier_wait(&loaded);
  for (int r = 0; r < ROUNDS; r++) {
    fill(t, r);
    pthread_barrier_wait(&filled);
    /* Free the neighbour's blocks: cross-thread frees. */
    check_and_free(t, (t + 1) % THREADS);
    pthread_barrier_wait(&checked);
  }
  return NULL;
}

static void *late_thread(void *arg) {
  (void)arg;
  for (int r = 0; r < ROUNDS; r++) {
    fill(THREADS, r);
    check_and_free(THREADS, THREADS);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: tls_dlopen LIB\n");
    return 2;
  }
  pthread_t th[THREADS];
  pthread_barrier_init(&loaded, NULL, THREADS + 1);
  pthread_barrier_init(&filled, NULL, THREADS);
  pthread_barrier_init(&checked, NULL, THREADS);
  for (int t = 0; t < THREADS; t++)
    if (pthread_create(&th[t], NULL, early_thread, (void *)(intptr_t)t)) fail("pthread_create", t);

  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "tls_dlopen: dlopen: %s\n", dlerror());
    return 1;
  }
  seg_malloc = (void *(*)(size_t))dlsym(lib, "malloc");
  seg_free = (void (*)(void *))dlsym(lib, "free");
  seg_realloc = (void *(*)(void *, size_t))dlsym(lib, "realloc");
  if (!seg_malloc || !seg_free || !seg_realloc) fail("dlsym", -1);
  if ((void *)seg_malloc == (void *)malloc) fail("dlsym found the program's own malloc", -1);

  pthread_barrier_wait(&loaded);
  pthread_t late;
  if (pthread_create(&late, NULL, late_thread, NULL)) fail("pthread_create", THREADS);
  for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
  pthread_join(late, NULL);

  /* The main thread, then a forked child: each gets working heaps. */
  fill(0, 99);
  pid_t pid = fork();
  if (pid < 0) fail("fork", -1);
  if (pid == 0) {
    check_and_free(0, 0); /* the parent's blocks, copied into the child */
    fill(1, 7);
    check_and_free(1, 1);
    _exit(0);
  }
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("forked child failed", -1);
  check_and_free(0, 0);
  printf("ok\n");
  return 0;
}
