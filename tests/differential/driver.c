// SPDX-License-Identifier: LGPL-2.1-or-later
// Differential driver: one client run against a scripted server, printed as a canonical outcome record.
//
//   nbd_diff_driver FD SETUP ACTIONS
//
// FD is a connected socket whose other end plays a server (a hostile case, or the
// differential fuzzer's replay); SETUP and ACTIONS are the small languages read below.
// The same binary runs on libnbd and on duplexnbd (LD_LIBRARY_PATH picks libnbd.so.0),
// so it uses only calls that libnbd 1.22 has, and looks up those newer than Debian 12's
// 1.14 at run time. Every line printed is part of the outcome the runner compares, so
// nothing here prints addresses, timings or the library's message texts (wording may
// differ; only whether a message is set is recorded).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#define MAX_CMDS 64

static struct nbd_handle *h;

// One tracked closure (chunk, extent, list or completion): its calls are printed as they
// happen, its frees are counted and printed after nbd_close.
struct tracked {
  char name[32];
  int frees;
};
static struct tracked closures[4 * MAX_CMDS];
static int n_closures;

// One aio command in flight: its cookie and buffer (hashed when it completes).
struct command {
  int64_t cookie;
  unsigned char *buf;  // NULL: not a read
  size_t len;
  char name[32];
  bool retired;
};
static struct command cmds[MAX_CMDS];
static int n_cmds;

static struct tracked *track(const char *fmt, int i) {
  if (n_closures == (int)(sizeof closures / sizeof closures[0])) {
    fprintf(stderr, "driver: too many closures\n");
    exit(2);
  }
  struct tracked *t = &closures[n_closures++];
  snprintf(t->name, sizeof t->name, fmt, i);
  t->frees = 0;
  return t;
}

static void free_cb(void *ud) { ((struct tracked *)ud)->frees++; }

static const char *errname(int e) {
  if (e == 0) return "0";
  const char *n = strerrorname_np(e);
  return n ? n : "?";
}

static uint64_t fnv(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h64 = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h64 = (h64 ^ b[i]) * 0x100000001b3ull;
  return h64;
}

// The result of a call: its return value and, when it failed, the errno and whether a
// message is set.
static void result(const char *what, int64_t rc) {
  if (rc == -1)
    printf("%s rc=-1 errno=%s msg=%d\n", what, errname(nbd_get_errno()), nbd_get_error() != NULL);
  else
    printf("%s rc=%" PRId64 "\n", what, rc);
}

static void state(void) {
  printf("state ready=%d dead=%d closed=%d in_flight=%d\n", nbd_aio_is_ready(h),
         nbd_aio_is_dead(h), nbd_aio_is_closed(h), nbd_aio_in_flight(h));
}

static int completion_cb(void *ud, int *error) {
  printf("  callback %s error=%s\n", ((struct tracked *)ud)->name, errname(*error));
  return 0;  // retired by nbd_aio_command_completed
}

static int chunk_cb(void *ud, const void *subbuf, size_t count, uint64_t offset,
                    unsigned status, int *error) {
  printf("  callback %s offset=%" PRIu64 " count=%zu status=%u error=%s fnv=%016" PRIx64 "\n",
         ((struct tracked *)ud)->name, offset, count, status, errname(*error),
         subbuf && count ? fnv(subbuf, count) : 0);
  return 0;
}

static int extent_cb(void *ud, const char *context, uint64_t offset, uint32_t *entries,
                     size_t n, int *error) {
  printf("  callback %s context=%s offset=%" PRIu64 " n=%zu error=%s", ((struct tracked *)ud)->name,
         context, offset, n, errname(*error));
  for (size_t i = 0; i < n && i < 16; i++) printf(" %" PRIu32, entries[i]);
  printf("\n");
  return 0;
}

static int list_cb(void *ud, const char *name, const char *description) {
  printf("  callback %s name=%s description=%s\n", ((struct tracked *)ud)->name, name,
         description);
  return 0;
}

static nbd_completion_callback completion(const char *fmt, int i) {
  return (nbd_completion_callback){completion_cb, track(fmt, i), free_cb};
}

static struct command *add_cmd(const char *fmt, int i, int64_t cookie, unsigned char *buf,
                               size_t len) {
  char name[32];
  snprintf(name, sizeof name, fmt, i);
  result(name, cookie);
  if (cookie == -1) {
    if (buf) printf("  data %s fnv=%016" PRIx64 "\n", name, fnv(buf, len));
    free(buf);
    return NULL;
  }
  if (n_cmds == MAX_CMDS) {
    fprintf(stderr, "driver: too many commands\n");
    exit(2);
  }
  struct command *c = &cmds[n_cmds++];
  c->cookie = cookie;
  c->buf = buf;
  c->len = len;
  c->retired = false;
  memcpy(c->name, name, sizeof name);
  return c;
}

