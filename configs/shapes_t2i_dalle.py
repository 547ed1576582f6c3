"""Text to image over discrete image tokens on the built-in Shapes scenes: DALL-E's
autoregressive transformer or MaskGIT's parallel decoding, over a frozen image tokenizer.

  # 1. the image tokenizer (VQ-VAE; quantizer=gumbel for DALL-E's dVAE)
  python -m multimodal.main --config=configs/shapes_image_tokenizer.py:quantizer=vq \
      --workdir=/tmp/image_tokenizer_vq
  # 2. the attribute classifier that checks the samples against their prompts
  python -m multimodal.main --config=configs/shapes_scene_parser.py --workdir=/tmp/scene_parser
  # 3. the text-to-image model
  python -m multimodal.main \
      --config=configs/shapes_t2i_dalle.py:tokenizer_init=/tmp/image_tokenizer_vq,classifier=/tmp/scene_parser \
      --workdir=/tmp/t2i_dalle
  python -m multimodal.main \
      --config=configs/shapes_t2i_dalle.py:model=maskgit,tokenizer_init=/tmp/image_tokenizer_vq,classifier=/tmp/scene_parser \
      --workdir=/tmp/t2i_maskgit

Each training example is a res x res image, turned into (res / 4)^2 codes by the frozen
tokenizer, and one of its five captions, drawn anew each time the image is seen; with
probability prompt_dropout the caption is dropped (for classifier-free guidance). dalle: a
Gemma-style decoder over [caption (bidirectional); start; codes (causal)], cross-entropy on
every code, sampled code by code through a key/value cache. maskgit: the same blocks,
bidirectional, cross-entropy on the codes masked at a cosine-scheduled ratio, decoded in
`steps` parallel steps. Evaluation: the loss with the true, a shuffled and the empty caption
("conditioning"), and with classifier= the prompt-match accuracy, FID and a sample grid
("text_to_image", at the end).

Arguments (`--config=configs/shapes_t2i_dalle.py:ARG`, comma-separated key=value):
  model=dalle|maskgit       autoregressive (models/dalle.py) or MaskGIT (models/maskgit.py)
  data=default|small|tiny   the shapes_captions builder config (50k / 10k / 128 images)
  res=32                    image resolution (the tokenizer's)
  tokenizer_init=           a configs/shapes_image_tokenizer.py (vq or gumbel) workdir: its
                            config gives the tokenizer's settings, its checkpoint the params
                            and codebook (kept frozen). Without it the tokenizer is
                            shapes_image_tokenizer.py's (quantizer=) at random: smoke tests only
  quantizer=vq|gumbel       (no tokenizer_init) the stand-in tokenizer's quantizer
  classifier=               a configs/shapes_scene_parser.py workdir: adds the text_to_image
                            evaluator (prompt match per prompt kind, FID, sample grid)
  width=128, depth=4        the transformer's size
  guidance=3.0              classifier-free guidance scale (1: none); MaskGIT ramps it
  temperature=1.0           sampling temperature (0: greedy)
  top_k=0, top_p=1.0        sampling filters (0 and 1: off)
  steps=12                  MaskGIT's decoding steps
  prompt_dropout=0.1        training: the probability that an example's caption is removed
  total_steps=5000          training steps
  batch_size=64             global batch size
  tiny=false                a minute-long smoke-test setting (tiny model and data, few steps)
"""
from absl import logging

from multimodal import config_utils


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, model="dalle", data="default", res=32, tokenizer_init="",
                                quantizer="vq", classifier="", width=128, depth=4,
                                guidance=3.0, temperature=1.0, top_k=0, top_p=1.0, steps=12,
                                prompt_dropout=0.1, total_steps=5000, batch_size=64,
                                tiny=False)
  config_utils.choices([args.model], ("dalle", "maskgit"), "model")
  config_utils.choices([args.quantizer], ("vq", "gumbel"), "quantizer")
  c = config_utils.shapes_base(args, dataset="shapes_captions")
  c.pp_train = config_utils.shapes_t2i_pp(args.res)
  c.task = dict(type="text_to_image_tokens", tokenizer=config_utils.T2I_TOKENIZER, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, guidance_scale=args.guidance,
                steps=args.steps, choice_temperature=4.5)

  width, depth = (32, 1) if args.tiny else (args.width, args.depth)
  c.model = dict(type=args.model, autoencoder=image_tokenizer(args),
                 decoder=config_utils.shapes_decoder(width, depth),
                 prompt_dropout=args.prompt_dropout, dtype="float32")
  config_utils.start_from(c, args.tokenizer_init, ["image_tokenizer="],
                          frozen=["image_tokenizer"])

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 1e-4
  c.evals = config_utils.shapes_t2i_evals(c.pp_train, args.res, args.classifier, args.tiny)
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  return c


def image_tokenizer(args) -> dict:
  """The image tokenizer's settings: those its run (tokenizer_init) was trained with, or
  (no run) configs/shapes_image_tokenizer.py's for `quantizer` (its tiny ones when tiny)."""
  if not args.tokenizer_init and not args.tiny:
    logging.warning("shapes_t2i_dalle: no tokenizer_init, so the image tokenizer stays at "
                    "its random initialisation (smoke tests only).")
  tiny = ",tiny=true" if args.tiny else ""
  return config_utils.image_autoencoder_settings(
      args.tokenizer_init, "tokenizer_init", ("vq", "gumbel"), args.res,
      stand_in=f"quantizer={args.quantizer},res={args.res}{tiny}")
