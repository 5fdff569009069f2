"""The offline job on Ray Data: videos in, faces (and crops) out as Parquet.

    inputs (driver) -> probe + plan shards (CPU tasks) -> one shard per block
      -> decode shards into chunks of sampled frames (CPU tasks, streaming)
      -> detect + crop + stage each chunk's faces and frame signatures (actor pool, one FaceDetector
         per actor, GPU if asked)
      -> small accounting records streamed back to the driver
      -> once every chunk of a video is staged: its finalising step (a Ray task) links the faces
         into tracks over the whole video and writes its faces and tracks files
      -> the driver writes one row per finished video.

Streaming end to end: decode tasks yield chunks one at a time and Ray Data's backpressure bounds
the chunks in flight, so memory does not grow with the number of videos. A long video spreads
over many shards, hence many decode tasks and actors; pull-based dispatch keeps a crowded shard
from stalling the others.

Nothing lost, nothing duplicated: every chunk's staged files have names fixed by the video and
frame range, so a chunk redone after an actor died replaces them; the finalising step rewrites
the video's two files whole, so one retried after its worker died writes the same files again.
A video's row in DEST/videos is written only after its finalising step, and is what a re-run
uses to skip it; files of a failed video are removed. See :mod:`raydetect.offline.output` for the
layout and :mod:`raydetect.offline.finalise` for the tracks.

The finalising step runs as a Ray task, not on the driver: it reads a whole video's faces, which
for long videos with crops is far more than the driver should hold or write, and many videos
finalise at once on a large dataset. The driver only keeps a small state per video.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from raydetect.core.tracking import TrackingOptions
from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions
from raydetect.offline.finalise import finalise_video
from raydetect.offline.output import VIDEO_SCHEMA, VIDEOS, JobOutput, video_key
from raydetect.offline.shards import CHUNK_BYTES, ShardOptions, decode_chunks, plan_shards
from raydetect.offline.sources import VideoInput, list_inputs

log = logging.getLogger("raydetect.offline.job")

DECODER_MEMORY = 384 << 20  # a decode worker beside its chunks: Python, OpenCV, pyarrow, FFmpeg, one frame
# A finalising step mostly waits on storage and holds one chunk's crops at a time: a small CPU share,
# so it runs beside the actors instead of queueing behind them.
FINALISE_CPUS = 0.25
FINALISE_RETRIES = 3  # a finalising step whose worker died runs again (it rewrites the same files)


@dataclass(frozen=True)
class Resources:
    """Where the stages run.

    Attributes:
        actors: detector actors at most (None: one per GPU share when gpus_per_actor > 0, else
            enough to fill the cluster's CPUs less the decoders' share).
        gpus_per_actor: GPUs each detector actor holds (0: detect on CPU).
        cpus_per_actor: CPUs each detector actor holds (None: 1 on GPU; on CPU, the CPUs of the
            largest node less one decoder's share, at most 4).
        decode_cpus: CPUs each decode task holds (decoding costs far less than detection).
        torch_threads: threads of a CPU detector (None: the actor's CPUs, rounded up).
    """

    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float | None = None
    decode_cpus: float = 0.5
    torch_threads: int | None = None


@dataclass(frozen=True)
class JobSpec:
    """Everything one detect job needs; see ``raydetect detect --help`` for the options."""

    sources: list[str]
    output: str
    detection: DetectionOptions = field(default_factory=DetectionOptions)
    shards: ShardOptions = field(default_factory=ShardOptions)
    resources: Resources = field(default_factory=Resources)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    overwrite: bool = False
    storage_options: dict | None = None
    flush_seconds: float = 30.0  # write finished videos' rows at least this often
    progress_seconds: float = 10.0


@dataclass
class JobSummary:
    """What a run did; ``exit_status`` 0 when every input succeeded, 3 when some failed."""

    output: str
    inputs: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    frames_decoded: int = 0
    frames_detected: int = 0
    faces: int = 0
    tracks: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_detected / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_status(self) -> int:
        return 3 if self.failed else 0

    def text(self) -> str:
        lines = [
            f"inputs: {self.inputs} ({self.ok} ok, {self.failed} failed, {self.skipped} already done)",
            f"frames: {self.frames_decoded} decoded, {self.frames_detected} detected "
            f"({self.fps:.2f} frames/s over {self.seconds:.1f} s)",
            f"faces: {self.faces} in {self.tracks} tracks",
            f"output: {self.output}/faces, {self.output}/tracks and {self.output}/videos",
        ]
        for message in self.errors[:20]:
            lines.append(f"failed: {message}")
        if len(self.errors) > 20:
            lines.append(f"... and {len(self.errors) - 20} more failures (see {self.output}/videos)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- Ray stages
class _PlanStage:
    """Ray Data ``map_batches`` callable: input rows -> their shard rows (a pyarrow table)."""

    def __init__(self, options: ShardOptions):
        self.options = options

    def __call__(self, batch: pa.Table) -> pa.Table:
        shards = [shard for row in batch.to_pylist() for shard in plan_shards(row, self.options)]
        return pa.Table.from_pylist(shards)


class _DecodeStage:
    """Ray Data ``flat_map`` callable: one shard row -> its chunk rows, yielded one at a time."""

    def __init__(self, options: ShardOptions):
        self.options = options

    def __call__(self, row: dict):
        yield from decode_chunks(row, self.options)


class DetectActor:
    """Ray Data actor: hosts one ChunkDetector (one FaceDetector), built once per actor."""

    def __init__(self, options: DetectionOptions, dest: str, storage_options: dict | None,
                 tracking: TrackingOptions):
        self.stage = ChunkDetector(options, dest, storage_options, tracking)

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = [self.stage.process(_record(batch, i)) for i in range(batch.num_rows)]
        return pa.Table.from_pylist(results)


def _record(batch: pa.Table, row: int) -> dict:
    """Row ``row`` of a chunk batch as a dict; the pixel bytes stay a zero-copy Arrow buffer."""
    record = {}
    for name in batch.column_names:
        value = batch.column(name)[row]
        record[name] = value.as_buffer() if name == "pixels" else value.as_py()
    return record


def _resources(spec: Resources, ray) -> tuple[int, float, float, int | None, str]:
    """(actors, gpus_per_actor, cpus_per_actor, torch_threads, device) for this cluster."""
    cluster = ray.cluster_resources()
    gpus = float(cluster.get("GPU", 0))
    gpus_per_actor = spec.gpus_per_actor if spec.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    if gpus_per_actor > 0:
        if gpus < gpus_per_actor:
            raise ValueError(f"--gpus-per-actor {gpus_per_actor:g} but the cluster has {gpus:g} GPUs")
        cpus_per_actor = spec.cpus_per_actor if spec.cpus_per_actor is not None else 1.0
        actors = spec.actors or max(1, int(gpus // gpus_per_actor))
        return actors, gpus_per_actor, cpus_per_actor, spec.torch_threads, "cuda"
    # CPU only. Planning tasks take 1 CPU (Ray's default, which lets the repartition fuse into
    # them): actors must leave one CPU per node free or nothing upstream can ever run.
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    cpus_per_actor = spec.cpus_per_actor
    if cpus_per_actor is None:
        cpus_per_actor = max(0.5, min(4.0, node_cpus - 1.0))
    if cpus_per_actor > node_cpus - min(1.0, spec.decode_cpus):
        raise ValueError(
            f"--cpus-per-actor {cpus_per_actor:g} leaves no CPU for decoding on nodes of {node_cpus:g} CPUs"
        )
    total_cpus = float(cluster.get("CPU", 1))
    actors = spec.actors or max(1, int((total_cpus - 1.0) // cpus_per_actor))
    # Decoding costs a small fraction of detection, so an actor's threads may use the CPUs its
    # node keeps for the decoders: the node's CPUs split between the actors it can hold.
    per_node = max(1, min(actors, int(max(node_cpus - 1.0, cpus_per_actor) // cpus_per_actor)))
    threads = spec.torch_threads or max(1, round(node_cpus / per_node))
    return actors, 0.0, cpus_per_actor, threads, "cpu"


def build_dataset(spec: JobSpec, todo: list[VideoInput], ray):
    """The Ray Dataset of accounting records for ``todo`` (lazy: nothing runs until iterated)."""
    import ray.data

    actors, gpus_per_actor, cpus_per_actor, threads, device = _resources(spec.resources, ray)
    detection = spec.detection
    if detection.device is None or (device == "cpu" and detection.device.startswith("cuda")):
        detection = _replace(detection, device=device)
    if detection.torch_threads is None and threads is not None:
        detection = _replace(detection, torch_threads=threads)
    shards = _replace(spec.shards, keep_full_frames=detection.crops, max_side=detection.max_side,
                      storage_options=spec.storage_options,
                      chunk_bytes=spec.shards.chunk_bytes or CHUNK_BYTES[device])

    items = [{"video": item.video, "label": item.label or "", "key": video_key(item.video)} for item in todo]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 256)))
    # One shard per block, so every shard of a long video is its own decode task. The repartition
    # fuses into the planning tasks when both keep Ray's default of 1 CPU per task.
    dataset = dataset.map_batches(_PlanStage(shards), batch_size=1, batch_format="pyarrow")
    dataset = dataset.repartition(target_num_rows_per_block=1)
    # A decode task holds the chunk it fills and the one it hands over, plus the decoder. Declaring
    # that memory also keeps Ray Data from fusing decoding into its neighbours (it fuses only steps
    # with equal remote arguments): fused, shards would be decoded inside the detector actors, one
    # after another, even when the decode CPUs equal the actors'.
    decode_memory = 2 * shards.chunk_bytes + DECODER_MEMORY
    dataset = dataset.flat_map(_DecodeStage(shards), num_cpus=spec.resources.decode_cpus, memory=decode_memory)
    dataset = dataset.map_batches(
        DetectActor,
        fn_constructor_kwargs={"options": detection, "dest": spec.output, "storage_options": spec.storage_options,
                               "tracking": spec.tracking},
        batch_size=1,
        batch_format="pyarrow",  # pixel bytes reach the detector without a copy
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        num_gpus=gpus_per_actor,
        num_cpus=cpus_per_actor,
    )
    return dataset


def _replace(obj, **changes):
    from dataclasses import replace

    return replace(obj, **changes)


# --------------------------------------------------------------------------- driver bookkeeping
@dataclass
class _VideoState:
    """What the driver has heard about one video's chunks."""

    item: VideoInput
    num_shards: int | None = None
    chunks_expected: dict = field(default_factory=dict)  # shard_number -> chunk count (once its last arrived)
    chunks_seen: dict = field(default_factory=dict)  # shard_number -> set of chunk indices
    error: str | None = None
    frames_decoded: int = 0
    frames_detected: int = 0
    faces: int = 0
    tracks: int = 0
    cuts: list = field(default_factory=list)
    seconds: float = 0.0
    frame_count: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0

    def add(self, record: dict) -> bool:
        """Count one accounting record (a repeat is ignored); True if it was new."""
        shard, chunk = int(record["shard_number"]), int(record["chunk_index"])
        seen = self.chunks_seen.setdefault(shard, set())
        if chunk in seen:
            return False
        seen.add(chunk)
        self.num_shards = int(record["num_shards"])
        if record["last_chunk"]:
            self.chunks_expected[shard] = chunk + 1
        if record["error"] and self.error is None:
            self.error = str(record["error"])
        self.frames_decoded += int(record["frames_read"])
        self.frames_detected += int(record["frames_detected"])
        self.faces += int(record["faces"])
        self.seconds += float(record["seconds"])
        if record["frame_count"]:
            self.frame_count, self.fps = int(record["frame_count"]), float(record["fps"])
            self.width, self.height = int(record["width"]), int(record["height"])
        return True

    @property
    def complete(self) -> bool:
        if self.num_shards is None or len(self.chunks_expected) < self.num_shards:
            return False
        return all(len(self.chunks_seen[s]) == n for s, n in self.chunks_expected.items())

    def row(self) -> dict:
        return {
            "video": self.item.video,
            "label": self.item.label,
            "status": "error" if self.error else "ok",
            "error": self.error,
            "frames_decoded": self.frames_decoded,
            "frames_detected": self.frames_detected,
            "faces": self.faces,
            "seconds": self.seconds,
            "frame_count": self.frame_count,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "shards": self.num_shards or 0,
            "tracks": self.tracks,
            "cuts": self.cuts,
        }


class _VideoRows:
    """Buffers finished videos' rows and writes them to DEST/videos in part files."""

    def __init__(self, output: JobOutput, run_id: str):
        self.output = output
        self.run_id = run_id
        self.pending: list[dict] = []
        self.parts = 0

    def add(self, row: dict) -> None:
        self.pending.append(row)

    def flush(self) -> None:
        if not self.pending:
            return
        table = pa.Table.from_pylist(self.pending, schema=VIDEO_SCHEMA)
        self.output.write_table(table, VIDEOS, f"part-{self.run_id}-{self.parts:05d}.parquet")
        self.parts += 1
        # Their rows are written: the finished videos' staged chunks are not needed any more.
        self.output.remove_staging_of({video_key(row["video"]) for row in self.pending if row["status"] == "ok"})
        self.pending = []


class _Finalisers:
    """The finalising steps in flight: one Ray task per video whose chunks are all staged."""

    def __init__(self, spec: JobSpec, ray):
        self.ray = ray
        self.task = ray.remote(num_cpus=FINALISE_CPUS, max_retries=FINALISE_RETRIES)(_finalise)
        self.spec = spec
        self.pending: dict = {}  # object ref -> _VideoState

    def start(self, state: _VideoState) -> None:
        item = state.item
        ref = self.task.remote(self.spec.output, self.spec.storage_options, video_key(item.video), item.video,
                               item.label, self.spec.tracking, self.spec.detection.crops)
        self.pending[ref] = state

    def finished(self, wait: bool = False) -> list[_VideoState]:
        """States of the videos whose step ended (all of them when ``wait``), with its outcome recorded."""
        if not self.pending:
            return []
        refs = list(self.pending)
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=None if wait else 0)
        states = []
        for ref in done:
            state = self.pending.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as exc:  # this video fails, the job goes on
                state.error = f"{state.item.video}: finalising failed: {type(exc).__name__}: {exc}"
            else:
                state.faces, state.tracks, state.cuts = result.faces, result.tracks, result.cuts
            states.append(state)
        return states


def _finalise(dest: str, storage_options: dict | None, key: str, video: str, label: str | None,
              tracking: TrackingOptions, crops: bool):
    return finalise_video(JobOutput(dest, storage_options), key, video, label, tracking, crops)


def run_job(spec: JobSpec, ray=None) -> JobSummary:
    """Run the job on the connected Ray cluster (``ray.init`` done by the caller) and summarise it."""
    if ray is None:
        import ray
    started = time.perf_counter()
    output = JobOutput(spec.output, spec.storage_options)
    summary = JobSummary(output=output.url())
    inputs = list_inputs(spec.sources, spec.storage_options)
    summary.inputs = len(inputs)
    output.check_options(result_options(spec), spec.overwrite)
    output.remove_temporaries()
    output.remove_staging()  # chunks staged by an interrupted run: their videos are redone whole

    finished = output.finished_videos()
    todo = [item for item in inputs if finished.get(item.video) != "ok"]
    summary.skipped = len(inputs) - len(todo)
    # Leftovers of earlier runs of the inputs about to be done: old error rows, partial faces.
    output.forget_videos({item.video for item in todo if item.video in finished})
    output.remove_faces_of({video_key(item.video) for item in todo})
    log.info("%d inputs, %d already done, %d to do; output %s", len(inputs), summary.skipped, len(todo), output.url())

    states = {item.video: _VideoState(item) for item in todo}
    rows = _VideoRows(output, run_id=time.strftime("%Y%m%d-%H%M%S") + f"-{int(started * 1000) % 100000:05d}")
    last_flush = last_progress = time.perf_counter()

    def record_finished(finished: list[_VideoState]) -> None:
        for state in finished:
            if not state.error:  # a failed step is recorded with the other failures below
                rows.add(state.row())
                _count(summary, state)

    if todo:
        dataset = build_dataset(spec, todo, ray)
        finalisers = _Finalisers(spec, ray)
        try:
            for record in dataset.iter_rows():
                state = states[record["video"]]
                if state.add(record) and state.complete and not state.error:
                    finalisers.start(state)
                record_finished(finalisers.finished())
                now = time.perf_counter()
                if now - last_flush >= spec.flush_seconds:
                    rows.flush()
                    last_flush = now
                if now - last_progress >= spec.progress_seconds:
                    _log_progress(states, now - started)
                    last_progress = now
            record_finished(finalisers.finished(wait=True))
        except BaseException:
            rows.flush()  # keep what finished: a re-run skips it
            raise
    # Every writer is done: drop the files of failed videos, then record their rows.
    rows.flush()
    for state in states.values():
        if not state.complete and state.error is None:
            state.error = f"{state.item.video}: incomplete: some of its chunks never reported back"
    output.remove_faces_of({video_key(s.item.video) for s in states.values() if s.error})
    for state in states.values():
        if state.error:
            rows.add(state.row())
            _count(summary, state)
            summary.errors.append(state.error)
    rows.flush()
    output.remove_temporaries()
    output.remove_staging()
    output.ensure_readable_faces(spec.detection.crops)
    summary.seconds = time.perf_counter() - started
    return summary


def result_options(spec: JobSpec) -> dict:
    """The options that decide the output's content (recorded in DEST/_job.json): detection,
    sampling, tracking; not the ones that only change speed or placement."""
    sampling = spec.shards.sampling
    return {
        **spec.detection.result_options(),
        "every": sampling.every, "fps": sampling.fps, "frames_per_video": sampling.count,
        "detect_every": spec.shards.detect_every,
        "tracking": asdict(spec.tracking),
    }


def _count(summary: JobSummary, state: _VideoState) -> None:
    if state.error:
        summary.failed += 1
    else:
        summary.ok += 1
    summary.frames_decoded += state.frames_decoded
    summary.frames_detected += state.frames_detected
    summary.faces += state.faces
    summary.tracks += state.tracks


def _log_progress(states: dict, elapsed: float) -> None:
    done = sum(1 for s in states.values() if s.complete)
    frames = sum(s.frames_detected for s in states.values())
    faces = sum(s.faces for s in states.values())
    log.info(
        "progress: %d/%d videos done, %d frames detected (%.2f frames/s), %d faces, %.0f s",
        done, len(states), frames, frames / elapsed if elapsed > 0 else 0.0, faces, elapsed,
    )
