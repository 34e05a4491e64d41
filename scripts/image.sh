#!/usr/bin/env bash
# Builds tether's container image from the Containerfile with docker or
# podman, and optionally pushes it.
#
#   scripts/image.sh [IMAGE]          build IMAGE (default ghcr.io/tether/tether:<version>)
#   scripts/image.sh --push [IMAGE]   build, then push
#
# IMAGE is also baked into the binary as its default image
# (TETHER_DEFAULT_IMAGE), so `tether manifests webhook|inject` run from the
# image name the image itself. Environment: CONTAINER_ENGINE=docker|podman
# (default: whichever is found, podman first), PLATFORM (e.g. linux/arm64),
# RUST_VERSION, DEBIAN_RELEASE (Containerfile build arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

push=0
if [[ "${1:-}" == "--push" ]]; then
  push=1
  shift
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
image="${1:-ghcr.io/tether/tether:${version}}"

engine="${CONTAINER_ENGINE:-}"
if [[ -z "$engine" ]]; then
  for candidate in podman docker; do
    if command -v "$candidate" >/dev/null 2>&1; then
      engine=$candidate
      break
    fi
  done
fi
if [[ -z "$engine" ]]; then
  echo "image.sh: neither podman nor docker found; set CONTAINER_ENGINE" >&2
  exit 2
fi

args=(build --file Containerfile --tag "$image" --build-arg "TETHER_DEFAULT_IMAGE=$image")
[[ -n "${PLATFORM:-}" ]] && args+=(--platform "$PLATFORM")
[[ -n "${RUST_VERSION:-}" ]] && args+=(--build-arg "RUST_VERSION=$RUST_VERSION")
[[ -n "${DEBIAN_RELEASE:-}" ]] && args+=(--build-arg "DEBIAN_RELEASE=$DEBIAN_RELEASE")
if [[ "$engine" == docker ]]; then
  # RUN --mount=type=cache needs BuildKit.
  export DOCKER_BUILDKIT=1
fi

echo "image.sh: $engine ${args[*]} ." >&2
"$engine" "${args[@]}" .
if ((push)); then
  "$engine" push "$image"
fi
echo "$image"
