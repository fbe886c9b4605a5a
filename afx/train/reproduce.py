"""Rerun a paper's table: train every row of `experiments/TABLE.py` and set afx's numbers beside the paper's.

An experiment file holds configuration only: `get_config(variant)`, `TITLE`, `METRIC` and `ROWS`, a
dict from row name to `{"label", "paper"[, "paper_params", "paper_COLUMN", "metric", "mean_of"]}`.  The variant of a
row is `ROW` at paper scale and `ROW,tiny` at tiny scale.  A row's `metric` replaces the table's
`METRIC` for that row (a table may mix mAP and accuracy rows).  A row with `mean_of` (a list of other
rows' names) trains nothing: it reports the mean of those rows' numbers, e.g. a cross-validation
score over one row per held-out fold.  Optional declarations:

  COLUMNS          more result keys shown beside each row's number (`params` and `paper_params` always are);
                   a `paper_*` column comes from the row's declaration (e.g. the paper's second test set)
  LOWER_IS_BETTER  the metrics for which a lower number is better (e.g. WER); the table marks them ↓
  BASELINES        name → `{"label"}`: rows that the evaluation computes without training; the first
                   row's `eval.json` holds `NAME_METRIC` (and `NAME_COLUMN`) for each
  NOTES            result key → label: numbers printed under the table (and kept in `results.json`)
                   from the first row whose results have that key, e.g. a chance level
"""

import json
import os
from typing import Iterable

from afx.errors import ConfigError
from afx.train import config as config_lib
from afx.train.stages import train_row

SCALES = ("tiny", "paper")
ALWAYS_COLUMNS = ("params", "paper_params")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def experiment_path(table: str) -> str:
  """`experiments/TABLE.py` under the current directory or the afx checkout."""
  candidates = [os.path.join(root, "experiments", f"{table}.py") for root in (os.getcwd(), REPO_ROOT)]
  for path in candidates:
    if os.path.isfile(path):
      return path
  tables = sorted({name[:-3] for root in (os.getcwd(), REPO_ROOT) if os.path.isdir(os.path.join(root, "experiments"))
                   for name in os.listdir(os.path.join(root, "experiments"))
                   if name.endswith(".py") and not name.startswith("_")})
  raise ConfigError(f"no experiment {table!r} (looked for {candidates[-1]}); known tables: {', '.join(tables)}")


def variant(row: str, scale: str) -> str:
  return row if scale == "paper" else f"{row},{scale}"


def _number(value) -> str:
  if value is None:
    return "–"
  if isinstance(value, int) or (isinstance(value, float) and value >= 1000):
    return f"{value / 1e6:.2f} M"
  return f"{value:.3f}"


