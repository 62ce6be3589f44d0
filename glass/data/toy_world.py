"""The toy world: a procedural COCO-format dataset of coloured shapes on textured backgrounds.

The CPU configuration uses it in place of real COCO: the pipeline captions its images, a toy
generator later renders scenes for text prompts (``sample_scene(..., classes=[...])``), and a
slot-attention model learns objects from it at low resolution. The written dataset has the same
layout and annotation format as COCO 2017, so the same pycocotools-based loader reads both.

Each of the classes in ``TOY_CLASS_STYLES`` is a COCO class drawn as its own shape with a
class-typical colour (plus jitter and gentle shading); objects are sized at 12 %+ of the image
side so they stay learnable at 64-128 px. Scenes are sampled so that every object keeps at
least ``min_visible_fraction`` of its own area visible after later objects occlude it, and about
``duplicate_class_prob`` of them contain two or more instances of one class, so instance and
semantic segmentation differ.

Geometry is stored in fractions of the image side, so a scene can be re-rendered at any size;
the visibility guarantee is checked at ``cfg.image_size``.
"""

from __future__ import annotations

import colorsys
import functools
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from glass.errors import InvalidInput
from glass.data.classes import COCO_CATEGORY_IDS, check_coco_class
from glass.io import atomic_open, canonical_json
from glass.params import Params, param
from glass.seeding import sample_rng

RGB = tuple[int, int, int]

# ---------------------------------------------------------------------------------------------
# Class styles: one shape per class, so shape alone identifies the class.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyClassStyle:
    """How one class is drawn. Sizes are in units of the object's radius."""

    shape: str                       # key of SHAPE_DISTANCES
    palette: tuple[RGB, ...]         # class-typical base colours, one picked per object
    supercategory: str               # COCO's supercategory for the class
    max_rotation_deg: float          # rotation is uniform in [-max, max]
    trim_colour: RGB | None = None   # optional band along the outline (stop sign rim, tv bezel)
    trim_width: float = 0.0


TOY_CLASS_STYLES: dict[str, ToyClassStyle] = {
    "sports ball": ToyClassStyle("disc", ((242, 242, 238), (224, 226, 228)), "sports", 180.0),
    # An octagon is close to a disc at low resolution, so the stop sign also gets its white rim.
    "stop sign": ToyClassStyle("octagon", ((204, 32, 38),), "outdoor", 22.5,
                               trim_colour=(240, 240, 240), trim_width=0.13),
    "kite": ToyClassStyle("rhombus", ((244, 204, 40),), "sports", 30.0),
    "pizza": ToyClassStyle("triangle", ((232, 138, 48),), "food", 180.0),
    "tv": ToyClassStyle("wide_rectangle", ((36, 56, 140),), "electronic", 15.0,
                        trim_colour=(22, 22, 26), trim_width=0.15),
    "donut": ToyClassStyle("annulus", ((152, 94, 52), (228, 140, 168)), "food", 180.0),
    "frisbee": ToyClassStyle("ellipse", ((56, 172, 78),), "sports", 180.0),
    "umbrella": ToyClassStyle("half_disc", ((128, 58, 176),), "accessory", 30.0),
}
DEFAULT_TOY_CLASSES: tuple[str, ...] = tuple(TOY_CLASS_STYLES)

