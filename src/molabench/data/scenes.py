"""``data=scenes``: procedurally rendered indoor scenes, the offline stand-in for NYUv2.

Same tasks, target formats and augmentation as :mod:`molabench.data.nyuv2` (13-class
segmentation, depth, surface normal; setting ``single_input``), built from a seed in seconds
on one CPU core, no download. See ``docs/dense.md``, "A synthetic stand-in".

Scene model. One geometry drives every target. A box room (floor ``Z = 0``, ceiling, four walls;
each plane tilted by ~1 degree so no plane is exactly axis-aligned) holds three to five objects —
boxes (rotated about the vertical), spheres and vertical cylinders — whose kind fixes shape, size,
colour and texture (:data:`KINDS`). A pinhole camera (:func:`intrinsics`: ``fx = fy = 0.81 W``,
``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``, Kinect-like field of view) stands 1.2-1.6 m high
near the back of the room with a small random yaw, pitch (looking slightly down) and roll. One
ray per pixel is cast through the centre of the pixel and intersected analytically with every
surface; the nearest hit gives

- depth: the camera ``z`` of the hit in metres (the ray is parametrised so that ``t`` = depth),
  between 0.5 and 10 by construction;
- segmentation: the class of the hit surface (:data:`CLASSES`: 0 floor, 1 wall, 2 ceiling and
  ten object kinds); pixels on the far side of a class boundary (one pixel wide) are -1
  (ignore), a few percent, like NYUv2's unlabelled outlines;
- normal: the analytic unit normal of the hit surface in camera coordinates, oriented toward
  the camera (``n . ray < 0``).

Camera coordinates (OpenCV): ``x`` right in the image, ``y`` down in the image, ``z`` forward
(into the scene). A pixel (row ``v``, column ``u``) at depth ``d`` back-projects to
``P = d * ((u - cx) / fx, (v - cy) / fy, 1)``. With ``P_u`` and ``P_v`` its derivatives along
columns (horizontal) and rows (vertical), the normal is ``normalise(P_v x P_u)`` =
``-normalise(P_u x P_v)`` up to discretisation. Since ``cx`` is the image centre, mirroring
the image left-right mirrors the scene in ``x``: the flipped sample's normals are the original
ones with ``n_x`` negated, as :class:`~molabench.data.augment.ScaleCropFlip` assumes. A surface
facing the camera head-on has normal ``(0, 0, -1)``, the floor roughly ``(0, -1, 0)``.

Invalid pixels: every scene has a window in a wall (mostly the back wall); the pixels that see
it have depth 0 and normal (0, 0, 0) (missing, as in the release), label "wall", and show bright
daylight in the image — a few percent of all pixels. Valid depths are > 0; a valid normal whose
components would sum to exactly 0 (the loss would treat it as missing) is nudged by ~0.2 degrees.

Image: per-class albedo (jittered per instance) times a class-specific texture in surface
coordinates (checker floor, wood grain, panels, stripes, fabric, dots, bands, a colourful
painting), times Lambertian shading from a ceiling point light and a weaker light at the camera,
plus ambient, times a depth attenuation ``exp(-0.04 d)``, plus Gaussian noise (sigma 0.015),
clipped to [0, 1]. Shading makes normals visible in the image, attenuation and texture scale make
depth visible.

Every class appears in every split of four scenes or more: scene ``i`` holds the object kinds
``3i, 3i + 1, 3i + 2 (mod 10)`` plus up to two random ones, and a layout is redrawn (from the same
scene generator) until each cycled object, the floor and a wall keep at least ``H*W/500``
labelled pixels, every third scene shows the ceiling, and every depth lies in [0.5, 10].

Determinism: scene ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([data_seed, s,
i])``, so a scene does not depend on the sizes of the splits (the test split is the same for any
``n_train``). The MTAN ``.npy`` layout is written by ``scripts/make_scenes.py``; the NYUv2 loader
reads it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from molabench.data import DATASETS
from molabench.data.augment import ScaleCropFlip
from molabench.data.base import MultiTaskData
from molabench.data.nyuv2 import NUM_CLASSES, TASKS, DenseSplit
from molabench.errors import ConfigError

CLASSES = (
    "floor",
    "wall",
    "ceiling",
    "bed",
    "table",
    "cabinet",
    "chair",
    "sofa",
    "tv",
    "painting",
    "ball",
    "lamp",
    "bin",
)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
MIN_DEPTH, MAX_DEPTH = 0.5, 10.0
FOCAL = 0.81  # fx = fy = FOCAL * width (Kinect: 518.9 px at 640)
ROOM = 6  # surfaces 0..5: floor, ceiling, left, right, back and rear wall; objects follow
ROOM_CLASSES = (0, 2, 1, 1, 1, 1)
ROOM_TEXTURES = ("checker", "plain", "roll", "roll", "roll", "roll")
NOISE = 0.015


@dataclass(frozen=True)
class Kind:
    """An object kind: primitive, nominal size in metres, albedo, texture and where it stands."""

    shape: str  # box | sphere | cylinder
    size: tuple[float, ...]  # box: width, depth, height; sphere: radius; cylinder: radius, height
    colour: tuple[float, float, float]
    texture: str
    mount: str = "floor"  # floor | wall (flush with the back wall)
    lift: tuple[float, float] = (0.0, 0.0)  # height of the bottom above the floor (wall mounts)


KINDS: dict[int, Kind] = {
    3: Kind("box", (2.0, 1.5, 0.55), (0.72, 0.80, 0.92), "stripes"),  # bed
    4: Kind("box", (1.2, 0.8, 0.75), (0.62, 0.40, 0.20), "grain"),  # table
    5: Kind("box", (0.8, 0.45, 1.8), (0.40, 0.24, 0.13), "panels"),  # cabinet
    6: Kind("box", (0.5, 0.5, 0.9), (0.20, 0.58, 0.26), "plain"),  # chair
    7: Kind("box", (1.9, 0.85, 0.8), (0.66, 0.14, 0.16), "fabric"),  # sofa
    8: Kind("box", (1.15, 0.07, 0.68), (0.06, 0.07, 0.10), "plain", "wall", (0.8, 1.1)),  # tv
    9: Kind("box", (0.85, 0.04, 0.62), (0.90, 0.90, 0.90), "painting", "wall", (1.2, 1.6)),  # painting
    10: Kind("sphere", (0.32,), (0.95, 0.62, 0.08), "dots"),  # ball
    11: Kind("cylinder", (0.11, 1.55), (0.96, 0.94, 0.86), "plain"),  # lamp
    12: Kind("cylinder", (0.3, 0.65), (0.50, 0.30, 0.66), "bands"),  # bin
}
ROOM_COLOURS = {0: (0.70, 0.58, 0.42), 1: (0.84, 0.82, 0.76), 2: (0.93, 0.93, 0.93)}
WINDOW_COLOUR = np.array([0.86, 0.92, 1.0])


def intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` in pixels of the scenes camera; pixel (row v, column u) looks along
    ``((u - cx) / fx, (v - cy) / fy, 1)``."""
    f = FOCAL * width
    return f, f, (width - 1) / 2, (height - 1) / 2