def format_table(results: dict) -> str:
  """Markdown table of `results.json`."""
  extra = [key for key in results["columns"] if any(key in row for row in results["rows"])]
  header = ["row", "model", "metric", "afx", "paper"] + extra
  lines = [f"## {results['title']} ({results['scale']} scale)", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in results["rows"]:
    metric = row["metric"] + (" ↓" if row.get("better") == "lower" else "")
    cells = [row["name"], row.get("label", ""), metric, _number(row["afx"]), _number(row["paper"])]
    cells += [_number(row.get(key)) for key in extra]
    lines.append("| " + " | ".join(cells) + " |")
  notes = [f"{label}: {results[key]:.3f}" for key, label in results.get("notes", {}).items() if key in results]
  if notes:
    lines += [""] + notes
  return "\n".join(lines) + "\n"


def _check_means(table: str, rows: dict, metric: str) -> dict[str, list[str]]:
  """The table's `mean_of` rows → the trained rows each averages (all scored by the same metric)."""
  means = {row: list(info["mean_of"]) for row, info in rows.items() if "mean_of" in info}
  for row, members in means.items():
    wrong = [m for m in members if m not in rows or m in means]
    if not members or wrong:
      raise ConfigError(f"row {row!r} of {table}: mean_of must name trained rows of the table, "
                        f"got {wrong or members!r}")
    metrics = {rows[m].get("metric", metric) for m in members} | {rows[row].get("metric", metric)}
    if len(metrics) > 1:
      raise ConfigError(f"row {row!r} of {table} averages rows scored by different metrics: {sorted(metrics)}")
  return means


def _mean_entry(name: str, info: dict, members: list[dict], columns: tuple[str, ...]) -> dict:
  """A `mean_of` row: the mean of its members' numbers (of the columns every member has)."""
  entry = {"name": name, "label": info.get("label", name), "metric": members[0]["metric"],
           "better": members[0]["better"], "afx": sum(m["afx"] for m in members) / len(members),
           "paper": info.get("paper"), "mean_of": [m["name"] for m in members]}
  for key in columns:
    values = [m[key] for m in members if key in m]
    if key != "paper_params" and len(values) == len(members):
      entry[key] = values[0] if len(set(values)) == 1 else sum(values) / len(values)
  if "paper_params" in info:
    entry["paper_params"] = info["paper_params"]
  return entry


def reproduce(table: str, *, scale: str, workdir: str, overrides: Iterable[str] = ()) -> dict | None:
  """Train (or resume, or reuse) every row, then write `workdir/results.json` and `workdir/table.md`.

  Each row trains in `workdir/ROW`; a finished row is not trained again, so an interrupted
  reproduce continues where it stopped.  `mean_of` rows are computed after the rows they average
  and listed where the table declares them.  Returns the results, or None if a row was preempted.
  """
  if scale not in SCALES:
    raise ConfigError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
  path = experiment_path(table)
  experiment = config_lib.load_module(path)
  overrides = list(overrides)
  metric = experiment.METRIC
  columns = tuple(getattr(experiment, "COLUMNS", ())) + ALWAYS_COLUMNS
  lower_is_better = set(getattr(experiment, "LOWER_IS_BETTER", ()))
  better = lambda name: "lower" if name in lower_is_better else "higher"
  means = _check_means(table, experiment.ROWS, metric)
  trained = [row for row in experiment.ROWS if row not in means]
  configs = {}
  for row in trained:  # check every row's config before training any
    configs[row] = config_lib.apply_overrides(config_lib.load_config(f"{path}:{variant(row, scale)}"), overrides)
  entries, first_results, all_results = {}, None, []
  for row in trained:
    info = experiment.ROWS[row]
    results = train_row(configs[row], os.path.join(workdir, row), stages_dir=os.path.join(workdir, "stages"))
    if results is None:
      return None
    first_results = first_results or results
    all_results.append(results)
    row_metric = info.get("metric", metric)
    if row_metric not in results:
      raise ConfigError(f"row {row!r} of {table} reports {row_metric!r}, which its results lack (they have "
                        f"{', '.join(sorted(results))}); set the row's 'metric' or the table's METRIC")
    entry = {"name": row, "label": info.get("label", row), "metric": row_metric, "better": better(row_metric),
             "afx": results[row_metric], "paper": info.get("paper")}
    entry.update({k: results[k] for k in columns if k in results})
    entry.update({k: info[k] for k in columns if k.startswith("paper_") and k in info})
    entries[row] = entry
  for row, members in means.items():
    entries[row] = _mean_entry(row, experiment.ROWS[row], [entries[m] for m in members], columns)
  rows = [entries[row] for row in experiment.ROWS]
  for name, info in getattr(experiment, "BASELINES", {}).items():
    entry = {"name": name, "label": info.get("label", name), "metric": metric, "better": better(metric),
             "afx": first_results[f"{name}_{metric}"], "paper": None}
    for key in columns:
      if f"{name}_{key}" in first_results:
        entry[key] = first_results[f"{name}_{key}"]
    rows.append(entry)
  notes = dict(getattr(experiment, "NOTES", {}))
  results = {"table": table, "title": experiment.TITLE, "scale": scale, "columns": list(columns), "notes": notes,
             "rows": rows}
  for key in notes:
    found = [row_results[key] for row_results in all_results if key in row_results]
    if found:
      results[key] = found[0]
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  text = format_table(results)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(text)
  print(text)
  return results
