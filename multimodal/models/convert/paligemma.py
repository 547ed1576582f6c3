"""HF transformers PaliGemma (`PaliGemmaForConditionalGeneration` with a Gemma 1 decoder) ->
our `paligemma` params and spec.

What HF computes and ours matches: the SigLIP tower's last hidden states (after its final
LayerNorm; the MAP head, if the checkpoint has one, is unused) through a Linear projector are
the image embeddings as they are; text token embeddings are scaled by sqrt(hidden_size);
RMSNorm scales by (1 + weight); rotary embeddings split each head in halves; the lm_head is the
tied token embedding. HF's prefix-LM mask comes from token_type_ids (0: image and prompt, which
see each other; 1: the causal suffix), ours from prefix_mask; HF's positions start at 1, ours
at 0, which rotary embeddings cannot tell apart (they see only position differences).
PaliGemma 2 (Gemma 2 decoders: soft-capping, sliding windows, extra norms) is not supported.

Command line: python -m multimodal.models.convert.paligemma --hf_dir=FOLDER --output=PARAMS.npz
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from multimodal.models.convert import hf_checkpoint as hf
from multimodal.models.convert import siglip
from multimodal.models.convert.hf_checkpoint import Params, Rules, Spec

# HF's GemmaConfig defaults, for keys a config.json leaves out.
GEMMA_DEFAULTS = dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576,
                      num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16,
                      head_dim=256, hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                      attention_bias=False, tie_word_embeddings=True)
# HF's GemmaConfig maps a legacy "gelu" to the tanh approximation, as our GatedMlp computes.
GEMMA_GELUS = ("gelu", *siglip.TANH_GELUS)
# Checkpoint layouts -> one naming: transformers 5 in memory ("model.language_model."), as saved
# ("language_model.model."), and 4.x releases ("vision_tower.vision_model.", ...).
RENAMES = ((r"^model\.language_model\.", "language_model."),
           (r"^language_model\.model\.", "language_model."),
           (r"^language_model\.lm_head\.", "lm_head."),
           (r"^model\.vision_tower\.", "vision_tower."),
           (r"^vision_tower\.vision_model\.", "vision_tower."),
           (r"^model\.multi_modal_projector\.", "multi_modal_projector."))


def text_config(config: dict[str, Any]) -> dict[str, Any]:
  """The Gemma decoder's config with HF's defaults filled, checked to be one we reproduce."""
  text = hf.sub_config(config, "text_config", GEMMA_DEFAULTS)
  hf.require(text.get("model_type", "gemma") == "gemma",
             f"text model_type {text.get('model_type')!r} (only Gemma 1 decoders; PaliGemma 2's "
             "Gemma 2 is not supported)")
  # Configs of transformers 4.x may name it hidden_activation, which then takes precedence.
  activation = text.get("hidden_activation") or text["hidden_act"]
  hf.require(activation in GEMMA_GELUS, f"hidden activation {activation!r}")
  hf.require(not text["attention_bias"], "attention_bias true")
  for key in ("attn_logit_softcapping", "final_logit_softcapping", "sliding_window"):
    hf.require(text.get(key) is None, f"{key} {text.get(key)}")
  rope = text.get("rope_parameters") or {}
  hf.require(rope.get("rope_type", "default") == "default",
             f"rope_type {rope.get('rope_type')!r}")
  text["rope_theta"] = rope.get("rope_theta", text.get("rope_theta", 10_000.0))
  hf.require(config.get("tie_word_embeddings", True) and text["tie_word_embeddings"],
             "untied word embeddings (our logits use the token embedding)")
  return text


def model_spec(config: dict[str, Any]) -> Spec:
  """An HF PaliGemmaConfig (config.json as a dict) -> our `paligemma` spec, vocab_size
  included: `MODELS.build(spec)` is the model the converted params fit."""
  hf.require(config.get("model_type") == "paligemma",
             f"model_type {config.get('model_type')!r} (this converter reads 'paligemma')")
  # Without one, HF would take PaliGemma's own defaults for it, not the classes' ones.
  hf.require(bool(config.get("vision_config") and config.get("text_config")),
             "no vision_config or no text_config")
  text = text_config(config)
  vision = hf.sub_config(config, "vision_config", siglip.VISION_DEFAULTS)
  projection = config.get("projection_dim", 2048)
  hf.require(projection == text["hidden_size"],
             f"projection_dim {projection} differs from the text hidden_size {text['hidden_size']}")
  return dict(type="paligemma", image=siglip.vit_spec(vision),
              decoder=dict(width=text["hidden_size"], depth=text["num_hidden_layers"],
                           num_heads=text["num_attention_heads"],
                           num_kv_heads=text["num_key_value_heads"], head_dim=text["head_dim"],
                           mlp_dim=text["intermediate_size"], rope_base=text["rope_theta"],
                           norm_eps=text["rms_norm_eps"]),
              vocab_size=text["vocab_size"])


def canonical_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF keys in any of `RENAMES`' layouts -> "language_model.", "vision_tower.",
  "multi_modal_projector.", "lm_head."; a tied lm_head copy is dropped."""
  renamed = {}
  for key, value in state.items():
    for pattern, replacement in RENAMES:
      key = re.sub(pattern, replacement, key)
    renamed[key] = value
  lm_head = renamed.pop("lm_head.weight", None)
  embedding = renamed.get("language_model.embed_tokens.weight")
  if lm_head is not None and not (embedding is not None and np.array_equal(lm_head, embedding)):
    raise ValueError("The checkpoint's lm_head.weight differs from its token embedding; our "
                     "PaliGemma ties the two.")
  return renamed


