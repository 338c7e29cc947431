"""Dataset loaders against tiny fixtures written in each dataset's real distribution format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from robustfer.data import build_dataset
from robustfer.data.folds import subject_folds, subject_groups
from robustfer.errors import DatasetError


def img(path: Path, shape: tuple[int, ...] = (8, 8), value: int = 0) -> Path:
    """Write a small constant image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(shape, value, dtype=np.uint8))
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def check_folds(spec: str, root: Path, subjects: set[str], k: int, **opts: object) -> None:
    """Every fold: train and test subject-disjoint, together all samples; tests cover all."""
    full = build_dataset(f"{spec}:all", root=root, **opts)
    assert {s.subject for s in full.samples} == subjects
    seen: list[str] = []
    for fold in range(k):
        tr = build_dataset(f"{spec}:train", root=root, fold=fold, num_folds=k, **opts)
        te = build_dataset(f"{spec}:test", root=root, fold=fold, num_folds=k, **opts)
        tr_s, te_s = {s.subject for s in tr.samples}, {s.subject for s in te.samples}
        assert te_s and not tr_s & te_s
        assert len(tr) + len(te) == len(full)
        seen += sorted(te_s)
    assert sorted(seen) == sorted(subjects)  # each subject is tested exactly once


# ---------------------------------------------------------------------- folds
def test_subject_groups_are_disjoint_deterministic_and_complete() -> None:
    subs = [f"S{i:03d}" for i in range(23)] * 2
    groups = subject_groups(subs, 5, seed=1)
    flat = [s for g in groups for s in g]
    assert sorted(flat) == sorted(set(subs)) and len(flat) == 23
    assert groups == subject_groups(reversed(subs), 5, seed=1)
    assert groups != subject_groups(subs, 5, seed=2)
    train, test = subject_folds(subs, 5, 2, seed=1)
    assert test == set(groups[2]) and not train & test
    with pytest.raises(DatasetError, match="num_folds=30"):
        subject_groups(subs, 30)
    with pytest.raises(DatasetError, match="fold=5"):
        subject_folds(subs, 5, 5)


# ---------------------------------------------------------------------- fer2013
def _fer_csv(root: Path, bad_row: str | None = None) -> Path:
    rows = [(0, "Training"), (3, "Training"), (6, "Training"), (5, "PublicTest"),
            (1, "PublicTest"), (4, "PrivateTest")]
    lines = ["emotion,pixels,Usage"]
    for i, (e, u) in enumerate(rows):
        lines.append(f"{e},{' '.join(str((i * 10 + j) % 256) for j in range(2304))},{u}")
    if bad_row is not None:
        lines.append(bad_row)
    return write(root / "fer2013" / "fer2013.csv", "\n".join(lines) + "\n")


def test_fer2013_csv(tmp_path: Path) -> None:
    _fer_csv(tmp_path)
    train = build_dataset("fer2013:train", root=tmp_path)
    assert train.num_classes == 7 and list(train.labels) == [4, 1, 0]
    assert [s.id for s in train.samples] == ["fer2013.csv:0", "fer2013.csv:1", "fer2013.csv:2"]
    im, s = train[1]
    assert im.shape == (48, 48) and im.dtype == np.uint8 and im[0, 1] == 11
    assert list(build_dataset("fer2013:valid", root=tmp_path).labels) == [2, 5]
    test = build_dataset("fer2013:test", root=tmp_path)
    assert list(test.labels) == [3] and test.samples[0].id == "fer2013.csv:5"


