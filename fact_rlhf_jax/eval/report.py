"""Results files: `<out>/results.json` (one entry per benchmark) and `<out>/results.md` (markdown tables).

Each benchmark's results are a table: rows (splits, question types, categories) by metric columns. Running
another benchmark into the same directory adds its entry and keeps the others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fact_rlhf_jax.eval.records import read_json, write_json

PERCENT_KEYS = frozenset({"accuracy", "precision", "recall", "f1", "yes_ratio", "hallucination_rate", "chair_i", "chair_s", "coverage"})


def format_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{100 * value:.2f}" if key in PERCENT_KEYS else f"{value:.3f}"
    return str(value)


def markdown_table(rows: dict[str, dict[str, Any]], columns: Sequence[str], row_header: str) -> str:
    """Fractions in PERCENT_KEYS are printed as percentages; the JSON keeps fractions."""
    head = [row_header, *[f"{c} (%)" if c in PERCENT_KEYS else c for c in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, metrics in rows.items():
        cells = [name, *[format_value(c, metrics.get(c)) for c in columns]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_results(
    out_dir: str,
    benchmark: str,
    rows: dict[str, dict[str, Any]],
    columns: Sequence[str],
    row_header: str,
    *,
    settings: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Merges this benchmark into results.json, rewrites results.md, returns this benchmark's table."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "results.json")
    everything = read_json(json_path) if os.path.exists(json_path) else {}
    everything[benchmark] = {
        "results": rows,
        "columns": list(columns),
        "row_header": row_header,
        "settings": settings or {},
        "notes": list(notes),
    }
    write_json(json_path, everything)
    sections = []
    for name, entry in everything.items():
        section = [f"## {name}", "", markdown_table(entry["results"], entry["columns"], entry["row_header"])]
        section += [""] + [f"- {n}" for n in entry.get("notes", [])] if entry.get("notes") else []
        sections.append("\n".join(section))
    md_path = os.path.join(out_dir, "results.md")
    tmp = md_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# Evaluation results\n\n" + "\n\n".join(sections) + "\n")
    os.replace(tmp, md_path)
    return markdown_table(rows, columns, row_header)