# Shapes are signed distance functions of local coordinates (u, v) in radius units, v pointing
# down the image: negative inside, positive outside. Their areas are 1.7-3.1 r^2, so no class
# is much smaller than another at the same radius.
ShapeDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _convex_polygon(vertices: Sequence[tuple[float, float]]) -> ShapeDistance:
    """Distance to a convex polygon: exact inside, a slight underestimate outside near corners
    (only the one-pixel anti-aliased edge uses outside distances, so that does not matter)."""
    corners = np.asarray(vertices, dtype=np.float64)
    edges = np.roll(corners, -1, axis=0) - corners
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    outward = np.einsum("ij,ij->i", normals, corners + edges / 2 - corners.mean(axis=0)) > 0
    normals[~outward] *= -1
    offsets = np.einsum("ij,ij->i", normals, corners)

    def distance(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        result = normals[0, 0] * u + normals[0, 1] * v - offsets[0]
        for (nu, nv), offset in zip(normals[1:], offsets[1:]):
            np.maximum(result, nu * u + nv * v - offset, out=result)
        return result

    return distance


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hypot(u, v) - 1.0


def _annulus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Outer radius 1.05, hole radius 0.42: the hole stays >= 4 px across at 12 % of 64 px.
    return np.abs(np.hypot(u, v) - 0.735) - 0.315


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    semi_major, semi_minor = 1.15, 0.6
    return (np.hypot(u / semi_major, v / semi_minor) - 1.0) * semi_minor


def _half_disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Dome up, flat edge down; shifted so the shape's centroid sits near the object's centre.
    radius, flat_edge = 1.15, 0.35
    return np.maximum(np.hypot(u, v - flat_edge) - radius, v - flat_edge)


_OCTAGON = [(math.cos(math.radians(22.5 + 45 * k)), math.sin(math.radians(22.5 + 45 * k)))
            for k in range(8)]
SHAPE_DISTANCES: dict[str, ShapeDistance] = {
    "disc": _disc,
    "octagon": _convex_polygon(_OCTAGON),
    "rhombus": _convex_polygon([(0.0, -1.15), (0.75, 0.0), (0.0, 1.15), (-0.75, 0.0)]),
    "triangle": _convex_polygon([(0.0, -1.05), (0.95, 0.75), (-0.95, 0.75)]),
    "wide_rectangle": _convex_polygon([(-1.0, -0.62), (1.0, -0.62), (1.0, 0.62), (-1.0, 0.62)]),
    "annulus": _annulus,
    "ellipse": _ellipse,
    "half_disc": _half_disc,
}
assert all(style.shape in SHAPE_DISTANCES for style in TOY_CLASS_STYLES.values())
assert all(name in COCO_CATEGORY_IDS for name in TOY_CLASS_STYLES)

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

MIN_RADIUS_FRACTION = 0.12   # smaller objects are too few pixels to learn from at 64 px
MAX_RADIUS_FRACTION = 0.40   # larger ones leave no room for a second object
MAX_OBJECTS_LIMIT = 20       # annotation ids reserve two digits per image for the instance


@dataclass(frozen=True)
class ToyWorldConfig(Params):
    """Parameters of the toy world. Radii are fractions of the image side. Every key may be
    omitted from a params file (the defaults are the toy world's own design)."""

    image_size: int = param(128, min=32, max=4096, optional=True)
    min_objects: int = param(1, min=1, max=MAX_OBJECTS_LIMIT, optional=True)
    max_objects: int = param(5, min=1, max=MAX_OBJECTS_LIMIT, optional=True)
    object_radius: tuple[float, float] = param((0.14, 0.26), optional=True)
    duplicate_class_prob: float = param(0.5, min=0.0, max=1.0, optional=True)
    min_visible_fraction: float = param(0.5, gt=0.0, max=1.0, optional=True)
    colour_jitter: float = param(0.08, min=0.0, max=0.5, optional=True)
    jpeg_quality: int = param(95, min=1, max=100, optional=True)
    classes: tuple[str, ...] = param(DEFAULT_TOY_CLASSES, optional=True)
    # random placements tried per object before giving up on it
    placement_tries: int = param(60, min=1, max=100_000, optional=True)

    def __post_init__(self) -> None:
        # Configs built in code may carry lists; store tuples so the config stays hashable.
        if isinstance(self.classes, str):
            raise self.invalid("classes", "must be a sequence of class names, not the single "
                                          f"string {self.classes!r}")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "object_radius", tuple(self.object_radius))
        super().__post_init__()

    def validate(self) -> None:
        if self.max_objects < self.min_objects:
            raise self.invalid("max_objects", f"({self.max_objects}) must be >= min_objects "
                                              f"({self.min_objects})")
        self._validate_radius()
        self._validate_classes()

    def _validate_radius(self) -> None:
        if len(self.object_radius) != 2:
            raise self.invalid("object_radius", "must be a (min, max) pair, got "
                                                f"{self.object_radius!r}")
        low, high = self.object_radius
        for value in (low, high):
            if not MIN_RADIUS_FRACTION <= value <= MAX_RADIUS_FRACTION:
                raise self.invalid("object_radius", f"values must be in [{MIN_RADIUS_FRACTION}, "
                                                    f"{MAX_RADIUS_FRACTION}], got {value}")
        if high < low:
            raise self.invalid("object_radius", "must be (min, max) with min <= max, got "
                                                f"{self.object_radius!r}")

    def _validate_classes(self) -> None:
        if not self.classes:
            raise self.invalid("classes", "must name at least one class")
        if len(set(self.classes)) != len(self.classes):
            raise self.invalid("classes", f"has repeated names: {self.classes!r}")
        for name in self.classes:
            check_coco_class(name)
            if name not in TOY_CLASS_STYLES:
                raise self.invalid("classes", f"the toy world has no shape for {name!r}; "
                                              f"drawable classes: {sorted(TOY_CLASS_STYLES)}")

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------

BACKGROUND_KINDS = ("gradient", "stripes", "checker", "blobs")


@dataclass(frozen=True)
class BackgroundSpec:
    """A procedural background blending two muted colours by a pattern.

    ``period`` (fraction of the side) is used by stripes and checker, ``noise_seed`` by blobs.
    """

    kind: str
    colours: tuple[RGB, RGB]
    angle_deg: float
    period: float
    noise_seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "colours": [list(c) for c in self.colours],
                "angle_deg": self.angle_deg, "period": self.period, "noise_seed": self.noise_seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackgroundSpec:
        return cls(kind=data["kind"], colours=tuple(tuple(c) for c in data["colours"]),
                   angle_deg=data["angle_deg"], period=data["period"],
                   noise_seed=data["noise_seed"])