def camera_rays(height: int, width: int) -> np.ndarray:
    """(3, H*W) camera-frame ray of every pixel, row-major, with unit ``z`` (so ``t`` = depth)."""
    fx, fy, cx, cy = intrinsics(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([((u - cx) / fx).ravel(), ((v - cy) / fy).ravel(), np.ones(height * width)])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _tilt(normal: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """``normal`` turned by a small random rotation (about sigma radians)."""
    return _unit(normal + rng.normal(0.0, sigma, 3))


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class _Object:
    cls: int
    shape: str
    centre: np.ndarray  # box/sphere: centre; cylinder: centre of the bottom disc
    size: np.ndarray  # box: half extents; sphere: (r,); cylinder: (r, height)
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))  # box: local -> world
    colour: np.ndarray = field(default_factory=lambda: np.ones(3))
    phase: np.ndarray = field(default_factory=lambda: np.zeros(3))  # texture offsets


@dataclass
class _Layout:
    origin: np.ndarray
    rot: np.ndarray  # camera -> world (columns: right, down, forward)
    planes: list[tuple[np.ndarray, float]]  # inward normal n, offset c: n . X + c >= 0 inside
    room: tuple[float, float, float, float]  # half width, back wall Y, rear wall Y, height
    objects: list[_Object]
    window: tuple[int, float, float, float, float]  # wall surface id, (a0, a1) along the wall, (z0, z1)
    light: np.ndarray
    gains: tuple[float, float, float]  # ambient, ceiling light, camera light
    colours: np.ndarray  # (ROOM, 3) albedo of the room surfaces
    floor_tile: float


