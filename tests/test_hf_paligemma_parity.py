"""Parity with HF transformers' PaliGemma: a tiny PaliGemmaForConditionalGeneration (SigLIP
tower, Gemma decoder with multi-query attention) with random weights, saved as safetensors and
converted, gives the same logits on image + prefix + suffix in our paligemma model; the
converter reads the other checkpoint layouts and names keys that do not fit."""
import functools
import os

import jax
import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # Never download: the models are built from configs.
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from multimodal.models import MODELS  # noqa: E402
from multimodal.models.convert import hf_checkpoint, paligemma  # noqa: E402

VOCAB = 100
IMAGE_TOKENS = 16  # (32 / 8) ** 2
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              image_size=32, patch_size=8, vision_use_head=False)
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, pad_token_id=0,
            bos_token_id=2, eos_token_id=1)


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
  """(the HF model, the folder it was saved to)."""
  torch.manual_seed(0)
  # The image placeholder token is outside the vocabulary (HF embeds it as token 0 and then
  # overwrites it with the image features).
  config = transformers.PaliGemmaConfig(vision_config=VISION, text_config=TEXT,
                                        projection_dim=TEXT["hidden_size"],
                                        image_token_index=VOCAB, vocab_size=VOCAB)
  model = transformers.PaliGemmaForConditionalGeneration(config).eval()
  with torch.no_grad():  # Move every weight off its init (zero norms and biases).
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  folder = str(tmp_path_factory.mktemp("hf_paligemma"))
  model.save_pretrained(folder, safe_serialization=True)
  return model, folder


def test_logits_match_hf_on_image_prefix_and_suffix(hf_model_dir):
  hf_model, folder = hf_model_dir
  params, spec = paligemma.convert_folder(folder)
  rng = np.random.default_rng(0)
  batch, length = 2, 10
  images = rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)  # ours NHWC, HF NCHW
  tokens = rng.integers(0, VOCAB, (batch, length)).astype(np.int32)
  text_mask = np.arange(length)[None] < np.array([[length], [8]])  # the second is padded
  prefix_mask = np.arange(length)[None] < np.array([[4], [6]])
  got = jax.jit(functools.partial(MODELS.build(spec).apply, train=False))(
      {"params": params}, {"image": images, "text_tokens": tokens, "text_mask": text_mask,
                           "prefix_mask": prefix_mask})

  image = np.ones((batch, IMAGE_TOKENS), bool)
  hf_inputs = dict(
      input_ids=torch.tensor(np.concatenate([np.full((batch, IMAGE_TOKENS), VOCAB), tokens], 1)),
      pixel_values=torch.tensor(images.transpose(0, 3, 1, 2)),
      attention_mask=torch.tensor(np.concatenate([image, text_mask], 1), dtype=torch.long))
  # token_type_ids: 0 for the image and the prefix (bidirectional), 1 for the suffix (causal).
  token_types = torch.tensor(np.concatenate([~image, ~prefix_mask], 1), dtype=torch.long)
  with torch.no_grad():
    want = hf_model(**hf_inputs, token_type_ids=token_types).logits.numpy()[:, IMAGE_TOKENS:]
    bidirectional = hf_model(**hf_inputs).logits.numpy()[:, IMAGE_TOKENS:]
  np.testing.assert_allclose(np.asarray(got)[text_mask], want[text_mask], rtol=1e-4, atol=1e-6)
  # Without token types HF attends bidirectionally everywhere, which the comparison would see.
  assert np.abs(bidirectional - want)[text_mask].max() > 1e-3


def test_other_checkpoint_layouts_convert_the_same(hf_model_dir):
  """transformers 4.x releases nest the vision tower in `vision_model`; transformers 5 in
  memory prefixes "model."; a tied lm_head may be saved as a copy."""
  _, folder = hf_model_dir
  state = hf_checkpoint.load_state_dict(folder)
  config = hf_checkpoint.load_config(folder)
  renamed = {key.replace("vision_tower.", "vision_tower.vision_model.")
             .replace("language_model.model.", "model.language_model."): value
             for key, value in state.items()}
  renamed["lm_head.weight"] = state["language_model.model.embed_tokens.weight"]
  want = paligemma.convert(state, config)
  got = paligemma.convert(renamed, config)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  renamed["lm_head.weight"] = renamed["lm_head.weight"] + 1
  with pytest.raises(ValueError, match="lm_head.weight differs"):
    paligemma.convert(renamed, config)


def test_converter_names_missing_and_unexpected_keys(hf_model_dir):
  _, folder = hf_model_dir
  state = hf_checkpoint.load_state_dict(folder)
  config = hf_checkpoint.load_config(folder)
  del state["language_model.model.layers.1.self_attn.k_proj.weight"]
  state["vision_tower.head.probe"] = np.zeros((1, 1, 32), np.float32)  # a head the config lacks
  with pytest.raises(ValueError) as error:
    paligemma.convert(state, config)
  message = str(error.value)
  assert "unexpected HF key: vision_tower.head.probe" in message
  assert ("our param left unfilled: text_decoder/block1/attention/key/kernel "
          "(from language_model.layers.1.self_attn.k_proj.weight)") in message


def test_spec_defaults_are_hfs_and_gemma2_is_refused():
  sizes = dict(vision_config={"hidden_size": 32}, text_config={"hidden_size": 64},
               projection_dim=64)
  full = transformers.PaliGemmaConfig(**sizes).to_dict()
  assert paligemma.model_spec({"model_type": "paligemma", **sizes}) == paligemma.model_spec(full)
  gemma2 = {**full, "text_config": {**full["text_config"], "model_type": "gemma2"}}
  with pytest.raises(ValueError, match="Gemma 2 is not supported"):
    paligemma.model_spec(gemma2)
