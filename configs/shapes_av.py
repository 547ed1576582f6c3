"""Audio-visual Shapes clips: which shapes bounced, how many bounces, or the audio's offset,
from the audio, the video, or both through a fusion module.

  python -m multimodal.main --config=configs/shapes_av.py --workdir=/tmp/av_event
  python -m multimodal.main --config=configs/shapes_av.py:modalities=audio --workdir=/tmp/av_audio
  python -m multimodal.main --config=configs/shapes_av.py:modalities=video --workdir=/tmp/av_video
  python -m multimodal.main --config=configs/shapes_av.py:task=offset,total_steps=4500 --workdir=/tmp/av_offset

Data: `shapes_av` (data/builders/shapes_av.py): 1 s clips, 16 frames at 32 px and 16 kHz
audio; half the clips have the audio shifted by up to +-300 ms. The audio becomes a log-mel
spectrogram in the input pipeline (25 ms windows, 10 ms hop, 64 mel bins: 98 x 64),
standardised with the dataset's mean and std; the frames go to [-1, 1].
Model `fusion_classifier`: an AST-style audio encoder (16 x 16 spectrogram patches) and a
ViViT-style video encoder (2-frame x 8 px tubelets, or a factorised per-frame encoder) whose
tokens meet in the fusion module; with one modality the fusion module runs over it alone.

Tasks (`task=`):
  event    which shapes bounced (8 classes: the set of shapes, as a bit set); accuracy on
           validation and test, per alignment (synced / shifted clips), and with each
           modality missing at the end
  count    how many bounces (0..6)
  offset   the audio's offset, classified into 20 ms bins over +-300 ms; reports the mean
           absolute error in ms and the share within 40 ms, beside a cross-correlation
           baseline (evaluators/av_offset.py). offset_model=sync (default): the model
           `sync_offset`, a learned cross-correlation: per-time audio features (20 ms
           full-band patches) against per-frame video features (1-frame tubelets, 3
           sub-steps per frame), scored for every offset bin (sync_window_ms>0: each encoder
           attends only that far either side of a token); offset_model=fusion: the
           fusion_classifier over the fusion module, as for the other tasks
  dcca     no labels: the two encoders (model paired_embeddings, embed_dim-wide projections)
           trained with the Deep CCA loss; reports the total canonical correlation of the
           validation and test pairs, beside random projections of the same inputs
  contrastive  no labels: the same two encoders, L2-normalised, trained with the SigLIP loss
           (audio and video of one clip a positive pair, every other pairing in the batch a
           negative); reports audio-to-video and video-to-audio retrieval R@1/5/10 over each
           split (beside chance), and the total canonical correlation as for dcca

Arguments (`--config=configs/shapes_av.py:ARG`, comma-separated key=value):
  task=event|count|offset|dcca|contrastive
  offset_model=sync|fusion  task=offset: learned cross-correlation, or a fusion module
  sync_window_ms=0          offset_model=sync: each encoder's attention span either side
                            (0: global attention; 125 generalised worse, see the README)
  resample_offset=true      task=offset, training: every time a clip is read it gets a new
                            offset, drawn as the builder draws one, and its audio at that
                            offset (cut from the clip's stored wide audio), so the model
                            cannot learn each clip's offset by heart
  offset_decoding=tolerant  task=offset: the predicted bin is the one most likely to lie
                            within 40 ms of the truth (the probability summed over its
                            neighbours, `av_ops.tolerance_window`); argmax: the likeliest bin
  label_sigma=1             task=offset: train on a Gaussian target of this width (in 20 ms
                            bins) around the true bin (0: the bin alone, one-hot)
  modalities=audio+video    the streams the model reads: audio+video, audio or video
  fusion=bottleneck         any fusion module of the library (early, late, hybrid,
                            weighted_sum, concat_mlp, gated, cross_attention, co_attention,
                            bottleneck, multiway); cross_attention: audio attends to video.
                            With one stream: early (`depth` more layers over its tokens)
  video=tubelet|factorised  the video encoder's kind
  video_patch=0             the video patches' side in px (0: 16 for task=offset, whose
                            sync_offset model reads one frame per step, 3.3x faster than 8
                            px and as accurate per step; 8 for the other tasks)
  width=128, depth=2        the encoders' and fusion module's sizes
  modality_dropout=0.0      training: the probability that a clip loses one stream
  co_learning=none          task=event|count: an auxiliary co-learning loss between the
                            two streams' pooled encoder outputs, beside the task's loss
                            (dcca, sigmoid: SigLIP, softmax: CLIP; models/co_learning.py)
  co_learning_weight=0.1    its weight
  embed_dim=16              dcca, contrastive, co_learning: each modality's embedding width
                            (for dcca keep it well below the batch size: see losses/dcca.py)
  data=default|small|tiny   the shapes_av builder config (10k / 2k / 32 training clips)
  total_steps=2000, batch_size=64
  tiny=false                a minute-long smoke-test setting
"""
from ml_collections import config_dict

