# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs at install time (install(CODE) in CMakeLists.txt): writes libnbd.pc for the prefix being
# installed to, which is the configure-time one unless `cmake --install --prefix` changed it.
# Expects DUPLEXNBD_PC_IN, DUPLEXNBD_VERSION, DUPLEXNBD_LIBDIR and DUPLEXNBD_INCLUDEDIR.

# GNUInstallDirs' directories are relative to the prefix unless the user made them absolute.
foreach(kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${DUPLEXNBD_${kind}}")
    set(pc_${kind} "${DUPLEXNBD_${kind}}")
  else()
    set(pc_${kind} "\${prefix}/${DUPLEXNBD_${kind}}")
  endif()
endforeach()
# `--prefix inst` installs under the current directory; the .pc file needs it absolute.
# (Script mode: CMAKE_CURRENT_BINARY_DIR is the directory cmake --install runs in.)
get_filename_component(pc_prefix "${CMAKE_INSTALL_PREFIX}" ABSOLUTE
  BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
if(IS_ABSOLUTE "${DUPLEXNBD_LIBDIR}")
  set(pc_file "$ENV{DESTDIR}${DUPLEXNBD_LIBDIR}/pkgconfig/libnbd.pc")
else()
  set(pc_file "$ENV{DESTDIR}${pc_prefix}/${DUPLEXNBD_LIBDIR}/pkgconfig/libnbd.pc")
endif()

message(STATUS "Installing: ${pc_file}")
configure_file("${DUPLEXNBD_PC_IN}" "${pc_file}" @ONLY)
# Recorded like the files install() copies, so install_manifest.txt lists it.
list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${pc_file}")
