/* Background purging is never started before main (tests/capi_preload.rs,
 * run with SEGALLOC_BACKGROUND=1 under LD_PRELOAD): a constructor allocates
 * and counts the process's threads (one: no purger yet); main allocates,
 * and then a thread named segalloc-purge runs. Prints "ok" on success. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int threads_before_main = -1;

static int count_threads(const char *named) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (!named) {
      n++;
      continue;
    }
    char path[300], comm[64] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(comm, sizeof comm, f) && strncmp(comm, named, strlen(named)) == 0) n++;
    fclose(f);
  }
  closedir(d);
  return n;
}

static void churn(void) {
  static void *p[4000];
  for (int i = 0; i < 4000; i++) p[i] = malloc((size_t)(100 + i % 900));
  for (int i = 0; i < 4000; i++) free(p[i]);
}

__attribute__((constructor)) static void allocate_before_main(void) {
  churn();
  threads_before_main = count_threads(NULL);
}

int main(void) {
  if (threads_before_main != 1) {
    fprintf(stderr, "%d threads after a constructor allocated\n", threads_before_main);
    return 1;
  }
  churn();
  if (count_threads("segalloc-purge") != 1) {
    fprintf(stderr, "no segalloc-purge thread after main allocated\n");
    return 2;
  }
  puts("ok");
  return 0;
}
