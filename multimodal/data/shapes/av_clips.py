"""Audio-visual Shapes clips: shapes move and bounce off the walls, and every bounce sounds.

A clip is `num_frames` video frames at `fps` and the same span of audio at `sample_rate`.
Each object moves at a constant velocity and is reflected by the canvas's walls; each wall
contact is a *bounce*, which makes a tone whose pitch is set by the object's color
(`COLOR_HZ`) and whose length by its size (`TONE_SECONDS`). Both streams carry background
noise. The objects of a clip have distinct colors, so a tone's pitch names its object, but
only the video shows its shape: which shapes bounced is a question for both streams.

On a share of the clips (`offset_share`) the audio track is shifted by a known offset: the
sound of a bounce at video time t lies at audio time t + offset (positive: the audio lags).
The audio is synthesised over its own window, so its sounds come from the events of the
shifted span, as in a recording whose streams were cut apart.
Beside it, `wide_audio` is the clip's sound with no offset over a span longer by
`max_offset_ms` on each side: the audio at any offset in range is a slice of it (what the
`resample_offset` pp op cuts in training).

Labels (all of the video's span [0, duration)):
  event: which shapes bounced, as a bit set over `SHAPES` (bit s set if shape s bounced):
    0 .. 2^len(SHAPES) - 1;
  num_bounces: how many bounces (0 .. MAX_BOUNCES);
  offset_ms: the audio's offset in milliseconds (0 for a synced clip).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np

from multimodal.data.shapes.render import render
from multimodal.data.shapes.scenes import COLORS, SHAPES, SIZES, Object, Scene, object_radius

# A fourth apart from one color to the next: distinct on a mel scale of 64 bins.
COLOR_HZ: dict[str, float] = {"red": 440.0, "green": 587.3, "blue": 784.0, "yellow": 1046.5,
                              "purple": 1396.9, "cyan": 1864.7}
TONE_SECONDS = {"small": 0.06, "large": 0.15}
TONE_AMPLITUDE = 0.3
ATTACK_SECONDS = 0.005
MAX_BOUNCES = 6
NUM_EVENT_CLASSES = 2 ** len(SHAPES)
_MIN_GAP_SECONDS = 0.08  # Bounces of a clip lie at least this far apart in time.
_WALL_MARGIN = 1.0  # px at 32 px: objects bounce this far inside the canvas edge.
_SPEED_RANGE = (4.0, 24.0)  # px per second along each axis, at 32 px
_REFERENCE_SIZE = 32
_MAX_TRIES = 1_000


@dataclasses.dataclass(frozen=True)
class ClipSettings:
  """How clips are made: frames, canvas, audio, offsets, noise and objects per clip."""
  num_frames: int = 16
  fps: float = 16.0
  image_size: int = 32
  sample_rate: int = 16_000
  max_offset_ms: int = 300
  offset_share: float = 0.5
  audio_noise: float = 0.02  # std of white noise, in full-scale units
  video_noise: float = 6.0  # std of per-pixel noise, in uint8 levels
  max_objects: int = 3

  @property
  def duration(self) -> float:
    return self.num_frames / self.fps

  def __post_init__(self):
    if self.num_frames < 1 or self.fps <= 0 or self.sample_rate <= 0:
      raise ValueError(f"Clip settings need num_frames >= 1, fps > 0 and sample_rate > 0; "
                       f"got {self.num_frames}, {self.fps}, {self.sample_rate}.")
    if not 1 <= self.max_objects <= len(COLORS):
      raise ValueError(f"max_objects must lie in 1..{len(COLORS)} (colors are distinct in "
                       f"a clip); got {self.max_objects}.")
    if not 0.0 <= self.offset_share <= 1.0 or self.max_offset_ms < 0:
      raise ValueError(f"offset_share must lie in [0, 1] and max_offset_ms be >= 0; got "
                       f"{self.offset_share}, {self.max_offset_ms}.")
    if max(COLOR_HZ.values()) >= self.sample_rate / 2:
      raise ValueError(f"sample_rate {self.sample_rate} cannot hold the highest tone "
                       f"({max(COLOR_HZ.values())} Hz): it needs more than twice that.")


@dataclasses.dataclass(frozen=True)
class Mover:
  """An object at (x0, y0) px at time 0, moving at (vx, vy) px/s between walls at `low` and
  `high` (its center's range along both axes)."""
  shape: str
  color: str
  size: str
  x0: float
  y0: float
  vx: float
  vy: float
  radius: float
  low: float
  high: float

  def position(self, t: float) -> tuple[float, float]:
    return _reflect(self.x0 + self.vx * t, self.low, self.high), _reflect(
        self.y0 + self.vy * t, self.low, self.high)

  def bounces(self, start: float, stop: float) -> list[float]:
    """Times in [start, stop) at which the object touches a wall (either axis)."""
    times = []
    for p0, v in ((self.x0, self.vx), (self.y0, self.vy)):
      # Unfolded, the coordinate crosses low + k * span at a wall contact.
      span = self.high - self.low
      first = math.ceil((min(p0 + v * start, p0 + v * stop) - self.low) / span)
      last = math.floor((max(p0 + v * start, p0 + v * stop) - self.low) / span)
      for k in range(first, last + 1):
        t = (self.low + k * span - p0) / v
        if start <= t < stop:
          times.append(t)
    return sorted(times)


def _reflect(u: float, low: float, high: float) -> float:
  """The unfolded coordinate u folded back into [low, high] (a triangle wave)."""
  span = high - low
  phase = (u - low) % (2 * span)
  return low + (phase if phase <= span else 2 * span - phase)


@dataclasses.dataclass(frozen=True)
class Clip:
  movers: tuple[Mover, ...]
  offset_seconds: float
  settings: ClipSettings

  def events(self, start: float, stop: float) -> list[tuple[float, Mover]]:
    """(time, object) of every bounce in [start, stop) of video time, in time order."""
    return sorted(((t, m) for m in self.movers for t in m.bounces(start, stop)),
                  key=lambda e: e[0])


def sample_clip(rng: np.random.Generator, settings: ClipSettings) -> Clip:
  """1..max_objects objects of distinct colors with random positions and velocities, and an
  offset (0, or a whole number of ms in [-max, max] on `offset_share` of the clips); clips
  with more than MAX_BOUNCES bounces, or two bounces closer than 80 ms, are drawn again (in
  the audio's span too, so that every tone stands apart)."""
  s = settings
  scale = s.image_size / _REFERENCE_SIZE
  for _ in range(_MAX_TRIES):
    n = int(rng.integers(1, s.max_objects + 1))
    colors = rng.choice(COLORS, n, replace=False)
    movers = []
    for color in colors:
      size = str(rng.choice(SIZES))
      radius = object_radius(size, s.image_size)
      low, high = radius + _WALL_MARGIN * scale, s.image_size - radius - _WALL_MARGIN * scale
      speed = rng.uniform(*_SPEED_RANGE, size=2) * scale * rng.choice([-1.0, 1.0], size=2)
      x0, y0 = rng.uniform(low, high, size=2)
      movers.append(Mover(str(rng.choice(SHAPES)), str(color), size, float(x0), float(y0),
                          float(speed[0]), float(speed[1]), radius, low, high))
    offset_ms = 0
    if s.max_offset_ms and rng.random() < s.offset_share:
      offset_ms = int(rng.choice([-1, 1]) * rng.integers(1, s.max_offset_ms + 1))
    clip = Clip(tuple(movers), offset_ms / 1000.0, s)
    in_video = clip.events(0.0, s.duration)
    heard = clip.events(-clip.offset_seconds - 0.2, s.duration - clip.offset_seconds)
    times = [t for t, _ in heard]
    if len(in_video) <= MAX_BOUNCES and all(b - a >= _MIN_GAP_SECONDS
                                            for a, b in zip(times, times[1:])):
      return clip
  raise ValueError(f"No clip with at most {MAX_BOUNCES} well separated bounces in "
                   f"{_MAX_TRIES} tries; lower the speeds or max_objects.")


def render_video(clip: Clip, rng: np.random.Generator) -> np.ndarray:
  """uint8[num_frames, S, S, 3]: frame k shows the objects at time k / fps."""
  s = clip.settings
  frames = []
  for k in range(s.num_frames):
    objects = tuple(Object(m.shape, m.color, m.size, *m.position(k / s.fps), m.radius)
                    for m in clip.movers)
    frame = render(Scene(objects, s.image_size)).astype(np.float32)
    frame += s.video_noise * rng.standard_normal(frame.shape, dtype=np.float32)
    frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
  return np.stack(frames)


def tone(color: str, size: str, sample_rate: int) -> np.ndarray:
  """float32[n]: the sound of one bounce: a sine at the color's pitch, 5 ms attack, then an
  exponential decay to 1% over the size's length."""
  n = int(round(TONE_SECONDS[size] * sample_rate))
  t = np.arange(n) / sample_rate
  envelope = np.minimum(t / ATTACK_SECONDS, 1.0) * np.exp(-math.log(100.0) * t / t[-1])
  return (TONE_AMPLITUDE * envelope * np.sin(2 * np.pi * COLOR_HZ[color] * t)).astype(
      np.float32)


def render_audio(clip: Clip, rng: np.random.Generator | None, start_s: float = 0.0,
                 stop_s: float | None = None) -> np.ndarray:
  """float32[round((stop_s - start_s) * sample_rate)] in [-1, 1], over audio time
  [start_s, stop_s) (default: the clip's span [0, duration)): sample i at audio time
  start_s + i / sample_rate holds the bounces of video time start_s + i / sample_rate -
  offset; white noise added when `rng` is given."""
  s = clip.settings
  stop_s = s.duration if stop_s is None else stop_s
  n = int(round((stop_s - start_s) * s.sample_rate))
  audio = np.zeros(n, np.float32)
  longest = max(TONE_SECONDS.values())
  for t, mover in clip.events(start_s - clip.offset_seconds - longest,
                              stop_s - clip.offset_seconds):
    sound = tone(mover.color, mover.size, s.sample_rate)
    start = int(round((t + clip.offset_seconds - start_s) * s.sample_rate))
    lo, hi = max(start, 0), min(start + len(sound), n)
    if lo < hi:
      audio[lo:hi] += sound[lo - start:hi - start]
  if rng is not None:
    audio += s.audio_noise * rng.standard_normal(n, dtype=np.float32)
  return np.clip(audio, -1.0, 1.0)


def wide_audio(clip: Clip, rng: np.random.Generator | None) -> np.ndarray:
  """float32[round((duration + 2 * max_offset) * sample_rate)]: the clip's sound with no
  offset over video time [-max_offset, duration + max_offset). The audio at an offset o
  (ms, |o| <= max_offset_ms) is its slice of round(duration * sample_rate) samples from
  (max_offset_ms - o) * sample_rate / 1000."""
  margin = clip.settings.max_offset_ms / 1000.0
  return render_audio(dataclasses.replace(clip, offset_seconds=0.0), rng, -margin,
                      clip.settings.duration + margin)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
  """float[n] in [-1, 1] -> int16[n] PCM."""
  return np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)


