"""Decoding speed: our jitted PaliGemma decoder against HF transformers' `generate`, on the same
random weights and inputs, in one run.

  nice -n 5 python -m multimodal.benchmarks.decoding
  python -m multimodal.benchmarks.decoding --size=tiny --batch_sizes=1 --repeats=1 \\
      --output=/tmp/decoding   # also writes /tmp/decoding.md and /tmp/decoding.json

One HF `PaliGemmaForConditionalGeneration` is built from a config with random weights (moved
off their init, so no norm is left at zero), saved as safetensors and converted with our
converter (multimodal.models.convert.paligemma). Both sides get the same images and prompts
(BOS and random tokens, all of one length, so neither side pads) and decode greedily in float32
with no EOS stopping: every example writes exactly --new_tokens tokens (ours with no EOS id, HF
with no eos_token_id and min_new_tokens = max_new_tokens). A call's time covers the whole
generation: the image encoder, the prefill of image tokens and prompt, and the decoding loop.

- ours: `paligemma.generate` under jax.jit; the compile time (lower + compile) on its own, then
  after one warm-up call the median over --repeats calls (block_until_ready);
- HF: `model.generate(do_sample=False, ...)` under torch.inference_mode() with as many torch
  threads as CPUs (or --torch_threads), after one warm-up call the median over --repeats calls.
  On a machine that other processes keep busy, torch's threads wait for each other at every
  op: there --torch_threads=1 can be several times faster, so the report gives the load.

tokens/s = batch * new tokens / median seconds; ratio = ours / HF tokens/s. "tokens agree" is
the share of new tokens equal on both sides: greedy decoding of the same weights should agree
up to float ties between near-equal logits (after a first difference the texts go apart, so
one tie can cost the rest of its row).
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ["HF_HUB_OFFLINE"] = "1"  # Never download: the model is built from a config.

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from multimodal.benchmarks import machine  # noqa: E402
from multimodal.models import MODELS, decoding, paligemma  # noqa: E402
from multimodal.models.convert import paligemma as convert  # noqa: E402

BOS = 2


@dataclasses.dataclass(frozen=True)
class Size:
  """An HF PaliGemma's sizes: SiglipVisionConfig and GemmaConfig fields."""
  vision: dict[str, Any]
  text: dict[str, Any]

  @property
  def image_tokens(self) -> int:
    return (self.vision["image_size"] // self.vision["patch_size"]) ** 2


SIZES = {
    # The parity test's model (tests/test_hf_paligemma_parity.py).
    "tiny": Size(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, image_size=32, patch_size=8),
                 text=dict(vocab_size=100, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=16)),
    # Small enough for a few seconds a call on 2 CPU cores; 64 image tokens (112 px / 14).
    "small": Size(vision=dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                              num_attention_heads=3, image_size=112, patch_size=14),
                  text=dict(vocab_size=4096, hidden_size=384, intermediate_size=1536,
                            num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=1,
                            head_dim=64)),
}
COLUMNS = ("setting", "batch", "new tokens", "ours compile (s)", "ours ms", "ours tok/s",
           "HF ms", "HF tok/s", "ratio", "tokens agree %")

_SIZE = flags.DEFINE_enum("size", "small", list(SIZES), "The model's size.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes, one row each.")
_PROMPT_LENGTH = flags.DEFINE_integer("prompt_length", 16, "Prompt tokens (BOS included) "
                                      "after the image tokens.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 32, "Tokens written per example.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per side, after a warm-up call.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "HF's torch threads (0: one per "
                                      "CPU). On a loaded machine fewer can be faster.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and the inputs.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the table to OUTPUT.md and the "
                              "rows and machine to OUTPUT.json (a .md or .json suffix given "
                              "is dropped first).")


def build_hf_model(size: Size, seed: int) -> Any:
  """A PaliGemmaForConditionalGeneration with random weights, in eval mode, that never stops
  at an EOS token."""
  import torch  # The benchmark's other side; not a dependency of the library.
  import transformers

  torch.manual_seed(seed)
  vocab = size.text["vocab_size"]
  text = dict(size.text, pad_token_id=0, bos_token_id=BOS, eos_token_id=1)
  # The image placeholder is outside the vocabulary (HF overwrites its embedding).
  config = transformers.PaliGemmaConfig(
      vision_config=dict(size.vision, vision_use_head=False), text_config=text,
      projection_dim=text["hidden_size"], image_token_index=vocab, vocab_size=vocab)
  model = transformers.PaliGemmaForConditionalGeneration(config).eval()
  with torch.no_grad():  # Move every weight off its init (zero norms and biases).
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.generation_config.eos_token_id = None
  return model


def convert_hf_model(hf_model: Any) -> tuple[Any, dict[str, Any]]:
  """The HF model saved as safetensors in a temporary folder and converted -> (our params on
  the device, our model spec)."""
  with tempfile.TemporaryDirectory() as folder:
    hf_model.save_pretrained(folder, safe_serialization=True)
    params, spec = convert.convert_folder(folder)
  return jax.device_put(params), spec


