/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* nbd_bench: one NBD client benchmark binary, run unchanged on libnbd and on duplexnbd. */

/* Only the public libnbd API is used, so the same executable can be pointed at either
 * library with LD_LIBRARY_PATH and the comparison measures the library, not the program.
 *
 * Drivers:
 *   classic   single thread: nbd_aio_get_direction -> poll -> notify_read or notify_write
 *   poll      single thread: nbd_poll
 *   twothread this thread issues commands and handles POLLOUT + notify_write, a second
 *             thread handles POLLIN + notify_read
 *   sync      N threads each calling nbd_pread / nbd_pwrite on the same handle
 *
 * Data is verified cheaply in every run (see "Verification" below) so that a library which
 * completes commands without moving data cannot look fast.
 */

#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define SECTOR 4096u
#define WORDS_PER_SECTOR (SECTOR / 8u)
#define POISON UINT64_C(0x5eb1e55ed0c0ffee)

enum driver { DRV_CLASSIC, DRV_POLL, DRV_TWOTHREAD, DRV_SYNC };
enum op { OP_READ, OP_WRITE, OP_MIXED };
enum verify { V_PATTERN, V_ZERO, V_NONE };

static const char *driver_names[] = { "classic", "poll", "twothread", "sync" };
static const char *op_names[] = { "read", "write", "mixed" };
static const char *verify_names[] = { "pattern", "zero", "none" };

/* ---- options ---------------------------------------------------------------------------- */

static const char *opt_uri, *opt_socket, *opt_label = "-";
static enum driver opt_driver = DRV_CLASSIC;
static enum op opt_op = OP_READ;
static enum verify opt_verify = V_PATTERN;
static uint64_t opt_size = 65536;
static unsigned opt_inflight = 16, opt_threads = 1;
static double opt_seconds = 1.0;
static double opt_warmup;        /* untimed run of the same workload first */
static uint64_t opt_total_bytes; /* 0: run for opt_seconds */
static uint64_t opt_working_set; /* 0: 2 x (in flight) x size, clamped to 4..16 MiB */
static bool opt_header;
static bool opt_random;          /* offsets drawn at random over the working set */

/* ---- shared state ----------------------------------------------------------------------- */

static struct nbd_handle *h;
static int nbd_fd = -1;
static uint64_t seed_a, seed_b; /* seed_a: prefill, seed_b: writes during the timed run */
static uint64_t tmpl[WORDS_PER_SECTOR]; /* words 1..511 of every sector; word 0 is position */
static uint64_t nblocks;       /* working set / request size */
static struct timespec t_start;

/* Counters touched from completion callbacks (maybe another thread) and sync threads. */
static atomic_uint_fast64_t done_requests, done_bytes, issued_requests, issued_bytes;
static atomic_uint_fast64_t req_counter; /* picks offset and op for the next request */
static atomic_int verify_failed, io_failed;
static atomic_int_fast64_t first_write_off = -1, last_write_off = -1;

static void
die (const char *what)
{
  fprintf (stderr, "nbd_bench: %s: %s\n", what, nbd_get_error () ? nbd_get_error () : "?");
  exit (1);
}

static double
now_since (const struct timespec *t0)
{
  struct timespec t;
  clock_gettime (CLOCK_MONOTONIC, &t);
  return (double) (t.tv_sec - t0->tv_sec) + (double) (t.tv_nsec - t0->tv_nsec) / 1e9;
}

