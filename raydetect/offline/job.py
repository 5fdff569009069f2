"""The offline job on Ray Data: videos in, faces (and crops) out as Parquet.

    inputs (driver) -> probe + plan shards (CPU tasks) -> one shard per block
      -> decode shards into chunks of sampled frames (CPU tasks, streaming)
      -> detect + crop + stage each chunk's faces and frame signatures (actor pool, one FaceDetector
         per actor, GPU if asked)
      -> small accounting records streamed back to the driver
      -> once every chunk of a video is staged: its finalising step (a Ray task) links the faces
         into tracks over the whole video and writes its faces and tracks files (and clips files)
      -> the driver writes one row per finished video.

With ``--reuse-original-boxes`` (:mod:`raydetect.offline.reuse`) that runs for the DFDC originals first;
then the fakes are probed (CPU tasks), those that match their original decoded and cropped with its
boxes (CPU tasks, no detector) and given copies of its rows by a copying step in place of the
finalising one; the fakes that do not match go through the pipeline above.

Streaming end to end: decode tasks yield chunks one at a time and Ray Data's backpressure bounds
the chunks in flight, so memory does not grow with the number of videos. A long video spreads
over many shards, hence many decode tasks and actors; pull-based dispatch keeps a crowded shard
from stalling the others.

Nothing lost, nothing duplicated: every chunk's staged files have names fixed by the video and
frame range, so a chunk redone after an actor died replaces them; the finalising step rewrites
the video's files (faces, tracks, clips) whole, so one retried after its worker died writes the same
files again.
A video's row in DEST/videos is written only after its finalising step, and is what a re-run
uses to skip it; files of a failed video are removed. See :mod:`raydetect.offline.output` for the
layout and :mod:`raydetect.offline.finalise` for the tracks.

The finalising step runs as a Ray task, not on the driver: it reads a whole video's faces, which
for long videos with crops is far more than the driver should hold or write, and many videos
finalise at once on a large dataset. The driver only keeps a small state per video.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from raydetect.core.clips import ClipOptions
from raydetect.core.tracking import TrackingOptions
from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions
from raydetect.offline.estimate import JobEstimate, add_detector_time, estimate
from raydetect.offline.finalise import finalise_video
from raydetect.offline.retrying_io import RetryPolicy
from raydetect.offline.output import VIDEO_SCHEMA, VIDEOS, JobOutput, video_key
from raydetect.offline.reuse import ChunkCropper, copy_from_original, mismatch, plan_reuse, probe_record
from raydetect.offline.shards import CHUNK_BYTES, ShardOptions, decode_chunks, plan_shards
from raydetect.offline.sources import VideoInput, check_reuse_sources, list_inputs

log = logging.getLogger("raydetect.offline.job")

# What a decode worker needs, measured with benchmarks/decode_memory.py (figures in docs/benchmarks.md):
DECODER_MEMORY = 200 << 20  # the worker beside its chunks: Ray, Python, OpenCV, pyarrow, FFmpeg (1080p)
CHUNK_COPIES = 7  # chunk-sized buffers alive at its peak: frames, the chunk's bytes, its Arrow block, freed pages
MEMORY_HEADROOM = 1.25  # Ray Data warns when a worker's peak exceeds its declared memory / 1.25
# glibc gives each new thread its own malloc arena (up to 8 per core) and keeps the memory freed in it; a
# reused decode worker ran each task's frame buffers in a fresh one and grew by about a chunk per task.
# Two arenas keep its peak flat (benchmarks/decode_memory.py --copies; docs/benchmarks.md). glibc reads the
# limit when a process starts, so it reaches the workers through their environment.
ARENA_VARIABLE = "MALLOC_ARENA_MAX"
DECODE_MALLOC_ARENAS = 2


def decode_runtime_env() -> dict | None:
    """The decode stage's runtime environment: the arena limit for its workers, or None when this
    driver's environment already sets one.

    A local Ray instance started from a driver with the variable passes it on to every worker
    (``raydetect detect`` sets it before starting one: :func:`limit_local_arenas`); on a cluster the
    workers get it from this runtime environment, which costs a job a few seconds of worker start-up.
    """
    if ARENA_VARIABLE in os.environ:
        return None
    return {"env_vars": {ARENA_VARIABLE: str(DECODE_MALLOC_ARENAS)}}


def limit_local_arenas() -> None:
    """Before starting a local Ray instance: its workers inherit the decode stage's arena limit
    (unless the variable is set already, the user's choice)."""
    os.environ.setdefault(ARENA_VARIABLE, str(DECODE_MALLOC_ARENAS))


def decode_memory(chunk_bytes: int) -> int:
    """Bytes a decode task declares to Ray: the decoder plus the chunk copies it holds at once, with
    the headroom Ray Data checks for."""
    return int(MEMORY_HEADROOM * (DECODER_MEMORY + CHUNK_COPIES * chunk_bytes))


PROBES_PER_TASK = 16  # inputs a planning task probes (one after another)
# Probing reads a container's header: mostly waiting on storage, so a planning task holds a small CPU
# share, and one runs at a time per this many CPUs of the cluster, enough to keep decoding fed.
PLAN_CPUS = 0.25
CPUS_PER_PLANNING_TASK = 8

# Attempts after the first for a task or actor call whose worker died (a decoder crash on a hostile
# file, the out-of-memory killer, a lost node). Ray Data's default retries forever, so an input that
# always kills its worker would hold the job for ever; once these are spent, its video gets an error row.
WORKER_RETRIES = 3
# A finalising step mostly waits on storage and holds one chunk's crops at a time: a small CPU share,
# so it runs beside the actors instead of queueing behind them.
FINALISE_CPUS = 0.25
# CPUs of an actor that crops fakes' chunks with their originals' boxes (--reuse-original-boxes): cropping
# costs about what decoding does.
CROP_CPUS = 0.5


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
    clips: ClipOptions | None = None  # per-track clips into DEST/clips (None: no clips table)
    overwrite: bool = False
    storage_options: dict | None = None
    flush_seconds: float = 30.0  # write finished videos' rows at least this often
    worker_retries: int = WORKER_RETRIES  # attempts after the first of a task whose worker died
    progress_seconds: float = 10.0
    reuse_original_boxes: bool = False  # DFDC fakes take their original's faces (see raydetect.offline.reuse)

    def __post_init__(self) -> None:
        if self.reuse_original_boxes:
            check_reuse_sources(self.sources)


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
    clips: int = 0
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
            f"faces: {self.faces} in {self.tracks} tracks" + (f", {self.clips} clips" if self.clips else ""),
            f"output: {self.output}/faces, {self.output}/tracks{', ' + self.output + '/clips' if self.clips else ''} "
            f"and {self.output}/videos",
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


class CropActor:
    """Ray Data actor (no detector): crops a fake's chunks with its original's boxes (see
    :class:`~raydetect.offline.reuse.ChunkCropper`). An actor, not a task, so that torch is imported once
    per actor, not once per worker process a task happens to land on."""

    def __init__(self, crop, dest: str, storage_options: dict | None, retry: RetryPolicy | None, fakes: dict):
        self.stage = ChunkCropper(crop, dest, storage_options, retry, fakes)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.stage.process(_record(batch, i)) for i in range(batch.num_rows)])


