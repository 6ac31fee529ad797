"""Meta-val curves of the FIGR runs, conditioning on the adapted weights (sessions 6 and 8) or
also on the support set's code (session 9), at each meta-val evaluation: mean over the seeds
that reached it, with the per-seed values. Writes docs/results/session9/curves.md."""

import json
from pathlib import Path

R = Path(__file__).resolve().parents[1]
RUNS = {
    "weights (FIGR)": [R / "session6/figr_60min/metrics.jsonl",
                       R / "session8/figr_seed1/metrics.jsonl",
                       R / "session8/figr_seed2/metrics.jsonl"],
    "set": [R / f"session9/figr_set_seed{s}/metrics.jsonl" for s in (0, 1, 2)],
}
KEYS = ("val_fidelity", "val_kid", "val_novelty")


def evaluations(path: Path) -> dict[int, dict[str, float]]:
    """The meta-val records of one run by iteration."""
    out = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "val_kid" in record:
            out[record["iteration"]] = record
    return out


lines = ["| conditioning | meta-iterations | seeds | val fidelity % (per seed) | val KID | val novelty |",
         "|---|---|---|---|---|---|"]
for label, paths in RUNS.items():
    runs = [evaluations(p) for p in paths if p.is_file()]
    for it in sorted({i for r in runs for i in r}):
        have = [r[it] for r in runs if it in r]
        fid = [100 * h["val_fidelity"] for h in have]
        lines.append(f"| {label} | {it} | {len(have)} | {sum(fid) / len(fid):.1f} "
                     f"({', '.join(f'{f:.1f}' for f in fid)}) | "
                     f"{sum(h['val_kid'] for h in have) / len(have):.3f} | "
                     f"{sum(h['val_novelty'] for h in have) / len(have):.2f} |")
text = "\n".join(lines) + "\n"
(R / "session9/curves.md").write_text(text)
print(text)
