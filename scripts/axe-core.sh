#!/usr/bin/env bash
# Fetch axe-core, the accessibility rules the web pages' browser tests inject (tests/browser/), from
# the npm registry: the pinned version's tarball, checked against its pinned SHA-512 (the registry's
# dist.integrity), its axe.min.js kept in var/vendor/axe-core-VERSION/ (not in the repository).
#   scripts/axe-core.sh          fetch it if missing; prints its path
# To move to another version: `npm view axe-core@X.Y.Z dist.integrity`, then change both lines.
set -euo pipefail
AXE_VERSION=4.14.1
AXE_INTEGRITY=sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==

cd "$(dirname "$0")/.."
target="var/vendor/axe-core-$AXE_VERSION/axe.min.js"
if [ -s "$target" ]; then
  echo "$target"
  exit 0
fi

registry=${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}
url="${registry%/}/axe-core/-/axe-core-$AXE_VERSION.tgz"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching axe-core $AXE_VERSION from $url" >&2
curl -fsSL --retry 3 -o "$tmp/axe-core.tgz" "$url"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/axe-core.tgz" | base64 -w0)"
if [ "$got" != "$AXE_INTEGRITY" ]; then
  echo "axe-core $AXE_VERSION: the tarball's integrity is $got, not the pinned $AXE_INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tmp/axe-core.tgz" -C "$tmp" package/axe.min.js
mkdir -p "$(dirname "$target")"
mv "$tmp/package/axe.min.js" "$target.part"
mv "$target.part" "$target"
echo "$target"
