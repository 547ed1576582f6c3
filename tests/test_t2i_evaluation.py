"""Text-to-image evaluation: the prompt set and its specs, the prompt matcher, FID, the
classifier's ceiling, and the text_to_image and conditioning evaluators end to end."""
from __future__ import annotations

import collections
import dataclasses
import io
import re
import types

import jax
import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import shapes_scene_parser
from multimodal import models, tasks
from multimodal.data import pipeline, tokenizer
from multimodal.data.shapes import scenes, t2i_prompts
from multimodal.data.shapes.render import render
from multimodal.evaluators import EVALUATORS, EvalContext, fid, prompt_match
from multimodal.evaluators import text_to_image
from multimodal.training import sharding, workdir_config
from multimodal.training import trainer as trainer_lib
from multimodal.training.checkpoint import Checkpointer
from multimodal.training.task_methods import make_task_fn
from multimodal.training.train_state import ModelVariables

# Parsing prompts independently of the code that writes them (as tests/test_shapes_captions.py).
_COUNTS = {"a": 1, "two": 2, "three": 3}
_GROUP = re.compile(r"\b(a|two|three) (small|large) ({}) ({})s?\b".format(
    "|".join(scenes.COLORS), "|".join(scenes.SHAPES)))
_REGIONS = {"in the top left corner": (0, 0), "at the top": (0, 1),
            "in the top right corner": (0, 2), "on the left": (1, 0), "in the center": (1, 1),
            "on the right": (1, 2), "in the bottom left corner": (2, 0),
            "at the bottom": (2, 1), "in the bottom right corner": (2, 2)}
# pattern -> (index of the mention that comes first along the axis, axis)
_RELATION_WORDS = (
    (r" above ", 0, "y"), (r" below ", 1, "y"), (r" with .* over (it|them)$", 1, "y"),
    (r" with .* under (it|them)$", 0, "y"), (r" to the left of ", 0, "x"),
    (r" to the right of ", 1, "x"), (r" with .* to (its|their) right$", 0, "x"),
    (r" with .* to (its|their) left$", 1, "x"))


def mentions(text: str) -> list[tuple[tuple[str, str, str], int]]:
  return [((size, color, shape), _COUNTS[n]) for n, size, color, shape in _GROUP.findall(text)]


def as_kind(ref) -> tuple[str, str, str]:
  values = dict(ref)
  return values["size"], values["color"], values["shape"]


def found_objects(scene: scenes.Scene) -> list[dict]:
  """What a perfect reader finds on the scene's picture."""
  return [dict(shape=o.shape, color=o.color, size=o.size, x=o.x, y=o.y) for o in scene.objects]


@pytest.fixture(scope="module")
def prompts():
  return t2i_prompts.prompt_set(12)


def test_the_prompt_set_is_fixed_and_holds_each_kind(prompts, monkeypatch):
  assert prompts == t2i_prompts.prompt_set(12)
  assert [p.kind for p in prompts] == [k for k in t2i_prompts.KINDS for _ in range(12)]
  for kind in t2i_prompts.KINDS:
    assert len({p.text for p in prompts if p.kind == kind}) == 12, kind
  other = t2i_prompts.prompt_set(12, seed=1)
  assert [p.text for p in other] != [p.text for p in prompts]
  with pytest.raises(ValueError, match="per kind"):
    t2i_prompts.prompt_set(0)
  monkeypatch.setattr(t2i_prompts, "_MAX_SKIPPED_IN_A_ROW", 300)  # fail fast
  with pytest.raises(ValueError, match="count prompts"):
    t2i_prompts.prompt_set(73)  # 36 kinds x 2 or 3 of them


