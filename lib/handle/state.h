// SPDX-License-Identifier: LGPL-2.1-or-later
// The public lifecycle of a handle, as nbd_aio_is_* and the man pages' state tables see it.
#pragma once

#include <cstdint>

namespace duplexnbd {

enum class State : uint8_t {
  Created,      // nothing done yet
  Connecting,   // connecting or handshaking, not waiting for the caller
  Negotiating,  // handshake paused in opt mode, waiting for an nbd_opt_* call
  Ready,        // transmission phase
  Closed,       // server or client shut the connection down cleanly
  Dead,         // the connection failed
};

// Bit set over State, matching the generator's permitted_states.
using StateMask = uint8_t;
constexpr StateMask state_bit(State s) { return StateMask(1u << unsigned(s)); }

// Name used in "invalid state" errors and debug output.
const char *state_name(State s);

}  // namespace duplexnbd
