// SPDX-License-Identifier: LGPL-2.1-or-later
// Option mode against nbdkit: what the export getters may report between options, and meta context options without structured replies.
#include <libnbd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "support/nbd_helpers.h"
#include "support/servers.h"

namespace dnbd_test {
namespace {

constexpr const char *kBase = LIBNBD_CONTEXT_BASE_ALLOCATION;

// Three kinds of export, told apart by what the getters report:
//   "ro" (also the default export): 64 KiB, read-only;
//   "rw": 1 MiB, writable;
//   "missing": does not exist (open fails), and neither does any export once the file
//   `withdrawn` exists, so a test can make an export vanish between two options.
std::vector<std::string> export_plugin(const std::string &withdrawn) {
  return {"eval",
          "open=if [ -e '" + withdrawn + "' ] || [ \"$3\" = missing ]; then "
          "echo 'ENOENT no such export' >&2; exit 1; fi; echo \"$3\"",
          "default_export=echo ro",
          "get_size=if [ \"$2\" = rw ]; then echo 1M; else echo 64K; fi",
          "can_write=if [ \"$2\" = rw ]; then exit 0; else exit 3; fi",
          "pread=dd if=/dev/zero count=$3 iflag=count_bytes 2>/dev/null",
          "pwrite=cat >/dev/null",
          "thread_model=echo parallel"};
}

// The export getters all fail the same way: nothing is known about the export.
void expect_nothing_known(nbd_handle *h, const char *when) {
  SCOPED_TRACE(when);
  EXPECT_EQ(nbd_get_size(h), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
  EXPECT_EQ(nbd_is_read_only(h), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
  EXPECT_EQ(nbd_can_flush(h), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
  EXPECT_EQ(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
}

// can_meta_context fails while contexts are requested but none were settled.
void expect_contexts_unknown(nbd_handle *h, const char *when) {
  SCOPED_TRACE(when);
  EXPECT_EQ(nbd_can_meta_context(h, kBase), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL) << last_error();
}

struct ContextCount {
  int calls = 0;
  bool saw_base = false;
};

int count_context(void *user_data, const char *name) {
  auto *c = static_cast<ContextCount *>(user_data);
  c->calls++;
  if (std::string(name) == kBase) c->saw_base = true;
  return 0;
}

// A context callback that only counts: the meta context calls require one.
nbd_context_callback ignore_contexts() { return {[](void *, const char *) { return 0; }, nullptr, nullptr}; }

class OptModeTest : public IntegrationTest {
protected:
  void SetUp() override {
    withdrawn_ = dir_.file("withdrawn");
    START_OR_SKIP(srv_.start(export_plugin(withdrawn_)));
    h_ = make_handle();
    ASSERT_TRUE(h_);
  }

  // Opt mode, connected, base:allocation requested: negotiating, nothing asked yet.
  void negotiate() {
    NBD_ASSERT_OK(nbd_set_opt_mode(h_.get(), true));
    NBD_ASSERT_OK(nbd_add_meta_context(h_.get(), kBase));
    NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
    ASSERT_EQ(nbd_aio_is_negotiating(h_.get()), 1);
  }

  void withdraw_all_exports() { std::ofstream(withdrawn_) << "gone\n"; }

  TempDir dir_;
  std::string withdrawn_;
  NbdkitServer srv_;
  Handle h_;
};

TEST_F(OptModeTest, GettersFailUntilInfoSucceeds) {
  negotiate();
  expect_nothing_known(h_.get(), "before any option");
  expect_contexts_unknown(h_.get(), "before any option");

  NBD_ASSERT_OK(nbd_opt_info(h_.get()));  // the default export, "ro"
  EXPECT_EQ(nbd_get_size(h_.get()), 64 * 1024);
  EXPECT_EQ(nbd_is_read_only(h_.get()), 1);
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << last_error();
  EXPECT_EQ(nbd_aio_is_negotiating(h_.get()), 1);
}

// Waiting for the caller, the handle waits for no event: libnbd 1.22.2 refuses both
// notifications there (EINVAL), and so do we (found by the call_states differential run).
TEST_F(OptModeTest, NotificationsAreRefusedWhileWaitingForTheCaller) {
  negotiate();
  EXPECT_EQ(nbd_aio_get_direction(h_.get()), 0u);
  EXPECT_EQ(nbd_aio_notify_read(h_.get()), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  EXPECT_EQ(nbd_aio_notify_write(h_.get()), -1);
  EXPECT_EQ(nbd_get_errno(), EINVAL);
  // An option in flight is something to read for.
  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  EXPECT_EQ(nbd_aio_is_negotiating(h_.get()), 1);
}

// With no context requested, can_meta_context has nothing to wait for: "no" at once.
TEST_F(OptModeTest, CanMetaContextWithoutRequestsIsFalseBeforeInfo) {
  NBD_ASSERT_OK(nbd_set_opt_mode(h_.get(), true));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 0) << last_error();
  EXPECT_EQ(nbd_get_size(h_.get()), -1);
}

TEST_F(OptModeTest, NewExportNameForgetsWhatInfoLearnt) {
  negotiate();
  NBD_ASSERT_OK(nbd_set_export_name(h_.get(), "ro"));
  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  ASSERT_EQ(nbd_get_size(h_.get()), 64 * 1024);

  // The same name again changes nothing.
  NBD_ASSERT_OK(nbd_set_export_name(h_.get(), "ro"));
  EXPECT_EQ(nbd_get_size(h_.get()), 64 * 1024);
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << last_error();

  // Another name: the answers were about "ro" and must not pass for "rw"'s, even
  // before any option is sent.
  NBD_ASSERT_OK(nbd_set_export_name(h_.get(), "rw"));
  expect_nothing_known(h_.get(), "after nbd_set_export_name");
  expect_contexts_unknown(h_.get(), "after nbd_set_export_name");

  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024);
  EXPECT_EQ(nbd_is_read_only(h_.get()), 0);
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << last_error();
}

// An OPT_INFO the server refuses leaves nothing known, even for the name the previous
// (successful) answer was about.
TEST_F(OptModeTest, RefusedInfoForgetsTheEarlierAnswer) {
  negotiate();
  NBD_ASSERT_OK(nbd_set_export_name(h_.get(), "rw"));
  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  ASSERT_EQ(nbd_get_size(h_.get()), 1024 * 1024);

  withdraw_all_exports();
  EXPECT_EQ(nbd_opt_info(h_.get()), -1);
  EXPECT_EQ(nbd_aio_is_negotiating(h_.get()), 1) << "a refusal does not end negotiation";
  expect_nothing_known(h_.get(), "after a refused nbd_opt_info");
  expect_contexts_unknown(h_.get(), "after a refused nbd_opt_info");
}

TEST_F(OptModeTest, RefusedGoForgetsAndGoReportsItsExport) {
  negotiate();
  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  NBD_ASSERT_OK(nbd_set_export_name(h_.get(), "missing"));
  EXPECT_EQ(nbd_opt_go(h_.get()), -1);
  EXPECT_EQ(nbd_aio_is_negotiating(h_.get()), 1);
  expect_nothing_known(h_.get(), "after a refused nbd_opt_go");
  expect_contexts_unknown(h_.get(), "after a refused nbd_opt_go");

  NBD_ASSERT_OK(nbd_set_export_name(h_.get(), "rw"));
  NBD_ASSERT_OK(nbd_opt_go(h_.get()));
  EXPECT_EQ(nbd_aio_is_ready(h_.get()), 1);
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024);
  EXPECT_EQ(nbd_is_read_only(h_.get()), 0);
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << last_error();

  // Negotiation is over: the name cannot change and OPT_INFO cannot be sent, and
  // neither takes away what GO established.
  EXPECT_EQ(nbd_set_export_name(h_.get(), "ro"), -1);
  char *name = nbd_get_export_name(h_.get());
  ASSERT_NE(name, nullptr) << last_error();
  EXPECT_STREQ(name, "rw");
  free(name);
  EXPECT_EQ(nbd_opt_info(h_.get()), -1);
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024);
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << last_error();
}

// nbd_set_request_meta_context(false): OPT_INFO answers for the export but settles no
// context, so can_meta_context still has no answer.
TEST_F(OptModeTest, InfoWithoutAutomaticMetaContextLeavesContextsUnknown) {
  negotiate();
  NBD_ASSERT_OK(nbd_set_request_meta_context(h_.get(), false));
  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  EXPECT_EQ(nbd_get_size(h_.get()), 64 * 1024);
  expect_contexts_unknown(h_.get(), "after nbd_opt_info without a meta context request");
}

// Contexts settled by OPT_INFO's automatic request stay in force through a GO that
// makes no request of its own, whatever the request list says by then.
TEST_F(OptModeTest, ContextsFromInfoSurviveGoWithoutRequest) {
  NBD_ASSERT_OK(nbd_set_opt_mode(h_.get(), true));
  NBD_ASSERT_OK(nbd_add_meta_context(h_.get(), "x-nosuch:context"));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
  expect_contexts_unknown(h_.get(), "before any option");
  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 0) << last_error();

  NBD_ASSERT_OK(nbd_set_request_meta_context(h_.get(), false));
  NBD_ASSERT_OK(nbd_add_meta_context(h_.get(), kBase));
  NBD_ASSERT_OK(nbd_opt_go(h_.get()));
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 0) << last_error();
}

// SET_META_CONTEXT replaces the contexts and nothing else; LIST changes nothing.
TEST_F(OptModeTest, MetaContextOptionsTouchOnlyWhatTheyShould) {
  negotiate();
  NBD_ASSERT_OK(nbd_set_export_name(h_.get(), "rw"));
  NBD_ASSERT_OK(nbd_opt_info(h_.get()));
  ASSERT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << last_error();

  char nosuch[] = "x-nosuch:";
  char *queries[] = {nosuch, nullptr};
  EXPECT_EQ(nbd_opt_list_meta_context_queries(h_.get(), queries, ignore_contexts()), 0)
      << last_error();
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << "LIST must not change the contexts";

  EXPECT_EQ(nbd_opt_set_meta_context_queries(h_.get(), queries, ignore_contexts()), 0)
      << last_error();
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 0) << last_error();
  EXPECT_EQ(nbd_get_size(h_.get()), 1024 * 1024) << "SET must not touch the export's details";
  EXPECT_EQ(nbd_is_read_only(h_.get()), 0);