def random_inputs(size: Size, batch: int, prompt_length: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(images float32[B, H, W, 3] in [-1, 1], prompts int32[B, P]: BOS then random tokens)."""
  rng = np.random.default_rng(seed)
  res = size.vision["image_size"]
  images = rng.uniform(-1, 1, (batch, res, res, 3)).astype(np.float32)
  words = rng.integers(BOS + 1, size.text["vocab_size"], (batch, prompt_length - 1))
  return images, np.concatenate([np.full((batch, 1), BOS), words], 1).astype(np.int32)


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
  """The median wall time of `call()` (which waits for its result) over `repeats` calls,
  after one untimed warm-up call."""
  call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_ours(spec: dict[str, Any], params: Any, images: np.ndarray, prompts: np.ndarray,
              new_tokens: int, repeats: int) -> tuple[float, float, np.ndarray]:
  """-> (compile seconds, median seconds a call, the new tokens int32[B, new_tokens])."""
  model = MODELS.build(spec)
  # -1: no token is EOS, so every example writes new_tokens tokens.
  config = decoding.DecodeConfig(max_new_tokens=new_tokens, eos_id=-1, pad_id=0)
  real = np.ones(prompts.shape, bool)  # The whole prompt is the prefix.
  batch = jax.device_put(dict(image=images, text_tokens=prompts, text_mask=real,
                              prefix_mask=real))
  start = time.perf_counter()
  generate = jax.jit(lambda p, b: paligemma.generate(model, p, b, config)).lower(
      params, batch).compile()
  compile_s = time.perf_counter() - start
  seconds = median_seconds(lambda: generate(params, batch).block_until_ready(), repeats)
  return compile_s, seconds, np.asarray(generate(params, batch))


def time_hf(hf_model: Any, size: Size, images: np.ndarray, prompts: np.ndarray,
            new_tokens: int, repeats: int) -> tuple[float, np.ndarray]:
  """-> (median seconds a call, the new tokens int[B, new_tokens])."""
  import torch

  batch = prompts.shape[0]
  image_ids = np.full((batch, size.image_tokens), size.text["vocab_size"])  # placeholders
  input_ids = torch.tensor(np.concatenate([image_ids, prompts], 1))
  inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                # 0: the image and the prompt, which see each other (the prefix).
                token_type_ids=torch.zeros_like(input_ids),
                pixel_values=torch.tensor(images.transpose(0, 3, 1, 2)))  # NHWC -> NCHW

  def generate() -> Any:
    with torch.inference_mode():
      return hf_model.generate(**inputs, do_sample=False, max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens)

  seconds = median_seconds(generate, repeats)
  return seconds, generate()[:, input_ids.shape[1]:].numpy()


def measure(size_name: str, batch_sizes: list[int], prompt_length: int, new_tokens: int,
            repeats: int, seed: int = 0) -> list[dict[str, Any]]:
  """One row per batch size: both sides' times and tokens/s, their ratio and agreement."""
  size = SIZES[size_name]
  hf_model = build_hf_model(size, seed)
  params, spec = convert_hf_model(hf_model)
  rows = []
  for batch in batch_sizes:
    images, prompts = random_inputs(size, batch, prompt_length, seed)
    compile_s, ours_s, ours = time_ours(spec, params, images, prompts, new_tokens, repeats)
    hf_s, theirs = time_hf(hf_model, size, images, prompts, new_tokens, repeats)
    if ours.shape != theirs.shape:
      raise RuntimeError(f"Ours wrote tokens of shape {ours.shape}, HF {theirs.shape}; both "
                         f"should write [{batch}, {new_tokens}].")
    written = batch * new_tokens
    rows.append({"setting": size_name, "batch": batch, "new_tokens": new_tokens,
                 "prompt_length": prompt_length, "image_tokens": size.image_tokens,
                 "ours_compile_s": compile_s, "ours_s": ours_s, "ours_tokens_per_s":
                 written / ours_s, "hf_s": hf_s, "hf_tokens_per_s": written / hf_s,
                 "ratio": hf_s / ours_s, "tokens_agree": float(np.mean(ours == theirs))})
  return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
  for r in rows:
    cells = [r["setting"], str(r["batch"]), str(r["new_tokens"]), f"{r['ours_compile_s']:.1f}",
             f"{r['ours_s'] * 1e3:,.1f}", f"{r['ours_tokens_per_s']:,.1f}",
             f"{r['hf_s'] * 1e3:,.1f}", f"{r['hf_tokens_per_s']:,.1f}", f"{r['ratio']:.2f}",
             f"{r['tokens_agree']:.1%}".rstrip("%")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def report(rows: list[dict[str, Any]], description: dict[str, Any], repeats: int,
           load: tuple[float, float]) -> str:
  """The table, what each call covers, and the machine with its load."""
  first = rows[0]
  return (f"{markdown_table(rows)}\n\nGreedy, float32, {first['image_tokens']} image tokens + "
          f"{first['prompt_length']} prompt tokens, then {first['new_tokens']} new tokens per "
          f"example; median of {repeats} calls a side (the whole generation: image encoder, "
          f"prefill and decoding); ratio = ours / HF tokens/s.\n"
          f"Machine: {machine.summary(description)}; torch {description['torch']} with "
          f"{description['torch_threads']} thread(s); load average {load[0]:.1f} at the start, "
          f"{load[1]:.1f} at the end.")


def main(argv: list[str]) -> None:
  del argv
  import torch

  torch.set_num_threads(_TORCH_THREADS.value or os.cpu_count() or 1)
  load = os.getloadavg()[0]
  rows = measure(_SIZE.value, [int(b) for b in _BATCH_SIZES.value], _PROMPT_LENGTH.value,
                 _NEW_TOKENS.value, _REPEATS.value, _SEED.value)
  description = dict(machine.describe(), torch=torch.__version__,
                     torch_threads=torch.get_num_threads())
  text = report(rows, description, _REPEATS.value, (load, os.getloadavg()[0]))
  print(text)
  if _OUTPUT.value:
    base, ext = os.path.splitext(_OUTPUT.value)
    base = base if ext in (".md", ".json") else _OUTPUT.value  # --output=x.md: x.md, x.json
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    with open(base + ".md", "w") as f:
      f.write(text + "\n")
    with open(base + ".json", "w") as f:
      json.dump({"rows": rows, "machine": description, "repeats": _REPEATS.value}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
