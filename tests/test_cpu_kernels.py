"""The compiled CPU loops give exactly the numbers of the ATen code they replace, and every case they do not
cover falls back to it."""

import json
import threading
import types

import pytest
import torch
import torch.nn.functional as F

from benchmark_modules import load_benchmark
from raydetect.mtcnn import cpu_kernels, layers
from raydetect.mtcnn.resample import SummedAreaTables


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _features(shape, seed):
    return torch.randn(*shape, generator=_generator(seed)).contiguous(memory_format=torch.channels_last)


def _slopes(channels, seed):
    """Negative, zero, between 0 and 1 and above 1: PReLU falls then rises, is flat, or only rises."""
    slopes = torch.randn(channels, generator=_generator(seed))
    slopes[: min(channels, 4)] = torch.tensor([-0.7, 0.0, 0.25, 1.3])[: min(channels, 4)]
    return slopes


def _aten_prelu_max_pool(x, slopes, kernel):
    return F.max_pool2d(F.prelu(x, slopes), kernel, 2, ceil_mode=True)


def test_the_compiled_loops_are_available():
    assert cpu_kernels.AVAILABLE  # numba is a dependency: a broken install should fail here, not only run slower


# The networks' pooled layers (P-Net's stem, R-Net's and O-Net's pools) and edge cases: odd and even sides, a side
# as small as the window, one channel.
POOLED = [((1, 10, 431, 767), 2), ((1, 10, 20, 35), 2), ((5, 28, 22, 22), 3), ((5, 48, 9, 9), 3),
          ((3, 32, 46, 46), 3), ((3, 64, 21, 21), 3), ((3, 64, 8, 8), 2), ((2, 16, 3, 3), 3), ((2, 16, 3, 7), 3),
          ((1, 10, 4, 5), 2), ((1, 10, 5, 4), 3), ((2, 1, 6, 6), 2), ((2, 2, 2, 2), 2)]


@pytest.mark.parametrize("shape, kernel", POOLED)
def test_fused_prelu_and_pooling_equal_aten(shape, kernel):
    x, slopes = _features(shape, 0), _slopes(shape[1], 1)
    expected = _aten_prelu_max_pool(x, slopes, kernel)
    out = torch.empty(expected.shape, memory_format=torch.channels_last)
    cpu_kernels.prelu_max_pool(layers._channels_last_array(x), slopes.numpy(), kernel, layers._channels_last_array(out))
    assert torch.equal(out, expected)


@pytest.mark.parametrize("kernel", [2, 3])
def test_fused_pooling_skips_the_channels_past_the_slopes(kernel):
    x = _features((3, 16, 11, 12), 2)
    slopes = _slopes(10, 3)
    expected = _aten_prelu_max_pool(x[:, :10].contiguous(memory_format=torch.channels_last), slopes, kernel)
    out = torch.empty(expected.shape, memory_format=torch.channels_last)
    cpu_kernels.prelu_max_pool(layers._channels_last_array(x), slopes.numpy(), kernel, layers._channels_last_array(out))
    assert torch.equal(out, expected)


def _conv(inputs, outputs, seed):
    conv = torch.nn.Conv2d(inputs, outputs, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=_generator(seed)) * 0.3)
        conv.bias.copy_(torch.randn(outputs, generator=_generator(seed + 1)) * 0.1)
    return conv


# P-Net's first layer (10 outputs, padded to 16), R-Net's (28, padded to 32), O-Net's (32) and a wider one.
@pytest.mark.parametrize("inputs, outputs, kernel, side, count", [(3, 10, 2, 50, 1), (3, 28, 3, 24, 6),
                                                                    (3, 32, 3, 48, 2), (28, 48, 3, 11, 4)])