def test_every_spec_says_what_its_text_says(prompts):
  for p in prompts:
    named = mentions(p.text)
    spec_kinds = collections.Counter(as_kind(r) for r in p.spec.objects)
    assert collections.Counter(dict(named)) == spec_kinds, p.text
    assert collections.Counter((o.size, o.color, o.shape) for o in p.scene.objects) == spec_kinds
    regions = [phrase for phrase in _REGIONS if phrase in p.text]
    relations = [(first, axis) for pattern, first, axis in _RELATION_WORDS
                 if re.search(pattern, p.text)]
    if p.kind == "one_object":
      assert len(named) == 1 and named[0][1] == 1 and regions == [p.spec.region], p.text
      obj = p.scene.objects[0]
      assert (min(int(3 * obj.y / 64), 2), min(int(3 * obj.x / 64), 2)) == _REGIONS[regions[0]]
      assert p.spec.relation is None
    elif p.kind == "two_objects":
      assert len(named) == 2 and all(n == 1 for _, n in named) and len(relations) == 1, p.text
      first, axis = relations[0]
      expected = (named[first][0], axis, named[1 - first][0])
      assert (as_kind(p.spec.relation[0]), p.spec.relation[1],
              as_kind(p.spec.relation[2])) == expected, p.text
      a, b = (next(o for o in p.scene.objects if (o.size, o.color, o.shape) == named[i][0])
              for i in (first, 1 - first))
      assert getattr(b, axis) - getattr(a, axis) >= a.radius + b.radius, p.text
      assert p.spec.region is None and not regions
    else:
      assert len(named) == 1 and named[0][1] in (2, 3) and not relations, p.text
      assert p.spec.region is None and p.spec.relation is None


def test_prompts_tokenize_as_the_tok_op_does(prompts):
  texts = [p.text for p in prompts]
  tokens, mask = t2i_prompts.tokenize(texts, 24)
  assert tokens.shape == mask.shape == (len(texts), 24) and tokens.dtype == np.int32
  sp = tokenizer.load("shapes_vl")
  for text, row, valid in zip(texts, tokens, mask):
    n = int(valid.sum())
    assert valid[:n].all() and not valid[n:].any() and not row[n:].any()
    assert row[0] == sp.bos_id() and sp.decode(row[1:n].tolist()) == text
  with pytest.raises(ValueError, match="max_len"):
    t2i_prompts.tokenize(texts, 6)


def test_the_matcher_accepts_the_prompts_own_objects_in_any_order(prompts):
  rng = np.random.default_rng(0)
  for p in prompts:
    for size in (64, 32):
      scene = t2i_prompts.scaled(p.scene, size)
      found = [found_objects(scene)[i] for i in rng.permutation(len(scene.objects))]
      assert prompt_match.matches(p.spec, found, size), (p.text, size)


def _moved(found: list[dict], i: int, **changes) -> list[dict]:
  return [{**o, **changes} if j == i else o for j, o in enumerate(found)]


def test_the_matcher_rejects_what_the_prompt_did_not_ask(prompts):
  for p in prompts:
    found = found_objects(p.scene)
    color = found[0]["color"]
    other_color = next(c for c in scenes.COLORS if c != color)
    assert not prompt_match.matches(p.spec, _moved(found, 0, color=other_color), 64), p.text
    assert not prompt_match.matches(p.spec, found[1:], 64), p.text  # an object missing
    extra = dict(found[0], x=1.0, y=1.0)
    assert not prompt_match.matches(p.spec, found + [extra], 64), p.text  # one more
    if p.kind == "one_object":  # moved to another third of the canvas
      x, y = found[0]["x"], found[0]["y"]
      elsewhere = ([(64 - x, 64 - y), (32.0, 32.0)] if p.spec.region != "in the center"
                   else [(5.0, 5.0), (32.0, 60.0)])
      for x, y in elsewhere:
        assert not prompt_match.matches(p.spec, _moved(found, 0, x=x, y=y), 64), p.text
    if p.kind == "two_objects":  # the two objects swapped: the relation reversed
      a, b = found
      swapped = [dict(a, x=b["x"], y=b["y"]), dict(b, x=a["x"], y=a["y"])]
      assert not prompt_match.matches(p.spec, swapped, 64), p.text
      axis = p.spec.relation[1]
      level = [dict(a, **{axis: 32.0}), dict(b, **{axis: 33.0})]  # extents not apart
      assert not prompt_match.matches(p.spec, level, 64), p.text


def test_a_spec_that_names_fewer_attributes_accepts_any_value_of_the_rest():
  spec = t2i_prompts.Spec(objects=((("color", "red"),), (("color", "red"), ("shape", "circle"))))
  red_square = dict(shape="square", color="red", size="small", x=10.0, y=10.0)
  red_circle = dict(shape="circle", color="red", size="large", x=40.0, y=40.0)
  # A one-to-one pairing exists only one way round: the circle must serve the second.
  assert prompt_match.matches(spec, [red_circle, red_square], 64)
  assert not prompt_match.matches(spec, [red_square, dict(red_square, x=40.0)], 64)
  with pytest.raises(ValueError, match="region"):
    t2i_prompts.Spec(objects=spec.objects, region="in the center")


