"""How the generation metrics' embedding responds to pixel noise, level by level.

The metric embedding (metagan/gan/evaluation.py: a ProtoNet trained on meta-train only) is
trusted only if its scores worsen as real drawings are corrupted. For each training seed this
takes the held-out drawings of --characters meta-test characters (the sets gan_table.py scores
a seed's generators on), adds Gaussian pixel noise of each std in --levels (clamped to [0, 1]),
and scores the noisy drawings as a generator's samples: per-character KID and Frechet distance,
all-way fidelity, precision and novelty. It shows over which range the response rises, and
where it stops (the drawings are no longer recognised: fidelity at chance).

    python benchmarks/embedding_noise.py --seeds 0 1 2 --out docs/results/session9/embedding_noise
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metagan.config import load_config  # noqa: E402
from metagan.data import load_splits  # noqa: E402
from metagan.gan.evaluation import embed_sets, evaluation_sets, metric_embedding  # noqa: E402
from metagan.gan.metrics import character_metrics  # noqa: E402

LEVELS = (0.0, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)
COLUMNS = ("kid", "frechet_distance", "fidelity", "chance_fidelity", "precision", "novelty")


def noise_curve(seed: int, characters: int, levels: tuple[float, ...]) -> dict[str, Any]:
    """The metrics of held-out drawings plus noise of each std in `levels`, for one seed."""
    cfg = load_config(ROOT / "configs/fewshot_gan.yaml", [f"train.seed={seed}"])
    splits = load_splits(cfg.data)
    embed = metric_embedding(cfg, splits, torch.device("cpu"))
    support, reference, other = evaluation_sets(splits.get("test"), characters,
                                                cfg.gan.eval_shots, None, seed)
    f_support, f_reference = embed_sets(embed, support), embed_sets(embed, reference)
    rng = torch.Generator().manual_seed(seed)
    rows = {}
    for level in levels:
        noisy = (other + level * torch.randn(other.shape, generator=rng)).clamp(0, 1)
        rows[f"{level:g}"] = character_metrics(f_support, embed_sets(embed, noisy), f_reference)
    return rows


def markdown(raw: dict[str, Any]) -> list[str]:
    """Mean ± sd over seeds, one row per noise level."""
    seeds = raw["seeds"]
    lines = [f"`{raw['command']}`, torch {torch.__version__}, seeds "
             f"{', '.join(seeds)}, {raw['characters']} meta-test characters per seed.", "",
             "| noise std | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for level in next(iter(seeds.values())):
        cells = []
        for column in COLUMNS:
            values = [seeds[s][level][column] for s in seeds]
            cells.append(f"{np.mean(values):.3g} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2g}")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    """Parse the arguments, score every level for every seed, write raw.json and table.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--characters", type=int, default=20)
    ap.add_argument("--levels", type=float, nargs="+", default=list(LEVELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    raw = {"command": "python benchmarks/embedding_noise.py " + shlex.join(sys.argv[1:]),
           "characters": args.characters,
           "seeds": {str(s): noise_curve(s, args.characters, tuple(args.levels))
                     for s in args.seeds}}
    (args.out / "raw.json").write_text(json.dumps(raw, indent=2))
    text = "\n".join(markdown(raw)) + "\n"
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
