#!/usr/bin/env bash
# One bounded GPU run of issue 7, self-contained (docs/MODEL.md "GPU run plan").
#
#   bash engine/data/gpu_run.sh RUN [--key=value ...]      RUN: hybrid | global | longctx
#
# Inputs (carried to the device machine as the ignored folder .cache/gpu, made here by
# `bash engine/data/gpu_bundle.sh`): corpus.tar.xz (the filtered corpus and its splits),
# tokenizer.json, wheels/ (gguf, tree-sitter, tree-sitter-rust for Python 3.12). `longctx`
# reads BUNDLE=.cache/gpu-longctx (`gpu_bundle.sh longctx DIR`): the val/test files only
# (corpus-eval.tar.xz), the tokenizer, the wheels and the hybrid run's GGUF parts (model/).
# Steps, each skipped when already done on this machine: install the wheels, unpack the
# corpus, tokenize on every core, train (resuming from the checkpoint of an earlier call),
# evaluate, export. Each call stops training after STOP_MINUTES (default: what keeps the
# call under the device tool's 10-minute limit) and exits 3: call it again to resume.
# Exit 0: done; $OUT holds summary.json, metrics.tar.gz (log.jsonl, config.json, the
# token files' meta, train.log, gpu.csv) and the GGUF in parts of at most 16 MiB plus its
# sha256 (rejoin: cat hybrid-lsp.gguf.part* > hybrid-lsp.gguf): at most 8 files.
set -uo pipefail
RUN=${1:?usage: gpu_run.sh hybrid|global|longctx [--key=value ...]}
shift
T0=$(date +%s)
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/gpu-out}
mkdir -p "$OUT"
B=${BUNDLE:-.cache/gpu}               # longctx: .cache/gpu-longctx (gpu_bundle.sh longctx)
CALL_MINUTES=${CALL_MINUTES:-9.3}    # the device tool stops a command at 10 minutes
RESERVE_MINUTES=${RESERVE_MINUTES:-3.0}  # final evaluation + export
NPROC=${NPROC:-1}                    # GPUs (torchrun) for this run
CORPUS=${CORPUS:-.cache/corpus}      # where the corpus is unpacked
TOKENS=${TOKENS:-.cache/tokens}      # where the token files go
read -r -a TOK_ARGS <<< "${TOKENIZE_ARGS:-}"  # e.g. "--epochs 8 --context-share 0.3"
log() { echo "== [$(( $(date +%s) - T0 ))s] $*" >&2; }

log "packages"
export PYTHONPATH=/tmp/site:$PWD
if ! python3 -c "import gguf, tree_sitter, tree_sitter_rust" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$B"/wheels/*.whl || exit 1
fi

log "corpus"
if [ ! -f "$CORPUS/filtered/.done" ]; then
  TAR="$B/corpus.tar.xz"; [ -f "$TAR" ] || TAR="$B/corpus-eval.tar.xz"
  mkdir -p "$CORPUS" && tar -C "$CORPUS" -xJf "$TAR" || exit 1
  touch "$CORPUS/filtered/.done"
fi

[ "$RUN" = longctx ] && TOK_ARGS+=(--splits val,test)
log "tokens ($(nproc) cores)"
python3 -m hybrid_lsp.train_data --corpus "$CORPUS" --tokenizer "$B/tokenizer.json" \
  --out "$TOKENS" --workers "$(nproc)" "${TOK_ARGS[@]}" || exit 1
cp "$TOKENS/meta.json" "$OUT/tokens-meta.json"  # goes into metrics.tar.gz

case "$RUN" in
  hybrid) ARGS=(gpu --out_dir=runs/gpu-hybrid --export=runs/gpu-hybrid/hybrid-lsp.gguf) ;;
  global) ARGS=(gpu-global --out_dir=runs/gpu-global) ;;
  longctx)
    cat "$B"/model/hybrid-lsp.gguf.part* > /tmp/hybrid-lsp.gguf || exit 1
    ARGS=(gpu --out_dir=runs/gpu-longctx --init_gguf=/tmp/hybrid-lsp.gguf --eval_only=true
          --export= --test_contexts=1024,2048,4096,8192,16384,32768,65536) ;;
  *) echo "unknown run $RUN" >&2; exit 2 ;;
esac
ELAPSED=$(( $(date +%s) - T0 ))
STOP=${STOP_MINUTES:-$(python3 -c "print(max(1.0, $CALL_MINUTES - $RESERVE_MINUTES - $ELAPSED / 60))")}
log "train ${ARGS[*]} $* (stop after $STOP min of this call)"
if [ "$NPROC" -gt 1 ]; then
  torchrun --standalone --nproc-per-node "$NPROC" -m engine.train "${ARGS[@]}" \
    --tokenizer="$B/tokenizer.json" --corpus_dir="$CORPUS" --tokens_dir="$TOKENS" \
    --stop_minutes="$STOP" "$@" 2>&1 | tee -a "$OUT/train.log"
else
  python3 -m engine.train "${ARGS[@]}" --tokenizer="$B/tokenizer.json" \
    --corpus_dir="$CORPUS" --tokens_dir="$TOKENS" --stop_minutes="$STOP" "$@" 2>&1 \
    | tee -a "$OUT/train.log"
fi
RC=${PIPESTATUS[0]}
DIR=$(python3 -c "import sys; a=[x for x in sys.argv[1:] if x.startswith('--out_dir=')]; print(a[-1].split('=',1)[1])" "${ARGS[@]}" "$@")
# Under torchrun a stopped run exits 0 (engine.train's main): only a finished run writes
# summary.json with "finished": true.
if [ "$NPROC" -gt 1 ] && [ "$RC" -eq 0 ] && [ "$RUN" != longctx ] \
   && ! grep -q '"finished": true' "$DIR/summary.json" 2>/dev/null; then RC=3; fi
# The device tool returns at most 8 files: summary.json, metrics.tar.gz, the GGUF parts.
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > "$DIR/gpu.csv" 2>/dev/null
cp "$OUT/tokens-meta.json" "$OUT/train.log" "$DIR/" 2>/dev/null
tar -C "$DIR" -czf "$OUT/metrics.tar.gz" --ignore-failed-read log.jsonl config.json \
  summary.json tokens-meta.json train.log gpu.csv 2>/dev/null
rm -f "$OUT/tokens-meta.json" "$OUT/train.log"
[ -f "$DIR/summary.json" ] && cp "$DIR/summary.json" "$OUT/"
for part in "$DIR"/*.gguf.part* "$DIR"/*.gguf.sha256; do
  [ -f "$part" ] && cp "$part" "$OUT/"
done
log "exit $RC (0 done, 3 stopped: call again to resume)"
exit "$RC"