class DetectActor:
    """Ray Data actor: hosts one ChunkDetector (one FaceDetector), built once per actor."""

    def __init__(self, options: DetectionOptions, dest: str, storage_options: dict | None,
                 retry: RetryPolicy | None = None, tracking: TrackingOptions = TrackingOptions()):
        self.stage = ChunkDetector(options, dest, storage_options, retry, tracking)

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
    # CPU only. Actors must leave room on each node for a decode task (and a planning task), or
    # nothing upstream of them can ever run.
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


def build_dataset(spec: JobSpec, todo: list[VideoInput], ray, probes_per_task: int = PROBES_PER_TASK):
    """The Ray Dataset of accounting records for ``todo`` (lazy: nothing runs until iterated);
    ``probes_per_task``: inputs each planning task probes."""
    import ray.data

    actors, gpus_per_actor, cpus_per_actor, threads, device = _resources(spec.resources, ray)
    detection, shards = _stage_options(spec, device, threads)
    dataset = _planned_shards(todo, shards, ray, probes_per_task, spec.worker_retries)
    # One shard per block, so every shard of a long video is its own decode task.
    dataset = dataset.repartition(target_num_rows_per_block=1)
    dataset = add_decode_stage(dataset, shards, spec.resources.decode_cpus, spec.worker_retries)
    with _remote_args_allowed():
        dataset = dataset.map_batches(
            DetectActor,
            fn_constructor_kwargs={"options": detection, "dest": spec.output,
                                   "storage_options": spec.storage_options, "retry": spec.shards.retry,
                                   "tracking": spec.tracking},
            batch_size=1,
            batch_format="pyarrow",  # pixel bytes reach the detector without a copy
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            num_gpus=gpus_per_actor,
            num_cpus=cpus_per_actor,
            # A dead actor is always replaced (a preempted node is no reason to stop), but the chunk
            # it held is retried only so often.
            max_restarts=-1,
            max_task_retries=spec.worker_retries,
        )
    configure_context(dataset.context, shards.chunk_bytes)
    return dataset


