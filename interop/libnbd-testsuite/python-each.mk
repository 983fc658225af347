# SPDX-License-Identifier: LGPL-2.1-or-later
# Extra rule read through $MAKEFILES by interop/libnbd-testsuite.sh for its
# "python/t" pseudo directory: run every python/t/*.py as its own automake
# test (make check TESTS="t/010-import.py ...").
#
# libnbd's python/run-python-tests runs all t/*.py in one test and stops at
# the first failure, which hides how many of them a replacement library
# passes.  automake writes a .log rule only for the tests it knew about when
# it generated python/Makefile, so the *.py names need this pattern rule; its
# recipe drives the test exactly like automake's generated per-test rules
# (same harness variables, same test-driver, same .log/.trs files).
# MAKEFILES is inherited by the recursive makes of "check" and "recheck",
# which a plain "make -f" would not be.

%.py.log: %.py
	@p='$<'; \
	b='$*.py'; \
	$(am__check_pre) $(LOG_DRIVER) --test-name "$$f" \
	--log-file $$b.log --trs-file $$b.trs \
	$(am__common_driver_flags) $(AM_LOG_DRIVER_FLAGS) $(LOG_DRIVER_FLAGS) -- $(LOG_COMPILE) \
	"$$tst" $(AM_TESTS_FD_REDIRECT)