static double
cpu_seconds (void)
{
  struct rusage ru;
  getrusage (RUSAGE_SELF, &ru);
  return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6
    + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

static uint64_t
splitmix64 (uint64_t *s)
{
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* ---- verification ------------------------------------------------------------------------
 * Pattern servers (memory, qemu-nbd): every 4 KiB sector at disk position s holds
 * word 0 = s ^ seed and words 1..511 = tmpl[]. The working set is prefilled with seed_a before
 * the timed run and every write in the run uses seed_b, so a read may see either seed (reads
 * and writes overlap) but never anything else; both seeds are fresh per process, so stale data
 * from an earlier run fails. Writing a request only rewrites its word 0s (cheap), reading
 * checks three poisoned words (cheap), and after the run whole blocks are read back.
 * Zero servers (null): reads must overwrite the poisoned words with zeros.
 */

static void
pattern_fill (uint64_t *buf, uint64_t len, uint64_t pos, uint64_t seed, bool whole)
{
  for (uint64_t i = 0; i < len / SECTOR; i++) {
    uint64_t *w = buf + i * WORDS_PER_SECTOR;
    if (whole)
      memcpy (w, tmpl, SECTOR);
    w[0] = (pos + i * SECTOR) ^ seed;
  }
}

static void
poison_read_buf (uint64_t *buf, uint64_t len)
{
  uint64_t last = (len / SECTOR - 1) * WORDS_PER_SECTOR;
  buf[0] = POISON;
  buf[last] = POISON;
  buf[last + 1] = POISON;
}

static bool
word0_ok (uint64_t w, uint64_t pos, bool allow_a, bool allow_b)
{
  return (allow_a && w == (pos ^ seed_a)) || (allow_b && w == (pos ^ seed_b));
}

/* Sample check after an aio or sync read completes. */
static bool
check_read_sample (const uint64_t *buf, uint64_t len, uint64_t pos)
{
  uint64_t nsec = len / SECTOR, last = (nsec - 1) * WORDS_PER_SECTOR;
  switch (opt_verify) {
  case V_NONE: return true;
  case V_ZERO: return buf[0] == 0 && buf[last] == 0 && buf[last + 1] == 0;
  case V_PATTERN:
    return word0_ok (buf[0], pos, true, true)
      && word0_ok (buf[last], pos + (nsec - 1) * SECTOR, true, true)
      && buf[last + 1] == tmpl[1];
  }
  return false;
}

/* Full check of a block read back after the run. */
static bool
check_full (const uint64_t *buf, uint64_t len, uint64_t pos, bool allow_a, bool allow_b)
{
  for (uint64_t i = 0; i < len / SECTOR; i++) {
    const uint64_t *w = buf + i * WORDS_PER_SECTOR;
    if (opt_verify == V_ZERO) {
      for (unsigned j = 0; j < WORDS_PER_SECTOR; j++)
        if (w[j] != 0) return false;
      continue;
    }
    if (!word0_ok (w[0], pos + i * SECTOR, allow_a, allow_b)) return false;
    if (memcmp (w + 1, tmpl + 1, SECTOR - 8) != 0) return false;
  }
  return true;
}

static void
verify_fail (const char *what, uint64_t off)
{
  if (!atomic_exchange (&verify_failed, 1))
    fprintf (stderr, "nbd_bench: verification failed: %s at offset %" PRIu64 "\n", what, off);
}

/* ---- request selection -------------------------------------------------------------------- */

/* Requests walk the working set sequentially (or, with --random, land on a block picked by
 * hashing the request number). Mixed alternates read and write so the split is exactly 50/50
 * whatever the completion order, and writes run half the working set ahead of reads, so reads
 * keep coming back to data written earlier in the same run. */
static void
next_request (uint64_t *off, bool *is_read)
{
  uint64_t k = atomic_fetch_add (&req_counter, 1);
  if (opt_random) {
    /* A stateless hash of k: any thread may draw, and no two runs share a sequence. */
    uint64_t s = seed_b ^ (k * UINT64_C(0x9e3779b97f4a7c15));
    *is_read = opt_op == OP_READ || (opt_op == OP_MIXED && (k & 1) == 0);
    *off = (splitmix64 (&s) % nblocks) * opt_size;
  }
  else if (opt_op == OP_MIXED) {
    *is_read = (k & 1) == 0;
    *off = ((k / 2 + (*is_read ? 0 : nblocks / 2)) % nblocks) * opt_size;
  }
  else {
    *is_read = opt_op == OP_READ;
    *off = (k % nblocks) * opt_size;
  }
}

static void
note_write_done (uint64_t off)
{
  int_fast64_t expect = -1;
  atomic_compare_exchange_strong (&first_write_off, &expect, (int_fast64_t) off);
  atomic_store (&last_write_off, (int_fast64_t) off);
}

/* Decide, before issuing, whether the run is over. */
static bool
keep_issuing (void)
{
  /* The first request of every slot or thread always goes out: on a loaded machine a thread
   * may first run after the deadline, and a run with no requests measures nothing. */
  unsigned depth = opt_driver == DRV_SYNC ? opt_threads : opt_inflight;
  if (atomic_load (&issued_requests) < depth)
    return true;
  if (opt_total_bytes)
    return atomic_load (&issued_bytes) < opt_total_bytes;
  return now_since (&t_start) < opt_seconds;
}

/* ---- aio drivers -------------------------------------------------------------------------- */

struct slot {
  uint64_t *wbuf, *rbuf;
  uint64_t off;
  bool is_read;
  struct slot *next_free;
};

static struct slot *slots;
static struct slot *free_list;
static unsigned inflight_now;
static bool threaded; /* twothread: completions come from the reader thread */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_freed = PTHREAD_COND_INITIALIZER;

static int
on_complete (void *user_data, int *error)
{
  struct slot *s = user_data;

  if (*error) {
    if (!atomic_exchange (&io_failed, 1))
      fprintf (stderr, "nbd_bench: %s at %" PRIu64 " failed: %s\n",
               s->is_read ? "read" : "write", s->off, strerror (*error));
  }
  else {
    if (s->is_read) {
      if (!check_read_sample (s->rbuf, opt_size, s->off))
        verify_fail ("aio read sample", s->off);
    }
    else
      note_write_done (s->off);
    atomic_fetch_add (&done_requests, 1);
    atomic_fetch_add (&done_bytes, opt_size);
  }

  /* Never call back into the handle from here: libnbd holds its lock while calling us.
   * Just give the slot back; the issuing thread reissues it. */
  pthread_mutex_lock (&lock);
  s->next_free = free_list;
  free_list = s;
  inflight_now--;
  if (threaded)
    pthread_cond_signal (&slot_freed);
  pthread_mutex_unlock (&lock);
  return 1; /* retire the command automatically */
}

static void
issue (struct slot *s)
{
  nbd_completion_callback cb = { .callback = on_complete, .user_data = s };
  int64_t r;

  next_request (&s->off, &s->is_read);
  atomic_fetch_add (&issued_requests, 1);
  atomic_fetch_add (&issued_bytes, opt_size);
  if (s->is_read) {
    if (opt_verify != V_NONE) poison_read_buf (s->rbuf, opt_size);
    r = nbd_aio_pread (h, s->rbuf, opt_size, s->off, cb, 0);
  }
  else {
    if (opt_verify == V_PATTERN) pattern_fill (s->wbuf, opt_size, s->off, seed_b, false);
    r = nbd_aio_pwrite (h, s->wbuf, opt_size, s->off, cb, 0);
  }
  if (r == -1) die (s->is_read ? "nbd_aio_pread" : "nbd_aio_pwrite");
}

/* Issue into every free slot, taking the lock only to pop (callbacks may push concurrently). */
static void
issue_free_slots (bool *issuing)
{
  for (;;) {
    if (*issuing && !keep_issuing ()) *issuing = false;
    if (!*issuing) return;
    pthread_mutex_lock (&lock);
    struct slot *s = free_list;
    if (s) {
      free_list = s->next_free;
      inflight_now++;
    }
    pthread_mutex_unlock (&lock);
    if (!s) return;
    issue (s);
  }
}

static unsigned
get_inflight (void)
{
  pthread_mutex_lock (&lock);
  unsigned n = inflight_now;
  pthread_mutex_unlock (&lock);
  return n;
}

/* A failed notify is harmless when another thread already did the work (libnbd reports
 * EINVAL from notify_write when nothing is being sent); it is fatal once the handle died. */
static void
check_notify (int r, const char *what)
{
  if (r == -1 && (nbd_aio_is_dead (h) || nbd_aio_is_closed (h)))
    die (what);
}

static void
run_classic (bool use_nbd_poll)
{
  bool issuing = true;

  for (;;) {
    issue_free_slots (&issuing);
    if (get_inflight () == 0) break;

    if (use_nbd_poll) {
      if (nbd_poll (h, -1) == -1) die ("nbd_poll");
      continue;
    }

    unsigned dir = nbd_aio_get_direction (h);
    struct pollfd pfd = { .fd = nbd_fd, .events = 0 };
    if (dir & LIBNBD_AIO_DIRECTION_READ) pfd.events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) pfd.events |= POLLOUT;
    if (pfd.events == 0) die ("nbd_aio_get_direction returned 0 with commands in flight");
    if (poll (&pfd, 1, -1) == -1) {
      if (errno == EINTR) continue;
      perror ("poll");
      exit (1);
    }
    /* As libnbd documents: when both are ready, read first (the reply belongs to an older
     * command); the next iteration takes care of writing. */
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      if (nbd_aio_notify_read (h) == -1) die ("nbd_aio_notify_read");
    }
    else if (pfd.revents & POLLOUT) {
      if (nbd_aio_notify_write (h) == -1) die ("nbd_aio_notify_write");
    }
  }
}