def test_accuracy_is_reported_overall_and_per_kind():
  metrics = prompt_match.accuracy(["a", "a", "b", "a"], [True, False, True, True])
  assert metrics == {"prompt_match": 0.75, "prompt_match/a": pytest.approx(2 / 3),
                     "prompt_match/b": 1.0}
  with pytest.raises(ValueError, match="as many"):
    prompt_match.accuracy(["a"], [])


def test_fid_of_a_set_with_itself_is_zero_and_does_not_depend_on_order():
  x = np.random.default_rng(0).normal(size=(200, 6)) @ np.diag([3.0, 1.0, 0.5, 2.0, 1.0, 0.1])
  assert fid.fid(x, x) == pytest.approx(0.0, abs=1e-8)
  y = np.random.default_rng(1).normal(loc=0.3, size=(150, 6))
  perm = np.random.default_rng(2).permutation
  assert fid.fid(x, y) == pytest.approx(fid.fid(x[perm(200)], y[perm(150)]), rel=1e-9)
  assert fid.fid(x, y) == pytest.approx(fid.fid(y, x), rel=1e-6)


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
  mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
  var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
  assert fid.frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(
      expected, rel=1e-10)
  # Rotating both Gaussians alike (non-diagonal, non-commuting factors) keeps the distance.
  q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
  rotated = fid.frechet_distance(q @ mu_a, q @ np.diag(var_a) @ q.T, q @ mu_b,
                                 q @ np.diag(var_b) @ q.T)
  assert rotated == pytest.approx(expected, rel=1e-9)
  # And sample sets drawn from them: the fitted Gaussians' distance (what `fid` computes).
  rng = np.random.default_rng(4)
  a = mu_a + rng.normal(size=(20000, 3)) * np.sqrt(var_a)
  b = mu_b + rng.normal(size=(20000, 3)) * np.sqrt(var_b)
  assert fid.fid(a, b) == pytest.approx(expected, rel=0.05)
  with pytest.raises(ValueError, match="dimensions"):
    fid.frechet_distance(mu_a, np.diag(var_a), mu_b[:2], np.diag(var_b[:2]))
  with pytest.raises(ValueError, match="N >= 2"):
    fid.fid(a[:1], b)


@dataclasses.dataclass
class PerfectReader:
  """Reads every picture as the scene of the prompt in its place."""
  prompts: list
  resolution: int = 48
  seen: tuple = ()

  def read(self, images):
    self.seen = images.shape
    assert images.min() >= -1.0 and images.max() <= 1.0
    found = [found_objects(t2i_prompts.scaled(p.scene, self.resolution)) for p in self.prompts]
    return found, np.zeros((len(images), 4), np.float32)


def test_a_perfect_reader_reads_the_true_pictures_of_every_prompt_right(prompts):
  reader = PerfectReader(prompts)
  metrics = text_to_image.real_accuracy(prompts, reader, image_size=32)
  assert reader.seen == (len(prompts), 32, 32, 3)
  assert metrics == {"classifier_accuracy": 1.0, **{f"classifier_accuracy/{k}": 1.0
                                                    for k in t2i_prompts.KINDS}}
  blind = types.SimpleNamespace(resolution=48, read=lambda x: ([[] for _ in x], None))
  assert text_to_image.real_accuracy(prompts, blind, 32)["classifier_accuracy"] == 0.0


class StubTask:
  """generate_images draws each prompt's true scene (a table lookup by its tokens, so it
  compiles); conditioning_losses reports batch statistics an independent pass can check."""

  def __init__(self, prompts, max_len: int, size: int):
    self.tokens = jnp.asarray(t2i_prompts.tokenize([p.text for p in prompts], max_len)[0])
    self.images = jnp.asarray(np.stack(
        [render(t2i_prompts.scaled(p.scene, size)) for p in prompts]) / 127.5 - 1.0)

  def generate_images(self, model, params, batch, rng):
    del model, params, rng
    same = jnp.all(batch["text_tokens"][:, None, :] == self.tokens[None], axis=-1)
    return self.images[jnp.argmax(same, axis=1)]

  def conditioning_losses(self, model, params, batch, rng):
    del model, params, rng
    return {"true": jnp.mean(batch["image"]), "shuffled": jnp.mean(batch["text_mask"]),
            "empty": jnp.mean(batch["text_tokens"][:, 0].astype(jnp.float32))}


