#!/usr/bin/env bash
# Jupyter and headless Chromium: the real clients of the history page's
# end-to-end test (examples/tests/history_browser.rs, driving
# scripts/testbed/history_page_browser.py).
#
# `start` installs, if missing, a venv with jupyter_server,
# jupyter-server-proxy, nbformat, requests and selenium (pinned, from PyPI,
# into a cached directory) and Debian's chromium and chromium-driver
# (apt-get), then writes $TETHER_TESTBED_DIR/jupyter.env:
#   TETHER_TEST_JUPYTER_PYTHON   the venv's python (runs the driver script)
#   TETHER_TEST_CHROMIUM         the browser
#   TETHER_TEST_CHROMEDRIVER     its WebDriver server
# No server is left running: the test starts its own Jupyter (its root
# directory is the test's), tether and chromedriver on ports it picks by
# binding port 0, and stops them. `stop` removes the variables file.
set -euo pipefail

name=jupyter
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
mkdir -p "$testbed_dir"
testbed_dir="$(cd "$testbed_dir" && pwd)"
cache_dir="${TETHER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}"
jupyter_server_version=2.14.2
proxy_version=4.4.0
nbformat_version=5.10.4
requests_version=2.32.3
selenium_version=4.27.1
venv="$cache_dir/jupyter-$jupyter_server_version-proxy-$proxy_version-venv"
work="$testbed_dir/$name"
pid_file="$work/none.pid"
env_file="$testbed_dir/$name.env"
port=-

# shellcheck source=../lib/testbed.sh
. "$(dirname "$0")/../lib/testbed.sh"

install() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install chromium chromium-driver
  fi
  if ! "$venv/bin/python" -c "import jupyter_server, jupyter_server_proxy, nbformat, requests, selenium" 2>/dev/null; then
    echo "installing jupyter_server $jupyter_server_version, jupyter-server-proxy $proxy_version and selenium $selenium_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
      "jupyter_server==$jupyter_server_version" \
      "jupyter-server-proxy==$proxy_version" \
      "nbformat==$nbformat_version" \
      "requests==$requests_version" \
      "selenium==$selenium_version" >&2
  fi
}

start() {
  install
  mkdir -p "$work"
  {
    echo "TETHER_TEST_JUPYTER_PYTHON=$venv/bin/python"
    echo "TETHER_TEST_CHROMIUM=$(command -v chromium)"
    echo "TETHER_TEST_CHROMEDRIVER=$(command -v chromedriver)"
  } > "$env_file"
  echo "$name ready: $venv, $(chromium --version 2>/dev/null || echo chromium)"
}

testbed_main "$@"
