"""Linear probes on trained fusion modules: which cues of a relation question reach the head.

  python -m multimodal.benchmarks.relation_probe --workdir=/tmp/fusion_bench [--modules=...]

A relation question ("is the red circle left of the blue square?") is answered by its word
and the named objects' positions together: no single cue gives the answer, the word with the
first-named object's third of the image gives 82% of it, the word with the objects' order
along the axis all of it (`vqa_questions.relation_cues`, tests/test_shapes.py). For each module
of a fusion benchmark workdir (its checkpoints kept), on Shapes VQA relation questions, this
reads the vector the head reads (`Fused.pooled`; for decision-level modules the mean of the
modalities' vectors) and fits a linear probe (ridge regression onto one-hot targets) for each
cue: `word` (4 classes), `a_third` and `b_third` (3), `a_first` (2) and the `answer` (2). The
probes are fit on relation questions about training scenes and scored on the validation
split's. The same probes on the module's untrained initial params give each probe's floor
(random features of the inputs already carry some of a cue).

Writes WORKDIR/relation_probe.md and .json and prints the table: per module, the head's
accuracy on these validation questions, then each probe's accuracy, trained and untrained.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from absl import app, flags  # noqa: E402

from multimodal import models, tasks  # noqa: E402
from multimodal.benchmarks import fusion  # noqa: E402
from multimodal.data import pipeline  # noqa: E402
from multimodal.data.builders import shapes_common  # noqa: E402
from multimodal.data.pp import registry as pp_lib  # noqa: E402
from multimodal.data.shapes import scenes, vqa_questions  # noqa: E402
from multimodal.training import sharding  # noqa: E402

CUES = ("word", "a_third", "b_third", "a_first", "answer")
MARKDOWN, JSON = "relation_probe.md", "relation_probe.json"

# --workdir and --modules are the fusion benchmark's flags (defined by importing it): its
# workdir, and the modules to probe among those it trained.
FLAGS = flags.FLAGS
_FIT_QUESTIONS = flags.DEFINE_integer(
    "fit_questions", 42_000, "Training-split questions read for fitting (about 1 in 7 is a "
    "relation question).")
_RIDGE = flags.DEFINE_float("ridge", 10.0, "L2 penalty of the probes (standardised features).")


def relation_questions(builder: tfds.core.DatasetBuilder, split: str, num_questions: int
                       ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """The relation questions among the first `num_questions` of a `shapes_vqa` split, as raw
  examples (PNG image, question, answers, ...) and their cues, each an array [N]."""
  builder_config = builder.builder_config
  seed = shapes_common.split_seed(builder_config.seed, split)
  examples, cues = [], []
  for ex in vqa_questions.iterate_examples(seed, num_questions, builder_config.image_size):
    if ex["question_type"] != "relation":
      continue
    # iterate_examples draws scene k first from its own stream (seed, k): drawn again here.
    scene = scenes.sample_scene(np.random.default_rng((seed, ex["scene_id"])),
                                builder_config.image_size)
    cues.append({**vqa_questions.relation_cues(scene, ex["question"]),
                 "answer": ex["answers"][0]})
    examples.append({"image": shapes_common.encode_png(ex.pop("image")),
                     **{k: ex[k] for k in ("question", "answers", "question_type",
                                           "question_id")}})
  return examples, {c: np.array([cue[c] for cue in cues]) for c in CUES}


def batches(examples: list[dict[str, Any]], pp: str, batch_size: int
            ) -> Iterator[dict[str, np.ndarray]]:
  """The examples preprocessed by `pp` (the evaluator's), in order."""
  columns = {k: [ex[k] for ex in examples] for k in examples[0]}
  ds = tf.data.Dataset.from_tensor_slices(columns).map(pp_lib.parse(pp))
  return ds.batch(batch_size).as_numpy_iterator()


def head_inputs(model: Any) -> Callable[[Any, dict[str, np.ndarray]], tuple[jax.Array, ...]]:
  """A jitted (params, batch) -> (float32[B, D] the vectors the head reads, int[B] the
  model's answer indices)."""
  is_fusion_call = lambda module, method: module.name == "fusion" and method == "__call__"

  @jax.jit
  def forward(params, batch):
    logits, state = model.apply({"params": params}, batch, train=False,
                                capture_intermediates=is_fusion_call,
                                mutable=["intermediates"])
    fused = state["intermediates"]["fusion"]["__call__"][0]
    return fused.pooled.astype(np.float32), logits.argmax(-1)

  return forward


def model_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: batch[k] for k in ("image", "question_tokens", "question_mask")}


