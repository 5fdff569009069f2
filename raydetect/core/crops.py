"""Face crops for a downstream classifier: square (or W x H) around the box, or aligned on the landmarks.

Every crop is an affine map from crop pixels to frame pixels; the crops of a batch of frames are
sampled together on the detector's device, a few ``affine_grid`` + ``grid_sample`` calls per batch
(one per group of similar patch size and sampling factor), never one per face:

- box crops (the default): a region of the crop's aspect ratio centred on the box, its shorter side
  the box's longer side x (1 + margin), rounded outward to whole pixels (scale + translation);
- aligned crops (``align=True``): the similarity transform that puts the 5 landmarks on the ArcFace
  template (:mod:`raydetect.core.alignment`).

Padding where the region leaves the frame (``pad``): ``zero`` black, ``edge`` the frame's border
pixels repeated, ``resize`` (box crops only) the region is cut to the frame and what is left is
stretched to the crop size, so there is no padding but the aspect may change at the frame's edges.

Resampling: bilinear; when the crop shrinks the region (more than one frame pixel per crop pixel),
each crop pixel averages a k x k grid of bilinear samples, k = ceil(frame pixels per crop pixel)
capped at :data:`MAX_SUPERSAMPLING`: area averaging, as OpenCV's ``INTER_AREA``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from raydetect.core.alignment import alignment_matrices, invert_similarities
from raydetect.errors import RaydetectError

PAD_MODES = ("zero", "edge", "resize")
CROP_FORMATS = ("jpeg", "png")
# Bilinear samples per crop pixel and axis at most when shrinking (cost grows with its square).
MAX_SUPERSAMPLING = 8
# Sampling points (or patch pixels) per grid_sample call at most (x 3 channels x 4 bytes of float32).
MAX_SAMPLES_PER_CALL = 1 << 22


class CropError(RaydetectError, ValueError):
    """Crop options that cannot work: a size, margin, padding mode or format out of range."""


def parse_crop_size(text: str) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"224x192"`` -> (224, 192) as (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", str(text))
    if not match:
        raise CropError(f"crop size must be N or WIDTHxHEIGHT in pixels (e.g. 224 or 224x192), got {text!r}")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) is not None else width
    if width < 1 or height < 1:
        raise CropError(f"crop size must be at least 1x1 pixels, got {text!r}")
    return width, height


@dataclass(frozen=True)
class CropOptions:
    """How each face is cut out.

    Attributes:
        width, height: crop size in pixels.
        margin: context around the face (see the module docstring and :mod:`raydetect.core.alignment`).
        align: warp onto the 5-point template instead of cutting the box's region.
        pad: ``zero``, ``edge`` or ``resize`` (see the module docstring).
        format: ``jpeg`` or ``png`` (lossless).
        quality: JPEG quality, 1-100 (unused for PNG).
    """

    width: int = 224
    height: int = 224
    margin: float = 0.3
    align: bool = False
    pad: str = "zero"
    format: str = "jpeg"
    quality: int = 90

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise CropError(f"crop size: the {name} must be a whole number of pixels >= 1, got {value!r}")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 0):
            raise CropError(f"crop margin must be a finite number >= 0, got {self.margin!r}")
        if self.pad not in PAD_MODES:
            raise CropError(f"crop padding must be one of {', '.join(PAD_MODES)}, got {self.pad!r}")
        if self.align and self.pad == "resize":
            raise CropError("crop padding 'resize' cuts an axis-aligned region to the frame; aligned crops are "
                            "rotated: use 'zero' or 'edge' with align")
        if self.format not in CROP_FORMATS:
            raise CropError(f"crop format must be one of {', '.join(CROP_FORMATS)}, got {self.format!r}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, (int, np.integer)) \
                or not 1 <= self.quality <= 100:
            raise CropError(f"JPEG quality must be 1-100, got {self.quality!r}")

    def recorded(self) -> dict:
        """The options as recorded with a job's results."""
        return asdict(self)