  EXPECT_EQ(nbd_opt_set_meta_context(h_.get(), ignore_contexts()), 1) << last_error();
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 1) << last_error();
}

// Without structured replies, the meta context options still go to the server (they
// exist to probe servers): its answer, not the library, decides.  nbdkit lists its
// contexts anyway but refuses to set any; another server may refuse both, so a LIST
// refusal is accepted as long as the request was sent.
TEST_F(OptModeTest, MetaContextOptionsAreSentWithoutStructuredReplies) {
  NBD_ASSERT_OK(nbd_set_opt_mode(h_.get(), true));
  NBD_ASSERT_OK(nbd_set_request_structured_replies(h_.get(), false));
  NBD_ASSERT_OK(nbd_add_meta_context(h_.get(), kBase));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
  ASSERT_EQ(nbd_get_structured_replies_negotiated(h_.get()), 0);

  char base[] = LIBNBD_CONTEXT_BASE_ALLOCATION;
  char *queries[] = {base, nullptr};
  for (bool explicit_queries : {false, true}) {
    SCOPED_TRACE(explicit_queries ? "nbd_opt_list_meta_context_queries"
                                  : "nbd_opt_list_meta_context");
    ContextCount seen;
    const uint64_t before = nbd_stats_bytes_sent(h_.get());
    nbd_context_callback cb{count_context, &seen, nullptr};
    int r = explicit_queries ? nbd_opt_list_meta_context_queries(h_.get(), queries, cb)
                             : nbd_opt_list_meta_context(h_.get(), cb);
    EXPECT_GT(nbd_stats_bytes_sent(h_.get()), before) << "the request was not sent";
    if (r == -1) {
      EXPECT_EQ(nbd_get_errno(), ENOTSUP) << last_error();
    } else {
      EXPECT_EQ(r, seen.calls);
      EXPECT_TRUE(seen.saw_base);
    }
  }

  for (bool explicit_queries : {false, true}) {
    SCOPED_TRACE(explicit_queries ? "nbd_opt_set_meta_context_queries"
                                  : "nbd_opt_set_meta_context");
    const uint64_t before = nbd_stats_bytes_sent(h_.get());
    int r = explicit_queries
                ? nbd_opt_set_meta_context_queries(h_.get(), queries, ignore_contexts())
                : nbd_opt_set_meta_context(h_.get(), ignore_contexts());
    EXPECT_GT(nbd_stats_bytes_sent(h_.get()), before) << "the request was not sent";
    EXPECT_EQ(r, -1) << "nbdkit sets no context without structured replies";
    EXPECT_EQ(nbd_get_errno(), ENOTSUP) << last_error();
    EXPECT_EQ(nbd_aio_is_negotiating(h_.get()), 1);
    expect_contexts_unknown(h_.get(), "after a refused SET_META_CONTEXT");
  }

  // GO cannot ask for contexts without structured replies, so "none" is final.
  NBD_ASSERT_OK(nbd_opt_go(h_.get()));
  EXPECT_EQ(nbd_can_meta_context(h_.get(), kBase), 0) << last_error();
}

