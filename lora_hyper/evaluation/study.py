"""Evaluation as gin data: `EvalConfig` says what to score and how, `eval_sweep` a grid of bindings to
score it at, into one results table and plot (what `lora-hyper eval --gin_file F` runs).

  lora_hyper.EvalConfig.hypernetwork = 'lora_hyper/pretrained/d2l_gemma3_270m'
  lora_hyper.EvalConfig.data = @lora_hyper.NiahData()
  lora_hyper.eval_sweep.out = 'experiments/results/niah_chunk_sweep'
  lora_hyper.eval_sweep.axes = {'lora_hyper.EvalConfig.chunk_len': [128, 1024]}

A sweep point is one assignment of every axis; no axes is one point. `points` lists the points
instead of a grid, when they are not a product (e.g. the adapter at two chunk lengths and the base
model once). Each point is written to
OUT/points/ as it finishes (whole, renamed into place), so a rerun skips finished points, and a
point file written under other settings stops the rerun before any compute. With several
processes (`training.distributed`), process i scores points i, i + P, ... of the grid and process
0 gathers every point file into OUT/results.{json,md,png} and OUT/answers.jsonl, each naming the
command that made it; within a process, a point's batches are data-parallel over its devices
(`EvalConfig.data_parallel`). Every axis, every point's settings, the hypernetwork folders and the plot's
matplotlib are checked before anything loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gin

from lora_hyper import files
from lora_hyper.evaluation import data as data_lib
from lora_hyper.evaluation import evaluator

POINTS = "points"
RUN_ONLY = ("data_parallel",)  # EvalConfig fields that do not change the scores


class ConfigError(ValueError):
  """A configuration that cannot run, found before any compute (the CLI's usage error)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """One evaluation: the hypernetwork, the base model, the records and how they are scored."""

  hypernetwork: str | None = None  # a saved folder; None: the shipped Doc-to-LoRA
  base_model: str | None = None  # as `lora-hyper --model`; None: the embedded gemma3-270m
  dtype: str = "float32"
  data: Any = data_lib.BuiltinData()  # a lora_hyper.*Data
  conditions: tuple[str, ...] | None = None  # None: adapter, base (and context for documents)
  metrics: tuple[str, ...] = evaluator.DEFAULT_METRICS
  chunk_len: int | None = None  # Doc-to-LoRA: chunk documents at this length instead of the saved one
  iterative: bool = False  # Doc-to-LoRA: encode one base layer at a time (less memory, same adapter)
  batch_size: int = 8  # documents / descriptions turned into adapters at once
  max_new_tokens: int = 32
  distill: Any = None  # a lora_hyper.DistillConfig for the cd_* conditions (None: its defaults)
  distill_queries: int = 4  # cd_generated: queries generated per document
  seed: int = 0  # random_source's words
  lora: str | None = None  # the lora condition's saved adapter (e.g. a multi-task LoRA)
  task_loras: str | None = None  # the task_lora condition's library folder, one saved LoRA per task
  data_parallel: bool = True  # batches split over this process's devices when it has several (same answers)

  def __post_init__(self):
    if self.conditions is not None:
      object.__setattr__(self, "conditions", tuple(self.conditions))
      evaluator.check_conditions(self.conditions, "doc_to_lora")  # names only; the kind is checked on load
    object.__setattr__(self, "metrics", tuple(self.metrics))
    evaluator.check_metrics(self.metrics, self.conditions or ())
    conditions = self.conditions or ()
    for condition, name, value in (("lora", "lora", self.lora), ("task_lora", "task_loras", self.task_loras)):
      if condition in conditions and value is None:
        raise ValueError(f"the {condition} condition needs lora_hyper.EvalConfig.{name}")
      if value is not None and not Path(value).exists():
        raise ValueError(f"{name} {value!r} does not exist")
    if "few_shot" in conditions and getattr(self.data, "shots", None) == 0:
      raise ValueError(f"the few_shot condition needs demonstrations: bind lora_hyper.{type(self.data).__name__}"
                       ".shots to their number")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
    if not hasattr(self.data, "records"):
      raise ValueError(f"data must be a lora_hyper.*Data (e.g. @lora_hyper.NiahData()), got {self.data!r}")
    for name in ("batch_size", "max_new_tokens", "distill_queries"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
    if not isinstance(self.data_parallel, bool):
      raise ValueError(f"data_parallel must be True or False, got {self.data_parallel!r}")
    if self.chunk_len is not None and (not isinstance(self.chunk_len, int) or self.chunk_len < 2):
      raise ValueError(f"chunk_len must be an integer >= 2 or None, got {self.chunk_len!r}")
    if self.hypernetwork is not None and not Path(self.hypernetwork).is_dir():
      raise ValueError(f"hypernetwork folder {self.hypernetwork!r} does not exist")


# ----------------------------------------------------------------------------- pure helpers


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Every assignment of the axes, the first axis varying slowest; no axes: one empty point."""
  names = list(axes)
  return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def short(value: Any, others: Sequence[Any] = ()) -> str:
  """An axis value as a table shows it: a folder by its name, or by as many of its last path parts
  as tell it from the `others` on its axis ('runs/recon_8/hypernetwork' -> 'recon_8/hypernetwork')."""
  if not (isinstance(value, str) and "/" in value):
    return str(value)
  parts = Path(value.rstrip("/")).parts
  tails = [Path(o.rstrip("/")).parts for o in others if isinstance(o, str) and o.rstrip("/") != value.rstrip("/")]
  for n in range(1, len(parts) + 1):
    if all(t[-n:] != parts[-n:] for t in tails):
      return "/".join(parts[-n:])
  return value


def axis_label(binding: str) -> str:
  """'lora_hyper.EvalConfig.chunk_len' -> 'chunk_len'."""
  return binding.rsplit(".", 1)[-1]


def point_name(point: Mapping[str, Any]) -> str:
  """A file name for the point: readable, and unique by a digest of its exact values."""
  digest = hashlib.sha1(json.dumps(point, sort_keys=True, default=repr).encode()).hexdigest()[:10]
  readable = ",".join(f"{axis_label(k)}={short(v)}" for k, v in point.items())
  return (re.sub(r"[^A-Za-z0-9_.=,-]", "_", readable)[:120] + "-" if readable else "") + digest


def jsonable(value: Any) -> Any:
  """A config as plain JSON: dataclasses as {'type': ..., fields}, tuples as lists."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {"type": type(value).__name__, **{f.name: jsonable(getattr(value, f.name))
                                             for f in dataclasses.fields(value)}}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def cli_command() -> str:
  """This process's command line, as a user would type it (paths portable: files.portable_path)."""
  name = "lora-hyper" if Path(sys.argv[0]).name in ("lora-hyper", "__main__.py") else sys.argv[0]
  return files.portable_command([name, *sys.argv[1:]])


