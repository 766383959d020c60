"""The toy world: coloured shapes moving over plain backgrounds, rated like LiFT-HRA with controlled defects.

It is the embedded default dataset of every stage, so the whole pipeline runs on a laptop CPU in minutes:

    lift data toy ./runs/default/data                       # 1,000 rated clips, prompts, real clips
    lift data toy s3://bucket/runs/r1/data toy.num_clips=10000 seed=3

A clip shows `Scene` (e.g. "a red circle moves left on a black background"), rendered by `render` with the
defects of `DEFECTS`, one table that holds what each defect does, its strength at Normal and at Bad, and the
reason text the rating carries. Each dimension is rated independently (LiFT-HRA's mix: ~35% Good, 15% Normal,
50% Bad). The world is built for tiny models: 32 px, big saturated shapes, global
signals (colour, cast, flicker) and movements of 12+ px. `measure` is the oracle later stages use to check
generated clips (colour and direction) and to calibrate defects; docs/DATA.md documents the whole world.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from lift import config
from lift.config import schema
from lift.core import logs
from lift.data import hra
from lift.data.release import assign_split
from lift.io import storage
from lift.io.video import write_video

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 250), "yellow": (240, 220, 40),
}
"""Shape colours: saturated and far apart, so a colour cast or blur never moves one nearer another."""
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15), "gray": (110, 110, 110), "white": (235, 235, 235),
}
"""Plain backgrounds, each far from every shape colour."""
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
"""Direction -> unit (dx, dy) in image coordinates (y grows downwards)."""
COUNTS = {1: "a", 2: "two"}
"""Shapes per clip -> the word the prompt uses."""
CAST_TINTS = ("red", "green", "blue")
"""Channels a colour cast can push."""

_RATED, _REAL, _PROMPTS = 0, 1, 2  # independent random streams: growing one set never changes another


@dataclass(frozen=True)
class Scene:
    """What a prompt asks for, or what a clip shows; `prompt` and `from_prompt` are each other's inverse."""

    colour: str
    shape: str
    count: int
    direction: str
    background: str

    def __post_init__(self):
        for value, allowed in ((self.colour, COLOURS), (self.shape, SHAPES), (self.count, COUNTS),
                               (self.direction, DIRECTIONS), (self.background, BACKGROUNDS)):
            if value not in allowed:
                raise ValueError(f"not a toy scene: {value!r} is not one of {', '.join(map(str, allowed))}")

    @property
    def prompt(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        verb = "move" if self.count > 1 else "moves"
        return f"{COUNTS[self.count]} {self.colour} {noun} {verb} {self.direction} on a {self.background} background"

    @classmethod
    def from_prompt(cls, prompt: str) -> Scene:
        """Parse a toy prompt back into its scene (evaluation needs the intended scene of a generated clip)."""
        m = _PROMPT.match(prompt.strip())
        if not m:
            raise ValueError(f"not a toy prompt: {prompt!r}")
        count = {word: n for n, word in COUNTS.items()}[m["count"]]
        if (m["plural"] == "s") != (count > 1):
            raise ValueError(f"not a toy prompt (number does not agree): {prompt!r}")
        return cls(m["colour"], m["shape"], count, m["direction"], m["background"])

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Scene:
        return cls(
            colour=_choice(rng, COLOURS), shape=_choice(rng, SHAPES), count=int(rng.integers(1, 3)),
            direction=_choice(rng, DIRECTIONS), background=_choice(rng, BACKGROUNDS),
        )


_PROMPT = re.compile(
    rf"^(?P<count>{'|'.join(COUNTS.values())}) (?P<colour>{'|'.join(COLOURS)}) (?P<shape>{'|'.join(SHAPES)})"
    rf"(?P<plural>s?) moves? (?P<direction>{'|'.join(DIRECTIONS)}) on a (?P<background>{'|'.join(BACKGROUNDS)}) "
    r"background$"
)


def _choice(rng: np.random.Generator, options: Iterable[str]) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


@dataclass(frozen=True)
class Defect:
    """One row of the defect catalogue: what it does, its strength at each non-Good label, the rating's reason.

    Reason templates are filled with the words of the scene shown: Subject/subject ("The circle", "the
    circles"), s/es/be/pl (agreement: "moves"/"move", "rushes"/"rush", "is"/"are", ""/"s"), amount (the
    strength, in `unit`), tint (the channel of a cast) and, in semantic rows, shown/asked (the attribute as
    shown and as the prompt asked). Reasons say "color", as LiFT-HRA's annotators do.
    """

    dimension: str
    name: str
    what: str
    unit: str
    normal: float
    bad: float
    reason: str
    bad_reason: str | None = None  # None: the same template as Normal

    def strength(self, label: str) -> float:
        return {"Normal": self.normal, "Bad": self.bad}[label]


DEFECTS: tuple[Defect, ...] = (
    # Semantic: the clip shows another scene than the prompt's. Normal: this attribute alone differs (a minor
    # inconsistency, the meaning stays clear); Bad: it and one more attribute differ (largely inconsistent).
    Defect("semantic", "shape", "another shape is drawn", "attributes wrong", 1, 2,
           "The shape{pl} {be} {shown}, not {asked}."),
    Defect("semantic", "count", "one shape instead of two, or two instead of one", "attributes wrong", 1, 2,
           "There {be} {shown}, not {asked}."),
    Defect("semantic", "colour", "the shapes have another colour", "attributes wrong", 1, 2,
           "{Subject} {be} {shown}, not {asked}."),
    Defect("semantic", "direction", "the shapes move another way", "attributes wrong", 1, 2,
           "{Subject} move{s} {shown}, not {asked}."),
    # Motion: sizes in pixels are at 32 px and scale with the clip size.
    Defect("motion", "jitter", "each frame shifts the shapes by a random offset up to the strength", "pixels", 2, 5,
           "{Subject} jitter{s} slightly, by up to {amount} pixels between frames.",
           "{Subject} jitter{s} by up to {amount} pixels between frames."),
    Defect("motion", "freeze", "the picture freezes once for `strength` frames (dropped frames), then jumps ahead",
           "frames", 2, 6,
           "The video briefly freezes for {amount} frames, then {subject} jump{s} ahead.",
           "The video freezes for {amount} frames, then {subject} jump{s} far ahead."),
    Defect("motion", "speed", "the second half moves `strength` times faster than the first", "x", 2, 6,
           "{Subject} suddenly move{s} {amount}x faster halfway through.",
           "{Subject} nearly stop{s}, then rush{es} ahead {amount}x faster halfway through."),
    Defect("motion", "flicker", "every other frame is darker by the strength", "percent", 15, 50,
           "The brightness flickers slightly: every other frame is {amount}% darker.",
           "The brightness flickers strongly: every other frame is {amount}% darker."),
    # Fidelity: applied to the rendered pixels, in the order blur, cast, noise.
    Defect("fidelity", "noise", "Gaussian grain, standard deviation in 8-bit levels", "levels", 6, 20,
           "Light grain noise (about {amount} levels) covers the frames.",
           "Heavy grain noise (about {amount} levels) covers the frames."),
    Defect("fidelity", "blur", "Gaussian blur, standard deviation in pixels", "pixels", 0.7, 1.6,
           "The frames are slightly blurred.",
           "The frames are heavily blurred; the edges of {subject} are smeared."),
    Defect("fidelity", "cast", "one channel (the tint) up by the strength, the other two down by half of it",
           "levels", 25, 70,
           "The frames have a slight {tint} color cast.",
           "The frames have a strong {tint} color cast."),
)
CATALOGUE: dict[str, Defect] = {d.name: d for d in DEFECTS}
GOOD_REASONS = {
    "semantic": "{Named} match{es} the prompt.",
    "motion": "{Subject} move{s} {direction} smoothly.",
    "fidelity": "The frames are clean and sharp.",
}
"""Reasons of a Good rating (Named: "The red circle" / "The two red circles")."""
SEEN = "In the video, {caption}."
"""First sentence of every semantic reason: what the clip shows, in the words of a prompt."""


@dataclass(frozen=True)
class Fault:
    """A catalogue defect as applied to one clip; `tint` is the channel of a cast."""

    name: str
    strength: float
    tint: str | None = None

    def __post_init__(self):
        if self.name not in CATALOGUE:
            raise ValueError(f"unknown defect {self.name!r}; defects: {', '.join(CATALOGUE)}")
        if (self.name == "cast") != (self.tint in CAST_TINTS):
            raise ValueError(f"a cast needs a tint out of {', '.join(CAST_TINTS)} and only a cast has one: {self}")


@dataclass(frozen=True)
class Clip:
    """One rated clip before rendering: the prompt's scene, the scene shown, the faults, labels and reasons."""

    scene: Scene
    shown: Scene
    faults: tuple[Fault, ...]
    labels: dict[str, str]
    reasons: dict[str, str]


def _words(scene: Scene) -> dict[str, str]:
    one = scene.count == 1
    subject = f"the {scene.shape}" + ("" if one else "s")
    named = f"The {scene.colour} {scene.shape}" if one else f"The two {scene.colour} {scene.shape}s"
    return {"Subject": subject.capitalize(), "subject": subject, "Named": named, "s": "s" if one else "",
            "es": "es" if one else "", "be": "is" if one else "are", "pl": "" if one else "s",
            "direction": scene.direction}


def _attribute_words(attribute: str, scene: Scene, asked: Scene) -> dict[str, str]:
    """shown/asked of a semantic reason: the attribute's value in the clip and in the prompt."""
    if attribute == "shape":
        if scene.count == 1:
            return {"shown": f"a {scene.shape}", "asked": f"a {asked.shape}"}
        return {"shown": f"{scene.shape}s", "asked": f"{asked.shape}s"}
    if attribute == "count":
        return {"shown": f"{'one' if scene.count == 1 else 'two'} {scene.shape}" + ("" if scene.count == 1 else "s"),
                "asked": "one" if asked.count == 1 else "two"}
    return {"shown": str(getattr(scene, attribute)), "asked": str(getattr(asked, attribute))}


def sample_clip(rng: np.random.Generator, label_mix: Sequence[float] | None = None, size: int = 32) -> Clip:
    """A random prompt, an independent label per dimension drawn from `label_mix` (weights of Good, Normal, Bad;
    default: `toy.label_mix` of the config schema), and for each non-Good label one defect of that dimension at
    that label's strength, with the reasons that name it.

    Pixel strengths are scaled from 32 px to `size` (the reason states the scaled value).
    """
    scene = Scene.sample(rng)
    p = np.asarray(_label_mix(schema.ToyConfig().label_mix) if label_mix is None else label_mix, dtype=np.float64)
    p /= p.sum()
    labels = {dim: hra.LABELS[int(rng.choice(len(hra.LABELS), p=p))] for dim in hra.DIMENSIONS}
    shown, reasons, faults = scene, {}, []
    semantic = [d for d in DEFECTS if d.dimension == "semantic"]
    if labels["semantic"] == "Good":
        reasons["semantic"] = GOOD_REASONS["semantic"].format(**_words(scene))
    else:
        first = semantic[int(rng.integers(len(semantic)))]
        others = [d for d in semantic if d is not first]
        extra = rng.choice(len(others), int(first.strength(labels["semantic"])) - 1, replace=False)
        wrong = [first] + [others[j] for j in sorted(extra)]
        for d in wrong:
            shown = replace(shown, **{d.name: _other(rng, d.name, getattr(scene, d.name))})
        order = [d for d in semantic if d in wrong]  # catalogue order: shape and count name the subject first
        reasons["semantic"] = " ".join(
            d.reason.format(**_words(shown), **_attribute_words(d.name, shown, scene)) for d in order)
    # Say what is seen before comparing it with the prompt: a critic that answers reason first can then judge by
    # comparing words in context (docs/RESULTS.md, critic accuracy), and the description is the scene's own caption.
    reasons["semantic"] = SEEN.format(caption=shown.prompt) + " " + reasons["semantic"]
    for dim in ("motion", "fidelity"):
        label = labels[dim]
        if label == "Good":
            reasons[dim] = GOOD_REASONS[dim].format(**_words(shown))
            continue
        rows = [d for d in DEFECTS if d.dimension == dim]
        defect = rows[int(rng.integers(len(rows)))]
        strength = defect.strength(label) * (size / 32 if defect.unit == "pixels" else 1)
        tint = _choice(rng, CAST_TINTS) if defect.name == "cast" else None
        faults.append(Fault(defect.name, strength, tint))
        template = defect.bad_reason if label == "Bad" and defect.bad_reason else defect.reason
        reasons[dim] = template.format(**_words(shown), amount=f"{round(strength, 1):g}", tint=tint)
    return Clip(scene, shown, tuple(faults), labels, reasons)


def _other(rng: np.random.Generator, attribute: str, value: str | int) -> str | int:
    """Another value of a scene attribute, drawn uniformly."""
    options = {"colour": COLOURS, "shape": SHAPES, "count": COUNTS, "direction": DIRECTIONS}[attribute]
    others = [o for o in options if o != value]
    return others[int(rng.integers(len(others)))]


# ---------------------------------------------------------------------------------------------------- rendering


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at offset (0, 0): sub-pixel motion stays smooth."""
    if shape == "circle":
        return np.clip(radius + 0.5 - np.hypot(dx, dy), 0, 1)
    if shape == "square":
        half = 0.9 * radius
        return np.clip(half + 0.5 - np.abs(dx), 0, 1) * np.clip(half + 0.5 - np.abs(dy), 0, 1)
    # An upward triangle (area 2.5 r^2, a circle's is 3.1 r^2): inside = below both slanted edges, above the base.
    apex, base, half_width = -1.1 * radius, 0.9 * radius, 1.25 * radius
    distances = [dy - base]
    for side in (-1, 1):  # slanted edge from the apex to (side * half_width, base), outward normal (nx, ny)
        nx, ny = side * (base - apex), -half_width
        distances.append((dx * nx + (dy - apex) * ny) / np.hypot(nx, ny))
    return np.clip(0.5 - functools.reduce(np.maximum, distances), 0, 1)


def _progress(faults: Mapping[str, Fault], frames: int, rng: np.random.Generator) -> np.ndarray:
    """Fraction of the path covered at each frame: linear, unless a speed or freeze fault bends it."""
    t = np.arange(frames, dtype=np.float64)
    last = max(frames - 1, 1)
    progress = t / last
    if "speed" in faults:  # slow first half, `ratio` times faster second half, same end point
        ratio, half = faults["speed"].strength, last / 2
        v = 1.0 / (half * (1 + ratio))
        progress = np.where(t <= half, t * v, half * v + (t - half) * ratio * v)
    if "freeze" in faults:  # frames start+1 .. start+hold repeat frame start; the next one jumps back on the path
        hold = int(round(faults["freeze"].strength))
        start = int(rng.integers(1, max(2, frames - hold - 1)))
        progress[start + 1:start + 1 + hold] = progress[start]
    return progress


def render(scene: Scene, faults: Iterable[Fault] = (), rng: np.random.Generator | None = None,
           frames: int = 16, size: int = 32) -> np.ndarray:
    """uint8 frames (T, H, W, 3) of `scene` with motion and fidelity `faults` applied (semantic defects are
    already in the scene: render the scene shown). The random start position and every random detail of a
    fault come from `rng`, so a clip is a pure function of its arguments."""
    rng = rng if rng is not None else np.random.default_rng(0)
    by_name = {f.name: f for f in faults}
    for name in by_name:
        if CATALOGUE[name].dimension == "semantic":
            raise ValueError(f"cannot render fault {name!r}: render the shown scene instead of semantic faults; "
                             f"renderable: {', '.join(d.name for d in DEFECTS if d.dimension != 'semantic')}")
    k = size / 32  # every length below is in pixels at 32 px
    radius = (6.0 if scene.count == 1 else 4.5) * k
    ux, uy = DIRECTIONS[scene.direction]
    centre = size / 2 + rng.uniform(-2, 2) * k  # middle of the path along the motion axis
    if scene.count == 1:
        cross = size / 2 + rng.uniform(-4, 4, 1) * k  # across the motion axis, one entry per shape
    else:
        cross = size / 2 + rng.uniform(-1.5, 1.5) * k + np.array([-7.5, 7.5]) * k
    along = centre + (_progress(by_name, frames, rng) - 0.5) * 12.0 * k * (ux + uy)  # 12 px of travel
    cx = np.broadcast_to(along[:, None] if ux else cross[None, :], (frames, cross.size))
    cy = np.broadcast_to(cross[None, :] if ux else along[:, None], (frames, cross.size))
    if "jitter" in by_name:  # one random offset per frame, shared by the shapes
        amp = by_name["jitter"].strength
        cx, cy = cx + rng.uniform(-amp, amp, (frames, 1)), cy + rng.uniform(-amp, amp, (frames, 1))
    grid = np.arange(size, dtype=np.float64) + 0.5
    dx = grid[None, None, None, :] - cx[:, :, None, None]  # (T, shapes, 1, W)
    dy = grid[None, None, :, None] - cy[:, :, None, None]  # (T, shapes, H, 1)
    alpha = _coverage(scene.shape, dx, dy, radius).max(axis=1)[..., None]  # (T, H, W, 1)
    background = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64)
    video = background + alpha * (np.asarray(COLOURS[scene.colour], dtype=np.float64) - background)
    if "flicker" in by_name:
        video[1::2] *= 1 - by_name["flicker"].strength / 100
    if "blur" in by_name:
        video = _blur(video, by_name["blur"].strength)
    if "cast" in by_name:
        fault = by_name["cast"]
        shift = np.full(3, -fault.strength / 2)
        shift[CAST_TINTS.index(fault.tint)] = fault.strength
        video = video + shift
    if "noise" in by_name:
        video = video + rng.normal(0, by_name["noise"].strength, video.shape)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def _blur(video: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over height and width of (T, H, W, C), edges replicated."""
    reach = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-reach, reach + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (1, 2):
        padded = np.pad(video, [(reach, reach) if a == axis else (0, 0) for a in range(video.ndim)], mode="edge")
        n = video.shape[axis]
        video = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    return video


# ------------------------------------------------------------------------------------------------------- oracle


@dataclass(frozen=True)
class Measurement:
    """What `measure` reads off a clip, with no model: the ground truth of toy evaluations and defect checks."""

    colour: str | None
    """Nearest of COLOURS to the mean colour of the shapes' core pixels; None when no shape stands out."""
    background: str
    """Nearest of BACKGROUNDS to the median colour of the frame border."""
    direction: str | None
    """Sign and axis of the larger drift component; None when the shapes drift less than 2 px (at 32 px)."""
    drift: tuple[float, float]
    """(dx, dy) in pixels from first to last frame along the best constant-velocity path of the centroid."""
    jitter: float
    """RMS distance in pixels of the centroid from that path: ~0 for smooth motion, grows with jitter,
    freezes and speed jumps."""
    flicker: float
    """Mean relative change of frame brightness between consecutive frames."""
    noise: float
    """Robust standard deviation (8-bit levels) of the border pixels around their median."""
    cast: float
    """Tint (8-bit levels) of the background, the RGB distance of its colour from the nearest gray: every toy
    background is gray, so this is the colour cast; brightness changes (flicker) leave it at 0."""
    sharpness: float
    """Steepest step between neighbouring pixels over the shape-background contrast: lower when blurred. It
    depends on the colours (clean clips read 0.74-1.1 after encoding), so compare it with a clean rendering of
    the same scene; heavy noise inflates it."""

    def matches(self, scene: Scene) -> dict[str, bool]:
        """Which attributes of the intended scene the clip shows."""
        return {"colour": self.colour == scene.colour, "direction": self.direction == scene.direction,
                "background": self.background == scene.background}


def _nearest(colour: np.ndarray, palette: Mapping[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    return names[int(np.argmin(np.linalg.norm(np.asarray([palette[n] for n in names]) - colour, axis=1)))]


def measure(frames: np.ndarray) -> Measurement:
    """Oracle measurements of uint8 frames (T, H, W, 3) (e.g. `read_video(url).numpy()`).

    The background of each frame is the median of its border; shape pixels are those far from it (over 40
    levels and over half the frame's largest distance, so blurred rims and noise are left out).
    """
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {x.shape}")
    count, height, width, _ = x.shape
    border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)  # (T, P, 3)
    background = np.median(border, axis=1)  # (T, 3)
    distance = np.linalg.norm(x - background[:, None, None], axis=-1)  # (T, H, W)
    mask = distance > np.maximum(40.0, 0.5 * distance.max(axis=(1, 2)))[:, None, None]
    noise = float(1.4826 * np.median(np.abs(border - background[:, None])))
    brightness = x.mean(axis=(1, 2, 3))
    flicker = float(np.mean(np.abs(np.diff(brightness))) / max(brightness.mean(), 1.0)) if count > 1 else 0.0
    back_name = _nearest(np.median(border.reshape(-1, 3), axis=0), BACKGROUNDS)
    cast = float(np.median(np.linalg.norm(background - background.mean(axis=1, keepdims=True), axis=1)))
    seen = mask.any(axis=(1, 2))
    if not seen.any():
        return Measurement(None, back_name, None, (0.0, 0.0), 0.0, flicker, noise, cast, 0.0)
    fg = x[mask].mean(axis=0)
    area = mask.sum(axis=(1, 2))[seen]
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    centroid = np.stack([(mask[seen] * xs).sum(axis=(1, 2)) / area,
                         (mask[seen] * ys[:, None]).sum(axis=(1, 2)) / area], axis=1)  # (seen, 2) as (x, y)
    t = np.flatnonzero(seen).astype(np.float64)
    if t.size > 1:
        slope, offset = np.polyfit(t, centroid, 1)
        drift = slope * (count - 1)
        jitter = float(np.sqrt(np.mean(np.sum((centroid - (np.outer(t, slope) + offset)) ** 2, axis=1))))
    else:
        drift, jitter = np.zeros(2), 0.0
    direction = None
    if np.hypot(*drift) >= 2.0 * width / 32:
        axis = int(np.argmax(np.abs(drift)))
        direction = [("left", "right"), ("up", "down")][axis][int(drift[axis] > 0)]
    steps = np.maximum(np.linalg.norm(np.diff(x, axis=1), axis=-1).max(axis=(1, 2)),
                       np.linalg.norm(np.diff(x, axis=2), axis=-1).max(axis=(1, 2)))
    contrast = np.linalg.norm(fg - background.mean(axis=0))
    return Measurement(
        colour=_nearest(fg, COLOURS), background=back_name, direction=direction,
        drift=(float(drift[0]), float(drift[1])), jitter=jitter, flicker=flicker, noise=noise, cast=cast,
        sharpness=float(np.median(steps[seen]) / max(contrast, 1.0)),
    )


# ---------------------------------------------------------------------------------------------------- the stage


def _label_mix(mix: Mapping[str, float]) -> list[float]:
    if set(mix) != set(hra.LABELS) or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise config.ConfigError(f"toy.label_mix needs non-negative weights for exactly {', '.join(hra.LABELS)}, "
                                 f"not a zero total; got {dict(mix)}")
    total = sum(mix.values())
    return [mix[label] / total for label in hra.LABELS]


def check(cfg: DictConfig) -> None:
    """The toy world's settings that no single key's range says (`lift data toy`'s input check)."""
    toy = cfg.toy
    if toy.size % 2:
        raise config.ConfigError(f"toy.size must be even (yuv420p), got {toy.size}")
    if toy.num_eval_prompts and toy.num_prompts + toy.num_eval_prompts > len(all_scenes()):
        raise config.ConfigError(f"toy.num_prompts + toy.num_eval_prompts must be at most {len(all_scenes())} "
                                 "(the toy world's scenes) for the evaluation prompts to be held out")


def all_scenes() -> list[Scene]:
    """Every scene of the toy world, in a fixed order (288 of them)."""
    return [Scene(c, s, n, d, b) for c in COLOURS for s in SHAPES for n in COUNTS for d in DIRECTIONS
            for b in BACKGROUNDS]


def generate(cfg: DictConfig) -> dict:
    """`lift data toy`: write the rated clips (manifest.jsonl, videos/), rollout prompts (prompts.jsonl), held-out
    prompts (eval_prompts.jsonl, from the other end of the same permutation) and clean captioned clips
    (real/manifest.jsonl, real/videos/) under `cfg.out`; returns the marker's counts.

    Clip i draws everything from a generator seeded by (seed, set, i), so the same seed gives the same bytes,
    and changing num_clips keeps the clips both runs share. Videos are written before the manifests that list them.
    """
    check(cfg)
    out, seed, toy = cfg.out, cfg.seed, cfg.toy
    mix, frames, size, fps = _label_mix(toy.label_mix), toy.frames, toy.size, toy.fps
    records = []
    for i in logs.progress(range(toy.num_clips), desc="toy clips", unit="clip"):
        rng = np.random.default_rng([seed, _RATED, i])
        clip = sample_clip(rng, mix, size)
        clip_id = f"{i:06d}"
        video = f"videos/{clip_id}.mp4"
        write_video(storage.join(out, video), render(clip.shown, clip.faults, rng, frames, size), fps)
        records.append(hra.Record(clip_id, video, clip.scene.prompt, clip.labels, clip.reasons,
                                  assign_split(clip_id, cfg.split.test_fraction, cfg.split.seed)))
    hra.write_manifest(storage.join(out, hra.MANIFEST), records)

    scenes = all_scenes()
    order = np.random.default_rng([seed, _PROMPTS]).permutation(len(scenes))
    prompts = [{"id": f"prompt-{i:05d}", "prompt": scenes[order[i % len(scenes)]].prompt}
               for i in range(toy.num_prompts)]
    storage.write_text(storage.join(out, "prompts.jsonl"), "".join(json.dumps(p) + "\n" for p in prompts))
    held_out = [{"id": f"eval-{i:05d}", "prompt": scenes[order[-1 - i]].prompt} for i in range(toy.num_eval_prompts)]
    storage.write_text(storage.join(out, "eval_prompts.jsonl"), "".join(json.dumps(p) + "\n" for p in held_out))

    real = []
    for i in logs.progress(range(toy.num_real), desc="real clips", unit="clip"):
        rng = np.random.default_rng([seed, _REAL, i])
        scene = Scene.sample(rng)
        clip_id = f"real-{i:06d}"
        video = f"videos/{clip_id}.mp4"
        write_video(storage.join(out, "real", video), render(scene, (), rng, frames, size), fps)
        real.append({"id": clip_id, "video": video, "prompt": scene.prompt})
    storage.write_text(storage.join(out, "real", hra.MANIFEST),
                       "".join(json.dumps(r, sort_keys=True) + "\n" for r in real))

    labels = {d: {label: sum(r.labels[d] == label for r in records) for label in hra.LABELS}
              for d in hra.DIMENSIONS}
    splits = {s: sum(r.split == s for r in records) for s in hra.SPLITS}
    return {"records": len(records), **splits, "labels": labels, "prompts": len(prompts),
            "eval_prompts": len(held_out), "real": len(real)}
