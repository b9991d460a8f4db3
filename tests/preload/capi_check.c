/* Exercises every allocation function segalloc exports, with its edge cases.
 * Exits non-zero (after printing what failed on stderr) on any wrong answer.
 *
 * It must also pass against glibc's allocator, so it checks C semantics, not
 * segalloc's internals; `--segalloc` adds the checks where segalloc is meant
 * to differ from glibc 2.36 (C23 free_sized, aligned_alloc's EINVAL) and that the preload took over every entry point.
 * argv[1] after the flag, if given, is a shared library to dlopen/dlclose. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* GCC 12+ cannot see that a failed realloc leaves its block alive. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

static int failures;
#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "capi_check: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                            \
    }                                                                        \
  } while (0)

/* Keeps the compiler from folding malloc/free pairs or known-size results. */
static void *volatile sink;
static size_t opaque(size_t n) {
  volatile size_t v = n;
  return v;
}

/* A block allocated before main, by a constructor. */
static char *early;
__attribute__((constructor)) static void before_main(void) {
  early = malloc(64);
  if (early) strcpy(early, "allocated before main");
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}
static int intact(const unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed + i * 7)) return 0;
  return 1;
}
static int aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static void check_malloc_free(void) {
  void *a = malloc(0), *b = malloc(0);
  CHECK(a && b && a != b);
  free(a);
  free(b);
  free(NULL);
  /* Every size up to 5000 bytes, then large ones: aligned to 16, usable size
   * covers the request, and the whole usable size can be written. */
  enum { N = 5000 };
  static unsigned char *blocks[N + 1];
  for (size_t n = 1; n <= N; n++) {
    blocks[n] = malloc(n);
    CHECK(blocks[n] && aligned(blocks[n], 16));
    size_t u = malloc_usable_size(blocks[n]);
    CHECK(u >= n);
    fill(blocks[n], u, (unsigned)n);
  }
  for (size_t n = 1; n <= N; n++) {
    CHECK(intact(blocks[n], malloc_usable_size(blocks[n]), (unsigned)n));
    free(blocks[n]);
  }
  for (size_t n = 100000; n < 40u << 20; n = n * 3 + 1) {
    unsigned char *p = malloc(n);
    CHECK(p && aligned(p, 16) && malloc_usable_size(p) >= n);
    fill(p, n, 3);
    CHECK(intact(p, n, 3));
    free(p);
  }
  CHECK(malloc_usable_size(NULL) == 0);
  errno = 0;
  CHECK(malloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(malloc(opaque(SIZE_MAX / 2 + 1)) == NULL && errno == ENOMEM);
}

static void check_calloc(void) {
  /* Dirty memory first, so a calloc reusing it must really zero it. */
  for (size_t n = 8; n <= 1 << 20; n *= 2) {
    unsigned char *d = malloc(n);
    memset(d, 0xAB, n);
    free(d);
    unsigned char *p = calloc(1, n);
    CHECK(p);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) nonzero += p[i] != 0;
    CHECK(nonzero == 0);
    free(p);
  }
  void *z = calloc(0, 0);
  CHECK(z != NULL);
  free(z);
  errno = 0;
  CHECK(calloc(opaque(SIZE_MAX / 2 + 1), 2) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(calloc(opaque(1) << 32, opaque(1) << 32) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(calloc(1, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
  int *arr = calloc(1000, sizeof(int));
  CHECK(arr && arr[0] == 0 && arr[999] == 0);
  free(arr);
}

/* Large blocks in a loop: freed ones are reused (segalloc's large-block
 * cache), so each must hold exactly what was written into it, calloc must
 * read zero although the memory it reuses was dirty, and realloc must carry
 * the contents across growing and shrinking. Runs on two threads at once. */
static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  return x ^ (x >> 33);
}
static void stamp(unsigned char *p, size_t n, uint64_t seed) {
  for (size_t off = 0; off + 8 <= n; off += 4096) {
    uint64_t v = seed ^ off;
    memcpy(p + off, &v, 8);
  }
  p[n - 1] = (unsigned char)seed;
}
static int stamped(const unsigned char *p, size_t n, uint64_t seed) {
  for (size_t off = 0; off + 8 <= n; off += 4096) {
    uint64_t v;
    memcpy(&v, p + off, 8);
    if (v != (seed ^ off)) return 0;
  }
  return p[n - 1] == (unsigned char)seed;
}
static int zeroed(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}
static void *large_loop(void *arg) {
  uint64_t id = (uint64_t)(uintptr_t)arg;
  enum { LIVE = 3 };
  unsigned char *live[LIVE] = {0};
  size_t len[LIVE] = {0};
  uint64_t seed[LIVE] = {0};
  long bad = 0;
  for (uint64_t i = 0; i < 120; i++) {
    uint64_t r = mix(id * 1000003 + i);
    int k = (int)(r % LIVE);
    if (live[k]) {
      if (!stamped(live[k], len[k], seed[k])) bad++;
      memset(live[k], 0xA5, len[k]); /* dirty, for the next calloc */
      free(live[k]);
    }
    size_t n = ((size_t)1 << 20) + (size_t)(mix(r) % (12u << 20));
    unsigned char *p;
    switch (i % 3) {
    case 0:
      p = malloc(n);
      break;
    case 1:
      p = calloc(1, n);
      if (p && !zeroed(p, n)) bad++;
      break;
    default:
      /* realloc up from a smaller large block, then back down. */
      p = malloc(n / 2);
      if (!p) break;
      stamp(p, n / 2, i ^ id);
      p = realloc(p, n + (3u << 20));
      if (p && !stamped(p, n / 2, i ^ id)) bad++;
      if (p) p = realloc(p, n);
      if (p && !stamped(p, n / 2, i ^ id)) bad++;
      break;
    }
    if (!p) return (void *)1;
    if (malloc_usable_size(p) < n) bad++;
    seed[k] = (id << 40) ^ i;
    stamp(p, n, seed[k]);
    live[k] = p;
    len[k] = n;
  }
  for (int k = 0; k < LIVE; k++) {
    if (live[k] && !stamped(live[k], len[k], seed[k])) bad++;
    free(live[k]);
  }
  return (void *)(uintptr_t)(bad != 0);
}
static void check_large_reuse(void) {
  pthread_t t[2];
  for (uintptr_t i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, large_loop, (void *)(i + 1)) == 0);
  for (int i = 0; i < 2; i++) {
    void *bad = (void *)1;
    CHECK(pthread_join(t[i], &bad) == 0 && bad == NULL);
  }
  /* And on one thread, a calloc right after freeing a dirty block of the
   * same size (the same mapping, reused). */
  for (size_t n = 2u << 20; n <= 16u << 20; n *= 2) {
    unsigned char *d = malloc(n);
    CHECK(d != NULL);
    if (!d) continue;
    memset(d, 0x5A, n);
    free(d);
    unsigned char *z = calloc(n / 4096, 4096);
    CHECK(z && zeroed(z, n));
    free(z);
  }
}

static void check_realloc(void) {
  unsigned char *p = realloc(NULL, 10); /* realloc(NULL, n) is malloc(n) */
  CHECK(p != NULL);
  fill(p, 10, 1);
  /* Grow through small classes into the large range and back down. */
  size_t have = 10;
  for (size_t n = 11; n < 8u << 20; n += n / 3 + 1) {
    p = realloc(p, n);
    CHECK(p && aligned(p, 16) && intact(p, have, 1));
    fill(p, n, 1);
    have = n;
  }
  for (size_t n = have; n > 5; n /= 3) {
    p = realloc(p, n);
    CHECK(p && intact(p, n, 1));
  }
  /* Failure leaves the block intact. */
  errno = 0;
  CHECK(realloc(p, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
  CHECK(intact(p, 5, 1));
  /* realloc(p, 0) frees p and returns NULL, as glibc does. */
  CHECK(realloc(p, 0) == NULL);
  void *q = realloc(NULL, 0);
  CHECK(q != NULL);
  free(q);

  unsigned char *r = reallocarray(NULL, 10, 10);
  CHECK(r != NULL);
  fill(r, 100, 9);
  errno = 0;
  CHECK(reallocarray(r, opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
  CHECK(intact(r, 100, 9));
  r = reallocarray(r, 100, 100);
  CHECK(r && intact(r, 100, 9));
  free(r);
}

static void check_aligned(int segalloc) {
  void *p = (void *)0x1234;
  /* posix_memalign: EINVAL for non power of two or below sizeof(void *), and
   * *out untouched on failure; errno is not its channel. */
  size_t bad[] = {0, 1, 2, 4, 12, 24, 48, 100, sizeof(void *) + 1};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK(posix_memalign(&p, bad[i], 16) == EINVAL);
    CHECK(p == (void *)0x1234);
  }
  CHECK(posix_memalign(&p, 16, opaque(SIZE_MAX)) == ENOMEM);
  CHECK(p == (void *)0x1234);
  /* Any power of two, as glibc: up to 64 MiB here (above 2 MiB a block has
   * a mapping of its own, its header a segment below it). */
  for (size_t a = sizeof(void *); a <= (size_t)1 << 26; a *= 2) {
    for (size_t n = 0; n < 3 * a && n < 300000; n += (a < 300000 ? a / 2 : 100000) + 13) {
      CHECK(posix_memalign(&p, a, n) == 0 && p && aligned(p, a));
      CHECK(malloc_usable_size(p) >= n);
      memset(p, 0x5C, n);
      free(p);
    }
    void *q = aligned_alloc(a, a < (4u << 20) ? a * 3 : a);
    CHECK(q && aligned(q, a));
    free(q);
    q = memalign(a, 10);
    CHECK(q && aligned(q, a));
    free(q);
  }
  for (size_t a = 1; a <= 8; a *= 2) {
    void *q = aligned_alloc(a, 10);
    CHECK(q && aligned(q, a));
    free(q);
  }
  /* memalign rounds an alignment that is not a power of two up to one. */
  void *m = memalign(24, 100);
  CHECK(m && aligned(m, 32));
  free(m);
  m = memalign(0, 100);
  CHECK(m != NULL);
  free(m);
  errno = 0;
  CHECK(memalign(opaque(SIZE_MAX / 2 + 2), 1) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(memalign(64, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);

  long page = sysconf(_SC_PAGESIZE);
  void *v = valloc(100);
  CHECK(v && aligned(v, (size_t)page));
  free(v);
  v = pvalloc(100);
  CHECK(v && aligned(v, (size_t)page) && malloc_usable_size(v) >= (size_t)page);
  memset(v, 1, (size_t)page);
  free(v);
  errno = 0;
  CHECK(pvalloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(valloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);

  if (segalloc) {
    /* glibc 2.38+ semantics for aligned_alloc (2.36 rounds up instead). */
    errno = 0;
    CHECK(aligned_alloc(24, 100) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(0, 100) == NULL && errno == EINVAL);
    /* An alignment beyond any address space fails cleanly. */
    errno = 0;
    CHECK(memalign((size_t)1 << 62, 100) == NULL && errno == ENOMEM);
    CHECK(posix_memalign(&p, (size_t)1 << 62, 100) == ENOMEM);
    /* Usable size is the real block size: close to the request. */
    void *s = malloc(100);
    CHECK(malloc_usable_size(s) >= 100 && malloc_usable_size(s) <= 128);
    free(s);
  }
}

/* Entry points reached by name: C23 free_sized, glibc's __libc_* aliases. */
static void check_symbols(int segalloc) {
  void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
  void (*fas)(void *, size_t, size_t) =
      (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
  if (segalloc) CHECK(fs && fas);
  if (fs) {
    fs(NULL, 0);
    fs(malloc(100), 100);
  }
  if (fas) {
    fas(NULL, 64, 0);
    fas(aligned_alloc(64, 128), 64, 128);
  }
  void *(*lm)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "__libc_malloc");
  void *(*lc)(size_t, size_t) = (void *(*)(size_t, size_t))dlsym(RTLD_DEFAULT, "__libc_calloc");
  void *(*lr)(void *, size_t) = (void *(*)(void *, size_t))dlsym(RTLD_DEFAULT, "__libc_realloc");
  void *(*lma)(size_t, size_t) = (void *(*)(size_t, size_t))dlsym(RTLD_DEFAULT, "__libc_memalign");
  void (*lf)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "__libc_free");
  CHECK(lm && lc && lr && lma && lf);
  if (lm && lc && lr && lma && lf) {
    char *p = lm(50);
    strcpy(p, "libc");
    p = lr(p, 5000);
    CHECK(strcmp(p, "libc") == 0);
    free(p); /* mixing the aliases with the plain names is fine */
    int *c = lc(10, sizeof(int));
    CHECK(c && c[9] == 0);
    lf(c);
    void *a = lma(256, 10);
    CHECK(a && aligned(a, 256));
    lf(a);
  }
  if (segalloc) {
    /* Every entry point comes from the same library (the preload). */
    const char *names[] = {"malloc", "free", "calloc", "realloc", "reallocarray",
                           "posix_memalign", "aligned_alloc", "memalign", "valloc",
                           "pvalloc", "malloc_usable_size", "free_sized",
                           "free_aligned_sized", "__libc_malloc", "__libc_free",
                           "__libc_calloc", "__libc_realloc", "__libc_memalign",
                           "mallinfo2", "malloc_stats", "mallinfo", "malloc_info"};
    Dl_info first, info;
    CHECK(dladdr(dlsym(RTLD_DEFAULT, "malloc"), &first) != 0);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
      void *s = dlsym(RTLD_DEFAULT, names[i]);
      CHECK(s && dladdr(s, &info) != 0 && strcmp(info.dli_fname, first.dli_fname) == 0);
      if (!s || strcmp(info.dli_fname, first.dli_fname) != 0)
        fprintf(stderr, "capi_check: %s is not from the preload\n", names[i]);
    }
    CHECK(strstr(first.dli_fname, "segalloc") != NULL);
    struct mallinfo2 mi = mallinfo2();
    CHECK(mi.arena > 0);
    /* mallinfo2 answers from segalloc's statistics: a live large block shows. */
    void *big = malloc(3u << 20);
    CHECK(big != NULL);
    mi = mallinfo2();
    CHECK(mi.hblks >= 1 && mi.hblkhd >= (3u << 20) && mi.uordblks >= mi.hblkhd);
    /* The older mallinfo, in ints, and malloc_info's XML: the same figures. */
    struct mallinfo old = mallinfo();
    CHECK(old.hblks >= 1 && old.hblkhd >= (int)(3u << 20) && old.uordblks >= old.hblkhd);
    char *xml = NULL;
    size_t xml_len = 0;
    FILE *mem = open_memstream(&xml, &xml_len);
    CHECK(mem != NULL && malloc_info(0, mem) == 0);
    if (mem) fclose(mem);
    const char *mm = xml ? strstr(xml, "<total type=\"mmap\" count=\"") : NULL;
    unsigned long mm_count = 0, mm_size = 0;
    CHECK(xml && strncmp(xml, "<malloc version=\"1\">\n<heap nr=\"0\">", 34) == 0 &&
          strstr(xml, "</heap>") && strstr(xml, "</malloc>\n") && mm &&
          sscanf(mm, "<total type=\"mmap\" count=\"%lu\" size=\"%lu\"", &mm_count, &mm_size) == 2 &&
          mm_count >= 1 && mm_size >= (3u << 20));
    free(xml);
    errno = 0;
    CHECK(malloc_info(1, stderr) == -1 && errno == EINVAL);
    /* segalloc_stats fills a plain struct; its first two fields are requested
     * and allocated bytes, which include the live large block. */
    int (*stats)(size_t *, size_t) = (int (*)(size_t *, size_t))dlsym(RTLD_DEFAULT, "segalloc_stats");
    size_t fields[15] = {0};
    CHECK(stats != NULL && stats(fields, sizeof fields) == 0);
    CHECK(fields[0] >= (3u << 20) && fields[1] >= fields[0]);
    CHECK(stats != NULL && stats(NULL, sizeof fields) == EINVAL);
    free(big);
    /* The freed block waits in the large-block cache (the last field, also
     * counted in free_pages, the eighth); malloc_trim empties the cache. */
    CHECK(stats != NULL && stats(fields, sizeof fields) == 0);
    CHECK(fields[14] >= (3u << 20) && fields[7] >= fields[14]);
    CHECK(malloc_trim(0) == 1);
    CHECK(stats != NULL && stats(fields, sizeof fields) == 0 && fields[14] == 0);
  }
  /* Both allocators print something of their own on stderr. */
  malloc_stats();
  CHECK(malloc_trim(0) >= 0);
  /* libc's own allocations (strdup, asprintf, getline) use the same heap. */
  char *d = strdup("strdup'd");
  CHECK(d && strcmp(d, "strdup'd") == 0);
  free(d);
  char *s = NULL;
  CHECK(asprintf(&s, "%d-%s", 42, "x") == 4 && strcmp(s, "42-x") == 0);
  free(s);
}

/* Threads: each allocates, hands half its blocks to the next one to free, and
 * exits with live blocks that main frees. */
enum { THREADS = 8, PER = 20000 };
static void *handoff[THREADS][PER / 2];
static void *leftover[THREADS][64];
static pthread_barrier_t bar;
static void *worker(void *arg) {
  size_t id = (size_t)arg;
  void *mine[PER / 2];
  for (size_t i = 0; i < PER; i++) {
    size_t n = (i * 2654435761u + id) % 3000;
    void *p = (i % 97 == 0) ? calloc(1, n + 200000) : malloc(n);
    if (!p) abort();
    memset(p, (int)id, n < 64 ? n : 64);
    if (i % 2) handoff[id][i / 2] = p;
    else mine[i / 2] = p;
  }
  for (size_t i = 0; i < PER / 2; i++) free(mine[i]);
  pthread_barrier_wait(&bar);
  size_t from = (id + 1) % THREADS; /* remote frees */
  for (size_t i = 0; i < PER / 2; i++) free(handoff[from][i]);
  for (size_t i = 0; i < 64; i++) leftover[id][i] = malloc(i * 40);
  return NULL;
}
static void check_threads(void) {
  for (int round = 0; round < 3; round++) {
    pthread_t t[THREADS];
    pthread_barrier_init(&bar, NULL, THREADS);
    for (size_t i = 0; i < THREADS; i++)
      CHECK(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
    for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
    for (size_t i = 0; i < THREADS; i++)
      for (size_t j = 0; j < 64; j++) free(leftover[i][j]);
  }
}

static void *thread_malloc(void *arg) { return malloc((size_t)arg); }

/* fork from a multi-threaded parent while other threads allocate: the child
 * must be able to allocate (every lock released in it). */
static volatile int stop;
static void *churn(void *arg) {
  (void)arg;
  void *keep[256] = {0};
  for (size_t i = 0; !stop; i++) {
    size_t k = i % 256;
    free(keep[k]);
    /* Mix in large blocks and fresh segments so the locks are often held
     * (among them the large-block cache's). */
    keep[k] = malloc(i % 61 == 0   ? (1u << 20) + 4096 * (i % 700)
                     : i % 7 == 0 ? 300000 + i % 4096
                                  : i % 5000);
    if (i % 4096 == 0) malloc_trim(0);
  }
  for (size_t k = 0; k < 256; k++) free(keep[k]);
  return NULL;
}
static void check_fork(void) {
  pthread_t t[3];
  stop = 0;
  for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, NULL);
  for (int i = 0; i < 40; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      void *ps[1000];
      for (int j = 0; j < 1000; j++) ps[j] = malloc((size_t)j * 97 + (j % 10 == 0 ? 500000 : 0));
      for (int j = 0; j < 1000; j++) free(ps[j]);
      pthread_t ct;
      int ok = pthread_create(&ct, NULL, thread_malloc, (void *)100) == 0;
      void *r = NULL;
      if (ok) pthread_join(ct, &r);
      _exit(ok && r ? 0 : 3);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  stop = 1;
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
}

/* dlopen/dlclose of a library that allocates in its constructor, its
 * functions (with thread-local storage) and its destructor. */
static void check_dlopen(const char *lib) {
  for (int i = 0; i < 30; i++) {
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL);
    if (!h) {
      fprintf(stderr, "capi_check: %s\n", dlerror());
      return;
    }
    char *(*make)(int) = (char *(*)(int))dlsym(h, "capi_dlib_make");
    CHECK(make != NULL);
    if (make) {
      char *s = make(i);
      CHECK(s && strncmp(s, "dlib ", 5) == 0);
      free(s);
    }
    CHECK(dlclose(h) == 0);
  }
}

int main(int argc, char **argv) {
  int segalloc = argc > 1 && strcmp(argv[1], "--segalloc") == 0;
  const char *lib = argc > 1 + segalloc ? argv[1 + segalloc] : NULL;
  CHECK(early && strcmp(early, "allocated before main") == 0);
  free(early);
  check_malloc_free();
  check_calloc();
  check_realloc();
  check_large_reuse();
  check_aligned(segalloc);
  check_symbols(segalloc);
  check_threads();
  check_fork();
  if (lib) check_dlopen(lib);
  sink = NULL;
  printf("capi_check: %s\n", failures ? "FAILED" : "all checks passed");
  return failures ? 1 : 0;
}
