/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Reports which libnbd.so.0 the dynamic loader picked, and what it calls itself.
 *
 * Built by interop/libnbd-testsuite.sh against the cached libnbd source tree
 * and run through that tree's own ./run script, so it resolves the library
 * exactly the way the test suite's programs do.  Output is one line:
 *   <realpath of the loaded libnbd.so.0> TAB <package name> TAB <version>
 * The path is printed before the handle is created, so a half-finished
 * library that crashes in nbd_create still tells us where it came from.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>

#include <libnbd.h>

int
main (void)
{
  /* RTLD_NOLOAD only looks up the copy the loader already mapped for us;
   * asking the link map avoids dladdr() on a function pointer, which can
   * point into this executable's PLT rather than into the library.
   */
  void *self = dlopen ("libnbd.so.0", RTLD_LAZY | RTLD_NOLOAD);
  struct link_map *map = NULL;
  char path[PATH_MAX] = "?";

  if (self != NULL && dlinfo (self, RTLD_DI_LINKMAP, &map) == 0 && map != NULL
      && realpath (map->l_name, path) == NULL)
    snprintf (path, sizeof path, "%s", map->l_name);
  printf ("%s\t", path);
  fflush (stdout);

  struct nbd_handle *nbd = nbd_create ();
  if (nbd == NULL) {
    printf ("?\t?\n");
    fprintf (stderr, "nbd_create: %s\n", nbd_get_error ());
    return EXIT_FAILURE;
  }
  const char *name = nbd_get_package_name (nbd);
  const char *version = nbd_get_version (nbd);
  printf ("%s\t%s\n", name ? name : "?", version ? version : "?");
  nbd_close (nbd);
  return EXIT_SUCCESS;
}