def test_fer2013_csv_errors(tmp_path: Path) -> None:
    _fer_csv(tmp_path, bad_row="2,1 2 3,Training")
    with pytest.raises(DatasetError, match=r"fer2013\.csv:8: expected 2304"):
        build_dataset("fer2013:train", root=tmp_path)
    _fer_csv(tmp_path, bad_row=f"9,{' '.join(['0'] * 2304)},PrivateTest")
    with pytest.raises(DatasetError, match=r"fer2013\.csv:8: .*label 9 is out of range"):
        build_dataset("fer2013:test", root=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty holds neither fer2013.csv"):
        build_dataset("fer2013:train", root=tmp_path / "empty")


def test_fer2013_ferplus_folders(tmp_path: Path) -> None:
    root = tmp_path / "ferplus"
    for i, folder in enumerate(("FER2013Train", "FER2013Train", "FER2013Train", "FER2013Test")):
        img(root / folder / f"fer{i:07d}.png", (48, 48))
    csv = ("image_name,usage,fer2013_label,ambiguous\n"
           "fer0000000.png,Training,angry,0\nfer0000001.png,Training,happy,1\n"
           "fer0000002.png,Training,neutral,0\nfer0000003.png,PrivateTest,surprise,0\n")
    write(root / "fer2013_original_labels.csv", csv)
    train = build_dataset("fer2013:train", root=tmp_path)
    assert [s.id for s in train.samples] == ["FER2013Train/fer0000000.png",
                                             "FER2013Train/fer0000002.png"]
    assert list(train.labels) == [4, 0] and train[0][0].shape == (48, 48)
    kept = build_dataset("fer2013:train", root=tmp_path, drop_ambiguous=False)
    assert list(kept.labels) == [4, 1, 0]
    assert list(build_dataset("fer2013:test", root=tmp_path).labels) == [2]
    write(root / "fer2013_original_labels.csv", csv.replace("happy", "grumpy"))
    with pytest.raises(DatasetError, match=r"fer2013_original_labels\.csv:3: .*'grumpy'"):
        build_dataset("fer2013:train", root=tmp_path, drop_ambiguous=False)
    (root / "fer2013_original_labels.csv").unlink()
    with pytest.raises(DatasetError, match="fer2013_original_labels.csv"):
        build_dataset("fer2013:train", root=tmp_path)


# ---------------------------------------------------------------------- rafdb
def _rafdb(root: Path, labels: str) -> Path:
    base = root / "RAF-DB" / "basic"
    write(base / "EmoLabel" / "list_patition_label.txt", labels)
    for line in labels.split("\n"):
        if line.strip():
            name = line.split()[0]
            img(base / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg", (10, 10, 3))
            img(base / "Image" / "original" / name, (20, 16, 3))
    return base


RAF_LINES = "train_00001.jpg 1\ntrain_00002.jpg 4\ntrain_00003.jpg 7\ntest_0001.jpg 6\n"


def test_rafdb(tmp_path: Path) -> None:
    base = _rafdb(tmp_path, RAF_LINES)
    train = build_dataset("rafdb:train", root=base)
    assert list(train.labels) == [2, 1, 0] and train.num_classes == 7
    assert train.samples[0].id == "train_00001.jpg" and train[0][0].shape == (10, 10, 3)
    test = build_dataset("rafdb:test", root=base, variant="original")
    assert list(test.labels) == [4] and test[0][0].shape == (20, 16, 3)
    # noisy train labels; test labels stay clean
    write(base / "EmoLabel" / "noise01.txt", "train_00001.jpg 2\ntrain_00002.jpg 4\n")
    noisy = build_dataset("rafdb:train", root=base, label_file="noise01.txt")
    assert list(noisy.labels) == [6, 1]
    assert list(build_dataset("rafdb:test", root=base, label_file="noise01.txt").labels) == [4]
    # label file at root level
    (base / "EmoLabel" / "list_patition_label.txt").rename(base / "list_patition_label.txt")
    assert len(build_dataset("rafdb:train", root=base)) == 3


def test_rafdb_errors(tmp_path: Path) -> None:
    base = _rafdb(tmp_path, RAF_LINES + "train_00004.jpg 8\n")
    with pytest.raises(DatasetError, match=r"list_patition_label\.txt:5: label '8'"):
        build_dataset("rafdb:train", root=base)
    write(base / "EmoLabel" / "list_patition_label.txt", "train_00001.jpg\n")
    with pytest.raises(DatasetError, match=r"list_patition_label\.txt:1: malformed"):
        build_dataset("rafdb:train", root=base)
    write(base / "EmoLabel" / "list_patition_label.txt", RAF_LINES)
    (base / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    ds = build_dataset("rafdb:train", root=base)  # missing images fail at load time
    with pytest.raises(DatasetError, match="train_00002_aligned.jpg does not exist"):
        ds.load_image(1)


# ---------------------------------------------------------------------- affectnet
AFF_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
              "expression,valence,arousal\n")


def _affectnet(root: Path, rows: list[tuple[str, int]], name: str = "training.csv") -> Path:
    base = root / "AffectNet"
    text = AFF_HEADER + "".join(
        f"{p},2,3,10,12,{'' if i == 0 else '1.0;2.0;3.5;4.5'},{e},0.1,-0.2\n"
        for i, (p, e) in enumerate(rows)
    )
    write(base / "Manually_Annotated_file_lists" / name, text)
    for p, _ in rows:
        img(base / "Manually_Annotated_Images" / p, (20, 20, 3))
    return base


def test_affectnet(tmp_path: Path) -> None:
    rows = [("1/a.jpg", 0), ("1/b.jpg", 1), ("2/c.jpg", 7), ("2/d.jpg", 8), ("2/e.jpg", 9),
            ("3/f.jpg", 10), ("3/g.jpg", 6)]
    base = _affectnet(tmp_path, rows)
    _affectnet(tmp_path, [("4/h.jpg", 3)], "validation.csv")
    train = build_dataset("affectnet:train", root=tmp_path)
    assert [s.id for s in train.samples] == ["1/a.jpg", "1/b.jpg", "2/c.jpg", "3/g.jpg"]
    assert list(train.labels) == [0, 1, 7, 4] and train.num_classes == 8
    assert train.samples[0].box == (2, 3, 10, 12)
    assert train[0][0].shape == (12, 10, 3)  # cropped to the face box
    seven = build_dataset("affectnet:train", root=base, num_classes=7)
    assert list(seven.labels) == [0, 1, 4] and seven.num_classes == 7
    valid = build_dataset("affectnet:valid", root=base)
    assert list(valid.labels) == [2]
    lists = base / "Manually_Annotated_file_lists"
    text = (lists / "validation.csv").read_text()
    write(lists / "validation.csv", text.split("\n", 1)[1])  # a copy without the header row
    assert [s.id for s in build_dataset("affectnet:valid", root=base).samples] == ["4/h.jpg"]


def test_affectnet_landmarks_come_into_the_crop(tmp_path: Path) -> None:
    rows = [("1/a.jpg", 0), ("1/b.jpg", 1), ("2/c.jpg", 7)]
    train = build_dataset("affectnet:train", root=_affectnet(tmp_path, rows))
    # row 0 has an empty landmark field: the dataset then has no uniform landmark count
    assert train.samples[0].landmarks is None
    assert train.samples[1].landmarks.tolist() == [[1.0, 2.0], [3.5, 4.5]]
    assert train.landmark_count == 0
    both = train.with_samples(train.samples[1:])
    assert both.landmark_count == 2
    # the box (2, 3, 10, 12) moves the points into the crop
    assert both.load_landmarks(0).tolist() == [[-1.0, -1.0], [1.5, 1.5]]
    off = build_dataset("affectnet:train", root=tmp_path / "AffectNet", landmarks=False)
    assert all(s.landmarks is None for s in off.samples)


def test_affectnet_errors(tmp_path: Path) -> None:
    base = _affectnet(tmp_path, [("1/a.jpg", 0), ("1/b.jpg", 11)])
    with pytest.raises(DatasetError, match=r"training\.csv:3: .*label 11 is out of range"):
        build_dataset("affectnet:train", root=base)
    write(base / "Manually_Annotated_file_lists" / "training.csv", "path,label\n")
    with pytest.raises(DatasetError, match=r"training\.csv:1: header"):
        build_dataset("affectnet:train", root=base)
    with pytest.raises(DatasetError, match="validation.csv not found"):
        build_dataset("affectnet:valid", root=base)


# ---------------------------------------------------------------------- sfew
def test_sfew(tmp_path: Path) -> None:
    base = tmp_path / "SFEW_2"
    for cls in ("Angry", "Happy", "Surprise"):
        for i in range(2):
            img(base / "Train" / cls / f"{cls}_{i}.png", (12, 12, 3))
    img(base / "Val" / "Neutral" / "n.png", (12, 12, 3))
    write(base / "Train" / "Angry" / "Thumbs.db", "x")
    train = build_dataset("sfew:train", root=tmp_path)
    assert list(train.labels) == [4, 4, 1, 1, 2, 2]
    assert train.samples[0].id == "Train/Angry/Angry_0.png" and train[0][0].shape == (12, 12, 3)
    valid = build_dataset("sfew:valid", root=base)
    assert list(valid.labels) == [0] and valid.classes[0] == "neutral"
    img(base / "Val" / "Contempt" / "c.png")
    with pytest.raises(DatasetError, match="Contempt is unknown"):
        build_dataset("sfew:valid", root=base)


def test_sfew_missing_split(tmp_path: Path) -> None:
    img(tmp_path / "sfew" / "Train" / "Sad" / "a.png")
    with pytest.raises(DatasetError, match="'valid' not found .*train"):
        build_dataset("sfew:valid", root=tmp_path)


# ---------------------------------------------------------------------- ckplus
CK_SUBJECTS = {"S005": "3", "S010": "7", "S011": "2", "S014": "5"}


def _ckplus(root: Path) -> Path:
    base = root / "CK+"
    for subj, code in CK_SUBJECTS.items():
        for seq, labelled in (("001", True), ("002", False)):
            for k in range(1, 6):
                img(base / "cohn-kanade-images" / subj / seq / f"{subj}_{seq}_{k:08d}.png",
                    (16, 12), value=k)
            if labelled:
                write(base / "Emotion_labels" / "Emotion" / subj / seq /
                      f"{subj}_{seq}_00000005_emotion.txt", f"   {code}.0000000e+00\n")
    return base


def test_ckplus_original(tmp_path: Path) -> None:
    base = _ckplus(tmp_path)
    full = build_dataset("ckplus:all", root=tmp_path)
    assert full.num_classes == 8 and len(full) == 4 * 3
    assert full.samples[0].id == "cohn-kanade-images/S005/001/S005_001_00000003.png"
    assert list(full.labels) == [5] * 3 + [2] * 3 + [7] * 3 + [1] * 3
    im, s = full[2]
    assert im.shape == (16, 12) and im[0, 0] == 5 and s.subject == "S005"
    neutral = build_dataset("ckplus:all", root=base, include_neutral=True, peak_frames=1)
    assert list(neutral.labels[:2]) == [0, 5] and neutral.samples[0].id.endswith("01.png")
    seven = build_dataset("ckplus:all", root=base, num_classes=7)
    assert 7 not in seven.labels and len(seven) == 9
    check_folds("ckplus", base, set(CK_SUBJECTS), 2)
    check_folds("ckplus", base, set(CK_SUBJECTS), 4)


def test_ckplus_errors(tmp_path: Path) -> None:
    base = _ckplus(tmp_path)
    bad = base / "Emotion_labels" / "Emotion" / "S010" / "001" / "S010_001_00000005_emotion.txt"
    write(bad, "   9.0000000e+00\n")
    with pytest.raises(DatasetError, match=r"S010_001_00000005_emotion\.txt: emotion code"):
        build_dataset("ckplus:all", root=base)
    with pytest.raises(DatasetError, match="split 'valid'"):
        build_dataset("ckplus:valid", root=base)
    with pytest.raises(DatasetError, match="not a CK\\+ folder"):
        build_dataset("ckplus:all", root=tmp_path / "CK+" / "Emotion_labels" / "Emotion")


def test_ckplus48(tmp_path: Path) -> None:
    base = tmp_path / "CK+48"
    for cls, subj in (("anger", "S010"), ("contempt", "S011"), ("happy", "S010"),
                      ("surprise", "S022")):
        for k in (15, 16):
            img(base / cls / f"{subj}_004_{k:08d}.png", (48, 48))
    ds = build_dataset("ckplus:all", root=tmp_path)
    assert list(ds.labels) == [4, 4, 7, 7, 1, 1, 2, 2]
    assert [s.subject for s in ds.samples[::2]] == ["S010", "S011", "S010", "S022"]
    check_folds("ckplus", base, {"S010", "S011", "S022"}, 3)
    img(base / "happy" / "face.png")
    with pytest.raises(DatasetError, match=r"face\.png is not named like S010"):
        build_dataset("ckplus:all", root=base)


# ---------------------------------------------------------------------- jaffe
def _jaffe(root: Path) -> Path:
    base = root / "jaffedbase"
    for i, subj in enumerate(("KA", "KL", "KM", "KR")):
        for j, code in enumerate(("AN", "HA", "NE", "SU")):
            img(base / f"{subj}.{code}{j + 1}.{i * 10 + j}.tiff", (32, 32), value=i)
    write(base / "README", "JAFFE")
    return base


def test_jaffe(tmp_path: Path) -> None:
    base = _jaffe(tmp_path)
    full = build_dataset("jaffe:all", root=tmp_path)
    assert len(full) == 16 and full.num_classes == 7
    assert full.samples[0].id == "KA.AN1.0.tiff" and full.samples[0].subject == "KA"
    assert list(full.labels[:4]) == [4, 1, 0, 2]
    im, _ = full[5]
    assert im.shape == (32, 32) and im[0, 0] == 1
    check_folds("jaffe", base, {"KA", "KL", "KM", "KR"}, 4)
    check_folds("jaffe", base, {"KA", "KL", "KM", "KR"}, 3, seed=7)


def test_jaffe_errors(tmp_path: Path) -> None:
    base = _jaffe(tmp_path)
    img(base / "scan_0001.tiff")
    with pytest.raises(DatasetError, match=r"scan_0001\.tiff is not named like KA\.AN1"):
        build_dataset("jaffe:all", root=base)
    assert len(build_dataset("jaffe:all", root=base, strict=False)) == 16
    img(base / "KA.XX1.99.tiff")
    with pytest.raises(DatasetError, match="code 'XX' is unknown"):
        build_dataset("jaffe:all", root=base, strict=False)


# ---------------------------------------------------------------------- kdef
def _kdef(root: Path) -> Path:
    base = root / "KDEF_and_AKDEF"
    for session in "AB":
        for subj in ("F01", "M02", "F03"):
            for code in ("AF", "HA"):
                for angle in ("FL", "HL", "S", "HR", "FR"):
                    d = base / "KDEF" / f"{session}{subj}"
                    img(d / f"{session}{subj}{code}{angle}.JPG", (14, 10, 3))
    img(base / "AKDEF" / "AFS.JPG")  # averaged faces, outside KDEF/: never read
    return base


def test_kdef(tmp_path: Path) -> None:
    base = _kdef(tmp_path)
    full = build_dataset("kdef:all", root=tmp_path)
    assert len(full) == 2 * 3 * 2 * 5 and full.num_classes == 7
    s = full.samples[0]
    assert s.id == "KDEF/AF01/AF01AFFL.JPG" and s.label == 6 and s.subject == "F01"
    assert (s.pose, s.pose_bin) == (-90.0, 0)
    poses = {x.id.split("/")[-1][6:-4]: (x.pose, x.pose_bin) for x in full.samples}
    assert poses == {"FL": (-90.0, 0), "HL": (-45.0, 1), "S": (0.0, 2), "HR": (45.0, 3),
                     "FR": (90.0, 4)}
    assert {x.subject for x in full.samples if x.id.startswith("KDEF/BF01")} == {"F01"}
    assert full[0][0].shape == (14, 10, 3)
    front = build_dataset("kdef:all", root=base, angles=("S", "hl"))
    assert len(front) == 24 and {x.pose for x in front.samples} == {0.0, -45.0}
    check_folds("kdef", base, {"F01", "M02", "F03"}, 3)
    check_folds("kdef", base, {"F01", "M02", "F03"}, 3, angles="S")


def test_kdef_errors(tmp_path: Path) -> None:
    base = _kdef(tmp_path)
    img(base / "KDEF" / "AF01" / "AF01XXS.JPG")
    with pytest.raises(DatasetError, match=r"AF01XXS\.JPG is not named like AF01ANS"):
        build_dataset("kdef:all", root=base)
    assert len(build_dataset("kdef:all", root=base, strict=False)) == 60
    with pytest.raises(DatasetError, match="'UP'"):
        build_dataset("kdef:all", root=base, angles=["UP"])


# ---------------------------------------------------------------------- folder
def test_folder_tree(tmp_path: Path) -> None:
    img(tmp_path / "train" / "Happy" / "a.png", (9, 9, 3))
    img(tmp_path / "train" / "angry" / "sub" / "b.jpg", (9, 9, 3))
    img(tmp_path / "test" / "neutral" / "c.png")
    write(tmp_path / "train" / "Happy" / "notes.txt", "ignored")
    train = build_dataset("folder:train", root=tmp_path)
    assert [s.id for s in train.samples] == ["train/Happy/a.png", "train/angry/sub/b.jpg"]
    assert list(train.labels) == [1, 4] and train.num_classes == 7
    assert train[0][0].shape == (9, 9, 3)
    with pytest.raises(DatasetError, match=r"split 'valid' not found.*train \(train\), test"):
        build_dataset("folder:valid", root=tmp_path)
    img(tmp_path / "test" / "Contempt" / "d.png")  # any contempt -> 8 classes everywhere
    assert build_dataset("folder:train", root=tmp_path).num_classes == 8
    img(tmp_path / "val" / "grumpy" / "e.png")
    with pytest.raises(DatasetError, match=r"class folder \S*val/grumpy: unknown"):
        build_dataset("folder:valid", root=tmp_path)
    with pytest.raises(DatasetError, match=r"class folder \S*val/grumpy: unknown"):
        build_dataset("folder:train", root=tmp_path)  # the label-space scan names it too


def test_folder_csv(tmp_path: Path) -> None:
    img(tmp_path / "imgs" / "a.png")
    img(tmp_path / "imgs" / "b.png")
    write(tmp_path / "train.csv",
          "path,label,subject,yaw\nimgs/a.png,Happy,p1,30\nimgs/b.png,7,p2,\n")
    ds = build_dataset("folder:train", root=tmp_path)
    assert list(ds.labels) == [1, 7] and ds.num_classes == 8
    assert [(s.subject, s.pose) for s in ds.samples] == [("p1", 30.0), ("p2", None)]
    assert ds[1][0].shape == (8, 8)
    write(tmp_path / "train.csv", "path,label\nimgs/a.png,happy\nimgs/b.png,9\n")
    with pytest.raises(DatasetError, match=r"train\.csv:3: label 9"):
        build_dataset("folder:train", root=tmp_path)
    write(tmp_path / "train.csv", "file,class\nimgs/a.png,happy\n")
    with pytest.raises(DatasetError, match=r"train\.csv:1: header"):
        build_dataset("folder:train", root=tmp_path)
