/* Under SEGALLOC_PAGE_MAP (set by tests/capi_preload.rs): allocates 2000
 * blocks of 3000 bytes, frees every other one and exits holding the rest, so
 * the page map written at exit shows that class's pages half live (1000
 * blocks in all). Prints "ok" and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  static char *blocks[2000];
  for (int i = 0; i < 2000; i++) {
    blocks[i] = malloc(3000);
    if (!blocks[i]) {
      fprintf(stderr, "malloc(3000) failed at %d\n", i);
      return 1;
    }
    memset(blocks[i], i, 3000);
  }
  for (int i = 1; i < 2000; i += 2)
    free(blocks[i]);
  puts("ok");
  return 0;
}
