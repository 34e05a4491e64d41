#!/usr/bin/env bash
# Dash (Plotly's web-app framework, PyPI), for the notebook → app
# end-to-end test of `tether manifests app` and `tether follow`.
#
# Why Dash: it is what many notebook users already write apps in (Plotly
# figures, `app.run()` from a cell), it is the lightest of the notebook app
# frameworks — dash 3.4.0 installs in about 5 s into a 145 MB venv, against
# about 17 s and 394 MB for Panel (numpy, pandas, bokeh); Streamlit and
# Gradio pull pyarrow or the whole FastAPI/gradio-client stack — and its
# layout is served as JSON (`/_dash-layout`), so a test can read the
# notebook's content over plain HTTP without a browser.
#
# There is no server: `start` installs Dash into a cached venv (once,
# idempotent) and writes $TETHER_TESTBED_DIR/dash.env with
#   TETHER_TEST_DASH_PYTHON   the venv's python (runs the app command)
# `stop` has nothing to kill.
set -euo pipefail

name=dash
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
cache_dir="${TETHER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}"
dash_version=3.4.0
venv="$cache_dir/dash-$dash_version-venv"
env_file="$testbed_dir/$name.env"

start() {
  mkdir -p "$testbed_dir" "$cache_dir"
  if ! "$venv/bin/python" -c "import dash, sys; sys.exit(dash.__version__ != '$dash_version')" 2>/dev/null; then
    echo "installing dash==$dash_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "dash==$dash_version" >&2
  fi
  # Fail now, not in the tests, if it does not import.
  "$venv/bin/python" -c "import dash" >/dev/null
  echo "TETHER_TEST_DASH_PYTHON=$venv/bin/python" > "$env_file"
  echo "$name ready: dash $dash_version in $venv"
}

stop() {
  rm -f "$env_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
