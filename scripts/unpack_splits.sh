# Sourced by scripts/gpu_curves.sh and scripts/gpu_check.sh: unpack_splits DATA NAME prints the
# class-folder tree (train/<class>/..., test/<class>/...) that DATA is or holds. DATA: the tree,
# or a .tar.gz, .tgz or .tar of it, at its top or in one folder, unpacked once, completely,
# into ${ADIOS_SCRATCH:-/tmp}/adios-NAME (a partial or another tarball's unpacking is redone).
unpack_splits() {
    local data=$1 name=$2 target stamp sub
    if [[ -f $data ]]; then
        case $data in
            *.tar.gz | *.tgz | *.tar) ;;
            *) echo "${0##*/}: $data is a file, not a .tar.gz, .tgz or .tar" >&2; return 2 ;;
        esac
        target=${ADIOS_SCRATCH:-/tmp}/adios-$name
        stamp="$(cd "$(dirname "$data")" && pwd)/$(basename "$data") $(wc -c < "$data")"
        # unpacked whole from this very tarball, or unpacked again: an interrupted tar leaves a
        # partial train/ that must not be trained on
        if [[ ! -f $target/.unpacked || $(cat "$target/.unpacked") != "$stamp" ]]; then
            rm -rf "$target" "$target.partial"
            mkdir -p "$target.partial"
            tar xf "$data" -C "$target.partial" || return 2
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
        echo "${0##*/}: $data has no train/ and test/ class folders" >&2
        return 2
    fi
    echo "$data"
}
