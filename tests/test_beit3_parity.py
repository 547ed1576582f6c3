"""Parity with torchscale's BEiT-3 (the public release's encoder): a tiny torchscale BEiT3 with
random weights, converted, gives the same final hidden states in our Beit3Encoder for an image
alone, a text alone and an image with a padded text; the converter names keys that do not fit;
the paper variant builds; bad input is a clear error."""
import dataclasses
import importlib.util
import sys
import types

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip("torch")
pytest.importorskip("torchscale")

from multimodal.models import beit3  # noqa: E402
from multimodal.models.convert import beit3 as convert_beit3  # noqa: E402

CONFIG = beit3.Beit3Config(width=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8,
                           image_size=32, vocab_size=64, max_text_positions=16)
TORCHSCALE = dict(img_size=32, patch_size=8, vocab_size=64, encoder_embed_dim=32,
                  encoder_attention_heads=4, encoder_ffn_embed_dim=64, encoder_layers=2,
                  max_source_positions=16, multiway=True, subln=True, normalize_output=True,
                  layernorm_embedding=False, no_output_layer=True, dropout=0.0,
                  drop_path_rate=0.0)
BATCH, TEXT_LENGTH, REAL_LENGTHS = 2, 9, (7, 4)


def _drop_path(x, drop_prob: float = 0.0, training: bool = False):
  """timm's drop_path (stochastic depth per example)."""
  if drop_prob == 0.0 or not training:
    return x
  keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - drop_prob)
  return x * keep / (1 - drop_prob)


def _unused(*args, **kwargs):
  raise NotImplementedError("fairscale stand-in: checkpoint_activations and fsdp are off here.")


def import_torchscale():
  """(EncoderConfig, BEiT3) from torchscale, which imports timm only for `drop_path` (and timm
  would import torchvision) and fairscale only for activation checkpointing and FSDP wrappers:
  stand-ins for those are in sys.modules while torchscale imports, and taken out after."""
  stubs = {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
           "timm.models.layers": types.ModuleType("timm.models.layers")}
  stubs["timm.models.layers"].drop_path = _drop_path
  if importlib.util.find_spec("fairscale") is None:
    stubs["fairscale"], stubs["fairscale.nn"] = (types.ModuleType("fairscale"),
                                                 types.ModuleType("fairscale.nn"))
    stubs["fairscale.nn"].checkpoint_wrapper = stubs["fairscale.nn"].wrap = _unused
  saved = {name: sys.modules.get(name) for name in stubs}
  sys.modules.update(stubs)
  try:
    from torchscale.architecture.config import EncoderConfig
    from torchscale.model.BEiT3 import BEiT3
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module
  return EncoderConfig, BEiT3


@pytest.fixture(scope="module")
def reference():
  """(the torchscale model in eval mode, its state dict as numpy arrays)."""
  encoder_config, model_class = import_torchscale()
  torch.manual_seed(0)
  model = model_class(encoder_config(**TORCHSCALE)).eval()
  with torch.no_grad():  # Off the init: no unit LayerNorm scales, zero biases or equal experts.
    for param in model.parameters():
      param.add_(0.1 * torch.randn_like(param))
    for module in model.modules():
      if isinstance(module, torch.nn.LayerNorm):
        module.weight.copy_(1.0 + 0.3 * torch.randn_like(module.weight))
        module.bias.copy_(0.3 * torch.randn_like(module.bias))
  return model, {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def ours(reference):
  """Our encoder on the converted params: inputs -> Beit3Output."""
  params = convert_beit3.convert(reference[1], CONFIG)
  apply = jax.jit(beit3.Beit3Encoder(CONFIG).apply)  # params as an argument, not constants
  return lambda **inputs: apply({"params": params}, **inputs)


def inputs(kind: str) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (BATCH, 32, 32, 3)).astype(np.float32)
  tokens = rng.integers(0, CONFIG.vocab_size, (BATCH, TEXT_LENGTH)).astype(np.int32)
  padding = np.arange(TEXT_LENGTH)[None] >= np.array(REAL_LENGTHS)[:, None]
  return {"image": dict(image=image),
          "image_masked": dict(image=image, image_mask=rng.uniform(size=(BATCH, 16)) < 0.4),
          "text": dict(text_tokens=tokens, text_padding_mask=padding),
          "image_text": dict(image=image, text_tokens=tokens, text_padding_mask=padding)}[kind]


