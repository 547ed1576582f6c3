"""SigLIP B/16 at 224 px (Zhai et al. 2023): image-text contrastive training on COCO captions
(Karpathy splits), scored by retrieval on the 5k validation images. Real scale: for TPU / GPU.

  python -m multimodal.main --config=configs/siglip_b16.py:tokenizer=/data/siglip/spiece.model \
      --config.data.manual_dir=/data/coco --workdir=gs://bucket/siglip_b16

The model is the released `google/siglip-base-patch16-224` architecture, built from its HF
config by the converter, so that its weights, converted with
  python -m multimodal.models.convert.siglip --hf_dir=/data/siglip-base-patch16-224 \
      --output=/data/siglip_b16.npz
start a fine-tuning run (`init=/data/siglip_b16.npz`). That needs the release's own
sentencepiece model (`tokenizer=`, 32,000 pieces; the vocabulary must match the embedding).
The data are COCO images and Karpathy's dataset_coco.json in the manual_dir (see the
`coco_karpathy` builder). The text is padded to 64 tokens and pooled at the last position, as
SigLIP's text tower does.

Arguments (`--config=configs/siglip_b16.py:ARG`, comma-separated key=value):
  tokenizer=PATH            sentencepiece .model of the text tower (required for real data)
  init=                     a converted .npz to start from (empty: random initialisation)
  loss=sigmoid_chunked      sigmoid_chunked (memory linear in the batch), sigmoid or softmax
  res=224                   image resolution
  total_steps=20000         training steps
  batch_size=4096           global batch size
"""
from ml_collections import config_dict

from multimodal import config_utils
from multimodal.models.convert import siglip

# The released checkpoint's config (the rest are SiglipConfig defaults).
SIGLIP_B16_224 = {"model_type": "siglip", "text_config": {}, "vision_config": {
    "image_size": 224, "patch_size": 16}}
MAX_LEN = 64
CAPTIONS_PER_IMAGE = 5  # COCO images have 5-7; retrieval scores the first 5 of each.


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, tokenizer="", init="", loss="sigmoid_chunked", res=224,
                                total_steps=20_000, batch_size=4096)
  c = config_utils.base_config()
  c.total_steps, c.batch_size = args.total_steps, args.batch_size
  c.data.name = "coco_karpathy"
  c.data.shuffle_buffer = 50_000
  image_pp = f"decode|resize({args.res})|value_range(-1, 1)"
  text = (f"max_len={MAX_LEN}, model={args.tokenizer!r}, out_key='text_tokens', "
          "mask_key='text_mask'")
  inputs = "keep('image', 'text_tokens', 'text_mask')"
  c.pp_train = (f"{image_pp}|choice('captions', out_key='caption')|"
                f"tok(key='caption', {text})|{inputs}")
  c.task = dict(type="contrastive", tokenizer=args.tokenizer, loss=args.loss)

  spec = siglip.model_spec(SIGLIP_B16_224)
  del spec["vocab_size"]  # The task sets it from the tokenizer.
  c.model = dict(**spec, dtype="bfloat16")
  if args.init:
    c.init.params = args.init

  c.optimizer = dict(learning_rate=1e-4 if args.init else 1e-3, warmup_steps=1000,
                     end_lr_fraction=0.0, weight_decay=1e-4, b1=0.9, b2=0.95,
                     grad_clip_norm=1.0)
  c.mesh = dict(data=1, fsdp=-1, model=1)  # Params and optimizer state split over devices.
  c.evals = dict(retrieval=dict(
      type="retrieval", split="validation", batch_size=1000, every_steps=2000,
      pp=f"{image_pp}|take('captions', {CAPTIONS_PER_IMAGE})|tok(key='captions', {text})|{inputs}",
      max_examples=config_dict.placeholder(int)))
  c.checkpoint = dict(every_steps=1000, keep=3)
  return c