@dataclass(frozen=True)
class ObjectSpec:
    """One object: centre (x, y) and radius are fractions of the image side."""

    class_name: str
    centre: tuple[float, float]
    radius: float
    rotation_deg: float
    colour: RGB
    shade_angle_deg: float    # direction the brightness gradient increases towards
    shade_strength: float     # relative brightness change from the centre to the rim

    def to_dict(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "centre": list(self.centre),
                "radius": self.radius, "rotation_deg": self.rotation_deg,
                "colour": list(self.colour), "shade_angle_deg": self.shade_angle_deg,
                "shade_strength": self.shade_strength}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectSpec:
        return cls(class_name=data["class_name"], centre=tuple(data["centre"]),
                   radius=data["radius"], rotation_deg=data["rotation_deg"],
                   colour=tuple(data["colour"]), shade_angle_deg=data["shade_angle_deg"],
                   shade_strength=data["shade_strength"])


@dataclass(frozen=True)
class Scene:
    """A background and objects in paint order (later objects occlude earlier ones)."""

    background: BackgroundSpec
    objects: tuple[ObjectSpec, ...]
    grain_seed: int   # seeds the faint per-pixel sensor noise

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background.to_dict(),
                "objects": [obj.to_dict() for obj in self.objects],
                "grain_seed": self.grain_seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        return cls(background=BackgroundSpec.from_dict(data["background"]),
                   objects=tuple(ObjectSpec.from_dict(o) for o in data["objects"]),
                   grain_seed=data["grain_seed"])

    @property
    def class_names(self) -> list[str]:
        return [obj.class_name for obj in self.objects]


@dataclass
class RenderedScene:
    """Pixels of a scene: ``instance_map`` holds 0 for background and i+1 for ``objects[i]``
    wherever that object is the top-most one."""

    image: np.ndarray              # (H, W, 3) uint8
    instance_map: np.ndarray       # (H, W) int32
    instance_classes: list[str]    # class of instance i + 1

    def semantic_map(self, class_to_label: Mapping[str, int]) -> np.ndarray:
        """(H, W) int32 map of class labels; background pixels get 0."""
        missing = sorted(set(self.instance_classes) - set(class_to_label))
        if missing:
            raise InvalidInput(f"semantic_map: no label given for classes {missing}")
        lookup = np.array([0] + [class_to_label[name] for name in self.instance_classes],
                          dtype=np.int32)
        return lookup[self.instance_map]


