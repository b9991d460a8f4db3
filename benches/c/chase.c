/* chase: pointer chasing through N 64-byte nodes linked in random order, for
 * the transparent huge page option (SEGALLOC_THP); not part of run.sh's suite.
 *   cc -O2 -o chase benches/c/chase.c
 *   SEGALLOC_THP=1 LD_PRELOAD=target/release/libsegalloc.so ./chase 4194304 10000000
 * Prints the chase time and AnonHugePages from /proc/self/smaps_rollup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
typedef struct node { struct node *next; uint64_t pad[7]; } node;
static uint64_t rng = 88172645463325252ull;
static uint64_t xr(void){ rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], 0, 10) : (4u << 20);
  size_t steps = argc > 2 ? strtoul(argv[2], 0, 10) : 30000000;
  node **v = malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = malloc(sizeof(node));
  for (size_t i = n - 1; i > 0; i--) { size_t j = xr() % (i + 1); node *t = v[i]; v[i] = v[j]; v[j] = t; }
  for (size_t i = 0; i < n; i++) v[i]->next = v[(i + 1) % n];
  struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
  node *p = v[0];
  for (size_t s = 0; s < steps; s++) p = p->next;
  clock_gettime(CLOCK_MONOTONIC, &b);
  double t = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  char line[256]; long huge = -1;
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  while (f && fgets(line, sizeof line, f)) if (!strncmp(line, "AnonHugePages:", 14)) huge = atol(line + 14);
  if (f) fclose(f);
  printf("chase %.3f s %p AnonHugePages %ld kB\n", t, (void *)p, huge);
  return 0;
}
