"""Text to image at 256 px on COCO captions (Karpathy splits): MaskGIT, DALL-E or latent
diffusion over a frozen autoencoder trained by configs/coco_image_tokenizer.py. Real scale: for
TPU / GPU.

  # 1. the image tokenizer (vq: 16 x 16 codes; kl: 32 x 32 x 4 latents for model=unet)
  python -m multimodal.main --config=configs/coco_image_tokenizer.py:quantizer=vq \
      --config.data.manual_dir=/data/coco --workdir=gs://bucket/coco_tokenizer_vq
  # 2. the text-to-image model over it
  python -m multimodal.main --config=configs/coco_t2i.py:model=maskgit,\
tokenizer=/data/t2i/spiece.model,autoencoder_init=gs://bucket/coco_tokenizer_vq \
      --config.data.manual_dir=/data/coco --workdir=gs://bucket/coco_t2i_maskgit

Each training example is a COCO image resized to res x res (squashed, no crop) in [-1, 1] and
one of its 5-7 captions, drawn anew each time the image is seen and cut to MAX_LEN = 64
pieces of the `tokenizer=` sentencepiece model (any: its vocabulary sizes the prompt
embedding); with probability prompt_dropout the caption is dropped (for classifier-free
guidance). The models:
  maskgit  MaskGIT / Muse-style masked-token prediction over the vq tokenizer's 256 codes
           (models/maskgit.py): one bidirectional transformer over [caption; codes], the
           caption embedded by the transformer itself (Muse instead cross-attends to a frozen
           T5), decoded in `steps` parallel steps. The transformer has MaskGIT's depth of 24
           layers at BERT-large's width: 1024 wide, 16 heads of 64, gated MLP 4096, dropout
           0.1 (about 0.4B parameters; MaskGIT's ImageNet model is 24 layers of width 768).
  dalle    DALL-E's layout (models/dalle.py): the same transformer, the codes causal after the
           bidirectional caption, sampled code by code.
  unet     latent diffusion (models/diffusion/): a UNet of Stable Diffusion v1's sizes (320
           channels, channel_multipliers (1, 2, 4, 4), 2 residual blocks per level, 8 heads)
           over the kl autoencoder's 32 x 32 x 4 latents, with self- and cross-attention at
           its three deepest levels (16, 8 and 4 cells; SD attends at its three finest,
           which at 256 px would include the 32 x 32 one) and in the middle, conditioned on a text
           encoder of CLIP ViT-L/14's text-tower size (768 wide, 12 layers, 12 heads; trained
           from scratch with the UNet here). Our attention blocks have no feed-forward layer
           (SD's transformer blocks do), so the UNet has 742M params to SD's 860M. DDPM's linear
           noise schedule (SD's is a "scaled linear" one we do not have), eps prediction, an
           EMA of the weights (ema_decay) for evaluation and sampling, DDIM sampling.
Training: AdamW after a linear warmup (maskgit, dalle: MaskGIT's betas (0.9, 0.96), weight
decay 0.045, cosine decay; unet: SD's (0.9, 0.999), 0.01, a constant rate). The
autoencoder's params are loaded from its run and kept frozen. Evaluation: the validation loss
with the true, a shuffled and the empty caption ("conditioning", every 1000 steps); there is
no sample-quality evaluator on COCO (the "text_to_image" one needs the Shapes attribute
classifier). Params and optimizer state are split over every device (fsdp).

For the unet, give the diffusion roughly unit-variance latents with
`--config.model.autoencoder.latent_scale=S`, S about 1 / the kl run's latent_std metric (LDM's
0.18215); the run's config.json keeps the 1.0 it was trained with.

Arguments (`--config=configs/coco_t2i.py:ARG`, comma-separated key=value):
  model=maskgit|dalle|unet  masked tokens, autoregressive tokens, or latent diffusion
  tokenizer=PATH            sentencepiece .model of the captions (required for real data)
  autoencoder_init=         a configs/coco_image_tokenizer.py workdir (quantizer=vq for maskgit
                            and dalle, kl for unet): its config gives the autoencoder's
                            settings, its checkpoint the params (kept frozen). Needed for real
                            runs: without it the autoencoder is that config's at random
                            (smoke tests only)
  res=256                   image resolution (the autoencoder's)
  guidance=3.0              classifier-free guidance scale at sampling (1: none)
  steps=12                  MaskGIT's decoding steps; sample_steps=50: the unet's DDIM steps
  prompt_dropout=0.1        training: the probability that an example's caption is removed
  ema_decay=0.9999          (unet) the EMA of the weights that evaluation uses (0: none)
  total_steps=50000         training steps (about 113 epochs of the 113,287 images)
  batch_size=256            global batch size
"""
from absl import logging

