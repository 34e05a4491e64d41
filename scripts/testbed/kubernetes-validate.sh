#!/usr/bin/env bash
# Offline Kubernetes schema validation for kube-deploy's tests.
#
# No API server can run here, so generated manifests are checked with
# `kubernetes-validate --strict` (PyPI; bundles the OpenAPI schemas of many
# Kubernetes versions) and, when kubectl is on the machine, `kubectl
# kustomize`. There is no server: `start` installs the tool into a venv
# (once, cached) and writes $TETHER_TESTBED_DIR/kubernetes-validate.env;
# `stop` has nothing to kill.
set -euo pipefail

name=kubernetes-validate
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
cache_dir="${TETHER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}"
venv="$cache_dir/kubernetes-validate-venv"
env_file="$testbed_dir/$name.env"

start() {
  mkdir -p "$testbed_dir" "$cache_dir"
  if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    echo "installing kubernetes-validate into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input kubernetes-validate
  fi
  # Fail now, not in the tests, if the tool does not run.
  "$venv/bin/kubernetes-validate" --version >/dev/null
  {
    echo "TETHER_TEST_KUBERNETES_VALIDATE=$venv/bin/kubernetes-validate"
    if command -v kubectl >/dev/null 2>&1; then
      echo "TETHER_TEST_KUBECTL=$(command -v kubectl)"
    fi
  } > "$env_file"
  echo "$name ready: $("$venv/bin/kubernetes-validate" --version 2>&1 | tail -n 1)"
}

stop() {
  # Nothing runs in the background; only the env file is ours to remove.
  rm -f "$env_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
