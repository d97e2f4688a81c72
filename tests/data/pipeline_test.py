"""Doc-to-LoRA training examples cut at random into chunks (the paper's second stage)."""

import numpy as np
import pytest

from lora_hyper.data import pipeline
from lora_hyper.hypernetworks import doc_to_lora
from lora_hyper.model import config as config_lib

from training.fakes import ByteTokenizer


def test_random_pieces_cover_the_document_in_order_with_the_papers_chunk_counts():
  rng = np.random.default_rng(0)
  ids = list(range(1000, 1200))  # 200 tokens: room for 1-8 chunks of at least 25
  counts = []
  for _ in range(2000):
    pieces = pipeline.random_pieces(ids, rng, max_chunks=8, max_tokens=127)
    assert sum(pieces, []) == ids
    assert all(pipeline.MIN_RANDOM_CHUNK_TOKENS <= len(p) <= 127 for p in pieces)
    counts.append(len(pieces))
  share = np.bincount(counts, minlength=9)[1:] / len(counts)
  # One chunk cannot hold 200 tokens, so the paper's 50% of single chunks become pairs.
  np.testing.assert_allclose(share, [0, 0.625, *[0.0625] * 6], atol=0.03)


def test_random_pieces_respect_short_documents_and_the_chunk_limit():
  rng = np.random.default_rng(1)
  for _ in range(200):
    assert pipeline.random_pieces(list(range(40)), rng, max_chunks=8, max_tokens=127) == [list(range(40))]
    assert pipeline.random_pieces(list(range(10)), rng, max_chunks=8, max_tokens=127) == [list(range(10))]
    assert len(pipeline.random_pieces(list(range(60)), rng, max_chunks=8, max_tokens=127)) <= 2
    assert len(pipeline.random_pieces(list(range(300)), rng, max_chunks=3, max_tokens=127)) == 3
  with pytest.raises(ValueError, match="needs 3 chunks of 127; num_chunks=2"):
    pipeline.random_pieces(list(range(300)), rng, max_chunks=2, max_tokens=127)


def test_randomly_chunked_examples_hold_the_document_and_are_the_same_every_time():
  hyper = doc_to_lora.d2l_tiny(config_lib.tiny_gemma3(), chunk_len=64, max_chunks=8)
  shapes = pipeline.DocExampleShapes(num_chunks=6, student_len=48, teacher_len=None, answer_len=8,
                                     random_chunking=True)
  tokenizer = ByteTokenizer()
  seen = set()
  for i in range(40):
    record = {"document": f"Record {i}. " + "The grass is green. " * (4 + i % 8), "query": "Which?", "answer": "X"}
    example = pipeline.doc_example(record, tokenizer, hyper, shapes)
    again = pipeline.doc_example(record, tokenizer, hyper, shapes)
    for key in example:
      np.testing.assert_array_equal(example[key], again[key])
    tokens, mask = example["chunk_tokens"], example["chunk_mask"]
    assert tokens.shape == mask.shape == (6, 64)
    used = mask.any(axis=-1)
    count = int(used.sum())
    assert used[:count].all() and np.all(tokens[used, 0] == hyper.base.bos_id)  # chunk slots filled in order
    joined = [int(t) for row, m in zip(tokens[used], mask[used]) for t in row[m][1:]]
    assert joined == tokenizer.encode(record["document"], add_bos=False)
    seen.add(count)
  assert len(seen) >= 3, seen  # documents of 84-224 tokens get several chunk counts
  with pytest.raises(ValueError, match="empty"):
    pipeline.doc_example({"document": "", "query": "q", "answer": "a"}, tokenizer, hyper, shapes)
  long_record = {"document": "The grass is green. " * 20, "query": "q", "answer": "a"}  # 400 bytes: 7 chunks
  for random_chunking in (True, False):
    fixed = pipeline.DocExampleShapes(num_chunks=6, student_len=48, teacher_len=None, answer_len=8,
                                      random_chunking=random_chunking)
    expected = r"400 tokens needs 7 chunks of 63 tokens, more than DocExampleShapes.num_chunks=6: raise it \(up to"
    with pytest.raises(ValueError, match=expected + r" the hypernetwork's max_chunks=8\)"):
      pipeline.doc_example(long_record, tokenizer, hyper, fixed)
  with pytest.raises(ValueError, match="a chunk holds more than chunk_len - 1 = 63 tokens"):
    doc_to_lora.pack_chunks([[list(range(3, 40)), list(range(3, 67))]], config=hyper)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_shuffle_records_or_keep_the_sources_order(shuffle):
  source = [{"i": np.int32(i)} for i in range(12)]
  it = iter(pipeline.batches(source, lambda r: r, global_batch_size=4, seed=0, shuffle=shuffle))
  order = np.concatenate([next(it)["i"] for _ in range(3)])
  assert sorted(order) == list(range(12))  # one pass reads every record once
  assert (list(order) == list(range(12))) == (not shuffle)
  if not shuffle:
    assert list(next(it)["i"]) == [0, 1, 2, 3]  # and starts over in the same order


@pytest.mark.parametrize("random_chunking", [False, True])
def test_chat_templated_hypernetworks_train_on_their_chat_turn_chunks(random_chunking):
  """A published (templated) Doc-to-LoRA, e.g. one imported to fine-tune: every chunk slot holds a chat
  turn around its piece, as wide as chunk_len plus the template."""
  prefix, suffix = (2, 5, 6), (7, 8)
  hyper = doc_to_lora.d2l_tiny(config_lib.tiny_gemma3(), chunk_len=40, max_chunks=8, chunk_prefix=prefix,
                               chunk_suffix=suffix)
  shapes = pipeline.DocExampleShapes(num_chunks=6, student_len=48, teacher_len=None, answer_len=8,
                                     random_chunking=random_chunking)
  tokenizer = ByteTokenizer()
  record = {"document": "The grass is green. " * 6, "query": "Which?", "answer": "X"}
  example = pipeline.doc_example(record, tokenizer, hyper, shapes)
  tokens, mask = example["chunk_tokens"], example["chunk_mask"]
  assert tokens.shape == (6, doc_to_lora.chunk_width(hyper)) == (6, 45)
  body = []
  for row, m in zip(tokens, mask):
    if m.any():
      turn = row[m].tolist()
      assert turn[:3] == list(prefix) and turn[-2:] == list(suffix)
      body += turn[3:-2]
  assert body == tokenizer.encode(record["document"], add_bos=False)
