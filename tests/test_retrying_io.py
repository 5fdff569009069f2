"""Storage faults on real HTTP (a fault-injecting server on 127.0.0.1): retried, resumed, reported, never a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from faulty_http import FaultyServer
from raydetect.offline.retrying_io import (
    Failure,
    RetryPolicy,
    StorageError,
    call_with_retries,
    failure_of,
    give_up_message,
)
from raydetect.offline.video import FrameRange, Sampling, VideoError, probe

CROWD = "street_crowd_24f_640x360.mp4"
HAMILTON = "hamilton_45f_640x360.avi"
FAST = RetryPolicy(retries=4, base_delay_s=0.01, max_delay_s=0.05, timeout_s=2.0)


def _frames(location: str, retry: RetryPolicy | None = None) -> tuple[list, int]:
    info = probe(location, retry=retry)
    frames = FrameRange(location, 0, None, Sampling(every=2).selector(info), info.fps,
                        required_end=info.frame_count, retry=retry)
    return [(f.index, f.image) for f in frames], frames.io_retries


def test_decoding_through_503s_and_cut_connections_equals_the_local_file(data_dir):
    """A fifth of the requests answer 503, a fifth of the rest and every object's first GET are cut
    mid-body: every frame is exactly the local file's, and the retries are counted."""
    objects = {name: (data_dir / name).read_bytes() for name in (CROWD, HAMILTON)}
    # An attempt fails with odds of about 0.36, all nine attempts of one read with about 1e-4.
    patient = RetryPolicy(retries=8, base_delay_s=0.01, max_delay_s=0.05, timeout_s=2.0)
    with FaultyServer(objects, fail_fraction=0.2, reset_fraction=0.2, reset_first=True, seed=3) as server:
        retries = 0
        for name in objects:
            remote, used = _frames(server.url(name), patient)
            local, _ = _frames(str(data_dir / name))
            assert [i for i, _ in remote] == [i for i, _ in local]
            for (_, a), (_, b) in zip(remote, local):
                np.testing.assert_array_equal(a, b)
            retries += used
    assert server.total("503") > 0 and server.total("reset") > 0
    assert retries > 0


def test_an_outage_a_missing_object_and_a_stalled_read_get_truthful_errors(data_dir):
    clip = (data_dir / CROWD).read_bytes()
    with FaultyServer({"down.mp4": clip, "stuck.mp4": clip}, broken={"down.mp4"}, stalled={"stuck.mp4"}) as server:
        with pytest.raises(VideoError, match=r"down\.mp4: HTTP 503 after 5 attempts"):
            probe(server.url("down.mp4"), retry=FAST)
        with pytest.raises(VideoError, match=r"gone\.mp4: no such file \(HTTP 404\)$"):
            probe(server.url("gone.mp4"), retry=FAST)
        assert server.counts[("404", "gone.mp4")] <= 2  # fsspec's HEAD, then GET: never retried
        started = time.monotonic()
        with pytest.raises(VideoError, match=r"stuck\.mp4: timed out after 2 attempts"):
            probe(server.url("stuck.mp4"), retry=RetryPolicy(retries=1, base_delay_s=0.01, timeout_s=1.0))
        assert time.monotonic() - started < 15


def test_failures_are_classified_through_the_exception_chain():
    import aiohttp

    def chained(status: int) -> FileNotFoundError:
        # What fsspec's HTTP info call raises: FileNotFoundError from the response error.
        try:
            try:
                raise aiohttp.ClientResponseError(None, (), status=status)
            except aiohttp.ClientResponseError as inner:
                raise FileNotFoundError("http://x/y.mp4") from inner
        except FileNotFoundError as outer:
            return outer

    assert failure_of(chained(503)) == Failure("HTTP 503", True)
    assert failure_of(chained(404)) == Failure("no such file (HTTP 404)", False)
    assert failure_of(chained(403)) == Failure("permission denied (HTTP 403)", False)
    assert failure_of(ConnectionResetError()) == Failure("connection reset", True)
    assert failure_of(TimeoutError()).transient and not failure_of(ValueError("bad")).transient
    assert failure_of(FileNotFoundError("x")) == Failure("no such file", False)
    mixed = [Failure("timed out", True), Failure("HTTP 503", True), Failure("HTTP 503", True)]
    assert give_up_message(mixed) == "3 attempts failed: timed out (1), HTTP 503 (2)"


def test_call_with_retries_backs_off_and_gives_up():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "done"

    assert call_with_retries(flaky, FAST, "list s3://b/") == ("done", 2)
    with pytest.raises(StorageError, match=r"^list s3://b/: connection reset after 3 attempts$"):
        call_with_retries(lambda: (_ for _ in ()).throw(ConnectionResetError()),
                          RetryPolicy(retries=2, base_delay_s=0.0, max_delay_s=0.0), "list s3://b/")
    permanent = []
    with pytest.raises(StorageError, match="permission denied"):
        call_with_retries(lambda: permanent.append(1) or (_ for _ in ()).throw(PermissionError()), FAST, "x")
    assert permanent == [1]
    delays = [RetryPolicy(base_delay_s=1.0, max_delay_s=4.0).delay_s(n) for n in range(8) for _ in range(50)]
    assert 0.0 <= min(delays) and max(delays) <= 4.0


