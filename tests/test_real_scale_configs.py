"""The real-scale configs: at full size they build the released architectures (parameter
counts of SigLIP B/16, PaliGemma 3B and BEiT-3 base for NLVR2) and the text-to-image models'
geometry at 256 px (the VQ tokenizer's 16 x 16 grid of 1024 codes, the KL autoencoder's
32 x 32 x 4 latents); shrunk, each trains one step on tiny files in the real datasets'
formats."""
import jax
import jax.numpy as jnp
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


def full_size_outputs(config, vocab_size=32_000, method=None):
  """The model of `config` at full size, abstractly (jax.eval_shape: nothing is computed) on
  one image at its res and a 64-token caption -> (its outputs, or `method`'s on the image,
  as shapes; its parameter count)."""
  spec = config.model.to_dict()
  model = models.MODELS.build(spec, **({} if spec["type"] == "image_autoencoder" else
                                       dict(vocab_size=vocab_size)))
  res = spec.get("image_size", spec.get("autoencoder", {}).get("image_size"))
  batch = {"image": jnp.zeros((1, res, res, 3)), "text_tokens": jnp.ones((1, 64), jnp.int32),
           "text_mask": jnp.ones((1, 64), bool)}

  def run():
    outputs, variables = model.init_with_output(jax.random.key(0), batch, train=False)
    if method:
      outputs = model.apply(variables, batch["image"], method=method)
    return outputs, variables["params"]

  outputs, params = jax.eval_shape(run)
  return (jax.tree.map(lambda x: x.shape, outputs),
          sum(x.size for x in jax.tree.leaves(params)))


def test_full_size_image_tokenizers_have_the_papers_grids():
  tokenizer = load(f"{REPO}/configs/coco_image_tokenizer.py")
  vq = tokenizer.get_config("quantizer=vq")
  outputs, _ = full_size_outputs(vq)
  assert outputs["reconstruction"] == (1, 256, 256, 3)
  assert outputs["codes"] == (1, 16 * 16) and outputs["code_counts"] == (1, 1024)  # VQGAN f16
  latents, _ = full_size_outputs(tokenizer.get_config("quantizer=kl"), method="encode_latents")
  assert latents == (1, 32, 32, 4)  # LDM's KL-f8
  # coco_t2i's stand-ins (no autoencoder_init) are these.
  t2i = load(f"{REPO}/configs/coco_t2i.py")
  assert t2i.get_config("model=maskgit").model.autoencoder.to_dict() == vq.model.to_dict()
  assert t2i.get_config("model=unet").model.autoencoder.quantizer == "kl"


@pytest.mark.parametrize("model", ["maskgit", "dalle", "unet"])
def test_full_size_text_to_image_models(model):
  config = load(f"{REPO}/configs/coco_t2i.py").get_config(f"model={model}")
  outputs, count = full_size_outputs(config)
  if model == "unet":  # It denoises the kl autoencoder's 32 x 32 x 4 latents.
    assert outputs["prediction"] == outputs["target"] == (1, 32, 32, 4)
  else:  # Logits over the 1024 codes at each of the 256 image tokens.
    assert outputs["logits"] == (1, 256, 1024) and outputs["targets"] == (1, 256)
  assert count > 3e8  # a real-size model, not a Shapes one


@pytest.fixture(scope="module")
def manual_dirs(tmp_path_factory):
  coco, vqa = tmp_path_factory.mktemp("coco"), tmp_path_factory.mktemp("vqa")
  real_files._write_karpathy(coco)
  real_files._write_vqa(vqa)
  nlvr2 = tmp_path_factory.mktemp("nlvr2")
  nlvr2_files._write_nlvr2(nlvr2)
  return {"coco_karpathy": coco, "vqav2": vqa, "nlvr2": nlvr2}


TEXT_FREE = ("coco_image_tokenizer.py",)  # configs without a text tokenizer


@pytest.mark.parametrize("name,arg", [("siglip_b16.py", "loss=sigmoid_chunked"),
                                      ("paligemma_224.py", "task=caption"),
                                      ("paligemma_224.py", "task=vqav2"),
                                      ("nlvr2_beit3_base.py", ""),
                                      ("coco_image_tokenizer.py", "quantizer=vq"),
                                      ("coco_image_tokenizer.py", "quantizer=kl"),
                                      ("coco_t2i.py", "model=maskgit"),
                                      ("coco_t2i.py", "model=dalle"),
                                      ("coco_t2i.py", "model=unet")])
def test_one_training_step_at_a_tiny_size(tmp_path, manual_dirs, name, arg):
  tokenizer = "" if name in TEXT_FREE else "tokenizer=shapes_text"
  config = load(f"{REPO}/configs/{name}").get_config(
      ",".join(filter(None, [arg, tokenizer, "res=32,batch_size=8,total_steps=4"])))
  model = shrink(config.model.to_dict())
  if model["type"] == "two_towers":
    model["embed_dim"] = 32  # The image tower's width: SigLIP does not project its embedding.
  config.model = model
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.manual_dir = str(manual_dirs[config.data.name])
  config.data.shuffle_buffer = 8
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.train(stop_at=1) == 1
