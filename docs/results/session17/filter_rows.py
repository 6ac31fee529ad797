"""Copy a gan_table raw file keeping only the named rows (and only the --extra entries of
those rows), so a merge of it makes a table of just those rows.

    python docs/results/session17/filter_rows.py RAW OUT 'ROW' ['ROW' ...]
"""

import json
import sys
from pathlib import Path

raw_path, out_path, *rows = sys.argv[1:]
raw = json.loads(Path(raw_path).read_text())
settings = raw["settings"]
settings["methods"] = [m for m in settings["methods"] if m in rows]
settings["extra"] = [e for e in settings.get("extra", []) if e[0] in rows]
for seed in raw["seeds"].values():
    seed["classification"] = {k: v for k, v in seed["classification"].items() if k in rows}
Path(out_path).parent.mkdir(parents=True, exist_ok=True)
Path(out_path).write_text(json.dumps(raw, indent=1))
