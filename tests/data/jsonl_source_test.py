"""JSON Lines QA records: reading, clear errors, and the resumable writer of self-generated pairs."""

import json

import pytest

from lora_hyper import qa
from lora_hyper.data import fictional, jsonl_source


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return path


def test_reads_records_in_order_and_keeps_extra_keys(tmp_path):
  rows = [{"document": f"doc {i}", "query": "q?", "answer": f"a{i}", "doc_index": i} for i in range(3)]
  source = jsonl_source.JsonlQA(str(_write(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows] + [""])))
  assert len(source) == 3 and [source[i] for i in range(3)] == rows
  with pytest.raises(IndexError):
    source[3]


@pytest.mark.parametrize("lines, message", [
    (['{"document": "d", "query": "q", "answer": "a"}', '{"document": "d", "query"'], r"pairs.jsonl:2 is not valid JSON"),
    (['["document", "query"]'], r"pairs.jsonl:1 holds a list, not an object"),
    (['{"document": "d", "query": "q", "answer": "  "}'], r"pairs.jsonl:1 has no non-empty string \['answer'\]"),
    ([], r"holds no records"),
])
def test_bad_files_name_the_line_and_the_problem(tmp_path, lines, message):
  with pytest.raises(ValueError, match=message):
    jsonl_source.JsonlQA(str(_write(tmp_path / "pairs.jsonl", lines)))


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no JSON Lines file at .*absent.jsonl"):
    jsonl_source.JsonlQA(str(tmp_path / "absent.jsonl"))


def test_the_writer_resumes_after_the_last_whole_document(tmp_path):
  """An interrupted run (a cut-off last line) and a finished one both continue to the same file a
  single uninterrupted run writes; the records are the self-generated pairs of each document."""
  from training.fakes import tiny_base

  base = tiny_base()
  documents = [fictional.make_document(0, "train", i).text for i in range(3)]
  sampling = qa.decoding.SamplingConfig(max_new_tokens=3)
  whole = tmp_path / "whole.jsonl"
  count = qa.write_self_generated_pairs(base, documents, whole, 2, sampling=sampling)
  records = list(jsonl_source.read_records(whole))
  assert count == len(records) > 0
  for i, document in enumerate(documents):
    expected = qa.self_generated_pairs(base, document, 2, sampling=sampling)
    assert [{k: r[k] for k in ("document", "query", "answer")} for r in records if r["doc_index"] == i] == expected

  # Interrupted after document 1's first line: the next line cut off.
  lines = whole.read_text().splitlines(keepends=True)
  first_of_1 = next(j for j, r in enumerate(records) if r["doc_index"] == 1)
  assert first_of_1 + 1 < len(lines)
  cut = tmp_path / "cut.jsonl"
  cut.write_text("".join(lines[:first_of_1 + 1]) + lines[first_of_1 + 1][:7])
  seen = []
  assert qa.write_self_generated_pairs(base, documents, cut, 2, sampling=sampling,
                                       progress=lambda done, total: seen.append(done)) == count
  assert cut.read_text() == whole.read_text() and seen == [2, 3]
  # A finished file: nothing to do, nothing changed.
  assert qa.write_self_generated_pairs(base, documents, whole, 2, sampling=sampling) == count
  assert whole.read_text() == "".join(lines)


def test_the_writer_refuses_a_file_it_did_not_write(tmp_path):
  from training.fakes import tiny_base

  other = _write(tmp_path / "other.jsonl", ['{"document": "d", "query": "q", "answer": "a"}'])
  with pytest.raises(ValueError, match="without 'doc_index': not a file this function wrote"):
    qa.write_self_generated_pairs(tiny_base(), ["d"], other, 1)
  assert other.read_text() == '{"document": "d", "query": "q", "answer": "a"}\n'
