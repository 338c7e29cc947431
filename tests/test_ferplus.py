"""FERPlus: the official vote rule by hand, a fixture in the real layout, errors, real counts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from robustfer.data import build_dataset
from robustfer.data.ferplus import FERPLUS_COLUMNS, process_votes
from robustfer.errors import DatasetError


def votes(**counts: float) -> np.ndarray:
    """Ten vote counts in label.csv column order, from column names (NF spelled ``NF``)."""
    unknown = set(counts) - set(FERPLUS_COLUMNS)
    assert not unknown, unknown
    return np.array([counts.get(c, 0) for c in FERPLUS_COLUMNS], dtype=np.float64)


def onehot(i: int) -> list[float]:
    t = [0.0] * 8
    t[i] = 1.0
    return t


NEUTRAL, HAPPINESS, SURPRISE, SADNESS, ANGER, DISGUST, FEAR, CONTEMPT = range(8)


# ---------------------------------------------------------------------- majority, by hand
@pytest.mark.parametrize(
    "v, expected",
    [
        # 10 of 10 -> neutral
        (votes(neutral=10), onehot(NEUTRAL)),
        # 6 of 10 > 5 -> happiness
        (votes(happiness=6, neutral=4), onehot(HAPPINESS)),
        # single votes removed first: 4 + 1 + 1 + 1 + 1 -> 4 of 4 remaining -> sadness
        (votes(sadness=4, neutral=1, happiness=1, anger=1, fear=1, unknown=1, NF=1), onehot(SADNESS)),
        # 5 of 9 after removing the single fear vote: 5 > 4.5 -> anger
        (votes(anger=5, disgust=4, fear=1), onehot(ANGER)),
        # contempt is one of the eight expressions
        (votes(contempt=6, neutral=4), onehot(CONTEMPT)),
        # tie 5/5: 5 is not more than half -> dropped
        (votes(neutral=5, happiness=5), None),
        # exactly half after removing singles: 4 of 8 -> dropped
        (votes(surprise=4, fear=2, sadness=2, anger=1, disgust=1), None),
        # plurality but no majority: 4, 3, 3 -> dropped
        (votes(neutral=4, happiness=3, sadness=3), None),
        # unknown majority -> dropped; NF majority -> dropped
        (votes(unknown=6, neutral=4), None),
        (votes(NF=8, neutral=2), None),
        # every vote single -> nothing left -> dropped
        (votes(**{c: 1 for c in FERPLUS_COLUMNS}), None),
        (votes(), None),
    ],
)
def test_majority_by_hand(v: np.ndarray, expected: list[float] | None) -> None:
    got = process_votes(v, "majority")
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.shape == (8,)
        np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------- probability, by hand
# Official rule (module docstring / official _process_data): zero single votes; then take
# classes in order of votes, all classes tied at the current maximum together, while the
# taken votes are < 75 % of the total and fewer than 3 classes were taken, stopping at
# unknown/NF (dropped from the target when expressions were taken before it). Drop when the
# taken votes are <= half the total, more than 3 classes were taken, or unknown/NF is top.
@pytest.mark.parametrize(
    "v, expected",
    [
        # 10 of 10 -> all neutral
        (votes(neutral=10), onehot(NEUTRAL)),
        # total 10: take neutral 6 (6 < 7.5), then happiness 2 and surprise 2 together
        # (tied; 3 classes, 10 votes) -> (0.6, 0.2, 0.2)
        (votes(neutral=6, happiness=2, surprise=2), [0.6, 0.2, 0.2, 0, 0, 0, 0, 0]),
        # total 10: neutral 5 (5 < 7.5), happiness 3 (8 >= 7.5, stop): sadness 2 left out
        # -> (5/8, 3/8)
        (votes(neutral=5, happiness=3, sadness=2), [5 / 8, 3 / 8, 0, 0, 0, 0, 0, 0]),
        # no majority, but three classes cover all 10 votes -> (0.4, 0.3, 0.3)
        (votes(neutral=4, happiness=3, sadness=3), [0.4, 0.3, 0, 0.3, 0, 0, 0, 0]),
        # total 14: 5 (5), 4 (9), 3 (12; count 3, stop): fear's 2 left out -> (5, 4, 3) / 12
        (votes(anger=5, disgust=4, fear=3, contempt=2), [0, 0, 0, 0, 5 / 12, 4 / 12, 3 / 12, 0]),
        # single votes removed first: total 7, neutral 7 -> all neutral
        (votes(neutral=7, happiness=1, sadness=1, unknown=1), onehot(NEUTRAL)),
        # total 10: neutral 6; then happiness 2 and unknown 2 tie: happiness taken, unknown
        # stops the loop and is not kept -> (6, 2) / 8
        (votes(neutral=6, happiness=2, unknown=2), [0.75, 0.25, 0, 0, 0, 0, 0, 0]),
        # total 10: happiness 5; then unknown 3 alone: not kept, loop stops; 5 <= 5 -> dropped
        (votes(happiness=5, unknown=3, sadness=2), None),
        # 2 + 2 classes tied: 3, 3 then 2, 2 -> 4 classes taken -> dropped
        (votes(neutral=3, happiness=3, surprise=2, sadness=2), None),
        # neutral and NF tie at the top: NF not kept, loop stops; 4 <= 5 -> dropped
        (votes(neutral=4, NF=4, happiness=2), None),
        # unknown is top -> dropped
        (votes(unknown=6, neutral=4), None),
        # all single votes -> dropped
        (votes(**{c: 1 for c in FERPLUS_COLUMNS}), None),
    ],
)
def test_probability_by_hand(v: np.ndarray, expected: list[float] | None) -> None:
    for mode in ("probability", "crossentropy"):  # same target; they differ in training only
        got = process_votes(v.copy(), mode)
        if expected is None:
            assert got is None, mode
        else:
            assert got is not None and got.shape == (8,)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
            assert got.sum() == pytest.approx(1.0)


def test_process_votes_does_not_modify_its_input() -> None:
    v = votes(neutral=6, happiness=2, surprise=1, unknown=1)
    before = v.copy()
    process_votes(v, "probability")
    process_votes(v, "majority")
    np.testing.assert_array_equal(v, before)


# ---------------------------------------------------------------------- fixture root
HEADERLESS_ROWS = {
    # name: vote counts (neutral .. NF) -> majority / probability outcome
    "fer0000000.png": "10,0,0,0,0,0,0,0,0,0",  # neutral
    "fer0000001.png": "0,8,0,0,0,0,0,0,2,0",  # happiness
    "fer0000002.png": "4,0,0,0,0,0,0,6,0,0",  # contempt (dropped with num_classes=7)
    "fer0000003.png": "5,5,0,0,0,0,0,0,0,0",  # tie: dropped in majority; (0.5, 0.5) otherwise
    "fer0000004.png": "2,0,0,0,0,0,0,0,8,0",  # unknown: dropped in every mode
    "fer0000005.png": "4,0,3,0,0,0,0,3,0,0",  # majority: dropped; probability (0.4, 0, 0.3, ..., 0.3)
}


def write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((48, 48), value, dtype=np.uint8))


def write_split(folder: Path, rows: dict[str, str], images: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'{name},"(0, 0, 48, 48)",{v}' for name, v in rows.items()]
    (folder / "label.csv").write_text("\n".join(lines) + "\n")
    if images:
        for i, name in enumerate(rows):
            write_png(folder / name, 10 * i)


@pytest.fixture
def ferplus_root(tmp_path: Path) -> Path:
    for folder in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        write_split(tmp_path / folder, HEADERLESS_ROWS)
    return tmp_path


def test_fixture_majority(ferplus_root: Path) -> None:
    ds = build_dataset("ferplus:train", root=ferplus_root)
    assert ds.spec == "ferplus:train" and ds.num_classes == 8
    assert [s.id for s in ds.samples] == [
        "FER2013Train/fer0000000.png", "FER2013Train/fer0000001.png", "FER2013Train/fer0000002.png",
    ]
    assert ds.labels.tolist() == [NEUTRAL, HAPPINESS, CONTEMPT]
    assert [s.soft for s in ds.samples] == [tuple(onehot(i)) for i in (NEUTRAL, HAPPINESS, CONTEMPT)]
    img, sample = ds[1]
    assert img.shape == (48, 48) and img.dtype == np.uint8 and int(img[0, 0]) == 10
    assert sample.path == ferplus_root / "FER2013Train" / "fer0000001.png"


@pytest.mark.parametrize("mode", ["probability", "crossentropy"])
def test_fixture_probability(ferplus_root: Path, mode: str) -> None:
    ds = build_dataset("ferplus:valid", root=ferplus_root, label_mode=mode)
    names = [s.id.split("/")[1] for s in ds.samples]
    assert names == ["fer0000000.png", "fer0000001.png", "fer0000002.png", "fer0000003.png", "fer0000005.png"]
    by_name = dict(zip(names, ds.samples))
    np.testing.assert_allclose(by_name["fer0000003.png"].soft, [0.5, 0.5, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(by_name["fer0000005.png"].soft, [0.4, 0, 0.3, 0, 0, 0, 0, 0.3])
    # the hard label is the arg-max of the target (first of a tie)
    assert by_name["fer0000003.png"].label == NEUTRAL
    assert by_name["fer0000005.png"].label == NEUTRAL
    for s in ds.samples:
        assert sum(s.soft) == pytest.approx(1.0)


def test_fixture_seven_classes_drops_contempt(ferplus_root: Path) -> None:
    ds = build_dataset("ferplus:test", root=ferplus_root, num_classes=7)
    assert ds.num_classes == 7 and "contempt" not in ds.classes
    assert ds.labels.tolist() == [NEUTRAL, HAPPINESS]
    prob = build_dataset("ferplus:test", root=ferplus_root, num_classes=7, label_mode="probability")
    by_name = {s.id.split("/")[1]: s for s in prob.samples}
    assert "fer0000002.png" not in by_name  # contempt is the top class
    # contempt share removed and the rest renormalised: (0.4, 0, 0.3) / 0.7
    np.testing.assert_allclose(by_name["fer0000005.png"].soft, [4 / 7, 0, 3 / 7, 0, 0, 0, 0])
    assert all(len(s.soft) == 7 and sum(s.soft) == pytest.approx(1.0) for s in prob.samples)


def test_root_may_be_a_data_folder_holding_ferplus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_split(tmp_path / "ferplus" / "FER2013Train", HEADERLESS_ROWS, images=False)
    assert len(build_dataset("ferplus:train", root=tmp_path)) == 3
    monkeypatch.setenv("ROBUSTFER_DATA", str(tmp_path))
    assert len(build_dataset("ferplus:train")) == 3


def test_missing_image_is_reported_on_load(tmp_path: Path) -> None:
    write_split(tmp_path / "FER2013Train", HEADERLESS_ROWS, images=False)
    ds = build_dataset("ferplus:train", root=tmp_path)
    with pytest.raises(DatasetError, match="fer0000000.png"):
        ds.load_image(0)


# ---------------------------------------------------------------------- malformed files
GOOD = 'fer0000000.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0'


@pytest.mark.parametrize(
    "bad_row, fragment",
    [
        ('fer0000001.png,"(0, 0, 48, 48)",1,2,3', "expected 12 comma-separated fields"),
        ('fer0000001.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0,0', "got 13"),
        ('fer0000001.png,"(0, 0, 48, 48)",ten,0,0,0,0,0,0,0,0,0', "must be numbers"),
        ('fer0000001.png,"(0, 0, 48, 48)",10,0,0,0,,0,0,0,0,0', "must be numbers"),
        ('fer0000001.png,"(0, 0, 48)",10,0,0,0,0,0,0,0,0,0', "face box"),
        ('fer0000001.png,"(a, b, c, d)",10,0,0,0,0,0,0,0,0,0', "face box"),
        ('fer0000001.png,"(0, 0, 48, 48)",10,0,0,-1,0,0,0,0,0,0', "negative vote"),
        ('fer0000001.jpg,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0', "not a .png"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path: Path, bad_row: str, fragment: str) -> None:
    folder = tmp_path / "FER2013Train"
    folder.mkdir()
    label = folder / "label.csv"
    label.write_text(f"{GOOD}\n{GOOD}\n{bad_row}\n")
    with pytest.raises(DatasetError) as e:
        build_dataset("ferplus:train", root=tmp_path)
    msg = str(e.value)
    assert f"{label}:3:" in msg and fragment in msg


def test_missing_split_folder(tmp_path: Path) -> None:
    write_split(tmp_path / "FER2013Train", HEADERLESS_ROWS, images=False)
    with pytest.raises(DatasetError) as e:
        build_dataset("ferplus:valid", root=tmp_path)
    msg = str(e.value)
    assert "FER2013Valid" in msg and "not found" in msg


def test_missing_label_csv(tmp_path: Path) -> None:
    (tmp_path / "FER2013Train").mkdir()
    with pytest.raises(DatasetError) as e:
        build_dataset("ferplus:train", root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "FER2013Train" / "label.csv") in msg and "missing" in msg


def test_empty_label_csv(tmp_path: Path) -> None:
    (tmp_path / "FER2013Train").mkdir()
    (tmp_path / "FER2013Train" / "label.csv").write_text("")
    with pytest.raises(DatasetError, match="no rows"):
        build_dataset("ferplus:train", root=tmp_path)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset("ferplus:train", root=tmp_path / "nowhere")


def test_bad_options(ferplus_root: Path) -> None:
    with pytest.raises(DatasetError, match="label_mode"):
        build_dataset("ferplus:train", root=ferplus_root, label_mode="vote")
    with pytest.raises(DatasetError, match="7 or 8"):
        build_dataset("ferplus:train", root=ferplus_root, num_classes=6)
    with pytest.raises(DatasetError, match="bad option"):
        build_dataset("ferplus:train", root=ferplus_root, colour=True)


# ---------------------------------------------------------------------- spec parser
@pytest.mark.parametrize(
    "spec, fragments",
    [
        ("ferplus", ["'ferplus' is malformed", "name:split[:subset]", "ferplus:train"]),
        ("ferplus:", ["malformed"]),
        ("ferplus:nosplit", ["no split 'nosplit'", "'train'", "'valid'", "'test'"]),
        ("nodataset:train", ["unknown dataset 'nodataset'", "Known datasets", "ferplus"]),
        ("ferplu:train", ["Did you mean ferplus"]),
        ("ferplus:train:nosubset", ["no subset 'nosubset'"]),
    ],
)
def test_spec_errors(spec: str, fragments: list[str], tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as e:
        build_dataset(spec, root=tmp_path)
    for f in fragments:
        assert f in str(e.value)


# ---------------------------------------------------------------------- real data
#: Measured on the official FER+ labels (module docstring gives the majority counts).
REAL_COUNTS = {
    "majority": {"train": 25_045, "valid": 3_191, "test": 3_137},
    "probability": {"train": 27_947, "valid": 3_508, "test": 3_507},
}


@pytest.fixture(scope="module")
def ferplus_real(data_root: Path) -> Path:
    root = data_root / "ferplus"
    if not (root / "FER2013Train" / "label.csv").is_file():
        pytest.skip(f"FERPlus not found under {root}; set ROBUSTFER_DATA")
    return root


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("mode", ["majority", "probability"])
def test_real_counts_and_targets(ferplus_real: Path, mode: str, split: str) -> None:
    ds = build_dataset(f"ferplus:{split}", root=ferplus_real, label_mode=mode, cache=False)
    assert len(ds) == REAL_COUNTS[mode][split]
    labels = ds.labels
    assert labels.min() >= 0 and labels.max() <= 7
    assert set(labels.tolist()) == set(range(8))  # every class occurs in every split
    soft = np.array([s.soft for s in ds.samples])
    assert soft.shape == (len(ds), 8)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-9)
    assert (soft >= 0).all()
    np.testing.assert_array_equal(soft.argmax(axis=1), labels)
    if mode == "majority":
        assert set(np.unique(soft).tolist()) == {0.0, 1.0}
    # images are 48x48 grayscale, as the official tooling writes them
    for i in (0, len(ds) - 1):
        img, _ = ds[i]
        assert img.shape == (48, 48) and img.dtype == np.uint8


def test_real_seven_classes_drops_exactly_contempt(ferplus_real: Path) -> None:
    eight = build_dataset("ferplus:valid", root=ferplus_real, cache=False)
    seven = build_dataset("ferplus:valid", root=ferplus_real, num_classes=7, cache=False)
    counts = eight.class_counts()
    assert len(seven) == len(eight) - counts["contempt"]
    assert seven.class_counts() == {k: v for k, v in counts.items() if k != "contempt"}
