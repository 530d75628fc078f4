#!/usr/bin/env bash
# Make .cache/gpu, what a GPU run carries (docs/MODEL.md "GPU run plan"): the packed
# filtered corpus, the tokenizer and the Python 3.12 wheels the GPU image lacks.
# Run after `python -m engine.data.corpus all --vocab-size 16384` on this machine.
#   bash engine/data/gpu_bundle.sh                 # .cache/gpu (hybrid and global runs)
#   bash engine/data/gpu_bundle.sh longctx DIR     # .cache/gpu-longctx, with DIR's GGUF parts
set -euo pipefail
MODE=${1:-train}
cd "$(dirname "$0")/../.."
VOCAB=${VOCAB:-16384}
if [ "$MODE" = longctx ]; then
  B=.cache/gpu-longctx
  mkdir -p "$B/wheels" "$B/model"
  python3 -m engine.data.corpus pack --eval-only
  cp .cache/corpus/pack/corpus-eval.tar.xz "$B/"
  cp "${2:?directory with hybrid-lsp.gguf.part*}"/hybrid-lsp.gguf.part* "$B/model/"
else
  B=.cache/gpu
  mkdir -p "$B/wheels"
  cp .cache/corpus/pack/corpus.tar.xz "$B/corpus.tar.xz"
fi
cp ".cache/corpus/tokenizer-$VOCAB.json" "$B/tokenizer.json"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$B/wheels" \
  gguf==0.19.0 tree-sitter==0.26.1 tree-sitter-rust==0.24.2
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carry=$(du -sb "$B" | cut -f1)
echo "working tree $((tree / 1048576)) MiB + carried $B $((carry / 1048576)) MiB" \
  "(the device tool takes 64 MiB in all)"
[ $((tree + carry)) -lt $((64 * 1048576)) ] || { echo "too large for one call" >&2; exit 1; }
