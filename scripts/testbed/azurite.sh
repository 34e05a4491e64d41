#!/usr/bin/env bash
# Azurite: Microsoft's Azure Storage emulator, the Azure Blob server for
# sync-s3's tests (`az://` through object_store's emulator mode).
#
# `start` installs Azurite (npm package azurite, pinned, into a cached
# directory with `npm install --prefix`: no global install) and a venv with
# the Azure SDK for Python (azure-storage-blob, pinned) if they are missing,
# starts `azurite-blob` (the Blob service only) on a free port of
# 127.0.0.1 with fresh data under $TETHER_TESTBED_DIR/azurite, waits for it,
# creates the container the tests use with the well-known emulator account
# (`devstoreaccount1`) and writes $TETHER_TESTBED_DIR/azurite.env:
#   AZURITE_BLOB_STORAGE_URL     http://127.0.0.1:PORT (object_store reads it
#                                itself in emulator mode)
#   TETHER_TEST_AZURE_CONTAINER  the container
# (no AZURE_STORAGE_* variables: they would reach every test's environment).
# `stop` stops the PID it started (TERM, wait, KILL) and removes the file.
#
# Neither --skipApiVersionCheck nor --loose is passed: object_store sends
# x-ms-version 2023-11-03, which Azurite 3.37.0 supports, and no header
# Azurite refuses; strict mode keeps the emulator as picky as Azure is
# (it is what caught the mirror's hyphenated metadata names).
set -euo pipefail

name=azurite
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
mkdir -p "$testbed_dir"
testbed_dir="$(cd "$testbed_dir" && pwd)"
cache_dir="${TETHER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}"
azurite_version=3.37.0
sdk_version=12.31.1
prefix="$cache_dir/azurite-$azurite_version"
venv="$cache_dir/azure-storage-blob-$sdk_version-venv"
work="$testbed_dir/$name"
pid_file="$work/azurite.pid"
env_file="$testbed_dir/$name.env"
container=tether-test
# The emulator's published development account (not a secret: it is the
# same in every Azurite and in Microsoft's documentation).
account=devstoreaccount1
account_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# shellcheck source=../lib/testbed.sh
. "$(dirname "$0")/../lib/testbed.sh"

install() {
  if [ "$("$prefix/node_modules/.bin/azurite-blob" --version 2>/dev/null)" != "$azurite_version" ]; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    echo "installing azurite@$azurite_version into $prefix"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    # Azurite 3.37.0 declares node >= 22 but runs on Debian's node 20; the
    # engine check is a warning only.
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
      "azurite@$azurite_version" >&2
  fi
  if ! "$venv/bin/python" -c "import azure.storage.blob" 2>/dev/null; then
    echo "installing azure-storage-blob==$sdk_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
      "azure-storage-blob==$sdk_version" >&2
  fi
}

connection_string() {
  echo "DefaultEndpointsProtocol=http;AccountName=$account;AccountKey=$account_key;BlobEndpoint=http://127.0.0.1:$port/$account;"
}

# Creates the container (idempotent), through the real Blob REST API.
create_container() {
  "$venv/bin/python" - "$(connection_string)" "$container" <<'PY'
import sys
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

# The service version object_store speaks, which Azurite supports.
client = BlobServiceClient.from_connection_string(sys.argv[1], api_version="2023-11-03")
try:
    client.create_container(sys.argv[2])
except ResourceExistsError:
    pass
PY
}

port_answers() {
  # Any HTTP answer (even 400/403) means the Blob service is up.
  curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null
}

start() {
  install
  stop_pid
  pick_ports "$work/ports" 1
  port=${ports[0]}
  # Tests take unique prefixes and need nothing from an earlier run; a
  # fresh data directory keeps the large-file tests' blobs from piling up.
  rm -rf "$work/data"
  mkdir -p "$work/data"
  # setsid: the server outlives this script and is not in its process group.
  setsid "$prefix/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$work/data" \
    > "$work/azurite.log" 2>&1 < /dev/null &
  echo $! > "$pid_file"
  local i
  for i in $(seq 1 120); do
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      echo "$name exited during start-up; log:" >&2
      tail -n 20 "$work/azurite.log" >&2
      rm -f "$pid_file"
      return 1
    fi
    if port_answers; then break; fi
    sleep 0.5
  done
  port_answers || not_ready "$work/azurite.log"
  create_container
  {
    echo "AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$port"
    echo "TETHER_TEST_AZURE_CONTAINER=$container"
  } > "$env_file"
  echo "$name ready on 127.0.0.1:$port (pid $(cat "$pid_file"), data in $work/data)"
}

testbed_main "$@"