def test_a_read_that_raises_never_reaches_opencv(data_dir):
    """OpenCV's stream reader kills the process when ``read`` raises (the GUIDE's crash, reproduced
    here as the control). The retrying reader over the same failing file decodes it all, and when
    the failure is permanent it answers end-of-file and keeps the cause. In a subprocess, so a
    crash shows as a failed test, not a dead test session."""
    script = textwrap.dedent(f"""
        import io, sys, cv2
        from raydetect.offline.retrying_io import RetryingReader, RetryPolicy

        class Failing(io.BufferedIOBase):
            # A local file whose every 5th read raises, like a connection reset.
            def __init__(self, error):
                self.f, self.reads, self.error = open({str(data_dir / CROWD)!r}, "rb"), 0, error
                self.size = len(self.f.read()); self.f.seek(0)
            def readable(self): return True
            def seekable(self): return True
            def read(self, n=-1):
                self.reads += 1
                if self.reads % 5 == 0:
                    raise self.error
                return self.f.read(n)
            def read1(self, n=-1): return self.read(n)
            def seek(self, o, w=0): return self.f.seek(o, w)
            def tell(self): return self.f.tell()

        def count(stream):
            capture = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [])
            frames = 0
            while capture.isOpened() and capture.grab():
                frames += 1
            capture.release()
            return frames

        if sys.argv[1] == "bare":
            count(Failing(ConnectionResetError()))
        policy = RetryPolicy(retries=2, base_delay_s=0.0, max_delay_s=0.0)
        transient = RetryingReader(lambda size: Failing(ConnectionResetError("reset")), policy)
        transient.start()
        print("transient", count(transient), transient.retries, transient.failure)
        permanent = RetryingReader(lambda size: Failing(PermissionError("denied")), policy)
        permanent.start()
        print("permanent", count(permanent), permanent.failure)
    """)
    bare = subprocess.run([sys.executable, "-c", script, "bare"], capture_output=True, text=True, timeout=60)
    assert bare.returncode < 0, "the bare stream no longer crashes OpenCV: the control is void"
    safe = subprocess.run([sys.executable, "-c", script, "safe"], capture_output=True, text=True, timeout=60)
    assert safe.returncode == 0, safe.stderr
    transient, permanent = safe.stdout.splitlines()
    name, frames, retries, failure = transient.split(" ", 3)
    assert (frames, failure) == ("24", "None") and int(retries) > 0
    assert permanent.startswith("permanent ") and "permission denied (reading byte" in permanent


def test_listing_reading_and_writing_dest_through_a_failing_s3(s3_server, data_dir):
    """moto's S3 behind a proxy that answers 503 SlowDown to a fifth of the requests and cuts a tenth of
    the responses: the listing, probing and every DEST write and read come through, each written file is
    complete, and no temporary file is left that a reader could take for a result."""
    import fsspec
    import pyarrow as pa

    from faulty_http import FaultyProxy
    from raydetect.offline.output import VIDEO_SCHEMA, VIDEOS, JobOutput
    from raydetect.offline.sources import list_inputs

    direct = fsspec.filesystem("s3", **s3_server)
    direct.mkdir("faulty-bucket")
    for name in (CROWD, HAMILTON):
        direct.pipe(f"faulty-bucket/videos/{name}", (data_dir / name).read_bytes())
    patient = RetryPolicy(retries=8, base_delay_s=0.01, max_delay_s=0.05, timeout_s=5.0)
    with FaultyProxy(s3_server["client_kwargs"]["endpoint_url"], fail_fraction=0.2, reset_fraction=0.1,
                     seed=5) as proxy:
        # botocore's and s3fs's own retries off: the project's retries must do the work (and fast).
        options = {**s3_server, "client_kwargs": {**s3_server["client_kwargs"], "endpoint_url": proxy.url},
                   "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}},
                   "skip_instance_cache": True}
        inputs = list_inputs(["s3://faulty-bucket/videos/"], options, patient)
        assert sorted(i.video for i in inputs) == [f"s3://faulty-bucket/videos/{n}" for n in sorted((CROWD, HAMILTON))]
        assert probe(f"s3://faulty-bucket/videos/{HAMILTON}", options, patient).frame_count == 45

        output = JobOutput("s3://faulty-bucket/dest", options, patient)
        written = {}
        for part in range(6):
            rows = [{"video": f"v{part}-{i}.mp4", "status": "ok", "faces": i} for i in range(50)]
            written[f"part-{part:02d}.parquet"] = pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA)
            output.write_table(written[f"part-{part:02d}.parquet"], VIDEOS, f"part-{part:02d}.parquet")
        assert len(output.finished_videos()) == 6 * 50
    assert proxy.counts[("503", "PUT")] + proxy.counts[("503", "GET")] > 0

    JobOutput("s3://faulty-bucket/dest", s3_server).remove_temporaries()  # what the next run does first
    names = sorted(p.rsplit("/", 1)[1] for p in direct.ls("faulty-bucket/dest/videos", refresh=True))
    assert names == sorted(written)
    for name, table in written.items():
        with direct.open(f"faulty-bucket/dest/videos/{name}", "rb") as stream:
            assert pq.read_table(stream).equals(table)
