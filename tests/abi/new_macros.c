/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Compiled as C99 against our header: the 1.16+ LIBNBD_HAVE_* macros exist and work,
   and the program links against the LIBNBD_1.24 node. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#if !defined(LIBNBD_HAVE_NBD_BLOCK_STATUS_64) || !defined(LIBNBD_HAVE_NBD_POLL2) || \
    !defined(LIBNBD_HAVE_NBD_GET_TLS_HOSTNAME)
#error "missing LIBNBD_HAVE_* macros for libnbd 1.16-1.22 calls"
#endif
#if !defined(LIBNBD_HAVE_NBD_GET_HANDLE_SIZE) || !defined(LIBNBD_HAVE_NBD_SET_TLS_PRIORITY) || \
    !defined(LIBNBD_HAVE_NBD_GET_TLS_PRIORITY) || !defined(LIBNBD_HAVE_NBD_GET_VERSION_EXTRA) || \
    !defined(LIBNBD_HAVE_NBD_SET_URI_ALLOW_TLS_PRIORITY)
#error "missing LIBNBD_HAVE_* macros for libnbd 1.24 calls"
#endif

int main(void) {
  struct nbd_handle *h = nbd_create();
  if (h == NULL) {
    fprintf(stderr, "nbd_create: %s\n", nbd_get_error());
    return 1;
  }
  if (nbd_set_tls_hostname(h, "server.example") == -1) {
    fprintf(stderr, "%s\n", nbd_get_error());
    return 1;
  }
  char *name = nbd_get_tls_hostname(h);
  if (name == NULL || strcmp(name, "server.example") != 0) {
    fprintf(stderr, "nbd_get_tls_hostname returned %s\n", name ? name : "NULL");
    return 1;
  }
  free(name);
  if (nbd_set_tls_priority(h, "NORMAL:-VERS-TLS1.2") == -1 ||
      nbd_set_uri_allow_tls_priority(h, true) == -1) {
    fprintf(stderr, "%s\n", nbd_get_error());
    return 1;
  }
  char *priority = nbd_get_tls_priority(h);
  if (priority == NULL || strcmp(priority, "NORMAL:-VERS-TLS1.2") != 0) {
    fprintf(stderr, "nbd_get_tls_priority returned %s\n", priority ? priority : "NULL");
    return 1;
  }
  free(priority);
  ssize_t size = nbd_get_handle_size(h);
  if (size <= 0) {
    fprintf(stderr, "nbd_get_handle_size returned %zd\n", size);
    return 1;
  }
  /* Not connected: both calls must fail cleanly with an error, not crash. */
  if (nbd_poll2(h, -1, 0) != -1 || nbd_get_error() == NULL) {
    fprintf(stderr, "nbd_poll2 on an unconnected handle did not fail\n");
    return 1;
  }
  printf("package %s, version %s (extra \"%s\"), handle size %zd: "
         "LIBNBD_HAVE_NBD_BLOCK_STATUS_64, _POLL2, _GET_TLS_HOSTNAME and the 1.24 calls ok\n",
         nbd_get_package_name(h), nbd_get_version(h), nbd_get_version_extra(h), size);
  nbd_close(h);
  return 0;
}