def recorded_config(config: EvalConfig) -> dict[str, Any]:
  """The config as a point file records it: JSON, its paths portable."""
  return files.portable_record(jsonable(config))


# ----------------------------------------------------------------------------- checks before compute


@contextlib.contextmanager
def _bound(point: Mapping[str, Any]):
  """The gin config with the point's bindings on top, as it was again afterwards (so a point that does
  not bind an axis sees the file's value, not the point before's)."""
  # gin has no public snapshot; _CONFIG maps (scope, selector) to {parameter: value}.
  config = gin.config._CONFIG  # pylint: disable=protected-access
  saved = {key: dict(params) for key, params in config.items()}
  try:
    with gin.unlock_config():
      for binding, value in point.items():
        gin.bind_parameter(binding, value)
    yield
  finally:
    config.clear()
    config.update(saved)


def check_points(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """An explicit list of points, each a dict of bindings gin knows."""
  if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence) or not points:
    raise ConfigError(f"lora_hyper.eval_sweep.points must be a non-empty list of {{binding: value}} dicts, got {points!r}")
  for point in points:
    if not isinstance(point, Mapping):
      raise ConfigError(f"lora_hyper.eval_sweep.points: each point is a {{binding: value}} dict, got {point!r}")
    check_axes({binding: [value] for binding, value in point.items()})
  return [dict(p) for p in points]


