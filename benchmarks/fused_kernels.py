"""The fused CPU loops of ``raydetect.mtcnn.cpu_kernels`` against the ATen passes they replace, step by step.

On one thread (a detector stream's share), float32, channels-last, for the shapes a 1280x720 street frame
sends through the networks: each pooled layer's PReLU and pooling (ATen: ``layers.prelu`` then
``layers.max_pool``; fused: one loop), each first convolution with its PReLU and pooling (its output
width as the network has it, against padded to whole AVX2 registers and fused), and the area resampling
of a frame's pyramid levels and of its R-Net crops (the gathers of ``SummedAreaTables`` against the
compiled loop). The two sides alternate within every round; reported are the medians in ms and
fused / ATen. Both sides' outputs are compared first (equal, or to float rounding where a padded
convolution may round differently).

To stand in for an AVX2-only CPU on a newer one, limit all three libraries:

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 NUMBA_CPU_NAME=haswell \\
        PYTHONPATH=. .venv/bin/python benchmarks/fused_kernels.py --rounds 21 --output fused.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from raydetect.core.allocator import retain_freed_memory
from raydetect.mtcnn import cpu_kernels, layers
from raydetect.mtcnn.pyramid import level_size, pyramid_scales
from raydetect.mtcnn.resample import SummedAreaTables
from raydetect.mtcnn.weights import load_networks

sys.path.insert(0, str(Path(__file__).resolve().parent))
import alternating  # noqa: E402

# (name, network, first layer, PReLU, pool, input shape): the pooled layers of a 720p street frame (its first
# pyramid level; 278 R-Net and 25 O-Net crops per stream, the chunks two streams run).
POOLED_LAYERS = [
    ("P-Net stem, level 0", "pnet", "conv1", "prelu1", 2, (1, 3, 433, 769)),
    ("R-Net layer 1, 278 crops", "rnet", "conv1", "prelu1", 3, (278, 3, 24, 24)),
    ("R-Net layer 2, 278 crops", "rnet", "conv2", "prelu2", 3, (278, 28, 11, 11)),
    ("O-Net layer 1, 25 crops", "onet", "conv1", "prelu1", 3, (25, 3, 48, 48)),
    ("O-Net layer 2, 25 crops", "onet", "conv2", "prelu2", 3, (25, 32, 23, 23)),
    ("O-Net layer 3, 25 crops", "onet", "conv3", "prelu3", 2, (25, 64, 10, 10)),
]
FRAME = (720, 1280)
RNET_CROPS = 556  # a street frame's R-Net candidates


def _alternate(rounds: int, aten, fused) -> dict:
    """Median ms of each side over ``rounds`` rounds, the sides' order swapped every round."""
    aten(), fused()  # warm-up (and numba's compilation or cache load)
    aten_ms, fused_ms = alternating.alternate(rounds, aten, fused)
    return {"aten_ms": aten_ms, "fused_ms": fused_ms, "fused_over_aten": round(fused_ms / aten_ms, 3)}


def pooled_layer_rows(rounds: int, networks: dict) -> list[dict]:
    rows = []
    for name, net_name, conv_name, prelu_name, kernel, shape in POOLED_LAYERS:
        conv = getattr(networks[net_name], conv_name)
        slopes = getattr(networks[net_name], prelu_name).weight
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
        features = conv(x)
        out = torch.empty(layers.max_pool(features, kernel).shape, memory_format=torch.channels_last)

        def aten_prelu_pool():
            return layers.max_pool(layers.prelu(features, slopes), kernel)

        def fused_prelu_pool():
            cpu_kernels.prelu_max_pool(layers._channels_last_array(features), slopes.numpy(), kernel,
                                       layers._channels_last_array(out))
            return out

        if not torch.equal(aten_prelu_pool(), fused_prelu_pool()):
            raise AssertionError(f"{name}: the fused PReLU and pooling differ from ATen's")
        rows.append({"step": f"{name}: PReLU + pooling", **_alternate(rounds, aten_prelu_pool, fused_prelu_pool)})
        if conv.in_channels == 3:  # the first layers, where the padded convolution comes in

            def aten_layer():
                return layers.max_pool(layers.prelu(conv(x), slopes), kernel)

            def fused_layer():
                return layers.conv_prelu_max_pool(conv, slopes, kernel, x)

            torch.testing.assert_close(fused_layer(), aten_layer(), rtol=1e-5, atol=1e-5)
            rows.append({"step": f"{name}: convolution + PReLU + pooling", **_alternate(rounds, aten_layer, fused_layer)})
    return rows


def resampling_rows(rounds: int) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    frame = torch.randint(0, 256, (*FRAME, 3), dtype=torch.uint8, generator=generator)
    tables = SummedAreaTables([frame])
    levels = [level_size(*FRAME, scale) for scale in pyramid_scales(*FRAME, 20.0, 0.709)]
    # R-Net crops: squares of 20 to 120 pixels anywhere in the frame, as P-Net proposes them.
    sides = torch.randint(20, 121, (RNET_CROPS,), generator=generator)
    x0 = (torch.rand(RNET_CROPS, generator=generator) * (FRAME[1] - sides)).long()
    y0 = (torch.rand(RNET_CROPS, generator=generator) * (FRAME[0] - sides)).long()
    regions = torch.stack([x0, y0, x0 + sides, y0 + sides], dim=1)
    image_index = torch.zeros(RNET_CROPS, dtype=torch.long)

    def on_path(compiled: bool, work):
        def run():
            cpu_kernels.AVAILABLE, saved = compiled, cpu_kernels.AVAILABLE
            try:
                return work()
            finally:
                cpu_kernels.AVAILABLE = saved
        return run

    def all_levels():
        return [tables.resample_whole([0], height, width, normalized=True) for height, width in levels]

    def crops():
        return tables.resample(image_index, regions, 24, normalized=True)

    rows = []
    for step, work in ((f"pyramid levels of a {FRAME[1]}x{FRAME[0]} frame ({len(levels)})", all_levels),
                       (f"{RNET_CROPS} R-Net crops, 24x24", crops)):
        aten, fused = on_path(False, work), on_path(True, work)
        if not all(torch.equal(a, b) for a, b in zip(*(_as_list(side()) for side in (aten, fused)))):
            raise AssertionError(f"{step}: the compiled resampling differs from the gathers")
        rows.append({"step": f"area resampling: {step}", **_alternate(rounds, aten, fused)})
    return rows


def _as_list(result) -> list:
    return result if isinstance(result, list) else [result]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    alternating.add_arguments(parser, rounds=21, per="step")
    args = alternating.parse_arguments(parser, argv)
    if not cpu_kernels.AVAILABLE:
        parser.error("numba is not importable here: there are no fused loops to time")
    torch.set_num_threads(1)
    retain_freed_memory()  # as FaceDetector does on the CPU
    networks = dict(zip(("pnet", "rnet", "onet"), load_networks()))
    with torch.inference_mode():
        rows = pooled_layer_rows(args.rounds, networks) + resampling_rows(args.rounds)
    target = cpu_kernels.numba.config.CPU_NAME or "this CPU"
    print(f"one thread, float32, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, numba target "
          f"{target}, {args.rounds} alternating rounds: median ms")
    print("| step | ATen | fused | fused / ATen |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['step']} | {row['aten_ms']:.2f} | {row['fused_ms']:.2f} | {row['fused_over_aten']:.2f} |")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"rounds": args.rounds, "capability": torch.backends.cpu.get_cpu_capability(), "rows": rows},
                      handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
