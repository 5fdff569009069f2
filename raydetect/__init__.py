"""raydetect: find and crop every human face in large video datasets, fast, on Ray."""

from raydetect.errors import InvalidImageError, RaydetectError, WeightsError
from raydetect.core.results import Detections

__version__ = "0.1.0"


def __getattr__(name: str):
    # FaceDetector pulls in torch; import it on first use so light tools stay light.
    if name == "FaceDetector":
        from raydetect.core.detector import FaceDetector

        return FaceDetector
    raise AttributeError(f"module 'raydetect' has no attribute {name!r}")


__all__ = ["Detections", "FaceDetector", "InvalidImageError", "RaydetectError", "WeightsError", "__version__"]
