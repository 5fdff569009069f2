"""Ground-truth face boxes for evaluation, read from the formats researchers have at hand.

Formats (``load_annotations`` picks one from the file's content):

* WIDER FACE text (``wider_face_val_bbx_gt.txt``): an image path, a face count, then one
  line per face ``x y w h blur expression illumination invalid occlusion pose``. An image
  with no face has count 0 followed by one all-zero line. Faces flagged ``invalid`` are
  ignored; the file carries no easy/medium/hard split, so the only subset is ``all``.
* Simple JSON: ``{"images": {"a.jpg": [[x1, y1, x2, y2], ...]}}`` or the list form
  ``{"images": [{"file": "a.jpg", "boxes": [[x1, y1, x2, y2], ...]}]}``. An optional
  top-level ``"box_format": "xywh"`` says boxes are ``x, y, width, height``.
* The shared WIDER subset JSON (``wider-dev/annotations.json``): ``{"images": [{"file": ...,
  "faces": [{"bbox_xyxy": [...], "invalid": 0, "in_easy": ..., "in_medium": ...,
  "in_hard": ...}]}]}``; gives subsets ``easy``, ``medium``, ``hard`` (the official WIDER
  split) and ``all`` (every face not marked invalid).
* dlib-style JSON: ``{"splits": {"training": [{"file": ..., "faces": [[x, y, w, h], ...]}]}}``;
  every split is merged.

All boxes come out as float32 ``x1, y1, x2, y2`` pixels. Image keys are the paths written in
the file (relative, forward slashes); ``AnnotationSet.resolve`` maps them to files on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

WIDER_SUBSETS = ("easy", "medium", "hard")
ALL_FACES = "all"


class AnnotationError(ValueError):
    """An annotation file is missing, unreadable or malformed; the message names file and place."""


@dataclass(frozen=True)
class ImageFaces:
    """The annotated faces of one image.

    Attributes:
        boxes: float32 (N, 4), ``x1, y1, x2, y2`` pixels.
        subsets: subset name -> bool (N,): True where the face counts in that subset. A face
            outside a subset is ignored when evaluating it (neither missed nor matchable as a
            false positive), as the official WIDER FACE evaluation does.
    """

    boxes: np.ndarray
    subsets: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4):
            raise AnnotationError(f"boxes must have shape (N, 4), got {self.boxes.shape}")
        for name, mask in self.subsets.items():
            if mask.shape != (n,) or mask.dtype != bool:
                raise AnnotationError(f"subset {name!r} mask must be bool ({n},), got {mask.dtype} {mask.shape}")

    def __len__(self) -> int:
        return len(self.boxes)

    def care_mask(self, subset: str) -> np.ndarray:
        """bool (N,): faces that count in ``subset``; every face when the subset is not listed."""
        mask = self.subsets.get(subset)
        return np.ones(len(self.boxes), bool) if mask is None else mask


@dataclass(frozen=True)
class AnnotationSet:
    """Faces per image plus the subset names to evaluate.

    Attributes:
        images: image key (relative path as written in the file) -> ImageFaces.
        subsets: names to report, e.g. ``("easy", "medium", "hard", "all")`` or ``("all",)``.
        source: the file the set was read from, if any; keys resolve against its folder.
    """

    images: dict[str, ImageFaces]
    subsets: tuple[str, ...] = (ALL_FACES,)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_faces(self) -> int:
        return sum(len(faces) for faces in self.images.values())

    def restricted(self, keys) -> "AnnotationSet":
        """The same annotations for the images in ``keys`` only (e.g. those given on a command line)."""
        return AnnotationSet({key: self.images[key] for key in keys}, self.subsets, self.source)

    def resolve(self, images_root: Path) -> dict[str, Path]:
        """Image key -> existing file, looking under ``images_root`` and then the annotation folder.

        Raises:
            AnnotationError: some annotated image is in neither place (names up to five of them).
        """
        roots = [Path(images_root)]
        if self.source is not None:
            roots.append(self.source.parent)
        found: dict[str, Path] = {}
        missing = []
        for key in self.images:
            path = next((root / key for root in roots if (root / key).is_file()), None)
            if path is None:
                missing.append(key)
            else:
                found[key] = path
        if missing:
            raise AnnotationError(
                f"{len(missing)} of {len(self.images)} annotated images not found under "
                f"{', '.join(str(r) for r in roots)}: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
        return found


def select_images(annotations: AnnotationSet, paths: list[str | Path]) -> dict[str, Path]:
    """Image key -> file for the images named on a command line.

    A folder stands for every annotated image under it (keys resolved against the folder, then
    against the annotation file's folder: all must exist). A file is matched to the key its
    path ends with.

    Raises:
        AnnotationError: a path does not exist, a folder lacks annotated images, or a file has
            no annotation.
    """
    selected: dict[str, Path] = {}
    for entry in map(Path, paths):
        if entry.is_dir():
            selected.update(annotations.resolve(entry))
        elif entry.is_file():
            as_posix = entry.resolve().as_posix()
            key = next((k for k in annotations.images if as_posix.endswith("/" + k.lstrip("./"))), None)
            if key is None:
                where = annotations.source or "the annotations"
                raise AnnotationError(f"{entry}: no annotation for this image in {where}")
            selected[key] = entry
        else:
            raise AnnotationError(f"not found: {entry}")
    return selected


def load_annotations(path: str | Path) -> AnnotationSet:
    """Read an annotation file in any supported format (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a text file ({exc.reason})") from None
    if not text.strip():
        raise AnnotationError(f"{path}: annotation file is empty")
    if text.lstrip().startswith(("{", "[")):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        annotations = parse_json_annotations(document, where=str(path))
    else:
        annotations = parse_wider_text(text, where=str(path))
    return AnnotationSet(annotations.images, annotations.subsets, source=path.resolve())


# ---------------------------------------------------------------------------------------------
# WIDER FACE text format


def parse_wider_text(text: str, where: str = "<text>") -> AnnotationSet:
    """Parse ``wider_face_*_bbx_gt.txt`` content; faces flagged invalid are ignored."""
    lines = [line.strip() for line in text.splitlines()]
    images: dict[str, ImageFaces] = {}
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        name = lines[i]
        if i + 1 >= len(lines):
            raise AnnotationError(f"{where} line {i + 1}: image {name!r} has no face count after it")
        count_text = lines[i + 1]
        if not count_text.isdigit():
            raise AnnotationError(f"{where} line {i + 2}: expected the face count of {name!r}, got {count_text!r}")
        count = int(count_text)
        rows = max(count, 1)  # a face-less image still has one all-zero line
        if i + 2 + rows > len(lines):
            raise AnnotationError(f"{where}: image {name!r} announces {count} faces but the file ends early")
        boxes, valid = [], []
        for j in range(i + 2, i + 2 + rows):
            fields = lines[j].split()
            if len(fields) < 4:
                raise AnnotationError(f"{where} line {j + 1}: expected 'x y w h ...', got {lines[j]!r}")
            try:
                x, y, w, h = (float(v) for v in fields[:4])
                invalid = int(fields[7]) if len(fields) >= 8 else 0
            except ValueError:
                raise AnnotationError(f"{where} line {j + 1}: non-numeric face line {lines[j]!r}") from None
            if count == 0:
                break
            if w < 0 or h < 0:
                raise AnnotationError(f"{where} line {j + 1}: negative width or height in {lines[j]!r}")
            boxes.append([x, y, x + w, y + h])
            valid.append(invalid == 0)
        if name in images:
            raise AnnotationError(f"{where} line {i + 1}: image {name!r} listed twice")
        images[name] = ImageFaces(_as_boxes(boxes), {ALL_FACES: np.array(valid, bool)})
        i += 2 + rows
    if not images:
        raise AnnotationError(f"{where}: no images found in WIDER text annotations")
    return AnnotationSet(images, (ALL_FACES,))


# ---------------------------------------------------------------------------------------------
# JSON formats


def parse_json_annotations(document: object, where: str = "<json>") -> AnnotationSet:
    """Parse any of the JSON formats in the module docstring from a decoded document."""
    if not isinstance(document, dict):
        raise AnnotationError(
            f"{where}: expected a JSON object with 'images' (or 'splits'), got {type(document).__name__}"
        )
    if "splits" in document and "images" not in document:
        entries = []
        for split_name, split in document["splits"].items():
            if not isinstance(split, list):
                raise AnnotationError(f"{where}: split {split_name!r} must be a list of images")
            entries.extend(split)
        return _parse_entry_list(entries, box_format="xywh", where=where)
    if "images" not in document:
        raise AnnotationError(f"{where}: no 'images' key (found {sorted(document)[:6]})")
    box_format = document.get("box_format", "xyxy")
    if box_format not in ("xyxy", "xywh"):
        raise AnnotationError(f"{where}: box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    images = document["images"]
    if isinstance(images, dict):
        entries = [{"file": name, "boxes": boxes} for name, boxes in images.items()]
        return _parse_entry_list(entries, box_format, where)
    if isinstance(images, list):
        return _parse_entry_list(images, box_format, where)
    raise AnnotationError(f"{where}: 'images' must be an object or a list, got {type(images).__name__}")


def _parse_entry_list(entries: list, box_format: str, where: str) -> AnnotationSet:
    images: dict[str, ImageFaces] = {}
    has_wider_flags = False
    for index, entry in enumerate(entries):
        place = f"{where}: images[{index}]"
        if not isinstance(entry, dict) or "file" not in entry:
            raise AnnotationError(f"{place}: expected an object with 'file'")
        name = str(entry["file"]).replace("\\", "/")
        if name in images:
            raise AnnotationError(f"{place}: image {name!r} listed twice")
        faces = entry.get("boxes", entry.get("faces"))
        if faces is None:
            raise AnnotationError(f"{place} ({name}): no 'boxes' or 'faces' list")
        if not isinstance(faces, list):
            raise AnnotationError(f"{place} ({name}): 'boxes' must be a list")
        if faces and isinstance(faces[0], dict):
            images[name] = _parse_wider_faces(faces, f"{place} ({name})")
            has_wider_flags = has_wider_flags or any(images[name].subsets.get(s) is not None for s in WIDER_SUBSETS)
        else:
            boxes = _as_boxes(faces, f"{place} ({name})")
            if box_format == "xywh":
                boxes[:, 2:] += boxes[:, :2]
            _check_corners(boxes, f"{place} ({name})")
            images[name] = ImageFaces(boxes, {ALL_FACES: np.ones(len(boxes), bool)})
    if not images:
        raise AnnotationError(f"{where}: no images")
    subsets = WIDER_SUBSETS + (ALL_FACES,) if has_wider_flags else (ALL_FACES,)
    return AnnotationSet(images, subsets)


def _parse_wider_faces(faces: list[dict], place: str) -> ImageFaces:
    boxes, flags = [], {name: [] for name in WIDER_SUBSETS + (ALL_FACES,)}
    for k, face in enumerate(faces):
        if "bbox_xyxy" not in face:
            raise AnnotationError(f"{place} face {k}: no 'bbox_xyxy'")
        boxes.append(face["bbox_xyxy"])
        valid = not face.get("invalid", 0)
        flags[ALL_FACES].append(valid)
        for name in WIDER_SUBSETS:
            flags[name].append(bool(face.get(f"in_{name}", valid)) and valid)
    boxes_array = _check_corners(_as_boxes(boxes, place), place)
    return ImageFaces(boxes_array, {name: np.array(v, bool) for name, v in flags.items()})


def _as_boxes(values: list, place: str = "") -> np.ndarray:
    """float32 (N, 4) from a list of 4-number lists; rejects other shapes, NaN and infinity."""
    if any(not isinstance(v, (list, tuple)) or len(v) != 4 for v in values):
        raise AnnotationError(f"{place}: boxes must be lists of four numbers")
    try:
        boxes = np.array(values, dtype=np.float32).reshape(-1, 4)
    except (TypeError, ValueError):
        raise AnnotationError(f"{place}: boxes must be lists of four numbers") from None
    if not np.isfinite(boxes).all():
        raise AnnotationError(f"{place}: boxes contain NaN or infinity")
    return boxes


def _check_corners(boxes: np.ndarray, place: str) -> np.ndarray:
    """``boxes`` unchanged after checking x2 >= x1 and y2 >= y1 (names the first bad box)."""
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(bad):
        raise AnnotationError(f"{place}: box {int(bad[0])} has x2 < x1 or y2 < y1: {boxes[bad[0]].tolist()}")
    return boxes
