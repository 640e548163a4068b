#!/usr/bin/env bash
# Installs CongoDB, the in-memory MongoDB-wire server the MongoDB-backed resource
# tests run against (no genuine MongoDB installs on the test machines), into a cache
# directory, and prints that directory. Idempotent: a second run with the same pins
# does nothing.
#
# CongoDB lives in @push.rocks/smartmongo 2.2.0 only (later versions dropped it), and
# a plain `npm install` of that version fails on a dependency version that does not
# resolve. So: `npm pack` that exact tarball (its sha1 is checked), keep its dist_ts/,
# and install the few packages CongoDB itself imports from package-lock.json here.
#
# TETHER_CONGODB_DIR overrides the directory (default ~/.cache/tether-congodb).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${TETHER_CONGODB_DIR:-$HOME/.cache/tether-congodb}"
version="2.2.0"
sha1="8e8d6fe2de716cc16385447467cc47ce35e10af2"

stamp="$(cat "$here/package-lock.json" "$here/server.mjs" | sha1sum | cut -d' ' -f1)-$version"
if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$stamp" ]; then
  echo "$dir"
  exit 0
fi

mkdir -p "$dir"
cp "$here/package.json" "$here/package-lock.json" "$here/server.mjs" "$dir/"
(
  cd "$dir"
  npm ci --no-audit --no-fund --loglevel=error >&2
  rm -rf smartmongo package ./*.tgz
  tarball="$(npm pack "@push.rocks/smartmongo@$version" --loglevel=error | tail -n1)"
  got="$(sha1sum "$tarball" | cut -d' ' -f1)"
  if [ "$got" != "$sha1" ]; then
    echo "setup.sh: $tarball has sha1 $got, expected $sha1" >&2
    exit 1
  fi
  tar xzf "$tarball"
  mkdir smartmongo
  mv package/dist_ts smartmongo/
  # dist_ts is ES modules; say so, whatever the tarball's own package.json says.
  echo '{"type": "module"}' >smartmongo/package.json
  rm -rf package "$tarball"
)
echo "$stamp" >"$dir/.installed"
echo "$dir"
