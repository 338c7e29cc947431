"""RAN pose/occlusion subsets: list parsing (fixtures in every real format) and real-data counts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from robustfer.data import build_dataset, get_dataset_info
from robustfer.data.base import FERDataset, Sample
from robustfer.data.labels import EXPRESSIONS_8
from robustfer.data.subsets import (
    AFFECTNET_LIST_LABELS,
    FERPLUS_LIST_LABELS,
    RAFDB_LIST_LABELS,
    RAN_SUBSETS,
    RanSubset,
    describe_ran_lists,
    find_lists_root,
    get_ran_subset,
    make_subset_builder,
    parse_affectnet_occlusion_list,
    parse_affectnet_pose30_list,
    parse_affectnet_pose45_list,
    parse_ferplus_occlusion_list,
    parse_ferplus_pose_list,
    parse_rafdb_occlusion_list,
    parse_rafdb_pose_list,
    read_rafdb_label_file,
    register_ran_subsets,
    select_subset,
)
from robustfer.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROBUSTFER_DATA", REPO.parent / "shared" / "data"))
LISTS = DATA / "ran_lists"
needs_lists = pytest.mark.skipif(not LISTS.is_dir(), reason=f"no RAN lists at {LISTS}")
needs_ferplus = pytest.mark.skipif(
    not (LISTS.is_dir() and (DATA / "ferplus" / "FER2013Test" / "label.csv").is_file()),
    reason=f"no FERPlus data and RAN lists under {DATA}",
)

H1 = "bc9ad400db82eca1882b11c9603348fb3e92f5b0d67391ac22a1bc79"
H2 = "a0d5a9a7e4ae3551ee469d70a10bf34fb97fd05408be7d7ae4e9b82d"


def _write(path: Path, text: str, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes(data.encode())
    return path


# ---------------------------------------------------------------------- label maps
def test_label_maps_spelled_out() -> None:
    assert FERPLUS_LIST_LABELS.to_canonical == tuple(range(8))
    assert RAFDB_LIST_LABELS.as_table() == {
        "surprise": "surprise", "fear": "fear", "disgust": "disgust",
        "happiness": "happiness", "sadness": "sadness", "anger": "anger",
        "neutral": "neutral",
    }
    assert RAFDB_LIST_LABELS.to_canonical == (2, 6, 5, 1, 3, 4, 0)
    assert AFFECTNET_LIST_LABELS.to_canonical == (0, 1, 3, 2, 6, 5, 4, 7)


# ---------------------------------------------------------------------- parsers
def test_ferplus_pose_list(tmp_path: Path) -> None:
    p = _write(tmp_path / "pose.txt", "0/fer0032226.jpg\n7/fer0032227.jpg\n\n0/fer0032226.jpg\n")
    parsed = parse_ferplus_pose_list(p)
    assert [(e.key, e.label, e.line) for e in parsed.entries] == [
        ("fer0032226.png", 0, 1), ("fer0032227.png", 7, 2),
    ]
    assert (parsed.lines, parsed.duplicates, parsed.duplicate_lines) == (3, 1, (4,))
    assert parsed.class_counts()["contempt"] == 1


def test_ferplus_occlusion_list_crlf(tmp_path: Path) -> None:
    p = _write(tmp_path / "occ.txt", "1_fer0034656.png 8 0\n2_fer0033359.png 8 2", crlf=True)
    parsed = parse_ferplus_occlusion_list(p)
    assert [(e.key, e.label, dict(e.info)) for e in parsed.entries] == [
        ("fer0034656.png", 1, {"classes": 8, "k": 0}),
        ("fer0033359.png", 2, {"classes": 8, "k": 2}),
    ]


def test_rafdb_occlusion_list_crlf_duplicate(tmp_path: Path) -> None:
    text = (
        "test_0003_aligned 3 4\ntest_2464_aligned 6 2\n"
        "test_0008_aligned 0 1\ntest_2464_aligned 6 2"
    )
    parsed = parse_rafdb_occlusion_list(_write(tmp_path / "r.txt", text, crlf=True))
    assert [(e.key, e.label) for e in parsed.entries] == [
        ("test_0003", 1), ("test_2464", 0), ("test_0008", 2),
    ]
    assert parsed.entries[0].info["occlusion_type"] == 4
    assert (parsed.lines, len(parsed), parsed.duplicates) == (4, 3, 1)


def test_rafdb_pose_list_with_label_file(tmp_path: Path) -> None:
    lst = _write(tmp_path / "l.txt", "0/test_0004_aligned.jpg\n4/test_0006_aligned.jpg\n")
    lab = _write(tmp_path / "lab.txt", "2 7\n0\n4")
    parsed = parse_rafdb_pose_list(lst, lab)
    assert [(e.key, e.label) for e in parsed.entries] == [("test_0004", 2), ("test_0006", 3)]
    assert read_rafdb_label_file(lab) == [0, 4]
    _write(lab, "2 7\n0\n5")
    with pytest.raises(DatasetError, match="lab.txt.*agree"):
        parse_rafdb_pose_list(lst, lab)
    _write(lab, "3 7\n0\n4")
    with pytest.raises(DatasetError, match="header says 3"):
        parse_rafdb_pose_list(lst, lab)
    _write(lab, "0\n4")
    with pytest.raises(DatasetError, match="lab.txt:1"):
        read_rafdb_label_file(lab)


def test_affectnet_lists(tmp_path: Path) -> None:
    occ = parse_affectnet_occlusion_list(
        _write(tmp_path / "o.txt", f"val/0/{H1}/\nval/5/{H2.upper()}/\n")
    )
    assert [(e.key, e.label) for e in occ.entries] == [(H1, 0), (H2, 5)]
    p30 = parse_affectnet_pose30_list(
        _write(tmp_path / "p30.txt", f"2/{H1}.jpg\n6/{H2}.jpg\n2/{H1}.jpg\n")
    )
    assert [(e.key, e.label) for e in p30.entries] == [(H1, 3), (H2, 4)]
    assert (p30.lines, p30.duplicates) == (3, 1)
    p45 = parse_affectnet_pose45_list(_write(tmp_path / "p45.txt", f"7/{H1}/8.jpg\n"))
    assert [(e.key, e.label, e.info["file"]) for e in p45.entries] == [(H1, 7, "8.jpg")]


@pytest.mark.parametrize(
    ("parser", "text", "line"),
    [
        (parse_ferplus_pose_list, "0/fer0032226.jpg\nfer0032227.jpg\n", 2),
        (parse_ferplus_pose_list, "9/fer0032226.jpg\n", 1),
        (parse_ferplus_occlusion_list, "1_fer0034656.png 8\n", 1),
        (parse_rafdb_occlusion_list, "test_0003_aligned 3 4\ntest_0004_aligned 3 9\n", 2),
        (parse_rafdb_occlusion_list, "test_0003_aligned 7 4\n", 1),
        (parse_rafdb_pose_list, "7/test_0004_aligned.jpg\n", 1),
        (parse_affectnet_occlusion_list, f"val/0/{H1}/\n0/{H2}/\n", 2),
        (parse_affectnet_pose30_list, f"8/{H1}.jpg\n", 1),
        (parse_affectnet_pose45_list, f"1/{H1}.jpg\n", 1),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, parser, text: str, line: int) -> None:
    p = _write(tmp_path / "broken_list.txt", text)
    with pytest.raises(DatasetError, match=rf"broken_list\.txt:{line}"):
        parser(p)


def test_conflicting_duplicate_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path / "c.txt", "0/fer0032226.jpg\n1/fer0032226.jpg\n")
    with pytest.raises(DatasetError, match="c.txt:2.*line 1"):
        parse_ferplus_pose_list(p)


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        parse_ferplus_pose_list(tmp_path / "nope.txt")


# ---------------------------------------------------------------------- lists root
def test_find_lists_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROBUSTFER_DATA", raising=False)
    (tmp_path / "data" / "ran_lists").mkdir(parents=True)
    assert find_lists_root(tmp_path / "data") == tmp_path / "data" / "ran_lists"
    assert find_lists_root(None, tmp_path / "data") == tmp_path / "data" / "ran_lists"
    assert find_lists_root(None, tmp_path / "data" / "ran_lists") == tmp_path / "data" / "ran_lists"
    with pytest.raises(DatasetError, match="nowhere.*subset_lists_root"):
        find_lists_root(None)
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "empty" / "ran_lists"))):
        find_lists_root(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        find_lists_root(tmp_path / "data", tmp_path / "elsewhere")
    monkeypatch.setenv("ROBUSTFER_DATA", str(tmp_path / "data"))
    assert find_lists_root(tmp_path / "empty") == tmp_path / "data" / "ran_lists"


# ---------------------------------------------------------------------- selection (synthetic)
def _fake(name: str, split: str, ids: list[str], labels: list[int], n: int = 7) -> FERDataset:
    pix = np.zeros((4, 4), np.uint8)
    samples = [Sample(id=i, label=lab, pixels=pix) for i, lab in zip(ids, labels)]
    return FERDataset(name, split, samples, n)


def test_select_rafdb_by_stem_counts_disagreements(tmp_path: Path) -> None:
    lists = tmp_path / "ran_lists"
    _write(lists / "RAF_DB_dir" / "rafdb_occlusion_list.txt",
           "test_0003_aligned 3 4\ntest_0001_aligned 6 1\ntest_0003_aligned 3 4\n", crlf=True)
    base = _fake("rafdb", "test", ["test_0001.jpg", "test_0002.jpg", "test_0003.jpg"], [0, 1, 3])
    build = make_subset_builder(get_ran_subset("rafdb", "occlusion"))
    ds = build(base, data_root=tmp_path)
    assert [s.id for s in ds.samples] == ["test_0001.jpg", "test_0003.jpg"]
    assert ds.labels.tolist() == [0, 3]  # dataset labels, not the list's
    rep = ds.subset_report
    assert (rep.list_lines, rep.list_duplicates, rep.list_size, rep.evaluated) == (3, 1, 2, 2)
    assert rep.label_disagreements == 1 and rep.label_agreement == 1
    assert rep.disagreement_examples == (("test_0003", "happiness", "sadness"),)
    assert "1/2" in rep.summary()
    assert ds.spec == "rafdb:test:occlusion"


def test_select_missing_entry_is_an_error(tmp_path: Path) -> None:
    lists = tmp_path / "ran_lists"
    _write(lists / "RAF_DB_dir" / "rafdb_occlusion_list.txt", "test_0009_aligned 3 4\n")
    base = _fake("rafdb", "test", ["aligned/test_0001_aligned.jpg"], [0])
    build = make_subset_builder(get_ran_subset("rafdb", "occlusion"))
    with pytest.raises(DatasetError, match="test_0009 \\(line 1\\)"):
        build(base, data_root=None, subset_lists_root=lists)
    with pytest.raises(DatasetError, match="subset_lists_root"):
        build(base, data_root=tmp_path, subset_bogus=1)


def test_select_wrong_split_and_affectnet_contempt(tmp_path: Path) -> None:
    lists = tmp_path / "ran_lists"
    _write(lists / "AffectNet_dir" / "pose_30_affectnet_list.txt", f"0/{H1}.jpg\n7/{H2}.jpg\n")
    row = get_ran_subset("affectnet", "pose30")
    base = _fake("affectnet", "valid", [f"0/{H1}.jpg"], [0])
    ds = make_subset_builder(row)(base, data_root=tmp_path)
    assert len(ds) == 1
    assert ds.subset_report.not_in_split_reasons == {"list label outside the 7-class space": 1}
    with pytest.raises(DatasetError, match="affectnet:valid:pose30"):
        select_subset(_fake("affectnet", "train", [], []), row, row.parse(lists))


def test_ran_table_and_registration() -> None:
    assert {(r.dataset, r.subset) for r in RAN_SUBSETS} == {
        (d, s) for d in ("ferplus", "rafdb", "affectnet") for s in ("pose30", "pose45", "occlusion")
    }
    assert all(isinstance(r, RanSubset) for r in RAN_SUBSETS)
    assert set(get_dataset_info("ferplus").subsets) >= {"pose30", "pose45", "occlusion"}
    assert "ferplus:test:pose30" not in register_ran_subsets()  # idempotent


# ---------------------------------------------------------------------- real lists
@needs_lists
def test_real_list_counts() -> None:
    got = {(d["dataset"], d["subset"]): d for d in describe_ran_lists(LISTS)}
    expected = {  # (non-empty lines, unique entries)
        ("ferplus", "pose30"): (1170, 1170),
        ("ferplus", "pose45"): (633, 633),
        ("ferplus", "occlusion"): (605, 605),
        ("rafdb", "pose30"): (1247, 1247),
        ("rafdb", "pose45"): (558, 558),
        ("rafdb", "occlusion"): (735, 734),  # wc -l says 734: no final newline
        ("affectnet", "pose30"): (1949, 1944),
        ("affectnet", "pose45"): (985, 983),
        ("affectnet", "occlusion"): (683, 683),
    }
    assert {k: (v["lines"], v["unique"]) for k, v in got.items()} == expected
    assert all(v["duplicates"] == v["lines"] - v["unique"] for v in got.values())
    assert got[("ferplus", "pose30")]["classes"] == {
        "neutral": 465, "happiness": 286, "surprise": 129, "sadness": 151, "anger": 101,
        "disgust": 4, "fear": 28, "contempt": 6,
    }
    assert sum(got[("rafdb", "occlusion")]["classes"].values()) == 734


@needs_ferplus
def test_real_ferplus_entries_in_label_csv() -> None:
    from robustfer.data.ferplus import read_label_csv

    names = {n for n, _ in read_label_csv(DATA / "ferplus" / "FER2013Test" / "label.csv")}
    for sub in ("pose30", "pose45", "occlusion"):
        parsed = get_ran_subset("ferplus", sub).parse(LISTS)
        assert {e.key for e in parsed.entries} <= names


@pytest.fixture(scope="module")
def ferplus_test() -> FERDataset:
    return build_dataset("ferplus:test", root=DATA)


@needs_ferplus
@pytest.mark.parametrize(("sub", "size"), [("pose30", 1170), ("pose45", 633), ("occlusion", 605)])
def test_real_ferplus_subset_sizes(ferplus_test: FERDataset, sub: str, size: int) -> None:
    assert len(ferplus_test) == 3137
    ds = get_dataset_info("ferplus").subsets[sub](ferplus_test, data_root=DATA)
    rep = ds.subset_report
    assert len(ds) == rep.evaluated == rep.list_size == size
    assert rep.not_in_split == 0 and rep.label_disagreements == 0
    assert ds.spec == f"ferplus:test:{sub}"
    assert {s.id for s in ds.samples} <= {s.id for s in ferplus_test.samples}


@needs_ferplus
def test_real_ferplus_spec_and_seven_classes() -> None:
    ds = build_dataset("ferplus:test:pose45", root=DATA, num_classes=7)
    rep = ds.subset_report
    assert (len(ds), rep.list_size, rep.not_in_split) == (629, 633, 4)
    assert rep.not_in_split_reasons == {"majority label outside the 7-class space": 4}
    assert EXPRESSIONS_8[7] not in ds.class_counts()


@needs_ferplus
def test_real_ferplus_wrong_split(ferplus_test: FERDataset) -> None:
    bad = FERDataset("ferplus", "valid", ferplus_test.samples[:3], 8)
    with pytest.raises(DatasetError, match="ferplus:test:pose30"):
        get_dataset_info("ferplus").subsets["pose30"](bad, data_root=DATA)


def test_registration_is_idempotent_and_fills_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from robustfer.data import base

    datasets = dict(base._DATASETS)
    datasets.pop("affectnet", None)  # as if the loader were not registered yet
    if "rafdb" in datasets:
        datasets["rafdb"] = dataclasses.replace(datasets["rafdb"], subsets={})
    else:
        datasets["rafdb"] = base.DatasetInfo(
            "rafdb", lambda root, split: None, ("train", "test"), ("rafdb",), "stub", False
        )
    monkeypatch.setattr(base, "_DATASETS", datasets)
    added = register_ran_subsets()
    assert set(added) == {"rafdb:test:pose30", "rafdb:test:pose45", "rafdb:test:occlusion"}
    assert register_ran_subsets() == []


@needs_lists
def test_real_rafdb_lists_against_rafdb_labels(tmp_path: Path) -> None:
    label_file = DATA / "rafdb_labels" / "list_patition_label.txt"
    if not label_file.is_file():
        pytest.skip(f"no RAF-DB label file at {label_file}")
    root = tmp_path / "rafdb"
    (root / "Image" / "aligned").mkdir(parents=True)  # images are not read
    (root / "EmoLabel").mkdir()
    (root / "EmoLabel" / label_file.name).write_bytes(label_file.read_bytes())
    sizes = {"pose30": 1247, "pose45": 558, "occlusion": 734}
    for sub, size in sizes.items():
        ds = build_dataset(f"rafdb:test:{sub}", root=tmp_path, subset_lists_root=LISTS)
        rep = ds.subset_report
        assert (len(ds), rep.list_size, rep.not_in_split, rep.label_disagreements) == (
            size, size, 0, 0
        )
