"""Needle in a haystack: determinism, depth bins, lengths and the needle itself."""

import re

import pytest

from lora_hyper.data import niah


def test_same_seed_same_records_and_different_seeds_differ():
  a, b, c = niah.NiahSource(20, seed=3), niah.NiahSource(20, seed=3), niah.NiahSource(20, seed=4)
  assert [a[i] for i in range(20)] == [b[i] for i in range(20)]
  assert [a[i]["answer"] for i in range(20)] != [c[i]["answer"] for i in range(20)]


def test_needle_is_present_exactly_once_and_is_the_answer():
  source = niah.NiahSource(50, length=(32, 256), seed=0)
  for i in range(len(source)):
    record = source[i]
    assert record["document"].count("The special magic number is") == 1
    assert niah.needle(record["answer"]) in record["document"]
    assert re.findall(r"\d+", record["document"]) == [record["answer"]]  # the filler holds no digits
    assert niah.DIGITS[0] <= len(record["answer"]) <= niah.DIGITS[1] and record["answer"][0] != "0"
    assert record["query"] == niah.QUERY
  four = niah.NiahSource(20, length=64, seed=0, digits=(4, 4))
  assert all(len(four[i]["answer"]) == 4 and four[i]["answer"][0] != "0" for i in range(20))


def test_depth_bins_cycle_and_the_needle_sits_in_its_bin():
  source = niah.NiahSource(30, length=1000, seed=1)
  for i in range(len(source)):
    record = source[i]
    assert record["depth_bin"] == i % niah.NUM_DEPTH_BINS
    before, after = record["document"].split(niah.needle(record["answer"]))
    fillers_before, fillers_after = before.count("."), after.count(".")
    depth = fillers_before / (fillers_before + fillers_after)
    slack = 1 / (fillers_before + fillers_after)  # the needle sits between sentences
    assert record["depth_bin"] / 10 - slack <= depth <= (record["depth_bin"] + 1) / 10 + slack


@pytest.mark.parametrize("target", [32, 100, 256, 1024, 4096])
def test_fixed_length_is_met_within_one_filler_sentence(target):
  source = niah.NiahSource(10, length=target, seed=0)
  for i in range(len(source)):
    record = source[i]
    assert record["length"] == niah.approx_token_count(record["document"])
    assert abs(record["length"] - target) <= 6


def test_length_range_and_a_custom_token_counter():
  def chars_over_four(text):
    return len(text) // 4

  source = niah.NiahSource(40, length=(64, 512), seed=2, count_tokens=chars_over_four)
  lengths = [source[i]["length"] for i in range(len(source))]
  assert all(64 - 6 <= n <= 512 + 6 for n in lengths)
  assert all(source[i]["length"] == chars_over_four(source[i]["document"]) for i in range(len(source)))
  assert max(lengths) - min(lengths) > 100  # lengths are drawn across the range


def test_out_of_range_index_raises():
  with pytest.raises(IndexError):
    niah.NiahSource(3)[3]
