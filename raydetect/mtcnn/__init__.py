"""The MTCNN cascade (Zhang et al. 2016) as pure PyTorch: networks, box operations, stages."""

from raydetect.mtcnn.cascade import CascadeConfig, run_cascade
from raydetect.mtcnn.nets import ONet, PNet, RNet
from raydetect.mtcnn.weights import load_networks

__all__ = ["CascadeConfig", "ONet", "PNet", "RNet", "load_networks", "run_cascade"]
