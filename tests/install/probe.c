// SPDX-License-Identifier: LGPL-2.1-or-later
// Built against an installed duplexnbd: says which library it runs on and which file that
// library was loaded from, and with --nbdkit writes and reads back a block on nbdkit memory.
#define _GNU_SOURCE
#include <libnbd.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Debian 12's libnbd.h (1.14) lacks this; finding it proves the include path reached ours.
#ifndef LIBNBD_HAVE_NBD_BLOCK_STATUS_64
#error "compiled against a libnbd.h older than 1.18, not duplexnbd's"
#endif

static int find_libnbd(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  if (strstr(info->dlpi_name, "/libnbd.so") != NULL) {
    *(char **)data = realpath(info->dlpi_name, NULL);
    return 1;
  }
  return 0;
}

static int fail(const char *what) {
  fprintf(stderr, "probe: %s: %s\n", what, nbd_get_error());
  return 1;
}

int main(int argc, char **argv) {
  char *loaded = NULL;
  dl_iterate_phdr(find_libnbd, &loaded);
  struct nbd_handle *h = nbd_create();
  if (h == NULL) return fail("nbd_create");
  printf("package %s\nversion %s\nlibrary %s\n", nbd_get_package_name(h), nbd_get_version(h),
         loaded ? loaded : "(not found)");
  if (argc > 1 && strcmp(argv[1], "--nbdkit") == 0) {
    char *server[] = {"nbdkit", "-s", "--exit-with-parent", "memory", "size=1M", NULL};
    if (nbd_connect_command(h, server) == -1) return fail("nbd_connect_command");
    static char out[65536], in[65536];
    for (size_t i = 0; i < sizeof out; i++) out[i] = (char)(i * 7 + 3);
    if (nbd_pwrite(h, out, sizeof out, 131072, 0) == -1) return fail("nbd_pwrite");
    if (nbd_pread(h, in, sizeof in, 131072, 0) == -1) return fail("nbd_pread");
    printf("size %lld\nread back %s\n", (long long)nbd_get_size(h),
           memcmp(in, out, sizeof in) == 0 ? "matches" : "DIFFERS");
    if (nbd_shutdown(h, 0) == -1) return fail("nbd_shutdown");
  }
  nbd_close(h);
  free(loaded);
  return 0;
}
