#!/usr/bin/env bash
# Makes sure a Docker engine answers. On a Debian/Ubuntu host where we are root
# and none answers, installs the distribution's engine and starts the daemon in
# the background (CI hosts often run without systemd). Anywhere else it stops
# with one line saying what is missing.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/bundle-dockerd.log}

engine_answers() { docker info >/dev/null 2>&1; }

if engine_answers; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "No Docker engine answers: start one (or run this as root on Debian/Ubuntu to have it installed)." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "Installing the distribution's Docker engine (docker.io)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
  :
else
  echo "Starting dockerd in the background (log: $log)..."
  nohup dockerd >>"$log" 2>&1 &
fi

for _ in $(seq 1 60); do
  if engine_answers; then
    echo "Docker engine is up: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 1
done

echo "The Docker engine did not answer within 60 s; see $log." >&2
exit 1