def _stage_options(spec: JobSpec, device: str, threads: int | None) -> tuple[DetectionOptions, ShardOptions]:
    """The detection and shard options of the stages, completed for ``device``."""
    detection = spec.detection
    if detection.device is None or (device == "cpu" and detection.device.startswith("cuda")):
        detection = _replace(detection, device=device)
    if detection.torch_threads is None and threads is not None:
        detection = _replace(detection, torch_threads=threads)
    shards = _replace(spec.shards, keep_full_frames=detection.crops, max_side=detection.max_side,
                      storage_options=spec.storage_options,
                      chunk_bytes=spec.shards.chunk_bytes or CHUNK_BYTES[device])
    return detection, shards


def _planned_shards(todo: list[VideoInput], shards: ShardOptions, ray, probes_per_task: int = PROBES_PER_TASK,
                    retries: int = WORKER_RETRIES, beside_decoding: bool = True):
    """The dataset of ``todo``'s shard rows: every input probed by a Ray task (none on the driver).
    ``beside_decoding``: planning feeds decoding in the same dataset (the job), rather than being
    all there is to run (the dry run)."""
    import ray.data

    items = [{"video": item.video, "label": item.label or "", "key": video_key(item.video)} for item in todo]
    # A planning task hands its shards on when it has probed all its inputs: few inputs per task let
    # decoding and detection start after the first few probes, not after 1/256 of a large manifest.
    dataset = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / probes_per_task)))
    limits = {}
    if beside_decoding:
        # Unbounded, planning tasks take every CPU the actors leave, and Ray Data gives decoding no
        # budget while they are queued: a small node would probe the whole manifest before decoding a frame.
        planners = max(1, math.ceil(float(ray.cluster_resources().get("CPU", 1)) / CPUS_PER_PLANNING_TASK))
        limits = {"num_cpus": PLAN_CPUS, "compute": ray.data.TaskPoolStrategy(size=planners)}
    with _remote_args_allowed():
        return dataset.map_batches(_PlanStage(shards), batch_size=1, batch_format="pyarrow", max_retries=retries,
                                   **limits)