# ---------------------------------------------------------------------------------------------
# Geometry shared by sampling (visibility checks) and rendering
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) coordinates of pixel centres, in pixels, as read-only (size, size) arrays."""
    coordinates = np.arange(size, dtype=np.float64) + 0.5
    x, y = np.meshgrid(coordinates, coordinates)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@dataclass
class _ObjectGeometry:
    offset_x: np.ndarray     # image-aligned offsets from the centre, in radius units
    offset_y: np.ndarray
    distance: np.ndarray     # signed distance to the outline, in radius units
    radius_px: float


def _object_geometry(obj: ObjectSpec, size: int) -> _ObjectGeometry:
    x, y = _pixel_centres(size)
    radius_px = obj.radius * size
    offset_x = (x - obj.centre[0] * size) / radius_px
    offset_y = (y - obj.centre[1] * size) / radius_px
    # Rotate the pixel grid by -rotation so the shape itself appears rotated by +rotation.
    cos, sin = math.cos(math.radians(obj.rotation_deg)), math.sin(math.radians(obj.rotation_deg))
    u = cos * offset_x + sin * offset_y
    v = -sin * offset_x + cos * offset_y
    distance = SHAPE_DISTANCES[TOY_CLASS_STYLES[obj.class_name].shape](u, v)
    return _ObjectGeometry(offset_x, offset_y, distance, radius_px)


def object_mask(obj: ObjectSpec, size: int) -> np.ndarray:
    """Boolean (size, size) mask of the pixels whose centres lie inside the object."""
    return _object_geometry(obj, size).distance < 0


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------

MAX_SCENE_ATTEMPTS = 200


def _hsv_colour(hue: float, saturation: float, value: float) -> RGB:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, float(np.clip(saturation, 0, 1)),
                                           float(np.clip(value, 0, 1)))
    return (round(red * 255), round(green * 255), round(blue * 255))


def _sample_muted_colour_pair(rng: np.random.Generator) -> tuple[RGB, RGB]:
    """Two low-saturation mid-tone colours of similar hue. Mid values keep both the white ball
    and the dark tv readable; low saturation keeps the vivid objects standing out."""
    hue = rng.random()
    saturation = rng.uniform(0.06, 0.28)
    value = rng.uniform(0.38, 0.62)
    value_step = rng.uniform(0.06, 0.12) * rng.choice([-1.0, 1.0])
    first = _hsv_colour(hue, saturation, value)
    second = _hsv_colour(hue + rng.uniform(-0.06, 0.06),
                         saturation + rng.uniform(-0.06, 0.06), value + value_step)
    return first, second


def _sample_background(rng: np.random.Generator) -> BackgroundSpec:
    kind = str(rng.choice(BACKGROUND_KINDS))
    colours = _sample_muted_colour_pair(rng)
    angle_deg = round(float(rng.uniform(0.0, 180.0)), 3)
    period_range = (0.05, 0.16) if kind == "stripes" else (0.08, 0.22)
    period = round(float(rng.uniform(*period_range)), 5)
    noise_seed = int(rng.integers(0, 2**31))
    return BackgroundSpec(kind, colours, angle_deg, period, noise_seed)


def _jittered_colour(rng: np.random.Generator, base: RGB, jitter: float) -> RGB:
    shifted = np.asarray(base, dtype=np.float64) + rng.uniform(-jitter, jitter, 3) * 255.0
    return tuple(int(c) for c in np.clip(np.round(shifted), 0, 255))


def _sample_object(rng: np.random.Generator, cfg: ToyWorldConfig, class_name: str) -> ObjectSpec:
    style = TOY_CLASS_STYLES[class_name]
    radius = float(rng.uniform(*cfg.object_radius))
    # Centres stay 0.9 radii from the border: shapes reach up to ~1.2 radii, so at most a thin
    # sliver is cut off, and objects still spread over most of the image.
    margin = 0.9 * radius
    centre = (round(float(rng.uniform(margin, 1.0 - margin)), 5),
              round(float(rng.uniform(margin, 1.0 - margin)), 5))
    rotation = float(rng.uniform(-style.max_rotation_deg, style.max_rotation_deg))
    base = style.palette[int(rng.integers(len(style.palette)))]
    return ObjectSpec(
        class_name=class_name,
        centre=centre,
        radius=round(radius, 5),
        rotation_deg=round(rotation, 3),
        colour=_jittered_colour(rng, base, cfg.colour_jitter),
        shade_angle_deg=round(float(rng.uniform(0.0, 360.0)), 3),
        shade_strength=round(float(rng.uniform(0.06, 0.16)), 4),
    )


class _Occupancy:
    """Which placed object is on top at each pixel, and how much of each is still visible."""

    def __init__(self, size: int):
        self.instance_map = np.zeros((size, size), dtype=np.int32)
        self.full_area: list[int] = []
        self.visible_area: list[int] = []

    def accepts(self, mask: np.ndarray, min_visible_fraction: float) -> bool:
        area = int(mask.sum())
        if area == 0:
            return False
        if not self.full_area:
            return True
        covered = np.bincount(self.instance_map[mask], minlength=len(self.full_area) + 1)[1:]
        remaining = np.asarray(self.visible_area) - covered
        return bool(np.all(remaining >= min_visible_fraction * np.asarray(self.full_area)))

    def add(self, mask: np.ndarray) -> None:
        covered = np.bincount(self.instance_map[mask], minlength=len(self.full_area) + 1)[1:]
        self.visible_area = [int(v - c) for v, c in zip(self.visible_area, covered)]
        self.full_area.append(int(mask.sum()))
        self.visible_area.append(int(mask.sum()))
        self.instance_map[mask] = len(self.full_area)


def _try_place(rng: np.random.Generator, cfg: ToyWorldConfig, class_name: str,
               occupancy: _Occupancy) -> ObjectSpec | None:
    for _ in range(cfg.placement_tries):
        candidate = _sample_object(rng, cfg, class_name)
        mask = object_mask(candidate, cfg.image_size)
        if occupancy.accepts(mask, cfg.min_visible_fraction):
            occupancy.add(mask)
            return candidate
    return None


def _distinct_classes(rng: np.random.Generator, pool: Sequence[str], count: int) -> list[str]:
    """``count`` classes from ``pool``, all different while the pool lasts."""
    chosen: list[str] = []
    while len(chosen) < count:
        take = min(count - len(chosen), len(pool))
        chosen += [pool[i] for i in rng.permutation(len(pool))[:take]]
    return chosen


def _plan_free_scene(rng: np.random.Generator, cfg: ToyWorldConfig) -> list[tuple[str, bool]]:
    """(class, required) per instance for an unprompted scene. Without a deliberate duplicate
    the classes are distinct, so ``duplicate_class_prob`` is the duplicate rate."""
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    if cfg.max_objects < 2 or rng.random() >= cfg.duplicate_class_prob:
        return [(name, False) for name in _distinct_classes(rng, cfg.classes, count)]
    count = max(count, 2)
    repeated = cfg.classes[int(rng.integers(len(cfg.classes)))]
    copies = int(rng.integers(2, min(count, 3) + 1))
    others = [name for name in cfg.classes if name != repeated] or [repeated]
    # Two copies are required so a failed placement cannot silently undo the duplicate.
    plan = [(repeated, True), (repeated, True)] + [(repeated, False)] * (copies - 2)
    return plan + [(name, False) for name in _distinct_classes(rng, others, count - copies)]


def _plan_prompted_scene(rng: np.random.Generator, cfg: ToyWorldConfig,
                         requested: Sequence[str], allow_extra: bool) -> list[tuple[str, bool]]:
    plan = [(name, True) for name in requested]
    if allow_extra:
        low = max(len(requested), cfg.min_objects)
        high = max(len(requested), cfg.max_objects)
        distinct = list(dict.fromkeys(requested))
        extra = int(rng.integers(low, high + 1)) - len(requested)
        plan += [(distinct[int(rng.integers(len(distinct)))], False) for _ in range(extra)]
    return plan


def _check_requested_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise InvalidInput(f"classes must be a sequence of class names, not the string {classes!r}")
    requested = list(classes)
    if not requested:
        raise InvalidInput("classes must name at least one class (or be None for a free scene)")
    unknown = sorted({name for name in requested if name not in TOY_CLASS_STYLES})
    if unknown:
        raise InvalidInput(f"the toy world cannot draw {unknown}; drawable classes: "
                         f"{sorted(TOY_CLASS_STYLES)}")
    if len(requested) > MAX_OBJECTS_LIMIT:
        raise InvalidInput(f"at most {MAX_OBJECTS_LIMIT} instances per scene, got {len(requested)}")
    return requested


def _place_plan(rng: np.random.Generator, cfg: ToyWorldConfig,
                plan: list[tuple[str, bool]]) -> tuple[ObjectSpec, ...] | None:
    """Place the planned instances in a random paint order; None if a required one did not fit."""
    occupancy = _Occupancy(cfg.image_size)
    placed = []
    for index in rng.permutation(len(plan)):
        class_name, required = plan[index]
        obj = _try_place(rng, cfg, class_name, occupancy)
        if obj is None and required:
            return None
        if obj is not None:
            placed.append(obj)
    return tuple(placed)


def sample_scene(rng: np.random.Generator, cfg: ToyWorldConfig,
                 classes: Sequence[str] | None = None, *, allow_extra: bool = True) -> Scene:
    """Sample a scene.

    Without ``classes``: ``min_objects..max_objects`` objects of ``cfg.classes``; with
    probability ``duplicate_class_prob`` one class appears 2-3 times, otherwise all differ.
    Objects that cannot be placed visibly after ``placement_tries`` tries are dropped.

    With ``classes`` (e.g. parsed from a prompt; repeats ask for several instances): the scene
    has exactly those classes, each at least as often as listed; with ``allow_extra`` random
    extra instances of the same classes bring the count to a random number up to max_objects.
    Any drawable class may be asked for, also ones outside ``cfg.classes``.
    """
    requested = None if classes is None else _check_requested_classes(classes)
    for _ in range(MAX_SCENE_ATTEMPTS):
        if requested is None:
            plan = _plan_free_scene(rng, cfg)
            minimum = cfg.min_objects
        else:
            plan = _plan_prompted_scene(rng, cfg, requested, allow_extra)
            minimum = len(requested)
        objects = _place_plan(rng, cfg, plan)
        if objects is not None and len(objects) >= minimum:
            return Scene(background=_sample_background(rng), objects=objects,
                         grain_seed=int(rng.integers(0, 2**31)))
    wanted = f"classes {list(requested)}" if requested else f"{cfg.min_objects}+ objects"
    raise InvalidInput(f"could not place {wanted} with radii {cfg.object_radius} and "
                       f"min_visible_fraction {cfg.min_visible_fraction} in "
                       f"{MAX_SCENE_ATTEMPTS} attempts; ask for fewer or smaller objects")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

GRAIN_SIGMA = 2.0   # sensor-like noise, in 8-bit levels, so flat areas are not perfectly flat


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Value noise in [0, 1]: a (cells+1)^2 lattice of random values, smoothstep-interpolated."""
    lattice = rng.random((cells + 1, cells + 1))
    position = (np.arange(size) + 0.5) / size * cells
    index = np.minimum(position.astype(int), cells - 1)
    fraction = position - index
    weight = fraction * fraction * (3 - 2 * fraction)
    rows = lattice[index] * (1 - weight)[:, None] + lattice[index + 1] * weight[:, None]
    field = rows[:, index] * (1 - weight)[None, :] + rows[:, index + 1] * weight[None, :]
    return (field - field.min()) / max(float(np.ptp(field)), 1e-9)


