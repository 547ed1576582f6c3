"""The real-scale configs: at full size they build the released architectures (parameter
counts of SigLIP B/16 and PaliGemma 3B); shrunk, each trains one step on tiny files in the
real datasets' formats."""
import jax
import pytest

from multimodal import models
from multimodal.training import trainer as trainer_lib
from tests import test_real_builders as real_files
from tests.test_configs import REPO, load, shrink


def param_count(config, vocab_size):
  model = models.MODELS.build(config.model.to_dict(), vocab_size=vocab_size)
  batch = {"image": jax.ShapeDtypeStruct((1, 224, 224, 3), "float32"),
           "text_tokens": jax.ShapeDtypeStruct((1, 16), "int32"),
           "text_mask": jax.ShapeDtypeStruct((1, 16), "bool"),
           "prefix_mask": jax.ShapeDtypeStruct((1, 16), "bool")}
  shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b, train=False), batch)
  return sum(x.size for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name,vocab_size,expected", [
    ("siglip_b16.py", 32_000, 203.16e6),        # google/siglip-base-patch16-224
    ("paligemma_224.py", 257_216, 2.923e9)])   # google/paligemma-3b-pt-224
def test_full_size_is_the_released_architecture(name, vocab_size, expected):
  config = load(f"{REPO}/configs/{name}").get_config()
  assert param_count(config, vocab_size) == pytest.approx(expected, rel=2e-3)


@pytest.fixture(scope="module")
def manual_dirs(tmp_path_factory):
  coco, vqa = tmp_path_factory.mktemp("coco"), tmp_path_factory.mktemp("vqa")
  real_files._write_karpathy(coco)
  real_files._write_vqa(vqa)
  return {"coco_karpathy": coco, "vqav2": vqa}


@pytest.mark.parametrize("name,arg", [("siglip_b16.py", "loss=sigmoid_chunked"),
                                      ("paligemma_224.py", "task=caption"),
                                      ("paligemma_224.py", "task=vqav2")])
def test_one_training_step_at_a_tiny_size(tmp_path, manual_dirs, name, arg):
  config = load(f"{REPO}/configs/{name}").get_config(
      f"{arg},tokenizer=shapes_text,res=32,batch_size=8,total_steps=4")
  model = shrink(config.model.to_dict())
  if model["type"] == "two_towers":
    model["embed_dim"] = 32  # The image tower's width: SigLIP does not project its embedding.
  config.model = model
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.manual_dir = str(manual_dirs[config.data.name])
  config.data.shuffle_buffer = 8
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.train(stop_at=1) == 1
