// SPDX-License-Identifier: LGPL-2.1-or-later
// Built against an installed duplexnbd through the C++ header nbd.hpp (duplexnbd::nbdxx).
#include <nbd.hpp>

#include <link.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main() {
  // The file the dynamic loader mapped as libnbd.so.*, resolved.
  std::string loaded = "(not found)";
  dl_iterate_phdr([](dl_phdr_info *info, size_t, void *data) {
    if (std::string(info->dlpi_name).find("/libnbd.so") == std::string::npos) return 0;
    if (char *real = realpath(info->dlpi_name, nullptr)) {
      *static_cast<std::string *>(data) = real;
      std::free(real);
    }
    return 1;
  }, &loaded);
  nbd::Handle h;
  std::printf("package %s\nversion %s\nlibrary %s\n", h.get_package_name().c_str(),
              h.get_version().c_str(), loaded.c_str());
  return 0;
}