def check_axes(axes: Mapping[str, Sequence[Any]]) -> None:
  """Every axis is a binding gin knows (an existing configurable and parameter) with a list of values."""
  if not isinstance(axes, Mapping):
    raise ConfigError(f"lora_hyper.eval_sweep.axes must be a dict of binding -> values, got {axes!r}")
  for binding, values in axes.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
      raise ConfigError(f"sweep axis {binding!r} needs a non-empty list of values, got {values!r}")
    try:
      with _bound({binding: values[0]}):
        pass
    except (ValueError, KeyError) as e:
      raise ConfigError(f"sweep axis {binding!r} is not a gin binding that exists: {e}") from None


def point_configs(points: Sequence[Mapping[str, Any]], make: Callable[[], EvalConfig]) -> list[EvalConfig]:
  """Each point's EvalConfig, built under its bindings (which checks them)."""
  configs = []
  for point in points:
    try:
      with _bound(point):
        configs.append(make())
    except (ValueError, TypeError) as e:
      where = f" at sweep point {point}" if point else ""
      raise ConfigError(f"lora_hyper.EvalConfig{where}: {e}") from None
  return configs


def finished(out: Path, point: Mapping[str, Any], config: EvalConfig) -> bool:
  """Whether the point's file is there; one written under other settings is an error, not a skip."""
  path = out / POINTS / f"{point_name(point)}.json"
  if not path.is_file():
    return False
  # How a point ran is not what it scored: a point scored either way (or before the field) is finished.
  scored = lambda c: {k: v for k, v in c.items() if k not in RUN_ONLY}
  written, recorded = scored(files.read_json_file(path, str(path)).get("config", {})), scored(recorded_config(config))
  if written != recorded:
    changed = sorted(k for k in set(written) | set(recorded) if written.get(k) != recorded.get(k))
    raise ConfigError(f"{path} was written with other settings ({', '.join(changed)} differ): use another "
                      "lora_hyper.eval_sweep.out, or delete it to score the point again")
  return True


def check_plot_backend() -> None:
  try:
    import matplotlib  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise ConfigError("the results plot needs matplotlib: pip install 'lora-hyper[experiments]', or bind "
                      "lora_hyper.eval_sweep.plot_results = False") from None


# ----------------------------------------------------------------------------- scoring


@functools.lru_cache(maxsize=2)
def _base(source: str | None, dtype: str):
  from lora_hyper.model import base_model  # pylint: disable=import-outside-toplevel

  return base_model.load_base_model(source, dtype=dtype, log=lambda m: print(m, file=sys.stderr))


@functools.lru_cache(maxsize=4)
def _hypernetwork(folder: str, source: str | None, dtype: str):
  from lora_hyper.hypernetworks import saved  # pylint: disable=import-outside-toplevel

  return saved.load_hypernetwork(folder, _base(source, dtype))


