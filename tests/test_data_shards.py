"""Each host reads its own part of the data: disjoint and complete across hosts, and the
training stream depends on the number of data shards, not on the number of hosts."""
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from multimodal.data import (
  builders,  # noqa: F401
  pipeline,
)

PP = "keep('question_id')"


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  builder = tfds.builder("shapes_vqa/tiny", data_dir=str(tmp_path_factory.mktemp("tfds")))
  builder.download_and_prepare()
  return builder


def as_host(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(jax, "process_count", lambda: count)


def question_ids(ds, num_batches=None):
  stream = ds.as_numpy_iterator()
  batches = stream if num_batches is None else (next(stream) for _ in range(num_batches))
  return [b["question_id"].tolist() for b in batches]


@pytest.mark.parametrize("num_hosts", [1, 2, 3])
def test_evaluation_shards_are_disjoint_and_complete(monkeypatch, builder, num_hosts):
  seen = []
  for host in range(num_hosts):
    as_host(monkeypatch, host, num_hosts)
    ds = pipeline.make_dataset(builder, split="validation", pp=PP, batch_size=7, train=False)
    seen += [i for batch in question_ids(ds) for i in batch]
  assert len(seen) == len(set(seen)) == builder.info.splits["validation"].num_examples


def test_training_shards_are_disjoint_and_complete(monkeypatch, builder):
  """Over one epoch's worth of batches, 4 shards over 2 hosts cover the split exactly once."""
  num_train = builder.info.splits["train"].num_examples  # 256
  seen = []
  for host in range(2):
    as_host(monkeypatch, host, 2)
    assert pipeline.host_shards(4) == [2 * host, 2 * host + 1]
    ds = pipeline.make_dataset(builder, split="train", pp=PP, batch_size=16, train=True,
                               num_shards=4, shuffle_buffer=1)  # no shuffle: epoch order
    seen += [i for batch in question_ids(ds, num_train // 32) for i in batch]
  assert len(seen) == len(set(seen)) == num_train


def test_global_batches_do_not_depend_on_the_number_of_hosts(monkeypatch, builder):
  def global_batches(num_hosts, skip_batches=0):
    per_host = []
    for host in range(num_hosts):
      as_host(monkeypatch, host, num_hosts)
      ds = pipeline.make_dataset(builder, split="train", pp=PP, batch_size=8 // num_hosts,
                                 train=True, seed=3, num_shards=2, skip_batches=skip_batches)
      per_host.append(question_ids(ds, 5))
    return np.concatenate(per_host, axis=1)  # [steps, global batch]

  one_host = global_batches(1)
  np.testing.assert_array_equal(one_host, global_batches(2))
  np.testing.assert_array_equal(one_host[2:], global_batches(2, skip_batches=2)[:3])
  with pytest.raises(ValueError, match="num_shards=3 does not split over 2 processes"):
    as_host(monkeypatch, 0, 2)
    pipeline.host_shards(3)


def test_where_keeps_only_the_named_values_in_training_and_evaluation(builder):
  pp = "keep('question_id', 'question_type')"
  where = {"question_type": ["relation", "count"]}
  types = lambda ds: {t.decode() for b in ds.as_numpy_iterator() for t in b["question_type"]}
  everything = pipeline.make_dataset(builder, split="validation", pp=pp, batch_size=7,
                                     train=False)
  kept = pipeline.make_dataset(builder, split="validation", pp=pp, batch_size=7, train=False,
                               where=where)
  expected = [q for b in everything.as_numpy_iterator()
              for q, t in zip(b["question_id"], b["question_type"])
              if t.decode() in where["question_type"]]
  assert expected and sorted(sum(question_ids(kept), [])) == sorted(expected)
  train = pipeline.make_dataset(builder, split="train", pp=pp, batch_size=8, train=True,
                                where=where)
  assert {t.decode() for _ in range(3) for t in next(iter(train))["question_type"].numpy()} \
      <= set(where["question_type"])
  assert types(everything) > types(kept)


def test_where_refuses_unknown_features_and_empty_value_lists(builder):
  with pytest.raises(KeyError, match="question_kind"):
    pipeline.make_dataset(builder, split="validation", pp=PP, batch_size=7, train=False,
                          where={"question_kind": ["relation"]})
  with pytest.raises(ValueError, match="no values"):
    pipeline.make_dataset(builder, split="validation", pp=PP, batch_size=7, train=False,
                          where={"question_type": []})


def test_where_keeps_or_drops_the_strings_a_regex_matches(builder):
  pp = "keep('question_id', 'question')"
  pattern = ".* (right of|below) .*"
  read = lambda where: {int(i): q.decode() for b in pipeline.make_dataset(
      builder, split="validation", pp=pp, batch_size=7, train=False,
      where=where).as_numpy_iterator() for i, q in zip(b["question_id"], b["question"])}
  everything = read(None)
  dropped = read({"question": {"not_matching": pattern}})
  kept = read({"question": {"matching": pattern}})
  assert kept and dropped
  assert all(" right of " in q or " below " in q for q in kept.values())
  assert not any(" right of " in q or " below " in q for q in dropped.values())
  assert {**kept, **dropped} == everything and not set(kept) & set(dropped)
  with pytest.raises(ValueError, match="not_matching"):
    read({"question": {"like": pattern}})
