"""A MOVi-A-like scene in NumPy: rigid-body motion on a floor, and a ray caster that renders it.

Objects are spheres, cylinders and cubes in two sizes and eight colours, rubber (matte) or metal (specular),
under one light with shadows, seen through a pinhole camera that jitters slightly per video (as MOVi-A).
They are dropped or slid onto the floor with random velocities, slow down by friction, bounce off the
floor and each other, and spin about the vertical axis. The renderer returns per-pixel colour, the id of
the nearest surface, its distance from the camera (MOVi's depth), and the exact backward flow of that
surface point (where it was in the previous frame, from the rigid motion, projected).
"""

from __future__ import annotations

import dataclasses

import numpy as np

SHAPES = ("cube", "cylinder", "sphere")
SIZES = {"small": 0.35, "large": 0.7}  # half-extent / radius, world units (MOVi: 0.7 and 1.4 across)
COLOURS = np.array([  # CLEVR / MOVi-A palette: blue brown cyan gray green purple red yellow
    [42, 75, 215], [129, 74, 25], [41, 208, 208], [87, 87, 87],
    [29, 105, 20], [129, 38, 192], [173, 35, 35], [255, 238, 51]], np.float64) / 255.0
FLOOR_RGB = np.array([0.62, 0.62, 0.60])
SKY_RGB = np.array([0.78, 0.80, 0.83])
FOV = 0.857556  # MOVi camera field of view (radians)
PLACE_EXTENT = 3.2  # objects start at |x|, |y| <= this (world units)


@dataclasses.dataclass(frozen=True)
class Style:
    """How scenes look and move. The defaults are MOVi-A's; the demo's differ (Makefile, DEMO_SYNTH_ARGS)."""
    size_scale: float = 1.0  # multiplies both object sizes
    speed: float = 1.0  # multiplies the initial horizontal velocities
    friction: float = 1.2  # sliding friction coefficient: how soon objects stop
    shadow_light: float = 0.25  # the share of the direct light that reaches a point in shadow
    floor_jitter: float = 0.0  # the floor's gray level is scaled by U(1 - j, 1 + j), drawn per video
    floor_tint: float = 0.0  # then each of its channels by its own U(1 - t, 1 + t), drawn per video: a coloured floor
    floor_gradient: float = 0.0  # its brightness ramps by +-g across the objects' area, in a direction drawn per video

    def __post_init__(self):
        for name in ("size_scale", "speed", "friction", "shadow_light"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"style {name} must be >= 0, got {getattr(self, name)}")
        for name in ("floor_jitter", "floor_tint", "floor_gradient"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"style {name} must be in [0, 1), got {getattr(self, name)}")
        if self.shadow_light > 1:
            raise ValueError(f"style shadow_light must be in [0, 1], got {self.shadow_light}")


MOVI_A = Style()


@dataclasses.dataclass
class Scene:
    shape: np.ndarray  # (N,) index into SHAPES
    size: np.ndarray  # (N,) half-extent
    colour: np.ndarray  # (N, 3)
    metal: np.ndarray  # (N,) bool
    pos: np.ndarray  # (T, N, 3) centre of the object's base footprint at floor level + height offset
    angle: np.ndarray  # (T, N) rotation about z
    cam_pos: np.ndarray  # (3,)
    cam_rot: np.ndarray  # (3, 3) rows: right, up, forward
    light: np.ndarray  # (3,) unit vector towards the light
    floor: np.ndarray = dataclasses.field(default_factory=lambda: FLOOR_RGB)  # (3,) the floor's colour
    floor_ramp: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))  # (2,) brightness per unit (x, y)
    shadow_light: float = Style.shadow_light


