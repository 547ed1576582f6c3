"""Each modality trained alone against the same modality inside a jointly trained model, and
the joint model with each modality missing: whether joint training helped or hurt either one
(negative transfer), from finished runs' results.json.

  python -m multimodal.benchmarks.modality_report --joint=/tmp/av_event \\
      --alone=audio=/tmp/av_audio --alone=video=/tmp/av_video [--split=test]

The joint run must have evaluated with each modality missing (`missing_modalities` of the
classification evaluator; configs/shapes_av.py does so on test). For each modality m:
  alone        accuracy of the model trained on m only
  joint, only m  the joint model with every other modality removed
  transfer     joint, only m - alone (negative: joint training hurt what m alone gives)
and the joint model with all its modalities, against the best single one.
Prints a Markdown table and writes it to JOINT/modality_report.md.
"""
from __future__ import annotations

import json
import os

from absl import app, flags

_JOINT = flags.DEFINE_string("joint", None, "workdir of the run on all modalities", required=True)
_ALONE = flags.DEFINE_multi_string("alone", [], "MODALITY=WORKDIR of a run on one modality")
_SPLIT = flags.DEFINE_string("split", "test", "the evaluator (split) whose accuracy is read")
_METRIC = flags.DEFINE_string("metric", "classification/accuracy", "the metric read")


def read_results(workdir: str) -> dict[str, float]:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: is the run in {workdir} finished?")
  with open(path) as f:
    return json.load(f)


def report(joint: dict[str, float], alone: dict[str, dict[str, float]], split: str,
           metric: str) -> str:
  """The Markdown table (see the module docstring) from results.json contents."""
  evaluator, name = metric.rsplit("/", 1)
  both = joint[f"{split}/{metric}"]
  lines = ["| modality | alone | joint, only this one | transfer |", "|---|---:|---:|---:|"]
  for modality, results in sorted(alone.items()):
    others = [m for m in alone if m != modality]
    # Only this modality left: every other one missing (two modalities: the other one).
    key = f"{split}/{evaluator}/missing_{others[0]}/{name}" if len(others) == 1 else None
    only = joint.get(key) if key else None
    single = results[f"{split}/{metric}"]
    only_text = f"{only:.3f}" if only is not None else "-"
    transfer = f"{only - single:+.3f}" if only is not None else "-"
    lines.append(f"| {modality} | {single:.3f} | {only_text} | {transfer} |")
  best = max(r[f"{split}/{metric}"] for r in alone.values())
  lines.append(f"| all (joint) | | {both:.3f} | {both - best:+.3f} over the best single |")
  return "\n".join(lines)


def main(argv):
  del argv
  alone = {}
  for item in _ALONE.value:
    modality, _, workdir = item.partition("=")
    if not workdir:
      raise ValueError(f"--alone takes MODALITY=WORKDIR, got {item!r}.")
    alone[modality] = read_results(workdir)
  if not alone:
    raise ValueError("Give at least one --alone=MODALITY=WORKDIR.")
  table = report(read_results(_JOINT.value), alone, _SPLIT.value, _METRIC.value)
  print(table)
  with open(os.path.join(_JOINT.value, "modality_report.md"), "w") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
