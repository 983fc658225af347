// SPDX-License-Identifier: LGPL-2.1-or-later
// The TLS entry points of a build without GnuTLS: every attempt fails with ENOTSUP.
#include "tls/tls_session.h"

#if !DUPLEXNBD_HAVE_TLS

namespace duplexnbd::tls {

namespace {
Error unavailable() { return make_error(ENOTSUP, "TLS support was not compiled in"); }
}  // namespace

Result<std::unique_ptr<TlsSession>> start_tls_client(std::unique_ptr<transport::Transport> &,
                                                     const TlsConfig &) {
  return unavailable();
}

Result<std::unique_ptr<TlsSession>> start_tls_client(transport::FileDescriptor,
                                                     const TlsConfig &) {
  return unavailable();
}

}  // namespace duplexnbd::tls

#endif  // !DUPLEXNBD_HAVE_TLS