@contextlib.contextmanager
def _remote_args_allowed():
    """Ray 2.60 names no parameter for task retries: free-form remote arguments (``max_retries``,
    ``max_task_retries``) are still the way, and would print a deprecation warning to users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
        yield


def add_decode_stage(dataset, shards: ShardOptions, decode_cpus: float, retries: int = WORKER_RETRIES):
    """``dataset`` (one shard per row) -> its chunk rows, decoded by Ray tasks of ``decode_cpus`` CPUs,
    each retried ``retries`` times when its worker dies.

    A decode task holds the chunk it fills, the one it hands over and the decoder. Declaring that
    memory also keeps Ray Data from fusing decoding into its neighbours (it fuses only steps with
    equal remote arguments): fused, shards would be decoded inside the detector actors, one after
    another, even when the decode CPUs equal the actors'. The workers' malloc arenas are limited
    (:func:`decode_runtime_env`)."""
    runtime_env = decode_runtime_env()
    extra = {} if runtime_env is None else {"runtime_env": runtime_env}  # merged into the job's
    with _remote_args_allowed():
        return dataset.flat_map(_DecodeStage(shards), num_cpus=decode_cpus,
                                memory=decode_memory(shards.chunk_bytes), max_retries=retries, **extra)


def configure_context(context, chunk_bytes: int) -> None:
    """Ray Data settings of the job's dataset (``context``: its ``DataContext``).

    - Every full chunk is a block of its own: by default Ray Data gathers a task's rows into blocks of
      up to 128 MiB, so a decode task would hold several chunks, and their Arrow copy, before handing
      any over (the memory the decoders declare counts two chunks).
    - A task whose retries are spent loses its block instead of aborting the job: the driver sees
      that video's chunks missing and gives it an error row (see run_job)."""
    context.target_max_block_size = max(1, chunk_bytes // 2)
    context.max_errored_blocks = -1


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
    clips: int = 0
    cuts: list = field(default_factory=list)
    seconds: float = 0.0
    io_retries: int = 0
    frame_count: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    boxes_from: str | None = None  # reusing the faces of this original (--reuse-original-boxes)
    boxes_note: str | None = None  # why a fake with an original was detected instead

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
        self.io_retries += int(record["io_retries"])
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
            "io_retries": self.io_retries,
            "tracks": self.tracks,
            "cuts": self.cuts,
            "clips": self.clips,
            "original": self.item.original,
            "boxes_from": self.boxes_from,
            "boxes_note": self.boxes_note,
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
        self.task = ray.remote(num_cpus=FINALISE_CPUS, max_retries=spec.worker_retries)(_finalise)
        self.copy_task = ray.remote(num_cpus=FINALISE_CPUS, max_retries=spec.worker_retries)(_copy_from_original)
        self.spec = spec
        self.pending: dict = {}  # object ref -> _VideoState

    def start(self, state: _VideoState) -> None:
        item = state.item
        if state.boxes_from:  # a fake reusing its original's faces: copies, nothing to link
            ref = self.copy_task.remote(self.spec.output, self.spec.storage_options, self.spec.shards.retry,
                                        item, self.spec.detection.crops, state.cuts)
        else:
            ref = self.task.remote(self.spec.output, self.spec.storage_options, self.spec.shards.retry,
                                   video_key(item.video), item.video, item.label, self.spec.tracking,
                                   self.spec.detection.crops, self.spec.clips, item.original)
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
                state.faces, state.tracks, state.cuts, state.clips = (result.faces, result.tracks, result.cuts,
                                                                      result.clips)
            states.append(state)
        return states


def _finalise(dest: str, storage_options: dict | None, retry: RetryPolicy, key: str, video: str,
              label: str | None, tracking: TrackingOptions, crops: bool, clips: ClipOptions | None,
              original: str | None):
    return finalise_video(JobOutput(dest, storage_options, retry), key, video, label, tracking, crops, clips,
                          original)


def _copy_from_original(dest: str, storage_options: dict | None, retry: RetryPolicy, fake: VideoInput,
                        crops: bool, cuts: list[int]):
    return copy_from_original(JobOutput(dest, storage_options, retry), fake, crops, cuts)


def run_job(spec: JobSpec, ray=None) -> JobSummary:
    """Run the job on the connected Ray cluster (``ray.init`` done by the caller) and summarise it."""
    if ray is None:
        import ray
    started = time.perf_counter()
    output = JobOutput(spec.output, spec.storage_options, spec.shards.retry)
    summary = JobSummary(output=output.url())
    inputs = list_inputs(spec.sources, spec.storage_options, spec.shards.retry)
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
    timers = dict.fromkeys(("flush", "progress"), time.perf_counter())
    finalisers = _Finalisers(spec, ray)

    def record_finished(finished: list[_VideoState]) -> None:
        for state in finished:
            if not state.error:  # a failed step is recorded with the other failures below
                rows.add(state.row())
                _count(summary, state)

    def take(records) -> None:
        """Count the accounting records of a pass; a video whose records are all in goes to its finalising step."""
        try:
            for record in records:
                state = states[record["video"]]
                if state.add(record) and state.complete and not state.error:
                    finalisers.start(state)
                record_finished(finalisers.finished())
                _tick(spec, states, rows, timers, started)
        except BaseException:
            rows.flush()  # keep what finished: a re-run skips it
            raise

    def detect(videos: list[VideoInput]) -> None:
        passes = [(videos, PROBES_PER_TASK)] if videos else []
        while passes:
            videos, probes_per_task = passes.pop()
            take(build_dataset(spec, videos, ray, probes_per_task).iter_rows())
            # A planning task probes several inputs: one that kills its worker at every attempt takes the
            # others down with it. Inputs that never reported get a second pass, one input per task.
            unheard = [states[v.video].item for v in videos
                       if states[v.video].num_shards is None and states[v.video].error is None]
            if unheard and probes_per_task > 1:
                log.info("%d inputs lost with a planning task that kept failing: probing them one per task",
                         len(unheard))
                passes.append((unheard, 1))

    if spec.reuse_original_boxes:
        plan = plan_reuse(todo, inputs)
        for video, note in plan.notes.items():
            states[video].boxes_note = note
        log.info("reusing originals' faces: %d videos to detect first, then %d fakes", len(plan.detect),
                 len(plan.fakes))
        detect(plan.detect)
        record_finished(finalisers.finished(wait=True))
        rows.flush()  # the originals' rows, read back next
        detect(_reuse_original_faces(spec, plan.fakes, states, output, finalisers, take, ray))
    else:
        detect(todo)
    try:
        record_finished(finalisers.finished(wait=True))
    except BaseException:
        rows.flush()
        raise
    # Every writer is done: drop the files of failed videos, then record their rows.
    rows.flush()
    for state in states.values():
        if not state.complete and state.error is None:
            state.error = f"{state.item.video}: incomplete: {_worker_died(spec.worker_retries)}"
    output.remove_faces_of({video_key(s.item.video) for s in states.values() if s.error})
    for state in states.values():
        if state.error:
            rows.add(state.row())
            _count(summary, state)
            summary.errors.append(state.error)
    rows.flush()
    output.remove_temporaries()
    output.remove_staging()
    output.ensure_readable_faces(spec.detection.crops, clips=spec.clips is not None)
    summary.seconds = time.perf_counter() - started
    return summary


def _reuse_original_faces(spec: JobSpec, fakes: list[VideoInput], states: dict, output: JobOutput,
                          finalisers: _Finalisers, take, ray) -> list[VideoInput]:
    """Give each fake whose original is done its original's faces (see :mod:`raydetect.offline.reuse`);
    returns the fakes to detect instead, their ``boxes_note`` set. ``take``: counts a pass's records.

    Every fake is probed by a Ray task and compared with its original's row; the matching ones are
    decoded and cropped with the original's boxes (with crops; without, nothing is decoded), then
    each gets a copying step in place of the finalising one."""
    import ray.data

    if not fakes:
        return []
    earlier = output.video_rows({f.original for f in fakes if f.original not in states})
    ready, detect = [], []
    for fake in fakes:
        original = states.get(fake.original)
        if original is not None:
            row = original.row() if original.complete else {**original.row(), "status": "error"}
        else:
            row = earlier.get(fake.original, {"video": fake.original, "status": "error"})
        if row["status"] != "ok":
            states[fake.video].boxes_note = mismatch({}, row)
            detect.append(fake)
        else:
            ready.append((fake, row))
    if not ready:
        return detect
    _, _, _, threads, device = _resources(spec.resources, ray)
    _, shards = _stage_options(spec, device, threads)
    probed: dict[str, list[dict]] = {}
    for shard in _probe_all([fake for fake, _ in ready], shards, ray, spec.worker_retries)[0]:
        probed.setdefault(shard["video"], []).append(shard)
    reused: list[dict] = []
    for fake, row in ready:
        state = states[fake.video]
        planned = probed.get(fake.video)
        if not planned:  # its planning task kept failing: reported as incomplete at the end
            continue
        note = None if planned[0]["error"] else mismatch(planned[0], row)
        if note:
            state.boxes_note = note
            detect.append(fake)
            continue
        if not planned[0]["error"]:
            state.boxes_from, state.cuts = fake.original, list(row["cuts"] or [])
        reused.extend(planned)  # a fake that cannot be probed: its shard becomes its error row
    log.info("%d fakes reuse their original's faces, %d are detected",
             sum(states[fake.video].boxes_from is not None for fake, _ in ready), len(detect))
    if not spec.detection.crops:
        take(probe_record(shard) for shard in reused)
        return detect
    if reused:
        by_key = {video_key(fake.video): fake for fake, _ in ready if states[fake.video].boxes_from}
        dataset = ray.data.from_items(reused).repartition(target_num_rows_per_block=1)
        dataset = add_decode_stage(dataset, shards, spec.resources.decode_cpus, spec.worker_retries)
        # Croppers at most: the cluster's CPUs less one, left to the decoders.
        croppers = max(1, int(ray.cluster_resources().get("CPU", 1) - 1))
        with _remote_args_allowed():
            dataset = dataset.map_batches(
                CropActor,
                fn_constructor_kwargs={"crop": spec.detection.crop, "dest": spec.output,
                                       "storage_options": spec.storage_options, "retry": spec.shards.retry,
                                       "fakes": by_key},
                batch_size=1, batch_format="pyarrow", num_cpus=CROP_CPUS,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=croppers),
                max_restarts=-1, max_task_retries=spec.worker_retries,
            )
        configure_context(dataset.context, shards.chunk_bytes)
        take(dataset.iter_rows())
    return detect


