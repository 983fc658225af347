// SPDX-License-Identifier: LGPL-2.1-or-later
// TLS queries that depend on the connection rather than on the settings.
#include "api_impl.h"
#include "engine/connection.h"

namespace duplexnbd::api {

int get_tls_negotiated(Handle &h) {
  return h.connection && h.connection->negotiated().tls ? 1 : 0;
}

}  // namespace duplexnbd::api
