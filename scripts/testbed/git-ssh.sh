#!/usr/bin/env bash
# OpenSSH server on a free port of 127.0.0.1 serving git over ssh://, for sync-git's tests.
#
# Its own host key, config and authorized_keys live under
# $TETHER_TESTBED_DIR/git-ssh; logins are by key only, for one dedicated user
# (made here with useradd, shell git-shell). Also installs libnss-wrapper,
# which sync-git uses to run ssh under a UID with no /etc/passwd entry.
# `start` writes git-ssh.env:
#   TETHER_TEST_GIT_SSH_URL_BASE          ssh://USER@127.0.0.1:PORT<ROOT>
#   TETHER_TEST_GIT_SSH_ROOT              directory where tests create bare repos
#                                         (chown them to USER so it can push)
#   TETHER_TEST_GIT_SSH_USER              the ssh user
#   TETHER_TEST_GIT_SSH_KEY               client private key (mode 0600)
#   TETHER_TEST_GIT_SSH_KNOWN_HOSTS       known_hosts with the server's host key
#   TETHER_TEST_GIT_SSH_WRONG_KNOWN_HOSTS known_hosts with a different key
# `stop` kills sshd by the PID it started (TERM, wait, KILL).
set -euo pipefail

name=git-ssh
user=tethergit
testbed_dir="${TETHER_TESTBED_DIR:-$PWD/.testbed}"
dir="$testbed_dir/$name"
pid_file="$dir/sshd.pid"
env_file="$testbed_dir/$name.env"

# shellcheck source=../lib/testbed.sh
. "$(dirname "$0")/../lib/testbed.sh"

install_missing() {
  local missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
  compgen -G '/usr/lib*/libnss_wrapper.so' >/dev/null || compgen -G '/usr/lib/*/libnss_wrapper.so' >/dev/null \
    || missing+=(libnss-wrapper)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
}

start() {
  install_missing
  stop_pid
  pick_ports "$dir/ports" 1
  port=${ports[0]}
  mkdir -p "$dir/repos" /run/sshd
  chmod 755 "$dir"
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --home-dir "$dir/home" --no-create-home \
      --shell "$(command -v git-shell)" "$user"
  fi
  # useradd leaves the account locked; sshd refuses locked accounts.
  usermod -p '*' "$user"
  mkdir -p "$dir/home"
  [ -f "$dir/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C tether-test-host -f "$dir/host_key"
  [ -f "$dir/wrong_host_key" ] || ssh-keygen -q -t ed25519 -N '' -C tether-wrong-host -f "$dir/wrong_host_key"
  [ -f "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C tether-test-client -f "$dir/client_key"
  chmod 600 "$dir/client_key"
  cp "$dir/client_key.pub" "$dir/authorized_keys"
  chmod 644 "$dir/authorized_keys"
  echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$dir/known_hosts"
  echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/wrong_host_key.pub")" >"$dir/wrong_known_hosts"
  rm -rf "$dir/repos/probe.git"
  git init -q --bare -b main "$dir/repos/probe.git"
  chown -R "$user:" "$dir/repos" "$dir/home"
  cat >"$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid.unused
AuthorizedKeysFile $dir/authorized_keys
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $user
StrictModes no
LogLevel VERBOSE
CONF
  nohup /usr/sbin/sshd -D -f "$dir/sshd_config" -E "$dir/sshd.log" </dev/null >/dev/null 2>&1 &
  echo $! >"$pid_file"
  local ssh_cmd="ssh -F /dev/null -i $dir/client_key -o IdentitiesOnly=yes -o UserKnownHostsFile=$dir/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
  local url="ssh://$user@127.0.0.1:$port$dir/repos/probe.git"
  for _ in $(seq 1 100); do
    if GIT_SSH_COMMAND="$ssh_cmd" GIT_TERMINAL_PROMPT=0 git ls-remote "$url" >/dev/null 2>&1; then
      {
        echo "TETHER_TEST_GIT_SSH_URL_BASE=ssh://$user@127.0.0.1:$port$dir/repos"
        echo "TETHER_TEST_GIT_SSH_ROOT=$dir/repos"
        echo "TETHER_TEST_GIT_SSH_USER=$user"
        echo "TETHER_TEST_GIT_SSH_KEY=$dir/client_key"
        echo "TETHER_TEST_GIT_SSH_KNOWN_HOSTS=$dir/known_hosts"
        echo "TETHER_TEST_GIT_SSH_WRONG_KNOWN_HOSTS=$dir/wrong_known_hosts"
      } >"$env_file"
      echo "$name ready on ssh://127.0.0.1:$port (pid $(cat "$pid_file"))"
      return 0
    fi
    sleep 0.1
  done
  not_ready "$dir/sshd.log"
}

testbed_main "$@"
