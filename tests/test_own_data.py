"""Training on one's own VQA data is a config change: configs/jsonl_vqa.py end to end."""
import json
import logging
import os

import tensorflow_datasets as tfds
from PIL import Image
from test_jsonl_vqa import write_hard_records

from configs import jsonl_vqa
from multimodal.data.shapes import render, scenes, vqa_questions
from multimodal.training import trainer as trainer_lib


def write_user_dataset(root, num_train=24, num_validation=8):
  """Shapes scenes saved as the user would have them: JPEG/PNG files of two sizes + JSONL."""
  import numpy as np
  rng = np.random.default_rng(0)
  os.makedirs(root / "images")
  answers = set()
  for split, count in (("train", num_train), ("validation", num_validation)):
    with open(root / f"{split}.jsonl", "w") as f:
      for i in range(count):
        scene = scenes.sample_scene(rng)
        image = Image.fromarray(render.render(scene))
        name = f"images/{split}_{i}." + ("png" if i % 2 else "jpg")
        (image if i % 2 else image.resize((96, 80))).save(root / name)
        question = vqa_questions.generate_questions(scene, rng, n=1)[0]
        answers.add(question.answer)
        f.write(json.dumps({"image": name, "question": question.text,
                            "answers": [question.answer] * 3,
                            "question_type": question.type}) + "\n")
  (root / "answers.txt").write_text("\n".join(sorted(answers)) + "\n")


def test_jsonl_config_trains_and_evaluates_on_user_files(tmp_path, caplog):
  data = tmp_path / "my_vqa"
  data.mkdir()
  write_user_dataset(data)
  skipped = write_hard_records(data)  # Bad records of every kind, odd Unicode, long texts.
  config = jsonl_vqa.get_config(f"manual_dir={data},tokenizer=shapes,res=32,variant=micro,"
                                "total_steps=3,batch_size=8,max_len=16")
  config.data.data_dir = str(tmp_path / "tfds")
  config.model.fusion.update(width=64, depth=1, num_heads=2, mlp_dim=128)
  config.evals.validation.batch_size = 8
  with caplog.at_level(logging.INFO):
    results = trainer_lib.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["step"] == 3
  assert results["validation/vqa/num_examples"] == 8
  assert 0.0 <= results["validation/vqa/accuracy"] <= 1.0
  with open(tmp_path / "run" / "results.json") as f:
    assert json.load(f) == results
  skipped["skipped/validation/total"] = 0
  assert dict(tfds.builder("jsonl_vqa", data_dir=config.data.data_dir).info.metadata) == skipped
  train_total = f"'train/total': {skipped['skipped/train/total']}"
  assert "bad records skipped while building" in caplog.text and train_total in caplog.text
