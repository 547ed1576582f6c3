"""HF transformers SigLIP (`SiglipModel`, model_type "siglip") -> our `two_towers` params and spec.

How our model reproduces HF's: the image embedding is the MAP head's output with no projection
(`image_projection=False`); the text embedding is the last position's token (`pool_type="last"`)
through a Linear (our `text_projection`, HF's `text_model.head`); attentions have key biases;
text positions come from a table of max_position_embeddings rows; logit_scale and logit_bias
are our log_temperature and bias. Images go in as float[B, H, W, 3] (HF takes [B, 3, H, W]) at
the config's image_size.

Command line: python -m multimodal.models.convert.siglip --hf_dir=FOLDER --output=PARAMS.npz
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from multimodal.models.convert import hf_checkpoint as hf
from multimodal.models.convert.hf_checkpoint import Params, Rules, Spec

# HF's SiglipTextConfig / SiglipVisionConfig defaults, for keys a config.json leaves out.
TEXT_DEFAULTS = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072,
                     num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=64,
                     hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, projection_size=None)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, patch_size=16, hidden_act="gelu_pytorch_tanh",
                       layer_norm_eps=1e-6, vision_use_head=True)
# Our MLPs' GELU is the tanh approximation, which these HF activations all compute.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def tower_sizes(c: dict[str, Any]) -> dict[str, Any]:
  """An HF SigLIP tower config -> our encoder's size settings."""
  hf.require(c["hidden_act"] in TANH_GELUS,
             f"hidden_act {c['hidden_act']!r} (ours is the tanh GELU: one of {TANH_GELUS})")
  hf.require(c["layer_norm_eps"] == 1e-6,
             f"layer_norm_eps {c['layer_norm_eps']} (our LayerNorms use 1e-6)")
  return dict(variant=None, width=c["hidden_size"], depth=c["num_hidden_layers"],
              mlp_dim=c["intermediate_size"], num_heads=c["num_attention_heads"],
              key_bias=True)


def vit_spec(vision: dict[str, Any]) -> Spec:
  """An HF SiglipVisionConfig (defaults filled) -> our `vit` spec; MAP-pooled if it has a head."""
  patch = vision["patch_size"]
  if not isinstance(patch, int):
    hf.require(patch[0] == patch[1], f"non-square patches {patch}")
    patch = patch[0]
  return dict(type="vit", **tower_sizes(vision), patch_size=patch, stem="patch", posemb="learn",
              pool_type="map" if vision["vision_use_head"] else "none")


def model_spec(config: dict[str, Any]) -> Spec:
  """An HF SiglipConfig (config.json as a dict) -> our `two_towers` spec, vocab_size included:
  `MODELS.build(spec)` is the model the converted params fit."""
  hf.require(config.get("model_type") == "siglip",
             f"model_type {config.get('model_type')!r} (this converter reads 'siglip')")
  text = hf.sub_config(config, "text_config", TEXT_DEFAULTS)
  vision = hf.sub_config(config, "vision_config", VISION_DEFAULTS)
  hf.require(vision["vision_use_head"], "vision_use_head false (SiglipModel needs the head)")
  embed_dim = text["projection_size"] or text["hidden_size"]
  hf.require(vision["hidden_size"] == embed_dim,
             f"vision hidden_size {vision['hidden_size']} differs from the text embedding width "
             f"{embed_dim}")
  return dict(type="two_towers", image=vit_spec(vision),
              text=dict(type="text_encoder", **tower_sizes(text), pool_type="last",
                        max_len=text["max_position_embeddings"]),
              embed_dim=embed_dim, vocab_size=text["vocab_size"], image_projection=False)


def linear(hf_name: str, ours: str) -> Rules:
  return {f"{ours}/kernel": (f"{hf_name}.weight", hf.dense),
          f"{ours}/bias": (f"{hf_name}.bias", hf.same)}


def layer_norm(hf_name: str, ours: str) -> Rules:
  return {f"{ours}/scale": (f"{hf_name}.weight", hf.same),
          f"{ours}/bias": (f"{hf_name}.bias", hf.same)}


def mlp(hf_name: str, ours: str) -> Rules:
  return {**linear(f"{hf_name}.fc1", f"{ours}/fc1"), **linear(f"{hf_name}.fc2", f"{ours}/fc2")}


def attention(hf_name: str, ours: str, num_heads: int) -> Rules:
  """SiglipAttention (q_proj, k_proj, v_proj, out_proj) -> our MultiHeadAttention."""
  rules = {f"{ours}/out/kernel": (f"{hf_name}.out_proj.weight", hf.heads_out(num_heads)),
           f"{ours}/out/bias": (f"{hf_name}.out_proj.bias", hf.same)}
  for theirs, our_name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
    rules[f"{ours}/{our_name}/kernel"] = (f"{hf_name}.{theirs}.weight", hf.heads_in(num_heads))
    rules[f"{ours}/{our_name}/bias"] = (f"{hf_name}.{theirs}.bias", hf.head_bias(num_heads))
  return rules


