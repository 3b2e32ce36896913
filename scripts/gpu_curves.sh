#!/usr/bin/env bash
# Short CIFAR-10 learning-curve grid on one GPU (grids/cifar10-curves-gpu.yaml: bf16,
# channels_last, batch 256, 4 schemes x 20 epochs), meant to finish in under 10 minutes.
#
#   scripts/gpu_curves.sh CIFAR10 [KEY=VALUE ...] [--out DIR] [--dry-run]
#
# CIFAR10: a class-folder tree (train/<class>/*.jpg, test/<class>/*.jpg) or a .tar.gz, .tgz or
# .tar holding one, at its top or in one folder (unpacked once, completely, into
# ${ADIOS_SCRATCH:-/tmp}/adios-cifar10; a partial unpacking is redone). Everything after it goes to
# `adios compare` (overrides win over the grid's). Interrupted, it resumes where it stopped.
# PYTHON picks the interpreter (default: python). A CPU check at a tiny size:
#   scripts/gpu_curves.sh DIR train.device=cpu train.precision=fp32 train.channels_last=false \
#       data.num_train=64 data.num_val=32 data.num_test=32 model.width=4 --out /tmp/gpu-check
set -euo pipefail
if [[ $# -lt 1 ]]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
data=$1
shift
if [[ -f $data ]]; then
    case $data in
        *.tar.gz | *.tgz | *.tar) ;;
        *) echo "gpu_curves.sh: $data is a file, not a .tar.gz, .tgz or .tar" >&2; exit 2 ;;
    esac
    target=${ADIOS_SCRATCH:-/tmp}/adios-cifar10
    stamp="$(cd "$(dirname "$data")" && pwd)/$(basename "$data") $(wc -c < "$data")"
    # unpacked whole from this very tarball, or unpacked again: an interrupted tar leaves a
    # partial train/ that must not be trained on
    if [[ ! -f $target/.unpacked || $(cat "$target/.unpacked") != "$stamp" ]]; then
        rm -rf "$target" "$target.partial"
        mkdir -p "$target.partial"
        tar xf "$data" -C "$target.partial"
        echo "$stamp" > "$target.partial/.unpacked"
        mv "$target.partial" "$target"
    fi
    data=$target
    if [[ ! -d $data/train ]]; then  # a tarball with one top folder (cifar10/train, ...)
        for sub in "$data"/*/; do
            if [[ -d $sub/train && -d $sub/test ]]; then
                data=${sub%/}
                break
            fi
        done
    fi
fi
if [[ ! -d $data/train || ! -d $data/test ]]; then
    echo "gpu_curves.sh: $data has no train/ and test/ class folders" >&2
    exit 2
fi
started=$(date +%s)
cd "$root"
"${PYTHON:-python}" -m adios.cli compare grids/cifar10-curves-gpu.yaml "data.path=$data" "$@"
echo "gpu_curves.sh: $(($(date +%s) - started)) s"
