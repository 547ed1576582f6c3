"""PaliGemma-like image-to-text at 224 px: a So400m/14 SigLIP image encoder and a Gemma 2B
decoder (multi-query attention), trained on COCO captions (Karpathy splits) or fine-tuned for
VQAv2. Real scale: for TPU / GPU.

  python -m multimodal.main --config=configs/paligemma_224.py:task=vqav2,tokenizer=PATH,\
init=/data/paligemma_224.npz --config.data.manual_dir=/data/vqa --workdir=gs://bucket/pg_vqav2

The model is the released `google/paligemma-3b-pt-224` architecture, built from its HF config
by the converter, so that its weights, converted with
  python -m multimodal.models.convert.paligemma --hf_dir=/data/paligemma-3b-pt-224 \
      --output=/data/paligemma_224.npz
start the run (`init=`); that needs the release's sentencepiece model (`tokenizer=`, 257,216
pieces). The 256 image tokens and the prompt form the prefix (full attention); the answer or
caption is decoded causally, with the loss on it alone. Prompts follow PaliGemma's: "caption
en" for captions, the question itself for VQA. Evaluation decodes greedily on the device:
CIDEr-D / BLEU-4 on the Karpathy validation split, or the official VQA accuracy on val2014.

Arguments (`--config=configs/paligemma_224.py:ARG`, comma-separated key=value):
  task=caption|vqav2        COCO captioning (`coco_karpathy`) or VQAv2 (`vqav2`)
  tokenizer=PATH            sentencepiece .model of the decoder (required for real data)
  init=                     a converted .npz to start from (empty: random initialisation)
  res=224                   image resolution
  total_steps=10000         training steps
  batch_size=256            global batch size
"""
from ml_collections import config_dict

from multimodal import config_utils
from multimodal.models.convert import paligemma

# The released checkpoint's config.json, model part (the rest are HF defaults).
PALIGEMMA_3B_PT_224 = {
    "model_type": "paligemma", "projection_dim": 2048,
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                      "num_attention_heads": 16, "patch_size": 14, "image_size": 224,
                      "vision_use_head": False},
    "text_config": {"hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
                    "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
                    "vocab_size": 257216},
}
# task -> (dataset, prompt (None: the question), max sequence length, max written tokens).
_TASKS = {"caption": ("coco_karpathy", "caption en", 48, 32),
          "vqav2": ("vqav2", None, 48, 8)}


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, task="caption", tokenizer="", init="", res=224,
                                total_steps=10_000, batch_size=256)
  config_utils.choices([args.task], tuple(_TASKS), "task")
  dataset, prompt, max_len, max_written = _TASKS[args.task]
  c = config_utils.base_config()
  c.total_steps, c.batch_size = args.total_steps, args.batch_size
  c.data.name = dataset
  image_pp = f"decode|resize({args.res})|value_range(-1, 1)"
  tok = f"tok_prompt_answer(max_len={max_len}, model={args.tokenizer!r}"
  if prompt is None:  # VQA: the question is the prompt, the annotators' answers the target.
    train_text, eval_text = f"{tok})", f"{tok}, with_answer=False)"
  else:  # Captioning: a fixed prompt, one of the captions (drawn anew each epoch) the target.
    train_text = (f"choice('captions', out_key='caption')|{tok}, prompt={prompt!r}, "
                  "answer_key='caption')")
    eval_text = f"{tok}, prompt={prompt!r}, with_answer=False)"
  inputs = "keep('image', 'text_tokens', 'text_mask', 'prefix_mask')"
  c.pp_train = f"{image_pp}|{train_text}|{inputs}"
  c.task = dict(type="image_to_text", tokenizer=args.tokenizer, max_answer_tokens=max_written)

  spec = paligemma.model_spec(PALIGEMMA_3B_PT_224)
  del spec["vocab_size"]  # The task sets it from the tokenizer.
  c.model = dict(**spec, dtype="bfloat16")
  if args.init:
    c.init.params = args.init

  c.optimizer = dict(learning_rate=1e-5 if args.init else 3e-4, warmup_steps=500,
                     end_lr_fraction=0.0, weight_decay=0.0, b1=0.9, b2=0.999,
                     grad_clip_norm=1.0)
  c.mesh = dict(data=1, fsdp=-1, model=1)  # Params and optimizer state split over devices.
  eval_pp = f"{image_pp}|{eval_text}|{inputs}"
  max_examples = config_dict.placeholder(int)
  if args.task == "caption":
    c.evals = dict(validation=dict(type="captioning", split="validation", pp=eval_pp,
                                   batch_size=256, every_steps=2000, max_examples=max_examples))
  else:  # VQAv2's ten annotators: the official leave-one-out VQA accuracy.
    c.evals = dict(validation=dict(type="generative_vqa", split="validation", pp=eval_pp,
                                   batch_size=256, every_steps=2000, metric="vqa",
                                   max_examples=max_examples))
  c.checkpoint = dict(every_steps=1000, keep=3)
  return c