static atomic_bool reader_stop;
static int stop_pipe[2] = { -1, -1 }; /* lets the reader leave poll() as soon as the run ends */

static void *
reader_thread (void *arg)
{
  (void) arg;
  while (!atomic_load (&reader_stop)) {
    struct pollfd pfd[2] = { { .fd = nbd_fd, .events = POLLIN },
                             { .fd = stop_pipe[0], .events = POLLIN } };
    int r = poll (pfd, 2, -1);
    if (r == -1 && errno != EINTR) { perror ("poll"); exit (1); }
    if (r > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
      check_notify (nbd_aio_notify_read (h), "nbd_aio_notify_read");
  }
  return NULL;
}

static void
run_twothread (void)
{
  pthread_t reader;
  bool issuing = true;

  threaded = true;
  atomic_store (&reader_stop, false);
  if (pipe (stop_pipe) == -1) { perror ("pipe"); exit (1); }
  if (pthread_create (&reader, NULL, reader_thread, NULL) != 0) {
    perror ("pthread_create");
    exit (1);
  }

  for (;;) {
    issue_free_slots (&issuing);

    /* Commands are queued by this thread, so WRITE can appear in the direction without any
     * socket event; when it is absent wait for a freed slot but look again after 1 ms. */
    unsigned dir = nbd_aio_get_direction (h);
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) {
      struct pollfd pfd = { .fd = nbd_fd, .events = POLLOUT };
      int r = poll (&pfd, 1, 1);
      if (r == -1 && errno != EINTR) { perror ("poll"); exit (1); }
      if (r > 0 && (pfd.revents & POLLOUT))
        check_notify (nbd_aio_notify_write (h), "nbd_aio_notify_write");
      else if (r > 0 && (pfd.revents & (POLLHUP | POLLERR)))
        die ("socket closed while writing");
      if (!issuing && get_inflight () == 0) break;
      continue;
    }

    pthread_mutex_lock (&lock);
    if (!issuing && inflight_now == 0) {
      pthread_mutex_unlock (&lock);
      break;
    }
    if (!issuing || free_list == NULL) {
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_nsec += 1000000;
      if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
      pthread_cond_timedwait (&slot_freed, &lock, &ts);
    }
    pthread_mutex_unlock (&lock);
  }

  atomic_store (&reader_stop, true);
  if (write (stop_pipe[1], "x", 1) != 1) { perror ("write"); exit (1); }
  pthread_join (reader, NULL);
  close (stop_pipe[0]);
  close (stop_pipe[1]);
}

