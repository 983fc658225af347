/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reads from an NBD server that has stopped answering, with a 1 s request timeout when
 * the library offers one (duplexnbd_set_request_timeout, looked up at run time so the same
 * binary runs on libnbd, which has no timeouts and waits for ever).
 *
 *   stopped_server URI
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char *argv[]) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s URI\n", argv[0]);
    return 2;
  }
  struct nbd_handle *h = nbd_create();
  if (h == NULL || nbd_connect_uri(h, argv[1]) == -1) {
    fprintf(stderr, "%s\n", nbd_get_error());
    return 1;
  }
  printf("library: %s %s\n", nbd_get_package_name(h), nbd_get_version(h));
  int (*set_timeout)(struct nbd_handle *, uint32_t) =
      (int (*)(struct nbd_handle *, uint32_t))dlsym(RTLD_DEFAULT, "duplexnbd_set_request_timeout");
  if (set_timeout) {
    set_timeout(h, 1000);
    printf("request timeout: 1000 ms (duplexnbd_set_request_timeout)\n");
  } else {
    printf("request timeout: none (this library has no duplexnbd_set_request_timeout)\n");
  }
  /* The caller tells us the server is stopped now. */
  printf("ready\n");
  fflush(stdout);
  char line[16];
  if (fgets(line, sizeof line, stdin) == NULL) return 2;
  char buf[4096];
  double t0 = now();
  int r = nbd_pread(h, buf, sizeof buf, 0, 0);
  int err = nbd_get_errno();
  printf("nbd_pread returned %d after %.2f s: %s\n", r, now() - t0,
         r == -1 ? (err == ETIMEDOUT ? "ETIMEDOUT" : strerror(err)) : "ok");
  nbd_close(h);
  return r == -1 && err == ETIMEDOUT ? 0 : 1;
}
