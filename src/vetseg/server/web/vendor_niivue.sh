#!/usr/bin/env bash
# NiiVue for `vetseg review`: installs the version pinned in package-lock.json with `npm ci` and
# copies its self-contained ES module into ../static/vendor/ (committed, so a clone, a wheel and
# CI work without npm; this script is how it is updated and checked).
#   vendor_niivue.sh           re-fetch and copy (after changing the pin: npm install @niivue/niivue@X)
#   vendor_niivue.sh --check   re-fetch and fail unless the committed file is byte-identical
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
dist=node_modules/@niivue/niivue/dist/index.js
target=../static/vendor/niivue.js
version=$(node -p "require('./node_modules/@niivue/niivue/package.json').version")
sha=$(sha256sum "$dist" | cut -d' ' -f1)
if [[ "${1:-}" == "--check" ]]; then
    cmp -s "$dist" "$target" || { echo "static/vendor/niivue.js is not @niivue/niivue $version as pinned: run $0" >&2; exit 1; }
    echo "static/vendor/niivue.js is @niivue/niivue $version ($sha)"
    exit 0
fi
cp "$dist" "$target"
printf '{\n  "package": "@niivue/niivue",\n  "version": "%s",\n  "file": "dist/index.js",\n  "sha256": "%s"\n}\n' "$version" "$sha" > ../static/vendor/niivue.json
echo "copied @niivue/niivue $version dist/index.js to static/vendor/niivue.js ($sha)"
