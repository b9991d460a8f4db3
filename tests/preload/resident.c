/* What a small single-threaded program keeps resident of libsegalloc.so
 * (tests/preload_layout.rs, `resident_library_of_a_small_program`).
 *
 * Does what the small C benchmarks do (malloc, calloc, realloc and free of
 * a few sizes, stdio), then prints one line per mapping of the library,
 * "<perms> <file offset> <Rss KiB>", read from /proc/self/smaps (the
 * library: the mappings of the file LD_PRELOAD names). The file
 * is read with open/read into a static buffer, so that the reading itself
 * runs no more of the library than the program did. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char smaps[1 << 20];

int main(void) {
  void *p[256];
  unsigned long sum = 0;
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 256; i++) {
      size_t n = 16 + (size_t)(i % 16) * 48;
      p[i] = (i % 7 == 0) ? calloc(1, n) : malloc(n);
      if (!p[i])
        return 1;
      memset(p[i], i, n);
    }
    for (int i = 0; i < 256; i += 3) {
      p[i] = realloc(p[i], 100 + (size_t)i);
      if (!p[i])
        return 1;
    }
    for (int i = 0; i < 256; i++) {
      sum += ((unsigned char *)p[i])[0];
      free(p[i]);
    }
  }
  printf("sum %lu\n", sum);
  fflush(stdout);

  const char *lib = getenv("LD_PRELOAD");
  if (!lib || !*lib)
    return 3;
  int fd = open("/proc/self/smaps", O_RDONLY);
  if (fd < 0)
    return 2;
  size_t len = 0;
  ssize_t r;
  while (len < sizeof smaps - 1 && (r = read(fd, smaps + len, sizeof smaps - 1 - len)) > 0)
    len += (size_t)r;
  close(fd);
  smaps[len] = 0;

  /* Mapping lines: "start-end perms offset dev inode path"; Rss follows. */
  char perms[8] = "";
  unsigned long offset = 0;
  int ours = 0;
  for (char *line = smaps; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = 0;
    unsigned long a, b;
    char pm[8];
    unsigned long off;
    if (sscanf(line, "%lx-%lx %7s %lx", &a, &b, pm, &off) == 4) {
      char *path = strchr(line, '/');
      ours = path && strcmp(path, lib) == 0;
      memcpy(perms, pm, sizeof perms);
      offset = off;
    } else if (ours && strncmp(line, "Rss:", 4) == 0) {
      printf("%s %lx %ld\n", perms, offset, strtol(line + 4, NULL, 10));
    }
    line = nl ? nl + 1 : NULL;
  }
  return 0;
}