def dry_run(spec: JobSpec, ray=None, calibrate: bool = True, log=lambda message: None) -> JobEstimate:
    """List and probe the inputs (probes run as Ray tasks, decoding nothing) and estimate the job's
    work, detector time and output; writes nothing under DEST. Inputs DEST already holds as done
    are left out, as the job would. ``calibrate``: add the detector time from ``raydetect plan``'s
    calibration of this machine (measured and cached on first use)."""
    if ray is None:
        import ray
    inputs = list_inputs(spec.sources, spec.storage_options, spec.shards.retry)
    output = JobOutput(spec.output, spec.storage_options, spec.shards.retry)
    finished = output.finished_videos()  # reads only
    todo = [item for item in inputs if finished.get(item.video) != "ok"]
    _, _, _, threads, device = _resources(spec.resources, ray)
    detection, shards = _stage_options(spec, device, threads)
    rows = _probe_rows(todo, shards, ray, spec.worker_retries) if todo else []
    reusing = _reuse_rule(todo, inputs, rows, finished) if spec.reuse_original_boxes else None
    result = estimate(rows, len(todo), shards, crops=detection.crops,
                      crop_pixels=detection.crop.width * detection.crop.height, reusing=reusing)
    result.skipped = len(inputs) - len(todo)
    if calibrate and result.sampled:
        from raydetect.tuning.calibration import load_or_measure

        try:
            calibration, _, _ = load_or_measure(detection.device, log=log)
        except Exception as exc:  # e.g. a GPU estimate asked on a driver without one
            log(f"no detector time: cannot calibrate {detection.device} here ({type(exc).__name__}: {exc}); "
                f"run `raydetect plan --device {detection.device}` on such a machine first")
        else:
            add_detector_time(result, calibration, detection.min_face_size, detection.scale_factor)
    return result