// Drives the handle until every aio command has completed (as the hostile tests' wait_for
// does), printing each one's result in issue order.
static void wait_all(void) {
  for (int i = 0; i < n_cmds; i++) {
    struct command *c = &cmds[i];
    if (c->retired) continue;
    // "never" after 100 polls in a row that timed out or failed (10 s with nothing
    // happening, or a poll that cannot work), not after 10 s of wall time: on a VM that
    // stops for a while the clock jumps, and a command would be called "never" while the
    // server's bytes sat unread.
    int idle_polls = 0;
    int r;
    for (;;) {
      r = nbd_aio_command_completed(h, (uint64_t)c->cookie);
      if (r != 0) break;
      if (idle_polls >= 100) break;
      if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
        r = nbd_aio_command_completed(h, (uint64_t)c->cookie);
        break;
      }
      idle_polls = nbd_poll(h, 100) == 1 ? 0 : idle_polls + 1;
    }
    char what[48];
    snprintf(what, sizeof what, "completed %s", c->name);
    if (r == 0)
      printf("%s never\n", what);
    else
      result(what, r);
    if (c->buf && r != 0) printf("  data %s fnv=%016" PRIx64 "\n", c->name, fnv(c->buf, c->len));
    c->retired = true;
  }
}

static unsigned char *alloc(size_t n, int fill) {
  unsigned char *b = malloc(n ? n : 1);
  if (!b) {
    perror("malloc");
    exit(2);
  }
  memset(b, fill, n);
  return b;
}

