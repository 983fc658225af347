// SPDX-License-Identifier: LGPL-2.1-or-later
// Prints the calls still failing with "not implemented yet", and checks that they do.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "api/pending_calls.h"

TEST(PendingCalls, ListIsPrinted) {
  auto calls = duplexnbd::pending_calls();
  std::printf("calls not implemented yet: %zu\n", calls.size());
  for (const char *name : calls) std::printf("  %s\n", name);
  for (const char *name : calls) EXPECT_EQ(std::strncmp(name, "nbd_", 4), 0) << name;
}
