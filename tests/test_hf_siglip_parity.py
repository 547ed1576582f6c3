"""Parity with HF transformers' SigLIP: a tiny SiglipModel with random weights, saved as
safetensors and converted, gives the same embeddings and logits in our two_towers model; the
converter names keys that do not fit; the command line writes what `convert_folder` returns."""
import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

os.environ["HF_HUB_OFFLINE"] = "1"  # Never download: the models are built from configs.
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from multimodal.models import MODELS  # noqa: E402
from multimodal.models.convert import hf_checkpoint, siglip  # noqa: E402

TOKEN_IDS = dict(pad_token_id=1, bos_token_id=2, eos_token_id=3)  # inside the tiny vocabulary
TEXT = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16, **TOKEN_IDS)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
  """(the HF model, the folder it was saved to)."""
  torch.manual_seed(0)
  model = transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT,
                                                             vision_config=VISION)).eval()
  with torch.no_grad():  # Move every weight off its init (zero biases, unit norms) ...
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
    model.logit_scale.fill_(2.3)  # ... and give the temperature and bias real values.
    model.logit_bias.fill_(-1.5)
  folder = str(tmp_path_factory.mktemp("hf_siglip"))
  model.save_pretrained(folder, safe_serialization=True)
  return model, folder


def test_embeddings_and_logits_match_hf(hf_model_dir):
  hf_model, folder = hf_model_dir
  params, spec = siglip.convert_folder(folder)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)  # ours NHWC, HF NCHW
  tokens = rng.integers(0, TEXT["vocab_size"], (3, 12)).astype(np.int32)
  mask = np.ones(tokens.shape, bool)
  mask[0, 9:] = False  # padding that attention skips; the last position is still pooled
  with torch.no_grad():
    want = hf_model(input_ids=torch.tensor(tokens, dtype=torch.long),
                    pixel_values=torch.tensor(images.transpose(0, 3, 1, 2)),
                    attention_mask=torch.tensor(mask, dtype=torch.long))
  apply = jax.jit(functools.partial(MODELS.build(spec).apply, train=False))
  got = apply({"params": params}, {"image": images, "text_tokens": tokens, "text_mask": mask})
  logits = got["image"] @ got["text"].T * got["temperature"] + got["bias"]
  close = dict(rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["image"], want.image_embeds.numpy(), **close)
  np.testing.assert_allclose(got["text"], want.text_embeds.numpy(), **close)
  np.testing.assert_allclose(logits, want.logits_per_image.numpy(), **close)


def test_spec_defaults_are_hfs():
  """A config.json that leaves settings out means HF's defaults."""
  minimal = {"model_type": "siglip", "text_config": {"vocab_size": 100}}
  full = transformers.SiglipConfig(text_config={"vocab_size": 100, **TOKEN_IDS}).to_dict()
  assert siglip.model_spec(minimal) == siglip.model_spec(full)


def test_converter_names_missing_and_unexpected_keys(hf_model_dir):
  _, folder = hf_model_dir
  state = hf_checkpoint.load_state_dict(folder)
  config = hf_checkpoint.load_config(folder)
  del state["vision_model.head.attention.in_proj_bias"]
  state["text_model.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as error:
    siglip.convert(state, config)
  message = str(error.value)
  assert "unexpected HF key: text_model.extra.weight" in message
  for ours in ("query", "key", "value"):
    assert (f"our param left unfilled: image_encoder/map/attention/{ours}/bias "
            "(from vision_model.head.attention.in_proj_bias)") in message
  with pytest.raises(ValueError, match="hidden_act 'gelu'"):
    siglip.model_spec({**config, "vision_config": {**config["vision_config"],
                                                   "hidden_act": "gelu"}})


def test_command_line_writes_the_converted_params(hf_model_dir, tmp_path):
  _, folder = hf_model_dir
  output = str(tmp_path / "siglip.npz")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-m", "multimodal.models.convert.siglip",
                        f"--hf_dir={folder}", f"--output={output}"], cwd=root,
                       capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  params, spec = hf_checkpoint.load(output)
  want_params, want_spec = siglip.convert_folder(folder)
  assert spec == want_spec
  flat, want = (traverse_util.flatten_dict(p) for p in (params, want_params))
  assert flat.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(flat[key], want[key])