def test_conv_prelu_max_pool_equals_the_layers_one_by_one(inputs, outputs, kernel, side, count):
    conv, slopes = _conv(inputs, outputs, 4), _slopes(outputs, 5)
    x = _features((count, inputs, side, side), 6)
    with torch.no_grad():
        out = layers.conv_prelu_max_pool(conv, slopes, kernel, x)
        width = -(-outputs // layers.CONV_WIDTH_MULTIPLE) * layers.CONV_WIDTH_MULTIPLE
        padded = F.conv2d(x, F.pad(conv.weight, (0, 0, 0, 0, 0, 0, 0, width - outputs)),
                          F.pad(conv.bias, (0, width - outputs)))
        # Exactly the ATen layers over the padded convolution's first channels...
        assert torch.equal(out, _aten_prelu_max_pool(padded[:, :outputs], slopes, kernel))
        # ...and the unpadded convolution's to float rounding (oneDNN may block the two widths differently).
        torch.testing.assert_close(out, _aten_prelu_max_pool(conv(x), slopes, kernel), rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.shape[1] == outputs


def _fallback_cases():
    conv, slopes = _conv(3, 10, 7), _slopes(10, 8)
    x = _features((2, 3, 13, 14), 9)
    return conv, slopes, x


def test_conv_prelu_max_pool_falls_back_to_aten_in_bfloat16_and_other_layouts():
    conv, slopes, x = _fallback_cases()
    with torch.no_grad():
        out = layers.conv_prelu_max_pool(conv, slopes, 2, x, torch.bfloat16)
        assert out.dtype == torch.bfloat16
        expected = layers.max_pool(layers.prelu(layers.conv2d(conv, x, torch.bfloat16), slopes), 2)
        assert torch.equal(out, expected)
        contiguous = x.contiguous()
        assert torch.equal(layers.conv_prelu_max_pool(conv, slopes, 2, contiguous),
                           _aten_prelu_max_pool(conv(contiguous), slopes, 2))


def test_conv_prelu_max_pool_without_numba_equals_the_compiled_path(monkeypatch):
    conv, slopes, x = _fallback_cases()
    with torch.no_grad():
        compiled = layers.conv_prelu_max_pool(conv, slopes, 3, x)
        monkeypatch.setattr(cpu_kernels, "AVAILABLE", False)
        aten = layers.conv_prelu_max_pool(conv, slopes, 3, x)
    torch.testing.assert_close(compiled, aten, rtol=1e-5, atol=1e-5)
    assert aten.shape == compiled.shape


def test_compiled_loops_run_side_by_side_in_threads():
    """The detector's CPU streams call the loops from two threads at once (numba releases the GIL)."""
    x, slopes = _features((64, 28, 22, 22), 10), _slopes(28, 11)
    expected = _aten_prelu_max_pool(x, slopes, 3)
    results = [None] * 4

    def work(slot):
        out = torch.empty(expected.shape, memory_format=torch.channels_last)
        for _ in range(5):
            cpu_kernels.prelu_max_pool(layers._channels_last_array(x), slopes.numpy(), 3,
                                       layers._channels_last_array(out))
        results[slot] = out

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(torch.equal(out, expected) for out in results)


def _images(sizes, seed):
    return [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=_generator(seed + i))
            for i, (h, w) in enumerate(sizes)]


def _regions(sizes, image_index, seed):
    """Random non-empty half-open regions inside their images, from 1 pixel to the whole image."""
    g = _generator(seed)
    heights = torch.tensor([h for h, _ in sizes])[image_index]
    widths = torch.tensor([w for _, w in sizes])[image_index]
    x0 = (torch.rand(len(image_index), generator=g) * (widths - 1)).long()
    y0 = (torch.rand(len(image_index), generator=g) * (heights - 1)).long()
    x1 = x0 + 1 + (torch.rand(len(image_index), generator=g) * (widths - x0 - 1)).long()
    y1 = y0 + 1 + (torch.rand(len(image_index), generator=g) * (heights - y0 - 1)).long()
    regions = torch.stack([x0, y0, x1, y1], dim=1)
    regions[0] = torch.tensor([0, 0, widths[0], heights[0]])  # a whole image
    return regions


def _both_paths(monkeypatch, compute):
    compiled = compute()
    monkeypatch.setattr(cpu_kernels, "AVAILABLE", False)
    aten = compute()
    monkeypatch.setattr(cpu_kernels, "AVAILABLE", True)
    return compiled, aten


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("size", [(24, 24), (48, 48), (7, 13)])
def test_compiled_crops_equal_the_gathers_bit_for_bit(monkeypatch, normalized, size):
    sizes = [(120, 170), (61, 95), (9, 9)]
    tables = SummedAreaTables(_images(sizes, 12))
    image_index = torch.randint(0, 3, (200,), generator=_generator(13))
    regions = _regions(sizes, image_index, 14)
    compiled, aten = _both_paths(monkeypatch, lambda: tables.resample(image_index, regions, *size, normalized=normalized))
    assert torch.equal(compiled, aten)
    assert compiled.stride() == aten.stride()  # channels-last, as the networks take it


def test_compiled_crops_of_no_regions_are_empty():
    tables = SummedAreaTables(_images([(30, 40)], 15))
    crops = tables.resample(torch.zeros(0, dtype=torch.long), torch.zeros((0, 4), dtype=torch.long), 24, normalized=True)
    assert crops.shape == (0, 3, 24, 24)


@pytest.mark.parametrize("normalized", [True, False])
def test_compiled_levels_equal_the_gathers_bit_for_bit(monkeypatch, normalized):
    sizes = [(181, 321), (181, 321), (50, 50)]
    tables = SummedAreaTables(_images(sizes, 16))
    for height, width in [(181, 321), (128, 227), (13, 23), (12, 12)]:
        compiled, aten = _both_paths(
            monkeypatch, lambda: tables.resample_whole([0, 1], height, width, normalized=normalized)
        )
        assert torch.equal(compiled, aten)
        assert compiled.stride() == aten.stride()


def test_compiled_levels_of_a_table_too_large_for_int32_equal_the_gathers(monkeypatch):
    """Above about 8.4 megapixels the tables are int64; the loops take either."""
    tables = SummedAreaTables(_images([(3000, 3000)], 17))
    assert tables.cells.dtype == torch.int64
    compiled, aten = _both_paths(monkeypatch, lambda: tables.resample_whole([0], 201, 199, normalized=True))
    assert torch.equal(compiled, aten)
    regions = torch.tensor([[0, 0, 3000, 3000], [2800, 1000, 3000, 1077]])
    compiled, aten = _both_paths(monkeypatch, lambda: tables.resample(torch.zeros(2, dtype=torch.long), regions, 24))
    assert torch.equal(compiled, aten)


def test_levels_of_images_of_different_sizes_are_refused():
    tables = SummedAreaTables(_images([(30, 40), (31, 40)], 18))
    with pytest.raises(ValueError, match="one size"):
        tables.resample_whole([0, 1], 12, 16)


def test_the_fused_kernels_benchmark_runs_and_checks_both_sides(tmp_path, capsys):
    """benchmarks/fused_kernels.py compares the two sides' outputs before timing them; one round here."""
    benchmark = load_benchmark("fused_kernels")
    assert benchmark.main(["--rounds", "1", "--output", str(tmp_path / "fused.json")]) == 0
    rows = json.loads((tmp_path / "fused.json").read_text())["rows"]
    assert len(rows) == len(benchmark.POOLED_LAYERS) + 3 + 2  # three first layers, levels and crops
    assert all(row["aten_ms"] > 0 and row["fused_ms"] > 0 for row in rows)
    assert "| step | ATen | fused | fused / ATen |" in capsys.readouterr().out


def test_the_fused_kernels_benchmark_refuses_no_rounds(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("fused_kernels").main(["--rounds", "0"])
    assert exit_info.value.code == 2
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err


def test_loops_compile_without_a_disk_cache_where_numba_finds_no_writable_folder(monkeypatch):
    """numba refuses ``cache=True`` at decoration when it has nowhere to write: the loops then compile per process."""
    real_njit = cpu_kernels.numba.njit
    calls = []

    def njit(**options):
        calls.append(options["cache"])
        if options["cache"]:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real_njit(**options)

    monkeypatch.setattr(cpu_kernels, "numba", types.SimpleNamespace(njit=njit))  # numba's own modules keep theirs

    def twice(values):
        return values * 2

    compiled = cpu_kernels.compiled()(twice)
    assert calls == [True, False]
    assert compiled(3.0) == 6.0


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("region", [[-1, 0, 5, 5], [0, 0, 41, 5], [0, 0, 5, 31], [3, 0, 3, 5], [0, 4, 5, 2]])
def test_crops_of_regions_outside_the_image_or_empty_are_refused_by_name(monkeypatch, compiled, region):
    """The compiled loop reads without bounds checks: a bad region must never reach it (nor the gathers, which
    would read a neighbouring row or image)."""
    monkeypatch.setattr(cpu_kernels, "AVAILABLE", compiled)
    tables = SummedAreaTables(_images([(30, 40), (60, 80)], 19))
    regions = torch.tensor([[0, 0, 40, 30], region])
    with pytest.raises(ValueError, match=r"region 1 \(x0, y0, x1, y1 = .*\) is empty or outside its image 0 of 40x30"):
        tables.resample(torch.tensor([0, 0]), regions, 24)


# Pieces of a fused layer: groups of crops; bands of one image (pooled rows with windows of 2 and 3, odd and
# even sides, a last band of one row); several large images, each in bands.
@pytest.mark.parametrize("inputs, outputs, kernel, shape, piece_bytes", [
    (3, 28, 3, (37, 24, 24), 2_000 * 32 * 4),  # 5 crops a piece, the last piece shorter
    (3, 10, 2, (1, 101, 67), 7 * 65 * 16 * 4),  # bands of 3 pooled rows
    (3, 10, 2, (1, 100, 67), 7 * 65 * 16 * 4),
    (3, 32, 3, (1, 59, 40), 5 * 38 * 32 * 4),  # bands of 2 pooled rows; the last band holds one
    (10, 16, 3, (3, 45, 31), 1),  # one pooled row a piece
    (3, 10, 2, (2, 64, 64), 20 * 62 * 16 * 4),  # two images, each in bands
])
def test_a_fused_layer_in_pieces_equals_it_in_one(monkeypatch, inputs, outputs, kernel, shape, piece_bytes):
    count, height, width = shape
    conv, slopes = _conv(inputs, outputs, 10), _slopes(outputs, 11)
    x = _features((count, inputs, height, width), 12)
    with torch.no_grad():
        whole = layers.conv_prelu_max_pool(conv, slopes, kernel, x)
        monkeypatch.setattr(layers, "PIECE_BYTES", piece_bytes)
        pieces = layers._pieces(count, height - 2, (width - 2) * layers._padded_filters(conv)[0].shape[0] * 4, kernel)
        assert len(pieces) > 1
        assert torch.equal(layers.conv_prelu_max_pool(conv, slopes, kernel, x), whole)


def test_pieces_cover_every_pooled_row_of_every_image_once_and_stay_under_the_limit(monkeypatch):
    for count, conv_height, row_bytes, kernel, limit in [(7, 22, 22 * 128, 3, 30_000), (2, 431, 767 * 64, 2, 2**21),
                                                        (1, 9, 100, 3, 1), (3, 5, 10, 2, 10**9)]:
        monkeypatch.setattr(layers, "PIECE_BYTES", limit)
        rows = layers._pooled_length(conv_height, kernel)
        covered = []
        for images, band in layers._pieces(count, conv_height, row_bytes, kernel):
            image_count, band_rows = images.stop - images.start, band.stop - band.start
            covered += [(image, row) for image in range(images.start, images.stop) for row in range(band.start, band.stop)]
            if band_rows == rows:  # whole images
                assert image_count * conv_height * row_bytes <= limit or image_count == 1
            else:  # a band of one image: about two convolution rows per pooled row
                assert image_count == 1 and (2 * band_rows * row_bytes <= limit or band_rows == 1)
        assert sorted(covered) == [(image, row) for image in range(count) for row in range(rows)]


def test_the_pieces_benchmark_times_both_ways_after_checking_the_same_faces(data_dir, tmp_path, capsys):
    """benchmarks/fused_pieces.py: one round on the vendored media, a piece size small enough to cut every layer."""
    benchmark = load_benchmark("fused_pieces")
    inputs = ["street_crowd_24f_640x360.mp4@frames=0", "multiface.jpg"]
    argv = ["--rounds", "1", "--piece-mib", "0.25", "--data-root", str(data_dir), "--inputs", *inputs,
            "--output", str(tmp_path / "pieces.json")]
    assert benchmark.main(argv) == 0
    rows = json.loads((tmp_path / "pieces.json").read_text())["rows"]
    assert [row["input"] for row in rows] == inputs
    assert all(row["pieces_ms"] > 0 and row["whole_ms"] > 0 and row["piece_mib"] == 0.25 for row in rows)
    assert "| input | images | piece MiB | in pieces | whole layers | pieces / whole |" in capsys.readouterr().out
    assert layers.PIECE_BYTES == 2 * 2**20  # put back


def test_the_pieces_benchmark_refuses_a_layer_cut_differently(data_dir, monkeypatch):
    benchmark = load_benchmark("fused_pieces")
    real = benchmark.detect_all

    def wrong_with_pieces(detector, images, piece_bytes):
        detections = real(detector, images, piece_bytes)
        if piece_bytes != benchmark.ONE_PIECE:
            detections[0].scores[:1] += 0.5
        return detections

    monkeypatch.setattr(benchmark, "detect_all", wrong_with_pieces)
    with pytest.raises(AssertionError, match="scores differ with pieces"):
        benchmark.main(["--rounds", "1", "--data-root", str(data_dir), "--inputs", "multiface.jpg"])


@pytest.mark.parametrize("argv, message", [(["--rounds", "0"], "--rounds must be at least 1, got 0"),
                                           (["--piece-mib", "0"], "--piece-mib takes sizes above 0, got 0.0")])
def test_the_pieces_benchmark_refuses_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("fused_pieces").main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
