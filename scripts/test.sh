#!/usr/bin/env bash
# Runs every check and test of livechat. Installs what the tests need when it is missing
# (redis-server, nginx, prometheus, chromium... from Debian, playwright-core and the JS client's
# test packages from npm, Python tools from PyPI into virtualenvs under target/), so that a fresh
# Debian machine with Rust needs nothing else.
#
# First, one after the other: the Debian packages; the formatting and lint checks; one debug
# build of everything the tests run (the tests, the examples, the binary), while the PyPI and npm
# installs download and the release build of the README's run command compiles in the
# background (at nice 19: it gets the CPU the rest leaves idle). Then the suites run in four
# lanes at once, each a sequence of steps with its own log under target/test-logs/, printed
# whole as its lane ends: most suites spend their time waiting on servers, timers and browsers,
# so lanes overlap what one after the other would only wait for. The end-to-end suite's lane
# runs at normal priority, the other suites a little below it (nice 5), so that its
# timing-sensitive tests do not wait for a browser or a fuzzer.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOGS="$ROOT/target/test-logs"
PYTHON="$ROOT/target/pytools/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

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
# On the way out (a failed step above all), the background jobs (installs, release build) stop too.
trap 'step_took; jobs -p | xargs -r kill 2>/dev/null || true' EXIT

# Debian packages the tests use, installed only when missing.
apt_install() {
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  fi
}
missing=()
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server redis-tools)
command -v nginx >/dev/null || missing+=(nginx)
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# An emoji font, so that reactions show as emoji in the page's screenshots (not as empty boxes).
fc-list 2>/dev/null | grep -qi 'color emoji' || missing+=(fonts-noto-color-emoji)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing from Debian: ${missing[*]}"
  apt_install "${missing[@]}"
fi

