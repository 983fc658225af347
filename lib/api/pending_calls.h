// SPDX-License-Identifier: LGPL-2.1-or-later
// The list of public calls that still fail with "not implemented yet" (generated).
#pragma once

#include <span>

namespace duplexnbd {
std::span<const char *const> pending_calls();
}
