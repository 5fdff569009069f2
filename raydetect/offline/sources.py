"""Inputs: turn what the user typed (paths, directories, globs, fsspec URLs, manifests) into videos.

A SOURCE is one of:
- a video file (local path or any fsspec URL: ``s3://``, ``gs://``, ``file://``, ``memory://`` ...);
  listed as given even when it does not exist, so that the job reports it as a failed input;
- a directory (searched recursively for files with a video extension) or a glob (``*``, ``?``, ``[``);
- a manifest: ``.csv``, ``.parquet`` or ``.jsonl`` with a ``path`` column and an optional ``label``
  column (relative paths are relative to the manifest's folder), or a DFDC ``metadata.json``
  (``{"name.mp4": {"label": "FAKE", ...}, ...}``), whose labels are carried into the outputs.

Listing happens once, on the driver; it opens manifests but not videos, and a SOURCE that names a
file with a video extension is taken as it is, without a round trip to its store. Storage calls
(listing a folder, reading a manifest) retry transient failures (see :mod:`retrying_io`).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Iterable, Sequence

import fsspec

from raydetect.errors import RaydetectError
from raydetect.offline.retrying_io import RetryPolicy, StorageError, call_with_retries, failure_of
from raydetect.offline.video import VIDEO_EXTENSIONS

MANIFEST_SUFFIXES = (".csv", ".parquet", ".jsonl")
DFDC_METADATA = "metadata.json"
GLOB_CHARACTERS = "*?["


class SourceError(RaydetectError, ValueError):
    """A SOURCE cannot be listed: an empty directory or glob, a missing or malformed manifest."""


@dataclass(frozen=True)
class VideoInput:
    """One video to process.

    Attributes:
        video: its location as given (a path or URL), the ``video`` column of every output row.
        label: the manifest's label for it (e.g. DFDC "REAL" / "FAKE"), else None.
        original: for a DFDC fake, the video it was made from, resolved as ``video`` is (its
            ``original`` in ``metadata.json``); None otherwise.
    """

    video: str
    label: str | None = None
    original: str | None = None


def list_inputs(sources: Sequence[str], storage_options: dict | None = None,
                retry: RetryPolicy | None = None) -> list[VideoInput]:
    """Every video named by ``sources``, in order, each once (a later duplicate is dropped).

    ``storage_options``: keyword arguments for the fsspec filesystem of URLs (endpoint, credentials).
    ``retry``: how transient storage failures are retried (default :class:`RetryPolicy()`).
    """
    if not sources:
        raise SourceError("no SOURCE given")
    seen: set[str] = set()
    listed: list[VideoInput] = []
    for source in sources:
        for item in _expand(source, storage_options or {}, retry or RetryPolicy()):
            if item.video not in seen:
                seen.add(item.video)
                listed.append(item)
    return listed


def is_dfdc_metadata(source: str) -> bool:
    """True when SOURCE names a DFDC ``metadata.json`` (the only source that names fakes' originals)."""
    return posixpath.basename(source.rstrip("/")).lower() == DFDC_METADATA


def check_reuse_sources(sources: Sequence[str]) -> None:
    """Raise SourceError unless every SOURCE is a DFDC ``metadata.json``: reusing the originals' faces
    for fakes (``--reuse-original-boxes``) needs the manifest that names each fake's original."""
    others = [source for source in sources if not is_dfdc_metadata(source)]
    if not sources or others:
        named = ", ".join(others) if others else "no SOURCE given"
        raise SourceError(
            f"--reuse-original-boxes needs DFDC {DFDC_METADATA} sources (they name each fake's original); "
            f"not one: {named}"
        )


def _expand(source: str, options: dict, retry: RetryPolicy) -> list[VideoInput]:
    if not source or not source.strip():
        raise SourceError("empty SOURCE")
    name = posixpath.basename(source.rstrip("/")).lower()
    if is_dfdc_metadata(source):
        return _retrying(lambda: _read_dfdc_metadata(source, options), retry, source)
    if name.endswith(MANIFEST_SUFFIXES):
        return _retrying(lambda: _read_manifest(source, options), retry, source)
    fs, path = fsspec.core.url_to_fs(source, **options)
    globbed = any(ch in path for ch in GLOB_CHARACTERS)
    if not globbed and name.endswith(VIDEO_EXTENSIONS) and not source.endswith("/"):
        return [VideoInput(source)]  # a video, or a missing one the job reports: no need to ask the store
    if globbed:
        matches = _retrying(lambda: [p for p in sorted(fs.glob(path)) if not fs.isdir(p)], retry, source)
        if not matches:
            raise SourceError(f"{source}: the pattern matches no file")
        return [VideoInput(_location(source, fs, p)) for p in matches]
    if _retrying(lambda: fs.isdir(path), retry, source):
        found = sorted(p for p in _retrying(lambda: fs.find(path), retry, source)
                       if p.lower().endswith(VIDEO_EXTENSIONS))
        if not found:
            raise SourceError(f"{source}: the directory holds no video ({', '.join(VIDEO_EXTENSIONS)})")
        return [VideoInput(_location(source, fs, p)) for p in found]
    return [VideoInput(source)]


def _retrying(operation, retry: RetryPolicy, source: str):
    """``operation()`` with transient storage failures retried; a failure that lasts is a SourceError."""
    try:
        return call_with_retries(operation, retry, source)[0]
    except StorageError as exc:
        if isinstance(exc.__cause__, SourceError):  # a manifest's own fault: report it as it is
            raise exc.__cause__ from None
        raise SourceError(f"cannot list {exc}") from exc.__cause__


def _location(source: str, fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A listed path in the style of the SOURCE it came from: a URL for a URL, a plain path for a
    plain path, and relative to the working directory when the SOURCE was relative."""
    if "://" in source:
        return fs.unstrip_protocol(path)
    if os.path.isabs(source):
        return path
    return os.path.relpath(path)


def _resolve(base_dir: str, path: str) -> str:
    """``path`` from a manifest: absolute paths and URLs as written, others relative to ``base_dir``."""
    if "://" in path or path.startswith("/"):
        return path
    return posixpath.join(base_dir, path) if base_dir else path


def _base_dir(manifest: str) -> str:
    return posixpath.dirname(manifest)


def _open_manifest(manifest: str, options: dict):
    try:
        return fsspec.open(manifest, "rb", **options).open()
    except FileNotFoundError as exc:
        if failure_of(exc).transient:  # fsspec reports an HTTP 503 on open as a missing file
            raise
        raise SourceError(f"{manifest}: manifest not found") from None


def _read_manifest(manifest: str, options: dict) -> list[VideoInput]:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    suffix = manifest.lower().rsplit(".", 1)[-1]
    with _open_manifest(manifest, options) as stream:
        try:
            if suffix == "csv":
                # Every column as text: labels like "0"/"1" stay labels, paths stay paths.
                table = pa_csv.read_csv(
                    stream, convert_options=pa_csv.ConvertOptions(column_types=_all_strings(stream), strings_can_be_null=True)
                )
            elif suffix == "parquet":
                table = pq.read_table(stream)
            else:
                table = pa_json.read_json(stream)
        except (pa.ArrowInvalid, OSError) as exc:
            if failure_of(exc).transient:
                raise
            raise SourceError(f"{manifest}: cannot read the {suffix} manifest: {exc}") from exc
    if "path" not in table.column_names:
        raise SourceError(f"{manifest}: the manifest has no 'path' column (columns: {', '.join(table.column_names)})")
    paths = table.column("path").to_pylist()
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(paths)
    base = _base_dir(manifest)
    items = []
    for row, (path, label) in enumerate(zip(paths, labels), start=1):
        if path is None or not str(path).strip():
            raise SourceError(f"{manifest}: row {row} has an empty path")
        label = None if label is None or str(label).strip() == "" else str(label)
        items.append(VideoInput(_resolve(base, str(path).strip()), label))
    if not items:
        raise SourceError(f"{manifest}: the manifest lists no video")
    return items


def _all_strings(stream) -> dict:
    """Column name -> string type for the CSV header on ``stream`` (rewound afterwards)."""
    import pyarrow as pa

    position = stream.tell()
    header = stream.readline().decode("utf-8-sig").strip()
    stream.seek(position)
    import csv

    names = next(csv.reader([header]), [])
    return {name: pa.string() for name in names}


def _read_dfdc_metadata(manifest: str, options: dict) -> list[VideoInput]:
    """DFDC ``metadata.json``: ``{"abc.mp4": {"label": "FAKE", "split": ..., "original": ...}}``."""
    with _open_manifest(manifest, options) as stream:
        try:
            entries = json.load(stream)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"{manifest}: not valid JSON: {exc}") from exc
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise SourceError(f"{manifest}: expected DFDC metadata, an object of file name -> {{\"label\": ...}}")
    if not entries:
        raise SourceError(f"{manifest}: the metadata lists no video")
    base = _base_dir(manifest)
    items = []
    for name, meta in entries.items():
        original = meta.get("original")
        if original is not None and (not isinstance(original, str) or not original.strip()):
            raise SourceError(f"{manifest}: {name}: 'original' must be a file name, got {original!r}")
        items.append(VideoInput(
            _resolve(base, name), None if meta.get("label") is None else str(meta["label"]),
            None if original is None else _resolve(base, original.strip()),
        ))
    return items


def describe(inputs: Iterable[VideoInput]) -> str:
    """A one-line count for logs: ``"12 videos (3 labelled)"``."""
    items = list(inputs)
    labelled = sum(item.label is not None for item in items)
    return f"{len(items)} videos ({labelled} labelled)" if labelled else f"{len(items)} videos"