def _draw_layout(rng: np.random.Generator, kinds: list[int]) -> _Layout:
    half_w = rng.uniform(1.8, 3.0)
    back, rear, height = rng.uniform(4.0, 7.0), -1.2, rng.uniform(2.5, 2.9)
    eye = np.array([rng.uniform(-0.3, 0.3) * half_w, 0.0, rng.uniform(1.2, 1.6)])
    yaw, pitch, roll = np.radians(rng.uniform(-15, 15)), np.radians(rng.uniform(-12, 0)), np.radians(rng.uniform(-2, 2))
    fwd = np.array([math.cos(pitch) * math.sin(yaw), math.cos(pitch) * math.cos(yaw), math.sin(pitch)])
    right = _unit(np.cross(fwd, [0.0, 0.0, 1.0]))
    down = np.cross(fwd, right)
    right, down = math.cos(roll) * right + math.sin(roll) * down, -math.sin(roll) * right + math.cos(roll) * down
    rot = np.stack([right, down, fwd], axis=1)
    anchors = [(0, 2, 0), (0, 2, height), (-half_w, 2, 1.2), (half_w, 2, 1.2), (0, back, 1.2), (0, rear, 1.2)]
    axes = [(0, 0, 1), (0, 0, -1), (1, 0, 0), (-1, 0, 0), (0, -1, 0), (0, 1, 0)]
    planes = []
    for anchor, axis in zip(anchors, axes, strict=True):
        n = _tilt(np.array(axis, float), rng, 0.012)
        planes.append((n, -float(n @ np.array(anchor, float))))

    half_fov = math.atan(0.5 / FOCAL)
    objects: list[_Object] = []
    footprints: list[tuple[float, float, float]] = []
    extra = int(rng.integers(0, 3))
    for cls in kinds + [int(k) for k in rng.integers(3, NUM_CLASSES, extra)]:
        kind = KINDS[cls]
        scale = rng.uniform(0.85, 1.15)
        size = np.array(kind.size) * scale
        colour = np.clip(np.array(kind.colour) * rng.uniform(0.85, 1.15, 3), 0.02, 1.0)
        phase = rng.uniform(0, 2 * math.pi, 3)
        if kind.mount == "wall":
            w, d, h = size
            n_back, c_back = planes[4]
            x = eye[0] + (back - 0.5) * math.tan(yaw + rng.uniform(-0.7, 0.7) * half_fov)
            x = float(np.clip(x, -half_w + w, half_w - w))
            z = rng.uniform(*kind.lift) + h / 2
            wall_y = -(n_back[0] * x + n_back[2] * z + c_back) / n_back[1]
            box_yaw = math.atan2(n_back[0], -n_back[1])  # local y (thin side) along the wall normal
            centre = np.array([x, wall_y - d / 2 - 0.01, z])
            objects.append(_Object(cls, "box", centre, size / 2, _rot_z(box_yaw), colour, phase))
            continue
        radius = math.hypot(size[0], size[1]) / 2 if kind.shape == "box" else size[0]
        for _ in range(12):  # try for a spot that overlaps nothing placed so far
            angle = yaw + rng.uniform(-0.8, 0.8) * half_fov
            dist = rng.uniform(2.0, max(back - 0.6, 2.1))
            x = float(np.clip(eye[0] + dist * math.sin(angle), -half_w + radius + 0.05, half_w - radius - 0.05))
            y = float(np.clip(dist * math.cos(angle), 1.2 + radius, back - radius - 0.05))
            if all(math.hypot(x - fx, y - fy) > radius + fr for fx, fy, fr in footprints):
                break
        footprints.append((x, y, radius))
        if kind.shape == "box":
            centre = np.array([x, y, size[2] / 2])
            objects.append(_Object(cls, "box", centre, size / 2, _rot_z(rng.uniform(-math.pi, math.pi)), colour, phase))
        elif kind.shape == "sphere":
            objects.append(_Object(cls, "sphere", np.array([x, y, size[0]]), size, colour=colour, phase=phase))
        else:
            objects.append(_Object(cls, "cylinder", np.array([x, y, 0.0]), size, colour=colour, phase=phase))

    if rng.random() < 0.75:  # window in the back wall, else in the side wall the camera turns to
        wall, centre_a, span = 4, eye[0] + back * math.tan(yaw + rng.uniform(-0.5, 0.5) * half_fov), half_w
    else:
        wall, centre_a, span = (3 if yaw > 0 else 2), rng.uniform(2.5, back - 0.8), back
    w_half = rng.uniform(0.45, 0.75)
    centre_a = float(np.clip(centre_a, -span + w_half + 0.1, span - w_half - 0.1)) if wall == 4 else centre_a
    z0 = rng.uniform(0.8, 1.1)
    window = (wall, centre_a - w_half, centre_a + w_half, z0, z0 + rng.uniform(1.0, 1.4))

    light = np.array([rng.uniform(-0.5, 0.5) * half_w, rng.uniform(1.0, back - 1.0), height - 0.25])
    gains = (rng.uniform(0.2, 0.3), rng.uniform(0.9, 1.3), rng.uniform(0.3, 0.5))
    colours = np.array([ROOM_COLOURS[c] for c in ROOM_CLASSES]) * rng.uniform(0.85, 1.15, (ROOM, 3))
    colours[2:] = colours[2] * rng.uniform(0.95, 1.05, (4, 3))  # one paint for all walls
    room = (half_w, back, rear, height)
    return _Layout(eye, rot, planes, room, objects, window, light, gains, np.clip(colours, 0, 1), rng.uniform(0.3, 0.6))