def _reuse_rule(todo: list[VideoInput], inputs: list[VideoInput], rows: list[dict], finished: dict):
    """``reusing(video, probe_row)`` for the dry run: whether a DFDC fake would take its original's faces,
    by the job's rules (:func:`~raydetect.offline.reuse.plan_reuse`, then
    :func:`~raydetect.offline.reuse.mismatch` against the original's probe). An original done by an
    earlier run counts as matching: the job checks its size when it runs."""
    originals = {item.video: item.original for item in plan_reuse(todo, inputs).fakes}
    probed = {row["video"]: row for row in rows if not row["error"]}

    def reusing(video: str, row: dict) -> bool:
        original = originals.get(video)
        if original in probed:
            return mismatch(row, {**probed[original], "video": original, "status": "ok"}) is None
        return original is not None and finished.get(original) == "ok"

    return reusing


def _probe_rows(todo: list[VideoInput], shards: ShardOptions, ray, retries: int) -> list[dict]:
    """The dry run's shard rows of ``todo`` (video, error, frame_count, fps, width, height); an input
    whose probe kills its worker at every attempt gets an error row instead of ending the dry run."""
    rows, lost = _probe_all(todo, shards, ray, retries, ["video", "error", "frame_count", "fps", "width", "height"])
    return rows + [{"video": item.video, "frame_count": 0, "fps": 0.0, "width": 0, "height": 0,
                    "error": f"{item.video}: cannot probe: {_worker_died(retries)}"} for item in lost]


