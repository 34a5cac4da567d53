"""Synthetic video with real appearance: real photographs as backgrounds and textures, real masked objects.

:func:`generate_real_video` uses the motion model of :mod:`stcn.data.synthetic` (smooth paths, turns,
growth, depth swaps, exits and returns, an unlabelled distractor) but draws what moves from real
images (:class:`RealMaterial`, built from a static set such as ``stcn data teacher-masks`` writes):

* the background is a photograph seen through a camera that pans and zooms slowly, colour-jittered;
* an object is either a real cutout (a photo's object mask and its pixels: people, animals, fruit,
  things), scaled, slightly turned and mirrored, or a synthetic shape textured with a crop of another
  photo, so that neither the outline nor the texture alone tells an object from the background;
* the distractor is drawn the same way from the material, so it looks like an object but is labelled 0;
* with ``lookalike=True`` every object and the distractor are the same cutout (each with its own size,
  tilt, mirror and colour jitter), as in a crowd of pedestrians: only where each one came from tells
  them apart, which is what a memory read has to learn beyond "a person";
* with ``entering=True`` the distractor walks in from the nearest frame edge after frame 0 and then moves
  beside one of the objects, as a passer-by joins a tracked pedestrian: it was never in the memory, so
  it must stay background however much it looks like its neighbour;
* with ``small=True`` every object and the distractor are drawn at 0.2-0.45 of their usual size (a few
  hundred pixels, like pedestrians seen from a surveillance camera: a few feature cells at stride 16),
  and the distractor is always there;
* with ``occluders=True`` one or two static things stand in front of everything -- a pole, a pole with a
  sign, or a railing, textured from a photo and fixed to the background (they pan and zoom with it) --
  placed across an object's path, so that the object walks behind it and comes out again, as a
  pedestrian passes a lamp post: the occluded pixels are background in the labels.

A seed and the material give the same video on every run (OpenCV's warps are deterministic); the
result is a :class:`~stcn.data.synthetic.SyntheticVideo`, so every consumer of synthetic video (the
training clips, validation, the dataset writers) takes it as it is.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stcn.data.synthetic import (
    SyntheticVideo,
    _draw_order,
    _Layer,
    _rasterise,
    _sample_exit,
    _sample_motion,
    _sample_shape,
    nearest_edge_offset,
)

__all__ = ["Cutout", "RealMaterial", "generate_real_video"]

_SHAPES = ("ellipse", "rectangle", "triangle", "polygon", "blob")
_MAX_PHOTO_SIDE = 720  # photos are kept at most this large (backgrounds are zoomed in anyway)
_MIN_CUTOUT_PIXELS = 400


@dataclass(frozen=True, eq=False)
class Cutout:
    """A real object: ``rgb (h, w, 3) uint8`` and ``mask (h, w) bool``, cropped to the mask's box."""

    rgb: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class RealMaterial:
    """What real videos are made of: ``photos`` (RGB uint8, any size) and object ``cutouts``."""

    photos: tuple[np.ndarray, ...]
    cutouts: tuple[Cutout, ...]

    def __post_init__(self) -> None:
        if not self.photos or not self.cutouts:
            raise ValueError("RealMaterial needs at least one photo and one cutout")

    @classmethod
    def from_static_root(cls, root: str | os.PathLike) -> RealMaterial:
        """Every image of a static set under ``root`` becomes a photo, its mask's largest component a cutout."""
        from stcn.data.static import find_static_sets, load_binary_mask
        from stcn.io.frames import read_rgb

        photos, cutouts = [], []
        seen: set[bytes] = set()
        for image_set in find_static_sets(Path(root)):
            for image_path, mask_path in image_set.pairs:
                rgb, mask = read_rgb(image_path), load_binary_mask(mask_path) > 127
                if rgb.shape[:2] != mask.shape:
                    continue
                rgb, mask = _limit_size(rgb, mask)
                key = rgb[::37, ::37].tobytes()
                if key not in seen:  # instance sets repeat one photo per object
                    seen.add(key)
                    photos.append(rgb)
                cutout = _cutout(rgb, mask)
                if cutout is not None:
                    cutouts.append(cutout)
        return cls(tuple(photos), tuple(cutouts))