def score_point(config: EvalConfig) -> evaluator.Evaluation:
  """Loads (once per process) what the config names and evaluates it, data-parallel over this
  process's devices unless `data_parallel` is off."""
  import jax  # pylint: disable=import-outside-toplevel

  from lora_hyper import sharding  # pylint: disable=import-outside-toplevel
  from lora_hyper.adapters import io  # pylint: disable=import-outside-toplevel
  from lora_hyper.hypernetworks import saved  # pylint: disable=import-outside-toplevel
  from lora_hyper.model import decoding  # pylint: disable=import-outside-toplevel

  base = _base(config.base_model, config.dtype)
  hyper = _hypernetwork(config.hypernetwork or str(saved.shipped("doc_to_lora")), config.base_model, config.dtype)
  records = config.data.records(hyper.kind, lambda text: len(base.tokenizer.encode(text, add_bos=False)))
  conditions = config.conditions or ()
  fixed_lora = io.load_adapter(config.lora, base)[0] if "lora" in conditions else None
  task_loras = (evaluator.load_task_loras(config.task_loras, [r.get("task_id") for r in records], base)
                if "task_lora" in conditions else None)
  mesh = sharding.data_mesh() if config.data_parallel and jax.local_device_count() > 1 else None
  if mesh is not None:
    print(f"batches data-parallel over {mesh.size} devices", file=sys.stderr, flush=True)
  return evaluator.evaluate(hyper, base, records, batch_size=config.batch_size,
                            sampling=decoding.SamplingConfig(max_new_tokens=config.max_new_tokens),
                            conditions=config.conditions, metrics=config.metrics, chunk_len=config.chunk_len,
                            iterative=config.iterative, distill=config.distill,
                            distill_queries=config.distill_queries, seed=config.seed, fixed_lora=fixed_lora,
                            task_loras=task_loras, mesh=mesh)


def write_point(out: Path, point: Mapping[str, Any], config: EvalConfig, result: evaluator.Evaluation,
                seconds: float, command: str) -> Path:
  path = out / POINTS / f"{point_name(point)}.json"
  body = {"point": files.portable_record(jsonable(dict(point))), "config": recorded_config(config),
          "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": seconds,
          "report": files.portable_record(result.report), "answers": result.answers}
  files.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8"))
  return path


# ----------------------------------------------------------------------------- the results


def result_rows(points: Sequence[dict], overall: bool = False) -> list[dict[str, Any]]:
  """One row per point (and per group, when its records have groups): the axes' values, the group
  and each condition's mean of each metric. `overall`: grouped points also get a row of their
  means over every record (group None), before their groups' rows."""
  rows = []
  for p in points:
    report = p["report"]
    groups = report.get("by_group") or {None: report["scores"]}
    if overall and report.get("by_group"):
      groups = {None: report["scores"], **groups}
    for group, scores in groups.items():
      rows.append({"point": p["point"], "group": group, "scores": scores})
  return rows


def _cell(point: Mapping[str, Any], axis: str, rows: Sequence[dict]) -> str:
  """A point's value on an axis ('-' where it binds none), a folder by as much of it as tells it apart."""
  if axis not in point:
    return "-"
  return short(point[axis], [r["point"][axis] for r in rows if axis in r["point"]])


def column_label(point: Mapping[str, Any], condition: str, points: Sequence[Mapping[str, Any]] = ()) -> str:
  """A point's condition as a column: its axes' values (the conditions axis aside; a folder by as much
  of it as tells it from the other `points`' values) and the condition."""
  shown = [f"{axis_label(a)}={short(v, [p[a] for p in points if a in p])}" for a, v in point.items()
           if axis_label(a) != "conditions"]
  return " ".join([", ".join(shown), condition]).strip()


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in body)]


def _point_rows_table(axes: Sequence[str], rows: Sequence[dict], grouped: bool) -> list[str]:
  # Every condition any point scored, in first-seen order ('-' where a point did not score it).
  columns = list(dict.fromkeys((c, m) for r in rows for c, ms in r["scores"].items() for m in ms))
  header = [*map(axis_label, axes), *(["group"] if grouped else []), *(f"{c} {m}" for c, m in columns)]
  body = [[_cell(r["point"], a, rows) for a in axes] + ([str(r["group"])] if grouped else [])
          + [f"{r['scores'][c][m]:.3f}" if m in r["scores"].get(c, {}) else "-" for c, m in columns] for r in rows]
  return _table(header, body)