def pooled_features(forward: Callable, params: Any, examples: list[dict[str, Any]], pp: str,
                    batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """`forward` (from `head_inputs`) over the examples: (float32[N, D], int[N])."""
  outputs = [jax.device_get(forward(params, model_inputs(batch)))
             for batch in batches(examples, pp, batch_size)]
  return (np.concatenate([vectors for vectors, _ in outputs]),
          np.concatenate([answers for _, answers in outputs]))


def probe_accuracy(fit_x: np.ndarray, fit_y: np.ndarray, score_x: np.ndarray,
                   score_y: np.ndarray, ridge: float) -> float:
  """Fits a ridge-regression classifier (one-hot targets, standardised features with a bias)
  on (fit_x float[N, D], fit_y [N]) and returns its accuracy on (score_x, score_y)."""
  classes = np.unique(fit_y)
  mean, std = fit_x.mean(0), fit_x.std(0) + 1e-6
  design = lambda x: np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
  a = design(fit_x)
  targets = (fit_y[:, None] == classes[None]).astype(np.float64)
  penalty = ridge * np.eye(a.shape[1])
  penalty[-1, -1] = 0.0  # The bias is not penalised.
  weights = np.linalg.solve(a.T @ a + penalty, a.T @ targets)
  predicted = classes[np.argmax(design(score_x) @ weights, axis=1)]
  return float(np.mean(predicted == score_y))


def restore_params(workdir: str, name: str) -> Any:
  """The params of module `name`'s last checkpoint, as numpy arrays on the host."""
  directory = os.path.join(workdir, name, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit()) if os.path.isdir(
      directory) else []
  if not steps:
    raise FileNotFoundError(f"{directory} has no checkpoints (an --export copy keeps none): "
                            "probe the benchmark's own workdir.")
  path = os.path.join(directory, str(steps[-1]), "default")
  host = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=host), tree)
    return checkpointer.restore(path, target)["params"]


def probe_module(workdir: str, name: str, fit_questions: int, ridge: float
                 ) -> dict[str, float]:
  """One module's row: its head's accuracy and each probe's, trained and untrained."""
  config = fusion.run_config(workdir, name)
  task = tasks.TASKS.build(config.task, offered=dict(mesh=sharding.make_mesh(config.mesh)))
  model = models.MODELS.build(config.model, **task.model_kwargs())
  pp = config.evals.validation.pp
  builder = pipeline.get_builder(config.data)
  fit_examples, fit_cues = relation_questions(builder, "train", fit_questions)
  score_examples, score_cues = relation_questions(
      builder, "validation", builder.info.splits["validation"].num_examples)
  trained = restore_params(workdir, name)
  example = model_inputs(next(batches(score_examples[:1], pp, 1)))
  untrained = model.init({"params": jax.random.key(config.seed)}, example, train=False)["params"]
  forward = head_inputs(model)
  answer_ids = {a: i for i, a in enumerate(vqa_questions.ANSWERS)}
  row: dict[str, float] = {"module": name, "questions": len(score_examples)}
  for kind, params in (("trained", trained), ("untrained", untrained)):
    fit_x, _ = pooled_features(forward, params, fit_examples, pp)
    score_x, predicted = pooled_features(forward, params, score_examples, pp)
    if kind == "trained":
      truth = np.array([answer_ids[a] for a in score_cues["answer"]])
      row["head"] = float(np.mean(predicted == truth))
    for cue in CUES:
      row[f"{cue}/{kind}"] = probe_accuracy(fit_x, fit_cues[cue], score_x, score_cues[cue],
                                            ridge)
  return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
  header = ["module", "questions", "head"] + [f"{c} probe" for c in CUES]
  lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
  for row in rows:
    cells = [row["module"], f"{row['questions']:,}", f"{row['head']:.3f}"]
    cells += [f"{row[f'{c}/trained']:.3f} ({row[f'{c}/untrained']:.3f})" for c in CUES]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def run(workdir: str, modules: list[str] | None, fit_questions: int, ridge: float,
        output_dir: str | None = None, log: Callable[[str], None] = print
        ) -> list[dict[str, Any]]:
  """Probes `modules` (default: all) among those trained in `workdir`; writes the table to
  `output_dir` (default: the workdir)."""
  rows = []
  for name in [m for m in fusion.benchmarked_modules(workdir) if not modules or m in modules]:
    log(f"probing {name} ...")
    rows.append(probe_module(workdir, name, fit_questions, ridge))
  table = markdown_table(rows)
  output_dir = output_dir or workdir
  with open(os.path.join(output_dir, MARKDOWN), "w") as f:
    f.write("Linear probes on the head's input, relation questions (validation); in brackets "
            "the same probe on the untrained model.\n\n" + table + "\n")
  with open(os.path.join(output_dir, JSON), "w") as f:
    json.dump(rows, f, indent=2)
  log(table)
  return rows


def main(argv: list[str]) -> None:
  del argv
  run(FLAGS.workdir, FLAGS.modules, _FIT_QUESTIONS.value, _RIDGE.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