def map_head(hf_name: str, ours: str, num_heads: int) -> Rules:
  """SiglipMultiheadAttentionPoolingHead (a torch MultiheadAttention, whose query, key and
  value weights are stacked in in_proj) -> our MapPooling."""
  rules = {f"{ours}/probe": (f"{hf_name}.probe", hf.same),
           **layer_norm(f"{hf_name}.layernorm", f"{ours}/ln"),
           **mlp(f"{hf_name}.mlp", f"{ours}/mlp"),
           f"{ours}/attention/out/kernel": (f"{hf_name}.attention.out_proj.weight",
                                            hf.heads_out(num_heads)),
           f"{ours}/attention/out/bias": (f"{hf_name}.attention.out_proj.bias", hf.same)}
  for i, our_name in enumerate(("query", "key", "value")):
    rules[f"{ours}/attention/{our_name}/kernel"] = (f"{hf_name}.attention.in_proj_weight",
                                                   third(i, hf.heads_in(num_heads)))
    rules[f"{ours}/attention/{our_name}/bias"] = (f"{hf_name}.attention.in_proj_bias",
                                                 third(i, hf.head_bias(num_heads)))
  return rules


def third(i: int, then: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
  """`then` on the i-th of three equal parts along the first axis (in_proj's q, k, v)."""
  return lambda x: then(np.split(x, 3)[i])


def encoder(hf_name: str, final_norm: str, ours: str, c: dict[str, Any]) -> Rules:
  """SiglipEncoder layers `{hf_name}.layers.{i}` and the final LayerNorm `final_norm` -> our
  Encoder."""
  rules = layer_norm(final_norm, f"{ours}/ln_final")
  for i in range(c["num_hidden_layers"]):
    theirs, block = f"{hf_name}.layers.{i}", f"{ours}/block{i}"
    rules.update(layer_norm(f"{theirs}.layer_norm1", f"{block}/ln_self"))
    rules.update(attention(f"{theirs}.self_attn", f"{block}/self_attention",
                           c["num_attention_heads"]))
    rules.update(layer_norm(f"{theirs}.layer_norm2", f"{block}/ln_mlp"))
    rules.update(mlp(f"{theirs}.mlp", f"{block}/mlp"))
  return rules


def vision_rules(hf_name: str, ours: str, vision: dict[str, Any]) -> Rules:
  """SiglipVisionModel weights under `hf_name` -> our ViT under `ours`."""
  rules = {f"{ours}/stem/kernel": (f"{hf_name}.embeddings.patch_embedding.weight", hf.conv),
           f"{ours}/stem/bias": (f"{hf_name}.embeddings.patch_embedding.bias", hf.same),
           f"{ours}/posemb/embedding": (f"{hf_name}.embeddings.position_embedding.weight",
                                        hf.same),
           **encoder(f"{hf_name}.encoder", f"{hf_name}.post_layernorm", f"{ours}/encoder", vision)}
  if vision["vision_use_head"]:
    rules.update(map_head(f"{hf_name}.head", f"{ours}/map", vision["num_attention_heads"]))
  return rules


def convert(state: dict[str, np.ndarray], config: dict[str, Any]) -> Params:
  """HF SiglipModel weights (HF names -> arrays) -> our two_towers params for
  `model_spec(config)`. Raises a ValueError naming every unexpected or missing key."""
  model_spec(config)  # Checks the config is one we reproduce.
  text = hf.sub_config(config, "text_config", TEXT_DEFAULTS)
  scalar = lambda x: x.reshape(())
  rules = {**vision_rules("vision_model", "image_encoder",
                          hf.sub_config(config, "vision_config", VISION_DEFAULTS)),
           "text_encoder/embedding/embedding": ("text_model.embeddings.token_embedding.weight",
                                                hf.same),
           "text_encoder/posemb/embedding": ("text_model.embeddings.position_embedding.weight",
                                             hf.same),
           **encoder("text_model.encoder", "text_model.final_layer_norm", "text_encoder/encoder",
                     text),
           **linear("text_model.head", "text_projection"),
           "log_temperature": ("logit_scale", scalar),
           "bias": ("logit_bias", scalar)}
  return hf.apply_rules(state, rules, "SigLIP model")


def convert_folder(hf_dir: str) -> tuple[Params, Spec]:
  """A downloaded HF SigLIP folder (config.json, *.safetensors) -> (our params, our spec)."""
  config = hf.load_config(hf_dir)
  return convert(hf.load_state_dict(hf_dir), config), model_spec(config)


if __name__ == "__main__":
  hf.main(convert_folder)
