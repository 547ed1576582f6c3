"""Text-to-image diffusion on the built-in Shapes scenes: a UNet or a DiT that denoises the
image (or a frozen autoencoder's latents) given one of its captions.

  # the attribute classifier that checks the samples against their prompts
  python -m multimodal.main --config=configs/shapes_scene_parser.py --workdir=/tmp/scene_parser
  python -m multimodal.main --config=configs/shapes_t2i_diffusion.py:classifier=/tmp/scene_parser \
      --workdir=/tmp/t2i_unet
  # latent diffusion: train the kl autoencoder first, then diffuse in its latents
  python -m multimodal.main --config=configs/shapes_image_tokenizer.py:quantizer=kl \
      --workdir=/tmp/image_tokenizer_kl
  python -m multimodal.main \
      --config=configs/shapes_t2i_diffusion.py:space=latent,autoencoder_init=/tmp/image_tokenizer_kl \
      --workdir=/tmp/t2i_latent

Each training example is a res x res image in [-1, 1] and one of its five captions, drawn
anew each time the image is seen; with probability prompt_dropout the caption is dropped (for
classifier-free guidance at sampling). Evaluation: the loss with the true, a shuffled and the
empty caption ("conditioning"), and with classifier= the prompt-match accuracy, FID and a
sample grid ("text_to_image", at the end), all from the EMA weights.

Arguments (`--config=configs/shapes_t2i_diffusion.py:ARG`, comma-separated key=value):
  data=default|small|tiny   the shapes_captions builder config (50k / 10k / 128 images)
  res=32                    image resolution
  model=unet|dit            the denoising network (models/diffusion/unet.py, dit.py)
  space=pixel|latent        diffuse the pixels, or the latents of a kl image autoencoder
  autoencoder_init=         (latent) a configs/shapes_image_tokenizer.py:quantizer=kl workdir:
                            its config gives the autoencoder's settings, its checkpoint the
                            params (kept frozen); needed unless tiny=true
  classifier=               a configs/shapes_scene_parser.py workdir: adds the text_to_image
                            evaluator (prompt match per prompt kind, FID, sample grid)
  prediction=eps|v|x0       what the network predicts (default: eps in pixels, v in latents:
                            the cosine schedule's last step has abar ~ 2e-9, where an eps
                            network's x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) turns a
                            small eps error into a huge x0, which pixels clip to [-1, 1] and
                            latents cannot; v gives x0 = sqrt(abar) x_t - sqrt(1 - abar) v)
  schedule=cosine|linear    the noise schedule (1000 timesteps)
  prompt_dropout=0.1        training: the probability that an example's caption is removed
  sampler=ddim|ddpm         sampling: DDIM (eta = 0) or DDPM's ancestral sampler
  sample_steps=50           sampling steps
  guidance=3.0              classifier-free guidance scale (1: none)
  ema_decay=0.999           the EMA of the weights that sampling uses (0: none)
  total_steps=6000          training steps
  batch_size=64             global batch size
  tiny=false                a minute-long smoke-test setting (tiny model and data, few steps)
"""
from multimodal import config_utils
from multimodal.models.diffusion.samplers import SAMPLERS
from multimodal.models.diffusion.schedules import PREDICTIONS, SCHEDULES


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=32, model="unet", space="pixel",
                                autoencoder_init="", classifier="", prediction="",
                                schedule="cosine",
                                prompt_dropout=0.1, sampler="ddim", sample_steps=50,
                                guidance=3.0, ema_decay=0.999, total_steps=6000,
                                batch_size=64, tiny=False)
  config_utils.choices([args.model], ("unet", "dit"), "model")
  config_utils.choices([args.space], ("pixel", "latent"), "space")
  if not args.prediction:
    args.prediction = "v" if args.space == "latent" else "eps"
  config_utils.choices([args.prediction], PREDICTIONS, "prediction")
  config_utils.choices([args.schedule], SCHEDULES, "schedule")
  config_utils.choices([args.sampler], SAMPLERS, "sampler")
  c = config_utils.shapes_base(args, dataset="shapes_captions")
  c.pp_train = config_utils.shapes_t2i_pp(args.res)
  c.task = dict(type="diffusion", tokenizer=config_utils.T2I_TOKENIZER, sampler=args.sampler,
                sample_steps=args.sample_steps, guidance_scale=args.guidance)

  latent = args.space == "latent"
  # The prompt encoder's width; the UNet's first level is half as wide (its deeper levels
  # as wide), the DiT as wide.
  width = 32 if args.tiny else (64 if args.model == "unet" else 128)
  depth = 1 if args.tiny else 2
  c.model = dict(
      type="diffusion_unet" if args.model == "unet" else "dit",
      text=dict(type="text_encoder", variant=None, width=width, depth=depth,
                mlp_dim=2 * width, num_heads=4, pool_type="gap"),
      network=network(args.model, width, args.tiny, latent),
      image_size=args.res, schedule=args.schedule, timesteps=1000,
      prediction=args.prediction, prompt_dropout=args.prompt_dropout,
      autoencoder=autoencoder(args) if latent else None, dtype="float32")

  c.optimizer.learning_rate = 5e-4
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 0.0
  c.evals = config_utils.shapes_t2i_evals(c.pp_train, args.res, args.classifier, args.tiny)
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  # EMA of the weights, which sampling (the evaluators) uses.
  c.ema_decay = args.ema_decay
  if latent:  # The autoencoder run's params (its root) under our `image_autoencoder`.
    config_utils.start_from(c, args.autoencoder_init, ["image_autoencoder="],
                            frozen=["image_autoencoder"])
  return c


def network(model: str, width: int, tiny: bool, latent: bool) -> dict:
  """The denoiser's settings: for 32 x 32 pixels, or an 8 x 8 latent grid."""
  if model == "unet":
    # Attention at 16 x 16 and below: levels of 32, 16 and 8 pixels, or 8 and 4 latent cells.
    if latent:
      multipliers, attention = (1, 2), (0, 1)
    else:
      multipliers, attention = ((1, 2), (1,)) if tiny else ((1, 2, 2), (1, 2))
    return dict(channels=width // 2, channel_multipliers=multipliers, blocks_per_level=1,
                attention_levels=attention, num_heads=4, norm_groups=8, dropout=0.0)
  # 64 tokens either way: 4 x 4 pixel patches, or one latent cell each.
  return dict(patch_size=1 if latent else 4, width=width, depth=1 if tiny else 4,
              num_heads=4, mlp_dim=4 * width, posemb="sincos2d", dropout=0.0)


def autoencoder(args) -> dict:
  """The kl image autoencoder's settings: those its run (autoencoder_init) was trained with,
  or (tiny=true, no run) configs/shapes_image_tokenizer.py's tiny ones."""
  return config_utils.image_autoencoder_settings(
      args.autoencoder_init, "autoencoder_init", ("kl",), args.res,
      stand_in=f"quantizer=kl,res={args.res},tiny=true" if args.tiny else None)
