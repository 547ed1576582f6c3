"""NLVR2 with BEiT-3 base at 224 px, the release's fine-tuning (microsoft/unilm beit3,
get_started_for_nlvr2.md: beit3_base_patch16_224, 84.4% on test-P). Real scale: for TPU / GPU.

  python -m multimodal.main --config=configs/nlvr2_beit3_base.py:tokenizer=/data/beit3.spm,\
init=/data/beit3_base_patch16_224.npz --config.data.manual_dir=/data/nlvr2 \
      --workdir=gs://bucket/nlvr2_beit3_base

The pretrained encoder comes from the release's checkpoint, converted with
  python -m multimodal.models.convert.beit3 --checkpoint=/data/beit3_base_patch16_224.pth \
      --num_heads=12 --prefix=beit3. --output=/data/beit3_base_patch16_224.npz
(the NLVR head starts random, as the release's fine-tuning does). The data: the `nlvr2`
builder over the official release in the manual_dir (see its MANUAL_DOWNLOAD_INSTRUCTIONS).

The release's hyperparameters: global batch 256, 20 epochs of NLVR2's 86,373 training pairs
(6,748 steps), 5 of them warmup, peak learning rate 7e-4 with cosine decay, AdamW
(0.9, 0.999), weight decay 0.2, layer-wise learning-rate decay 0.65, drop path 0.2, texts of
at most 64 tokens, images resized to 224 and scaled to [-1, 1] (the release's 0.5 / 0.5
normalisation). Not reproduced: its RandomResizedCrop and RandAugment training transforms
(the images are only resized), and XLM-R's token ids (the tokenizer's pieces are used as they
are, so the released text embeddings are off by one id; fine-tuning from the release needs
that mapping first).

Arguments (`--config=configs/nlvr2_beit3_base.py:ARG`, comma-separated key=value):
  tokenizer=PATH            the sentencepiece .model (the release's beit3.spm)
  init=                     a converted .npz of the encoder (empty: random initialisation)
  res=224                   image resolution
  total_steps=6748          training steps
  batch_size=256            global batch size
"""
from ml_collections import config_dict

from multimodal import config_utils

TRAIN_PAIRS = 86_373
MAX_LEN = 64


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, tokenizer="", init="", res=224, total_steps=6_748,
                                batch_size=256)
  c = config_utils.base_config()
  c.total_steps, c.batch_size = args.total_steps, args.batch_size
  c.data.name = "nlvr2"
  pp = config_utils.nlvr_pp(args.res, tokenizer=args.tokenizer, max_len=MAX_LEN)
  c.pp_train = pp
  c.task = dict(type="classification", num_classes=2, tokenizer=args.tokenizer,
                label_key="label")
  # beit3_base_patch16_224: the Beit3Config defaults (768 wide, 12 layers and heads, MLP
  # 3072, 16 px patches, 1024 text positions).
  c.model = dict(type="beit3_nlvr", dtype="bfloat16",
                 encoder=dict(image_size=args.res, drop_path_rate=0.2,
                              stacking=dict(remat=True, policy="nothing_saveable",
                                            scan_layers=False)))
  if args.init:
    c.init.params = args.init
    c.init.skip = ("head",)
  epoch = TRAIN_PAIRS / args.batch_size
  c.optimizer = dict(learning_rate=7e-4, warmup_steps=int(round(5 * epoch)),
                     end_lr_fraction=0.0, weight_decay=0.2, b1=0.9, b2=0.999,
                     grad_clip_norm=config_dict.placeholder(float), layer_decay=0.65)
  max_examples = config_dict.placeholder(int)
  c.evals = {split: dict(type="classification", split=split, pp=pp, batch_size=256,
                         every_steps=1000 if split == "validation" else 0,
                         group_by=("label",), text_key="statement", max_examples=max_examples)
             for split in ("validation", "test")}
  c.checkpoint = dict(every_steps=1000, keep=3)
  return c
