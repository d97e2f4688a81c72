"""benchmarks/report.py renders a GPU run whose every internalize measurement failed (the one-shot
lease records each failure in gpu.json and goes on) instead of stopping with an error."""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds benchmarks/

from benchmarks import report  # noqa: E402


def test_report_renders_a_gpu_run_whose_internalize_measurements_all_failed(tmp_path, monkeypatch):
  shutil.copytree(report.RESULTS, tmp_path, dirs_exist_ok=True)
  run = json.loads((tmp_path / "gpu.json").read_text())
  run["smoke"] = False  # whatever the shipped file holds, this is a GPU run
  run["internalize"] = [{"doc_tokens": r["doc_tokens"], "mode": r["mode"], "error": "XlaRuntimeError: OOM"}
                        for r in run["internalize"]]
  (tmp_path / "gpu.json").write_text(json.dumps(run))
  monkeypatch.setattr(report, "RESULTS", tmp_path)

  gpu_row = next(row for row in report.summary() if row.startswith("| 7 |"))
  assert "internalize: no measurement succeeded" in gpu_row
  measured_cd = report.gpu_cd_rows(run)
  assert measured_cd  # the measurements that did succeed still show
  assert all(f"{r['doc_tokens']}: {report.gpu_speedups(r)}" in gpu_row for r in measured_cd)
  report.notes()
  report.details()
