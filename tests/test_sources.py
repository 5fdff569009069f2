"""Listing inputs: files, directories, globs, fsspec URLs (a real S3 API on 127.0.0.1), manifests."""

from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydetect.offline.sources import SourceError, VideoInput, check_reuse_sources, describe, list_inputs
from raydetect.offline.video import probe


@pytest.fixture()
def tree(tmp_path):
    """videos/a.mp4, videos/b.avi, videos/sub/c.mkv, videos/notes.txt (bytes need not be real videos here)."""
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.avi", "sub/c.mkv", "notes.txt"):
        (root / name).write_bytes(b"x")
    return root


def test_a_file_is_listed_as_given(tree):
    assert list_inputs([str(tree / "a.mp4")]) == [VideoInput(str(tree / "a.mp4"))]


def test_a_missing_file_is_still_listed_so_the_job_reports_it(tmp_path):
    missing = str(tmp_path / "gone.mp4")
    assert list_inputs([missing]) == [VideoInput(missing)]


def test_a_directory_lists_videos_recursively_in_order(tree):
    assert [i.video for i in list_inputs([str(tree)])] == [
        str(tree / "a.mp4"), str(tree / "b.avi"), str(tree / "sub" / "c.mkv")
    ]


def test_a_glob_lists_matching_files(tree):
    assert [i.video for i in list_inputs([str(tree / "*.mp4"), str(tree / "**" / "*.mkv")])] == [
        str(tree / "a.mp4"), str(tree / "sub" / "c.mkv")
    ]


def test_duplicates_are_listed_once(tree):
    listed = list_inputs([str(tree / "a.mp4"), str(tree), str(tree / "a.mp4")])
    assert [i.video for i in listed] == [str(tree / "a.mp4"), str(tree / "b.avi"), str(tree / "sub" / "c.mkv")]


def test_file_urls_keep_their_scheme(tree):
    url = tree.as_uri()
    listed = list_inputs([url + "/*.avi"])
    assert listed == [VideoInput(url + "/b.avi")]


def test_empty_directory_and_glob_are_errors(tmp_path):
    with pytest.raises(SourceError, match="holds no video"):
        list_inputs([str(tmp_path)])
    with pytest.raises(SourceError, match="matches no file"):
        list_inputs([str(tmp_path / "*.mp4")])
    with pytest.raises(SourceError, match="no SOURCE"):
        list_inputs([])


def test_memory_urls(tree):
    fs = fsspec.filesystem("memory")
    fs.pipe({"/clips/x.mp4": b"1", "/clips/y.mp4": b"2", "/clips/z.txt": b"3"})
    try:
        videos = [i.video for i in list_inputs(["memory://clips"])]
        assert [v.rsplit("/", 1)[-1] for v in videos] == ["x.mp4", "y.mp4"]
        assert all(v.startswith("memory://") for v in videos)
        assert fsspec.open(videos[1], "rb").open().read() == b"2"
    finally:
        fs.rm("/clips", recursive=True)


def test_csv_manifest_with_relative_paths_and_text_labels(tmp_path):
    (tmp_path / "m.csv").write_text('path,label,extra\na.mp4,0,\nsub/b.mp4,1,"x, y"\n/abs/c.mp4,,\n')
    assert list_inputs([str(tmp_path / "m.csv")]) == [
        VideoInput(f"{tmp_path}/a.mp4", "0"),
        VideoInput(f"{tmp_path}/sub/b.mp4", "1"),
        VideoInput("/abs/c.mp4", None),
    ]


def test_csv_manifest_without_labels(tmp_path):
    (tmp_path / "m.csv").write_text("path\ns3://bucket/a.mp4\n")
    assert list_inputs([str(tmp_path / "m.csv")]) == [VideoInput("s3://bucket/a.mp4")]