from multimodal import config_utils
from multimodal.data.pp import av_ops
from multimodal.data.shapes import av_clips
from multimodal.evaluators.av_offset import TOLERANCE_MS

OFFSET_MAX_MS, OFFSET_BIN_MS = 300, 20
WINDOW_MS, HOP_MS, MEL_BINS = 25, 10, 64  # the log-mel front end
LABELS = {"event": ("event", 8), "count": ("num_bounces", 7),  # label key, classes
          "offset": ("offset_bin", 2 * OFFSET_MAX_MS // OFFSET_BIN_MS + 1)}
# Mean and std of the log-mel features over shapes_av clips (16 kHz; 100 clips measured).
LOG_MEL_MEAN, LOG_MEL_STD = -1.9, 1.2


def pp(task: str, modalities: tuple[str, ...], sample_rate: int,
       resample_offset: bool = False) -> str:
  """The pp string; `resample_offset` (offset task, training): each clip gets a new offset
  drawn as the builder draws one, and its audio moves to match (data/pp/av_ops.py)."""
  ops = []
  if resample_offset:
    clip = av_clips.ClipSettings()
    ops.append(f"resample_offset(sample_rate={sample_rate}, max_ms={OFFSET_MAX_MS}, "
               f"share={clip.offset_share}, noise_std={clip.audio_noise})")
  if "audio" in modalities:
    ops += [f"log_mel(key='audio', sample_rate={sample_rate}, window_ms={WINDOW_MS}, "
            f"hop_ms={HOP_MS}, mel_bins={MEL_BINS})",
            f"value_range(0, 1, key='audio', in_min={LOG_MEL_MEAN}, "
            f"in_max={LOG_MEL_MEAN + LOG_MEL_STD})"]
  if "video" in modalities:
    ops.append("value_range(-1, 1, key='video')")
  if task == "offset":
    ops.append(f"offset_bin(max_ms={OFFSET_MAX_MS}, bin_ms={OFFSET_BIN_MS})")
  labels = (LABELS[task][0],) if task in LABELS else ()
  keep = ", ".join(repr(k) for k in (*modalities, *labels))
  return "|".join(ops + [f"keep({keep})"])


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, task="event", modalities="audio+video",
                                fusion="bottleneck", video="tubelet", offset_model="sync",
                                sync_window_ms=0, resample_offset=True,
                                offset_decoding="tolerant", label_sigma=1.0, video_patch=0,
                                width=128, depth=2,
                                modality_dropout=0.0, co_learning="none",
                                co_learning_weight=0.1, embed_dim=16, data="default",
                                total_steps=2000, batch_size=64, tiny=False)
  config_utils.choices([args.task], ("event", "count", "offset", "dcca", "contrastive"),
                       "task")
  modalities = config_utils.choices(args.modalities.split("+"), ("audio", "video"),
                                    "modalities")
  config_utils.choices([args.video], ("tubelet", "factorised"), "video")
  config_utils.choices([args.offset_model], ("sync", "fusion"), "offset_model")
  config_utils.choices([args.co_learning], ("none", "dcca", "sigmoid", "softmax"),
                       "co_learning")
  config_utils.choices([args.offset_decoding], ("tolerant", "argmax"), "offset_decoding")
  if args.task in ("offset", "dcca", "contrastive") and len(modalities) < 2:
    raise ValueError(f"task={args.task} compares the two streams: it needs "
                     "modalities=audio+video.")
  co_learning = args.co_learning != "none"
  if co_learning and (len(modalities) < 2 or args.task not in ("event", "count")):
    raise ValueError("co_learning adds a term between the two streams beside task=event or "
                     f"count; got task={args.task}, modalities={args.modalities}.")
  c = config_utils.shapes_base(args, dataset="shapes_av")
  sample_rate, fps = (8000, 8.0) if args.data == "tiny" else (16000, 16.0)  # the builder's
  c.pp_train = pp(args.task, modalities, sample_rate,
                  resample_offset=args.task == "offset" and args.resample_offset)
  pp_eval = pp(args.task, modalities, sample_rate)

  width, depth = (32, 1) if args.tiny else (args.width, args.depth)
  video_patch = args.video_patch or (16 if args.task == "offset" else 8)
  sizes = dict(variant=None, width=width, depth=depth, mlp_dim=2 * width, num_heads=4)
  encoders = {
      "audio": dict(type="audio_encoder", patch_time=16, patch_freq=16, pool_type="gap",
                    **sizes),
      "video": dict(type="video_encoder", kind=args.video, patch_size=video_patch,
                    tubelet_time=2, pool_type="gap", **sizes),
  }
  encoders = {m: encoders[m] for m in modalities}
  if args.task == "dcca":
    c.task = dict(type="dcca", modalities=modalities, ridge=1e-3)
    c.model = dict(type="paired_embeddings", encoders=encoders, embed_dim=args.embed_dim,
                   dtype="float32")
  elif args.task == "contrastive":
    c.task = dict(type="contrastive", loss="sigmoid", modalities=modalities)
    c.model = dict(type="paired_embeddings", encoders=encoders, embed_dim=args.embed_dim,
                   contrastive=True, dtype="float32")
  elif args.task == "offset" and args.offset_model == "sync":
    def steps(step_ms: float) -> int | None:  # the attention window in an encoder's steps
      return max(round(args.sync_window_ms / step_ms), 1) if args.sync_window_ms else None

    c.task = dict(type="classification", num_classes=LABELS["offset"][1],
                  label_key=LABELS["offset"][0])
    c.model = dict(
        type="sync_offset", max_ms=OFFSET_MAX_MS, bin_ms=OFFSET_BIN_MS, hop_ms=HOP_MS,
        window_ms=WINDOW_MS, fps=fps, video_substeps=3, sync_dim=64, dtype="float32",
        encoders={"audio": dict(encoders["audio"], patch_time=2, patch_freq=MEL_BINS,
                                pool_type="none", time_window=steps(2 * HOP_MS)),
                  "video": dict(encoders["video"], kind="tubelet", tubelet_time=1,
                                pool_type="none", time_window=steps(1000 / fps))})
  else:
    label_key, num_classes = LABELS[args.task]
    c.task = dict(type="classification", num_classes=num_classes, label_key=label_key)
    fusion = args.fusion if len(modalities) > 1 else "early"  # one stream: its own layers
    query, context = ("audio", "video") if len(modalities) > 1 else (modalities[0],) * 2
    c.model = dict(
        type="fusion_classifier", encoders=encoders,
        fusion=dict(type=fusion, width=width, depth=depth, num_heads=4, mlp_dim=2 * width,
                    **config_utils.fusion_settings(fusion, depth, query, context)),
        head=dict(type="classifier", hidden_dim=2 * width, dropout=0.0),
        modality_dropout=args.modality_dropout,
        co_learning=dict(modalities=modalities, loss=args.co_learning,
                         weight=args.co_learning_weight, embed_dim=args.embed_dim)
        if co_learning else None,
        dtype="float32")
  if args.task == "offset":
    c.task.label_sigma = float(args.label_sigma)
    if args.offset_decoding == "tolerant":
      c.task.decode_window = av_ops.tolerance_window(TOLERANCE_MS, OFFSET_BIN_MS)

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 1e-4
  c.evals = evals(pp_eval, args.task, modalities, batch_size=32 if args.tiny else 250,
                  every_steps=0 if args.tiny else 500)
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  return c


def evals(pp_eval: str, task: str, modalities: tuple[str, ...], batch_size: int,
          every_steps: int) -> dict:
  """Validation during training and test at the end; with two streams, the test split
  again with each one missing (event and count)."""
  if task in ("dcca", "contrastive"):
    def correlation(split: str, every: int) -> dict:
      return dict(type="canonical_correlation", split=split, pp=pp_eval,
                  batch_size=batch_size, every_steps=every, modalities=modalities,
                  ridge=1e-3, max_examples=config_dict.placeholder(int))
    if task == "contrastive":
      def retrieval(split: str, every: int) -> dict:
        return dict(type="paired_retrieval", split=split, pp=pp_eval, batch_size=batch_size,
                    every_steps=every, modalities=modalities,
                    max_examples=config_dict.placeholder(int))
      return dict(validation=retrieval("validation", every_steps),
                  test=retrieval("test", 0),
                  validation_correlation=correlation("validation", 0),
                  test_correlation=correlation("test", 0))
    evaluator = correlation
  elif task == "offset":
    def evaluator(split: str, every: int) -> dict:
      return dict(type="av_offset", split=split, pp=pp_eval, batch_size=batch_size,
                  every_steps=every, max_ms=OFFSET_MAX_MS, bin_ms=OFFSET_BIN_MS,
                  max_examples=config_dict.placeholder(int))
  else:
    def evaluator(split: str, every: int) -> dict:
      missing = modalities if (split == "test" and len(modalities) > 1) else ()
      return dict(type="classification", split=split, pp=pp_eval, batch_size=batch_size,
                  every_steps=every, group_by=("alignment",), missing_modalities=missing,
                  write_predictions=False, max_examples=config_dict.placeholder(int))
  return dict(validation=evaluator("validation", every_steps), test=evaluator("test", 0))
