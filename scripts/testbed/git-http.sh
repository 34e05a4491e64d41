#!/usr/bin/env bash
# Smart HTTP git server (lighttpd + git-http-backend) on a free port of 127.0.0.1, for
# sync-git's tests.
#
# Every request under /git/ needs HTTP basic authentication (user `tether`,
# password = a random token made at start), like a private repository on a
# forge; mod_auth sets REMOTE_USER, which lets git-http-backend accept pushes.
# `start` writes git-http.env:
#   TETHER_TEST_GIT_HTTP_URL_BASE    http://127.0.0.1:PORT/git
#   TETHER_TEST_GIT_HTTP_ROOT        directory where tests create bare repos
#   TETHER_TEST_GIT_HTTP_USER        the user name (tether)
#   TETHER_TEST_GIT_HTTP_TOKEN_FILE  file holding the token (mode 0600)
#   TETHER_TEST_GIT_HTTP_TOKEN       the token itself (tests of token_env)
# `stop` kills lighttpd by the PID it started (TERM, wait, KILL).
set -euo pipefail

name=git-http
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
dir="$testbed_dir/$name"
pid_file="$dir/lighttpd.pid"
env_file="$testbed_dir/$name.env"

# shellcheck source=../lib/testbed.sh
. "$(dirname "$0")/../lib/testbed.sh"

start() {
  if ! command -v lighttpd >/dev/null 2>&1 && [ ! -x /usr/sbin/lighttpd ]; then
    apt_install lighttpd
  fi
  local lighttpd
  lighttpd="$(command -v lighttpd || echo /usr/sbin/lighttpd)"
  stop_pid
  pick_ports "$dir/ports" 1
  port=${ports[0]}
  mkdir -p "$dir/repos" "$dir/www"
  rm -rf "$dir/repos/probe.git"
  git init -q --bare -b main "$dir/repos/probe.git"
  local token
  token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  (umask 077 && printf '%s' "$token" >"$dir/token" && printf 'tether:%s\n' "$token" >"$dir/users")
  cat >"$dir/lighttpd.conf" <<CONF
server.modules = ("mod_access", "mod_alias", "mod_auth", "mod_authn_file", "mod_cgi", "mod_setenv")
server.document-root = "$dir/www"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$dir/error.log"
server.max-request-size = 0
alias.url = ("/git/" => "$(git --exec-path)/git-http-backend/")
auth.backend = "plain"
auth.backend.plain.userfile = "$dir/users"
auth.require = ("/git/" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
\$HTTP["url"] =~ "^/git/" {
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "$dir/repos", "GIT_HTTP_EXPORT_ALL" => "1")
}
CONF
  nohup "$lighttpd" -D -f "$dir/lighttpd.conf" </dev/null >"$dir/lighttpd.log" 2>&1 &
  echo $! >"$pid_file"
  local url="http://tether:$token@127.0.0.1:$port/git/probe.git"
  for _ in $(seq 1 100); do
    if GIT_TERMINAL_PROMPT=0 git ls-remote "$url" >/dev/null 2>&1; then
      {
        echo "TETHER_TEST_GIT_HTTP_URL_BASE=http://127.0.0.1:$port/git"
        echo "TETHER_TEST_GIT_HTTP_ROOT=$dir/repos"
        echo "TETHER_TEST_GIT_HTTP_USER=tether"
        echo "TETHER_TEST_GIT_HTTP_TOKEN_FILE=$dir/token"
        echo "TETHER_TEST_GIT_HTTP_TOKEN=$token"
      } >"$env_file"
      echo "$name ready on http://127.0.0.1:$port/git (pid $(cat "$pid_file"))"
      return 0
    fi
    sleep 0.1
  done
  not_ready "$dir/lighttpd.log" "$dir/error.log"
}

testbed_main "$@"
