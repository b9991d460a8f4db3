/* A process whose last thread of its own ends by pthread_exit exits, with
 * status 0, though segalloc's background thread runs (tests/capi_preload.rs,
 * SEGALLOC_BACKGROUND=1 under LD_PRELOAD). glibc ends a process when its
 * last thread exits; the purger is a thread too, so it has to step aside
 * once it is alone with the zombie main thread (found by an exploratory run
 * of Python's test_threading: a child forked from a thread, whose thread
 * then returned, never exited, and nor did a main that called pthread_exit).
 *
 * 1. A thread forks; in the child, that thread (the child's only one but its
 *    purger) allocates, waits for the purger, and returns: the child must
 *    exit 0 within 10 s, which the parent's thread checks.
 * 2. main prints "ok" and calls pthread_exit: the test runner checks that
 *    the process exits 0 (it kills it after its timeout otherwise). */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int purgers(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[300], comm[64] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(comm, sizeof comm, f) && strncmp(comm, "segalloc-purge", 14) == 0) n++;
    fclose(f);
  }
  closedir(d);
  return n;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Allocates until the purger runs (it starts at an allocation slow path
 * once main has begun); 0 if it never does within 5 s. */
static int start_purger(void) {
  for (int round = 0; round < 500; round++) {
    static void *p[2000];
    for (int i = 0; i < 2000; i++) p[i] = malloc((size_t)(64 + i % 4000));
    for (int i = 0; i < 2000; i++) free(p[i]);
    if (purgers() == 1) return 1;
    sleep_ms(10);
  }
  return 0;
}

static int result = -1;

static void *forker(void *arg) {
  (void)arg;
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    result = 1;
    return NULL;
  }
  if (pid == 0) {
    /* The child: this thread is its main thread now. */
    if (!start_purger()) _exit(7);
    return NULL; /* ends the child's last thread of its own */
  }
  for (int i = 0; i < 1000; i++) {
    int status;
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        result = 0;
      } else {
        fprintf(stderr, "the child ended with status %#x\n", status);
        result = 2;
      }
      return NULL;
    }
    sleep_ms(10);
  }
  fprintf(stderr, "the child whose thread returned did not exit within 10 s\n");
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  result = 3;
  return NULL;
}

int main(void) {
  if (!start_purger()) {
    fprintf(stderr, "no segalloc-purge thread after main allocated\n");
    return 4;
  }
  pthread_t t;
  if (pthread_create(&t, NULL, forker, NULL) != 0) return 5;
  pthread_join(t, NULL);
  if (result != 0) return 6;
  puts("ok");
  fflush(stdout);
  pthread_exit(NULL);
}