mkdir -p "$LOGS"
rm -f "$LOGS"/*.log

# The PyPI and npm installs: into virtualenvs under target/ and node_modules/ of the two npm
# projects. Each virtualenv is written by this function only; the lanes only read them (the
# Python client's wheel, built in a lane, is installed by that lane alone).
install_test_tools() {
  set -euo pipefail
  python_env() {
    [ -x "$1/bin/python" ] || python3 -m venv "$1"
  }
  python_env target/pytools
  target/pytools/bin/pip install -q -r tests/requirements.txt \
    -r clients/python/tests/requirements.txt -r tests/django/requirements.txt
  python_env target/django-venv
  target/django-venv/bin/pip install -q -r examples/django/requirements.txt
  python_env target/channels-venv
  target/channels-venv/bin/pip install -q -r tests/channels/requirements.txt
  if [ ! -d tests/web/node_modules/playwright-core ] || [ ! -d tests/web/node_modules/ws ]; then
    (cd tests/web && npm ci --no-audit --no-fund)
  fi
  if [ ! -d clients/js/node_modules/ws ] || [ ! -d clients/js/node_modules/eventsource ] \
    || [ ! -d clients/js/node_modules/yaml ] || [ ! -d clients/js/node_modules/typescript ]; then
    (cd clients/js && npm ci --no-audit --no-fund)
  fi
}
install_test_tools > "$LOGS/install.log" 2>&1 &
install_pid=$!

# The release build of the README's run command, from the start and at the lowest priority: it
# takes the CPU that the builds and suites below leave idle. The run command's check, last in
# the contracts lane, waits for it (cargo's lock on target/release) if it is still going.
nice -n 19 cargo build --release > "$LOGS/release-build.log" 2>&1 &
release_pid=$!
printf '\n==> the release build started in the background at nice 19 (target/test-logs/release-build.log)\n'

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "building the tests, the examples and the binary (debug)"
cargo build --workspace --all-targets

step "waiting for the PyPI and npm installs (target/test-logs/install.log)"
if ! wait "$install_pid"; then
  cat "$LOGS/install.log"
  echo "the PyPI or npm installs failed (above)"
  exit 1
fi

# --- The lanes. Each runs in a subshell of its own with `set -e`: its first failing command
# ends it, and its log says in which step.

lane_end() {
  local status=$?
  step_took
  if [ "$status" -ne 0 ]; then
    printf '\n!! failed in step: %s (exit %d)\n' "$step_name" "$status"
  fi
}

lane_rust() {
  trap lane_end EXIT
  step "unit and end-to-end tests, embedded engine (cargo test)"
  cargo test --workspace

  step "the end-to-end contract tests again, on the Redis engine"
  # Skipped here by name, so the counts say what ran: tests that start Redis servers and nodes
  # of their own (they ran above already: once is enough), and those about the embedded
  # engine's file.
  LIVECHAT_TEST_ENGINE=redis cargo test --workspace --test e2e -- --skip nodes:: --skip proxy:: \
    --skip metrics:: --skip redis_link:: --skip rolling:: --skip operations:: \
    --skip webhooks::another_node_takes_over --skip webhooks::a_redis_cluster \
    --skip changes::changes_agree_across_two_redis_nodes --skip moderation::a_ban_set_on_one_node \
    --skip failover::nodes_follow_a_failover_and_lose_no_acknowledged_message \
    --skip failover::without_wait_a_resuming_client_gets_every_acknowledged_message_or_is_told \
    --skip presence::presence_spans_nodes_and_a_killed_node_leaves_no_ghosts \
    --skip resume::resume_on_another_node_after_the_first_died \
    --skip resume::redis_losing_its_data_resets_resuming_clients \
    --skip resume::a_new_history_file_is_a_new_epoch
}

lane_soak_and_python() {
  trap lane_end EXIT
  step "the soak, short: embedded and two Redis nodes for 1.75 minutes, no growth past its margins (bench/soak.py)"
  "$PYTHON" bench/soak.py --minutes 1.75 --binary target/debug/livechat --out target/soak --check

  step "the Python client (clients/python): its wheel built and installed, mypy --strict, pytest against the binary"
  rm -f target/wheels/livechat-*.whl
  target/pytools/bin/pip wheel -q --no-deps clients/python -w target/wheels
  target/pytools/bin/pip install -q --force-reinstall --no-deps target/wheels/livechat-*.whl
  target/pytools/bin/mypy --strict clients/python/src
  "$PYTHON" -m pytest clients/python/tests -v -p no:cacheprovider --durations=5

  step "the Django example end to end: examples/django under gunicorn, the hooks and webhooks (tests/django)"
  # The app speaks to livechat through the Python client: the wheel built above.
  target/django-venv/bin/pip install -q --force-reinstall target/wheels/livechat-*.whl
  "$PYTHON" -m pytest tests/django -v -p no:cacheprovider --durations=0

  step "the Django Channels layer bridge beside the real stack (tests/channels: Django, channels, channels_redis, daphne)"
  target/channels-venv/bin/python -m pytest tests/channels -v -p no:cacheprovider --durations=0
}

lane_contracts() {
  trap lane_end EXIT
  step "the systemd unit (systemd-analyze verify, with the unit pointing at the built binary)"
  unit_dir=$(mktemp -d)
  sed "s|/usr/local/bin/livechat|$ROOT/target/debug/livechat|" deploy/systemd/livechat.service \
    > "$unit_dir/livechat.service"
  systemd-analyze verify "$unit_dir/livechat.service"
  rm -rf "$unit_dir"

  step "the WebSocket frames against docs/asyncapi.yaml"
  "$PYTHON" tests/asyncapi/check.py target/debug/livechat

  step "the documentation's links: every relative link and #anchor in the markdown files resolves"
  "$PYTHON" tests/docs/check_links.py

  step "the HTTP API against docs/openapi.json (openapi-spec-validator, schemathesis)"
  "$PYTHON" tests/openapi/check.py target/debug/livechat

  step "the WebSocket layer against the Autobahn|Testsuite fuzzing client (kosoku)"
  "$PYTHON" tests/autobahn/run.py

  step "the README's run command, exactly as written (cargo run --release; waits for the release build)"
  "$PYTHON" tests/run_command/check.py
}

lane_browser() {
  trap lane_end EXIT
  step "the chat page in headless Chromium (tests/web)"
  tests/web/run.sh

  step "the JavaScript client (clients/js): its types against docs/asyncapi.yaml, npm pack into target/, its tests against the server"
  (
    cd clients/js
    npm pack --pack-destination ../../target
    LIVECHAT_BIN="$ROOT/target/debug/livechat" npm test
  )
}

step "the suites, in four lanes at once (logs in target/test-logs/)"
export ROOT LOGS PYTHON
export -f step step_took lane_end lane_rust lane_soak_and_python lane_contracts lane_browser
declare -A lane_of_pid=()
start_lane() {
  local name=$1 niceness=$2
  # A lane's clock starts where the suite's is, so its steps say "in all" like the others.
  SUITE_SECONDS=$SECONDS nice -n "$niceness" \
    bash -c "set -euo pipefail; SECONDS=\$SUITE_SECONDS; step_name=''; lane_$name" \
    > "$LOGS/$name.log" 2>&1 &
  lane_of_pid[$!]=$name
  printf '    lane %s started (nice %d)\n' "$name" "$niceness"
}
start_lane rust 0
start_lane soak_and_python 5
start_lane contracts 5
start_lane browser 5

failed=()
while [ ${#lane_of_pid[@]} -gt 0 ]; do
  status=0
  wait -n -p ended "${!lane_of_pid[@]}" || status=$?
  name=${lane_of_pid[$ended]}
  unset "lane_of_pid[$ended]"
  printf '\n######## lane %s: %s after %d s in all ########\n' "$name" \
    "$([ "$status" -eq 0 ] && echo passed || echo FAILED)" "$SECONDS"
  cat "$LOGS/$name.log"
  [ "$status" -eq 0 ] || failed+=("$name")
done

if ! wait "$release_pid"; then
  printf '\n######## the release build FAILED ########\n'
  cat "$LOGS/release-build.log"
  failed+=(release-build)
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nFAILED lanes: %s (their logs are above, and in target/test-logs/)\n' "${failed[*]}"
  exit 1
fi
printf '\nevery lane passed\n'