def torchscale_forward(model, given: dict[str, np.ndarray]) -> dict:
  """torchscale's BEiT3 on our inputs (its images are NCHW, its tokens int64)."""
  tensor = lambda key: None if key not in given else torch.from_numpy(given[key])
  image, tokens = tensor("image"), tensor("text_tokens")
  with torch.no_grad():
    return model(textual_tokens=None if tokens is None else tokens.long(),
                 visual_tokens=None if image is None else image.permute(0, 3, 1, 2),
                 text_padding_position=tensor("text_padding_mask"),
                 vision_masked_position=tensor("image_mask"))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("kind", ["image", "image_masked", "text", "image_text"])
def test_hidden_states_match_torchscale(reference, ours, kind):
  given = inputs(kind)
  want = torchscale_forward(reference[0], given)
  got = ours(**given)
  assert got.split_position == want["multiway_split_position"]
  hidden = want["encoder_out"].numpy()
  assert got.hidden.shape == hidden.shape
  error = relative_error(np.asarray(got.hidden), hidden)
  print(f"{kind}: max relative error {error:.2e}")
  assert error < 1e-5, f"{kind}: relative error {error:.2e}"
  np.testing.assert_array_equal(got.padding_mask, want["encoder_padding_mask"].numpy())


def test_converted_params_are_the_models_own(reference):
  """The converter fills exactly the params our init makes, with their shapes; the sizes come
  back from the state dict; params carry logical axis names for sharding."""
  assert convert_beit3.config_from_state(reference[1], num_heads=4) == CONFIG
  variables = jax.eval_shape(beit3.Beit3Encoder(CONFIG).init, jax.random.key(0),
                             **beit3.init_inputs(CONFIG))
  shapes = jax.tree.map(lambda x: x.shape, nn.meta.unbox(variables["params"]))
  converted = jax.tree.map(np.shape, convert_beit3.convert(reference[1], CONFIG))
  assert traverse_util.flatten_dict(shapes) == traverse_util.flatten_dict(converted)
  specs = {k: tuple(v) for k, v in
           traverse_util.flatten_dict(nn.get_partition_spec(variables)["params"]).items()}
  assert specs[("block0", "self_attention", "query_text", "kernel")] == ("embed", "heads", "kv")
  assert specs[("block1", "mlp_image", "ln", "scale")] == ("mlp",)
  assert specs[("text_embed", "embedding", "embedding")] == ("vocab", "embed")


def test_converter_names_missing_and_unexpected_keys(reference):
  state = dict(reference[1])
  del state["encoder.layers.1.ffn.B.ffn_layernorm.bias"]
  state["encoder.output_projection.weight"] = np.zeros((64, 32), np.float32)
  with pytest.raises(ValueError) as error:
    convert_beit3.convert(state, CONFIG)
  message = str(error.value)
  assert "unexpected HF key: encoder.output_projection.weight" in message
  assert ("our param left unfilled: block1/mlp_text/ln/bias "
          "(from encoder.layers.1.ffn.B.ffn_layernorm.bias)") in message
  with pytest.raises(ValueError, match="variant 'paper'"):
    convert_beit3.convert(reference[1], beit3.Beit3Config(variant="paper"))


def test_paper_variant_shares_attention_and_has_vision_language_experts():
  config = dataclasses.replace(CONFIG, variant="paper", vl_layers=1)
  model = beit3.Beit3Encoder(config)
  given = beit3.init_inputs(config, batch=BATCH, text_length=5)
  # Random params of init's shapes: a compiled init takes far longer than the model here.
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), **given)["params"])
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: (0.1 * rng.normal(size=x.shape)).astype(np.float32), shapes)
  assert {"query_shared", "out_shared", "inner_ln_image", "inner_ln_text"} <= set(
      params["block0"]["self_attention"])
  assert "query_image" not in params["block0"]["self_attention"]
  assert {"ln_mlp_vl", "mlp_vl"} <= set(params["vl_block0"])
  assert "mlp_image" not in params["vl_block0"]
  out = jax.jit(model.apply)({"params": params}, **given)
  assert out.hidden.shape == (BATCH, 1 + 16 + 5, 32) and out.split_position == 17
  assert np.all(np.isfinite(out.hidden))
  out = jax.eval_shape(model.apply, {"params": params}, image=given["image"])
  assert out.hidden.shape == (BATCH, 17, 32) and out.split_position == -1


def test_bad_input_is_a_clear_error():
  model = beit3.Beit3Encoder(CONFIG)
  with pytest.raises(ValueError, match="got neither"):
    model.init(jax.random.key(0))
  with pytest.raises(ValueError, match="NHWC"):
    model.init(jax.random.key(0), image=np.zeros((1, 3, 32, 32), np.float32))
  with pytest.raises(ValueError, match="longer than BEiT-3's 14"):
    model.init(jax.random.key(0), text_tokens=np.zeros((1, 15), np.int32))
  with pytest.raises(ValueError, match="vl_layers=1 needs variant='paper'"):
    beit3.Beit3Config(vl_layers=1)
