"""Training data beyond FERPlus: muxspace loader, SFEW split by movie, front-end crops,
extra training datasets with sampling weights."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from robustfer.data import build_dataset
from robustfer.data.muxspace import person_fold, person_of
from robustfer.data.sfew import movie_fold, movie_of
from robustfer.engine.data import EpochSampler, add_extra_train, build_eval_dataset
from robustfer.errors import ConfigError, DatasetError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _muxspace(tmp: Path, rows: list[tuple[str, str]], make: bool = True) -> Path:
    root = tmp / "muxspace_dev"
    (root / "images").mkdir(parents=True)
    for name, _ in rows:
        if make and name != "missing.jpg":
            cv2.imwrite(str(root / "images" / name), np.full((20, 20, 3), 100, np.uint8))
    (root / "labels.csv").write_text("image,emotion\n" + "".join(f"{n},{e}\n" for n, e in rows))
    return root


def test_muxspace_loader(tmp_path: Path) -> None:
    _muxspace(tmp_path, [("a.jpg", "happiness"), ("b.jpg", "contempt"), ("missing.jpg", "fear")])
    ds = build_dataset("muxspace:train", root=tmp_path)
    assert len(ds) == 2 and ds.num_classes == 8 and list(ds.labels) == [1, 7]  # the missing row skipped
    assert ds[0][0].shape == (20, 20, 3)
    bad = tmp_path / "bad"
    bad.mkdir()
    _muxspace(bad, [("a.jpg", "bored")])
    with pytest.raises(DatasetError, match="unknown emotion 'bored'"):
        build_dataset("muxspace:train", root=bad)


def test_muxspace_real(data_root: Path) -> None:
    ds = build_dataset("muxspace:train", root=data_root)
    assert len(ds) == 3000 and ds.class_counts()["neutral"] == 1152


def test_muxspace_split_by_person(tmp_path: Path) -> None:
    assert person_of("images/George_W_Bush_0012.jpg") == "George_W_Bush"
    assert person_of("images/facial-expressions_2868582k.jpg") == "facial-expressions_2868582k"
    rows = [(f"Person_{i}_{j:04d}.jpg", "happiness") for i in range(20) for j in range(2)]
    _muxspace(tmp_path, rows)
    held = build_dataset("muxspace:train:heldout", root=tmp_path)
    rest = build_dataset("muxspace:train:rest", root=tmp_path)
    hp, rp = {person_of(s.id) for s in held.samples}, {person_of(s.id) for s in rest.samples}
    assert hp and rp and not hp & rp and len(held) + len(rest) == 40
    assert all(person_fold(p) == 0 for p in hp) and held.spec == "muxspace:train:heldout"


def test_muxspace_real_split(data_root: Path) -> None:
    held = build_dataset("muxspace:train:heldout", root=data_root)
    rest = build_dataset("muxspace:train:rest", root=data_root)
    assert (len(held), len(rest)) == (485, 2515)


def _sfew(tmp: Path) -> Path:
    root = tmp / "sfew2"
    movies = [f"Movie{i}" for i in range(20)] + ["Harry_Potter_2"]
    for cls in ("Happy", "Sad"):
        d = root / "Train" / cls
        d.mkdir(parents=True)
        for m in movies:
            cv2.imwrite(str(d / f"{m}_000123_0000000{len(cls)}.png"), np.zeros((8, 8, 3), np.uint8))
    return root


def test_sfew_split_by_movie(tmp_path: Path) -> None:
    assert movie_of("Train/Happy/Harry_Potter_2_001_0002.png") == "Harry_Potter_2"
    root = _sfew(tmp_path)
    held = build_dataset("sfew:train:heldout", root=root)
    rest = build_dataset("sfew:train:rest", root=root)
    full = build_dataset("sfew:train", root=root)
    hm, rm = {movie_of(s.id) for s in held.samples}, {movie_of(s.id) for s in rest.samples}
    assert hm and rm and not hm & rm and len(held) + len(rest) == len(full)
    assert all(movie_fold(m) == 0 for m in hm) and held.spec == "sfew:train:heldout"


def test_sfew_real_split(data_root: Path) -> None:
    held = build_dataset("sfew:train:heldout", root=data_root)
    rest = build_dataset("sfew:train:rest", root=data_root)
    assert (len(held), len(rest)) == (231, 629)


def _cfg(extra, **kw):  # type: ignore[no-untyped-def]
    base = dict(root=None, num_classes=8, cache=True, label_mode="majority", input_size=48,
                crop_scale=1.05, crop_shift=0.0, extra_train=extra, eval_options={},
                eval_label_mode="majority", pose_file=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_extra_train_merges_and_weights() -> None:
    train = build_dataset("synthetic:train", num_classes=8, size=40)
    cfg = _cfg([{"spec": "synthetic:valid", "weight": 3.0, "options": {"num_classes": 7, "size": 20}}])
    merged = add_extra_train(train, cfg)
    assert len(merged) == 60 and merged.num_classes == 8
    assert len({s.id for s in merged.samples}) == 60
    assert merged.samples[45].id.startswith("synthetic:valid/")
    assert merged.sampling_weights.tolist() == [1.0] * 40 + [3.0] * 20
    assert [s[0] for s in merged.sources] == ["synthetic:train", "synthetic:valid"]
    assert np.array_equal(merged.load_image(45), build_dataset("synthetic:valid", num_classes=7, size=20).load_image(5))
    # the sampler draws an extra image 3x as often as a train image
    sampler = EpochSampler(merged.labels, seed=0, weights=merged.sampling_weights)
    drawn = np.concatenate([list(sampler) for sampler.epoch in range(50)])
    share = (drawn >= 40).mean()
    assert abs(share - 60 / 100) < 0.05  # 20*3 / (40 + 20*3)
    assert add_extra_train(train, _cfg([])) is train
    for bad in ([{"weight": 1.0}], [{"spec": "synthetic:test"}], [{"spec": "synthetic:valid", "weight": 0}],
                [{"spec": "synthetic:valid", "colour": 1}]):
        with pytest.raises(ConfigError):
            add_extra_train(train, _cfg(bad))
    with pytest.raises(ConfigError, match="more than data.num_classes"):
        add_extra_train(build_dataset("synthetic:train", num_classes=7, size=10),
                        _cfg([{"spec": "synthetic:valid", "options": {"num_classes": 8}}], num_classes=7))


def test_unweighted_sampler_is_a_plain_shuffle() -> None:
    labels = np.arange(30) % 3
    a = list(EpochSampler(labels, seed=4))
    b = list(EpochSampler(labels, seed=4, weights=np.ones(30)))
    assert a == b and sorted(a) == list(range(30))


def test_align_dataset_cuts_faces_like_inference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustfer.inference  # noqa: F401  (registers the front end's cropper)

    monkeypatch.setenv("ROBUSTFER_CACHE", str(tmp_path / "cache"))
    root = _muxspace(tmp_path, [("face.jpg", "happiness"), ("blank.jpg", "neutral")], make=False)
    shutil.copy(SAMPLES / "grace_hopper.jpg", root / "images" / "face.jpg")
    cv2.imwrite(str(root / "images" / "blank.jpg"), np.full((64, 64, 3), 90, np.uint8))
    ds = build_dataset("muxspace:train", root=tmp_path)
    cfg = _cfg([{"spec": "muxspace:train", "align": True}], root=str(tmp_path))
    train = build_dataset("synthetic:train", num_classes=8, size=4)
    merged = add_extra_train(train, cfg)
    assert len(merged) == 5  # the blank photo has no face: left out
    crop = merged.load_image(4)
    assert crop.shape == (96, 96, 3)
    files = list((tmp_path / "cache" / "aligned").glob("*.npz"))
    assert len(files) == 1  # cached once ...
    from robustfer.inference import Recognizer
    from robustfer.inference.align import align_face
    det = max(Recognizer.from_pretrained("default").detect(ds.load_image(0)),
              key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    assert det is not None and crop.std() > 10
    ref, _ = align_face(ds.load_image(0), det, 96, 1.05, 0.0)
    assert np.abs(ref.astype(int) - crop.astype(int)).mean() < 12  # the inference crop (thorough vs default)
    files[0].write_bytes(files[0].read_bytes())  # ... and read back
    assert np.array_equal(add_extra_train(train, cfg).load_image(4), crop)
    ev = build_eval_dataset("muxspace:train+aligned", cfg)
    assert len(ev) == 1 and ev.spec == "muxspace:train:aligned"


def test_align_without_the_front_end_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import robustfer.data.aligned as aligned

    monkeypatch.setenv("ROBUSTFER_CACHE", str(tmp_path))
    monkeypatch.setattr(aligned, "_CROPPER", None)
    with pytest.raises(DatasetError, match="import robustfer.inference"):
        aligned.align_dataset(build_dataset("synthetic:train", size=2), progress=False)


def _align_in_child(barrier, errors) -> None:  # a run of its own, cutting the same dataset
    import robustfer.data.aligned as aligned

    save = aligned.np.savez

    def save_then_wait(*args, **kwargs):  # both runs have written their file before either publishes
        save(*args, **kwargs)
        barrier.wait(timeout=60)

    aligned.np.savez = save_then_wait
    try:
        aligned.align_dataset(build_dataset("synthetic:train", size=3), size=8, progress=False)
    except Exception as e:  # reported to the parent, which fails the test
        errors.put(repr(e))


def test_two_runs_cutting_the_same_faces_at_once_both_succeed(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    import multiprocessing

    import robustfer.data.aligned as aligned

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    monkeypatch.setenv("ROBUSTFER_CACHE", str(tmp_path))
    monkeypatch.setattr(aligned, "_CROPPER", lambda img, size, *a: np.full((size, size, 3), 7, np.uint8))
    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_align_in_child, args=(barrier, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = [errors.get(timeout=1) for _ in range(errors.qsize())] if not errors.empty() else []
    assert found == [] and all(p.exitcode == 0 for p in procs)
    files = list((tmp_path / "aligned").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and not files[0].name.startswith(".")
    assert np.load(files[0])["found"].all()
