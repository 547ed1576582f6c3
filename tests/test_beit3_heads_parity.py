"""Parity of the BEiT-3 task models with microsoft/unilm's beit3 heads (modeling_finetune.py:
BEiT3ForVisualReasoning, BEiT3ForVisualQuestionAnswering, BEiT3ForRetrieval) over a tiny
torchscale BEiT3 with random weights: the heads are written out below in torch as the release
has them, their weights and the encoder's converted, and our models' outputs compared."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchscale")

import jax  # noqa: E402

from multimodal.models import beit3_models  # noqa: E402
from multimodal.models.convert import beit3 as convert_beit3  # noqa: E402
from tests.test_beit3_parity import (  # noqa: E402,F401  (reference: a fixture)
    BATCH, CONFIG, REAL_LENGTHS, TEXT_LENGTH, TORCHSCALE, import_torchscale, reference,
    relative_error)

WIDTH, CLASSES = CONFIG.width, 3
ENCODER = dict(width=CONFIG.width, depth=CONFIG.depth, num_heads=CONFIG.num_heads,
               mlp_dim=CONFIG.mlp_dim, patch_size=CONFIG.patch_size,
               image_size=CONFIG.image_size, max_text_positions=CONFIG.max_text_positions)


class TwoLayerMLP(torch.nn.Module):
  """unilm's TwoLayerMLP."""

  def __init__(self, in_features, hidden_features, out_features):
    super().__init__()
    self.norm1 = torch.nn.LayerNorm(in_features)
    self.dense1 = torch.nn.Linear(in_features, hidden_features)
    self.norm2 = torch.nn.LayerNorm(hidden_features)
    self.act = torch.nn.GELU()
    self.dense2 = torch.nn.Linear(hidden_features, out_features)

  def forward(self, x):
    return self.dense2(self.act(self.norm2(self.dense1(self.norm1(x)))))


def nlvr_reference(beit3, image_a, image_b, text, padding, head):
  """BEiT3ForVisualReasoning.forward."""
  bsz = text.shape[0]
  outputs = beit3(textual_tokens=torch.cat((text, text)),
                  visual_tokens=torch.cat((image_a, image_b)),
                  text_padding_position=torch.cat((padding, padding)))
  x, split = outputs["encoder_out"], outputs["multiway_split_position"]
  cls_rep = torch.cat((x[:, 0, :], x[:, split, :]), dim=-1)
  a, b = torch.split(cls_rep, [bsz, bsz], dim=0)
  return head(torch.cat((a, b), dim=-1))


def randomize(module):
  """Weights off the init (no unit norms, zero biases or 1/1000 scales)."""
  torch.manual_seed(1)
  with torch.no_grad():
    for param in module.parameters():
      param.copy_(0.5 * torch.randn_like(param))
  return module


def linear(layer):
  return {"kernel": layer.weight.detach().numpy().T, "bias": layer.bias.detach().numpy()}


def norm(layer):
  return {"scale": layer.weight.detach().numpy(), "bias": layer.bias.detach().numpy()}


def data():
  rng = np.random.default_rng(3)
  images = [rng.uniform(-1, 1, (BATCH, 32, 32, 3)).astype(np.float32) for _ in range(2)]
  tokens = rng.integers(0, CONFIG.vocab_size, (BATCH, TEXT_LENGTH)).astype(np.int32)
  padding = np.arange(TEXT_LENGTH)[None] >= np.array(REAL_LENGTHS)[:, None]
  return images, tokens, padding


def nchw(image):
  return torch.from_numpy(image).permute(0, 3, 1, 2)


def test_nlvr_logits_match_the_release(reference):  # noqa: F811  (the imported fixture)
  model, state = reference
  head = randomize(TwoLayerMLP(4 * WIDTH, 2 * WIDTH, CLASSES))
  (left, right), tokens, padding = data()
  with torch.no_grad():
    want = nlvr_reference(model, nchw(left), nchw(right), torch.from_numpy(tokens).long(),
                          torch.from_numpy(padding), head).numpy()
  params = {"beit3": convert_beit3.convert(state, CONFIG),
            "head": {"norm1": norm(head.norm1), "dense1": linear(head.dense1),
                     "norm2": norm(head.norm2), "dense2": linear(head.dense2)}}
  ours = beit3_models.Beit3Nlvr(ENCODER, CLASSES, CONFIG.vocab_size)
  got = jax.jit(lambda p, b: ours.apply({"params": p}, b, train=False))(
      params, dict(left_image=left, right_image=right, text_tokens=tokens,
                   text_mask=~padding))
  error = relative_error(np.asarray(got), want)
  print(f"nlvr logits: max relative error {error:.2e}")
  assert error < 1e-5
  # The pair is ordered: swapping the images changes the verdict's logits.
  swapped = ours.apply({"params": params}, dict(left_image=right, right_image=left,
                                                text_tokens=tokens, text_mask=~padding),
                       train=False)
  assert relative_error(np.asarray(swapped), want) > 1e-3