def _limit_size(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = _MAX_PHOTO_SIDE / max(rgb.shape[:2])
    if scale >= 1:
        return rgb, mask
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return rgb, mask


def _cutout(rgb: np.ndarray, mask: np.ndarray) -> Cutout | None:
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[k, cv2.CC_STAT_AREA] < _MIN_CUTOUT_PIXELS:
        return None
    x, y, w, h = (int(v) for v in stats[k, :4])
    return Cutout(np.ascontiguousarray(rgb[y:y + h, x:x + w]), components[y:y + h, x:x + w] == k)


# --------------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------------


@dataclass
class _Look:
    """How one layer is drawn: a cutout, or a shape filled with a photo's texture."""

    cutout: Cutout | None = None
    flip: bool = False
    tilt: float = 0.0  # real objects turn less than shapes: rotation = tilt + turn * (theta - theta0)
    turn: float = 0.25
    texture: np.ndarray | None = None  # a photo
    tex_origin: tuple[float, float] = (0.0, 0.0)  # photo pixel under the shape's centre
    tex_scale: float = 1.0  # photo pixels per local unit
    gain: np.ndarray | None = None  # (3,) colour gain
    offset: float = 0.0


@dataclass
class _Camera:
    photo: np.ndarray
    centre: tuple[float, float]  # photo pixel at the frame centre at t = 0
    zoom: float  # frame pixels per photo pixel at t = 0
    pan: tuple[float, float]  # photo pixels per frame
    zoom_rate: float  # relative zoom change per frame (oscillating)
    zoom_omega: float
    gain: np.ndarray
    offset: float

    def view(self, t: int) -> tuple[float, float, float]:
        """``(zoom, cx, cy)`` at frame ``t``: frame (x, y) shows photo (cx + (x - W/2) / zoom, ...)."""
        zoom = self.zoom * (1.0 + self.zoom_rate * math.sin(self.zoom_omega * t))
        return zoom, self.centre[0] + self.pan[0] * t, self.centre[1] + self.pan[1] * t

    def render(self, t: int, height: int, width: int, photo: np.ndarray | None = None) -> np.ndarray:
        """The background at frame ``t`` (or ``photo`` seen through the same camera): ``(H, W, 3)`` float32."""
        zoom, cx, cy = self.view(t)
        matrix = np.array([[1 / zoom, 0, cx - width / 2 / zoom], [0, 1 / zoom, cy - height / 2 / zoom]])
        frame = cv2.warpAffine(self.photo if photo is None else photo, matrix, (width, height),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
        return frame.astype(np.float32) * self.gain + np.float32(self.offset)

    def to_photo(self, t: int, x: float, y: float, height: int, width: int) -> tuple[float, float]:
        """Frame point ``(x, y)`` -> the photo point it shows at frame ``t``."""
        zoom, cx, cy = self.view(t)
        return cx + (x - width / 2) / zoom, cy + (y - height / 2) / zoom

    def to_frame(self, t: int, points: np.ndarray, height: int, width: int) -> np.ndarray:
        """Photo points ``(n, 2)`` -> frame points ``(n, 2)`` at frame ``t``."""
        zoom, cx, cy = self.view(t)
        return (points - np.array([cx, cy])) * zoom + np.array([width / 2, height / 2])


def _sample_camera(rng: np.random.Generator, photo: np.ndarray, height: int, width: int, num_frames: int,
                   speed: float) -> _Camera:
    ph, pw = photo.shape[:2]
    cover = max(height / ph, width / pw)  # the smallest zoom at which the photo fills the frame
    zoom = cover * rng.uniform(1.1, 1.8)
    travel = speed * rng.uniform(0.0, 0.8)  # photo pixels per frame (before zoom)
    angle = rng.uniform(0, 2 * math.pi)
    pan = (travel * math.cos(angle) / zoom, travel * math.sin(angle) / zoom)
    half_w, half_h = width / 2 / zoom, height / 2 / zoom
    # start so that the path stays inside the photo as long as possible
    end_dx, end_dy = pan[0] * num_frames, pan[1] * num_frames
    lo_x, hi_x = half_w - min(0, end_dx), pw - half_w - max(0, end_dx)
    lo_y, hi_y = half_h - min(0, end_dy), ph - half_h - max(0, end_dy)
    cx = rng.uniform(lo_x, hi_x) if lo_x < hi_x else pw / 2
    cy = rng.uniform(lo_y, hi_y) if lo_y < hi_y else ph / 2
    return _Camera(photo=photo, centre=(cx, cy), zoom=zoom, pan=pan, zoom_rate=rng.uniform(0.0, 0.08),
                   zoom_omega=2 * math.pi * speed / rng.uniform(40, 120),
                   gain=rng.uniform(0.8, 1.2, size=3).astype(np.float32), offset=float(rng.uniform(-20, 20)))


def _sample_look(rng: np.random.Generator, material: RealMaterial, layer: _Layer, size: float, crowd: float,
                 cutout_fraction: float, cutout: Cutout | None = None) -> _Look:
    """The appearance of ``layer``: ``cutout`` if given, else a random cutout or a photo-textured shape."""
    gain = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    offset = float(rng.uniform(-15, 15))
    if cutout is not None or rng.random() < cutout_fraction:
        if cutout is None:
            cutout = material.cutouts[int(rng.integers(len(material.cutouts)))]
        h, w = cutout.mask.shape
        # the cutout's longer side spans 0.3-0.6 of the frame's shorter side (fewer objects: larger)
        target = rng.uniform(0.3, 0.6) * size * crowd
        layer.kind, layer.radius = "cutout", 0.5 * math.hypot(h, w) * target / max(h, w)
        return _Look(cutout=cutout, flip=bool(rng.random() < 0.5), tilt=float(rng.uniform(-0.2, 0.2)),
                     turn=float(rng.uniform(0.0, 0.3)), gain=gain, offset=offset)
    layer.kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
    _sample_shape(layer, rng, rng.uniform(0.14, 0.24) * size * crowd)
    photo = material.photos[int(rng.integers(len(material.photos)))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.6, 2.0)
    reach = layer.radius * scale
    origin = (rng.uniform(min(reach, pw / 2), max(pw - reach, pw / 2)),
              rng.uniform(min(reach, ph / 2), max(ph - reach, ph / 2)))
    return _Look(texture=photo, tex_origin=origin, tex_scale=float(scale), gain=gain, offset=offset)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _draw(layer: _Layer, look: _Look, state, height: int, width: int):
    """``(mask (H, W) bool, colours (H, W, 3) float32 or None)`` of one layer at one frame, or None."""
    cx, cy, theta, scale, _ = state
    if look.cutout is None:
        drawn = _rasterise(layer, state, height, width)
        if drawn is None:
            return None
        y0, y1, x0, x1, box_mask, u, v = drawn
        mask = np.zeros((height, width), bool)
        mask[y0:y1, x0:x1] = box_mask
        if not box_mask.any():
            return None
        map_x = (look.tex_origin[0] + u * look.tex_scale).astype(np.float32)
        map_y = (look.tex_origin[1] + v * look.tex_scale).astype(np.float32)
        tex = cv2.remap(look.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        colours = np.zeros((height, width, 3), np.float32)
        colours[y0:y1, x0:x1] = tex
        return mask, colours
    cutout = look.cutout
    h, w = cutout.mask.shape
    zoom = 2 * layer.radius * scale / math.hypot(h, w)
    angle = look.tilt + look.turn * (theta - layer.theta0)
    ca, sa = math.cos(angle) * zoom, math.sin(angle) * zoom
    fx = -1.0 if look.flip else 1.0
    # cutout (x, y) -> frame: R * zoom * (fx (x - w/2), y - h/2) + (cx, cy)
    matrix = np.array([[ca * fx, -sa, cx - ca * fx * w / 2 + sa * h / 2],
                       [sa * fx, ca, cy - sa * fx * w / 2 - ca * h / 2]])
    alpha = cv2.warpAffine(cutout.mask.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = alpha > 0.5
    if not mask.any():
        return None
    colours = cv2.warpAffine(cutout.rgb, matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    return mask, colours


@dataclass
class _Occluder:
    """A static thing in front of the scene: polygons in photo pixels, textured by ``texture`` (a photo
    seen through the scene's camera, so that it moves with the background)."""

    polygons: list[np.ndarray]  # each (n, 2) float, photo pixels
    texture: np.ndarray
    gain: np.ndarray  # (3,)

    def mask(self, camera: _Camera, t: int, height: int, width: int) -> np.ndarray:
        """``(H, W) bool``: where it hides the scene at frame ``t``."""
        canvas = np.zeros((height, width), np.uint8)
        for polygon in self.polygons:
            # 4 fractional bits: sub-pixel placement, so that slow camera motion moves the edge smoothly
            points = np.round(camera.to_frame(t, polygon, height, width) * 16).astype(np.int32)
            cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=4)
        return canvas.astype(bool)


@dataclass
class _RealScene:
    height: int
    width: int
    num_frames: int
    layers: list[_Layer]
    looks: list[_Look]
    camera: _Camera
    exiters: list[int]
    occluders: list[_Occluder] = field(default_factory=list)


def _render(scene: _RealScene, t: int, colour: bool):
    labels = np.zeros((scene.height, scene.width), np.uint8)
    image = scene.camera.render(t, scene.height, scene.width) if colour else None
    states = [layer.state(t) for layer in scene.layers]
    for i in _draw_order(scene, t, states):
        drawn = _draw(scene.layers[i], scene.looks[i], states[i], scene.height, scene.width)
        if drawn is None:
            continue
        mask, colours = drawn
        labels[mask] = scene.layers[i].label
        if colour:
            look = scene.looks[i]
            image[mask] = colours[mask] * look.gain + np.float32(look.offset)
    for occluder in scene.occluders:
        hidden = occluder.mask(scene.camera, t, scene.height, scene.width)
        labels[hidden] = 0
        if colour:
            texture = scene.camera.render(t, scene.height, scene.width, photo=occluder.texture)
            image[hidden] = texture[hidden] * occluder.gain
    return labels, image


def _sample_occluder(rng: np.random.Generator, scene: _RealScene, material: RealMaterial) -> _Occluder:
    """A pole (with a sign on it half of the time) or a railing across a labelled object's path."""
    h, w = scene.height, scene.width
    labelled = [layer for layer in scene.layers if layer.label]
    target = labelled[int(rng.integers(len(labelled)))]
    t = int(rng.integers(scene.num_frames // 5, max(scene.num_frames // 5 + 1, 4 * scene.num_frames // 5)))
    fx, fy, _, scale, _ = target.state(t)
    zoom = scene.camera.view(t)[0]
    px, py = scene.camera.to_photo(t, fx, fy, h, w)
    r = target.radius * scale / zoom  # the object's radius in photo pixels
    far = 4 * max(h, w) / zoom  # beyond the frame whatever the camera does
    polygons = []
    if rng.random() < 0.75:  # a vertical pole from above the frame down to about the object's feet
        half = 0.5 * r * rng.uniform(0.15, 0.6)
        x = px + r * rng.uniform(-0.3, 0.3)
        bottom = py + r * rng.uniform(0.2, 1.6)
        polygons.append(np.array([[x - half, py - far], [x + half, py - far], [x + half, bottom], [x - half, bottom]]))
        if rng.random() < 0.5:  # a sign on it
            sw, sh = r * rng.uniform(0.5, 1.4), r * rng.uniform(0.4, 1.0)
            sy = py + r * rng.uniform(-1.2, 0.3)
            sx = x + rng.choice([-1.0, 0.0, 1.0]) * 0.5 * sw
            polygons.append(np.array([[sx - sw / 2, sy - sh / 2], [sx + sw / 2, sy - sh / 2],
                                      [sx + sw / 2, sy + sh / 2], [sx - sw / 2, sy + sh / 2]]))
    else:  # a railing: a bar across the frame at the object's height, slightly sloped
        half = 0.5 * r * rng.uniform(0.15, 0.5)
        y = py + r * rng.uniform(-0.5, 0.5)
        slope = rng.uniform(-0.15, 0.15)
        polygons.append(np.array([[px - far, y - half - slope * far], [px + far, y - half + slope * far],
                                  [px + far, y + half + slope * far], [px - far, y + half - slope * far]]))
    texture = material.photos[int(rng.integers(len(material.photos)))]
    return _Occluder(polygons=polygons, texture=texture, gain=rng.uniform(0.5, 1.1, size=3).astype(np.float32))


def _sample_entry(layer: _Layer, beside: _Layer, rng: np.random.Generator, height: int, width: int,
                  num_frames: int) -> None:
    """Make ``layer`` enter from the nearest frame edge after frame 0 and then move beside ``beside``."""
    angle = rng.uniform(0.0, 2 * math.pi)
    gap = (beside.radius + layer.radius) * rng.uniform(0.7, 1.1)
    layer.cx0 = beside.cx0 + gap * math.cos(angle)
    layer.cy0 = beside.cy0 + gap * math.sin(angle)
    # it walks with its neighbour: the same oscillation, slightly out of step
    layer.ax, layer.wx = beside.ax, beside.wx
    layer.ay, layer.wy = beside.ay, beside.wy
    layer.px = tuple(float(p + rng.uniform(-0.3, 0.3)) for p in beside.px)
    layer.py = tuple(float(p + rng.uniform(-0.3, 0.3)) for p in beside.py)
    start = int(rng.integers(1, max(2, num_frames // 2)))
    duration = int(rng.integers(4, 11))
    layer.enter = (float(start), float(duration), *nearest_edge_offset(layer, height, width))


def _sample_real_scene(rng: np.random.Generator, material: RealMaterial, *, num_frames: int, height: int,
                       width: int, num_objects: int, allow_exit: bool, distractor: bool, speed: float,
                       cutout_fraction: float, lookalike: bool, entering: bool = False,
                       scale: float = 1.0) -> _RealScene:
    size = float(min(height, width)) * scale
    crowd = min(1.0, math.sqrt(2.0 / num_objects))
    shared = material.cutouts[int(rng.integers(len(material.cutouts)))] if lookalike else None
    layers, looks = [], []
    for k in range(num_objects + (1 if distractor else 0)):
        layer = _Layer(label=k + 1 if k < num_objects else 0, appear=0, kind="ellipse", radius=0.0)
        # a look-alike distractor is as large as the objects: it is one more of them, unlabelled
        shrink = 1.0 if layer.label or lookalike else 0.6
        looks.append(_sample_look(rng, material, layer, size, shrink * crowd, cutout_fraction, shared))
        _sample_motion(layer, rng, height, width, speed)
        layers.append(layer)
    for layer, rank in zip(layers, rng.permutation(len(layers))):
        layer.depth0 = float(rank + rng.uniform(-0.3, 0.3))
        layer.depth = (float(rng.uniform(0.5, 1.5)), float(2 * math.pi * speed / rng.uniform(20.0, 60.0)),
                       float(rng.uniform(0.0, 2 * math.pi)))
    exiters = []
    if allow_exit:
        chosen = layers[int(rng.integers(num_objects))]
        if _sample_exit(chosen, rng, height, width, num_frames):
            exiters.append(chosen.label)
    camera = _sample_camera(rng, material.photos[int(rng.integers(len(material.photos)))], height, width,
                            num_frames, speed)
    if entering:  # drawn last, so that the rest of the scene is the one without an entry
        _sample_entry(layers[-1], layers[int(rng.integers(num_objects))], rng, height, width, num_frames)
    return _RealScene(height, width, num_frames, layers, looks, camera, exiters)


def _valid(scene: _RealScene, min_pixels: int) -> bool:
    first, _ = _render(scene, 0, colour=False)
    if any(np.count_nonzero(first == layer.label) < min_pixels for layer in scene.layers if layer.label):
        return False
    for layer in scene.layers:
        if layer.label in scene.exiters:
            start, duration, _, _ = layer.exit
            back = [_render(scene, t, colour=False)[0] for t in range(int(start + duration), scene.num_frames)]
            if not any(np.count_nonzero(lab == layer.label) >= min_pixels for lab in back):
                return False
    return True


def generate_real_video(seed: int, material: RealMaterial, *, num_frames: int = 24, height: int = 224,
                        width: int = 320, num_objects: int = 2, allow_exit: bool = False, distractor: bool = False,
                        speed: float = 1.0, noise_std: float = 2.0, cutout_fraction: float = 0.7,
                        lookalike: bool = False, entering: bool = False, small: bool = False,
                        occluders: bool = False, min_visible_fraction: float = 0.01) -> SyntheticVideo:
    """A clip of ``num_objects`` (1..255) real-looking objects over a real photo, fully determined by
    ``seed`` and ``material``; ``occluders`` adds static occluders to the same scene (the pixels they
    leave visible are those of the video without them); ``entering`` and ``small`` imply
    ``distractor``, ``small`` scales ``min_visible_fraction`` with the objects' area (see the module's
    docstring). Returns a SyntheticVideo: ``frames (T, H, W, 3) uint8``, ``labels (T, H, W) uint8``
    (top-most object id, 0 background and distractor)."""
    if seed < 0 or num_frames < 1 or height < 16 or width < 16 or not 1 <= num_objects <= 255:
        raise ValueError(f"bad arguments: seed {seed}, {num_frames} frames, {height}x{width}, {num_objects} objects")
    geometry_ss, noise_ss = np.random.SeedSequence([seed, 0x4EA1]).spawn(2)
    rng = np.random.Generator(np.random.PCG64(geometry_ss))
    noise = np.random.Generator(np.random.PCG64(noise_ss))
    # drawn from its own stream, so that small=False leaves every other video as it was
    scale = float(np.random.default_rng([seed, 0x5A11]).uniform(0.2, 0.45)) if small else 1.0
    min_pixels = max(1, math.ceil(min_visible_fraction * scale**2 * height * width))
    for _ in range(100):
        scene = _sample_real_scene(rng, material, num_frames=num_frames, height=height, width=width,
                                   num_objects=num_objects, allow_exit=allow_exit,
                                   distractor=distractor or entering or small, speed=max(speed, 0.0),
                                   cutout_fraction=cutout_fraction, lookalike=lookalike, entering=entering,
                                   scale=scale)
        if _valid(scene, min_pixels):
            break
    else:
        raise RuntimeError(f"could not place {num_objects} objects visibly in a {height}x{width} frame (seed {seed})")
    if occluders:
        # its own stream, after the scene is fixed: the same scene, now with things in front of it
        occluder_rng = np.random.default_rng([seed, 0x0CC1])
        for _ in range(20):
            scene.occluders = [_sample_occluder(occluder_rng, scene, material)
                               for _ in range(1 + int(occluder_rng.random() < 0.4))]
            if _valid(scene, min_pixels):
                break
        else:  # every draw hid a first-frame object or a returning exit: the scene stays unoccluded
            scene.occluders = []
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    labels = np.empty((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        labels[t], image = _render(scene, t, colour=True)
        if noise_std > 0:
            image += noise.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_std)
        frames[t] = np.clip(image + np.float32(0.5), 0, 255).astype(np.uint8)
    ids = tuple(range(1, num_objects + 1))
    return SyntheticVideo(frames=frames, labels=labels, object_ids=ids, first_frame={k: 0 for k in ids}, seed=seed)