# --------------------------------------------------------------------------- geometry
def box_matrices(boxes: np.ndarray, options: CropOptions, frame_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps from crop pixels to frame pixels for box crops.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2`` frame pixels.
        frame_sizes: (N, 2) width, height of each face's frame (for ``pad="resize"``).

    Returns:
        (N, 2, 3) float64 crop -> frame maps, and (N,) bool: the region misses the frame entirely
        (``resize`` has nothing to stretch: the crop is black).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    side = np.maximum(np.maximum(x2 - x1, y2 - y1), 1.0) * (1.0 + options.margin)
    # The region has the crop's aspect; its shorter side is `side`.
    shorter = min(options.width, options.height)
    region_w, region_h = side * options.width / shorter, side * options.height / shorter
    left = np.floor((x1 + x2 - region_w) / 2)
    top = np.floor((y1 + y2 - region_h) / 2)
    right = left + np.maximum(1, np.ceil(region_w))
    bottom = top + np.maximum(1, np.ceil(region_h))
    missing = np.zeros(len(boxes), bool)
    if options.pad == "resize":
        frame_w, frame_h = np.asarray(frame_sizes, np.float64).reshape(-1, 2).T
        left, right = np.clip(left, 0, frame_w), np.clip(right, 0, frame_w)
        top, bottom = np.clip(top, 0, frame_h), np.clip(bottom, 0, frame_h)
        missing = (right <= left) | (bottom <= top)
        right, bottom = np.where(missing, left + 1, right), np.where(missing, top + 1, bottom)
    matrices = np.zeros((len(boxes), 2, 3))
    matrices[:, 0, 0] = (right - left) / options.width
    matrices[:, 0, 2] = left
    matrices[:, 1, 1] = (bottom - top) / options.height
    matrices[:, 1, 2] = top
    return matrices, missing


def crop_matrices(
    boxes: np.ndarray, landmarks: np.ndarray, options: CropOptions, frame_sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 3) crop -> frame maps of N faces and their (N,) "black crop" flags (see :func:`box_matrices`).

    ``landmarks``: (N, 5, 2) frame pixels (used with ``align``). A face whose landmarks are degenerate
    falls back to its box crop."""
    matrices, missing = box_matrices(boxes, options, frame_sizes)
    if options.align and len(matrices):
        to_crop = alignment_matrices(np.asarray(landmarks).reshape(-1, 5, 2), options.width, options.height,
                                     options.margin)
        usable = np.isfinite(to_crop).all(axis=(1, 2))
        if usable.any():
            matrices[usable] = invert_similarities(to_crop[usable])
    return matrices, missing


# --------------------------------------------------------------------------- sampling
def warp_crops(
    frames, face_frames: np.ndarray, matrices: np.ndarray, width: int, height: int, pad: str = "zero",
    device=None, bounds: np.ndarray | None = None,
) -> np.ndarray:
    """Sample every crop of a batch of frames.

    Each crop's footprint (the frame pixels its samples can reach, plus one for bilinear weights) is
    gathered into a patch, patches of similar size in one array; each group of patches is warped by
    one ``affine_grid`` + ``grid_sample`` call on ``device``. Only the pixels under faces are touched.

    Args:
        frames: (F, H, W, 3) uint8 array (or a list of equal-sized frames).
        face_frames: (N,) index into ``frames`` of each crop's frame.
        matrices: (N, 2, 3) crop -> frame maps in continuous pixels.
        width, height: crop size; pad: ``zero``, ``edge`` or ``resize``.
        device: torch device to sample on (None: the CPU).
        bounds: (N, 4) ``x_min, y_min, x_max, y_max`` pixel indices each crop's samples are clamped
            to (its region's outer pixels are repeated rather than its neighbours blended in); None:
            no bounds but the frame's.

    Returns:
        (N, height, width, 3) uint8.
    """
    import torch
    import torch.nn.functional as F

    face_frames = np.asarray(face_frames, np.int64)
    count = len(face_frames)
    if count == 0:
        return np.zeros((0, height, width, 3), np.uint8)
    frames = np.asarray(frames)
    frame_h, frame_w = frames.shape[1:3]
    matrices = np.asarray(matrices, np.float64)
    if bounds is None:
        bounds = np.tile([-np.inf, -np.inf, np.inf, np.inf], (count, 1))
    bounds = np.asarray(bounds, np.float64)

    # Footprints in pixel-index coordinates (pixel centre at i): the crop's corners mapped into the
    # frame, cut to the region's bounds and to the frame with its one-pixel border, one pixel wider.
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64)
    reach = np.einsum("ck,nik->nci", corners, matrices) - 0.5  # (N, 4, 2)
    low = np.maximum(reach.min(axis=1), bounds[:, :2])
    high = np.minimum(reach.max(axis=1), bounds[:, 2:])
    low = np.clip(np.floor(low) - 1, -1, [frame_w, frame_h]).astype(np.int64)
    high = np.clip(np.ceil(high) + 1, -1, [frame_w, frame_h]).astype(np.int64)
    high = np.maximum(high, low)
    sides = (high - low + 1).max(axis=1)

    scale = np.sqrt(np.abs(np.linalg.det(matrices[:, :, :2])))
    factors = np.clip(np.ceil(scale - 1e-9), 1, MAX_SUPERSAMPLING).astype(int)
    # Groups: one sampling factor, patch sides within a factor of two (little wasted gathering).
    side_class = np.ceil(np.log2(sides)).astype(int)
    out = torch.empty((count, 3, height, width), dtype=torch.uint8, device=device)
    for k, side_bits in sorted(set(zip(factors.tolist(), side_class.tolist()))):
        members = np.flatnonzero((factors == k) & (side_class == side_bits))
        # The patch side is the class's power of two, not its largest member's: a face's crop then
        # depends on that face alone, never on which faces share its chunk (sharded runs equal whole ones).
        patch = 1 << side_bits
        per_call = max(1, MAX_SAMPLES_PER_CALL // max(width * height * k * k, patch * patch))
        for start in range(0, len(members), per_call):
            part = members[start:start + per_call]
            patches = _gather_patches(frames, face_frames[part], low[part], patch, pad)
            pixels = torch.from_numpy(patches).to(device).permute(0, 3, 1, 2).float()
            theta = _patch_theta(matrices[part], low[part], patch, width, height)
            grid = F.affine_grid(torch.from_numpy(theta).float().to(pixels.device),
                                 [len(part), 3, height * k, width * k], align_corners=False)
            limits = bounds[part]
            if np.isfinite(limits).any():
                # Region bounds, in the patch's normalised coordinates.
                lo = (2 * (np.nan_to_num(limits[:, :2], neginf=-1e6) - low[part]) + 1) / patch - 1
                hi = (2 * (np.nan_to_num(limits[:, 2:], posinf=1e6) - low[part]) + 1) / patch - 1
                grid = torch.maximum(grid, torch.from_numpy(lo).float().to(grid.device).view(-1, 1, 1, 2))
                grid = torch.minimum(grid, torch.from_numpy(hi).float().to(grid.device).view(-1, 1, 1, 2))
            sampled = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
            if k > 1:
                sampled = F.avg_pool2d(sampled, k)
            out[torch.from_numpy(part).to(out.device)] = sampled.round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).cpu().numpy()


def _gather_patches(frames: np.ndarray, face_frames: np.ndarray, low: np.ndarray, side: int, pad: str) -> np.ndarray:
    """(n, side, side, 3) uint8: the square of frame pixels from ``low`` (x, y) of each face, in one
    gather. Outside the frame: black for ``zero``, the nearest frame pixel otherwise."""
    frame_h, frame_w = frames.shape[1:3]
    steps = np.arange(side)
    xs = low[:, 0, None] + steps  # (n, side)
    ys = low[:, 1, None] + steps
    patches = frames[face_frames[:, None, None], np.clip(ys, 0, frame_h - 1)[:, :, None],
                     np.clip(xs, 0, frame_w - 1)[:, None, :]]
    if pad == "zero":
        inside = ((ys >= 0) & (ys < frame_h))[:, :, None] & ((xs >= 0) & (xs < frame_w))[:, None, :]
        patches *= inside[..., None]
    return patches


def _patch_theta(matrices: np.ndarray, low: np.ndarray, side: int, width: int, height: int) -> np.ndarray:
    """(n, 2, 3) affine_grid matrices: crop normalised coordinates -> patch normalised coordinates
    (align_corners=False: continuous coordinate c of a size-S axis is at 2 c / S - 1)."""
    from_crop = np.array([[width / 2, 0, width / 2], [0, height / 2, height / 2], [0, 0, 1]])
    to_patch = np.array([[2 / side, 0, -1], [0, 2 / side, -1], [0, 0, 1]])
    n = len(matrices)
    frame_map = np.concatenate([matrices, np.tile([[[0, 0, 1]]], (n, 1, 1))], axis=1)
    # Frame continuous -> patch continuous: pixel index low lands on patch index 0.
    shift = np.tile(np.eye(3), (n, 1, 1))
    shift[:, :2, 2] = -low
    theta = to_patch @ shift @ frame_map @ from_crop
    return theta[:, :2]


def cut_crops(
    frames, face_frames: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, options: CropOptions, device=None
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of N faces in a batch of frames, in one batched sampling pass.

    Args:
        frames: (F, H, W, 3) uint8 RGB; face_frames: (N,) index of each face's frame in ``frames``.
        boxes: (N, 4) and landmarks (N, 5, 2), pixels of ``frames``.

    Returns:
        (N, height, width, 3) uint8 crops, and (N, 2, 3) float64 maps from frame pixels to crop pixels.
    """
    frames = np.asarray(frames)
    sizes = np.tile([frames.shape[2], frames.shape[1]], (len(face_frames), 1))
    matrices, missing = crop_matrices(boxes, landmarks, options, sizes)
    # A box crop shows its region only, as when the region was cut out and then resized.
    bounds = np.tile([-np.inf, -np.inf, np.inf, np.inf], (len(matrices), 1))
    axis_aligned = (matrices[:, 0, 1] == 0) & (matrices[:, 1, 0] == 0)
    left, top = matrices[:, 0, 2], matrices[:, 1, 2]
    right, bottom = left + matrices[:, 0, 0] * options.width, top + matrices[:, 1, 1] * options.height
    bounds[axis_aligned] = np.stack([left, top, right - 1, bottom - 1], axis=1)[axis_aligned]
    crops = warp_crops(frames, face_frames, matrices, options.width, options.height, options.pad, device, bounds)
    crops[missing] = 0
    return crops, invert_similarities(matrices) if len(matrices) else matrices


# --------------------------------------------------------------------------- encoding
def encode_crop(image: np.ndarray, options: CropOptions = CropOptions()) -> bytes:
    """JPEG or PNG bytes of an (H, W, 3) uint8 RGB image."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    if options.format == "png":
        ok, encoded = cv2.imencode(".png", bgr)
    else:
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(options.quality)])
    if not ok:
        raise ValueError(f"{options.format.upper()} encoding failed for an image of shape {image.shape}")
    return encoded.tobytes()


def decode_crop(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB of JPEG or PNG bytes."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"not a JPEG or PNG image ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image."""
    return encode_crop(image, CropOptions(quality=quality))


# --------------------------------------------------------------------------- one image
def crops_of(image: np.ndarray, detections, options: CropOptions = CropOptions(), device=None):
    """Crops of the faces a detector found in one image: ``(N, height, width, 3)`` uint8 and the
    (N, 2, 3) maps from image pixels to crop pixels. ``detections``: a :class:`Detections`.

    >>> faces = FaceDetector().detect_one(image)
    >>> aligned, _ = crops_of(image, faces, CropOptions(width=112, height=112, margin=0, align=True))
    """
    image = np.asarray(image)
    return cut_crops(image[None], np.zeros(len(detections), np.int64), detections.boxes, detections.landmarks,
                     options, device)


def crop_square(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The square around one face, resized to ``size`` x ``size`` (zero padding outside the frame).

    Args:
        image: (H, W, 3) uint8 frame; box: ``x1, y1, x2, y2`` pixels of ``image``.
        size: side of the crop; margin: the square's side is ``max(x2 - x1, y2 - y1) * (1 + margin)``.
    """
    options = _square_options(size, margin)
    crops, _ = cut_crops(image[None], np.zeros(1, np.int64), np.asarray(box)[None], np.zeros((1, 5, 2)), options)
    return crops[0]


def face_crops(image: np.ndarray, boxes: np.ndarray, size: int, margin: float, quality: int = 90) -> list[bytes]:
    """JPEG square crops of every face in one frame. ``boxes``: (N, 4) ``x1, y1, x2, y2`` pixels of ``image``."""
    options = _square_options(size, margin, quality)
    boxes = np.asarray(boxes).reshape(-1, 4)
    crops, _ = cut_crops(image[None], np.zeros(len(boxes), np.int64), boxes, np.zeros((len(boxes), 5, 2)), options)
    return [encode_crop(crop, options) for crop in crops]


def _square_options(size: int, margin: float, quality: int = 90) -> CropOptions:
    return CropOptions(width=size, height=size, margin=margin, quality=quality)
