/* measure: the runner's launcher, not a benchmark. Usage:
 *   measure RESULT_FILE PRELOAD PROGRAM [ARGS...]
 * Starts PROGRAM with LD_PRELOAD=PRELOAD (unset if PRELOAD is empty), waits
 * for it, and writes "<wall seconds> <peak RSS KiB> <exit code>" to
 * RESULT_FILE (exit code 128+N if killed by signal N). Peak RSS is ru_maxrss
 * from wait4. A small C launcher rather than the Python runner forking
 * itself: ru_maxrss survives exec, so the child of a big parent process would
 * report at least the parent's RSS. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s RESULT_FILE PRELOAD PROGRAM [ARGS...]\n", argv[0]);
    return 2;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 2;
  }
  if (pid == 0) {
    if (argv[2][0])
      setenv("LD_PRELOAD", argv[2], 1);
    else
      unsetenv("LD_PRELOAD");
    execv(argv[3], argv + 3);
    fprintf(stderr, "measure: exec %s: %s\n", argv[3], strerror(errno));
    _exit(127);
  }
  int status;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) {
      perror("wait4");
      return 2;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  FILE *f = fopen(argv[1], "w");
  if (!f) {
    perror(argv[1]);
    return 2;
  }
  fprintf(f, "%.6f %ld %d\n", wall, ru.ru_maxrss, code);
  fclose(f);
  return 0;
}
