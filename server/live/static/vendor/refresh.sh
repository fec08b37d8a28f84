#!/usr/bin/env bash
# Refreshes the vendored uPlot (https://github.com/leeoniya/uPlot, MIT) from the npm registry.
#
#   server/live/static/vendor/refresh.sh [VERSION]     (default: the pinned one below)
#
# The live page loads these files from the receiver itself: no CDN, works offline, and the
# strict Content-Security-Policy (script-src 'self') holds. Bump PINNED, run this, look at the
# page (tests/live/test_page.py), commit the files together with the new pin.
set -euo pipefail
PINNED=1.6.32
version="${1:-$PINNED}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$version" >/dev/null)
tar -xzf "$work"/uplot-*.tgz -C "$work"
got="$(node -p "require('$work/package/package.json').version")"
license="$(node -p "require('$work/package/package.json').license")"
if [[ "$got" != "$version" ]]; then
  echo "refresh.sh: npm gave uplot $got, wanted $version" >&2
  exit 1
fi
if [[ "$license" != "MIT" ]]; then
  echo "refresh.sh: uplot $got is licensed $license, not MIT: check before vendoring" >&2
  exit 1
fi
cp "$work/package/dist/uPlot.iife.min.js" "$here/uPlot.iife.min.js"
cp "$work/package/dist/uPlot.min.css" "$here/uPlot.min.css"
cp "$work/package/LICENSE" "$here/uPlot.LICENSE"
echo "$got" > "$here/uPlot.VERSION"
(cd "$here" && sha256sum uPlot.iife.min.js uPlot.min.css uPlot.LICENSE > uPlot.SHA256SUMS)
echo "vendored uplot $got into $here"
