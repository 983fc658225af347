/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One TLS connection attempt (TLS required), printed as one line for comparison between libraries.
 *
 *   probe unix:PATH|tcp:HOST:PORT|inet:127.0.0.1:PORT CERTDIR|- TLS_HOSTNAME|-|EMPTY VERIFY
 *
 * inet: connects through nbd_aio_connect with a sockaddr (no host name known);
 * EMPTY sets the TLS host name to "".
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

static int
connect_sockaddr (struct nbd_handle *h, const char *port)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons (atoi (port)) };
  inet_pton (AF_INET, "127.0.0.1", &sin.sin_addr);
  if (nbd_aio_connect (h, (struct sockaddr *) &sin, sizeof sin) == -1)
    return -1;
  while (nbd_aio_is_connecting (h))
    if (nbd_poll (h, -1) == -1)
      return -1;
  return nbd_aio_is_ready (h) ? 0 : -1;
}

int
main (int argc, char **argv)
{
  if (argc != 5) {
    fprintf (stderr, "usage: probe ENDPOINT CERTDIR|- TLS_HOSTNAME|-|EMPTY VERIFY\n");
    return 2;
  }
  const char *endpoint = argv[1], *certs = argv[2], *tls_hostname = argv[3];
  struct nbd_handle *h = nbd_create ();
  if (h == NULL)
    return 2;
  nbd_set_tls (h, LIBNBD_TLS_REQUIRE);
  if (strcmp (certs, "-") != 0)
    nbd_set_tls_certificates (h, certs);
  if (strcmp (tls_hostname, "-") != 0)
    nbd_set_tls_hostname (h, strcmp (tls_hostname, "EMPTY") == 0 ? "" : tls_hostname);
  nbd_set_tls_verify_peer (h, atoi (argv[4]));

  int r;
  char *host = strdup (strchr (endpoint, ':') + 1);
  char *port = strrchr (host, ':');
  if (strncmp (endpoint, "unix:", 5) == 0)
    r = nbd_connect_unix (h, host);
  else if (port == NULL)
    return 2;
  else {
    *port++ = '\0';
    r = strncmp (endpoint, "inet:", 5) == 0 ? connect_sockaddr (h, port)
                                              : nbd_connect_tcp (h, host, port);
  }

  char *name = nbd_get_tls_hostname (h);
  if (r == -1)
    printf ("rc=-1 errno=%d error=%s tls_hostname=[%s]\n",
            nbd_get_errno (), nbd_get_error (), name ? name : "(null)");
  else
    printf ("rc=0 negotiated=%d size=%lld tls_hostname=[%s]\n", nbd_get_tls_negotiated (h),
            (long long) nbd_get_size (h), name ? name : "(null)");
  free (name);
  free (host);
  nbd_close (h);
  return 0;
}
