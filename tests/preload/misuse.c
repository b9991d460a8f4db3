/* Misuse of the C allocation API, one scenario per run (argv[1]), for
 * tests/capi_preload.rs: under LD_PRELOAD=libsegalloc.so each scenario must
 * die of SIGABRT after one line on stderr. Reaching the end of main means the
 * misuse went unnoticed: exit 3. Each scenario is written as a program would
 * make the mistake, then goes on using memory as if nothing happened. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *victim;

static void *free_victim(void *arg) {
  (void)arg;
  free(victim);
  return NULL;
}

static void free_in_thread(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, free_victim, NULL) != 0) exit(4);
  pthread_join(t, NULL);
}

/* Allocates the size of the victim a few times and fills the blocks: a
 * double free that went unnoticed hands the same block out twice here. */
static void reuse(size_t n) {
  void *a = malloc(n), *b = malloc(n);
  if (a == b) fprintf(stderr, "the same block handed out twice: %p\n", a);
  memset(a, 1, n);
  memset(b, 2, n);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *s = argv[1];
  void *keep = malloc(64); /* keeps the victim's page in use */
  victim = malloc(64);
  memset(victim, 7, 64);
  if (!strcmp(s, "double_free")) {
    free(victim);
    free(victim);
  } else if (!strcmp(s, "double_free_later")) {
    free(victim);
    for (int i = 0; i < 10; i++) free(malloc(32)); /* other work between */
    free(victim);
  } else if (!strcmp(s, "thread_then_owner")) {
    free_in_thread();
    free(victim);
  } else if (!strcmp(s, "owner_then_thread")) {
    free(victim);
    free_in_thread();
  } else if (!strcmp(s, "two_threads")) {
    free_in_thread();
    free_in_thread();
  } else if (!strcmp(s, "realloc_freed")) {
    free(victim);
    victim = realloc(victim, 200);
  } else if (!strcmp(s, "interior")) {
    free((char *)victim + 16);
  } else if (!strcmp(s, "interior_thread")) {
    victim = (char *)victim + 8;
    free_in_thread();
  } else if (!strcmp(s, "realloc_interior")) {
    victim = realloc((char *)victim + 16, 200);
  } else if (!strcmp(s, "unmapped")) {
    free((void *)0x123456780040);
  } else if (!strcmp(s, "unmapped_thread")) {
    victim = (void *)0x123456780040;
    free_in_thread();
  } else if (!strcmp(s, "high")) {
    free((void *)0xffff800000001000); /* kernel half: no user mapping */
  } else if (!strcmp(s, "large_interior")) {
    char *big = malloc(3 << 20);
    free(big + 4096);
  } else if (!strcmp(s, "large_interior_deep")) {
    char *big = malloc(12 << 20); /* past its header's 4 MiB stretch */
    victim = big + (9 << 20);
    free_in_thread();
  } else if (!strcmp(s, "none")) {
    /* No misuse: must exit 0 (the checks raise no false alarm). */
    free(NULL);
    free(victim);
    victim = malloc(64);
    free(victim);
    free(keep);
    return 0;
  } else {
    return 2;
  }
  reuse(64);
  for (int i = 0; i < 100000; i++) free(malloc(64));
  /* A block freed by another thread waits in a batch for its owner, which
   * checks it when it takes the batch, on its next slow path: before the
   * block could be handed out again. Keep allocating until then. */
  for (int i = 0; i < 100000; i++) memset(malloc(64), 3, 64);
  free(keep);
  return 3;
}
