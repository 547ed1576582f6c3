"""The contrastive task: its losses, the mesh the trainer offers it, its predictions; and the
retrieval evaluator against embeddings computed directly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from multimodal import registry
from multimodal.data import pp as pp_lib
from multimodal.data.shapes import captions
from multimodal.evaluators import retrieval_metrics
from multimodal.losses import contrastive
from multimodal.tasks import TASKS
from multimodal.training import sharding
from multimodal.training.trainer import Trainer
from tests.test_configs import load, REPO
from tests.test_contrastive_losses import embeddings


def outputs(n=16):
  image, text = embeddings(n)
  return {"image": image, "text": text, "temperature": jnp.float32(10.0),
          "bias": jnp.float32(-10.0)}


@pytest.mark.parametrize("name,reference", [
    ("softmax", lambda o: contrastive.softmax_loss(o["image"], o["text"], o["temperature"])),
    ("sigmoid", lambda o: contrastive.sigmoid_loss(o["image"], o["text"], o["temperature"],
                                                   o["bias"]))])
def test_loss_is_the_named_one(name, reference):
  task = TASKS.build({"type": "contrastive", "tokenizer": "shapes_text", "loss": name})
  loss, metrics = task.loss(outputs(), {})
  np.testing.assert_allclose(loss, reference(outputs()), rtol=1e-6)
  assert metrics["image_to_text_accuracy"] == 1.0  # Correlated pairs: each image's own text.


def test_chunked_loss_uses_the_offered_mesh_and_equals_the_plain_one():
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  chunked = TASKS.build({"type": "contrastive", "tokenizer": "shapes_text",
                         "loss": "sigmoid_chunked"}, offered=dict(mesh=mesh))
  plain = TASKS.build({"type": "contrastive", "tokenizer": "shapes_text", "loss": "sigmoid"},
                      offered=dict(mesh=mesh))  # Offered, not taken: the plain loss ignores it.
  assert chunked.mesh is mesh
  batch_sharded = jax.device_put(outputs(), {
      "image": sharding.batch_sharding(mesh), "text": sharding.batch_sharding(mesh),
      "temperature": sharding.replicated(mesh), "bias": sharding.replicated(mesh)})
  got, metrics = jax.jit(lambda o: chunked.loss(o, {}))(batch_sharded)
  np.testing.assert_allclose(got, plain.loss(outputs(), {})[0], rtol=1e-5)
  assert "image_to_text_accuracy" not in metrics  # It would need the [B, B] logits.


def test_bad_settings_are_errors():
  with pytest.raises(ValueError, match="Unknown contrastive loss 'clip'"):
    TASKS.build({"type": "contrastive", "tokenizer": "shapes_text", "loss": "clip"})
  with pytest.raises(ValueError, match="needs the device mesh"):
    TASKS.build({"type": "contrastive", "tokenizer": "shapes_text", "loss": "sigmoid_chunked"})


def test_offered_arguments_reach_only_constructors_that_name_them():
  table = registry.Registry("thing")
  table.register("wants")(lambda size, mesh: (size, mesh))
  table.register("ignores")(lambda size: size)
  assert table.build({"type": "wants", "size": 1}, offered=dict(mesh="m")) == (1, "m")
  assert table.build({"type": "ignores", "size": 1}, offered=dict(mesh="m")) == 1


def test_predict_gives_the_embeddings_the_batch_fed():
  task = TASKS.build({"type": "contrastive", "tokenizer": "shapes_text"})
  image_only = {"image": jnp.ones((2, 4)), "temperature": 1.0, "bias": 0.0}
  assert set(task.predict(image_only, {})) == {"image_embedding"}
  assert set(task.predict(outputs(2), {})) == {"image_embedding", "text_embedding"}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
  """A Trainer of the tiny shapes_retrieval config, its params as initialised."""
  tmp_path = tmp_path_factory.mktemp("retrieval")
  config = load(f"{REPO}/configs/shapes_retrieval.py").get_config("tiny=true")
  config.data.data_dir = str(tmp_path / "tfds")
  config.evals.validation.batch_size = 24  # 32 images: a full batch, then a padded one.
  config.evals.zero_shot.batch_size = 24
  return Trainer(config, str(tmp_path / "run"))


def embed_directly(trainer, examples, texts):
  """The model applied to all validation images and the given texts at once, unsharded."""
  tokenize = pp_lib.parse("tok(max_len=24, model='shapes_text', key='text', "
                          "out_key='text_tokens', mask_key='text_mask')")
  tokens = tokenize({"text": tf.constant(texts)})
  params = jax.device_get(trainer.state.params)
  return trainer.model.apply({"params": params}, {
      "image": np.stack([e["image"] for e in examples]).astype(np.float32) / 127.5 - 1,
      "text_tokens": tokens["text_tokens"].numpy(), "text_mask": tokens["text_mask"].numpy()},
      train=False)


def validation_examples(trainer):
  return list(tfds.as_numpy(trainer.builder.as_dataset(split="validation")))


def test_retrieval_evaluator_equals_recall_of_embeddings_computed_directly(trainer):
  evaluator = trainer.evaluators["validation"]
  image, text, text_image = evaluator.embeddings(trainer.state.params)
  examples = validation_examples(trainer)
  want = embed_directly(trainer, examples, [c for e in examples for c in e["captions"]])
  np.testing.assert_allclose(image, want["image"], atol=2e-5)
  np.testing.assert_allclose(text, want["text"], atol=2e-5)
  np.testing.assert_array_equal(text_image, np.repeat(np.arange(32), 5))
  metrics = evaluator.run(trainer.state.params, step=0)
  assert metrics == {**retrieval_metrics.recall_at_k(want["image"], want["text"], text_image),
                     "num_images": 32.0, "num_texts": 160.0}


def test_single_object_kind_labels_one_object_scenes_only():
  op = pp_lib.parse("single_object_kind")
  one = {"size": tf.constant([1]), "color": tf.constant([2]), "shape": tf.constant([0])}
  assert captions.kinds()[int(op({"objects": one})["label"])] == ("large", "blue", "circle")
  two = {k: tf.concat([v, v], 0) for k, v in one.items()}
  none = {k: tf.zeros([0], tf.int64) for k in one}
  assert op({"objects": two})["label"] == -1 and op({"objects": none})["label"] == -1


def test_zero_shot_accuracy_is_that_of_the_nearest_class_text(trainer):
  evaluator = trainer.evaluators["zero_shot"]
  examples = validation_examples(trainer)
  want = embed_directly(trainer, examples, captions.kind_phrases())
  np.testing.assert_allclose(evaluator.class_embeddings(trainer.state.params), want["text"],
                             atol=2e-5)
  names = trainer.builder.info.features["objects"]
  labels = np.array([
      captions.kinds().index((names["size"].int2str(o["size"][0]),
                              names["color"].int2str(o["color"][0]),
                              names["shape"].int2str(o["shape"][0])))
      if len(o["size"]) == 1 else -1 for o in (e["objects"] for e in examples)])
  one_object = labels >= 0
  predicted = np.argmax(want["image"] @ want["text"].T, axis=1)
  metrics = evaluator.run(trainer.state.params, step=0)
  assert metrics["num_examples"] == one_object.sum() > 0
  assert metrics["accuracy"] == pytest.approx(np.mean(predicted[one_object] ==
                                                      labels[one_object]))