def scene_parser_workdir(path) -> ml_collections.ConfigDict:
  """A tiny configs/shapes_scene_parser.py run's workdir as the trainer leaves it: its
  config.json and a checkpoint whose state has `params` (random ones: initialising them for
  real would compile the model's init, the slowest part of a tiny run). Returns the config."""
  config = shapes_scene_parser.get_config("tiny=true")
  path.mkdir()
  workdir_config.check_and_record(config, str(path))
  task = tasks.TASKS.build(config.task)
  model = models.MODELS.build(config.model, **task.model_kwargs())
  shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
      jax.random.key(0), {"image": jnp.zeros((1, 64, 64, 3))}, train=False)["params"]))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  checkpointer = Checkpointer(str(path / "checkpoints"), every_steps=1, keep=1)
  checkpointer.save(0, {"step": np.int32(0), "params": params})
  checkpointer.wait()
  checkpointer.close()
  return config


def test_the_evaluators_end_to_end(tmp_path):
  parser_config = scene_parser_workdir(tmp_path / "parser")
  parser_config.data.data_dir = str(tmp_path / "tfds")
  builder = pipeline.get_builder(parser_config.data)
  mesh = sharding.make_mesh(parser_config.mesh)
  batch_sharding = sharding.batch_sharding(mesh)

  prompts = t2i_prompts.prompt_set(2)
  task = StubTask(prompts, max_len=24, size=32)
  task_fn = make_task_fn(None, task, ModelVariables({}), batch_sharding,
                         sharding.replicated(mesh))
  context = EvalContext(builder=builder, task=task, predict=None, batch_sharding=batch_sharding,
                        workdir=str(tmp_path / "t2i"), task_fn=task_fn)
  evaluator = EVALUATORS.build(dict(
      type="text_to_image", classifier_workdir=str(tmp_path / "parser"),
      real_pp="decode|resize(32)|value_range(-1, 1)|keep('image')", max_real=16,
      prompts_per_kind=2, samples_per_prompt=2, batch_size=8, grid_prompts_per_kind=1,
      grid_samples=2, classifier_batch_size=16), context=context, name="t2i")
  metrics = evaluator.run(ModelVariables({}), step=7)
  assert set(metrics) == {"prompt_match", "classifier_accuracy", "fid", "fid_real_floor",
                          "num_images", "num_real",
                          *(f"{m}/{k}" for m in ("prompt_match", "classifier_accuracy")
                            for k in t2i_prompts.KINDS)}
  # The stub draws the true scenes: generated and real renderings are read alike.
  for key in ("", *(f"/{k}" for k in t2i_prompts.KINDS)):
    assert metrics["prompt_match" + key] == metrics["classifier_accuracy" + key]
  assert metrics["num_images"] == 12 and metrics["num_real"] == 16
  assert metrics["fid"] > 0 and metrics["fid_real_floor"] > 0

  png = tmp_path / "t2i" / "samples" / "t2i_step7.png"
  grid = np.asarray(Image.open(io.BytesIO(png.read_bytes())))
  assert grid.shape == (3 * 34 - 2, 2 * 34 - 2, 3)  # one prompt of each kind x 2 samples
  np.testing.assert_array_equal(grid, evaluator.images["samples"][0])
  for row, prompt in enumerate(prompts[::2]):  # rows: the first prompt of each kind
    np.testing.assert_array_equal(grid[row * 34:row * 34 + 32, 34:66],
                                  render(t2i_prompts.scaled(prompt.scene, 32)))
  assert png.with_suffix(".txt").read_text().splitlines() == [p.text for p in prompts[::2]]

  # The trainer hands the grid to its writer as a TensorBoard image.
  written = {}
  fake_trainer = types.SimpleNamespace(
      evaluators={"t2i": evaluator}, config=types.SimpleNamespace(
          evals={"t2i": types.SimpleNamespace(type="text_to_image")}),
      writer=types.SimpleNamespace(write_images=lambda step, images: written.update(
          {(step, k): v for k, v in images.items()})))
  trainer_lib.Trainer._write_eval_images(fake_trainer, "t2i", 7)
  assert list(written) == [(7, "t2i/text_to_image/samples")]

  pp = ("decode|resize(16)|value_range(-1, 1)|choice('captions', out_key='caption')|"
        "tok(max_len=24, model='shapes_vl', key='caption', out_key='text_tokens', "
        "mask_key='text_mask')|keep('image', 'text_tokens', 'text_mask')")
  conditioning = EVALUATORS.build(dict(type="conditioning", split="validation", pp=pp,
                                       batch_size=8, max_examples=20),
                                  context=context, name="cond")
  got = conditioning.run(ModelVariables({}), step=7)
  batches = list(pipeline.make_dataset(builder, split="validation[:20]", pp=pp,
                                       batch_size=8, train=False).as_numpy_iterator())[:2]
  assert got == pytest.approx({  # the partial third batch is left out
      "loss_true": np.mean([b["image"].mean() for b in batches]),
      "loss_shuffled": np.mean([b["text_mask"].mean() for b in batches]),
      "loss_empty": float(tokenizer.load("shapes_vl").bos_id()), "num_batches": 2.0}, rel=1e-5)


