"""JSON-lines records (metrics.jsonl, Tune's result.json), read the way a crash leaves them."""

from __future__ import annotations

import json
from typing import Any

from .config import ConfigError


def parse_records(text: str, where: str) -> list[dict[str, Any]]:
    """The records of JSON-lines text; a torn last line (a killed writer) is dropped.

    A damaged line before the last is a ConfigError naming `where` and the line.
    """
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                break  # the writer was killed mid-line
            raise ConfigError(f"{where}: line {number} is damaged (not JSON)") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: line {number} is not a JSON object")
        records.append(record)
    return records
