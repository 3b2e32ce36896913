#!/usr/bin/env bash
# What a first CUDA run hits, checked in one go and written to one report file.
#
#   scripts/gpu_check.sh CIFAR10 [KEY=VALUE ...] [--out DIR] [--dry-run]
#
# CIFAR10: class folders train/ test/, or a .tar.gz, .tgz or .tar of them (as for
# scripts/gpu_curves.sh). Runs, one after another, each logged in DIR/logs (default
# runs/gpu-check): cifar10-simclr-adios for 2 epochs on 5000 images in fp32, bf16, fp16, and
# compiled (bf16); `adios bench step` at 32 px (cifar10-simclr-adios) and at 96 px
# (stl10-simclr-adios); with two GPUs or more, the fp32 run again under torchrun on two. A run
# that fails is reported and the next one starts. DIR/report.md: the machine, and per run its
# command, exit status, time, summary.json and last log lines. KEY=VALUE goes to every training
# run. --dry-run checks each training run's configuration (adios config) and prints the
# commands, running nothing. PYTHON picks the interpreter (default: python); ADIOS_GPUS
# overrides the GPU count torch reports.
set -uo pipefail
if [[ $# -lt 1 ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python}
data=$1
shift
out=runs/gpu-check
dry=false
overrides=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --dry-run) dry=true; shift ;;
        *) overrides+=("$1"); shift ;;
    esac
done
source "$root/scripts/unpack_splits.sh"
data=$(unpack_splits "$data" cifar10) || exit 2
cd "$root"
gpus=${ADIOS_GPUS:-$("$py" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)}

short=(preset=cifar10-simclr-adios "data.path=$data" train.device=cuda train.epochs=2
       optim.warmup_epochs=1 data.num_train=5000 data.num_val=1000 data.num_test=1000)
names=() commands=()
add() {  # add NAME WORDS...: one run
    local name=$1
    shift
    names+=("$name")
    commands+=("$(printf '%q ' "$@")")
}
for precision in fp32 bf16 fp16; do
    add "$precision" "$py" -m adios.cli train "${short[@]}" "train.precision=$precision" \
        "run_dir=$out/$precision" "${overrides[@]}" --overwrite
done
add compiled "$py" -m adios.cli train "${short[@]}" train.precision=bf16 train.compile=true \
    "run_dir=$out/compiled" "${overrides[@]}" --overwrite
add bench-32px "$py" -m adios.cli bench step preset=cifar10-simclr-adios train.device=cuda \
    --masks 4 --repeats 3
add bench-96px "$py" -m adios.cli bench step preset=stl10-simclr-adios train.device=cuda \
    --masks 4 --repeats 3
if [[ $gpus -ge 2 ]]; then
    add torchrun-2gpu "$py" -m torch.distributed.run --standalone --nproc-per-node=2 \
        -m adios.cli train "${short[@]}" train.precision=fp32 train.sync_bn=true \
        "run_dir=$out/torchrun-2gpu" "${overrides[@]}" --overwrite
fi

if $dry; then
    echo "gpu_check.sh: $gpus GPU(s); report would be $out/report.md"
    for i in "${!names[@]}"; do
        echo "run ${names[$i]}: ${commands[$i]}"
    done
    for i in "${!names[@]}"; do
        if [[ ${commands[$i]} == *" train "* ]]; then  # the configuration each run would use
            cmd=${commands[$i]#*adios.cli train }
            eval "\"$py\" -m adios.cli config ${cmd% --overwrite }" > /dev/null ||
                { echo "gpu_check.sh: run ${names[$i]} has a bad configuration" >&2; exit 2; }
        fi
    done
    exit 0
fi

mkdir -p "$out/logs"
report=$out/report.md
{
    echo "# adios GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- adios commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- $("$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())" 2>&1)"
    echo "- GPUs: $gpus"
    echo
    echo '```'
    if command -v nvidia-smi > /dev/null; then nvidia-smi 2>&1; else echo "no nvidia-smi"; fi
    echo '```'
} > "$report"
for i in "${!names[@]}"; do
    name=${names[$i]}
    log=$out/logs/$name.log
    echo "gpu_check.sh: $name"
    started=$(date +%s)
    eval "${commands[$i]}" > "$log" 2>&1
    status=$?
    {
        echo
        echo "## $name: exit $status, $(($(date +%s) - started)) s"
        echo
        echo '```'
        echo "${commands[$i]}"
        echo '```'
        if [[ -f $out/$name/summary.json ]]; then
            echo
            echo '```json'
            cat "$out/$name/summary.json"
            echo '```'
        fi
        echo
        echo '```'
        tail -n 40 "$log"
        echo '```'
    } >> "$report"
done
echo "gpu_check.sh: report in $report"