def test_evaluators_name_what_the_task_lacks(tmp_path):
  context = EvalContext(builder=None, task=object(), predict=None, batch_sharding=None,
                        workdir=str(tmp_path))
  with pytest.raises(ValueError, match="generate_images"):
    EVALUATORS.build(dict(type="text_to_image", classifier_workdir=str(tmp_path),
                          real_pp="decode"), context=context, name="t2i")
  task = types.SimpleNamespace(generate_images=None)
  with pytest.raises(ValueError, match="task_fn"):
    EVALUATORS.build(dict(type="text_to_image", classifier_workdir=str(tmp_path),
                          real_pp="decode"), context=dataclasses.replace(context, task=task),
                     name="t2i")
  with_fn = dataclasses.replace(context, task=task, task_fn=lambda name: None)
  with pytest.raises(FileNotFoundError, match="shapes_scene_parser"):
    EVALUATORS.build(dict(type="text_to_image", classifier_workdir=str(tmp_path / "none"),
                          real_pp="decode"), context=with_fn, name="t2i")


@dataclasses.dataclass
class LookupReader:
  """Reads a picture as the scene of the prompt whose rendering it is (to 1e-3), else as
  empty: a reader that sees what is drawn, without a trained model."""
  prompts: list
  size: int
  resolution: int = 48

  def read(self, images):
    truth = np.stack([render(t2i_prompts.scaled(p.scene, self.size)) for p in self.prompts])
    truth = truth / 127.5 - 1.0
    found = []
    for image in images:
      same = [i for i, t in enumerate(truth) if np.max(np.abs(t - image)) < 1e-3]
      found.append(found_objects(t2i_prompts.scaled(self.prompts[same[0]].scene,
                                                    self.resolution)) if same else [])
    return found, np.zeros((len(images), 4), np.float32)


@pytest.mark.parametrize("autoencoder,expected", [("identity", 1.0), ("blank", 0.0)])
def test_reconstruction_evaluator_reads_the_prompt_scenes_through_the_autoencoder(
    tmp_path, autoencoder, expected):
  parser_config = scene_parser_workdir(tmp_path / "parser")
  parser_config.data.data_dir = str(tmp_path / "tfds")
  mesh = sharding.make_mesh(parser_config.mesh)
  batch_sharding = sharding.batch_sharding(mesh)

  def predict(variables, batch):
    del variables
    image = batch["image"] if autoencoder == "identity" else jnp.zeros_like(batch["image"])
    return {"recon_mse": jnp.mean((image - batch["image"]) ** 2, axis=(1, 2, 3)),
            "reconstruction": image}

  context = EvalContext(builder=pipeline.get_builder(parser_config.data), task=None,
                        predict=jax.jit(predict), batch_sharding=batch_sharding,
                        workdir=str(tmp_path))
  pp = "decode|resize(16)|value_range(-1, 1)|keep('image')"
  evaluator = EVALUATORS.build(dict(
      type="image_reconstruction", split="validation", pp=pp, batch_size=8, max_examples=8,
      classifier_workdir=str(tmp_path / "parser"), prompts_per_kind=3), context=context,
      name="validation")
  evaluator.classifier = LookupReader(evaluator.prompts, size=16)
  metrics = evaluator.run({}, step=1)
  # The prompt scenes are drawn at the split's resolution (16 px), as the model reconstructs.
  assert metrics["classifier_accuracy"] == 1.0
  for key in ("", *(f"/{k}" for k in t2i_prompts.KINDS)):
    assert metrics["recon_prompt_match" + key] == expected
  assert metrics["num_images"] == 8
  assert (metrics["recon_mse"] == 0.0) == (autoencoder == "identity")
