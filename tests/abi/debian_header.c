/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Compiled against Debian's libnbd 1.14 header, run with our library. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

int main(void) {
  struct nbd_handle *h = nbd_create();
  if (h == NULL) return 1;
  char buf[512];
  /* Unconnected: the call fails with ENOTCONN and libnbd's "nbd_pread: " prefix. */
  if (nbd_pread(h, buf, sizeof buf, 0, 0) != -1) return 1;
  if (nbd_get_errno() != ENOTCONN || strncmp(nbd_get_error(), "nbd_pread: ", 11) != 0) {
    fprintf(stderr, "unexpected error: %d %s\n", nbd_get_errno(), nbd_get_error());
    return 1;
  }
  if (nbd_set_export_name(h, "exp") == -1) return 1;
  char *e = nbd_get_export_name(h);
  if (e == NULL || strcmp(e, "exp") != 0) return 1;
  free(e);
  printf("built against Debian's header, running on package %s %s: ok\n",
         nbd_get_package_name(h), nbd_get_version(h));
  nbd_close(h);
  return 0;
}
