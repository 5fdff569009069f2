"""The MTCNN cascade (Zhang et al. 2016) as pure PyTorch: networks, box operations, stages.

Names are imported on first use, so that the torch-free :mod:`raydetect.mtcnn.pyramid` loads
without torch.
"""

from importlib import import_module

_EXPORTS = {
    "CascadeConfig": "raydetect.mtcnn.cascade",
    "run_cascade": "raydetect.mtcnn.cascade",
    "ONet": "raydetect.mtcnn.nets",
    "PNet": "raydetect.mtcnn.nets",
    "RNet": "raydetect.mtcnn.nets",
    "load_networks": "raydetect.mtcnn.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'raydetect.mtcnn' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