def sample_scene(rng: np.random.Generator, num_objects: int, num_frames: int, fps: float = 12.0,
                 substeps: int = 8, style: Style = MOVI_A) -> Scene:
    n = num_objects
    shape = rng.integers(0, len(SHAPES), n)
    size = np.where(rng.random(n) < 0.5, SIZES["small"], SIZES["large"]) * style.size_scale
    colour = COLOURS[rng.integers(0, len(COLOURS), n)]
    metal = rng.random(n) < 0.5
    radius = np.where(shape == 0, size * 1.25, size)  # collision disc; a cube's is between in- and circumradius
    xy = _place(rng, radius, extent=PLACE_EXTENT)
    height = np.where(rng.random(n) < 0.4, rng.uniform(0.5, 2.5, n), 0.0)  # some are dropped
    vel = np.concatenate([rng.normal(0.0, 1.4, (n, 2)) - 0.25 * xy, np.zeros((n, 1))], axis=1) * style.speed
    ang_vel = rng.normal(0.0, 1.5, n) * (shape != 2)
    pos0 = np.concatenate([xy, height[:, None]], axis=1)
    pos, angle = _simulate(pos0, vel, rng.uniform(0, 2 * np.pi, n), ang_vel, radius, size ** 3,
                           num_frames, 1.0 / fps, substeps, style.friction)
    cam_pos = np.array([7.5, -6.5, 5.3]) + rng.normal(0.0, 0.25, 3)  # MOVi-A: small jitter around a fixed pose
    target = rng.normal(0.0, 0.15, 3) * np.array([1, 1, 0])
    light = np.array([-0.4, -0.3, 1.0]) + rng.normal(0.0, 0.15, 3)
    # Drawn last, and only when asked for, so that the rest of a scene does not depend on it.
    j = style.floor_jitter
    floor = FLOOR_RGB * rng.uniform(1 - j, 1 + j) if j else FLOOR_RGB
    if style.floor_tint:
        floor = np.clip(floor * rng.uniform(1 - style.floor_tint, 1 + style.floor_tint, 3), 0.0, 1.0)
    ramp = np.zeros(2)
    if style.floor_gradient:  # +-g at the edge of the area the objects start in (|x|, |y| <= PLACE_EXTENT)
        a = rng.uniform(0, 2 * np.pi)
        ramp = style.floor_gradient / PLACE_EXTENT * np.array([np.cos(a), np.sin(a)])
    return Scene(shape, size, colour, metal, pos, angle, cam_pos, _look_at(cam_pos, target),
                 light / np.linalg.norm(light), floor, ramp, style.shadow_light)


def _place(rng, radius, extent):
    """Rejection-samples non-overlapping floor positions."""
    xy = np.zeros((len(radius), 2))
    for i, r in enumerate(radius):
        for _ in range(200):
            cand = rng.uniform(-extent, extent, 2)
            if all(np.linalg.norm(cand - xy[j]) > r + radius[j] + 0.05 for j in range(i)):
                break
        xy[i] = cand
    return xy


def _simulate(pos, vel, angle, ang_vel, radius, mass, num_frames, dt, substeps, friction):
    """Semi-implicit Euler with gravity, floor bounce, sliding friction and elastic disc collisions."""
    g, restitution, spin_decay = 9.81, 0.45, 0.9
    pos, vel, angle, ang_vel = pos.copy(), vel.copy(), angle.copy(), ang_vel.copy()
    out_pos, out_angle = np.zeros((num_frames,) + pos.shape), np.zeros((num_frames,) + angle.shape)
    h = dt / substeps
    for t in range(num_frames):
        out_pos[t], out_angle[t] = pos, angle
        for _ in range(substeps):
            airborne = pos[:, 2] > 1e-6
            vel[:, 2] -= g * h * airborne
            pos += vel * h
            landed = pos[:, 2] < 0
            pos[landed, 2] = 0.0
            vel[landed, 2] = np.where(-vel[landed, 2] * restitution > 0.4, -vel[landed, 2] * restitution, 0.0)
            on_floor = pos[:, 2] <= 1e-6
            speed = np.linalg.norm(vel[:, :2], axis=1)
            slow = np.maximum(speed - friction * g * 0.1 * h, 0.0) / np.maximum(speed, 1e-9)
            vel[on_floor, :2] *= slow[on_floor, None]
            angle += ang_vel * h
            ang_vel *= spin_decay ** h
            _collide(pos, vel, radius, mass)
    return out_pos, out_angle


def _collide(pos, vel, radius, mass):
    n = len(radius)
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[j, :2] - pos[i, :2]
            dist = np.linalg.norm(d)
            overlap = radius[i] + radius[j] - dist
            if overlap <= 0 or abs(pos[i, 2] - pos[j, 2]) > radius[i] + radius[j]:
                continue
            nrm = d / max(dist, 1e-9)
            rel = np.dot(vel[j, :2] - vel[i, :2], nrm)
            w_i, w_j = mass[j] / (mass[i] + mass[j]), mass[i] / (mass[i] + mass[j])
            pos[i, :2] -= nrm * overlap * w_i
            pos[j, :2] += nrm * overlap * w_j
            if rel < 0:  # approaching: exchange momentum along the normal (restitution 0.9)
                impulse = 1.9 * rel
                vel[i, :2] += nrm * impulse * w_i
                vel[j, :2] -= nrm * impulse * w_j


