/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* sockpair_ceiling: how fast a bare AF_UNIX socketpair moves data one way and both ways at once. */

/* The NBD numbers only mean something next to this ceiling: on a 2-core machine the socket
 * copies, not the protocol, bound what any client can reach. Each direction gets its own
 * writer and reader thread, as a full-duplex client and its server would use. */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static size_t chunk = 256 * 1024;
static double seconds = 0.5;
static atomic_bool stop;

struct dir {
  int wfd, rfd;
  uint64_t bytes_read;
};

static void *
writer (void *arg)
{
  struct dir *d = arg;
  char *buf = malloc (chunk);
  if (!buf) { perror ("malloc"); exit (1); }
  memset (buf, 0x5a, chunk);
  while (!atomic_load (&stop)) {
    ssize_t r = write (d->wfd, buf, chunk);
    if (r == -1 && errno != EINTR) { perror ("write"); exit (1); }
  }
  /* Closing our side lets the reader see end of stream and finish. */
  shutdown (d->wfd, SHUT_WR);
  free (buf);
  return NULL;
}

static void *
reader (void *arg)
{
  struct dir *d = arg;
  char *buf = malloc (chunk);
  if (!buf) { perror ("malloc"); exit (1); }
  for (;;) {
    ssize_t r = read (d->rfd, buf, chunk);
    if (r == 0) break;
    if (r == -1) {
      if (errno == EINTR) continue;
      perror ("read");
      exit (1);
    }
    if (!atomic_load (&stop)) d->bytes_read += (uint64_t) r;
  }
  free (buf);
  return NULL;
}

static double
now (void)
{
  struct timespec t;
  clock_gettime (CLOCK_MONOTONIC, &t);
  return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

static double
cpu (void)
{
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6
    + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

static void
run (bool both)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == -1) { perror ("socketpair"); exit (1); }
  struct dir ab = { .wfd = sv[0], .rfd = sv[1] }, ba = { .wfd = sv[1], .rfd = sv[0] };
  pthread_t t[4];
  int n = 0;

  atomic_store (&stop, false);
  double t0 = now (), c0 = cpu ();
  pthread_create (&t[n++], NULL, reader, &ab);
  pthread_create (&t[n++], NULL, writer, &ab);
  if (both) {
    pthread_create (&t[n++], NULL, reader, &ba);
    pthread_create (&t[n++], NULL, writer, &ba);
  }
  struct timespec ts = { (time_t) seconds, (long) ((seconds - (double) (time_t) seconds) * 1e9) };
  nanosleep (&ts, NULL);
  atomic_store (&stop, true);
  double secs = now () - t0, c = cpu () - c0;
  for (int i = 0; i < n; i++) pthread_join (t[i], NULL);
  close (sv[0]);
  close (sv[1]);

  uint64_t bytes = ab.bytes_read + ba.bytes_read;
  printf ("socketpair\t%s\t%zu\t%.3f\t%.1f\t%.3f\n", both ? "both-ways" : "one-way", chunk, secs,
          (double) bytes / 1048576.0 / secs, c);
}

int
main (int argc, char *argv[])
{
  int c;
  while ((c = getopt (argc, argv, "b:T:")) != -1) {
    switch (c) {
    case 'b': chunk = (size_t) strtoull (optarg, NULL, 10); break;
    case 'T': seconds = atof (optarg); break;
    default:
      fprintf (stderr, "usage: sockpair_ceiling [-b CHUNK_BYTES] [-T SECONDS]\n");
      return 2;
    }
  }
  if (chunk == 0 || seconds <= 0) return 2;
  printf ("what\tmode\tchunk\tseconds\tmib_s\tcpu_s\n");
  run (false);
  run (true);
  return 0;
}
