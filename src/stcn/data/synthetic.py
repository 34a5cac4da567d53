"""Deterministic synthetic videos for video object segmentation, and writers for dataset layouts.

:func:`generate_video` draws a short clip from an integer seed: a smooth, multi-frequency colour
background that pans and slowly changes, and a few textured objects (ellipses, rectangles,
triangles and other polygons, wobbly blobs) that move along smooth paths, rotate, grow and shrink,
pass in front of and behind each other, may leave the frame and come back, and may first appear in
the middle of the clip.  The ground-truth labels give, for every pixel, the id of the top-most
object there (0 for background).  Everything is computed with plain IEEE arithmetic on numpy arrays
(the sines are our own polynomials, no reductions), so a seed gives bit-identical videos on any
machine with the same numpy random streams.

The writers store such videos in the folder layouts of DAVIS (:func:`write_davis`) and YouTube-VOS
(:func:`write_youtube`), or as a plain folder of JPEG frames (:func:`write_frames`).  Every folder
is written into a hidden temporary sibling and renamed into place, so an interrupted write never
leaves a half-written folder behind.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from stcn.errors import DataError
from stcn.io.files import atomic_folder, atomic_write
from stcn.io.masks import save_label_png

__all__ = [
    "SyntheticVideo",
    "generate_video",
    "write_frames",
    "write_davis",
    "write_youtube",
]


# --------------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class SyntheticVideo:
    """A generated clip and its ground truth.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB frames.
        labels: ``(T, H, W)`` uint8; 0 is background, ``k`` the top-most visible object ``k``
            (an unlabelled distractor in front of an object shows as 0).
        object_ids: the labelled ids ``(1, ..., K)``, in order of first appearance.
        first_frame: ``{id: t}``, the first frame in which object ``id`` is visible.  Before it the
            object has no pixels; in it the object has at least the generator's minimum pixel count.
        seed: the seed the clip was drawn from.
        silhouettes: ``(T, K, H, W)`` bool, the full (un-occluded, but clipped to the frame) shape of
            each object, in ``object_ids`` order; only with ``generate_video(...,
            return_silhouettes=True)``, else ``None``.  Before an object's first frame it is empty.
    """

    frames: np.ndarray
    labels: np.ndarray
    object_ids: tuple[int, ...]
    first_frame: dict[int, int]
    seed: int
    silhouettes: np.ndarray | None = field(default=None)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def mask(self, object_id: int) -> np.ndarray:
        """``(T, H, W)`` bool: where object ``object_id`` is visible."""
        if object_id not in self.object_ids:
            raise KeyError(f"no object {object_id}; objects are {self.object_ids}")
        return self.labels == object_id

    def __repr__(self) -> str:
        t, h, w = self.labels.shape
        return (
            f"SyntheticVideo(seed={self.seed}, frames={t}x{h}x{w}, object_ids={self.object_ids}, "
            f"first_frame={self.first_frame})"
        )


# --------------------------------------------------------------------------------------------------
# Deterministic elementary functions (plain +, -, *, floor: the same bits everywhere)
# --------------------------------------------------------------------------------------------------

_TWO_PI = 2.0 * math.pi
_HALF_PI = 0.5 * math.pi
_SIN_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(10))


def _sin(x):
    """sin(x) to ~1e-15 by range reduction and a Taylor polynomial (scalar or float64 array)."""
    x = np.asarray(x, dtype=np.float64)
    r = x - _TWO_PI * np.floor(x / _TWO_PI + 0.5)
    r = np.where(r > _HALF_PI, math.pi - r, r)
    r = np.where(r < -_HALF_PI, -math.pi - r, r)
    r2 = r * r
    acc = np.full_like(r, _SIN_COEFFS[-1])
    for coeff in reversed(_SIN_COEFFS[:-1]):
        acc = acc * r2 + coeff
    return acc * r


def _cos(x):
    return _sin(np.asarray(x, dtype=np.float64) + _HALF_PI)


def _fsin(x: float) -> float:
    """The scalar twin of :func:`_sin` (same operations, in Python floats)."""
    x = float(x)
    r = x - _TWO_PI * math.floor(x / _TWO_PI + 0.5)
    if r > _HALF_PI:
        r = math.pi - r
    elif r < -_HALF_PI:
        r = -math.pi - r
    r2 = r * r
    acc = _SIN_COEFFS[-1]
    for coeff in _SIN_COEFFS[-2::-1]:
        acc = acc * r2 + coeff
    return acc * r


def _wave(x: np.ndarray) -> np.ndarray:
    """A cheap cosine look-alike of period 1 with values in [-1, 1] (smoothstep of a triangle wave)."""
    q = np.abs(x - np.floor(x + np.float32(0.5)))
    q = q * np.float32(2.0)
    s = q * q * (np.float32(3.0) - np.float32(2.0) * q)
    return np.float32(1.0) - np.float32(2.0) * s


def _osc(amps, omegas, phases, t: float) -> float:
    total = 0.0
    for a, w, p in zip(amps, omegas, phases):
        total += a * _fsin(w * t + p)
    return total


# --------------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------------

_SHAPES = ("ellipse", "rectangle", "triangle", "polygon", "blob")
_TEXTURES = ("stripes", "checker", "rings", "plaid")


@dataclass
class _Layer:
    label: int  # 0 for the unlabelled distractor
    appear: int
    # shape, in local (unscaled) pixel units; ``radius`` bounds the shape
    kind: str
    radius: float
    a: float = 0.0
    b: float = 0.0
    vertices: np.ndarray | None = None
    blob: np.ndarray | None = None  # (3, 2): cos/sin coefficients for harmonics 2, 3, 4
    # motion
    cx0: float = 0.0
    cy0: float = 0.0
    ax: tuple = ()
    ay: tuple = ()
    wx: tuple = ()
    wy: tuple = ()
    px: tuple = ()
    py: tuple = ()
    theta0: float = 0.0
    spin: float = 0.0
    wobble: tuple = (0.0, 0.0, 0.0)  # amplitude, omega, phase
    scale: tuple = (0.0, 0.0, 0.0)
    depth0: float = 0.0
    depth: tuple = (0.0, 0.0, 0.0)
    exit: tuple | None = None  # (start, duration, dx, dy)
    enter: tuple | None = None  # (start, duration, dx, dy): off-frame by (dx, dy) until start, in place after
    # appearance
    texture: str = "stripes"
    colour1: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    colour2: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    freq: float = 2.0
    freq2: float = 2.0
    tex_angle: tuple = (1.0, 0.0)
    tex_phase: tuple = (0.0, 0.0)
    shade: tuple = (0.0, 0.0)

    def state(self, t: int) -> tuple[float, float, float, float, float]:
        """Centre x, centre y, rotation, scale and depth at frame ``t``."""
        cx = self.cx0 + _osc(self.ax, self.wx, self.px, t)
        cy = self.cy0 + _osc(self.ay, self.wy, self.py, t)
        if self.exit is not None:
            start, duration, dx, dy = self.exit
            tau = (t - start) / duration
            if 0.0 < tau < 1.0:
                h = 0.5 - 0.5 * _fsin(_TWO_PI * tau + _HALF_PI)
                p = min(1.0, 1.5 * h)
                cx += p * dx
                cy += p * dy
        if self.enter is not None:
            start, duration, dx, dy = self.enter
            tau = (t - start) / duration
            p = 1.0 if tau <= 0.0 else 0.0 if tau >= 1.0 else 0.5 + 0.5 * _fsin(math.pi * tau + _HALF_PI)
            cx += p * dx
            cy += p * dy
        amp, omega, phase = self.wobble
        theta = self.theta0 + self.spin * t + amp * _fsin(omega * t + phase)
        amp, omega, phase = self.scale
        scale = 1.0 + amp * _fsin(omega * t + phase)
        amp, omega, phase = self.depth
        depth = self.depth0 + amp * _fsin(omega * t + phase)
        return cx, cy, theta, scale, depth

    def max_scale(self) -> float:
        return 1.0 + abs(self.scale[0])


@dataclass
class _Background:
    base: np.ndarray  # (3,) float32
    kx: np.ndarray  # (N,) cycles per pixel
    ky: np.ndarray
    phase: np.ndarray
    drift: np.ndarray  # phase change per frame
    colour: np.ndarray  # (N, 3) float32 amplitude per channel
    pan_v: tuple  # px per frame (x, y)
    pan_osc: tuple  # (ax, ay, omega, phase)

    def render(self, t: int, height: int, width: int) -> np.ndarray:
        """The background at frame ``t`` as a channel-first ``(3, H, W)`` float32 array."""
        ax, ay, omega, phase = self.pan_osc
        wob = _fsin(omega * t + phase)
        ox = self.pan_v[0] * t + ax * wob
        oy = self.pan_v[1] * t + ay * wob
        xs = np.arange(width, dtype=np.float64) + ox
        ys = np.arange(height, dtype=np.float64) + oy
        out = np.empty((3, height, width), dtype=np.float32)
        for c in range(3):
            out[c] = self.base[c]
        wave = np.empty((height, width), dtype=np.float32)
        tmp = np.empty((height, width), dtype=np.float32)
        n = len(self.kx)
        ang_x = (_TWO_PI * self.kx)[:, None] * xs[None, :]  # (n, W)
        ang_y = (_TWO_PI * self.ky)[:, None] * ys[None, :] + (self.phase + self.drift * t)[:, None]
        angles = np.concatenate([ang_x.ravel(), ang_y.ravel()])
        sines = _sin(np.concatenate([angles, angles + _HALF_PI])).astype(np.float32)
        sx, sy, cx, cy = np.split(sines, np.cumsum([n * width, n * height, n * width]))
        sx, cx = sx.reshape(n, width), cx.reshape(n, width)
        sy, cy = sy.reshape(n, height), cy.reshape(n, height)
        for i in range(n):
            # cos(a + b) = cos a cos b - sin a sin b, as outer products
            np.multiply(cy[i][:, None], cx[i][None, :], out=wave)
            np.multiply(sy[i][:, None], sx[i][None, :], out=tmp)
            wave -= tmp
            for c in range(3):
                np.multiply(wave, self.colour[i, c], out=tmp)
                out[c] += tmp
        return out


@dataclass
class _Scene:
    height: int
    width: int
    num_frames: int
    layers: list[_Layer]  # labelled objects first (label order), then distractors
    background: _Background
    exiters: list[int]  # labels of objects that leave the frame completely


def _random_colour(rng: np.random.Generator, hue: float, sat: tuple, val: tuple) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return np.array([r * 255.0, g * 255.0, b * 255.0], dtype=np.float32)


def _sample_shape(layer: _Layer, rng: np.random.Generator, radius: float) -> None:
    layer.radius = radius
    kind = layer.kind
    if kind == "ellipse":
        layer.a = radius * rng.uniform(0.7, 1.0)
        layer.b = radius * rng.uniform(0.45, 0.9)
    elif kind == "rectangle":
        angle = rng.uniform(0.45, 1.1)  # aspect via the diagonal's angle
        layer.a = radius * _fsin(angle + _HALF_PI) * 0.98
        layer.b = radius * _fsin(angle) * 0.98
    elif kind in ("triangle", "polygon"):
        n = 3 if kind == "triangle" else int(rng.integers(4, 8))
        step = _TWO_PI / n
        start = rng.uniform(0.0, _TWO_PI)
        angles = start + step * np.arange(n) + rng.uniform(-0.25, 0.25, size=n) * step
        low = 0.8 if kind == "triangle" else 0.55
        radii = radius * rng.uniform(low, 1.0, size=n)
        verts = np.stack([radii * _cos(angles), radii * _sin(angles)], axis=1)
        layer.vertices = verts.astype(np.float32)
    elif kind == "blob":
        coeffs = rng.uniform(-1.0, 1.0, size=(3, 2))
        coeffs *= 0.3 / max(1e-6, float(np.abs(coeffs).sum()))
        layer.blob = coeffs.astype(np.float32)
        layer.a = radius / 1.3  # base radius: the harmonics add at most 30 %
    else:  # pragma: no cover - internal
        raise AssertionError(kind)


def _sample_texture(layer: _Layer, rng: np.random.Generator, hue: float) -> None:
    layer.texture = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    layer.colour1 = _random_colour(rng, hue, (0.65, 1.0), (0.7, 1.0))
    layer.colour2 = _random_colour(rng, hue + rng.choice([-1, 1]) * rng.uniform(0.06, 0.18),
                                   (0.55, 1.0), (0.3, 0.6))
    layer.freq = float(rng.uniform(1.2, 3.0))
    layer.freq2 = float(rng.uniform(1.2, 3.0))
    angle = rng.uniform(0.0, _TWO_PI)
    layer.tex_angle = (_fsin(angle + _HALF_PI), _fsin(angle))
    layer.tex_phase = (float(rng.uniform()), float(rng.uniform()))
    gangle = rng.uniform(0.0, _TWO_PI)
    g = rng.uniform(0.05, 0.2)
    layer.shade = (g * _fsin(gangle + _HALF_PI), g * _fsin(gangle))


def _sample_motion(layer: _Layer, rng: np.random.Generator, height: int, width: int,
                   speed: float) -> None:
    def axis(size: int) -> tuple[float, tuple, tuple, tuple]:
        c0 = rng.uniform(0.25, 0.75) * size
        amps = np.array([rng.uniform(0.05, 0.22), rng.uniform(0.0, 0.06)]) * size
        room = min(c0 - 0.1 * size, 0.9 * size - c0)
        if amps.sum() > room:
            amps *= room / amps.sum()
        periods = np.array([rng.uniform(30.0, 90.0), rng.uniform(12.0, 30.0)])
        omegas = _TWO_PI * speed / periods
        phases = rng.uniform(0.0, _TWO_PI, size=2)
        return float(c0), tuple(map(float, amps)), tuple(map(float, omegas)), tuple(map(float, phases))

    layer.cx0, layer.ax, layer.wx, layer.px = axis(width)
    layer.cy0, layer.ay, layer.wy, layer.py = axis(height)
    layer.theta0 = float(rng.uniform(0.0, _TWO_PI))
    layer.spin = float(rng.uniform(-0.05, 0.05) * speed)
    layer.wobble = (float(rng.uniform(0.0, 0.3)), float(_TWO_PI * speed / rng.uniform(15.0, 50.0)),
                    float(rng.uniform(0.0, _TWO_PI)))
    layer.scale = (float(rng.uniform(0.05, 0.2)), float(_TWO_PI * speed / rng.uniform(25.0, 70.0)),
                   float(rng.uniform(0.0, _TWO_PI)))


def _sample_exit(layer: _Layer, rng: np.random.Generator, height: int, width: int,
                 num_frames: int) -> bool:
    """Give ``layer`` an excursion out of the frame and back; False if the clip is too short."""
    longest = num_frames - layer.appear - 3
    if longest < 8:
        return False
    duration = int(rng.integers(8, min(longest, max(8, min(num_frames // 2, 24))) + 1))
    start = int(rng.integers(layer.appear + 1, num_frames - duration - 2 + 1))
    layer.exit = (float(start), float(duration), *nearest_edge_offset(layer, height, width))
    return True


def nearest_edge_offset(layer: _Layer, height: int, width: int) -> tuple[float, float]:
    """(dx, dy): the shift that takes ``layer`` (its reach and oscillation included) just past the nearest
    frame edge -- where an exit goes to, and where an entry comes from."""
    reach = layer.radius * layer.max_scale() + 3.0
    sx, sy = sum(layer.ax), sum(layer.ay)
    options = [
        (width + reach - (layer.cx0 - sx), 1.0, 0.0),  # past the right edge
        (layer.cx0 + sx + reach, -1.0, 0.0),  # the left
        (height + reach - (layer.cy0 - sy), 0.0, 1.0),  # the bottom
        (layer.cy0 + sy + reach, 0.0, -1.0),  # the top
    ]
    distance, ux, uy = min(options, key=lambda o: o[0])
    return distance * ux, distance * uy


def _sample_background(rng: np.random.Generator, height: int, width: int, speed: float) -> _Background:
    size = float(min(height, width))
    grey = rng.uniform(95.0, 160.0)
    base = (grey + rng.uniform(-18.0, 18.0, size=3)).astype(np.float32)
    wavelengths = size * np.array([1.6, 0.9, 0.55, 0.33, 0.2, 0.12]) * rng.uniform(0.8, 1.25, size=6)
    angles = rng.uniform(0.0, _TWO_PI, size=6)
    kx = _cos(angles) / wavelengths
    ky = _sin(angles) / wavelengths
    amplitude = np.array([30.0, 24.0, 17.0, 12.0, 8.0, 6.0])
    tint = rng.uniform(0.35, 1.0, size=(6, 3))
    colour = (amplitude[:, None] * tint).astype(np.float32)
    pan_v = (float(rng.uniform(-1.5, 1.5) * speed), float(rng.uniform(-0.6, 0.6) * speed))
    pan_osc = (float(rng.uniform(0.0, 6.0)), float(rng.uniform(0.0, 3.0)),
               float(_TWO_PI * speed / rng.uniform(30.0, 80.0)), float(rng.uniform(0.0, _TWO_PI)))
    return _Background(
        base=base, kx=kx, ky=ky, phase=rng.uniform(0.0, _TWO_PI, size=6),
        drift=rng.uniform(-0.04, 0.04, size=6) * speed, colour=colour, pan_v=pan_v, pan_osc=pan_osc,
    )


# --------------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------------


def _rasterise(layer: _Layer, state, height: int, width: int):
    """The layer's pixels at one frame: ``(y0, y1, x0, x1, mask, u, v)`` or None when off-frame.

    ``mask`` is the shape inside the clipped bounding box; ``u, v`` are the box's pixels in the
    object's local, unscaled coordinates (for the texture).
    """
    cx, cy, theta, scale, _ = state
    reach = layer.radius * scale + 1.0
    x0, x1 = max(0, math.floor(cx - reach)), min(width, math.ceil(cx + reach) + 1)
    y0, y1 = max(0, math.floor(cy - reach)), min(height, math.ceil(cy + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    c = _fsin(theta + _HALF_PI) / scale
    s = _fsin(theta) / scale
    dx = (np.arange(x0, x1, dtype=np.float64) - cx).astype(np.float32)
    dy = (np.arange(y0, y1, dtype=np.float64) - cy).astype(np.float32)
    # inverse rotation and scaling: (u, v) = R(-theta) (x - c) / scale
    u = (dx * np.float32(c))[None, :] + (dy * np.float32(s))[:, None]
    v = (dy * np.float32(c))[:, None] - (dx * np.float32(s))[None, :]
    kind = layer.kind
    if kind == "ellipse":
        eu = u * np.float32(1.0 / layer.a)
        ev = v * np.float32(1.0 / layer.b)
        mask = eu * eu + ev * ev <= np.float32(1.0)
    elif kind == "rectangle":
        mask = (np.abs(u) <= np.float32(layer.a)) & (np.abs(v) <= np.float32(layer.b))
    elif kind in ("triangle", "polygon"):
        # star-shaped polygon: inside if, in the angular sector of some edge, on the inner side of it
        verts = layer.vertices
        mask = np.zeros(u.shape, dtype=bool)
        n = len(verts)
        for i in range(n):
            px, py = verts[i]
            qx, qy = verts[(i + 1) % n]
            in_sector = (px * v - py * u >= 0) & (u * qy - v * qx >= 0)
            inner = (qx - px) * (v - py) - (qy - py) * (u - px) >= 0
            mask |= in_sector & inner
    elif kind == "blob":
        rho2 = u * u + v * v
        rho = np.sqrt(rho2)
        safe = np.where(rho > 0, rho, np.float32(1.0))
        c1 = np.where(rho > 0, u / safe, np.float32(1.0))
        s1 = v / safe
        cn, sn = c1 * c1 - s1 * s1, np.float32(2.0) * s1 * c1  # harmonic 2
        radius = np.float32(1.0)
        for k in range(3):
            radius = radius + np.float32(layer.blob[k, 0]) * cn + np.float32(layer.blob[k, 1]) * sn
            cn, sn = cn * c1 - sn * s1, sn * c1 + cn * s1
        mask = rho <= radius * np.float32(layer.a)
    else:  # pragma: no cover - internal
        raise AssertionError(kind)
    return y0, y1, x0, x1, mask, u, v


def _texture(layer: _Layer, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(N, 3)`` float32 colours for local coordinates ``u, v`` (1-D, the masked pixels)."""
    inv = np.float32(1.0 / layer.radius)
    un, vn = u * inv, v * inv
    f, f2 = np.float32(layer.freq), np.float32(layer.freq2)
    p1, p2 = np.float32(layer.tex_phase[0]), np.float32(layer.tex_phase[1])
    ca, sa = np.float32(layer.tex_angle[0]), np.float32(layer.tex_angle[1])
    half = np.float32(0.5)
    kind = layer.texture
    if kind == "stripes":
        pattern = half + half * _wave(f * (un * ca + vn * sa) + p1)
    elif kind == "checker":
        ru, rv = un * ca + vn * sa, vn * ca - un * sa
        pattern = half + half * _wave(f * ru + p1) * _wave(f * rv + p2)
    elif kind == "rings":
        pattern = half + half * _wave(f * np.sqrt(un * un + vn * vn) + p1)
    else:  # plaid
        pattern = np.float32(0.25) * (np.float32(2.0) + _wave(f * un + p1) + _wave(f2 * vn + p2))
    # a finer second scale so the texture is not a pure sinusoid
    detail = _wave(np.float32(3.1) * f2 * (vn * ca - un * sa) + p2)
    pattern = np.float32(0.85) * pattern + np.float32(0.075) * (np.float32(1.0) + detail)
    shade = np.float32(1.0) + np.float32(layer.shade[0]) * un + np.float32(layer.shade[1]) * vn
    c1 = layer.colour1
    diff = layer.colour2 - layer.colour1
    colours = c1[None, :] + pattern[:, None] * diff[None, :]
    colours *= shade[:, None]
    return colours


