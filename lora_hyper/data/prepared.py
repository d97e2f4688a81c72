"""Doc-to-LoRA training data made ahead of time (`lora-hyper prepare-data`, `lora_hyper.data.prepare`)
as it lies on disk, and the grain source that reads it.

A prepared folder holds
  prepare.json                              the settings and provenance (models, template, seed), written first
  shard-00003-of-00020.array_record         the records of contexts [3 S, 4 S), S = shard_size
  shard-00003-of-00020.json                 the shard's counts (records, skipped contexts), written last: a
                                            shard is finished when this file exists
  report.json                               the counts of every shard, once all are finished
Files are renamed into place whole, so a killed run leaves only finished shards (and `.tmp` files,
removed by the rerun). Each record is one msgpack map:
  document, query, answer                   str: what every Doc-to-LoRA source has
  context_index, query_index                int: the context's place in the input, the query's among its own
  teacher_topk_logprobs  float32 [A, k]     the base model's top-k log-probs with the document in its prompt,
  teacher_topk_ids       int32   [A, k]     at each of the A answer tokens (" {answer}" then EOS)
  provenance                                {base, query_model, template, seed}: digests and the seed
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import grain
from flax import serialization

MANIFEST = "prepare.json"
REPORT = "report.json"
FORMAT = "lora_hyper.prepared/1"


def shard_name(index: int, count: int) -> str:
  return f"shard-{index:05d}-of-{count:05d}"


def shard_path(folder: str | Path, index: int, count: int) -> Path:
  return Path(folder) / f"{shard_name(index, count)}.array_record"


def marker_path(folder: str | Path, index: int, count: int) -> Path:
  return Path(folder) / f"{shard_name(index, count)}.json"


def encode_record(record: dict[str, Any]) -> bytes:
  return serialization.msgpack_serialize(record)


def decode_record(data: bytes) -> dict[str, Any]:
  return serialization.msgpack_restore(data)


def write_shard(path: str, records: Sequence[dict[str, Any]]) -> None:
  """Records to an ArrayRecord file, one record a chunk (group_size:1: grain reads any one directly)."""
  from array_record.python import array_record_module

  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  try:
    for record in records:
      writer.write(encode_record(record))
  finally:
    writer.close()


def read_manifest(folder: str | Path) -> dict[str, Any]:
  path = Path(folder) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(f"{str(folder)!r} holds no {MANIFEST}: not a folder `lora-hyper prepare-data` wrote")
  manifest = json.loads(path.read_text())
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path} is format {manifest.get('format')!r}; this lora-hyper reads {FORMAT!r}")
  return manifest


def missing_shards(folder: str | Path, count: int) -> list[int]:
  return [i for i in range(count) if not marker_path(folder, i, count).is_file()]


def read_records(folder: str | Path) -> Iterator[dict[str, Any]]:
  """Every record of a finished folder, shard after shard (for checks and small folders)."""
  source = PreparedQA(str(folder))
  for i in range(len(source)):
    yield source[i]


@dataclasses.dataclass(frozen=True)
class PreparedQA:
  """A grain random-access source over a finished prepared folder: its records in shard order,
  each a dict with the stored teacher top-k (numpy arrays), which `pipeline.doc_example` puts in
  the batch so the `d2l_topk` objective reads them instead of running the teacher."""

  folder: str

  def __post_init__(self):
    manifest = read_manifest(self.folder)
    count = manifest["num_shards"]
    missing = missing_shards(self.folder, count)
    if missing:
      raise ValueError(f"{self.folder!r} is not finished: {len(missing)} of {count} shards missing (first "
                       f"{shard_name(missing[0], count)}); rerun `lora-hyper prepare-data` with the same config")
    paths = [str(shard_path(self.folder, i, count)) for i in range(count)]
    sizes = [json.loads(marker_path(self.folder, i, count).read_text())["records"] for i in range(count)]
    if not sum(sizes):
      raise ValueError(f"{self.folder!r} holds no records (every context was skipped or unanswered: see "
                       f"{REPORT})")
    source = grain.sources.ArrayRecordDataSource(paths)
    if len(source) != sum(sizes):
      raise ValueError(f"{self.folder!r}: its shards hold {len(source)} records, their markers say {sum(sizes)}")
    object.__setattr__(self, "_source", source)
    object.__setattr__(self, "manifest", manifest)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} records")
    return decode_record(self._source[index])