def event_class(shapes: set[str]) -> int:
  """The bit set over SHAPES of the shapes that bounced."""
  return sum(1 << i for i, shape in enumerate(SHAPES) if shape in shapes)


def labels(clip: Clip) -> dict:
  """The clip's labels over the video's span (see the module docstring), and each bounce's
  time (s, video time), color, shape and size."""
  events = clip.events(0.0, clip.settings.duration)
  return {"event": event_class({m.shape for _, m in events}), "num_bounces": len(events),
          "offset_ms": int(round(clip.offset_seconds * 1000)),
          "bounces": {"time": np.array([t for t, _ in events], np.float32),
                      "color": [m.color for _, m in events],
                      "shape": [m.shape for _, m in events],
                      "size": [m.size for _, m in events]}}


def iterate_examples(seed: int, num_clips: int, settings: ClipSettings) -> Iterator[dict]:
  """Yields clips deterministically from the seed: clip k draws from its own stream
  (seed, k), so a clip does not depend on num_clips. Each example: video uint8[T, S, S, 3],
  audio int16[round(duration * sample_rate)], audio_wide int16 (`wide_audio`, with its own
  noise), the `labels`, clip_id."""
  for clip_id in range(num_clips):
    rng = np.random.default_rng((seed, clip_id))
    clip = sample_clip(rng, settings)
    video, audio = render_video(clip, rng), to_pcm16(render_audio(clip, rng))
    yield {"video": video, "audio": audio, "audio_wide": to_pcm16(wide_audio(clip, rng)),
           **labels(clip), "clip_id": clip_id}
