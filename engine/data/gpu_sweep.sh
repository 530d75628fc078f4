#!/usr/bin/env bash
# The learning-rate sweep of issue 7: both models (hybrid, global) at each learning rate, at a
# proxy scale that fits one device session, run one after the other on one GPU.
#
#   bash engine/data/gpu_sweep.sh [LR ...]        default LRs: 1e-3 2e-3 4e-3
#
# Proxy: the `gpu` / `gpu-global` presets (shapes, batch 512K tokens, AdamW, WSD with a 20%
# decay to lr/10, seed 1337) at one sequence length (4,096: one compilation per model), for
# SWEEP_STEPS steps (default 200, ~105M tokens) with SWEEP_WARMUP warm-up steps (default 40),
# no test evaluation and no export; each run ends with the validation bits/byte at 4K.
# Runs already finished on this machine are skipped, so the command can be repeated.
# Needs what gpu_run.sh needs (.cache/gpu). Writes runs/sweep/RESULTS.tsv (model, lr,
# val_bpb, val_loss, tokens/s) and copies it with every summary into $OUT/sweep.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/../.."
STEPS=${SWEEP_STEPS:-200}
WARMUP=${SWEEP_WARMUP:-40}
MODELS=${SWEEP_MODELS:-hybrid global}
LRS=("$@")
[ ${#LRS[@]} -gt 0 ] || LRS=(1e-3 2e-3 4e-3)
OUT=${OUT:-runs/gpu-out}
mkdir -p runs/sweep "$OUT"
for model in $MODELS; do
  for lr in "${LRS[@]}"; do
    dir=runs/sweep/$model-lr$lr
    if grep -q '"finished": true' "$dir/summary.json" 2>/dev/null; then continue; fi
    min_lr=$(python3 -c "print($lr / 10)")
    OUT=runs/sweep/out-$model-lr$lr STOP_MINUTES=60 bash engine/data/gpu_run.sh "$model" \
      --out_dir="$dir" --export= --test_eval=false --seq_len=4096 --seq_schedule= \
      --max_steps="$STEPS" --max_minutes=0 --warmup_steps="$WARMUP" --lr="$lr" \
      --min_lr="$min_lr" --eval_interval=100000 --ckpt_interval=100000
    echo "== sweep $model lr=$lr exit $?" >&2
  done
done
python3 - <<'EOF' > runs/sweep/RESULTS.tsv
import json, pathlib
print("model\tlr\tval_bpb\tval_loss\ttok_per_s\tsteps")
for p in sorted(pathlib.Path("runs/sweep").glob("*/summary.json")):
    s = json.loads(p.read_text())
    model, lr = p.parent.name.split("-lr")
    log = [json.loads(x) for x in (p.parent / "log.jsonl").read_text().splitlines() if x.strip()]
    tps = [r["tok_per_s"] for r in log if "tok_per_s" in r][2:]
    print(f"{model}\t{lr}\t{s.get('val_bpb', float('nan')):.4f}\t"
          f"{s.get('val_loss', float('nan')):.4f}\t{(sum(tps) / max(len(tps), 1)):.0f}\t"
          f"{s.get('steps')}")
EOF
cat runs/sweep/RESULTS.tsv
tar -C runs -czf "$OUT/sweep.tar.gz" --ignore-failed-read sweep/RESULTS.tsv \
  $(cd runs && ls sweep/*/summary.json sweep/*/log.jsonl sweep/*/config.json 2>/dev/null)