static void do_action(char *act, int fd) {
  char *argv[8] = {0};
  int argc = 0;
  for (char *tok = strtok(act, " "); tok && argc < 8; tok = strtok(NULL, " ")) argv[argc++] = tok;
  if (argc == 0) return;
  const char *a = argv[0];
  uint64_t x = argc > 1 ? strtoull(argv[1], NULL, 0) : 0;
  uint64_t y = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
  uint64_t z = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;

  if (!strcmp(a, "connect")) {
    int r = nbd_connect_socket(h, fd);
    result("connect", r);
    if (r == 0) {
      int (*ext)(struct nbd_handle *) = (int (*)(struct nbd_handle *))dlsym(RTLD_DEFAULT,
                                                              "nbd_get_extended_headers_negotiated");
      printf("  negotiated structured=%d extended=%d size=%" PRId64 "\n",
             nbd_get_structured_replies_negotiated(h), ext ? ext(h) : -1,
             nbd_aio_is_ready(h) ? nbd_get_size(h) : -2);
    }
  } else if (!strcmp(a, "pread")) {  // pread COUNT OFFSET
    unsigned char *b = alloc(x, 0xa5);
    int r = nbd_pread(h, b, x, y, 0);
    result("pread", r);
    printf("  data fnv=%016" PRIx64 "\n", fnv(b, x));
    free(b);
  } else if (!strcmp(a, "pread_structured")) {  // pread_structured COUNT OFFSET
    unsigned char *b = alloc(x, 0xa5);
    nbd_chunk_callback cb = {chunk_cb, track("chunk", 0), free_cb};
    int r = nbd_pread_structured(h, b, x, y, cb, 0);
    result("pread_structured", r);
    printf("  data fnv=%016" PRIx64 "\n", fnv(b, x));
    free(b);
  } else if (!strcmp(a, "pwrite")) {  // pwrite COUNT OFFSET
    unsigned char *b = alloc(x, 0x5a);
    result("pwrite", nbd_pwrite(h, b, x, y, 0));
    free(b);
  } else if (!strcmp(a, "block_status")) {  // block_status COUNT OFFSET [FLAGS]
    nbd_extent_callback cb = {extent_cb, track("extent", 0), free_cb};
    result("block_status", nbd_block_status(h, x, y, cb, (uint32_t)z));
  } else if (!strcmp(a, "aio_pread")) {  // aio_pread N COUNT [OFFSET]: N reads, one after the other
    for (int i = 0; i < (int)x; i++) {
      unsigned char *b = alloc(y, 0xa5);
      add_cmd("aio_pread[%d]", i,
              nbd_aio_pread(h, b, y, z + (uint64_t)i * y, completion("done[%d]", i), 0), b, y);
    }
  } else if (!strcmp(a, "aio_pread_structured")) {  // aio_pread_structured N COUNT [OFFSET]
    for (int i = 0; i < (int)x; i++) {
      unsigned char *b = alloc(y, 0xa5);
      nbd_chunk_callback cb = {chunk_cb, track("chunk[%d]", i), free_cb};
      add_cmd("aio_pread_structured[%d]", i,
              nbd_aio_pread_structured(h, b, y, z + (uint64_t)i * y, cb, completion("done[%d]", i), 0),
              b, y);
    }
  } else if (!strcmp(a, "aio_pwrite")) {  // aio_pwrite N COUNT [OFFSET]
    for (int i = 0; i < (int)x; i++) {
      unsigned char *b = alloc(y, 0x5a);
      int64_t c = nbd_aio_pwrite(h, b, y, z + (uint64_t)i * y, completion("wdone[%d]", i), 0);
      add_cmd("aio_pwrite[%d]", i, c, NULL, 0);
      if (c == -1) continue;
      cmds[n_cmds - 1].buf = NULL;
      // The buffer must outlive the command; it is simply kept until exit.
    }
  } else if (!strcmp(a, "aio_block_status")) {  // aio_block_status COUNT OFFSET
    nbd_extent_callback cb = {extent_cb, track("extent[%d]", n_cmds), free_cb};
    add_cmd("aio_block_status[%d]", n_cmds,
            nbd_aio_block_status(h, x, y, cb, completion("bdone[%d]", n_cmds), 0), NULL, 0);
  } else if (!strcmp(a, "wait")) {
    wait_all();
  } else if (!strcmp(a, "poll_until_dead")) {  // up to 5 s of nbd_poll
    int r = 0;
    for (int i = 0; i < 50 && r != -1 && !nbd_aio_is_dead(h) && !nbd_aio_is_closed(h); i++)
      r = nbd_poll(h, 100);
    result("poll", r);
  } else if (!strcmp(a, "get_size")) {
    result("get_size", nbd_get_size(h));
  } else if (!strcmp(a, "block_size")) {
    printf("block_size min=%" PRId64 " preferred=%" PRId64 " max=%" PRId64 "\n",
           nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM), nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED),
           nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM));
  } else if (!strcmp(a, "flags")) {
    printf("flags read_only=%d flush=%d fua=%d trim=%d zero=%d df=%d multi_conn=%d cache=%d "
           "fast_zero=%d\n",
           nbd_is_read_only(h), nbd_can_flush(h), nbd_can_fua(h), nbd_can_trim(h), nbd_can_zero(h),
           nbd_can_df(h), nbd_can_multi_conn(h), nbd_can_cache(h), nbd_can_fast_zero(h));
  } else if (!strcmp(a, "names")) {
    char *n = nbd_get_canonical_export_name(h);
    char *d = nbd_get_export_description(h);
    printf("names canonical=%s description=%s errno=%s\n", n ? n : "(null)", d ? d : "(null)",
           n && d ? "0" : errname(nbd_get_errno()));
    free(n);
    free(d);
  } else if (!strcmp(a, "can_meta")) {
    result("can_meta_context", nbd_can_meta_context(h, "base:allocation"));
  } else if (!strcmp(a, "opt_list")) {
    nbd_list_callback cb = {list_cb, track("list", 0), free_cb};
    result("opt_list", nbd_opt_list(h, cb));
  } else if (!strcmp(a, "aio_opt_list")) {  // then polls until its completion ran
    nbd_list_callback cb = {list_cb, track("list", 0), free_cb};
    int r = nbd_aio_opt_list(h, cb, completion("odone", 0));
    result("aio_opt_list", r);
    for (int i = 0; r != -1 && i < 100 && !nbd_aio_is_dead(h) && !nbd_aio_is_closed(h); i++)
      if (nbd_poll(h, 100) == -1) break;
  } else if (!strcmp(a, "state")) {
    state();
  } else {
    fprintf(stderr, "driver: unknown action '%s'\n", a);
    exit(2);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s FD SETUP ACTIONS\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const int fd = atoi(argv[1]);
  h = nbd_create();
  if (!h) {
    fprintf(stderr, "nbd_create: %s\n", nbd_get_error());
    return 2;
  }
  // SETUP: comma-separated; the hostile tests' make() is "meta,ext=0".
  char *setup = strdup(argv[2]);
  for (char *tok = strtok(setup, ","); tok; tok = strtok(NULL, ",")) {
    int r = 0;
    if (!strcmp(tok, "meta")) {
      r = nbd_add_meta_context(h, "base:allocation");
    } else if (!strncmp(tok, "ext=", 4)) {
      int (*f)(struct nbd_handle *, bool) =
          (int (*)(struct nbd_handle *, bool))dlsym(RTLD_DEFAULT, "nbd_set_request_extended_headers");
      if (f) r = f(h, tok[4] == '1');
    } else if (!strncmp(tok, "sr=", 3)) {
      r = nbd_set_request_structured_replies(h, tok[3] == '1');
    } else if (!strcmp(tok, "full_info")) {
      r = nbd_set_full_info(h, true);
    } else if (!strcmp(tok, "opt_mode")) {
      r = nbd_set_opt_mode(h, true);
    } else if (!strcmp(tok, "noinit")) {
      r = nbd_set_pread_initialize(h, false);
    } else if (tok[0]) {
      fprintf(stderr, "driver: unknown setup '%s'\n", tok);
      return 2;
    }
    if (r == -1) {
      fprintf(stderr, "driver: setup %s: %s\n", tok, nbd_get_error());
      return 2;
    }
  }
  free(setup);
  // ACTIONS: ';'-separated, each "name args...".
  char *acts = strdup(argv[3]);
  char *save = NULL;
  for (char *act = strtok_r(acts, ";", &save); act; act = strtok_r(NULL, ";", &save)) {
    while (*act == ' ') act++;
    do_action(act, fd);
  }
  free(acts);
  state();
  nbd_close(h);
  for (int i = 0; i < n_closures; i++)
    printf("freed %s %d\n", closures[i].name, closures[i].frees);
  return 0;
}
