"""VQA on your own data: a JSONL file of questions and a folder of images (see README).

  python -m multimodal.data.tokenizer --jsonl=DIR/train.jsonl --output=DIR/sp.model --vocab_size=8000
  python -m multimodal.data.answer_vocab --jsonl=DIR/train.jsonl --top_k=3129 --output=DIR/answers.txt
  python -m multimodal.main --config=configs/jsonl_vqa.py:manual_dir=DIR --workdir=/tmp/my_vqa

Arguments (`--config=configs/jsonl_vqa.py:ARG`, comma-separated key=value):
  manual_dir          the folder with train.jsonl, validation.jsonl and the images
  tokenizer           sentencepiece model (default: MANUAL_DIR/sp.model)
  answers             answer vocabulary, one per line (default: MANUAL_DIR/answers.txt)
  res=224             image resolution fed to the model
  variant=small       ViT and text encoder size (micro, tiny, small, base, large)
  strict=false        fail on the first bad record (named by file, line and reason) instead
                      of skipping it and counting it per reason
  total_steps=20000, batch_size=256, max_len=32
  fusion=cross_attention  the fusion module (README "Fusion library"); its own settings are
                      listed under config.model.fusion
  modality_dropout=0.0    training: the probability that an example loses image or question
  eval_missing=false  also evaluate (at the end) with each modality removed
Scale (see README "Launching on a TPU pod or a GPU cluster"):
  fsdp=1              devices that shard params and optimizer state (-1: all; the rest of the
                      devices split the batch)
  tp=1                tensor parallelism: devices that split attention heads and MLP units
  remat=false         recompute block activations in the backward pass (memory for compute)
  scan=false          nn.scan over layers: one compiled block, faster compiles for deep models
  grad_accum=1        micro-batches per step (the same update with 1/N of the activations)
  num_shards=0        data shards (0: one per host); fix it to resume on another host count
"""
import os

from ml_collections import config_dict

from multimodal import config_utils


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, manual_dir="", tokenizer="", answers="", res=224,
                                variant="small", strict=False, total_steps=20_000,
                                batch_size=256, max_len=32, fsdp=1, tp=1, remat=False,
                                scan=False, grad_accum=1, num_shards=0,
                                fusion="cross_attention", modality_dropout=0.0,
                                eval_missing=False)
  c = config_utils.base_config()
  c.total_steps = args.total_steps
  c.batch_size = args.batch_size
  c.data.name = "jsonl_vqa"
  c.data.config = "strict" if args.strict else "default"
  c.data.manual_dir = args.manual_dir or config_dict.placeholder(str)
  c.data.num_shards = args.num_shards or config_dict.placeholder(int)
  c.grad_accum_steps = args.grad_accum
  # fsdp=-1 takes every device, so the data axis gets what is left after fsdp and tp.
  c.mesh = dict(data=1 if args.fsdp == -1 else -1, fsdp=args.fsdp, model=args.tp)
  stacking = dict(remat=args.remat, scan_layers=args.scan)
  tokenizer = args.tokenizer or os.path.join(args.manual_dir, "sp.model")
  answers = args.answers or os.path.join(args.manual_dir, "answers.txt")
  pp = (f"decode|resize({args.res})|value_range(-1, 1)|tok(max_len={args.max_len}, "
        f"model='{tokenizer}')|vqa_answers(vocab='{answers}')")
  c.pp_train = (f"{pp}|keep('image', 'question_tokens', 'question_mask', 'answer_index', "
                "'answer_scores')")
  # Several annotators per question (as in VQAv2): BCE on soft scores.
  c.task = dict(type="vqa", answers=answers, tokenizer=tokenizer, loss="sigmoid")
  c.model = dict(
      type="fusion_vqa",
      image=dict(type="vit", variant=args.variant, patch_size=16, stem="patch",
                 posemb="sincos2d", pool_type="none", **stacking),
      text=dict(type="text_encoder", variant=args.variant, pool_type="none", **stacking),
      fusion=dict(type=args.fusion, width=384, depth=4, num_heads=6, mlp_dim=1536, dropout=0.1,
                  **stacking, **config_utils.fusion_settings(args.fusion, depth=4)),
      head=dict(type="classifier", hidden_dim=1024, dropout=0.1),
      modality_dropout=args.modality_dropout,
      dtype="bfloat16")
  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 1000
  c.optimizer.weight_decay = 0.05
  c.evals = dict(validation=dict(type="vqa", split="validation", pp=pp, batch_size=256,
                                 every_steps=2000, max_examples=config_dict.placeholder(int)))
  if args.eval_missing:
    c.evals.missing = config_utils.missing_modalities_eval(pp, batch_size=256)
  c.checkpoint = dict(every_steps=1000, keep=3)
  return c