def by_point_table(axes: Sequence[str], rows: Sequence[dict]) -> list[str]:
  """One row per point (and group), one column per condition and metric; with overall rows (group
  None) beside groups' rows, the overall table first, then the one by group."""
  overall = [r for r in rows if r["group"] is None]
  grouped = [r for r in rows if r["group"] is not None]
  if overall and grouped:
    return [*_point_rows_table(axes, overall, False), "", "By group:", "", *_point_rows_table(axes, grouped, True)]
  return _point_rows_table(axes, rows, bool(grouped))


def by_group_columns(rows: Sequence[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, float]]]:
  """(groups, column labels, {(group, label): {metric: score}}): every point's conditions side by side."""
  groups = list(dict.fromkeys(str(r["group"]) for r in rows))
  points = [r["point"] for r in rows]
  cells = {(str(r["group"]), column_label(r["point"], c, points)): scores
           for r in rows for c, scores in r["scores"].items()}
  labels = list(dict.fromkeys(label for _, label in cells))
  return groups, labels, cells


def by_group_tables(rows: Sequence[dict]) -> list[str]:
  """One table per metric: a row per group (e.g. haystack length), a column per point and condition."""
  groups, labels, cells = by_group_columns(rows)
  metric_names = list(dict.fromkeys(m for scores in cells.values() for m in scores))
  lines: list[str] = []
  for metric in metric_names:
    body = [[g] + [f"{cells[g, c][metric]:.3f}" if metric in cells.get((g, c), {}) else "-" for c in labels]
            for g in groups]
    lines += ["", f"{metric.replace('_', ' ')}:", "", *_table(["group", *labels], body)]
  return lines[1:]


TIMES_HEADING = "Update seconds per document"  # results.md's last table: measured times, not scores


def _ratio(value: float) -> str:
  return f"{value:.0f}" if value >= 100 else f"{value:.3g}"  # 3438, not 3.44e+03


def update_table(points: Sequence[Mapping[str, Any]]) -> list[str]:
  """Each point's update seconds per document, by condition (`evaluator.update_seconds`), and, where a
  point timed another update beside its adapter's (e.g. gradient context distillation's cd_oracle),
  each median over that adapter median: how many times slower than one hypernetwork pass. None timed:
  no lines."""
  timed = [(p["point"], p["report"].get("update_seconds", {})) for p in points]
  compared = any("adapter" in t and len(t) > 1 for _, t in timed)
  body = []
  for point, times in timed:
    adapter = times.get("adapter", {}).get("median")
    for c, u in times.items():
      ratio = ["-" if not adapter else _ratio(u["median"] / adapter)] if compared else []
      body.append([column_label(point, c, [q for q, _ in timed]), f"{u['median']:.3g}", f"{u['first']:.3g}",
                   str(u["updates"]), str(u.get("compiled", "-")), *ratio])
  if not body:
    return []
  header = ["point and condition", "median s", "first s", "updates", "compiled", *(["x adapter"] if compared else [])]
  how = "the median of the updates that compiled nothing, where counted; the first update apart"
  return ["", f"{TIMES_HEADING} ({how}):", "", *_table(header, body)]


def markdown(title: str, command: str, axes: Sequence[str], rows: Sequence[dict], table: str = "by_point",
             points: Sequence[Mapping[str, Any]] = ()) -> str:
  """The scores' tables, then the update times of `points` (the points' files) where they were timed."""
  lines = by_group_tables(rows) if table == "by_group" else by_point_table(axes, rows)
  lines += update_table(points)
  return f"# {title}\n\nProduced by `{command}` on {time.strftime('%Y-%m-%d')}.\n\n" + "\n".join(lines) + "\n"


def _number(text: str) -> float | None:
  try:
    return float(text)
  except ValueError:
    return None