def test_vqa_logits_match_the_release(reference):  # noqa: F811  (the imported fixture)
  model, state = reference
  torch.manual_seed(2)
  pooler_norm, pooler_dense = torch.nn.LayerNorm(WIDTH), torch.nn.Linear(WIDTH, WIDTH)
  head = torch.nn.Sequential(torch.nn.Linear(WIDTH, 2 * WIDTH), torch.nn.LayerNorm(2 * WIDTH),
                             torch.nn.GELU(), torch.nn.Linear(2 * WIDTH, CLASSES))
  for module in (pooler_norm, pooler_dense, head):
    randomize(module)
  (image, _), tokens, padding = data()
  with torch.no_grad():  # BEiT3ForVisualQuestionAnswering.forward, its Pooler on x[:, 0]
    x = model(textual_tokens=torch.from_numpy(tokens).long(), visual_tokens=nchw(image),
              text_padding_position=torch.from_numpy(padding))["encoder_out"]
    want = head(torch.tanh(pooler_dense(pooler_norm(x[:, 0, :])))).numpy()
  params = {"beit3": convert_beit3.convert(state, CONFIG),
            "pooler_norm": norm(pooler_norm), "pooler_dense": linear(pooler_dense),
            "head_dense1": linear(head[0]), "head_norm": norm(head[1]),
            "head_dense2": linear(head[3])}
  ours = beit3_models.Beit3Vqa(ENCODER, CLASSES, CONFIG.vocab_size)
  got = ours.apply({"params": params}, dict(image=image, question_tokens=tokens,
                                            question_mask=~padding), train=False)
  assert relative_error(np.asarray(got), want) < 1e-5


def test_retrieval_embeddings_match_the_release(reference):  # noqa: F811  (the imported fixture)
  model, state = reference
  vision_head = randomize(torch.nn.Linear(WIDTH, WIDTH, bias=False))
  language_head = randomize(torch.nn.Linear(WIDTH, WIDTH, bias=False))
  (image, _), tokens, padding = data()
  with torch.no_grad():  # BEiT3ForRetrieval.forward: each modality alone, its first token
    x = model(textual_tokens=None, visual_tokens=nchw(image))["encoder_out"]
    want_image = torch.nn.functional.normalize(vision_head(x[:, 0, :]), dim=-1).numpy()
    x = model(textual_tokens=torch.from_numpy(tokens).long(), visual_tokens=None,
              text_padding_position=torch.from_numpy(padding))["encoder_out"]
    want_text = torch.nn.functional.normalize(language_head(x[:, 0, :]), dim=-1).numpy()
  params = {"beit3": convert_beit3.convert(state, CONFIG),
            "vision_head": {"kernel": vision_head.weight.detach().numpy().T},
            "language_head": {"kernel": language_head.weight.detach().numpy().T},
            "log_temperature": np.float32(np.log(1 / 0.07))}
  ours = beit3_models.Beit3Retrieval(ENCODER, CONFIG.vocab_size)
  got = ours.apply({"params": params}, dict(image=image, text_tokens=tokens,
                                            text_mask=~padding), train=False)
  assert relative_error(np.asarray(got["image"]), want_image) < 1e-5
  assert relative_error(np.asarray(got["text"]), want_text) < 1e-5
  np.testing.assert_allclose(got["temperature"], 1 / 0.07, rtol=1e-6)


def test_encoder_without_output_norm_matches_the_release():
  """The release's VQA models build the encoder with normalize_output=False: no final
  LayerNorm; the converter reads that from the state dict."""
  encoder_config, model_class = import_torchscale()
  torch.manual_seed(0)
  model = randomize(model_class(encoder_config(**{**TORCHSCALE,
                                                  "normalize_output": False})).eval())
  state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
  config = convert_beit3.config_from_state(state, num_heads=CONFIG.num_heads)
  assert not config.normalize_output
  (image, _), tokens, padding = data()
  with torch.no_grad():
    want = model(textual_tokens=torch.from_numpy(tokens).long(), visual_tokens=nchw(image),
                 text_padding_position=torch.from_numpy(padding))["encoder_out"].numpy()
  ours = beit3_models.Beit3Encoder(config)
  got = ours.apply({"params": convert_beit3.convert(state, config)}, image=image,
                   text_tokens=tokens, text_padding_mask=padding)
  assert relative_error(np.asarray(got.hidden), want) < 1e-5
