"""Loading the original MTCNN parameters, verified against their published checksums."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch

from raydetect.errors import WeightsError
from raydetect.mtcnn.nets import ONet, PNet, RNet

# sha256 of the parameter files shipped in weights/ (see weights/README.md).
WEIGHT_SHA256 = {
    "pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}


def default_weights_dir() -> Path:
    """The folder holding the bundled weights: the installed ``raydetect.weights``
    package, or ``weights/`` beside the package in a source checkout."""
    try:
        installed = Path(str(resources.files("raydetect.weights")))
        if (installed / "pnet.pt").is_file():
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "weights"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict(path: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """Read one parameter file, refusing a missing, altered or unreadable one."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"MTCNN weight file not found: {path}")
    expected = WEIGHT_SHA256.get(path.name)
    if verify and expected is not None:
        actual = _sha256(path)
        if actual != expected:
            raise WeightsError(
                f"MTCNN weight file {path} is corrupt or altered: sha256 {actual}, expected {expected}"
            )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad pickles
        raise WeightsError(f"MTCNN weight file {path} could not be read: {exc}") from exc


def load_networks(weights_dir: str | Path | None = None, verify: bool = True) -> tuple[PNet, RNet, ONet]:
    """The three networks with the original parameters, in eval mode on the CPU."""
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    nets = []
    for net, filename in ((PNet(), "pnet.pt"), (RNet(), "rnet.pt"), (ONet(), "onet.pt")):
        state = load_state_dict(folder / filename, verify=verify)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"MTCNN weight file {folder / filename} does not fit {type(net).__name__}: {exc}") from exc
        nets.append(net.eval().requires_grad_(False))
    return tuple(nets)  # type: ignore[return-value]
