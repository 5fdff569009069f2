"""Import a script of benchmarks/ (not a package) in a test: ``load_benchmark("gpu_check")``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, imported once per session."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and sibling imports resolve modules by name
        spec.loader.exec_module(module)
    return sys.modules[name]
