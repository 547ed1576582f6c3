"""VQA on the built-in Shapes scenes: the backbone's main job, sized for a 2-core CPU.

  python -m multimodal.main --config=configs/shapes_vqa.py --workdir=/tmp/shapes_vqa

Arguments (`--config=configs/shapes_vqa.py:ARG`, comma-separated key=value):
  data=default|large|small|tiny  the shapes_vqa builder config (100k / 700k / 20k / 256
                            training questions)
  res=64                    image resolution fed to the model
  total_steps=3600          training steps
  batch_size=128            global batch size
  text_only=false           the blind baseline: the same text encoder and head, no image
  fusion=cross_attention    the fusion module: early, late, hybrid, weighted_sum, concat_mlp,
                            gated, cross_attention, co_attention, bottleneck, multiway,
                            relation_network (its own settings are listed under
                            config.model.fusion)
  query=text,context=image  cross_attention: whose tokens attend (and are pooled), to whom
  modality_dropout=0.0      training: the probability that an example loses image or text
  eval_missing=false        also evaluate (at the end) with each modality removed: the
                            `missing` evaluator's missing_image/... and missing_text/...
  question_types=           train and evaluate on these question types only, joined by '+'
                            (e.g. relation or relation+count); empty: all of them
  relation_words=           train and evaluate on the relation questions with these words only,
                            joined by '+' (left_of, right_of, above, below); empty: all four.
                            `left_of+above` leaves out the converses, so that where a named
                            object lies says the answer by itself (with all four words only
                            the word and the position together do): a first stage that
                            learns to carry positions, which a run with init= then extends
  init=                     a configs/shapes_vqa.py workdir with the same model: start from its
                            latest params (the text encoder, fusion and head; and the image
                            encoder where it has params)
  tokenizer=shapes          the question tokenizer: shapes, or shapes_vl (the one NLVR uses,
                            so that NLVR can start from this run's text encoder and fusion)
  image=vit                 vit, object_tokens or object_readings: see configs/shapes_nlvr.py
  image_init=               a configs/shapes_scene_parser.py workdir to start the image
                            encoder from (only it)
  freeze_image=false        keep the image encoder as it starts
  precompute=false          with image=object_readings and image_init=PARSER_WORKDIR: train on
                            the frozen parser's readings computed once (see
                            configs/shapes_nlvr.py)
  tiny=false                a minute-long smoke-test setting (tiny model and data, few steps)
"""
from ml_collections import config_dict

from multimodal import config_utils
from multimodal.data.shapes.phrases import RELATIONS
from multimodal.data.shapes.vqa_questions import QUESTION_TYPES

RELATION_WORDS = tuple(word.replace(" ", "_") for word, _, _ in RELATIONS)

PP_COMMON = "tok(max_len={max_len}, model={tokenizer!r})|vqa_answers(vocab='shapes_vqa')"
MODEL_INPUTS = "keep('image', 'question_tokens', 'question_mask', 'answer_index', 'answer_scores')"


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=64, total_steps=3600, batch_size=128,
                                text_only=False, tiny=False, fusion="cross_attention",
                                query="text", context="image", modality_dropout=0.0,
                                eval_missing=False, question_types="", tokenizer="shapes",
                                image="vit", image_init="", freeze_image=False,
                                precompute=False, relation_words="", init="")
  if args.precompute and args.image != "object_readings":
    raise ValueError(f"precompute=true computes object readings once; it needs "
                     f"image=object_readings, not {args.image!r}.")
  c = config_utils.shapes_base(args)
  where = ({"question_type": config_utils.choices(args.question_types.split("+"),
                                                   QUESTION_TYPES, "question_types")}
           if args.question_types else {})
  if args.relation_words:
    words = config_utils.choices(args.relation_words.split("+"), RELATION_WORDS,
                                 "relation_words")
    left_out = [w.replace("_", " ") for w in RELATION_WORDS if w not in words]
    if left_out:
      where["question"] = {"not_matching": f"is the .* ({'|'.join(left_out)}) the .*"}
  c.data.where = where
  pp = PP_COMMON.format(max_len=16, tokenizer=args.tokenizer)
  if not args.precompute:  # else the images come as the parser's readings
    pp = f"{config_utils.image_pp(args.res)}|{pp}"
  c.pp_train = f"{pp}|{MODEL_INPUTS}"
  c.task = dict(type="vqa", answers="shapes_vqa", tokenizer=args.tokenizer, loss="softmax")

  width = 64 if args.tiny else 128
  depth = 1 if args.tiny else 2
  # Listed so that `--config.model.image.remat=true` etc. can switch them on.
  stacking = dict(remat=False, scan_layers=False)
  text = dict(type="text_encoder", variant=None, width=width, depth=depth,
              mlp_dim=2 * width, num_heads=4, pool_type="gap", **stacking)
  head = dict(type="classifier", hidden_dim=2 * width, dropout=0.0)
  if args.text_only:
    c.model = dict(type="text_only_vqa", text=text, head=head, dtype="float32")
  else:
    c.model = dict(
        type="fusion_vqa",
        image=(config_utils.precomputed_readings(c, args.image_init, args.res, ("image",))
               if args.precompute else
               config_utils.shapes_image_encoder(args.image, width, depth, **stacking)),
        text=text,
        fusion=dict(type=args.fusion, width=width, depth=depth, num_heads=4,
                    mlp_dim=2 * width, **stacking,
                    **config_utils.fusion_settings(args.fusion, depth, args.query,
                                                   args.context)),
        head=head,
        modality_dropout=args.modality_dropout,
        dtype="float32")

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 1e-4
  eval_batch = 32 if args.tiny else 256
  c.evals = dict(validation=dict(
      type="vqa", split="validation", pp=pp, batch_size=eval_batch,
      every_steps=0 if args.tiny else 500, max_examples=config_dict.placeholder(int),
      where=where))
  if args.eval_missing:
    c.evals.missing = config_utils.missing_modalities_eval(pp, eval_batch, where=where)
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  if args.init and args.image_init and not args.precompute:
    raise ValueError("Give image_init (the image encoder from a scene parser) or init (the "
                     "whole model from a VQA run), not both.")
  parts = ["text_encoder", "fusion", "head"] + ([] if args.precompute else ["image_encoder"])
  frozen = ["image_encoder"] if args.freeze_image and not args.precompute else []
  if args.init:
    config_utils.start_from(c, args.init, parts, frozen)
  elif not args.precompute:  # precomputed readings: the image encoder has no params
    config_utils.start_from(c, args.image_init, ["image_encoder"], frozen)
  return c
