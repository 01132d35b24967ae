"""The embedded default data: shapes rendered on varied backgrounds, no download needed.

Each sample is drawn from its own random generator seeded by ``(seed, split, index)``, so an image
is the same whichever order, worker or process renders it, and the splits never share an image.
Labels cycle through the classes (``index % num_classes``), so every split is balanced and a
model that cannot see the shape stays at chance. Shape colour, size, position, rotation and the
background are drawn independently of the class, so no shortcut (mean colour, area) gives it away.

A sample is ``{"image": uint8 Image (3, H, W), "label": int, "mask": uint8 Mask (H, W)}`` in
torchvision's tv_tensors, so transforms v2 move image and mask together. The mask is 0 on the
background and ``label + 1`` on the shape, for segmentation.

Two scenes: ``"plain"`` (the default data: one large, slightly tilted shape in a contrasting
colour, which a small ResNet learns to 97%) and ``"hard"`` (a smaller shape, in a colour that may
be close to the background's, among clutter and partly hidden by an occluder), where plugins have
room to differ. The mask is the visible part of the shape.
"""

import dataclasses
import functools
import math

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset
from torchvision import tv_tensors

SHAPES = (
    "circle", "ring", "square", "bar", "triangle",
    "star", "cross", "crescent", "heart", "pair",
)  # fmt: skip
SPLITS = {"train": 0, "val": 1, "test": 2}
# How far the second colour of a textured background strays from the first.
BG_SPREAD = 0.15

Coords = tuple[NDArray[np.float32], NDArray[np.float32]]


@dataclasses.dataclass(frozen=True)
class Scene:
    """How a sample is drawn: the shape's size and tilt, its colour, clutter and occluders."""

    # The shape's radius, as fractions of the image side.
    radius: tuple[float, float]
    # The largest tilt, in radians either way.
    max_rotation: float
    # The shape's colour is the one of this many random draws that stands out most from the
    # background: 8 makes it pop out, 1 leaves it to chance.
    color_draws: int
    # Strokes and dots behind the shape (how many, at most), and rectangles in front of it.
    clutter: int = 0
    occluders: int = 0


SCENES = {
    # Tilts of up to 15 degrees: full rotations made a small ResNet need many times the steps to
    # pass 90% (a few minutes on two CPU cores is the budget of the default run).
    "plain": Scene(radius=(0.2, 0.42), max_rotation=math.radians(15), color_draws=8),
    # Somewhat smaller, in a colour that may be close to the background's, among clutter and
    # partly hidden: the default half-width ResNet-18 ends its 8 epochs near 60% (on 6,000
    # images; it reaches 97% on the plain scene), so plugins have room to differ. Any angle,
    # half the size or chance colours left it under 40%.
    "hard": Scene(
        radius=(0.2, 0.38), max_rotation=math.radians(15), color_draws=4, clutter=4, occluders=1
    ),
}


def _star(u: NDArray, v: NDArray, points: int = 5, inner: float = 0.45) -> NDArray:
    """Inside a regular star: outer vertices on the unit circle, inner ones at radius ``inner``."""
    half = math.pi / points
    # Angle from the nearest inner vertex, in [0, half]; the edge runs from there to an outer one.
    t = np.abs(np.mod(np.arctan2(v, u), 2 * half) - half)
    edge = (
        inner * math.sin(half) / (math.sin(half) * np.cos(t) - (math.cos(half) - inner) * np.sin(t))
    )
    return u * u + v * v <= edge * edge


def _heart(u: NDArray, v: NDArray) -> NDArray:
    x, y = 1.15 * u, 0.12 - 1.15 * v
    a = x * x + y * y - 1
    return a * a * a <= x * x * y * y * y


def _chebyshev(u: NDArray, v: NDArray) -> NDArray:
    return np.maximum(np.abs(u), np.abs(v))