def _probe_all(items: list[VideoInput], shards: ShardOptions, ray, retries: int,
               columns: list[str] | None = None) -> tuple[list[dict], list[VideoInput]]:
    """Every shard row of ``items`` (``columns`` of them; None: all), probed in Ray tasks with nothing
    else to run, and the inputs whose probe killed its worker at every attempt (no row)."""
    rows, probes_per_task = [], PROBES_PER_TASK
    while True:
        planned = _planned_shards(items, shards, ray, probes_per_task, retries, beside_decoding=False)
        planned.context.max_errored_blocks = -1  # a lost planning task loses its inputs' rows, not the run
        rows += (planned.select_columns(columns) if columns else planned).iter_rows()
        heard = {row["video"] for row in rows}
        lost = [item for item in items if item.video not in heard]
        if not lost or probes_per_task == 1:
            return rows, lost
        # As in run_job: the others of a lost planning task get a second pass, one input per task.
        items, probes_per_task = lost, 1


def _worker_died(retries: int) -> str:
    return (f"a task working on it failed {retries + 1} times (its worker died: a decoder crash, out of memory "
            "or a lost node; see the Ray worker logs)")


def _tick(spec: JobSpec, states: dict, rows: "_VideoRows", timers: dict, started: float) -> None:
    """Flush finished rows and log progress when their intervals have passed."""
    now = time.perf_counter()
    if now - timers["flush"] >= spec.flush_seconds:
        rows.flush()
        timers["flush"] = now
    if now - timers["progress"] >= spec.progress_seconds:
        _log_progress(states, now - started)
        timers["progress"] = now


def result_options(spec: JobSpec) -> dict:
    """The options that decide the output's content (recorded in DEST/_job.json): detection,
    sampling, tracking, clips; not the ones that only change speed or placement."""
    sampling = spec.shards.sampling
    return {
        **spec.detection.result_options(),
        "every": sampling.every, "fps": sampling.fps, "frames_per_video": sampling.count,
        "detect_every": spec.shards.detect_every,
        "tracking": asdict(spec.tracking),
        # Only when on: a DEST written without them keeps the options it recorded.
        **({"clips": asdict(spec.clips)} if spec.clips else {}),
        **({"reuse_original_boxes": True} if spec.reuse_original_boxes else {}),
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
    summary.clips += state.clips


def _log_progress(states: dict, elapsed: float) -> None:
    done = sum(1 for s in states.values() if s.complete)
    frames = sum(s.frames_detected for s in states.values())
    faces = sum(s.faces for s in states.values())
    log.info(
        "progress: %d/%d videos done, %d frames detected (%.2f frames/s), %d faces, %.0f s",
        done, len(states), frames, frames / elapsed if elapsed > 0 else 0.0, faces, elapsed,
    )