def _background_pattern(spec: BackgroundSpec, size: int) -> np.ndarray:
    """Blend weight in [0, 1] between the two background colours, per pixel."""
    x, y = (coordinate / size for coordinate in _pixel_centres(size))   # fractions of the side
    cos, sin = math.cos(math.radians(spec.angle_deg)), math.sin(math.radians(spec.angle_deg))
    along = (x - 0.5) * cos + (y - 0.5) * sin
    across = -(x - 0.5) * sin + (y - 0.5) * cos
    if spec.kind == "gradient":
        return np.clip(along / (abs(cos) + abs(sin)) + 0.5, 0.0, 1.0)
    if spec.kind == "stripes":
        # A clipped sine gives stripes with soft (anti-aliased) edges at any angle.
        wave = np.sin(2 * np.pi * along / spec.period)
        return 0.5 + 0.5 * np.clip(3.0 * wave, -1.0, 1.0)
    if spec.kind == "checker":
        # The sign of sin*sin alternates like a checkerboard; clipping softens the edges.
        wave = np.sin(np.pi * along / spec.period) * np.sin(np.pi * across / spec.period)
        return 0.5 + 0.5 * np.clip(4.0 * wave, -1.0, 1.0)
    if spec.kind == "blobs":
        rng = np.random.default_rng(spec.noise_seed)
        return _smooth_noise(rng, int(rng.integers(3, 7)), size)
    raise InvalidInput(f"unknown background kind {spec.kind!r}; expected one of {BACKGROUND_KINDS}")