# Each shape fills roughly the unit disc of its own coordinates (u, v).
_INSIDE = {
    "circle": lambda u, v: u * u + v * v <= 1,
    "ring": lambda u, v: (u * u + v * v <= 1) & (u * u + v * v >= 0.55**2),
    "square": lambda u, v: _chebyshev(u, v) <= 0.75,
    "bar": lambda u, v: (np.abs(u) <= 0.95) & (np.abs(v) <= 0.28),
    "triangle": lambda u, v: (v <= 0.5) & (math.sqrt(3) * np.abs(u) - v <= 1),
    "star": _star,
    "cross": lambda u, v: (np.minimum(np.abs(u), np.abs(v)) <= 0.3) & (_chebyshev(u, v) <= 0.9),
    "crescent": lambda u, v: (u * u + v * v <= 1) & ((u - 0.45) ** 2 + v * v > 0.75**2),
    "heart": _heart,
    "pair": lambda u, v: np.minimum((u - 0.5) ** 2, (u + 0.5) ** 2) + v * v <= 0.42**2,
}


@functools.cache
def _grid(size: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Pixel-centre coordinates (y, x), each (size, size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx


def _blend(colors: NDArray, weight: NDArray) -> NDArray:
    """(3, H, W): ``colors[0]`` where weight is 0, ``colors[1]`` where it is 1."""
    c0, c1 = colors[0][:, None, None], colors[1][:, None, None]
    return c0 + (c1 - c0) * weight


def _background(rng: np.random.Generator, size: int) -> tuple[NDArray, NDArray]:
    """A (3, H, W) float32 background in [0, 1] and the colours it is made of."""
    yy, xx = _grid(size)
    # Two nearby colours: textures vary the scene without competing with the shape's outline.
    first = rng.random(3, dtype=np.float32)
    second = np.clip(first + rng.normal(0, BG_SPREAD, 3), 0, 1).astype(np.float32)
    colors = np.stack([first, second])
    kind = rng.integers(5)
    if kind == 0:  # solid
        return np.broadcast_to(colors[0][:, None, None], (3, size, size)), colors[:1]
    angle = rng.uniform(0, 2 * math.pi)
    along = (xx * math.cos(angle) + yy * math.sin(angle)) / size
    if kind == 1:  # linear gradient
        weight = (along - along.min()) / (np.ptp(along) + 1e-6)
    elif kind == 2:  # stripes
        weight = 0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(2, 6) * along + rng.uniform(0, 6.3))
    elif kind == 3:  # checkerboard
        cell = size / rng.integers(3, 9)
        weight = (np.floor(yy / cell) + np.floor(xx / cell)) % 2
    else:  # smooth blotches: a coarse random grid of colours, upsampled
        coarse = rng.random((1, 3, 4, 4), dtype=np.float32)
        image = torch.nn.functional.interpolate(
            torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=True
        )[0].numpy()
        return image, coarse[0].reshape(3, -1).T
    return _blend(colors, weight), colors


def _clutter(rng: np.random.Generator, image: NDArray, count: int) -> NDArray:
    """``image`` with up to ``count`` strokes (thin segments) and dots in random colours."""
    size = image.shape[-1]
    yy, xx = _grid(size)
    for _ in range(rng.integers(count + 1)):
        y0, x0, y1, x1 = rng.uniform(0, size, 4)
        if rng.random() < 0.5:  # a segment about a pixel wide
            dy, dx = y1 - y0, x1 - x0
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx + 1e-6), 0, 1)
            mark = (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2 <= rng.uniform(0.3, 1.0)
        else:  # a dot
            mark = (yy - y0) ** 2 + (xx - x0) ** 2 <= (rng.uniform(0.04, 0.1) * size) ** 2
        image = np.where(mark, rng.random(3, dtype=np.float32)[:, None, None], image)
    return image


def _occluders(
    rng: np.random.Generator, count: int, center: tuple[float, float], radius: float, size: int
) -> tuple[NDArray, NDArray]:
    """Up to ``count`` rectangles over the shape's box: where (H, W) and their colours (3, H, W)."""
    yy, xx = _grid(size)
    covered = np.zeros((size, size), dtype=bool)
    colors = np.zeros((3, size, size), dtype=np.float32)
    for _ in range(rng.integers(count + 1)):
        cy, cx = np.asarray(center) + rng.uniform(-1, 1, 2) * radius
        hy, hx = rng.uniform(0.15, 0.45, 2) * radius
        box = (np.abs(yy - cy) <= hy) & (np.abs(xx - cx) <= hx)
        colors = np.where(box, rng.random(3, dtype=np.float32)[:, None, None], colors)
        covered |= box
    return covered, colors


def render_shape(
    rng: np.random.Generator, label: int, image_size: int, scene: Scene = SCENES["plain"]
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Render shape ``SHAPES[label]`` on a random background: image (3, H, W) and mask (H, W)."""
    background, bg_colors = _background(rng, image_size)

    radius = rng.uniform(*scene.radius) * image_size
    cy, cx = rng.uniform(radius, image_size - radius, 2)
    angle = rng.uniform(-scene.max_rotation, scene.max_rotation)
    stretch = rng.uniform(0.85, 1.15)
    yy, xx = _grid(image_size)
    dy, dx = (yy - cy) / radius, (xx - cx) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    u = (dx * cos + dy * sin) * stretch
    v = (dy * cos - dx * sin) / stretch
    inside = _INSIDE[SHAPES[label]](u, v)

    # A colour that stands out from every colour of the background (best of a few draws).
    candidates = rng.random((scene.color_draws, 3), dtype=np.float32)
    distance = np.linalg.norm(candidates[:, None] - bg_colors[None], axis=-1).min(axis=1)
    color = candidates[distance.argmax()]

    if scene.clutter:
        background = _clutter(rng, background, scene.clutter)
    image = np.where(inside, color[:, None, None], background)
    if scene.occluders:
        covered, colors = _occluders(rng, scene.occluders, (cy, cx), radius, image_size)
        image, inside = np.where(covered, colors, image), inside & ~covered
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0, 0.06)
    image = (np.clip(image + noise, 0, 1) * 255 + 0.5).astype(np.uint8)
    mask = np.where(inside, label + 1, 0).astype(np.uint8)
    return image, mask


class ShapesDataset(Dataset):
    """``length`` rendered samples of one split, ``num_classes`` of the :data:`SHAPES`.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        length: number of samples.
        image_size: side of the square images.
        num_classes: how many of :data:`SHAPES` to use (the first ones), 2 to 10.
        seed: the dataset's seed; with ``split`` and the index it fixes every sample.
        scene: ``"plain"`` or ``"hard"`` (see :data:`SCENES`).
        transform: applied to the sample dict (torchvision transforms v2 take it whole).
        cache: keep each rendered sample in memory (about 4 KiB at 32 px, 64 KiB at 128 px), so
            only the first epoch pays for rendering.
    """

    def __init__(
        self,
        split: str,
        length: int,
        image_size: int = 32,
        num_classes: int = len(SHAPES),
        seed: int = 0,
        transform=None,
        cache: bool = False,
        scene: str = "plain",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if scene not in SCENES:
            raise ValueError(f"unknown scene {scene!r}; valid: {', '.join(SCENES)}")
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be 2 to {len(SHAPES)}, got {num_classes}")
        if image_size < 16:
            raise ValueError(
                f"image_size must be at least 16 pixels to draw a shape, got {image_size}"
            )
        self.split, self.length, self.image_size = split, length, image_size
        self.num_classes, self.seed, self.transform = num_classes, seed, transform
        self.classes = list(SHAPES[:num_classes])
        self.scene = SCENES[scene]
        # One block for all images and one for all masks: small tensors kept one by one cost
        # four times their size in allocator overhead.
        self.cache = cache
        slots = length if cache else 0
        self._cached = torch.zeros(slots, dtype=torch.bool)
        self._images = torch.empty((slots, 3, image_size, image_size), dtype=torch.uint8)
        self._masks = torch.empty((slots, image_size, image_size), dtype=torch.uint8)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        if self.cache and self._cached[index]:
            image, mask = self._images[index].clone(), self._masks[index].clone()
        else:
            image, mask = self.render(index)
            if self.cache:
                self._images[index], self._masks[index], self._cached[index] = image, mask, True
        sample = {
            "image": tv_tensors.Image(image),
            "label": index % self.num_classes,
            "mask": tv_tensors.Mask(mask),
        }
        return self.transform(sample) if self.transform is not None else sample

    def render(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (3, H, W) and mask (H, W) of sample ``index``, drawn from its own generator."""
        rng = np.random.default_rng((self.seed, SPLITS[self.split], index))
        image, mask = render_shape(rng, index % self.num_classes, self.image_size, self.scene)
        return torch.from_numpy(image), torch.from_numpy(mask)
