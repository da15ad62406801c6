#!/usr/bin/env bash
# `make images`: build the gateway, operator and (CPU) inference worker images with podman,
# from the binaries already built in the target directory. Nothing is compiled or
# downloaded inside a container; no registry is needed.
#
#   1. podman, buildah, runc, debootstrap (+ uidmap, fuse-overlayfs, slirp4netns) from
#      Debian's packages when missing;
#   2. the base: a `debootstrap --variant=minbase bookworm` root filesystem (with
#      ca-certificates), made once into $PURRIFY_CACHE/images/bookworm-rootfs.tar and
#      imported as `debian:bookworm-slim` (the name the Containerfiles use);
#   3. the build context $TARGET_DIR/images-context: stripped binaries, ONNX Runtime (the
#      standard build and the OpenVINO one), the small models and the Swagger UI assets from the cache `make models` fills;
#   4. purrify-{gateway,operator,inference}:<workspace version> (and :latest).
#
# Environment: PURRIFY_CACHE (~/.cache/purrify), CARGO_TARGET_DIR (target),
# PURRIFY_IMAGE_PROFILE (debug: the binaries `make test` builds; or release),
# PURRIFY_IMAGES (the images to build, default "gateway operator inference").
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CONTAINERS_CONF="$root/tools/images/containers.conf"
cache=${PURRIFY_CACHE:-$HOME/.cache/purrify}
target=${CARGO_TARGET_DIR:-target}
profile=${PURRIFY_IMAGE_PROFILE:-debug}
images=${PURRIFY_IMAGES:-gateway operator inference}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
ort_version=$(sed -n 's/^ORT_VERSION = "\(.*\)"/\1/p' tools/models/fetch.py)
ort_openvino_version=$(sed -n 's/^ORT_OPENVINO_VERSION = "\(.*\)"/\1/p' tools/models/fetch.py)
log() { printf 'images: %s\n' "$*" >&2; }

# 1. Tools.
missing=()
for pair in podman:podman buildah:buildah runc:runc debootstrap:debootstrap \
            newuidmap:uidmap fuse-overlayfs:fuse-overlayfs slirp4netns:slirp4netns iptables:iptables; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
# Networks (`podman network create`, and RUN steps of builds) need netavark, which podman
# only recommends, and netavark needs iptables.
[[ -e /usr/lib/podman/netavark || -e /usr/libexec/podman/netavark ]] || missing+=(netavark aardvark-dns)
if ((${#missing[@]})); then
  # With recommends (catatonit, containers-common settings), as a plain `apt-get install podman`.
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The base image.
rootfs_tar="$cache/images/bookworm-rootfs.tar"
if ! podman image exists debian:bookworm-slim; then
  if [[ ! -s $rootfs_tar ]]; then
    log "debootstrap bookworm (minbase) into $rootfs_tar, once"
    mkdir -p "$cache/images"
    tmp="$cache/images/rootfs.tmp"
    rm -rf "$tmp"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$tmp" \
      "${PURRIFY_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/images/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/images/debootstrap.log" >&2; exit 1; }
    # What debian:bookworm-slim also leaves out: package lists, apt caches, docs.
    rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb \
           "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/*
    tar --numeric-owner -C "$tmp" -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$tmp"
  fi
  log "importing $rootfs_tar as debian:bookworm-slim"
  podman import --quiet --change 'CMD ["bash"]' "$rootfs_tar" debian:bookworm-slim >/dev/null
fi

# 3. The build context.
bindir="$target/$profile"
bins=()
for image in $images; do bins+=("purrify-$image"); done
need_build=()
for bin in "${bins[@]}"; do [[ -x $bindir/$bin ]] || need_build+=(-p "$bin"); done
if ((${#need_build[@]})); then
  log "building ${need_build[*]} ($profile)"
  cargo build ${CI:+--locked} $([[ $profile == release ]] && echo --release) "${need_build[@]}" --bins
fi
for dir in "$cache/onnxruntime" "$cache/onnxruntime-openvino" "$cache/models" "$cache/swagger-ui"; do
  [[ -d $dir ]] || { log "$dir is missing: run \`make models\` first"; exit 1; }
done
ctx="$target/images-context"
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/onnxruntime" "$ctx/onnxruntime-openvino" "$ctx/models"
for bin in "${bins[@]}"; do
  # Debug info is most of a debug binary's size; symbols stay for backtraces.
  strip --strip-debug -o "$ctx/bin/$bin" "$bindir/$bin" 2>/dev/null || cp "$bindir/$bin" "$ctx/bin/$bin"
done
# Both ONNX Runtime builds, each with the unversioned `libonnxruntime.so` the worker looks for
# (crates/inference/src/runtime/paths.rs): the standard one for the `cpu` provider, and the
# OpenVINO one (whose provider loads the OpenVINO libraries from its own directory) for
# `openvino`, the worker's default.
cp "$cache/onnxruntime/libonnxruntime.so.$ort_version" "$cache/onnxruntime/libonnxruntime_providers_shared.so" \
   "$cache/onnxruntime/LICENSE" "$ctx/onnxruntime/"
ln -s "libonnxruntime.so.$ort_version" "$ctx/onnxruntime/libonnxruntime.so"
for f in "$cache/onnxruntime-openvino/"*; do
  [[ -L $f ]] || cp "$f" "$ctx/onnxruntime-openvino/"
done
[[ -e $ctx/onnxruntime-openvino/libonnxruntime.so.$ort_openvino_version ]] \
  || { log "$cache/onnxruntime-openvino has no libonnxruntime.so.$ort_openvino_version: run \`make models\`"; exit 1; }
ln -s "libonnxruntime.so.$ort_openvino_version" "$ctx/onnxruntime-openvino/libonnxruntime.so"
cp "$cache/models/realesr-animevideov3-x2.onnx" "$cache/models/realesr-animevideov3-x4.onnx" \
   "$cache/models/scrfd.onnx" "$ctx/models/"
cp -r "$cache/models/mtcnn" "$ctx/models/mtcnn"
cp -r "$cache/swagger-ui" "$ctx/swagger-ui"

# 4. The images.
for image in $images; do
  log "building purrify-$image:$version"
  podman build --quiet --file "images/$image.Containerfile" \
    --build-arg "VERSION=$version" --build-arg "ORT_VERSION=$ort_version" \
    --build-arg "ORT_OPENVINO_VERSION=$ort_openvino_version" \
    --tag "purrify-$image:$version" --tag "purrify-$image:latest" "$ctx" >/dev/null
done
# Images the tags moved away from (earlier builds) would pile up run after run.
podman image prune --force >/dev/null
podman images --filter 'reference=purrify-*' --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -v ':latest ' >&2