def test_parquet_and_jsonl_manifests(tmp_path):
    pq.write_table(pa.table({"path": ["a.mp4", "b.mp4"], "label": ["REAL", "FAKE"]}), tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text('{"path": "c.mp4", "label": "FAKE"}\n{"path": "d.mp4"}\n')
    assert list_inputs([str(tmp_path / "m.parquet"), str(tmp_path / "m.jsonl")]) == [
        VideoInput(f"{tmp_path}/a.mp4", "REAL"),
        VideoInput(f"{tmp_path}/b.mp4", "FAKE"),
        VideoInput(f"{tmp_path}/c.mp4", "FAKE"),
        VideoInput(f"{tmp_path}/d.mp4", None),
    ]


def test_dfdc_metadata_json(tmp_path):
    folder = tmp_path / "dfdc_train_part_0"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({
        "aaqaifqrwn.mp4": {"label": "FAKE", "split": "train", "original": "vpmyeepbep.mp4"},
        "vpmyeepbep.mp4": {"label": "REAL", "split": "train"},
    }))
    listed = list_inputs([str(folder / "metadata.json")])
    assert listed == [VideoInput(f"{folder}/aaqaifqrwn.mp4", "FAKE", f"{folder}/vpmyeepbep.mp4"),
                      VideoInput(f"{folder}/vpmyeepbep.mp4", "REAL")]
    assert describe(listed) == "2 videos (2 labelled)"


def test_reuse_original_boxes_needs_dfdc_metadata_only(tmp_path):
    check_reuse_sources([f"{tmp_path}/a/metadata.json", "s3://bucket/part_1/metadata.json"])
    for sources, named in (([f"{tmp_path}/m.csv"], "m.csv"), ([f"{tmp_path}/metadata.json", "videos/"], "videos/"),
                           ([], "no SOURCE")):
        with pytest.raises(SourceError, match="--reuse-original-boxes needs DFDC metadata.json") as caught:
            check_reuse_sources(sources)
        assert named in str(caught.value)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("m.csv", "file,label\na.mp4,1\n", "no 'path' column"),
        ("m.csv", "path,label\n,1\n", "empty path"),
        ("m.csv", "path\n", "lists no video"),
        ("m.jsonl", "{not json\n", "cannot read"),
        ("m.parquet", "not parquet", "cannot read"),
        ("metadata.json", "[1, 2]", "expected DFDC metadata"),
        ("metadata.json", "{", "not valid JSON"),
        ("metadata.json", '{"a.mp4": {"label": "FAKE", "original": 7}}', "'original' must be a file name"),
    ],
)
def test_malformed_manifests_raise_clear_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(SourceError, match=message) as caught:
        list_inputs([str(tmp_path / name)])
    assert name in str(caught.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(SourceError, match="manifest not found"):
        list_inputs([str(tmp_path / "nope.csv")])


def test_s3_prefix_glob_and_manifest_on_a_real_s3_server(s3_server, data_dir):
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("sources-bucket")
    clip = (data_dir / "hamilton_45f_640x360.avi").read_bytes()
    fs.pipe({"sources-bucket/in/one.avi": clip, "sources-bucket/in/deep/two.avi": clip,
             "sources-bucket/in/readme.txt": b"x"})
    fs.pipe("sources-bucket/manifest.csv", b"path,label\nin/one.avi,REAL\ns3://sources-bucket/in/deep/two.avi,FAKE\n")

    by_prefix = list_inputs(["s3://sources-bucket/in"], s3_server)
    assert [i.video for i in by_prefix] == ["s3://sources-bucket/in/deep/two.avi", "s3://sources-bucket/in/one.avi"]
    by_glob = list_inputs(["s3://sources-bucket/in/*.avi"], s3_server)
    assert by_glob == [VideoInput("s3://sources-bucket/in/one.avi")]
    by_manifest = list_inputs(["s3://sources-bucket/manifest.csv"], s3_server)
    assert by_manifest == [VideoInput("s3://sources-bucket/in/one.avi", "REAL"),
                           VideoInput("s3://sources-bucket/in/deep/two.avi", "FAKE")]
    # And the listed object opens as a video through s3fs.
    assert probe(by_manifest[0].video, s3_server).frame_count == 45


def test_a_relative_source_lists_relative_paths(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    assert [i.video for i in list_inputs(["videos"])] == ["videos/a.mp4", "videos/b.avi", "videos/sub/c.mkv"]
    assert [i.video for i in list_inputs(["videos/*.avi"])] == ["videos/b.avi"]