def _render_background(spec: BackgroundSpec, size: int) -> np.ndarray:
    weight = _background_pattern(spec, size)[..., None]
    first, second = (np.asarray(c, dtype=np.float64) for c in spec.colours)
    return first * (1.0 - weight) + second * weight


def _object_colours(obj: ObjectSpec, geometry: _ObjectGeometry) -> np.ndarray:
    """(H, W, 3) colour of the object's surface: base colour (and trim band), shaded by a
    gentle linear light gradient so objects are not flat."""
    style = TOY_CLASS_STYLES[obj.class_name]
    shape = (*geometry.distance.shape, 3)
    colour = np.broadcast_to(np.asarray(obj.colour, dtype=np.float64), shape)
    if style.trim_colour is not None:
        # 1 within trim_width of the outline, 0 further inside, with a one-pixel soft edge.
        inside_trim = (geometry.distance + style.trim_width) * geometry.radius_px + 0.5
        trim = np.clip(inside_trim, 0.0, 1.0)[..., None]
        colour = colour * (1.0 - trim) + np.asarray(style.trim_colour, dtype=np.float64) * trim
    angle = math.radians(obj.shade_angle_deg)
    cos, sin = math.cos(angle), math.sin(angle)
    towards_light = np.clip(geometry.offset_x * cos + geometry.offset_y * sin, -1.2, 1.2)
    return colour * (1.0 + obj.shade_strength * towards_light)[..., None]


def render_scene(scene: Scene, cfg: ToyWorldConfig) -> RenderedScene:
    """Paint the scene at ``cfg.image_size``; the instance map follows the same paint order."""
    size = cfg.image_size
    canvas = _render_background(scene.background, size)
    instance_map = np.zeros((size, size), dtype=np.int32)
    for instance_id, obj in enumerate(scene.objects, start=1):
        geometry = _object_geometry(obj, size)
        # Coverage ramps over one pixel across the outline, so edges are anti-aliased while the
        # hard mask (distance < 0) is exactly the set of pixels with coverage above one half.
        coverage = np.clip(0.5 - geometry.distance * geometry.radius_px, 0.0, 1.0)[..., None]
        canvas = canvas * (1.0 - coverage) + _object_colours(obj, geometry) * coverage
        instance_map[geometry.distance < 0] = instance_id
    grain = np.random.default_rng(scene.grain_seed).normal(0.0, GRAIN_SIGMA, canvas.shape)
    image = np.clip(np.round(canvas + grain), 0, 255).astype(np.uint8)
    return RenderedScene(image=image, instance_map=instance_map,
                         instance_classes=scene.class_names)


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten", "eleven", "twelve")
_BACKGROUND_WORDS = {"gradient": "gradient", "stripes": "striped", "checker": "checkered",
                     "blobs": "mottled"}
# One caption from each group: an article style ("a stop sign") and a numeral style
# ("one stop sign"), like the two example captions a person might write.
_ARTICLE_TEMPLATES = ("{objects} on a {background} background.",
                      "There {verb} {objects} on a {background} background.")
_NUMERAL_TEMPLATES = ("a photo of {objects}",
                      "an image showing {objects} in front of a {background} backdrop")


def plural(name: str) -> str:
    """Regular English plural, keeping the class name verbatim as a prefix."""
    return name + ("es" if name.endswith(("s", "x", "z", "ch", "sh")) else "s")


def indefinite_article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def count_phrase(name: str, count: int, *, numeral: bool) -> str:
    """'a kite' / 'one kite' / 'two kites'."""
    if count == 1:
        return f"{'one' if numeral else indefinite_article(name)} {name}"
    number = _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else str(count)
    return f"{number} {plural(name)}"


