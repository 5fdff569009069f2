"""PyTorch datasets over the output of ``raydetect detect`` (read lazily; no Ray needed)."""

from raydetect.datasets.face_clips import FaceClips
from raydetect.datasets.face_crops import FaceCrops
from raydetect.datasets.parquet_rows import DatasetError

__all__ = ["DatasetError", "FaceClips", "FaceCrops"]
