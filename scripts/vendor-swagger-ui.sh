#!/usr/bin/env bash
# Refreshes the vendored Swagger UI (served at /api/docs) from the npm registry:
#   bash scripts/vendor-swagger-ui.sh 5.35.0
# Only the bundle, its stylesheet and the licence files are kept; the page and its start-up script
# (index.html, init.js) are ours.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: vendor-swagger-ui.sh VERSION}"
dest=crates/api/assets/swagger-ui
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf swagger-ui-dist-*.tgz)
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt; do
    cp "$tmp/package/$f" "$dest/$f"
done
echo "$version" > "$dest/VERSION"
echo "vendored swagger-ui-dist $version into $dest"