def _cast(layout: _Layout, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth ``t`` (P,) and surface id (P,) of the nearest hit of every world-frame ray (3, P)."""
    o = layout.origin
    t_best = np.full(rays.shape[1], np.inf)
    surf = np.full(rays.shape[1], -1, dtype=np.int16)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (n, c) in enumerate(layout.planes):  # the camera is inside: exit through the nearest plane
            den = n @ rays
            t = -(n @ o + c) / den
            hit = (den < 0) & (t < t_best)
            t_best[hit], surf[hit] = t[hit], i
        for k, ob in enumerate(layout.objects):
            if ob.shape == "box":
                lo = ob.rot.T @ (o - ob.centre)
                ld = ob.rot.T @ rays
                ld[ld == 0] = 1e-12
                t1, t2 = (-ob.size[:, None] - lo[:, None]) / ld, (ob.size[:, None] - lo[:, None]) / ld
                t_near, t_far = np.minimum(t1, t2).max(0), np.maximum(t1, t2).min(0)
                t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
            elif ob.shape == "sphere":
                oc = o - ob.centre
                a, b, c = (rays * rays).sum(0), oc @ rays, oc @ oc - ob.size[0] ** 2
                disc = b * b - a * c
                t = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
                t[t <= 0] = np.inf
            else:
                r, h = ob.size
                oc = o - ob.centre
                a = rays[0] ** 2 + rays[1] ** 2
                b = oc[0] * rays[0] + oc[1] * rays[1]
                c = oc[0] ** 2 + oc[1] ** 2 - r * r
                disc = b * b - a * c
                t = (-b - np.sqrt(np.maximum(disc, 0))) / a
                z = oc[2] + t * rays[2]
                t = np.where((disc > 0) & (t > 0) & (z >= 0) & (z <= h), t, np.inf)
                t_cap = (h - oc[2]) / rays[2]
                px, py = oc[0] + t_cap * rays[0], oc[1] + t_cap * rays[1]
                t = np.where((t_cap > 0) & (px * px + py * py <= r * r), np.minimum(t, t_cap), t)
            hit = t < t_best
            t_best[hit], surf[hit] = t[hit], ROOM + k
    return t_best, surf


def _surface_normals(layout: _Layout, points: np.ndarray, surf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World normals (3, P) and texture coordinates (3, P) (world or object-local) of every hit."""
    normals = np.zeros_like(points)
    coords = points.copy()
    for i, (n, _) in enumerate(layout.planes):
        normals[:, surf == i] = n[:, None]
    for k, ob in enumerate(layout.objects):
        m = surf == ROOM + k
        if not m.any():
            continue
        rel = points[:, m] - ob.centre[:, None]
        if ob.shape == "box":
            local = ob.rot.T @ rel
            face = np.argmin(ob.size[:, None] - np.abs(local), axis=0)
            ln = np.zeros_like(local)
            ln[face, np.arange(local.shape[1])] = np.sign(local[face, np.arange(local.shape[1])])
            normals[:, m], coords[:, m] = ob.rot @ ln, local
        elif ob.shape == "sphere":
            normals[:, m], coords[:, m] = rel / ob.size[0], rel
        else:
            r, h = ob.size
            radial = np.hypot(rel[0], rel[1])
            cap = np.abs(rel[2] - h) < np.abs(radial - r)
            side = np.stack([rel[0], rel[1], np.zeros_like(radial)]) / np.maximum(radial, 1e-12)
            normals[:, m] = np.where(cap, np.array([0.0, 0.0, 1.0])[:, None], side)
            coords[:, m] = rel
    return normals, coords


def _texture(name: str, q: np.ndarray, phase: np.ndarray, tile: float) -> np.ndarray:
    """Multiplicative texture ``name`` (3, M) or (M,) at surface coordinates ``q`` (3, M), in metres."""
    x, y, z = q
    p0, p1, p2 = phase
    if name == "checker":  # floor tiles
        return 0.82 + 0.18 * ((np.floor(x / tile) + np.floor(y / tile)) % 2)
    if name == "roll":  # walls: faint paint-roller marks
        return 0.96 + 0.04 * np.sin(2 * math.pi * (x + y) / 0.5 + p0)
    if name == "stripes":  # bed
        return 0.8 + 0.2 * (np.sin(2 * math.pi * x / 0.35 + p0) > 0)
    if name == "grain":  # table: wood grain
        return 0.82 + 0.18 * np.sin(2 * math.pi * (6 * x + 0.6 * np.sin(3 * y + p1)) + p0)
    if name == "panels":  # cabinet: dark seams between panels
        return 1.0 - 0.5 * (np.abs(np.sin(math.pi * (x + y) / 0.4 + p0)) < 0.15)
    if name == "fabric":  # sofa
        return 0.88 + 0.12 * np.sin(35 * (x + y) + p0) * np.sin(35 * z + p1)
    if name == "painting":  # colourful pattern
        return np.stack(
            [
                0.55 + 0.45 * np.sin(9 * x + p0),
                0.55 + 0.45 * np.sin(11 * z + p1),
                0.55 + 0.45 * np.sin(7 * (x + z) + p2),
            ]
        )
    if name == "dots":  # ball
        return 1.0 - 0.55 * (np.sin(14 * x + p0) * np.sin(14 * y + p1) * np.sin(14 * z + p2) > 0.3)
    if name == "bands":  # bin: horizontal bands
        return 0.7 + 0.3 * (np.sin(2 * math.pi * z / 0.16 + p0) > 0)
    return np.ones_like(x)


def _boundary_ignore(label: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Pixels on the far side of a class boundary (4-neighbourhood), one pixel wide."""
    ignore = np.zeros(label.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        diff = label[tuple(a)] != label[tuple(b)]
        ignore[tuple(a)] |= diff & (depth[tuple(a)] >= depth[tuple(b)])
        ignore[tuple(b)] |= diff & (depth[tuple(b)] > depth[tuple(a)])
    return ignore


def render_scene(
    rng: np.random.Generator, height: int, width: int, kinds: list[int], need_ceiling: bool = False
) -> dict[str, np.ndarray]:
    """One scene in the MTAN layout: image (H,W,3) float32 in [0, 1], label (H,W) int8, depth
    (H,W,1) float32, normal (H,W,3) float32, and the hit surface id (H,W) int16 (room surfaces
    0..5, objects 6..). The layout is redrawn until it passes the visibility checks (module doc)."""
    cam_rays = camera_rays(height, width)
    min_px = max(1, height * width // 500)
    for _attempt in range(200):
        layout = _draw_layout(rng, kinds)
        rays = layout.rot @ cam_rays
        t, surf = _cast(layout, rays)
        if not (np.isfinite(t).all() and t.min() >= MIN_DEPTH and t.max() <= MAX_DEPTH):
            continue
        cls_of = np.array(list(ROOM_CLASSES) + [ob.cls for ob in layout.objects], dtype=np.int8)
        label = cls_of[surf].reshape(height, width)
        label[_boundary_ignore(label, t.reshape(height, width))] = -1
        labelled = np.bincount(label.ravel() + 1, minlength=NUM_CLASSES + 1)[1:]
        required = [0, 1, *kinds, *([2] if need_ceiling else [])]
        if all(labelled[c] >= min_px for c in required):
            break
    else:  # pragma: no cover - the checks pass within a few draws
        raise RuntimeError("scenes: could not draw a scene that shows its objects; report this as a bug")

    points = layout.origin[:, None] + t * rays
    normals, coords = _surface_normals(layout, points, surf)
    wall, a0, a1, z0, z1 = layout.window
    along = points[0] if wall == 4 else points[1]
    window = (surf == wall) & (along >= a0) & (along <= a1) & (points[2] >= z0) & (points[2] <= z1)

    # image: albedo x texture x (ambient + ceiling light + camera light) x attenuation + noise
    albedo = np.empty_like(points)
    for s in np.unique(surf).tolist():
        m = surf == s
        if s < ROOM:
            albedo[:, m] = layout.colours[s][:, None] * _texture(
                ROOM_TEXTURES[s], coords[:, m], np.zeros(3), layout.floor_tile
            )
        else:
            ob = layout.objects[s - ROOM]
            albedo[:, m] = ob.colour[:, None] * _texture(
                KINDS[ob.cls].texture, coords[:, m], ob.phase, layout.floor_tile
            )
    to_light = layout.light[:, None] - points
    dist2 = (to_light**2).sum(0)
    lam_light = np.maximum(0.0, (normals * to_light).sum(0) / np.sqrt(dist2)) / (1 + 0.05 * dist2)
    lam_cam = np.maximum(0.0, -(normals * rays).sum(0) / np.linalg.norm(rays, axis=0)) / (1 + 0.02 * t * t)
    ambient, g_light, g_cam = layout.gains
    shade = (ambient + g_light * lam_light + g_cam * lam_cam) * np.exp(-0.04 * t)
    image = albedo * shade
    sky = WINDOW_COLOUR[:, None] * (0.9 + 0.08 * (points[2] - z0) / (z1 - z0))
    image = np.where(window, sky, image)
    image = image + rng.normal(0.0, NOISE, image.shape)
    image = np.clip(image, 0.0, 1.0).T.reshape(height, width, 3)

    # targets in camera coordinates, normals facing the camera
    n_cam = layout.rot.T @ normals
    n_cam *= np.where((n_cam * cam_rays).sum(0) > 0, -1.0, 1.0)
    n_cam = n_cam.T.reshape(height, width, 3).astype(np.float32)
    depth = t.reshape(height, width, 1).astype(np.float32)
    invalid = window.reshape(height, width)
    depth[invalid] = 0.0
    n_cam[invalid] = 0.0
    n_cam = _nudge_zero_sums(n_cam, ~invalid)
    surface = surf.reshape(height, width)
    return {"image": image.astype(np.float32), "label": label, "depth": depth, "normal": n_cam, "surface": surface}


def _nudge_zero_sums(normal: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Turn (by ~0.2 degrees) every valid normal whose components sum to (almost) 0, which the
    NYUv2 losses and metrics would take for a missing normal."""
    bad = valid & (np.abs(normal.sum(-1)) < 1e-4)
    if bad.any():
        moved = normal[bad].astype(np.float64) + 2e-3
        normal[bad] = (moved / np.linalg.norm(moved, axis=-1, keepdims=True)).astype(np.float32)
    return normal


def scene_kinds(index: int) -> list[int]:
    """The three object classes cycled into scene ``index`` (all ten in any four consecutive scenes)."""
    return [3 + (3 * index + j) % 10 for j in range(3)]


def generate(split: str, n: int, height: int = 96, width: int = 128, data_seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` scenes of a split (``train``/``val``/``test``) stacked in the MTAN layout (N first):
    image (N,H,W,3) float32, label (N,H,W) int8, depth (N,H,W,1), normal (N,H,W,3), surface (N,H,W)."""
    _check_size(height, width)
    scenes = [
        render_scene(
            np.random.default_rng([int(data_seed), SPLIT_IDS[split], i]), height, width, scene_kinds(i), i % 3 == 0
        )
        for i in range(n)
    ]
    return {k: np.stack([s[k] for s in scenes]) for k in scenes[0]}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``round(255 * image)`` exactly as the NYUv2 loader stores a float image."""
    return np.rint(image * 255.0).clip(0, 255).astype(np.uint8)


def dense_split(arrays: dict[str, np.ndarray]) -> DenseSplit:
    """A :class:`DenseSplit` (uint8 images, int8 labels, float32 depth/normal, channels first)."""
    return DenseSplit(
        torch.from_numpy(to_uint8(arrays["image"])).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(arrays["label"].astype(np.int8)),
        torch.from_numpy(arrays["depth"]).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(arrays["normal"]).permute(0, 3, 1, 2).contiguous(),
    )


def _check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v % 8:
            raise ConfigError(f"data.{name} must be a multiple of 8 and at least 16 (e.g. 96x128), got {v!r}")


def _check_count(name: str, v: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"data.{name} must be an integer >= 1, got {v!r}")


@DATASETS.register("scenes")
def build_scenes(
    n_train: int = 320,
    n_val: int = 64,
    n_test: int = 128,
    height: int = 96,
    width: int = 128,
    data_seed: int = 0,
    augment: bool = True,
    scales: tuple[float, ...] = (1.0, 1.2, 1.5),
) -> MultiTaskData:
    """The procedural NYUv2 stand-in (module doc): ``train``/``val``/``test`` splits of rendered scenes."""
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check_count(name, v)
    _check_size(height, width)
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        raise ConfigError(f"data.data_seed must be a non-negative integer, got {data_seed!r}")
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) < 1.0:
        raise ConfigError(
            f"data.scales must be a non-empty list of zoom factors >= 1 (e.g. [1.0, 1.2, 1.5]), got {list(scales)}"
        )
    counts = {"train": n_train, "val": n_val, "test": n_test}
    splits = {name: dense_split(generate(name, n, height, width, data_seed)) for name, n in counts.items()}
    fx, fy, cx, cy = intrinsics(height, width)
    return MultiTaskData(
        name="scenes",
        setting="single_input",
        tasks=list(TASKS),
        splits=splits,  # type: ignore[arg-type]
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        augment=ScaleCropFlip(scales=scales) if augment else None,
        info={
            "data_seed": data_seed,
            "classes": list(CLASSES),
            "intrinsics": {"fx": fx, "fy": fy, "cx": cx, "cy": cy},
            "image_storage": "uint8 = round(255 * image)",
        },
    )


__all__ = [
    "CLASSES",
    "KINDS",
    "build_scenes",
    "camera_rays",
    "dense_split",
    "generate",
    "intrinsics",
    "render_scene",
    "scene_kinds",
    "to_uint8",
]