// The aio form is sent too, and its completion reports the server's answer.
TEST_F(OptModeTest, AioListMetaContextIsSentWithoutStructuredReplies) {
  NBD_ASSERT_OK(nbd_set_opt_mode(h_.get(), true));
  NBD_ASSERT_OK(nbd_set_request_structured_replies(h_.get(), false));
  NBD_ASSERT_OK(nbd_connect_unix(h_.get(), srv_.socket_path().c_str()));
  const uint64_t before = nbd_stats_bytes_sent(h_.get());
  ContextCount seen;
  int completed_with = -1;
  nbd_completion_callback done{[](void *ud, int *error) {
                                 *static_cast<int *>(ud) = *error;
                                 return 1;
                               },
                               &completed_with, nullptr};
  NBD_ASSERT_OK(nbd_aio_opt_list_meta_context(h_.get(), {count_context, &seen, nullptr}, done));
  while (nbd_aio_is_connecting(h_.get()) == 1) NBD_ASSERT_OK(nbd_poll(h_.get(), 10000));
  EXPECT_EQ(nbd_aio_is_negotiating(h_.get()), 1) << last_error();
  EXPECT_GT(nbd_stats_bytes_sent(h_.get()), before);
  ASSERT_NE(completed_with, -1) << "completion callback not called";
  if (completed_with == 0) EXPECT_TRUE(seen.saw_base);
  else EXPECT_EQ(completed_with, ENOTSUP);
}

}  // namespace
}  // namespace dnbd_test
