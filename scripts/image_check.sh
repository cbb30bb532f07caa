#!/usr/bin/env bash
# `make image-check`: builds the image for real and runs three of its services.
#
# No image registry is reachable from the machines this runs on, so the base image is made here:
# `debootstrap --variant=minbase` of Debian's own packages (Python 3.11 and venv), imported with
# `docker import`; it trusts this machine's CA bundle, so a TLS-intercepting proxy in front of
# PyPI works during the build. The Dockerfile takes it as PYTHON_IMAGE (production builds keep
# the python image the Dockerfile names). Then scripts/image_check.py starts the market, SESA
# and federation containers on loopback (--network host), checks their health, runs one
# GeneratePlan and stops them.
#
# Needs root (apt-get, dockerd, debootstrap): Debian's docker.io and debootstrap are installed
# when missing, and a Docker daemon is started (--iptables=false, no bridge) when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-qtmesh-base:bookworm}
IMAGE=${IMAGE:-qtmesh:check}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
started=$(date +%s)

seconds() { echo $(($(date +%s) - $1)); }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap
fi

if ! docker info >/dev/null 2>&1; then
    mkdir -p .tools
    dockerd --iptables=false --bridge=none >.tools/dockerd.log 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null || { echo "dockerd did not start: see .tools/dockerd.log" >&2; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    t=$(date +%s)
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >/dev/null
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV LANG=C.UTF-8' \
        - "$BASE_IMAGE" >/dev/null
    echo "base image $BASE_IMAGE: $(seconds "$t") s (debootstrap and import)"
fi

t=$(date +%s)
# The classic builder: BuildKit would fetch the Dockerfile's syntax image from a registry.
DOCKER_BUILDKIT=0 docker build --quiet --network host --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    -f deploy/docker/Dockerfile -t "$IMAGE" . >/dev/null
echo "image $IMAGE: $(seconds "$t") s (build)"

.venv/bin/python scripts/image_check.py --image "$IMAGE"
echo "image-check: $(seconds "$started") s in all"
