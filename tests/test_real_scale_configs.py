"""The real-scale configs: at full size they build the released architectures (parameter
counts of SigLIP B/16, PaliGemma 3B and BEiT-3 base for NLVR2); shrunk, each trains one step
on tiny files in the real datasets' formats."""
import jax
import pytest

from multimodal import models
from multimodal.training import trainer as trainer_lib
from tests import test_nlvr2_builder as nlvr2_files
from tests import test_real_builders as real_files
from tests.test_configs import REPO, load, shrink


def param_count(config, vocab_size):
  sizes = dict(num_classes=2) if config.model.type == "beit3_nlvr" else {}
  model = models.MODELS.build(config.model.to_dict(), vocab_size=vocab_size, **sizes)
  image = jax.ShapeDtypeStruct((1, 224, 224, 3), "float32")
  batch = {"image": image, "left_image": image, "right_image": image,
           "text_tokens": jax.ShapeDtypeStruct((1, 16), "int32"),
           "text_mask": jax.ShapeDtypeStruct((1, 16), "bool"),
           "prefix_mask": jax.ShapeDtypeStruct((1, 16), "bool")}
  shapes = jax.eval_shape(lambda b: model.init(jax.random.key(0), b, train=False), batch)
  return sum(x.size for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name,vocab_size,expected", [
    ("siglip_b16.py", 32_000, 203.16e6),        # google/siglip-base-patch16-224
    ("paligemma_224.py", 257_216, 2.923e9),    # google/paligemma-3b-pt-224
    # beit3_base_patch16_224_nlvr2: torchscale 0.3.0's BEiT3 at the release's base config
    # (64010 pieces) has 220,987,392 params; the NLVR head (LN 4D, 4D x 2D, LN 2D, 2D x 2)
    # 4,732,418.
    ("nlvr2_beit3_base.py", 64_010, 225_719_810)])
def test_full_size_is_the_released_architecture(name, vocab_size, expected):
  config = load(f"{REPO}/configs/{name}").get_config()
  assert param_count(config, vocab_size) == pytest.approx(expected, rel=2e-3)


@pytest.fixture(scope="module")
def manual_dirs(tmp_path_factory):
  coco, vqa = tmp_path_factory.mktemp("coco"), tmp_path_factory.mktemp("vqa")
  real_files._write_karpathy(coco)
  real_files._write_vqa(vqa)
  nlvr2 = tmp_path_factory.mktemp("nlvr2")
  nlvr2_files._write_nlvr2(nlvr2)
  return {"coco_karpathy": coco, "vqav2": vqa, "nlvr2": nlvr2}


@pytest.mark.parametrize("name,arg", [("siglip_b16.py", "loss=sigmoid_chunked"),
                                      ("paligemma_224.py", "task=caption"),
                                      ("paligemma_224.py", "task=vqav2"),
                                      ("nlvr2_beit3_base.py", "")])
def test_one_training_step_at_a_tiny_size(tmp_path, manual_dirs, name, arg):
  config = load(f"{REPO}/configs/{name}").get_config(
      ",".join(filter(None, [arg, "tokenizer=shapes_text,res=32,batch_size=8,total_steps=4"])))
  model = shrink(config.model.to_dict())
  if model["type"] == "two_towers":
    model["embed_dim"] = 32  # The image tower's width: SigLIP does not project its embedding.
  config.model = model
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.manual_dir = str(manual_dirs[config.data.name])
  config.data.shuffle_buffer = 8
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.train(stop_at=1) == 1
