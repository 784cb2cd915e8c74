"""Render the pack's example inputs: workflows/input/example.png and workflows/input/lotus_video_input.mp4.

    .venv/bin/python scripts/make_example_inputs.py

The workflows load ``example.png`` (LoadImage) and ``lotus_video_input.mp4`` (LoadVideo) from ComfyUI's
input folder; scripts/try_comfyui.sh copies these two files there, so every workflow runs on its first
Run. No photographs can be shipped or fetched here, so both are drawn: a small ray tracer (numpy; PIL
and PyAV write the files) renders a sunlit plaza with a colonnade, glossy spheres, a cube, trees, hills
and mountains in haze. Depth
is everywhere in it: a tiled ground plane receding to the horizon, objects from 2 m to 40 m, occlusions,
cast shadows, fog that grows with distance. The clip is the same scene seen from a camera that moves
sideways and forward (real parallax). Deterministic: the same files on every run (PNG bit-exact; the
H.264 stream depends on the encoder build).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

OUT_DIR = Path(__file__).resolve().parents[1] / "workflows" / "input"
IMAGE_SIZE = (768, 512)  # width, height (3:2); Lotus processes 768 on the long edge
VIDEO_SIZE, VIDEO_FRAMES, VIDEO_FPS = (480, 320), 24, 12
SUPERSAMPLE = 2  # rays per pixel per axis (antialiasing)

SUN = np.array([-0.55, 0.62, -0.35])
SUN = SUN / np.linalg.norm(SUN)
SUN_COLOR = np.array([1.0, 0.93, 0.82]) * 1.55
SKY_ZENITH, SKY_HORIZON = np.array([0.16, 0.36, 0.76]), np.array([0.70, 0.80, 0.90])
FOG_DISTANCE = 140.0
EPS = 1e-4

# (center, radius, color, reflectivity)
SPHERES = [
    ((-1.05, 0.62, 3.6), 0.62, (0.80, 0.10, 0.08), 0.12),
    ((1.25, 0.42, 5.2), 0.42, (0.10, 0.32, 0.85), 0.15),
    ((0.25, 0.22, 2.55), 0.22, (0.95, 0.93, 0.88), 0.06),
    ((-2.2, 0.9, 13.0), 0.9, (0.22, 0.62, 0.25), 0.05),
]
# trees on the lawns: a crown (a matt sphere) on a trunk (a box)
TREES = [(-6.8, 15.0, 1.5), (6.4, 11.0, 1.2), (-9.5, 27.0, 1.8), (8.5, 31.0, 1.6), (-5.5, 42.0, 1.4)]
SPHERES += [((x, 2.0 + 1.1 * r, z), r, (0.18, 0.36, 0.12), 0.0) for x, z, r in TREES]
# (center, half sizes, yaw in radians, color): a cube, the colonnade, the trees' trunks, a gate
BOXES = [((1.9, 0.55, 8.2), (0.55, 0.55, 0.55), 0.6, (0.92, 0.70, 0.22))]
for _z in range(3, 36, 4):
    BOXES += [((-3.4, 1.4, _z), (0.22, 1.4, 0.22), 0.0, (0.88, 0.84, 0.76)),
              ((3.4, 1.4, _z), (0.22, 1.4, 0.22), 0.0, (0.88, 0.84, 0.76))]
BOXES += [((x, 1.05 + 0.5 * r, z), (0.16, 1.05 + 0.5 * r, 0.16), 0.4, (0.36, 0.25, 0.16)) for x, z, r in TREES]
BOXES += [((-2.3, 2.4, 40.0), (0.45, 2.4, 0.5), 0.0, (0.86, 0.80, 0.70)),  # a gate at the end of the plaza
          ((2.3, 2.4, 40.0), (0.45, 2.4, 0.5), 0.0, (0.86, 0.80, 0.70)),
          ((0.0, 5.2, 40.0), (2.9, 0.4, 0.55), 0.0, (0.86, 0.80, 0.70))]


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def hit_sphere(o, d, center, radius):
    oc = o - np.asarray(center)
    b = np.einsum("ij,ij->i", oc, d)
    c = np.einsum("ij,ij->i", oc, oc) - radius * radius
    disc = b * b - c
    root = np.sqrt(np.maximum(disc, 0))
    t = np.where(-b - root > EPS, -b - root, -b + root)
    return np.where((disc > 0) & (t > EPS), t, np.inf)


def _box_frame(yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # columns: the box's axes in world space


def hit_box(o, d, center, half, yaw):
    rotation = _box_frame(yaw)
    lo, ld = (o - np.asarray(center)) @ rotation, d @ rotation
    half = np.asarray(half)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - lo) / ld, (half - lo) / ld
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    t = np.where(t_near > EPS, t_near, t_far)
    return np.where((t_far >= t_near) & (t > EPS), t, np.inf)


def box_normal(p, center, half, yaw):
    rotation = _box_frame(yaw)
    local = (p - np.asarray(center)) @ rotation
    axis = np.argmax(np.abs(local) / np.asarray(half), axis=1)
    normal = np.zeros_like(local)
    normal[np.arange(len(p)), axis] = np.sign(local[np.arange(len(p)), axis])
    return normal @ rotation.T


def hit_ground(o, d):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[:, 1] / d[:, 1]
    return np.where((d[:, 1] < 0) & (t > EPS), t, np.inf)


def _objects():
    """Every object as (hit function, bounding sphere center, bounding sphere radius)."""
    objects = [((lambda o, d, c=c, r=r: hit_sphere(o, d, c, r)), np.asarray(c), r) for c, r, _, _ in SPHERES]
    objects += [((lambda o, d, c=c, h=h, y=y: hit_box(o, d, c, h, y)), np.asarray(c), float(np.linalg.norm(h)))
                for c, h, y, _ in BOXES]
    return objects


def nearest(o, d, with_ground=True, max_t=np.inf):
    """(t, index) of the nearest hit: index 0 = ground, 1.. = spheres, then boxes; t = inf: sky.
    Each object is tested only on the rays that can reach its bounding sphere (within max_t)."""
    best_t = hit_ground(o, d) if with_ground else np.full(len(o), np.inf)
    best_i = np.zeros(len(o), dtype=int)
    for k, (hit, center, radius) in enumerate(_objects(), start=1):
        oc = o - center
        if np.isfinite(max_t):
            candidates = np.einsum("ij,ij->i", oc, oc) < (radius + max_t) ** 2
        else:
            b = np.einsum("ij,ij->i", oc, d)
            candidates = (b * b - np.einsum("ij,ij->i", oc, oc) + radius * radius > 0) & (b < radius)
        rows = np.nonzero(candidates)[0]
        if len(rows) == 0:
            continue
        t = hit(o[rows], d[rows])
        closer = t < best_t[rows]
        best_t[rows[closer]], best_i[rows[closer]] = t[closer], k
    return best_t, best_i


def occluded(p, direction, max_t=np.inf):
    """Whether the segment p -> p + max_t * direction hits an object (the ground casts no shadows)."""
    t, _ = nearest(p, np.broadcast_to(direction, p.shape).copy(), with_ground=False, max_t=max_t)
    return t < max_t


def smooth_noise(x, z, seed):
    """Cheap deterministic 2-D noise in [-1, 1] (a sum of rotated sines)."""
    rng = np.random.default_rng(seed)
    total = np.zeros_like(x)
    for octave in range(4):
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi, 2)
        frequency = 0.35 * 2.1 ** octave
        u = np.cos(angle) * x + np.sin(angle) * z
        v = -np.sin(angle) * x + np.cos(angle) * z
        total += np.sin(frequency * u + phase[0]) * np.sin(frequency * 1.3 * v + phase[1]) / 1.8 ** octave
    return total / 1.6


def ground_albedo(p, t):
    x, z = p[:, 0], p[:, 2]
    plaza = (np.abs(x) < 3.0) & (z > -2) & (z < 44)
    # stone tiles: two tones, mortar lines, a little variation; flattened with distance (no aliasing)
    checker = ((np.floor(x / 0.75) + np.floor(z / 0.75)) % 2)[:, None]
    stone = np.where(checker > 0, [0.66, 0.57, 0.45], [0.52, 0.47, 0.40])
    mortar = np.minimum(np.abs(x / 0.75 - np.round(x / 0.75)), np.abs(z / 0.75 - np.round(z / 0.75))) < 0.035
    detail = np.exp(-t / 16)[:, None]
    stone = np.where(mortar[:, None], stone * 0.72, stone)
    stone = detail * stone + (1 - detail) * np.array([0.58, 0.51, 0.42])
    stone = stone * (1 + 0.06 * smooth_noise(x * 3, z * 3, 5))[:, None]
    grass = np.array([0.30, 0.45, 0.16]) * (1 + 0.22 * smooth_noise(x, z, 7))[:, None]
    grass = grass * (1 + 0.08 * smooth_noise(x * 6, z * 6, 8) * detail[:, 0])[:, None]
    return np.where(plaza[:, None], stone, grass)


def sky(d):
    up = np.clip(d[:, 1], 0, 1)[:, None]
    color = SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * np.sqrt(up)
    # mountains: two ranges "at infinity", hazier with distance
    azimuth, elevation = np.arctan2(d[:, 0], d[:, 2]), np.arcsin(np.clip(d[:, 1], -1, 1))
    for ridge, (height, seed, tone) in enumerate(((0.13, 3, (0.47, 0.54, 0.68)), (0.075, 4, (0.30, 0.42, 0.36)))):
        rng = np.random.default_rng(seed)
        profile = height * (1 + sum(a * np.sin(f * azimuth + p) for a, f, p in
                                    zip(rng.uniform(0.1, 0.5, 5), (3, 7, 13, 23, 41), rng.uniform(0, 6.3, 5))) / 2)
        inside = (elevation < profile)[:, None]
        shade = np.clip(0.85 + 0.6 * (profile - elevation)[:, None] / height, 0.7, 1.1) if ridge else 1.0
        color = np.where(inside, np.asarray(tone) * shade, color)
    glow = np.maximum(np.einsum("ij,j->i", d, SUN), 0)[:, None] ** 24
    return color + 0.35 * glow * SUN_COLOR


def shade(o, d, depth=0):
    """Linear RGB seen along each ray, and the distance to what it hits (inf: sky)."""
    t, index = nearest(o, d)
    color = sky(d)
    hit = np.isfinite(t)
    if not hit.any():
        return color, t
    p = o[hit] + t[hit, None] * d[hit]
    idx = index[hit]
    normal = np.zeros_like(p)
    albedo = np.zeros_like(p)
    reflect = np.zeros(len(p))
    ground = idx == 0
    normal[ground] = (0, 1, 0)
    albedo[ground] = ground_albedo(p[ground], t[hit][ground])
    for k, (center, radius, tone, mirror) in enumerate(SPHERES, start=1):
        m = idx == k
        normal[m] = (p[m] - np.asarray(center)) / radius
        albedo[m], reflect[m] = tone, mirror
    for k, (center, half, yaw, tone) in enumerate(BOXES, start=1 + len(SPHERES)):
        m = idx == k
        normal[m] = box_normal(p[m], center, half, yaw)
        albedo[m] = tone
    origin = p + normal * 1e-3

    # soft sun shadows: a few jittered directions toward the sun's disc
    rng = np.random.default_rng(11 + depth)
    visible = np.zeros(len(p))
    for jitter in rng.normal(0, 0.025, (4, 3)):
        visible += ~occluded(origin, normalize(SUN + jitter))
    visible /= 4
    # ambient occlusion: short rays over the hemisphere around the normal
    ao = np.zeros(len(p))
    samples = normalize(rng.normal(size=(6, 3)))
    for s in samples:
        direction = np.where((normal @ s < 0)[:, None], -s, s)
        direction = normalize(direction + normal)
        ao += ~occluded(origin, direction, max_t=1.2)
    ao = 0.35 + 0.65 * ao / len(samples)

    lambert = np.maximum(np.einsum("ij,j->i", normal, SUN), 0) * visible
    sky_light = (0.5 + 0.5 * normal[:, 1])[:, None] * SKY_ZENITH * 0.42
    bounce = (0.5 - 0.5 * normal[:, 1])[:, None] * np.array([0.45, 0.40, 0.32]) * 0.25
    lit = albedo * (lambert[:, None] * SUN_COLOR + (sky_light + bounce) * ao[:, None])
    half_vector = normalize(SUN - d[hit])
    specular = (np.maximum(np.einsum("ij,ij->i", normal, half_vector), 0) ** 80 * visible * (reflect > 0))
    lit = lit + specular[:, None] * SUN_COLOR * 1.2

    mirror = reflect > 0
    if depth == 0 and mirror.any():
        ray = d[hit][mirror]
        bounce_dir = ray - 2 * np.einsum("ij,ij->i", ray, normal[mirror])[:, None] * normal[mirror]
        reflected, _ = shade(origin[mirror], normalize(bounce_dir), depth + 1)
        cosine = np.clip(-np.einsum("ij,ij->i", ray, normal[mirror]), 0, 1)
        weight = (reflect[mirror] + (1 - reflect[mirror]) * (1 - cosine) ** 5)[:, None]
        lit[mirror] = (1 - weight) * lit[mirror] + weight * reflected

    fog = (1 - np.exp(-t[hit] / FOG_DISTANCE))[:, None]
    color[hit] = (1 - fog) * lit + fog * sky(np.stack([d[hit][:, 0], np.zeros(len(p)), d[hit][:, 2]], 1))
    return color, t


def render(width: int, height: int, eye=(0.35, 1.45, -1.2), target=(0.0, 0.9, 10.0), fov_deg=58.0) -> Image.Image:
    eye = np.asarray(eye, float)
    forward = normalize(np.asarray(target, float) - eye)
    right = normalize(np.cross([0.0, 1.0, 0.0], forward))
    up = np.cross(forward, right)
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    scale = np.tan(np.radians(fov_deg) / 2)
    xs = ((np.arange(w) + 0.5) / w * 2 - 1) * scale
    ys = (1 - (np.arange(h) + 0.5) / h * 2) * scale * h / w
    gx, gy = np.meshgrid(xs, ys)
    d = normalize(gx.reshape(-1, 1) * right + gy.reshape(-1, 1) * up + forward)
    o = np.broadcast_to(eye, d.shape).copy()
    color, _ = shade(o, d)
    # exposure and a gentle filmic curve, sRGB, a light grade
    color = 1 - np.exp(-1.5 * color)
    srgb = np.where(color <= 0.0031308, 12.92 * color, 1.055 * np.power(np.clip(color, 0, None), 1 / 2.4) - 0.055)
    gray = (srgb @ np.array([0.2126, 0.7152, 0.0722]))[:, None]
    srgb = 0.5 + 1.12 * (gray + 1.3 * (srgb - gray) - 0.5)  # a little more contrast and colour
    pixels = (np.clip(srgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(h, w, 3)
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.BOX)


def write_video(path: Path) -> None:
    import av

    width, height = VIDEO_SIZE
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(VIDEO_FPS, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "26", "preset": "veryslow"}
        for i in range(VIDEO_FRAMES):
            s = i / (VIDEO_FRAMES - 1)  # the camera moves right and forward, looking at the same point
            frame = render(width, height, eye=(-0.9 + 1.8 * s, 1.45, -1.6 + 0.8 * s))
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    image_path = OUT_DIR / "example.png"
    render(*IMAGE_SIZE).save(image_path, optimize=True)
    video_path = OUT_DIR / "lotus_video_input.mp4"
    write_video(video_path)
    for path in (image_path, video_path):
        print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