def plot_lines(axes: Sequence[str], rows: Sequence[dict], table: str) -> tuple[str, dict[str, list[tuple[Any, dict]]]]:
  """(x label, {line label: [(x, {metric: score})]}). by_group: x the group, a line per point and
  condition; by_point: x the first axis whose values are all numbers (else the point's index), a line
  per value of the other axes, group and condition."""
  if table == "by_group":
    groups, labels, cells = by_group_columns(rows)
    numeric = all(_number(g) is not None for g in groups)
    x = {g: (_number(g) if numeric else i) for i, g in enumerate(groups)}
    return "group", {c: [(x[g], cells[g, c]) for g in groups if (g, c) in cells] for c in labels}
  numeric = [a for a in axes if all(isinstance(r["point"].get(a), (int, float)) for r in rows)]
  x_axis = numeric[0] if numeric else None
  lines: dict[str, list[tuple[Any, dict]]] = {}
  for i, r in enumerate(rows):
    others = [f"{axis_label(a)}={_cell(r['point'], a, rows)}" for a in axes if a != x_axis]
    group = [f"group {r['group']}"] if r["group"] is not None else []
    for condition, scores in r["scores"].items():
      label = ", ".join([*others, *group, condition])
      lines.setdefault(label, []).append((r["point"][x_axis] if x_axis else i, scores))
  return (axis_label(x_axis) if x_axis else "point"), lines