from multimodal import config_utils

MAX_LEN = 64
# model -> (the quantizers its autoencoder may have, its params' prefix in the model).
AUTOENCODERS = {"maskgit": (("vq", "gumbel"), "image_tokenizer"),
                "dalle": (("vq", "gumbel"), "image_tokenizer"),
                "unet": (("kl",), "image_autoencoder")}
# The maskgit and dalle transformer (`GemmaConfig` fields but vocab_size).
TRANSFORMER = dict(width=1024, depth=24, num_heads=16, num_kv_heads=16, head_dim=64,
                   mlp_dim=4096, dropout=0.1)


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, model="maskgit", tokenizer="", autoencoder_init="",
                                res=256, guidance=3.0, steps=12, sample_steps=50,
                                prompt_dropout=0.1, ema_decay=0.9999, total_steps=50_000,
                                batch_size=256)
  config_utils.choices([args.model], tuple(AUTOENCODERS), "model")
  c = config_utils.coco_base(args)
  c.pp_train = config_utils.shapes_t2i_pp(args.res, args.tokenizer, MAX_LEN)
  quantizers, prefix = AUTOENCODERS[args.model]
  autoencoder = autoencoder_settings(args, quantizers)
  if args.model == "unet":
    c.task = dict(type="diffusion", tokenizer=args.tokenizer, sampler="ddim",
                  sample_steps=args.sample_steps, guidance_scale=args.guidance)
    c.model = dict(
        type="diffusion_unet",
        # CLIP ViT-L/14's text tower's sizes (the `base` variant).
        text=dict(type="text_encoder", variant="base", pool_type="gap", max_len=MAX_LEN),
        network=dict(channels=320, channel_multipliers=(1, 2, 4, 4), blocks_per_level=2,
                     attention_levels=(1, 2, 3), num_heads=8, norm_groups=32, dropout=0.0),
        image_size=args.res, schedule="linear", timesteps=1000, prediction="eps",
        prompt_dropout=args.prompt_dropout, autoencoder=autoencoder, dtype="bfloat16")
    c.optimizer = dict(learning_rate=1e-4, warmup_steps=5000, end_lr_fraction=1.0,
                       weight_decay=0.01, b1=0.9, b2=0.999, grad_clip_norm=1.0)
    c.ema_decay = args.ema_decay  # What the evaluators (and sampling) use.
  else:
    c.task = dict(type="text_to_image_tokens", tokenizer=args.tokenizer, temperature=1.0,
                  top_k=0, top_p=1.0, guidance_scale=args.guidance, steps=args.steps,
                  choice_temperature=4.5)
    c.model = dict(type=args.model, autoencoder=autoencoder, decoder=dict(TRANSFORMER),
                   prompt_dropout=args.prompt_dropout, dtype="bfloat16")
    c.optimizer = dict(learning_rate=1e-4, warmup_steps=5000, end_lr_fraction=0.0,
                       weight_decay=0.045, b1=0.9, b2=0.96, grad_clip_norm=1.0)
  config_utils.start_from(c, args.autoencoder_init, [f"{prefix}="], frozen=[prefix])
  c.evals = config_utils.shapes_t2i_evals(c.pp_train, args.res, classifier="", tiny=False)
  c.checkpoint = dict(every_steps=2000, keep=3)
  return c


def autoencoder_settings(args, quantizers: tuple[str, ...]) -> dict:
  """The autoencoder's settings: those its run (autoencoder_init) was trained with, or (no
  run) configs/coco_image_tokenizer.py's for the first of `quantizers`, randomly initialised."""
  if not args.autoencoder_init:
    logging.warning("coco_t2i: no autoencoder_init, so the image autoencoder stays at its "
                    "random initialisation (smoke tests only).")
  return config_utils.image_autoencoder_settings(
      args.autoencoder_init, "autoencoder_init", quantizers, args.res,
      stand_in=f"quantizer={quantizers[0]},res={args.res}",
      config_file="coco_image_tokenizer.py")
