"""Annotation readers: WIDER text, simple JSON (dict and list), the shared WIDER JSON, dlib JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raydetect.tuning.annotations import AnnotationError, load_annotations

WIDER_TEXT = """\
0--Parade/0_Parade_marchingband_1_465.jpg
2
345 211 4 4 2 0 0 0 0 1
331 126 3 3 0 0 0 1 0 0
0--Parade/empty.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/one.jpg
1
10 20 30 40 0 0 0 0 0 0
"""


def test_wider_text(tmp_path):
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(WIDER_TEXT)
    annotations = load_annotations(path)
    assert list(annotations.images) == [
        "0--Parade/0_Parade_marchingband_1_465.jpg",
        "0--Parade/empty.jpg",
        "1--Handshaking/one.jpg",
    ]
    parade = annotations.images["0--Parade/0_Parade_marchingband_1_465.jpg"]
    np.testing.assert_array_equal(parade.boxes, [[345, 211, 349, 215], [331, 126, 334, 129]])
    assert parade.care_mask("all").tolist() == [True, False]  # the second face is flagged invalid
    assert len(annotations.images["0--Parade/empty.jpg"]) == 0
    assert annotations.subsets == ("all",)
    assert annotations.num_faces == 3


def test_simple_json_dict_and_list_forms(tmp_path):
    as_dict = tmp_path / "dict.json"
    as_dict.write_text(json.dumps({"images": {"a.jpg": [[1, 2, 11, 22]], "b.jpg": []}}))
    as_list = tmp_path / "list.json"
    entries = [{"file": "a.jpg", "boxes": [[1, 2, 11, 22]]}, {"file": "b.jpg", "boxes": []}]
    as_list.write_text(json.dumps({"images": entries}))
    for path in (as_dict, as_list):
        annotations = load_annotations(path)
        np.testing.assert_array_equal(annotations.images["a.jpg"].boxes, [[1, 2, 11, 22]])
        assert annotations.images["b.jpg"].boxes.shape == (0, 4)
        assert annotations.subsets == ("all",)


def test_simple_json_xywh(tmp_path):
    path = tmp_path / "xywh.json"
    path.write_text(json.dumps({"box_format": "xywh", "images": {"a.jpg": [[1, 2, 10, 20]]}}))
    np.testing.assert_array_equal(load_annotations(path).images["a.jpg"].boxes, [[1, 2, 11, 22]])


def test_wider_subset_json(tmp_path):
    def face(box, easy, medium, hard, invalid=0):
        return {"bbox_xyxy": box, "invalid": invalid, "in_easy": easy, "in_medium": medium, "in_hard": hard}

    document = {
        "description": "test",
        "images": [
            {
                "file": "images/0--Parade/x.jpg",
                "width": 100,
                "height": 80,
                "faces": [
                    face([0, 0, 30, 30], True, True, True),
                    face([40, 0, 50, 12], False, True, True),
                    face([60, 0, 64, 5], False, False, False),
                    face([70, 0, 80, 10], False, False, False, invalid=1),
                ],
            }
        ],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(document))
    annotations = load_annotations(path)
    assert annotations.subsets == ("easy", "medium", "hard", "all")
    faces = annotations.images["images/0--Parade/x.jpg"]
    assert faces.care_mask("easy").tolist() == [True, False, False, False]
    assert faces.care_mask("medium").tolist() == [True, True, False, False]
    assert faces.care_mask("hard").tolist() == [True, True, False, False]
    assert faces.care_mask("all").tolist() == [True, True, True, False]


def test_dlib_splits_are_merged(tmp_path):
    path = tmp_path / "annotations_xywh.json"
    path.write_text(json.dumps({"splits": {"training": [{"file": "a.jpg", "faces": [[10, 20, 30, 30]]}],
                                           "testing": [{"file": "b.jpg", "faces": []}]}}))
    annotations = load_annotations(path)
    np.testing.assert_array_equal(annotations.images["a.jpg"].boxes, [[10, 20, 40, 50]])
    assert set(annotations.images) == {"a.jpg", "b.jpg"}


def test_shared_wider_dev_annotations(shared_data):
    annotations = load_annotations(shared_data / "wider-dev" / "annotations.json")
    assert len(annotations) == 103 and annotations.num_faces == 1782
    hard = sum(int(f.care_mask("hard").sum()) for f in annotations.images.values())
    easy = sum(int(f.care_mask("easy").sum()) for f in annotations.images.values())
    assert easy < hard < 1782
    files = annotations.resolve(shared_data / "wider-dev")
    assert all(p.is_file() for p in files.values())


def test_resolve_names_missing_images(tmp_path):
    (tmp_path / "there.jpg").write_bytes(b"x")
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": {"there.jpg": [], "gone.jpg": []}}))
    annotations = load_annotations(path)
    with pytest.raises(AnnotationError, match="1 of 2 annotated images not found.*gone.jpg"):
        annotations.resolve(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("{not json", "invalid JSON at line 1"),
        ("[1, 2]", "expected a JSON object"),
        ('{"files": {}}', "no 'images' key"),
        ('{"images": 3}', "'images' must be an object or a list"),
        ('{"images": {}}', "no images"),
        ('{"images": {"a.jpg": [[1, 2, 3]]}}', "lists of four numbers"),
        ('{"images": {"a.jpg": [[1, 2, "x", 4]]}}', "lists of four numbers"),
        ('{"images": {"a.jpg": [[10, 2, 5, 4]]}}', "box 0 has x2 < x1"),
        ('{"images": {"a.jpg": 5}}', "'boxes' must be a list"),
        ('{"images": [{"boxes": []}]}', r"images\[0\]: expected an object with 'file'"),
        ('{"images": [{"file": "a.jpg"}]}', "no 'boxes' or 'faces'"),
        ('{"images": [{"file": "a", "boxes": []}, {"file": "a", "boxes": []}]}', "listed twice"),
        ('{"box_format": "cxcywh", "images": {}}', "box_format must be"),
        ("img.jpg\nthree\n", "expected the face count"),
        ("img.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", "file ends early"),
        ("img.jpg\n1\n1 2\n", "expected 'x y w h"),
        ("img.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", "negative width"),
        ("img.jpg\n", "no face count"),
    ],
)
def test_malformed_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        load_annotations(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_annotations(tmp_path / "nope.json")
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(AnnotationError, match="not a text file"):
        load_annotations(binary)
