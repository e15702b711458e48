#!/usr/bin/env bash
# Rebuild the web application from the locked dependencies and fail when the shipped build in
# src/truthset/web_dist differs from what the committed sources produce. Optional in CI (needs
# Node 20+ and the npm registry; about two minutes); tests/test_webapp.py checks the source hash
# without Node.
set -euo pipefail
cd "$(dirname "$0")"
# `npm install` with the committed lock file (npm 11 refuses `npm ci` for this lock: it lists
# rollup's per-platform optional packages without entries of their own).
npm install --no-audit --no-fund --loglevel=error
npm run build --silent
cd ..
if ! git diff --quiet -- src/truthset/web_dist || [ -n "$(git status --porcelain -- src/truthset/web_dist)" ]; then
    echo "the shipped web build differs from a fresh build of web/: commit the rebuilt src/truthset/web_dist" >&2
    git status --short -- src/truthset/web_dist >&2
    exit 1
fi
echo "web build matches its source"
