"""The image tokenizer of the text-to-image models, trained on the Shapes scenes' images.

  python -m multimodal.main --config=configs/shapes_image_tokenizer.py:quantizer=vq \
      --workdir=/tmp/image_tokenizer_vq

A convolutional autoencoder (models/image_autoencoder/) whose bottleneck is a VQ-VAE codebook
with EMA updates and dead-code restarts (quantizer=vq), DALL-E's Gumbel-softmax dVAE
(quantizer=gumbel), or the continuous Gaussian latents latent diffusion uses (quantizer=kl);
res x res images become a (res / 4) x (res / 4) grid of codes (or of 4-channel latents). By
default each 4 x 4 patch goes to one cell in the first layer (patch=4) and the residual blocks
run on the 8 x 8 grid: on a 2-core CPU a training step at batch 64 takes 0.44 s, against
1.1 s for VQGAN's layout (patch=1,levels=3: 3x3 convolutions at 32, 16 and 8 px) at a quarter
of the width (channels=16), and the Shapes scenes are flat colours. Trained on reconstruction plus the bottleneck's terms (tasks/image_autoencoder.py);
reports recon_mse, PSNR, and the codes' perplexity and codebook usage on the validation split.
The DALL-E and diffusion configs load its run as their frozen tokenizer.

The defaults (1024 codes, foreground_weight=10, 3,500 steps) are the best vq tokenizer
measured so far (README, "Text to image"): 13 minutes on a 2-core CPU, PSNR 30.3, and the
attribute classifier reads 0.925 of the one-object prompt scenes and 0.775 of the two-object
ones as their prompts after the round trip (512 codes, weight 1, 1,500 steps: 0.40 and 0.175).
The weight and length were measured with quantizer=vq only.

Arguments (`--config=configs/shapes_image_tokenizer.py:ARG`, comma-separated key=value):
  quantizer=vq|gumbel|kl    the bottleneck
  data=default|small|tiny   the shapes_captions builder config (50k / 10k / 128 images)
  res=32                    image resolution (a multiple of 4)
  codes=1024                codebook size (vq, gumbel)
  patch=4, levels=1         the first layer's patch size and the levels after it (each
                            level but the last halves the grid): grid = res / (patch *
                            2^(levels - 1)); patch=1,levels=3 is VQGAN's layout
  channels=64, blocks=2     the first level's width (later levels twice it) and residual
                            blocks per level
  total_steps=3500          training steps
  batch_size=64             global batch size
  loss=mse|l1               the per-pixel reconstruction loss (l1's optimum on these mostly
                            grey images is the background: objects fade)
  foreground_weight=10      how much more the objects' pixels count in the loss than the
                            background's (tasks/image_autoencoder.py); 1: plain MSE
  classifier=               a configs/shapes_scene_parser.py workdir: the validation
                            evaluator also reports recon_prompt_match (/kind), the prompt
                            set's scenes read as matching their prompts after the round trip
                            through the autoencoder, the ceiling of the t2i models over it
  tiny=false                a seconds-long smoke-test setting
"""
from ml_collections import config_dict

from multimodal import config_utils

CODE_DIM = {"vq": 32, "gumbel": 64, "kl": 4}  # the codes' width, or the latent channels (kl)


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, quantizer="vq", data="default", res=32, codes=1024,
                                patch=4, levels=1, channels=64, blocks=2, total_steps=3500,
                                batch_size=64, classifier="", loss="mse",
                                foreground_weight=10.0, tiny=False)
  config_utils.choices([args.quantizer], tuple(CODE_DIM), "quantizer")
  c = config_utils.shapes_base(args, dataset="shapes_captions")
  c.pp_train = f"decode|resize({args.res})|value_range(-1, 1)|keep('image')"
  c.task = dict(type="image_autoencoder", reconstruction=args.loss,
                foreground_weight=args.foreground_weight)
  c.model = dict(type="image_autoencoder", quantizer=args.quantizer, image_size=args.res,
                 patch_size=args.patch, channels=16 if args.tiny else args.channels,
                 channel_multipliers=(1,) + (2,) * (args.levels - 1),
                 blocks_per_level=1 if args.tiny else args.blocks, norm_groups=8, codebook_size=args.codes,
                 code_dim=CODE_DIM[args.quantizer],
                 # vq
                 beta=0.25, ema_decay=0.99, restart_threshold=1.0, data_init=True,
                 normalize_codes=False,
                 # gumbel: the relaxation's temperature; gumbel and kl: the KL's weight
                 temperature=1.0, kl_weight=config_dict.placeholder(float),
                 # kl: encode_latents' scale (about 1 / the latent_std training metric)
                 latent_scale=1.0, dtype="float32")

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 100
  c.optimizer.weight_decay = 0.0
  c.evals = dict(validation=dict(
      type="image_reconstruction", split="validation", pp=c.pp_train,
      batch_size=32 if args.tiny else 250, every_steps=0 if args.tiny else 500,
      max_examples=config_dict.placeholder(int), classifier_workdir=args.classifier or None,
      prompts_per_kind=4 if args.tiny else 40))
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  return c
