#!/usr/bin/env bash
# The chat page tests: Debian's Chromium driven by playwright-core, against the real server.
# Installs Chromium and the npm packages when they are missing. Usage: tests/web/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (Debian)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
# An emoji font, so that reactions show as emoji in the screenshots (not as empty boxes).
if ! fc-list 2>/dev/null | grep -qi 'color emoji'; then
  echo "installing fonts-noto-color-emoji (Debian)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji
fi
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/ws" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
(cd "$root" && cargo build -p livechat --bin livechat --example test_cert)
cd "$here"
LIVECHAT_BIN="$root/target/debug/livechat" CERT_TOOL="$root/target/debug/examples/test_cert" node --test --test-concurrency=1 page.test.mjs conversation.test.mjs seed_client.test.mjs event_source.test.mjs
