#!/bin/sh
# Trims an installed virtualenv for the image (about 55 MB of 370 MB): debug symbols of the Python
# extension modules (uvloop, obstore, asyncpg, numpy ... ship them) and numpy's own test suite.
# The vendored libraries in *.libs/ are left alone: auditwheel patched them, and stripping after
# patchelf is a known way to break a library.
set -eu
site=$(echo "$1"/lib/python3*/site-packages)
find "$site" -path '*.libs' -prune -o -type f \( -name '*.cpython-*.so' -o -name '*.abi3.so' \) \
  -exec strip --strip-unneeded {} +
find "$site/numpy" -depth -type d -name tests -exec rm -rf {} +
