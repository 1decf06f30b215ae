#!/usr/bin/env bash
# Provides a Debian base image with systemd, Python and sshd for the test
# containers: usage `build-base-image.sh <12|13> <image>`.
#
# An image that is present and was built by this recipe is reused. The default
# names (bundle-debian:12, bundle-debian:13) are built locally with debootstrap
# from the host's own apt mirror and `docker import`; any other name is pulled,
# so a user who can pull images sets DEBIAN12_IMAGE / DEBIAN13_IMAGE instead.
set -euo pipefail

release=${1:?usage: build-base-image.sh <12|13> <image>}
image=${2:?usage: build-base-image.sh <12|13> <image>}

case "$release" in
  12) suite=bookworm ;;
  13) suite=trixie ;;
  *) echo "Unsupported Debian release '$release' (12 or 13)." >&2; exit 1 ;;
esac

# The packages every test host starts with: what a freshly installed Debian
# server has that Ansible and the tests rely on.
packages=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,procps,iproute2,sudo,openssh-server
recipe=$(sha256sum <"$0" | cut -c1-16)

if docker image inspect "$image" >/dev/null 2>&1; then
  built_by=$(docker image inspect -f '{{ index .Config.Labels "bundle.recipe" }}' "$image" 2>/dev/null || true)
  if [ "$built_by" = "$recipe" ] || [[ "$image" != bundle-debian:* ]]; then
    exit 0
  fi
  echo "Image $image was built by an older recipe; rebuilding."
fi

if [[ "$image" != bundle-debian:* ]]; then
  docker pull "$image"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "Building $image needs root (debootstrap); run as root or set DEBIAN${release}_IMAGE to an image you can pull." >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The host's own Debian mirror, so the image builds wherever the host installs packages.
apt_uris() {
  grep -hsE '^\s*(URIs:|deb\s)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    | grep -oE '(https?|file)://[^ ]+' || true
}
mirror=${DEBIAN_MIRROR:-$(apt_uris | grep -E '/debian/?$' | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security_mirror=${DEBIAN_SECURITY_MIRROR:-$(apt_uris | grep -E '/debian-security/?$' | head -n1)}
security_mirror=${security_mirror:-${mirror}-security}
security_mirror=${security_mirror%/}

root=$(mktemp -d /var/tmp/bundle-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "Building $image: debootstrap $suite from $mirror (about a minute)..."
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Each container gets its own machine id at boot.
: >"$root/etc/machine-id"
# Background apt runs would hold the dpkg lock in the middle of a converge.
for unit in apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# Host keys are made per container at first boot (ssh.service's ExecStartPre).
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
# Package lists for every suite above, as a freshly installed server has them.
chroot "$root" apt-get update -qq
chroot "$root" apt-get clean

tar -C "$root" -c . | docker import \
  --change 'CMD ["/sbin/init"]' \
  --change "LABEL bundle.recipe=$recipe" \
  - "$image" >/dev/null
echo "Built $image."