def _look_at(cam, target):
    fwd = target - cam
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(right, fwd), fwd])


def _rot_z(a):
    """(cos a, sin a) of a rotation about the vertical axis."""
    return np.cos(a), np.sin(a)


# ---------------------------------------------------------------------------------------------------------
# Ray casting
# ---------------------------------------------------------------------------------------------------------


def camera_rays(scene: Scene, h: int, w: int) -> np.ndarray:
    """(H*W, 3) unit ray directions through pixel centres."""
    t = np.tan(FOV / 2)
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / h * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    right, up, fwd = scene.cam_rot
    d = fwd + (xs.ravel()[:, None] * t) * right - (ys.ravel()[:, None] * t) * up
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def project(scene: Scene, points: np.ndarray, h: int, w: int) -> np.ndarray:
    """World points (M, 3) -> continuous (row, col) pixel coordinates (pixel centres at +0.5)."""
    rel = (points - scene.cam_pos) @ scene.cam_rot.T  # (right, up, fwd) components
    t = np.tan(FOV / 2)
    fwd = np.maximum(rel[:, 2], 1e-6)
    x, y = rel[:, 0] / (fwd * t), rel[:, 1] / (fwd * t)
    return np.stack([(-y + 1) / 2 * h, (x + 1) / 2 * w], axis=1)


def _intersect(shape, size, centre, angle, origin, dirs):
    """Ray distances (inf on miss) and world-frame normals (0 on miss) for one object; origin (3,) or (M,3)."""
    with np.errstate(all="ignore"):  # misses produce inf/NaN intermediates; they are masked below
        dist, normal = _intersect_local(shape, size, centre, angle, origin, dirs)
    return dist, np.where(np.isfinite(dist)[:, None], normal, 0.0)