def plot(path: Path, title: str, command: str, axes: Sequence[str], rows: Sequence[dict],
         table: str = "by_point") -> None:
  """One panel per metric, the lines of `plot_lines`."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  x_label, lines = plot_lines(axes, rows, table)
  metric_names = list(dict.fromkeys(m for xy in lines.values() for _, scores in xy for m in scores))
  xs = sorted({x for xy in lines.values() for x, _ in xy})
  fig, panels = plt.subplots(1, len(metric_names), figsize=(5.5 * len(metric_names), 4), squeeze=False)
  for panel, metric in zip(panels[0], metric_names):
    for label, xy in lines.items():
      kept = [(x, scores[metric]) for x, scores in xy if metric in scores]
      panel.plot([x for x, _ in kept], [y for _, y in kept], marker="o", label=label)
    if len(xs) > 1 and xs[0] > 0 and x_label != "point":
      panel.set_xscale("log", base=2)
      panel.set_xticks(xs, [f"{x:g}" for x in xs])
    panel.set_xlabel(x_label)
    panel.set_ylabel(metric.replace("_", " "))
    panel.set_ylim(-0.02, 1.02)
  panels[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.suptitle(title)
  fig.text(0.01, 0.005, command, fontsize=6, family="monospace")
  fig.tight_layout(rect=(0, 0.04, 1, 1))
  files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png", metadata={"Description": command}))
  plt.close(fig)


def write_results(out: Path, title: str, command: str, axes: Sequence[str], points: Sequence[Mapping[str, Any]],
                  with_plot: bool, table: str = "by_point", overall: bool = False) -> dict[str, Any]:
  """OUT/results.{json,md,png} and OUT/answers.jsonl from every point's file, in grid order; `overall`:
  grouped points get a row over all their records too (and the plot shows only those)."""
  written = [files.read_json_file(out / POINTS / f"{point_name(p)}.json", "missing point") for p in points]
  rows = result_rows(written, overall)
  summary = {"title": title, "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "axes": list(axes),
             "table": table,
             "points": [{"point": w["point"], "config": w["config"], "report": w["report"], "seconds": w["seconds"],
                         "command": w["command"]} for w in written],
             "rows": rows}
  save = lambda name, text: files.atomic_write(out / name, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
  save("results.json", json.dumps(summary, indent=1) + "\n")
  save("results.md", markdown(title, command, axes, rows, table, written))
  files.write_json_lines(out / "answers.jsonl", [{"point": w["point"], "command": command, **a}
                                                 for w in written for a in w["answers"]])
  if with_plot:
    shown = [r for r in rows if r["group"] is None] if overall and any(r["group"] is None for r in rows) else rows
    plot(out / "results.png", title, command, axes, shown, table)
  names = ["results.json", "results.md", "answers.jsonl", *(["results.png"] if with_plot else [])]
  return {**summary, "out": str(out), "files": [str(out / n) for n in names]}


# ----------------------------------------------------------------------------- the entry point


def _sync(name: str) -> None:
  import jax  # pylint: disable=import-outside-toplevel

  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices(name)


@gin.configurable("eval_sweep", module="lora_hyper")
def eval_sweep(out: str = gin.REQUIRED, axes: Mapping[str, Sequence[Any]] | None = None,
               points: Sequence[Mapping[str, Any]] | None = None, title: str = "Evaluation",
               table: str = "by_point", overall_rows: bool = False, plot_results: bool = True,
               command: str | None = None, make_config: Callable[[], EvalConfig] | None = None,
               score: Callable[[EvalConfig], evaluator.Evaluation] = score_point) -> dict[str, Any]:
  """Scores every point of the grid `axes` (binding -> values), or of the list `points`, not yet in
  OUT/points/, then (process 0) writes the results; returns their summary (None on other processes).
  `table`: 'by_point' (a row per point and group) or 'by_group' (a table per metric, a row per group,
  a column per point and condition). `overall_rows`: records in groups (tasks, haystack lengths) are
  also tabled over all of a point's records. `make_config` builds the point's EvalConfig under its
  bindings (default: the gin-configured `lora_hyper.EvalConfig`)."""
  import jax  # pylint: disable=import-outside-toplevel

  axes = dict(axes or {})
  command = cli_command() if command is None else files.portable_text(command)
  make_config = make_config or _gin_eval_config
  if files.is_url(out):
    raise ConfigError(f"lora_hyper.eval_sweep.out = {out!r}: a sweep writes to a local folder, or on several hosts "
                      "to a mount they all share; gs:// and other URLs are not supported yet")
  out_dir = Path(out)
  if table not in ("by_point", "by_group"):
    raise ConfigError(f"lora_hyper.eval_sweep.table must be 'by_point' or 'by_group', got {table!r}")
  if points is not None:
    if axes:
      raise ConfigError("lora_hyper.eval_sweep: bind axes (a grid) or points (a list), not both")
    points = check_points(points)
    axes = dict.fromkeys(b for p in points for b in p)  # the table's columns
  else:
    check_axes(axes)
    points = grid(axes)
  configs = point_configs(points, make_config)
  if plot_results:
    check_plot_backend()
  todo = [k for k, (p, c) in enumerate(zip(points, configs)) if not finished(out_dir, p, c)]
  from lora_hyper.training import checkpointing  # pylint: disable=import-outside-toplevel

  checkpointing.check_shared_workdir(out_dir)  # several processes: one folder that all of them see
  index, count = jax.process_index(), jax.process_count()
  mine = [k for k in todo if k % count == index]
  print(f"sweep of {len(points)} point(s) into {out_dir}: {len(points) - len(todo)} finished before, "
        f"{len(mine)} to score here (process {index} of {count})", file=sys.stderr, flush=True)
  for k in mine:
    start = time.perf_counter()
    result = score(configs[k])
    seconds = time.perf_counter() - start
    path = write_point(out_dir, points[k], configs[k], result, seconds, command)
    shown = "  ".join(f"{c}: " + ", ".join(f"{m} {v:.3f}" for m, v in s.items())
                      for c, s in result.report["scores"].items())
    print(f"point {k + 1}/{len(points)} {points[k] or ''} in {seconds:.1f}s: {shown} -> {path}", file=sys.stderr,
          flush=True)
  _sync("lora_hyper: every sweep point written")
  if index != 0:
    return None
  return write_results(out_dir, title, command, list(axes), points, plot_results, table, overall_rows)


def _gin_eval_config() -> EvalConfig:
  from lora_hyper import configurables  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import

  return gin.get_configurable("lora_hyper.EvalConfig")()
