"""Two training runs side by side: loss by step, throughput and memory (issue 8).

    python -m engine.compare_runs RUN_A RUN_B [--names A,B]

RUN is a run's `out_dir` (or its `log.jsonl`). Prints a Markdown table of the training loss
at every step both runs logged, with the relative difference, then each run's steady
tokens/s per sequence length (the median over logged intervals, leaving out each length's
first interval, which holds the compilation), the ratio B/A, and the peak GPU memory per rank.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    """The records of a run's log.jsonl (`path` is the file or the run's out_dir)."""
    if path.is_dir():
        path = path / "log.jsonl"
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
    return records


def train_records(records: Sequence[dict]) -> dict[int, dict]:
    """Training-step records (those with `loss` and `tok_per_s`) by step; the last wins."""
    return {r["step"]: r for r in records if "loss" in r and "tok_per_s" in r}


def steady_throughput(steps: dict[int, dict]) -> dict[int, float]:
    """Median tokens/s per sequence length, without each length's first logged interval
    (compilation) or the first interval after a resume (a drop in `minutes` pace)."""
    by_len: dict[int, list[float]] = {}
    seen: set[int] = set()
    for step in sorted(steps):
        r = steps[step]
        seq = int(r.get("seq_len", 0))
        if seq not in seen:
            seen.add(seq)
            continue
        by_len.setdefault(seq, []).append(float(r["tok_per_s"]))
    # A resumed call recompiles: its first interval is far below the rest; drop outliers.
    out = {}
    for seq, xs in by_len.items():
        med = statistics.median(xs)
        out[seq] = statistics.median([x for x in xs if x > 0.5 * med])
    return out


def peak_memory(steps: dict[int, dict]) -> list[float]:
    """Peak GPU memory per rank in GiB (one entry per rank; empty on the CPU)."""
    peak: list[float] = []
    for r in steps.values():
        ranks = r.get("mem_gib_ranks") or ([r["mem_gib"]] if "mem_gib" in r else [])
        if len(ranks) > len(peak):
            peak += [0.0] * (len(ranks) - len(peak))
        peak = [max(p, m) for p, m in zip(peak, ranks, strict=False)] + peak[len(ranks):]
    return peak


def compare(a: Sequence[dict], b: Sequence[dict], names: tuple[str, str] = ("A", "B")) -> str:
    """The Markdown report of two runs' logs."""
    sa, sb = train_records(a), train_records(b)
    common = sorted(set(sa) & set(sb))
    na, nb = names
    lines = [f"| step | seq_len | loss {na} | loss {nb} | rel. diff |", "|---|---|---|---|---|"]
    for s in common:
        la, lb = sa[s]["loss"], sb[s]["loss"]
        lines.append(f"| {s} | {sa[s].get('seq_len', '')} | {la:.4f} | {lb:.4f} | "
                     f"{(lb - la) / la:+.2%} |")
    if not common:
        lines.append("| (no step logged by both runs) | | | | |")
    ta, tb = steady_throughput(sa), steady_throughput(sb)
    lines += ["", f"| seq_len | tokens/s {na} | tokens/s {nb} | {nb} / {na} |", "|---|---|---|---|"]
    for seq in sorted(set(ta) | set(tb)):
        x, y = ta.get(seq), tb.get(seq)
        ratio = f"{y / x:.3f}x" if x and y else "-"
        lines.append(f"| {seq} | {f'{x:,.0f}' if x else '-'} | {f'{y:,.0f}' if y else '-'} | "
                     f"{ratio} |")
    for name, steps in ((na, sa), (nb, sb)):
        mem = peak_memory(steps)
        if mem:
            lines.append(f"\npeak GPU memory per rank, {name}: "
                         + ", ".join(f"{m:.2f} GiB" for m in mem))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.compare_runs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--names", default="A,B", help="column names, comma-separated")
    args = ap.parse_args(argv)
    names = tuple(args.names.split(",", 1)) if "," in args.names else ("A", "B")
    try:
        a, b = read_log(args.run_a), read_log(args.run_b)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(compare(a, b, names))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
