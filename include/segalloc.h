/* segalloc's C API beyond the standard allocation functions.
 *
 * Build the library with `cargo build --release --features override --lib`
 * (target/release/libsegalloc.so). Then either preload it into any program
 * (LD_PRELOAD=.../libsegalloc.so ./prog), and look these functions up with
 * dlsym(RTLD_DEFAULT, ...) if the program must also run without segalloc, or
 * link against it (cc prog.c -I include -L target/release -lsegalloc, with
 * -Wl,-rpath or LD_LIBRARY_PATH so the loader finds it): linked before libc,
 * its malloc, free and the rest serve the whole program.
 *
 * malloc, free, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size,
 * free_sized, free_aligned_sized, malloc_trim, mallinfo2, mallinfo,
 * malloc_info, malloc_stats and mallopt follow glibc and are declared by
 * <stdlib.h> and <malloc.h>.
 */
#ifndef SEGALLOC_H
#define SEGALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The main figures of segalloc's statistics (bytes, except the counts).
 * Fields are only ever added at the end: pass sizeof(SegallocStats) to
 * segalloc_stats, and a library newer than this header fills just the
 * fields declared here. */
typedef struct SegallocStats {
  size_t requested;          /* bytes asked for by live allocations */
  size_t allocated;          /* bytes handed out for them */
  size_t committed;          /* memory obtained from the OS and not given back */
  size_t resident;           /* resident memory of the process */
  size_t mapped;             /* address space reserved */
  size_t metadata;           /* segalloc's own bookkeeping */
  size_t free_in_pages;      /* free blocks inside pages in use */
  size_t free_pages;         /* wholly free pages still resident */
  size_t remote_pending;     /* blocks freed by other threads, not yet collected */
  size_t allocations;        /* allocations made */
  size_t frees;              /* frees made */
  size_t cross_thread_frees; /* frees of blocks owned by another thread */
  size_t large_objects;      /* live large objects */
  size_t large_bytes;        /* usable bytes of live large objects */
  size_t large_cached;       /* freed large blocks kept mapped (part of free_pages) */
} SegallocStats;

_Static_assert(sizeof(SegallocStats) == 15 * sizeof(size_t), "SegallocStats is plain words");

/* Fills the first `size` bytes of *out (at most sizeof(SegallocStats) of
 * the library's own) with a snapshot. 0, or EINVAL for a null `out` or a
 * `size` below one field. Use segalloc_stats_get. */
int segalloc_stats(SegallocStats *out, size_t size);

/* segalloc_stats for this header's struct. */
static inline int segalloc_stats_get(SegallocStats *out) {
  return segalloc_stats(out, sizeof *out);
}

/* Writes the statistics table (what SEGALLOC_SHOW_STATS=1 prints at exit)
 * to the file descriptor `fd`, without allocating. */
void segalloc_stats_print(int fd);

/* Sets the runtime option `name` ("purge_delay_ms", or its variable's name
 * "SEGALLOC_PURGE_DELAY_MS") from `value`, written as in the environment
 * ("250", "4M", "brk"). 0, or EINVAL for an unknown name or a bad value
 * (the value in force is kept, and one line on stderr names them). */
int segalloc_option_set(const char *name, const char *value);

/* The value in force of option `name` as a number (bytes, milliseconds, a
 * count, 0 or 1, or the index of a choice's word); -1 for an unknown name. */
long segalloc_option_get(const char *name);

/* 1 when the live block `p` sits in a page worth emptying (at most half
 * live, not the page serving new blocks of its size), else 0 (also for
 * null and large blocks). No lock; any thread may ask about any block. */
int segalloc_should_move(const void *p);

/* realloc that always moves a small block into the densest pages of its
 * size: a new block of `size` bytes holding the old contents; `p` is freed.
 * Null and errno ENOMEM on failure, `p` intact. Active defragmentation:
 *   if (segalloc_should_move(p)) p = segalloc_defrag_realloc(p, size);
 * then update every reference to the block. */
void *segalloc_defrag_realloc(void *p, size_t size);

/* First-class heaps (segalloc::Heap in Rust, as mimalloc's mi_heap_*):
 * allocate related blocks from one heap, then free them all at once with
 * segalloc_heap_reset (memory kept for reuse) or segalloc_heap_destroy
 * (memory given back), without visiting each block. A heap is used by one
 * thread at a time (it may move between threads). Its blocks may also be
 * freed one by one with segalloc_heap_free or, from any thread, with free.
 * Null and errno ENOMEM when memory runs out. */
typedef struct SegallocHeap SegallocHeap;

SegallocHeap *segalloc_heap_new(void);
void segalloc_heap_destroy(SegallocHeap *h);
void segalloc_heap_reset(SegallocHeap *h);
void *segalloc_heap_malloc(SegallocHeap *h, size_t size);
void *segalloc_heap_calloc(SegallocHeap *h, size_t n, size_t size);
/* realloc(NULL, n) is malloc; size 0 frees and returns NULL (as glibc);
 * a block of another heap, or of malloc, moves into h. */
void *segalloc_heap_realloc(SegallocHeap *h, void *p, size_t size);
/* align: any power of two, else NULL and errno EINVAL. */
void *segalloc_heap_aligned_alloc(SegallocHeap *h, size_t align, size_t size);
void segalloc_heap_free(SegallocHeap *h, void *p);
/* The heap's own figures (process-wide fields read 0); as segalloc_stats.
 * They count the frees made through the heap (segalloc_heap_free,
 * segalloc_heap_realloc, reset); a block freed with free by another thread
 * counts in that thread's figures. */
int segalloc_heap_stats(SegallocHeap *h, SegallocStats *out, size_t size);

/* The sampled heap profiler: only in a library built with the feature
 * `profiling` too (`--features override,profiling`); look them up with
 * dlsym if the library may lack it. segalloc_prof_start starts sampling,
 * on average one sample per `rate` bytes allocated (0: the default, 512 KiB,
 * or SEGALLOC_PROF_RATE); segalloc_prof_stop stops it (sampled blocks still
 * live stay in the profile). segalloc_prof_dump writes prefix.pb.gz (pprof),
 * prefix.folded, prefix.svg and prefix.leaks.txt, as SEGALLOC_PROF_OUT does
 * at exit: 0, EINVAL for a null or non-UTF-8 prefix, or the failed write's
 * error number. */
void segalloc_prof_start(size_t rate);
void segalloc_prof_stop(void);
int segalloc_prof_dump(const char *prefix);

#ifdef __cplusplus
}
#endif

#endif /* SEGALLOC_H */