/* ---- sync driver -------------------------------------------------------------------------- */

/* One write and one read buffer per sync thread, allocated and faulted in once, so the
 * timed run (after a warm-up, a second set of threads) does not pay for first touches. */
static uint64_t **sync_wbufs, **sync_rbufs;

static void *
sync_thread (void *arg)
{
  unsigned idx = (unsigned) (uintptr_t) arg;
  uint64_t *wbuf = sync_wbufs[idx], *rbuf = sync_rbufs[idx];

  for (;;) {
    if (!keep_issuing ()) break;
    uint64_t off;
    bool is_read;
    next_request (&off, &is_read);
    atomic_fetch_add (&issued_requests, 1);
    atomic_fetch_add (&issued_bytes, opt_size);
    if (is_read) {
      if (opt_verify != V_NONE) poison_read_buf (rbuf, opt_size);
      if (nbd_pread (h, rbuf, opt_size, off, 0) == -1) die ("nbd_pread");
      if (!check_read_sample (rbuf, opt_size, off)) verify_fail ("sync read sample", off);
    }
    else {
      if (opt_verify == V_PATTERN) pattern_fill (wbuf, opt_size, off, seed_b, false);
      if (nbd_pwrite (h, wbuf, opt_size, off, 0) == -1) die ("nbd_pwrite");
      note_write_done (off);
    }
    atomic_fetch_add (&done_requests, 1);
    atomic_fetch_add (&done_bytes, opt_size);
  }
  return NULL;
}