def join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def class_counts(scene: Scene) -> list[tuple[str, int]]:
    """(class, count) with the most frequent class first, ties in paint order."""
    counts = Counter(scene.class_names)
    first_seen = {name: i for i, name in reversed(list(enumerate(scene.class_names)))}
    return sorted(counts.items(), key=lambda item: (-item[1], first_seen[item[0]]))


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def make_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Two ground-truth captions naming every class in the scene with its count."""
    counts = class_counts(scene)
    background = _BACKGROUND_WORDS[scene.background.kind]
    verb = "is" if counts[0][1] == 1 else "are"   # agrees with the first-named objects
    captions = []
    for templates, numeral in ((_ARTICLE_TEMPLATES, False), (_NUMERAL_TEMPLATES, True)):
        objects = join_phrases([count_phrase(n, c, numeral=numeral) for n, c in counts])
        template = templates[int(rng.integers(len(templates)))]
        caption = template.format(objects=objects, background=background, verb=verb)
        captions.append(_capitalise(caption) if caption.endswith(".") else caption)
    return captions


# ---------------------------------------------------------------------------------------------
# COCO dataset writing
# ---------------------------------------------------------------------------------------------

IMAGE_ID_STRIDE = 1_000_000          # image ids of split k are k * stride + 1 ...
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_IMAGE_NAME = re.compile(r"^\d{12}\.jpg$")
_LICENSE = {"id": 1, "name": "CC0 1.0 (procedurally generated)",
            "url": "https://creativecommons.org/publicdomain/zero/1.0/"}


def split_code(split: str) -> int:
    """Small integer per split name: fixed for train/val/test, a stable hash otherwise."""
    if not _SPLIT_NAME.match(split):
        raise InvalidInput(f"split name {split!r} must be letters, digits, '_' or '-'")
    return _SPLIT_CODES.get(split, 3 + zlib.crc32(split.encode()) % 2000)


def image_id(split: str, index: int) -> int:
    return split_code(split) * IMAGE_ID_STRIDE + index + 1


def _image_scene_and_captions(cfg: ToyWorldConfig, seed: int, split: str,
                              index: int) -> tuple[Scene, list[str]]:
    # Seeded by (seed, split, index) alone, so any subset of images can be regenerated alone.
    rng = sample_rng(seed, f"{split}/{index}", "toy_world")
    scene = sample_scene(rng, cfg)
    return scene, make_captions(scene, rng)


def scene_for_image(cfg: ToyWorldConfig, seed: int, split: str, index: int) -> Scene:
    """The scene behind image ``index`` of ``split`` in a dataset written with ``seed``."""
    return _image_scene_and_captions(cfg, seed, split, index)[0]


def coco_categories(cfg: ToyWorldConfig) -> list[dict[str, Any]]:
    return [{"id": COCO_CATEGORY_IDS[name], "name": name,
             "supercategory": TOY_CLASS_STYLES[name].supercategory}
            for name in sorted(cfg.classes, key=COCO_CATEGORY_IDS.__getitem__)]


def _instance_annotations(rendered: RenderedScene, image_id_: int) -> list[dict[str, Any]]:
    annotations = []
    for instance_id, class_name in enumerate(rendered.instance_classes, start=1):
        mask = np.asfortranarray((rendered.instance_map == instance_id).astype(np.uint8))
        rle = mask_utils.encode(mask)
        annotations.append({
            "id": image_id_ * 100 + instance_id,
            "image_id": image_id_,
            "category_id": COCO_CATEGORY_IDS[class_name],
            "segmentation": {"size": [int(s) for s in rle["size"]],
                             "counts": rle["counts"].decode("ascii")},
            "area": int(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
        })
    return annotations


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    # 4:4:4 chroma: at 64-128 px, 4:2:0 subsampling visibly bleeds colour across small shapes.
    with atomic_open(path, "wb") as handle:
        Image.fromarray(image).save(handle, format="JPEG", quality=quality, subsampling=0)


def _write_canonical_json(path: Path, data: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(canonical_json(data))


def _remove_stale_images(image_dir: Path, keep: set[str]) -> None:
    """Drop images a previous, larger run left here, so the folder matches the annotations."""
    for path in image_dir.iterdir():
        if _IMAGE_NAME.match(path.name) and path.name not in keep:
            path.unlink()


def _check_splits(split_sizes: Mapping[str, int]) -> None:
    if not split_sizes:
        raise InvalidInput("split_sizes must name at least one split")
    codes: dict[int, str] = {}
    for split, size in split_sizes.items():
        code = split_code(split)
        if code in codes:
            raise InvalidInput(f"splits {codes[code]!r} and {split!r} would share image ids; "
                             "rename one of them")
        codes[code] = split
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
                or not 0 <= size < IMAGE_ID_STRIDE:
            raise InvalidInput(f"split_sizes[{split!r}] must be an integer in "
                             f"[0, {IMAGE_ID_STRIDE - 1}], got {size!r}")


def _dataset_info(cfg: ToyWorldConfig, seed: int, split: str) -> dict[str, Any]:
    # No dates or hostnames: the files must be byte-identical for the same seed.
    return {"description": f"GLASS toy world ({split} split): procedural shapes named after "
                           "COCO classes, generated by glass.data.toy_world",
            "version": "1.0", "year": 2024, "contributor": "glass", "url": "",
            "date_created": "", "toy_world": {"seed": seed, "config": cfg.to_dict()}}


def _write_split(out_dir: Path, cfg: ToyWorldConfig, seed: int, split: str, size: int,
                 progress: bool, class_counts_total: Counter) -> list[int]:
    """Write one split's images and json files; return the object count of each image."""
    from tqdm import tqdm

    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, instances, captions, object_counts = [], [], [], []
    for index in tqdm(range(size), desc=f"toy world {split}", unit="img", disable=not progress):
        scene, scene_captions = _image_scene_and_captions(cfg, seed, split, index)
        rendered = render_scene(scene, cfg)
        id_ = image_id(split, index)
        file_name = f"{id_:012d}.jpg"
        _write_jpeg(image_dir / file_name, rendered.image, cfg.jpeg_quality)
        images.append({"id": id_, "file_name": file_name, "width": cfg.image_size,
                       "height": cfg.image_size, "license": 1})
        instances += _instance_annotations(rendered, id_)
        captions += [{"id": id_ * 10 + k, "image_id": id_, "caption": text}
                     for k, text in enumerate(scene_captions, start=1)]
        object_counts.append(len(scene.objects))
        class_counts_total.update(scene.class_names)
    _remove_stale_images(image_dir, {image["file_name"] for image in images})

    info, licenses = _dataset_info(cfg, seed, split), [_LICENSE]
    annotation_dir = out_dir / "annotations"
    _write_canonical_json(annotation_dir / f"instances_{split}.json", {
        "info": info, "licenses": licenses, "images": images, "annotations": instances,
        "categories": coco_categories(cfg)})
    _write_canonical_json(annotation_dir / f"captions_{split}.json", {
        "info": info, "licenses": licenses, "images": images, "annotations": captions})
    return object_counts


