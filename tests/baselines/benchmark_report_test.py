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


def test_report_renders_the_window_aware_cache_and_older_full_cache_results(monkeypatch, tmp_path):
  """memory / decode_latency results name the window-aware cache "ours" and the full one "full"; files from
  before it (issue 66) called the full cache "ours" / "in_context" and render under today's names."""
  at = lambda tokens, ours, full: {"doc_tokens": tokens, "adapter_rank": 8, "computed_mb": {
      "adapter_chunk1024": 2.0, "adapter_chunk8192": 1.0, "kv_ours": ours, "kv_full": full, "kv_ours_bf16": ours / 2,
      "kv_full_bf16": full / 2}, "ratio_adapter_to_kv": {"ours": 2.0 / ours, "full": 2.0 / full,
                                                         "chunk8192_vs_ours": 1.0 / ours}}
  shutil.copytree(report.RESULTS, tmp_path, dirs_exist_ok=True)  # the other sections as they are
  memory = {**json.loads((tmp_path / "memory.json").read_text()), "answer_time": [at(1024, 10.0, 40.0)],
            "ratio_at_128k": at(1024, 10.0, 40.0)["ratio_adapter_to_kv"]}
  row = lambda ms: {"doc_tokens": 256, "adapter_rank": 8, "ms_per_token": ms,
                    **{f"{k}_over_adapter": v / ms["adapter"] for k, v in ms.items() if k.startswith("in_context")}}
  real_decode = json.loads((tmp_path / "decode_latency.json").read_text())
  real_decode = {k: v for k, v in real_decode.items() if not k.startswith("computed")}  # FLOP rows: not at issue here
  decode = {**real_decode, "rows": [row({"in_context": 60.0, "in_context_full": 90.0, "adapter": 50.0, "bare": 45.0})],
            "adapter_growth_first_to_last": 1.0, "in_context_growth_first_to_last": 1.5,
            "in_context_full_growth_first_to_last": 2.0}
  old_memory = {**memory, "answer_time": [{
      "doc_tokens": 1024, "adapter_rank": 8,
      "computed_mb": {"adapter_chunk1024": 2.0, "adapter_chunk8192": 1.0, "kv_ours": 40.0, "kv_windowed": 10.0,
                      "kv_ours_bf16": 20.0, "kv_windowed_bf16": 5.0},
      "ratio_adapter_to_kv": {"ours": 2.0 / 40.0, "windowed": 2.0 / 10.0, "chunk8192_vs_windowed": 1.0 / 10.0}}]}
  old_decode = {**real_decode, "rows": [row({"in_context": 90.0, "adapter": 50.0, "bare": 45.0})],
                "adapter_growth_first_to_last": 1.0, "in_context_growth_first_to_last": 2.0}
  monkeypatch.setattr(report, "RESULTS", tmp_path)
  rendered = {}
  for name, files in (("new", (memory, decode)), ("old", (old_memory, old_decode))):
    (tmp_path / "memory.json").write_text(json.dumps(files[0]))
    (tmp_path / "decode_latency.json").write_text(json.dumps(files[1]))
    rows = report.summary()
    rendered[name] = [next(r for r in rows if r.startswith(f"| {n} |")) for n in ("2a", "3")]
    rendered[name].append("\n".join(report.details()))
    report.notes()
  for name in rendered:
    memory_row, decode_row, details = rendered[name]
    assert "| 1024 | 8 | 2.0 | 1.0 | 10 | 40 | 5 | - | 0.200 | 0.050 |" in details
    assert "our window-aware cache 0.200" in memory_row
    assert "the full cache (every layer, every position) 0.050" in memory_row
    assert "**missed** vs our cache" in memory_row
    assert "in the full cache 90 -> 90 (2.00x)" in decode_row
  assert "in context 60 -> 60 (1.50x)" in rendered["new"][1] and "in context 60" not in rendered["old"][1]
  assert "| 256 | 8 | 50.0 | 60.0 | 90.0 | 45.0 | 1.20 | 1.80 |" in rendered["new"][2]
  assert "| 256 | 8 | 50.0 | - | 90.0 | 45.0 | - | 1.80 |" in rendered["old"][2]