static void
run_sync (void)
{
  pthread_t *t = calloc (opt_threads, sizeof *t);
  if (!t) { perror ("calloc"); exit (1); }
  for (unsigned i = 0; i < opt_threads; i++)
    if (pthread_create (&t[i], NULL, sync_thread, (void *) (uintptr_t) i) != 0) {
      perror ("pthread_create");
      exit (1);
    }
  for (unsigned i = 0; i < opt_threads; i++)
    pthread_join (t[i], NULL);
  free (t);
}

static void
run_driver (void)
{
  switch (opt_driver) {
  case DRV_CLASSIC: run_classic (false); break;
  case DRV_POLL: run_classic (true); break;
  case DRV_TWOTHREAD: run_twothread (); break;
  case DRV_SYNC: run_sync (); break;
  }
}

/* ---- setup, final check, report ------------------------------------------------------------ */

static void
prefill (void)
{
  /* 2 MiB writes: large enough to be quick, below every server's maximum request size. */
  const uint64_t chunk = 2u << 20;
  uint64_t total = nblocks * opt_size;
  uint64_t *buf;
  if (posix_memalign ((void **) &buf, 4096, chunk)) { perror ("posix_memalign"); exit (1); }
  for (uint64_t pos = 0; pos < total; pos += chunk) {
    uint64_t len = total - pos < chunk ? total - pos : chunk;
    pattern_fill (buf, len, pos, seed_a, true);
    if (nbd_pwrite (h, buf, len, pos, 0) == -1) die ("prefill nbd_pwrite");
  }
  free (buf);
}

static void
final_check (void)
{
  uint64_t *buf;
  if (opt_verify == V_NONE) return;
  if (posix_memalign ((void **) &buf, 4096, opt_size)) { perror ("posix_memalign"); exit (1); }

  /* A block the run read from (or, for write-only on a pattern server, any block: the first
   * and last written blocks are checked below). */
  if (opt_op != OP_WRITE || opt_verify == V_ZERO) {
    uint64_t s = seed_b ^ UINT64_C(0x1234);
    uint64_t off = (splitmix64 (&s) % nblocks) * opt_size;
    memset (buf, 0xa5, opt_size);
    if (nbd_pread (h, buf, opt_size, off, 0) == -1) die ("final nbd_pread");
    if (!check_full (buf, opt_size, off, true, true)) verify_fail ("final read-back", off);
  }

  /* Blocks whose last completed write was in this run must hold seed_b everywhere: proves
   * the writes really reached the server. */
  if (opt_verify == V_PATTERN && opt_op != OP_READ) {
    int_fast64_t offs[2] = { atomic_load (&first_write_off), atomic_load (&last_write_off) };
    for (int i = 0; i < 2; i++) {
      /* Only possible when the run issued no write at all (mixed, one request on a machine
       * so busy that the deadline passed before the second); completions are counted above. */
      if (offs[i] < 0) break;
      memset (buf, 0xa5, opt_size);
      if (nbd_pread (h, buf, opt_size, (uint64_t) offs[i], 0) == -1) die ("final nbd_pread");
      if (!check_full (buf, opt_size, (uint64_t) offs[i], false, true))
        verify_fail ("written block read-back", (uint64_t) offs[i]);
    }
  }
  free (buf);
}