def write_coco_dataset(out_dir: str | Path, cfg: ToyWorldConfig, split_sizes: Mapping[str, int],
                       seed: int, progress: bool = True) -> dict[str, Any]:
    """Write a COCO-layout toy dataset and return a summary of what it contains.

    Layout: ``images/<split>/<image_id:012d>.jpg``, ``annotations/instances_<split>.json``
    (visible-instance masks as compressed RLE, official COCO category ids) and
    ``annotations/captions_<split>.json`` (two captions per image). Same seed and config give
    byte-identical files; every file is written to a temporary name and renamed into place.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    _check_splits(split_sizes)
    out_dir = Path(out_dir)
    per_class: Counter = Counter()
    counts_by_split = {split: _write_split(out_dir, cfg, int(seed), split, int(size), progress,
                                           per_class)
                       for split, size in split_sizes.items()}
    all_counts = [count for counts in counts_by_split.values() for count in counts]
    return {
        "images": {split: len(counts) for split, counts in counts_by_split.items()},
        "instances": {split: int(sum(counts)) for split, counts in counts_by_split.items()},
        "instances_per_class": {name: per_class.get(name, 0) for name in cfg.classes},
        "mean_objects_per_image": float(np.mean(all_counts)) if all_counts else 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------------------------

_INSTANCE_COLOURS = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
], dtype=np.uint8)


def preview_grid(out_path: str | Path, cfg: ToyWorldConfig, seed: int, n: int = 16,
                 split: str = "train") -> Path:
    """Save a PNG of the first ``n`` images of ``split`` (as written with ``seed``), each beside
    its instance map in false colours; four image/map pairs per row."""
    size, gap, per_row = cfg.image_size, 4, 4
    rows = math.ceil(n / per_row)
    sheet = np.full((rows * (size + gap) + gap, per_row * (2 * size + 3 * gap) + gap, 3),
                    255, dtype=np.uint8)
    for index in range(n):
        rendered = render_scene(scene_for_image(cfg, seed, split, index), cfg)
        top = gap + (index // per_row) * (size + gap)
        left = gap + (index % per_row) * (2 * size + 3 * gap)
        sheet[top:top + size, left:left + size] = rendered.image
        colours = _INSTANCE_COLOURS[rendered.instance_map % len(_INSTANCE_COLOURS)]
        sheet[top:top + size, left + size + gap:left + 2 * size + gap] = colours
    out_path = Path(out_path)
    with atomic_open(out_path, "wb") as handle:
        Image.fromarray(sheet).save(handle, format="PNG")
    return out_path
