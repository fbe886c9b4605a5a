"""Rerun a paper's table: train every row of `experiments/TABLE.py` and set afx's numbers beside the paper's.

An experiment file holds configuration only: `get_config(variant)`, `TITLE`, `METRIC` and `ROWS`, a
dict from row name to `{"label", "paper"[, "paper_params", "metric", "mean_of"]}`.  The variant of a
row is `ROW` at paper scale and `ROW,tiny` at tiny scale.  A row's `metric` replaces the table's
`METRIC` for that row (a table may mix mAP and accuracy rows).  A row with `mean_of` (a list of other
rows' names) trains nothing: it reports the mean of those rows' numbers, e.g. a cross-validation
score over one row per held-out fold.  An optional `BASELINES` dict (name → `{"label"}`) adds rows
that the evaluation computes without training: the first row's `eval.json` holds `NAME_METRIC` for each.
"""

import json
import os
from typing import Iterable

from afx.errors import ConfigError
from afx.train import config as config_lib
from afx.train.stages import train_row

SCALES = ("tiny", "paper")
EXTRA_COLUMNS = ("d_prime", "top1_accuracy", "nll_bits", "params", "paper_params")
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
  extra = [key for key in EXTRA_COLUMNS if any(key in row for row in results["rows"])]
  header = ["row", "model", "metric", "afx", "paper"] + extra
  lines = [f"## {results['title']} ({results['scale']} scale)", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in results["rows"]:
    cells = [row["name"], row.get("label", ""), row["metric"], _number(row["afx"]), _number(row["paper"])]
    cells += [_number(row.get(key)) for key in extra]
    lines.append("| " + " | ".join(cells) + " |")
  if "chance" in results:
    lines += ["", f"Chance (always the most frequent class): {results['chance']:.3f}"]
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


def _mean_entry(name: str, info: dict, members: list[dict]) -> dict:
  """A `mean_of` row: the mean of its members' numbers (of the columns every member has)."""
  entry = {"name": name, "label": info.get("label", name), "metric": members[0]["metric"],
           "afx": sum(m["afx"] for m in members) / len(members), "paper": info.get("paper"),
           "mean_of": [m["name"] for m in members]}
  for key in EXTRA_COLUMNS:
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
    entry = {"name": row, "label": info.get("label", row), "metric": row_metric, "afx": results[row_metric],
             "paper": info.get("paper")}
    entry.update({k: results[k] for k in EXTRA_COLUMNS if k in results})
    if "paper_params" in info:
      entry["paper_params"] = info["paper_params"]
    entries[row] = entry
  for row, members in means.items():
    entries[row] = _mean_entry(row, experiment.ROWS[row], [entries[m] for m in members])
  rows = [entries[row] for row in experiment.ROWS]
  for name, info in getattr(experiment, "BASELINES", {}).items():
    entry = {"name": name, "label": info.get("label", name), "metric": metric,
             "afx": first_results[f"{name}_{metric}"], "paper": None}
    for key in EXTRA_COLUMNS:
      if f"{name}_{key}" in first_results:
        entry[key] = first_results[f"{name}_{key}"]
    rows.append(entry)
  results = {"table": table, "title": experiment.TITLE, "scale": scale, "rows": rows}
  chance = [row_results["chance"] for row_results in all_results if "chance" in row_results]
  if chance:  # the accuracy of always answering the most frequent class, from the first row that has it
    results["chance"] = chance[0]
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  text = format_table(results)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(text)
  print(text)
  return results