static const char *
loaded_library_file (void)
{
  Dl_info info;
  void *sym = (void *) nbd_create;
  if (dladdr (sym, &info) && info.dli_fname) return info.dli_fname;
  return "?";
}

static void
usage (FILE *f)
{
  fprintf (f,
"usage: nbd_bench (-u URI | -s UNIX_SOCKET) [options]\n"
"  -d, --driver classic|poll|twothread|sync   (default classic)\n"
"  -o, --op read|write|mixed                  (default read)\n"
"  -b, --size BYTES        request size, multiple of 4096, suffix k/m ok (default 64k)\n"
"  -q, --inflight N        requests in flight for aio drivers (default 16)\n"
"  -t, --threads N         threads for the sync driver (default 1)\n"
"  -T, --seconds S         run duration (default 1.0)\n"
"  -B, --bytes N           run until N bytes were issued instead of for a duration\n"
"  -W, --warmup S          first run the same workload for S seconds, untimed (default 0):\n"
"                          server threads, socket buffers and caches settle before timing\n"
"  -r, --random            random offsets over the working set (default sequential)\n"
"  -w, --working-set N     bytes of the export used (default: 2 x in-flight x size,\n"
"                          at least 4m, at most 16m; it is prefilled before each run)\n"
"  -V, --verify pattern|zero|none  pattern: server keeps data (memory, qemu-nbd);\n"
"                          zero: server returns zeros (null)            (default pattern)\n"
"  -l, --label TEXT        free text copied to the output (e.g. server name)\n"
"  -H, --header            print the TSV header line first\n"
"      --print-header      print only the TSV header line and exit\n"
"Output: one TSV line per run; exit 3 if verification failed, 1 on NBD errors.\n");
}

static uint64_t
parse_size (const char *s)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 10);
  if (errno || end == s) { fprintf (stderr, "nbd_bench: bad size '%s'\n", s); exit (2); }
  switch (*end) {
  case 'k': case 'K': v <<= 10; end++; break;
  case 'm': case 'M': v <<= 20; end++; break;
  case 'g': case 'G': v <<= 30; end++; break;
  }
  if (*end) { fprintf (stderr, "nbd_bench: bad size '%s'\n", s); exit (2); }
  return v;
}

static int
lookup (const char *s, const char **names, int n, const char *what)
{
  for (int i = 0; i < n; i++)
    if (strcmp (s, names[i]) == 0) return i;
  fprintf (stderr, "nbd_bench: unknown %s '%s'\n", what, s);
  exit (2);
}

static void
print_header (void)
{
  printf ("package\tversion\tlibfile\tlabel\tdriver\top\tsize\tinflight\tthreads\tseconds"
          "\tmib_s\treq_s\tcpu_s\tcpu_s_per_gib\tcpu_us_per_req\trequests\tbytes\tverify\n");
}