def _draw_order(scene: _Scene, t: int, states: list) -> list[int]:
    present = [i for i, layer in enumerate(scene.layers) if layer.appear <= t]
    return sorted(present, key=lambda i: (states[i][4], i))  # back to front


def _render_labels(scene: _Scene, t: int) -> np.ndarray:
    labels = np.zeros((scene.height, scene.width), dtype=np.uint8)
    states = [layer.state(t) for layer in scene.layers]
    for i in _draw_order(scene, t, states):
        layer = scene.layers[i]
        drawn = _rasterise(layer, states[i], scene.height, scene.width)
        if drawn is None:
            continue
        y0, y1, x0, x1, mask, _, _ = drawn
        labels[y0:y1, x0:x1][mask] = layer.label
    return labels


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def _appearance_frames(rng: np.random.Generator, count: int, num_frames: int,
                       multiple: int | None) -> list[int]:
    candidates = [t for t in range(1, num_frames) if multiple is None or t % multiple == 0]
    if count and not candidates:
        raise ValueError(
            f"no frame after frame 0 for late objects to appear in: num_frames={num_frames}, "
            f"appear_on_multiple_of={multiple}"
        )
    lo, hi = max(1, math.ceil(num_frames / 8)), max(1, (3 * num_frames) // 4)
    preferred = [t for t in candidates if lo <= t <= hi] or candidates
    return sorted(int(preferred[int(rng.integers(len(preferred)))]) for _ in range(count))


def _sample_scene(rng: np.random.Generator, appearance: np.random.Generator, *, num_frames: int,
                  height: int, width: int, num_objects: int, late_objects: int, allow_exit: bool,
                  distractor: bool, speed: float, multiple: int | None) -> _Scene:
    size = float(min(height, width))
    crowd = min(1.0, math.sqrt(3.0 / num_objects))
    appear = [0] * (num_objects - late_objects)
    appear += _appearance_frames(rng, late_objects, num_frames, multiple)
    hue0 = float(appearance.uniform())
    layers: list[_Layer] = []
    for k in range(num_objects):
        kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
        layer = _Layer(label=k + 1, appear=appear[k], kind=kind, radius=0.0)
        _sample_shape(layer, rng, rng.uniform(0.14, 0.24) * size * crowd)
        _sample_motion(layer, rng, height, width, speed)
        hue = hue0 + (k + appearance.uniform(-0.25, 0.25)) / num_objects
        _sample_texture(layer, appearance, hue)
        layers.append(layer)
    # depth: a random stacking order, with oscillations large enough to swap neighbours
    order = rng.permutation(num_objects + (1 if distractor else 0))
    if distractor:
        kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
        layer = _Layer(label=0, appear=0, kind=kind, radius=0.0)
        _sample_shape(layer, rng, rng.uniform(0.08, 0.14) * size * crowd)
        _sample_motion(layer, rng, height, width, speed)
        like = layers[int(appearance.integers(num_objects))]
        hue = colorsys.rgb_to_hsv(*(like.colour1 / 255.0))[0] + appearance.uniform(-0.05, 0.05)
        _sample_texture(layer, appearance, hue)
        layers.append(layer)
    for layer, rank in zip(layers, order):
        layer.depth0 = float(rank + rng.uniform(-0.3, 0.3))
        layer.depth = (float(rng.uniform(0.5, 1.5)), float(_TWO_PI * speed / rng.uniform(20.0, 60.0)),
                       float(rng.uniform(0.0, _TWO_PI)))
    exiters: list[int] = []
    if allow_exit:
        labelled = layers[:num_objects]
        chosen = int(rng.integers(num_objects))
        for offset in range(num_objects):  # the chosen object, or the next one that has time to
            layer = labelled[(chosen + offset) % num_objects]
            if _sample_exit(layer, rng, height, width, num_frames):
                exiters.append(layer.label)
                break
        for layer in labelled:
            if layer.label not in exiters and rng.uniform() < 0.3:
                if _sample_exit(layer, rng, height, width, num_frames):
                    exiters.append(layer.label)
    background = _sample_background(appearance, height, width, speed)
    return _Scene(height=height, width=width, num_frames=num_frames, layers=layers,
                  background=background, exiters=exiters)


def _scene_is_valid(scene: _Scene, min_pixels: int) -> bool:
    cache: dict[int, np.ndarray] = {}

    def labels_at(t: int) -> np.ndarray:
        if t not in cache:
            cache[t] = _render_labels(scene, t)
        return cache[t]

    for layer in scene.layers:
        if layer.label == 0:
            continue
        if np.count_nonzero(labels_at(layer.appear) == layer.label) < min_pixels:
            return False
        if layer.label in scene.exiters:
            start, duration, _, _ = layer.exit
            back = int(start + duration)
            if not any(np.count_nonzero(labels_at(t) == layer.label) >= min_pixels
                       for t in range(back, scene.num_frames)):
                return False
    return True


def generate_video(
    seed: int,
    *,
    num_frames: int = 24,
    height: int = 240,
    width: int = 432,
    num_objects: int = 3,
    late_objects: int = 0,
    allow_exit: bool = False,
    distractor: bool = False,
    appear_on_multiple_of: int | None = None,
    noise_std: float = 2.0,
    speed: float = 1.0,
    min_visible_fraction: float = 0.002,
    return_silhouettes: bool = False,
) -> SyntheticVideo:
    """Draw a synthetic video-object-segmentation clip, fully determined by ``seed``.

    Args:
        seed: any non-negative integer; the same seed and keywords give bit-identical output.
        num_frames: ``T``, the number of frames (>= 1).
        height, width: ``H, W`` of every frame in pixels (>= 16 each).
        num_objects: ``K`` >= 1 labelled objects, with ids ``1..K`` numbered in order of first
            appearance.  Sizes shrink as ``sqrt(3 / K)`` beyond three objects.
        late_objects: how many of the ``K`` objects first appear after frame 0 (0 <= late < K); the
            rest are visible in frame 0.  A late object pops into view at a frame between about
            ``T/8`` and ``3T/4``.
        allow_exit: when True (and ``T`` leaves room, roughly ``T >= 11`` frames after an object's
            first frame), at least one object leaves the frame completely for a few frames (0 labelled
            pixels) and comes back fully in view; others may do so too.
        distractor: add one unlabelled textured shape, coloured like one of the objects, that takes
            part in the depth order (where it is in front of an object the label is 0).
        appear_on_multiple_of: if given, late objects first appear only on frames that are multiples
            of it (use the YouTube-VOS ``every`` so that first annotations land on kept frames).
        noise_std: standard deviation of the Gaussian pixel noise, in 0..255 units (0 for none).
        speed: multiplies all motion (translation, rotation, scaling, pan, depth swaps), except the
            excursions out of the frame of ``allow_exit``; 0 gives still objects and background.
        min_visible_fraction: each object shows at least ``ceil(fraction * H * W)`` pixels (and at
            least 1) in its first frame; the scene is redrawn from the seed's stream until it does.
        return_silhouettes: also return ``silhouettes``, ``(T, K, H, W)`` bool full object shapes.

    Returns:
        A :class:`SyntheticVideo` with ``frames (T, H, W, 3) uint8`` and ``labels (T, H, W) uint8``.

    The background is a sum of six drifting plane waves of different frequencies and tints, panned
    along a smooth path; objects carry their own two-colour texture (stripes, checks, rings or
    plaid, shaded) in their own coordinates, so it moves, turns and scales with them.
    """
    for name, value in (("seed", seed), ("num_frames", num_frames), ("height", height),
                        ("width", width), ("num_objects", num_objects),
                        ("late_objects", late_objects)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if height < 16 or width < 16:
        raise ValueError(f"height and width must be >= 16, got {height}x{width}")
    if num_objects < 1 or num_objects > 255:
        raise ValueError(f"num_objects must be in 1..255, got {num_objects}")
    if not 0 <= late_objects < num_objects:
        raise ValueError(f"late_objects must be in 0..num_objects-1 = {num_objects - 1}, got {late_objects}")
    if late_objects and num_frames < 2:
        raise ValueError("late objects need num_frames >= 2")
    if appear_on_multiple_of is not None and appear_on_multiple_of < 1:
        raise ValueError(f"appear_on_multiple_of must be >= 1, got {appear_on_multiple_of}")
    if noise_std < 0 or speed < 0 or not 0 <= min_visible_fraction < 0.5:
        raise ValueError("noise_std and speed must be >= 0 and min_visible_fraction in [0, 0.5)")
    seed, num_frames, height, width = int(seed), int(num_frames), int(height), int(width)
    num_objects, late_objects = int(num_objects), int(late_objects)

    geometry_ss, appearance_ss, noise_ss = np.random.SeedSequence(seed).spawn(3)
    geometry = np.random.Generator(np.random.PCG64(geometry_ss))
    appearance = np.random.Generator(np.random.PCG64(appearance_ss))
    noise = np.random.Generator(np.random.PCG64(noise_ss))
    min_pixels = max(1, math.ceil(min_visible_fraction * height * width))

    appearance_state = appearance.bit_generator.state
    for _ in range(200):
        appearance.bit_generator.state = appearance_state  # same look for every geometry attempt
        scene = _sample_scene(
            geometry, appearance, num_frames=num_frames, height=height, width=width,
            num_objects=num_objects, late_objects=late_objects, allow_exit=allow_exit,
            distractor=distractor, speed=max(speed, 0.0), multiple=appear_on_multiple_of,
        )
        if _scene_is_valid(scene, min_pixels):
            break
    else:
        raise RuntimeError(
            f"could not place {num_objects} objects visibly in a {height}x{width} frame "
            f"(seed {seed}); use fewer objects, a larger frame or a smaller min_visible_fraction"
        )

    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    labels = np.zeros((num_frames, height, width), dtype=np.uint8)
    silhouettes = (np.zeros((num_frames, num_objects, height, width), dtype=bool)
                   if return_silhouettes else None)
    buffer = np.empty((3, height, width), dtype=np.float32)
    for t in range(num_frames):
        image = scene.background.render(t, height, width)  # (3, H, W)
        states = [layer.state(t) for layer in scene.layers]
        for i in _draw_order(scene, t, states):
            layer = scene.layers[i]
            drawn = _rasterise(layer, states[i], height, width)
            if drawn is None:
                continue
            y0, y1, x0, x1, mask, u, v = drawn
            colours = _texture(layer, u[mask], v[mask])
            for c in range(3):
                image[c, y0:y1, x0:x1][mask] = colours[:, c]
            labels[t, y0:y1, x0:x1][mask] = layer.label
            if silhouettes is not None and layer.label:
                silhouettes[t, layer.label - 1, y0:y1, x0:x1] = mask
        if noise_std > 0:
            noise.standard_normal(dtype=np.float32, out=buffer)
            buffer *= np.float32(noise_std)
            image += buffer
        image += np.float32(0.5)
        np.clip(image, 0.0, 255.0, out=image)
        frames[t] = image.transpose(1, 2, 0)  # float -> uint8 truncates: rounds half up after + 0.5

    object_ids = tuple(range(1, num_objects + 1))
    first_frame = {layer.label: layer.appear for layer in scene.layers if layer.label}
    return SyntheticVideo(frames=frames, labels=labels, object_ids=object_ids,
                          first_frame=first_frame, seed=seed, silhouettes=silhouettes)


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or name.startswith("."):
        raise ValueError(f"invalid sequence name {name!r}: use a plain folder name")
    return name


def _save_jpeg(path: Path, frame: np.ndarray, quality: int) -> None:
    Image.fromarray(np.ascontiguousarray(frame)).save(path, format="JPEG", quality=quality)


def write_frames(folder: str | os.PathLike, video: SyntheticVideo, *, step: int = 1,
                 quality: int = 95) -> Path:
    """Write ``video``'s frames ``0, step, 2*step, ...`` as ``folder/NNNNN.jpg`` (named by frame index).

    The folder is replaced as a whole (written aside, then renamed into place).  Returns it.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        for t in range(0, video.num_frames, step):
            _save_jpeg(tmp / f"{t:05d}.jpg", video.frames[t], quality)
    return folder


def _merge_names(path: Path, names: list[str]) -> None:
    existing: list[str] = []
    if path.exists():
        existing = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    merged = existing + [name for name in names if name not in existing]
    atomic_write(path, "".join(f"{name}\n" for name in merged))


def write_davis(root: str | os.PathLike, videos: Mapping[str, SyntheticVideo], *, year: str = "2017",
                split: str = "val", all_annotations: bool = True) -> Path:
    """Store ``videos`` (name -> video) in the DAVIS layout under ``root`` and return ``root``.

    Writes, for each sequence ``seq``::

        root/JPEGImages/480p/<seq>/00000.jpg ...   every frame, JPEG quality 95
        root/Annotations/480p/<seq>/00000.png ...  palette PNG (DAVIS palette), pixel = object id
        root/ImageSets/<year>/<split>.txt          one sequence name per line, merged with the
                                                   names already there

    With ``all_annotations=False`` only frame 0's annotation is written (like a DAVIS test set).
    DAVIS expects every object in frame 0, so generate with ``late_objects=0``.  Each sequence
    folder is replaced atomically; the frames keep the video's own size (no resizing to 480p).
    """
    root = Path(root)
    names = [_check_name(name) for name in videos]
    for name in names:
        video = videos[name]
        write_frames(root / "JPEGImages" / "480p" / name, video)
        with atomic_folder(root / "Annotations" / "480p" / name) as tmp:
            count = video.num_frames if all_annotations else 1
            for t in range(count):
                save_label_png(tmp / f"{t:05d}.png", video.labels[t])
    _merge_names(root / "ImageSets" / str(year) / f"{split}.txt", names)
    return root


def write_youtube(root: str | os.PathLike, videos: Mapping[str, SyntheticVideo], *,
                  split: str = "valid", every: int = 5) -> Path:
    """Store ``videos`` (name -> video) in the YouTube-VOS layout under ``root`` and return ``root``.

    Writes, for each video ``vid``::

        root/<split>/JPEGImages/<vid>/00000.jpg, 00005.jpg ...   every ``every``-th frame
        root/all_frames/<split>_all_frames/JPEGImages/<vid>/      all frames
        root/<split>/Annotations/<vid>/NNNNN.png                   for each frame where objects
            first appear, a palette PNG holding only those objects' masks (ids as in the video)
        root/<split>/meta.json   {"videos": {vid: {"objects": {"<id>": {"category": "synthetic",
            "frames": ["00000", "00005", ...]}}}}}: the kept frames from the object's first on;
            merged with the videos already listed there

    Every object must first appear on a kept frame (a multiple of ``every``): generate with
    ``appear_on_multiple_of=every``; otherwise ValueError.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    root = Path(root)
    names = [_check_name(name) for name in videos]
    for name in names:
        video = videos[name]
        off_grid = {k: t for k, t in video.first_frame.items() if t % every}
        if off_grid:
            raise ValueError(
                f"video {name!r}: objects {off_grid} first appear on frames that are not multiples of "
                f"every={every}; generate it with appear_on_multiple_of={every}"
            )
    meta_path = root / split / "meta.json"
    meta: dict = {"videos": {}}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta_path}: existing meta.json is not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or not isinstance(meta.setdefault("videos", {}), dict):
            raise DataError(f"{meta_path}: existing meta.json does not hold a 'videos' object")
    for name in names:
        video = videos[name]
        write_frames(root / split / "JPEGImages" / name, video, step=every)
        write_frames(root / "all_frames" / f"{split}_all_frames" / "JPEGImages" / name, video)
        starts = sorted(set(video.first_frame.values()))
        with atomic_folder(root / split / "Annotations" / name) as tmp:
            for t in starts:
                ids = [k for k, first in video.first_frame.items() if first == t]
                frame_labels = video.labels[t]
                keep = np.isin(frame_labels, np.array(ids, dtype=np.uint8))
                save_label_png(tmp / f"{t:05d}.png", np.where(keep, frame_labels, 0).astype(np.uint8))
        meta["videos"][name] = {
            "objects": {
                str(k): {
                    "category": "synthetic",
                    "frames": [f"{t:05d}" for t in range(video.first_frame[k], video.num_frames, every)],
                }
                for k in video.object_ids
            }
        }
    atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return root
