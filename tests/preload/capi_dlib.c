/* A library for capi_check's dlopen/dlclose test: it allocates in its
 * constructor, in a function using thread-local storage, and frees in its
 * destructor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *table;
static __thread char scratch[256];

__attribute__((constructor)) static void dlib_init(void) {
  table = malloc(100000);
  if (table) memset(table, 7, 100000);
}
__attribute__((destructor)) static void dlib_fini(void) { free(table); }

char *capi_dlib_make(int i) {
  snprintf(scratch, sizeof scratch, "dlib %d %d", i, table ? table[i] : -1);
  return strdup(scratch);
}