int
main (int argc, char *argv[])
{
  static const struct option longopts[] = {
    { "uri", required_argument, NULL, 'u' },
    { "socket", required_argument, NULL, 's' },
    { "driver", required_argument, NULL, 'd' },
    { "op", required_argument, NULL, 'o' },
    { "size", required_argument, NULL, 'b' },
    { "inflight", required_argument, NULL, 'q' },
    { "threads", required_argument, NULL, 't' },
    { "seconds", required_argument, NULL, 'T' },
    { "bytes", required_argument, NULL, 'B' },
    { "warmup", required_argument, NULL, 'W' },
    { "working-set", required_argument, NULL, 'w' },
    { "verify", required_argument, NULL, 'V' },
    { "label", required_argument, NULL, 'l' },
    { "random", no_argument, NULL, 'r' },
    { "header", no_argument, NULL, 'H' },
    { "print-header", no_argument, NULL, 'P' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long (argc, argv, "u:s:d:o:b:q:t:T:B:W:w:V:l:Hrh", longopts, NULL)) != -1) {
    switch (c) {
    case 'u': opt_uri = optarg; break;
    case 's': opt_socket = optarg; break;
    case 'd': opt_driver = lookup (optarg, driver_names, 4, "driver"); break;
    case 'o': opt_op = lookup (optarg, op_names, 3, "op"); break;
    case 'b': opt_size = parse_size (optarg); break;
    case 'q': opt_inflight = (unsigned) parse_size (optarg); break;
    case 't': opt_threads = (unsigned) parse_size (optarg); break;
    case 'T': opt_seconds = atof (optarg); break;
    case 'W': opt_warmup = atof (optarg); break;
    case 'B': opt_total_bytes = parse_size (optarg); break;
    case 'w': opt_working_set = parse_size (optarg); break;
    case 'V': opt_verify = lookup (optarg, verify_names, 3, "verify mode"); break;
    case 'l': opt_label = optarg; break;
    case 'H': opt_header = true; break;
    case 'r': opt_random = true; break;
    case 'P': print_header (); return 0;
    case 'h': usage (stdout); return 0;
    default: usage (stderr); return 2;
    }
  }
  if ((!opt_uri) == (!opt_socket) || optind != argc || opt_size == 0 || opt_size % SECTOR
      || opt_inflight == 0 || opt_threads == 0 || (opt_seconds <= 0 && !opt_total_bytes)) {
    usage (stderr);
    return 2;
  }

  /* Fresh seeds per process so that data left by an earlier run never verifies. */
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  uint64_t s = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 20) ^ ((uint64_t) getpid () << 40);
  seed_a = splitmix64 (&s) & ~UINT64_C(0xfff); /* low bits clear: keeps s ^ seed distinct */
  seed_b = splitmix64 (&s) & ~UINT64_C(0xfff);
  if (seed_a == seed_b) seed_b ^= UINT64_C(1) << 40;
  tmpl[0] = 0;
  for (unsigned i = 1; i < WORDS_PER_SECTOR; i++) tmpl[i] = splitmix64 (&s);

  h = nbd_create ();
  if (!h) die ("nbd_create");
  if (opt_uri ? nbd_connect_uri (h, opt_uri) : nbd_connect_unix (h, opt_socket)) die ("connect");
  nbd_fd = nbd_aio_get_fd (h);
  if (nbd_fd == -1) die ("nbd_aio_get_fd");

  int64_t export_size = nbd_get_size (h);
  if (export_size < 0) die ("nbd_get_size");
  /* Small by default because pattern servers get the whole working set prefilled before
   * every run; twice the bytes in flight keeps concurrent requests on different blocks. */
  uint64_t ws = opt_working_set;
  if (ws == 0) {
    uint64_t depth = opt_driver == DRV_SYNC ? opt_threads : opt_inflight;
    ws = 2 * depth * opt_size;
    if (ws < (4u << 20)) ws = 4u << 20;
    if (ws > (16u << 20)) ws = 16u << 20;
  }
  if (ws > (uint64_t) export_size) ws = (uint64_t) export_size;
  nblocks = ws / opt_size;
  if (nblocks == 0) { fprintf (stderr, "nbd_bench: export smaller than one request\n"); return 2; }

  if (opt_verify == V_PATTERN && opt_op != OP_WRITE) prefill ();

  /* Slots for the aio drivers: one write and one read buffer each, so an in-flight write's
   * data is never disturbed and a read buffer never needs the template restored. */
  unsigned nslots = opt_driver == DRV_SYNC ? 0 : opt_inflight;
  slots = calloc (nslots ? nslots : 1, sizeof *slots);
  if (!slots) { perror ("calloc"); return 1; }
  for (unsigned i = 0; i < nslots; i++) {
    if (posix_memalign ((void **) &slots[i].wbuf, 4096, opt_size)
        || posix_memalign ((void **) &slots[i].rbuf, 4096, opt_size)) {
      perror ("posix_memalign");
      return 1;
    }
    pattern_fill (slots[i].wbuf, opt_size, 0, seed_b, true);
    memset (slots[i].rbuf, 0, opt_size); /* fault the pages in before timing */
    slots[i].next_free = free_list;
    free_list = &slots[i];
  }

  unsigned threads_used = opt_driver == DRV_SYNC ? opt_threads : opt_driver == DRV_TWOTHREAD ? 2 : 1;
  unsigned inflight_used = opt_driver == DRV_SYNC ? opt_threads : opt_inflight;

  if (opt_driver == DRV_SYNC) {
    sync_wbufs = calloc (opt_threads, sizeof *sync_wbufs);
    sync_rbufs = calloc (opt_threads, sizeof *sync_rbufs);
    if (!sync_wbufs || !sync_rbufs) { perror ("calloc"); return 1; }
    for (unsigned i = 0; i < opt_threads; i++) {
      if (posix_memalign ((void **) &sync_wbufs[i], 4096, opt_size)
          || posix_memalign ((void **) &sync_rbufs[i], 4096, opt_size)) {
        perror ("posix_memalign");
        return 1;
      }
      pattern_fill (sync_wbufs[i], opt_size, 0, seed_b, true);
      memset (sync_rbufs[i], 0, opt_size);
    }
  }

  if (opt_warmup > 0) {
    /* Same workload, same verification; only its counters are thrown away. */
    uint64_t total = opt_total_bytes;
    double secs = opt_seconds;
    opt_total_bytes = 0;
    opt_seconds = opt_warmup;
    clock_gettime (CLOCK_MONOTONIC, &t_start);
    run_driver ();
    if (atomic_load (&io_failed)) return 1;
    opt_total_bytes = total;
    opt_seconds = secs;
    atomic_store (&done_requests, 0);
    atomic_store (&done_bytes, 0);
    atomic_store (&issued_requests, 0);
    atomic_store (&issued_bytes, 0);
    atomic_store (&first_write_off, -1);
    atomic_store (&last_write_off, -1);
  }

  double cpu0 = cpu_seconds ();
  clock_gettime (CLOCK_MONOTONIC, &t_start);
  run_driver ();
  double secs = now_since (&t_start);
  double cpu = cpu_seconds () - cpu0;

  if (atomic_load (&io_failed)) return 1;
  if (atomic_load (&done_requests) != atomic_load (&issued_requests)) {
    fprintf (stderr, "nbd_bench: %" PRIuFAST64 " requests issued but %" PRIuFAST64 " completed\n",
             atomic_load (&issued_requests), atomic_load (&done_requests));
    atomic_store (&verify_failed, 1);
  }
  final_check ();

  uint64_t reqs = atomic_load (&done_requests), bytes = atomic_load (&done_bytes);
  if (opt_header) print_header ();
  printf ("%s\t%s\t%s\t%s\t%s\t%s\t%" PRIu64 "\t%u\t%u\t%.4f\t%.1f\t%.0f\t%.4f\t%.4f\t%.3f\t%" PRIu64
          "\t%" PRIu64 "\t%s\n",
          nbd_get_package_name (h), nbd_get_version (h), loaded_library_file (), opt_label,
          driver_names[opt_driver], op_names[opt_op], opt_size, inflight_used, threads_used,
          secs, (double) bytes / 1048576.0 / secs, (double) reqs / secs, cpu,
          bytes ? cpu / ((double) bytes / 1073741824.0) : 0.0,
          reqs ? cpu * 1e6 / (double) reqs : 0.0, reqs, bytes,
          atomic_load (&verify_failed) ? "FAIL" : verify_names[opt_verify]);
  fflush (stdout);

  if (nbd_shutdown (h, 0) == -1) die ("nbd_shutdown");
  nbd_close (h);
  return atomic_load (&verify_failed) ? 3 : 0;
}
