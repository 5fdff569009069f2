"""FaceDetector(compile=True): torch.compile'd networks, and the fall-back when compiling fails."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from raydetect import FaceDetector

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_compiled_detector_finds_what_eager_finds(data_dir):
    image = cv2.cvtColor(cv2.imread(str(data_dir / "multiface.jpg")), cv2.COLOR_BGR2RGB)
    images = [image, image[:301, :517]]  # two sizes: the compiled networks take any shape
    # float32: inductor's fused kernels round bfloat16 differently from eager ones.
    eager = FaceDetector(device="cpu", precision="float32").detect(images)
    compiled_detector = FaceDetector(device="cpu", precision="float32", compile=True)
    for _ in range(2):  # the first call compiles, the second reuses the kernels
        compiled = compiled_detector.detect(images)
        assert compiled_detector.compiled
        for a, b in zip(eager, compiled):
            assert len(a) == len(b) > 0
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-2)


def test_failed_compilation_warns_and_runs_uncompiled(tmp_path):
    """A real compile failure (no working C++ compiler), in a fresh process with an empty kernel cache."""
    script = textwrap.dedent(
        """
        import warnings
        import cv2
        import torch._inductor.config as inductor_config
        from raydetect import FaceDetector

        inductor_config.cpp.cxx = ("/nonexistent/c++",)
        image = cv2.cvtColor(cv2.imread("tests/data/multiface.jpg"), cv2.COLOR_BGR2RGB)
        expected = FaceDetector(device="cpu").detect([image])[0]
        detector = FaceDetector(device="cpu", compile=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = detector.detect([image])[0]
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert any("torch.compile failed" in m and "compiler" in m for m in messages), messages
        assert not detector.compiled
        assert len(found) == len(expected) > 0 and (found.boxes == expected.boxes).all()
        print("fell back")
        """
    )
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "kernels"), TORCHINDUCTOR_FX_GRAPH_CACHE="0")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fell back" in result.stdout
