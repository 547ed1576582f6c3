"""The image autoencoder of the real-scale text-to-image models at 256 px, trained on COCO
images (Karpathy's train split). Real scale: for TPU / GPU.

  python -m multimodal.main --config=configs/coco_image_tokenizer.py:quantizer=vq \
      --config.data.manual_dir=/data/coco --workdir=gs://bucket/coco_tokenizer_vq
  python -m multimodal.main --config=configs/coco_image_tokenizer.py:quantizer=kl \
      --config.data.manual_dir=/data/coco --workdir=gs://bucket/coco_autoencoder_kl

quantizer=vq: a "VQGAN-lite" f16 tokenizer, VQGAN's sizes (Esser et al. 2021, the ImageNet
f16 1024-code model): 128 base channels, channel_multipliers (1, 1, 2, 2, 4), 2 residual
blocks per level, 1024 codes of width 256, so a 256 px image becomes a 16 x 16 grid of codes
(the 256 image tokens of configs/coco_t2i.py's maskgit and dalle). quantizer=kl: latent
diffusion's KL-f8 autoencoder (Rombach et al. 2022): 128 channels, (1, 2, 4, 4), 2 blocks per
level, 4 latent channels, so a 256 px image becomes 32 x 32 x 4 latents (what
configs/coco_t2i.py:model=unet diffuses). Both are our `image_autoencoder`
(models/image_autoencoder/) at those sizes, which makes them lighter than the papers':
  - the loss is the per-pixel MSE plus the bottleneck's term (tasks/image_autoencoder.py):
    no perceptual (LPIPS) and no adversarial (patch-GAN) loss, so reconstructions are blurrier
    than VQGAN's or LDM's at the same rate;
  - the encoder's and decoder's blocks are residual convolutions only: no self-attention at
    16 x 16 and in the middle (VQGAN's and LDM's have it);
  - vq: the codebook is VQ-VAE's EMA codebook with dead-code restarts and a data
    initialisation, not VQGAN's codebook loss; kl: the KL weight is per latent element (the
    model's default 1e-4, against LDM's 1e-6 on sums over pixels and latents).
Images are resized to res x res (no crop: COCO's aspect ratios are squashed) and scaled to
[-1, 1]. Evaluation: recon_mse, PSNR and (vq) the codes' perplexity and codebook usage on the
5,000 validation images ("image_reconstruction"). For the kl run, the diffusion config wants
latents of roughly unit variance: set its `--config.model.autoencoder.latent_scale` to about
1 / this run's latent_std (LDM's is 0.18215).

Arguments (`--config=configs/coco_image_tokenizer.py:ARG`, comma-separated key=value):
  quantizer=vq|kl           VQ codebook (f16, 16 x 16 codes) or Gaussian latents (f8, 32 x 32)
  res=256                   image resolution (a multiple of 16 for vq, 8 for kl)
  codes=1024                codebook size (vq)
  total_steps=100000        training steps
  batch_size=64             global batch size
"""
from ml_collections import config_dict

from multimodal import config_utils

# quantizer -> (channel_multipliers, code_dim: the codes' width or the latent channels).
SIZES = {"vq": ((1, 1, 2, 2, 4), 256),   # VQGAN f16
         "kl": ((1, 2, 4, 4), 4)}        # LDM KL-f8


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, quantizer="vq", res=256, codes=1024,
                                total_steps=100_000, batch_size=64)
  config_utils.choices([args.quantizer], tuple(SIZES), "quantizer")
  c = config_utils.coco_base(args)
  c.pp_train = f"{config_utils.image_pp(args.res)}|keep('image')"
  c.task = dict(type="image_autoencoder", reconstruction="mse")
  multipliers, code_dim = SIZES[args.quantizer]
  c.model = dict(type="image_autoencoder", quantizer=args.quantizer, image_size=args.res,
                 channels=128, channel_multipliers=multipliers, blocks_per_level=2,
                 norm_groups=32, codebook_size=args.codes, code_dim=code_dim,
                 # vq
                 beta=0.25, ema_decay=0.99, restart_threshold=1.0, data_init=True,
                 normalize_codes=False,
                 # kl: the KL's weight (None: the model's default), and encode_latents' scale
                 temperature=1.0, kl_weight=config_dict.placeholder(float), latent_scale=1.0,
                 dtype="bfloat16")

  # Adam with VQGAN's and LDM's betas (0.5, 0.9); linear warmup, then cosine decay.
  c.optimizer = dict(learning_rate=1e-4, warmup_steps=1000, end_lr_fraction=0.1,
                     weight_decay=0.0, b1=0.5, b2=0.9, grad_clip_norm=1.0)
  c.evals = dict(validation=dict(
      type="image_reconstruction", split="validation", pp=c.pp_train, batch_size=250,
      every_steps=5000, max_examples=config_dict.placeholder(int)))
  c.checkpoint = dict(every_steps=2000, keep=3)
  return c