def decoder_rules(text: dict[str, Any]) -> Rules:
  """GemmaModel weights under "language_model." -> our GemmaDecoder under "text_decoder/"."""
  rules = {"text_decoder/embedding": ("language_model.embed_tokens.weight", hf.same),
           "text_decoder/final_norm/scale": ("language_model.norm.weight", hf.same)}
  heads, kv_heads = text["num_attention_heads"], text["num_key_value_heads"]
  for i in range(text["num_hidden_layers"]):
    theirs, ours = f"language_model.layers.{i}", f"text_decoder/block{i}"
    rules.update({
        f"{ours}/pre_attention_norm/scale": (f"{theirs}.input_layernorm.weight", hf.same),
        f"{ours}/pre_mlp_norm/scale": (f"{theirs}.post_attention_layernorm.weight", hf.same),
        f"{ours}/attention/query/kernel": (f"{theirs}.self_attn.q_proj.weight",
                                           hf.heads_in(heads)),
        f"{ours}/attention/key/kernel": (f"{theirs}.self_attn.k_proj.weight",
                                         hf.heads_in(kv_heads)),
        f"{ours}/attention/value/kernel": (f"{theirs}.self_attn.v_proj.weight",
                                           hf.heads_in(kv_heads)),
        f"{ours}/attention/out/kernel": (f"{theirs}.self_attn.o_proj.weight",
                                         hf.heads_out(heads)),
    })
    for name in ("gate", "up", "down"):
      rules[f"{ours}/mlp/{name}/kernel"] = (f"{theirs}.mlp.{name}_proj.weight", hf.dense)
  return rules


def convert(state: dict[str, np.ndarray], config: dict[str, Any]) -> Params:
  """HF PaliGemmaForConditionalGeneration weights (HF names -> arrays) -> our paligemma params
  for `model_spec(config)`. Raises a ValueError naming every unexpected or missing key."""
  model_spec(config)  # Checks the config is one we reproduce.
  vision = hf.sub_config(config, "vision_config", siglip.VISION_DEFAULTS)
  rules = {**siglip.vision_rules("vision_tower", "image_encoder", vision),
           **siglip.linear("multi_modal_projector.linear", "projector"),
           **decoder_rules(text_config(config))}
  return hf.apply_rules(canonical_names(state), rules, "PaliGemma model")


def convert_folder(hf_dir: str) -> tuple[Params, Spec]:
  """A downloaded HF PaliGemma folder (config.json, *.safetensors) -> (our params, our spec)."""
  config = hf.load_config(hf_dir)
  return convert(hf.load_state_dict(hf_dir), config), model_spec(config)


if __name__ == "__main__":
  hf.main(convert_folder)
