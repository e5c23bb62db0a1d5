#!/usr/bin/env bash
# Runs every check and test of livechat. Installs what the tests need when it is missing
# (redis-server and chromium from Debian, playwright-core from npm under tests/web and the JS
# client's test packages under clients/js, Python tools
# from PyPI into target/pytools), so that a fresh Debian machine with Rust needs nothing else.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step ends with how long it took, so the suite's time can be read off its output.
SECONDS=0
step_name=""
step_started=0
step_took() {
  if [ -n "$step_name" ]; then
    printf '    (%d s; %d s in all)\n' "$((SECONDS - step_started))" "$SECONDS"
  fi
}
step() {
  step_took
  step_name=$*
  step_started=$SECONDS
  printf '\n==> %s\n' "$*"
}
trap step_took EXIT

# Debian packages the tests use, installed only when missing.
apt_install() {
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  fi
}
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  step "installing redis-server (Debian)"
  apt_install redis-server redis-tools
fi
if ! command -v nginx >/dev/null; then
  step "installing nginx (Debian)"
  apt_install nginx
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  step "installing prometheus and promtool (Debian)"
  apt_install prometheus
fi
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  step "installing python3 and python3-venv (Debian)"
  apt_install python3 python3-venv
fi
if ! command -v npm >/dev/null; then
  step "installing nodejs and npm (Debian)"
  apt_install nodejs npm
fi
if ! command -v systemd-analyze >/dev/null; then
  step "installing systemd-analyze (Debian)"
  apt_install systemd
fi

step "Python test tools (PyPI, into target/pytools)"
if [ ! -x target/pytools/bin/python ]; then
  python3 -m venv target/pytools
fi
target/pytools/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
PYTHON="$PWD/target/pytools/bin/python"

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "unit and end-to-end tests, embedded engine (cargo test)"
cargo test --workspace

step "the end-to-end contract tests again, on the Redis engine"
# Skipped here by name, so the counts say what ran: tests that start Redis servers and nodes of
# their own (they ran above already: once is enough), and those about the embedded engine's file.
LIVECHAT_TEST_ENGINE=redis cargo test -p livechat --test e2e -- --skip nodes:: --skip proxy:: --skip metrics:: \
  --skip redis_link:: --skip rolling:: --skip operations:: \
  --skip webhooks::another_node_takes_over --skip webhooks::a_redis_cluster \
  --skip changes::changes_agree_across_two_redis_nodes --skip moderation::a_ban_set_on_one_node \
  --skip failover::nodes_follow_a_failover_and_lose_no_acknowledged_message \
  --skip failover::without_wait_a_resuming_client_gets_every_acknowledged_message_or_is_told \
  --skip presence::presence_spans_nodes_and_a_killed_node_leaves_no_ghosts \
  --skip resume::resume_on_another_node_after_the_first_died \
  --skip resume::redis_losing_its_data_resets_resuming_clients \
  --skip resume::a_new_history_file_is_a_new_epoch

step "the soak, short: embedded and two Redis nodes for 1.75 minutes, no growth past its margins (bench/soak.py)"
"$PYTHON" bench/soak.py --minutes 1.75 --binary target/debug/livechat --out target/soak --check

step "the systemd unit (systemd-analyze verify, with the unit pointing at the built binary)"
unit_dir=$(mktemp -d)
sed "s|/usr/local/bin/livechat|$PWD/target/debug/livechat|" deploy/systemd/livechat.service \
  > "$unit_dir/livechat.service"
systemd-analyze verify "$unit_dir/livechat.service"
rm -rf "$unit_dir"

step "the WebSocket frames against docs/asyncapi.yaml"
"$PYTHON" tests/asyncapi/check.py target/debug/livechat

step "the documentation's links: every relative link and #anchor in the markdown files resolves"
"$PYTHON" tests/docs/check_links.py

step "the HTTP API against docs/openapi.json (openapi-spec-validator, schemathesis)"
"$PYTHON" tests/openapi/check.py target/debug/livechat

step "the README's run command, exactly as written (cargo run --release)"
"$PYTHON" tests/run_command/check.py

step "the WebSocket layer against the Autobahn|Testsuite fuzzing client (kosoku)"
"$PYTHON" tests/autobahn/run.py

step "the Python client (clients/python): its wheel built and installed, mypy --strict, pytest against the binary"
rm -f target/wheels/livechat-*.whl
target/pytools/bin/pip wheel --quiet --disable-pip-version-check --no-deps clients/python -w target/wheels
target/pytools/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/livechat-*.whl
target/pytools/bin/pip install --quiet --disable-pip-version-check -r clients/python/tests/requirements.txt
target/pytools/bin/mypy --strict clients/python/src
cargo build -p livechat --bin livechat
"$PYTHON" -m pytest clients/python/tests -v -p no:cacheprovider --durations=5

step "the Django example end to end: examples/django under gunicorn, the hooks and webhooks (tests/django)"
if [ ! -x target/django-venv/bin/python ]; then
  python3 -m venv target/django-venv
fi
target/django-venv/bin/pip install --quiet --disable-pip-version-check -r examples/django/requirements.txt
# The app speaks to livechat through the Python client: the wheel built above.
target/django-venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall target/wheels/livechat-*.whl
target/pytools/bin/pip install --quiet --disable-pip-version-check -r tests/django/requirements.txt
cargo build -p livechat --bin livechat
"$PYTHON" -m pytest tests/django -v -p no:cacheprovider --durations=0

step "the Django Channels layer bridge beside the real stack (tests/channels: Django, channels, channels_redis, daphne)"
if [ ! -x target/channels-venv/bin/python ]; then
  python3 -m venv target/channels-venv
fi
target/channels-venv/bin/pip install --quiet --disable-pip-version-check -r tests/channels/requirements.txt
target/channels-venv/bin/python -m pytest tests/channels -v -p no:cacheprovider --durations=0

step "the chat page in headless Chromium (tests/web)"
tests/web/run.sh

step "the JavaScript client (clients/js): its types against docs/asyncapi.yaml, npm pack into target/, its tests against the server"
cargo build -p livechat --bin livechat
(
  cd clients/js
  if [ ! -d node_modules/ws ] || [ ! -d node_modules/eventsource ] || [ ! -d node_modules/yaml ] \
    || [ ! -d node_modules/typescript ]; then
    npm ci --no-audit --no-fund
  fi
  npm pack --pack-destination ../../target
  LIVECHAT_BIN="$PWD/../../target/debug/livechat" npm test
)
