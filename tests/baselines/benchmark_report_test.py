"""benchmarks/report.py renders a GPU run with failed measurements (the one-shot lease records each
failure in gpu.json and goes on): it shows what was measured and the failures, instead of stopping
with an error, also when every internalize measurement failed."""

import json
import shutil

from benchmarks import report


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


def test_report_renders_a_gpu_run_with_a_failed_row(monkeypatch, tmp_path):
  ok = {"hypernetwork": "shipped", "doc_tokens": 8192, "chunks": 65, "mode": "batched", "seconds": 0.004,
        "tokens_per_s": 2e6, "compile_s": 3.0, "xla_temp_mb": 100.0, "xla_output_mb": 10.0}
  failed = {"hypernetwork": "d2l_small", "doc_tokens": 131072, "mode": "batched", "error": "RESOURCE_EXHAUSTED"}
  run = {"date": "2026-12-05", "elapsed_s": 300.0, "done": True, "dtype": "bfloat16", "model": "gemma3_270m",
         "machine": {"device_kind": "NVIDIA H200", "jax": "0.11.2"}, "sizes": {"rounds": 5, "cd_steps": 300},
         "internalize": [failed, ok],
         "cd": [{"doc_tokens": 8192, "cd_steps": 300, "cd_answer_s": 0.1, "cd_teacher_s": 0.1, "cd_steps_s": 1.0,
                 "cd_update_s": 1.2, "speedup": {"shipped batched": 300.0}}],
         "train": {"error": "ValueError: boom"}, "peak": {"n": 8192, "bfloat16_tflops": 700.0}}
  (tmp_path / "gpu.json").write_text(json.dumps(run))
  monkeypatch.setattr(report, "RESULTS", tmp_path)
  row = next(r for r in report.summary() if r.startswith("| 7 |"))
  assert "300 s on NVIDIA H200" in row and "shipped batched 300x" in row and "**met**" in row
  assert "8192 tokens batched 4 ms" in row  # the longest length measured, not the failed one
  text = "\n".join(report.details())
  assert "failed: RESOURCE_EXHAUSTED" in text and "| shipped | 8192 | 65 | batched | 4 ms |" in text
  assert "Meta-training step" not in text  # the failed train section has no numbers to show
  note = "\n".join(report.notes())
  assert "shipped batched 300x" in note and "Missed" not in note  # 300x meets 1a's 200x