def _intersect_local(shape, size, centre, angle, origin, dirs):
    c, s = _rot_z(-angle)
    o = origin - centre
    o = np.stack([c * o[..., 0] - s * o[..., 1], s * o[..., 0] + c * o[..., 1], o[..., 2]], axis=-1)
    d = np.stack([c * dirs[:, 0] - s * dirs[:, 1], s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], axis=-1)
    o = np.broadcast_to(o, d.shape)
    inf = np.full(len(d), np.inf)
    normal = np.zeros_like(d)
    if SHAPES[shape] == "sphere":
        oc = o - np.array([0, 0, size])
        b = np.sum(oc * d, axis=1)
        disc = b * b - (np.sum(oc * oc, axis=1) - size * size)
        dist = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
        dist = np.where(dist > 1e-6, dist, np.inf)
        normal = (o + dist[:, None] * d - np.array([0, 0, size])) / size
    elif SHAPES[shape] == "cube":
        lo, hi = np.array([-size, -size, 0.0]), np.array([size, size, 2 * size])
        t1, t2 = (lo - o) / d, (hi - o) / d
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        near, far = np.nanmax(tmin, axis=1), np.nanmin(tmax, axis=1)
        dist = np.where((near <= far) & (near > 1e-6), near, inf)
        axis = np.nanargmax(tmin, axis=1)
        normal[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    else:  # cylinder: side + top cap
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        disc = b * b - a * (o[:, 0] ** 2 + o[:, 1] ** 2 - size * size)
        side = (-b - np.sqrt(np.maximum(disc, 0))) / a
        z = o[:, 2] + side * d[:, 2]
        side = np.where((disc > 0) & (a > 1e-12) & (z >= 0) & (z <= 2 * size) & (side > 1e-6), side, inf)
        cap = (2 * size - o[:, 2]) / d[:, 2]
        px, py = o[:, 0] + cap * d[:, 0], o[:, 1] + cap * d[:, 1]
        cap = np.where((cap > 1e-6) & (px * px + py * py <= size * size), cap, inf)
        dist = np.minimum(side, cap)
        hit = o + np.where(np.isfinite(dist), dist, 0)[:, None] * d
        normal = np.where((cap <= side)[:, None], np.array([0.0, 0.0, 1.0]),
                          np.stack([hit[:, 0], hit[:, 1], np.zeros(len(d))], 1) / size)
    c, s = _rot_z(angle)  # normals back to the world frame
    normal = np.stack([c * normal[:, 0] - s * normal[:, 1], s * normal[:, 0] + c * normal[:, 1], normal[:, 2]], 1)
    return dist, normal


def _hit(scene: Scene, t: int, k: int, origin: np.ndarray, dirs: np.ndarray):
    """_intersect for object k, evaluated only on rays that pass its bounding sphere (most rays do not)."""
    size = scene.size[k]
    centre = scene.pos[t, k] + np.array([0.0, 0.0, size])
    oc = centre - origin
    along = oc @ dirs.T if oc.ndim == 1 else np.sum(oc * dirs, axis=1)
    perp2 = np.sum(oc * oc, axis=-1) - along**2
    cand = np.nonzero((perp2 <= (1.8 * size) ** 2) & (along > -1.8 * size))[0]
    dist, normal = np.full(len(dirs), np.inf), np.zeros((len(dirs), 3))
    if len(cand):
        o = origin if origin.ndim == 1 else origin[cand]
        dist[cand], normal[cand] = _intersect(scene.shape[k], size, scene.pos[t, k], scene.angle[t, k], o, dirs[cand])
    return dist, normal


def render_frame(scene: Scene, t: int, dirs: np.ndarray):
    """Returns colour (M,3), id (M,) with 0 = floor/sky and n+1 = object n, distance (M,), hit points (M,3)."""
    m, n = len(dirs), len(scene.shape)
    with np.errstate(divide="ignore"):
        floor = np.where(dirs[:, 2] < -1e-9, -scene.cam_pos[2] / dirs[:, 2], np.inf)
    best, ids, normals = floor.copy(), np.zeros(m, np.int64), np.tile([0.0, 0.0, 1.0], (m, 1))
    for k in range(n):
        dist, normal = _hit(scene, t, k, scene.cam_pos, dirs)
        closer = dist < best
        best[closer], ids[closer], normals[closer] = dist[closer], k + 1, normal[closer]
    sky = ~np.isfinite(best)
    dist = np.where(sky, 1e3, best)
    points = scene.cam_pos + dist[:, None] * dirs
    shadow = np.zeros(m, bool)
    lit_points = points + normals * 1e-4
    for k in range(n):
        d_k, _ = _hit(scene, t, k, lit_points, np.broadcast_to(scene.light, (m, 3)))
        shadow |= np.isfinite(d_k) & (ids != k + 1)
    lambert = np.clip(normals @ scene.light, 0, 1) * np.where(shadow, scene.shadow_light, 1.0)
    limit = 1.5 * PLACE_EXTENT * np.linalg.norm(scene.floor_ramp)  # the ramp levels off towards the horizon
    ramp = 1.0 + np.clip(points[:, :2] @ scene.floor_ramp, -limit, limit)
    floor = np.clip(scene.floor * ramp[:, None], 0.0, 1.0)
    base = np.where(ids[:, None] > 0, scene.colour[np.maximum(ids - 1, 0)], floor)
    colour = base * (0.35 + 0.65 * lambert[:, None])
    refl = dirs - 2 * np.sum(dirs * normals, axis=1, keepdims=True) * normals
    spec = np.clip(refl @ scene.light, 0, 1) ** 40 * (~shadow)
    metal = (ids > 0) & scene.metal[np.maximum(ids - 1, 0)]
    colour = colour + np.where(metal, 0.8, 0.12)[:, None] * spec[:, None]
    colour[sky] = SKY_RGB
    return np.clip(colour, 0, 1), ids, dist, points


def backward_flow(scene: Scene, t: int, ids: np.ndarray, points: np.ndarray, h: int, w: int) -> np.ndarray:
    """(M, 2) (Δrow, Δcol): where each pixel's surface point was in frame t-1, minus where it is now."""
    if t == 0:
        return np.zeros((len(ids), 2))
    prev = points.copy()
    for k in np.unique(ids[ids > 0]):
        sel = ids == k
        c0, s0 = _rot_z(-scene.angle[t, k - 1])
        local = points[sel] - scene.pos[t, k - 1]
        local = np.stack([c0 * local[:, 0] - s0 * local[:, 1], s0 * local[:, 0] + c0 * local[:, 1], local[:, 2]], 1)
        c1, s1 = _rot_z(scene.angle[t - 1, k - 1])
        prev[sel] = scene.pos[t - 1, k - 1] + np.stack(
            [c1 * local[:, 0] - s1 * local[:, 1], s1 * local[:, 0] + c1 * local[:, 1], local[:, 2]], 1)
    return project(scene, prev, h, w) - project(scene, points, h, w)
