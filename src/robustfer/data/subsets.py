"""Pose and occlusion test subsets published with RAN (Wang et al., IEEE TIP 2020).

The lists come from ``kaiwang960112/Challenge-condition-FER-dataset`` and are read from a
``ran_lists/`` folder laid out as in that repository::

    ran_lists/FERplus_dir/pose_30_ferplus_list.txt      <label>/ferNNNNNNN.jpg
    ran_lists/FERplus_dir/pose_45_ferplus_list.txt      <label>/ferNNNNNNN.jpg
    ran_lists/FERplus_dir/jianfei_occlusion_list.txt    <label>_ferNNNNNNN.png 8 <k>
    ran_lists/RAF_DB_dir/rafdb_occlusion_list.txt       test_NNNN_aligned <expr 0-6> <type 1-4>
    ran_lists/RAF_DB_dir/val_raf_db_list.txt            <label 0-6>/test_NNNN_aligned.jpg
    ran_lists/RAF_DB_dir/val_raf_db_label.txt           "1247 7" header, then one label a line
    ran_lists/RAF_DB_dir/val_raf_db_list_45.txt         (+ val_raf_db_label_45.txt) same
    ran_lists/AffectNet_dir/occlusion_affectnet_list.txt  val/<label>/<hash>/
    ran_lists/AffectNet_dir/pose_30_affectnet_list.txt    <label>/<hash>.jpg
    ran_lists/AffectNet_dir/pose_45_affectnet_list.txt    <label>/<hash>/8.jpg

The folder is found as, in this order: the ``subset_lists_root`` option (``lists_root`` when a
builder is called directly), ``<data_root>/ran_lists`` (``build_dataset`` passes the folder
above the dataset root as ``data_root``), ``$ROBUSTFER_DATA/ran_lists``.

Labels. Every list carries a label in its own order, declared as a :class:`LabelMap` below:
FER+ lists use the FER+ order (identity with the canonical order), RAF-DB lists use RAF-DB's
1-7 order minus one, AffectNet lists use AffectNet's order. A subset keeps the *dataset's*
label of each image; the list label is only cross-checked and every disagreement is counted
in the subset's :class:`SubsetReport` (never silently dropped or overridden).

Sizes. A subset is the list's unique entries that are present in the base split. Entries that
are legitimately absent (on FERPlus: images whose votes give no label under the split's label
rule, e.g. an ``unknown``/``NF`` majority, or contempt images in the 7-class space) are counted
as "not in split" with a reason; any other missing entry is an error. The returned dataset has
a ``subset_report`` attribute (:class:`SubsetReport`) giving both the list size and the
evaluated size; quote the evaluated size next to any accuracy.

Real-data counts (checked on the data folder the tests use, ``$ROBUSTFER_DATA`` or else
``../shared/data`` beside the repository, with FER2013Test ``label.csv`` from microsoft/FERPlus;
asserted in ``tests/test_subsets.py``, which skips them when that folder is absent):

============================  =====  ========  ==============================================
FERPlus list                  lines  in split  list label agrees with FER+ majority label
============================  =====  ========  ==============================================
pose30 (pose > 30 degrees)    1,170  1,170     1,170 / 1,170
pose45 (pose > 45 degrees)      633    633       633 / 633
occlusion                       605    605       605 / 605
============================  =====  ========  ==============================================

Every FERPlus entry is in FER2013Test and in the majority-mode test split (3,137 images), so
``ferplus:test:pose30`` / ``pose45`` / ``occlusion`` have exactly 1,170 / 633 / 605 images, the
sizes the RAN paper reports. The probability label mode keeps the same images with the same
arg-max labels. With ``num_classes=7`` the contempt entries (6 / 4 / 3) fall outside the label
space and the subsets have 1,164 / 629 / 602 images (reported as "not in split").

List files (lines = non-empty lines; a duplicate is an identical entry repeated):
RAF-DB occlusion 735 lines (``wc -l`` says 734: the last line has no newline), 734 unique,
1 duplicate (``test_2464_aligned``); RAF-DB pose30 1,247 and pose45 558 lines, labels identical
to the separate label files; AffectNet occlusion 683; pose30 1,949 lines / 1,944 unique; pose45
985 / 983. Against the real RAF-DB label file (``list_patition_label.txt``, no images needed)
every RAF-DB entry is in the test split and every list label agrees with the RAF-DB label:
``rafdb:test:pose30`` / ``pose45`` / ``occlusion`` have 1,247 / 558 / 734 images. The AffectNet
subsets are not checked on real data (no AffectNet validation CSV was available to check them).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustfer.data.base import (
    DATA_ENV,
    FERDataset,
    Sample,
    data_root_from_env,
    list_datasets,
    register_subset,
)
from robustfer.data.labels import EXPRESSIONS_8, LabelMap
from robustfer.errors import DatasetError

logger = logging.getLogger(__name__)

#: Name of the lists folder under a data root.
LISTS_DIRNAME = "ran_lists"

#: FER+ list labels: FER+ column order, identical to the canonical order.
FERPLUS_LIST_LABELS = LabelMap.from_names("ferplus (RAN list)", EXPRESSIONS_8)
#: RAF-DB list labels: RAF-DB's 1-7 order minus one.
RAFDB_LIST_LABELS = LabelMap.from_names(
    "rafdb (RAN list)",
    ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
)
#: AffectNet list labels: AffectNet's own order.
AFFECTNET_LIST_LABELS = LabelMap.from_names(
    "affectnet (RAN list)",
    ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"),
)


# ---------------------------------------------------------------------- parsed lists
@dataclass(frozen=True)
class ListEntry:
    """One entry of a RAN list.

    Attributes:
        key: name matched against the base split: ``ferNNNNNNN.png`` (FER+), ``test_NNNN``
            (RAF-DB) or the lower-case image hash (AffectNet).
        label: the list's label mapped to a canonical index.
        line: 1-based line number in the list file.
        info: further columns, e.g. ``{"occlusion_type": 3}`` (RAF-DB occlusion) or
            ``{"classes": 8, "k": 2}`` (FER+ occlusion; both columns undocumented upstream).
    """

    key: str
    label: int
    line: int
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ParsedList:
    """A parsed list file.

    Attributes:
        path: the list file.
        entries: unique entries in file order.
        lines: number of non-empty lines read.
        duplicates: number of repeated entries dropped.
        duplicate_lines: line numbers of the dropped repeats.
        label_map: the list's native label order.
    """

    path: Path
    entries: tuple[ListEntry, ...]
    lines: int
    duplicates: int
    duplicate_lines: tuple[int, ...]
    label_map: LabelMap

    def __len__(self) -> int:
        return len(self.entries)

    def class_counts(self) -> dict[str, int]:
        """Unique entries per canonical class name, over the classes the list can name."""
        counts = Counter(e.label for e in self.entries)
        present = sorted({c for c in self.label_map.to_canonical if c is not None})
        return {EXPRESSIONS_8[c]: counts.get(c, 0) for c in present}


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty, stripped lines with 1-based numbers; LF and CRLF files alike."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"RAN list file {path} does not exist; expected the lists of "
            "kaiwang960112/Challenge-condition-FER-dataset under a ran_lists/ folder."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"RAN list file {path} is not UTF-8 text ({e}).") from None
    return [(i, s.strip()) for i, s in enumerate(text.splitlines(), start=1) if s.strip()]


def _bad_line(path: Path, lineno: int, text: str, expected: str) -> DatasetError:
    return DatasetError(
        f"{path}:{lineno}: malformed line {text[:120]!r}; expected {expected}. Restore the "
        "file from kaiwang960112/Challenge-condition-FER-dataset."
    )


def _map_label(raw: str, label_map: LabelMap, path: Path, lineno: int) -> int:
    native = int(raw)
    if not 0 <= native < len(label_map.native):
        raise DatasetError(
            f"{path}:{lineno}: label {native} is out of range; this list uses the "
            f"{len(label_map.native)}-class order {list(label_map.native)} (0-based)."
        )
    canonical = label_map(native)
    assert canonical is not None  # list label maps drop nothing
    return canonical


def _dedupe(
    path: Path, lines: int, entries: Sequence[ListEntry], label_map: LabelMap
) -> ParsedList:
    seen: dict[str, ListEntry] = {}
    dup_lines: list[int] = []
    for e in entries:
        prev = seen.get(e.key)
        if prev is None:
            seen[e.key] = e
        elif prev.label == e.label and dict(prev.info) == dict(e.info):
            dup_lines.append(e.line)
        else:
            raise DatasetError(
                f"{path}:{e.line}: {e.key} is listed again with a different label or "
                f"columns than on line {prev.line} ({EXPRESSIONS_8[prev.label]} "
                f"{dict(prev.info)} vs {EXPRESSIONS_8[e.label]} {dict(e.info)}); expected "
                "each image once. Restore the file from the upstream repository."
            )
    return ParsedList(
        Path(path), tuple(seen.values()), lines, len(dup_lines), tuple(dup_lines), label_map
    )


def _parse_with(
    path: Path,
    pattern: str,
    expected: str,
    label_map: LabelMap,
    make: Callable[[re.Match[str], int], ListEntry],
) -> ParsedList:
    path = Path(path)
    rx = re.compile(pattern)
    lines = _read_lines(path)
    entries = []
    for lineno, text in lines:
        m = rx.fullmatch(text)
        if m is None:
            raise _bad_line(path, lineno, text, expected)
        entries.append(make(m, lineno))
    return _dedupe(path, len(lines), entries, label_map)


def parse_ferplus_pose_list(path: Path) -> ParsedList:
    """Parse a FER+ pose list (``<label>/ferNNNNNNN.jpg``, FER+ label order).

    The list names ``.jpg`` files; the images are ``ferNNNNNNN.png`` in FER2013Test, which is
    the key returned.

    Raises:
        DatasetError: naming ``file:line`` for a malformed line or out-of-range label.
    """
    lm = FERPLUS_LIST_LABELS

    def make(m: re.Match[str], lineno: int) -> ListEntry:
        return ListEntry(f"{m['name']}.png", _map_label(m["label"], lm, path, lineno), lineno)

    return _parse_with(
        path, r"(?P<label>\d+)/(?P<name>fer\d+)\.(?:jpg|png)",
        "'<label 0-7>/ferNNNNNNN.jpg'", lm, make,
    )


def parse_ferplus_occlusion_list(path: Path) -> ParsedList:
    """Parse the FER+ occlusion list (``<label>_ferNNNNNNN.png 8 <k>``, FER+ label order).

    The last two columns are undocumented upstream; they are kept in ``info`` as
    ``classes`` (always 8 in the real file) and ``k`` (0-3).

    Raises:
        DatasetError: naming ``file:line`` for a malformed line or out-of-range label.
    """
    lm = FERPLUS_LIST_LABELS

    def make(m: re.Match[str], lineno: int) -> ListEntry:
        return ListEntry(
            f"{m['name']}.png", _map_label(m["label"], lm, path, lineno), lineno,
            {"classes": int(m["classes"]), "k": int(m["k"])},
        )

    return _parse_with(
        path, r"(?P<label>\d+)_(?P<name>fer\d+)\.(?:png|jpg)\s+(?P<classes>\d+)\s+(?P<k>\d+)",
        "'<label 0-7>_ferNNNNNNN.png 8 <k>'", lm, make,
    )


def parse_rafdb_occlusion_list(path: Path) -> ParsedList:
    """Parse the RAF-DB occlusion list (``test_NNNN_aligned <expr 0-6> <type 1-4>``).

    Raises:
        DatasetError: naming ``file:line`` for a malformed line, an out-of-range label or an
            occlusion type outside 1-4.
    """
    lm = RAFDB_LIST_LABELS

    def make(m: re.Match[str], lineno: int) -> ListEntry:
        occ = int(m["type"])
        if not 1 <= occ <= 4:
            raise DatasetError(
                f"{path}:{lineno}: occlusion type {occ} is out of range; expected 1-4."
            )
        return ListEntry(
            m["key"], _map_label(m["label"], lm, path, lineno), lineno, {"occlusion_type": occ}
        )

    return _parse_with(
        path, r"(?P<key>test_\d+)(?:_aligned)?(?:\.jpg)?\s+(?P<label>\d+)\s+(?P<type>\d+)",
        "'test_NNNN_aligned <expr 0-6> <occlusion type 1-4>'", lm, make,
    )


def read_rafdb_label_file(path: Path) -> list[int]:
    """Read a RAF-DB list label file: a ``<count> <classes>`` header, then one label a line.

    Returns:
        The native labels (0-6) in file order.

    Raises:
        DatasetError: naming ``file:line`` when the header or a label is malformed or the
            number of labels differs from the header.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise DatasetError(f"{path} is empty; expected a '<count> 7' header and labels.")
    lineno, head = lines[0]
    m = re.fullmatch(r"(\d+)\s+(\d+)", head)
    if m is None:
        raise _bad_line(path, lineno, head, "a '<count> <classes>' header such as '1247 7'")
    count, classes = int(m[1]), int(m[2])
    if classes != len(RAFDB_LIST_LABELS.native):
        raise DatasetError(
            f"{path}:{lineno}: header names {classes} classes; expected "
            f"{len(RAFDB_LIST_LABELS.native)} (RAF-DB basic expressions)."
        )
    labels = []
    for lineno, text in lines[1:]:
        if not text.isdigit() or int(text) >= classes:
            raise _bad_line(path, lineno, text, f"one label 0-{classes - 1} per line")
        labels.append(int(text))
    if len(labels) != count:
        raise DatasetError(
            f"{path}: header says {count} labels but the file has {len(labels)}; the file "
            "is truncated or corrupt. Restore it from the upstream repository."
        )
    return labels


def parse_rafdb_pose_list(path: Path, label_path: Path | None = None) -> ParsedList:
    """Parse a RAF-DB pose list (``<label 0-6>/test_NNNN_aligned.jpg``).

    Args:
        path: the list file.
        label_path: the matching label file (``val_raf_db_label*.txt``); when given, its
            labels must equal the list's line by line.

    Raises:
        DatasetError: naming ``file:line`` for a malformed line, or when the label file
            disagrees with the list.
    """
    lm = RAFDB_LIST_LABELS

    def make(m: re.Match[str], lineno: int) -> ListEntry:
        return ListEntry(m["key"], _map_label(m["label"], lm, path, lineno), lineno)

    parsed = _parse_with(
        path, r"(?P<label>\d+)/(?P<key>test_\d+)(?:_aligned)?\.(?:jpg|png)",
        "'<label 0-6>/test_NNNN_aligned.jpg'", lm, make,
    )
    if label_path is not None:
        labels = read_rafdb_label_file(label_path)
        raw = [t for _, t in _read_lines(Path(path))]
        if len(labels) != len(raw):
            raise DatasetError(
                f"{label_path} has {len(labels)} labels but {path} has {len(raw)} lines; "
                "expected one label per list line."
            )
        for i, (text, lab) in enumerate(zip(raw, labels), start=1):
            if int(text.split("/", 1)[0]) != lab:
                raise DatasetError(
                    f"{label_path}: label {i} is {lab} but {path} entry {i} ({text}) says "
                    f"{text.split('/', 1)[0]}; expected the two files to agree."
                )
    return parsed


_HASH = r"(?P<key>[0-9A-Fa-f]{16,})"


def parse_affectnet_occlusion_list(path: Path) -> ParsedList:
    """Parse the AffectNet occlusion list (``val/<label>/<hash>/``, AffectNet label order).

    Raises:
        DatasetError: naming ``file:line`` for a malformed line or out-of-range label.
    """
    lm = AFFECTNET_LIST_LABELS

    def make(m: re.Match[str], lineno: int) -> ListEntry:
        return ListEntry(m["key"].lower(), _map_label(m["label"], lm, path, lineno), lineno)

    return _parse_with(
        path, rf"val/(?P<label>\d+)/{_HASH}/?", "'val/<label 0-7>/<hash>/'", lm, make
    )


def parse_affectnet_pose30_list(path: Path) -> ParsedList:
    """Parse the AffectNet pose > 30 list (``<label>/<hash>.jpg``, AffectNet label order).

    Raises:
        DatasetError: naming ``file:line`` for a malformed line or out-of-range label.
    """
    lm = AFFECTNET_LIST_LABELS

    def make(m: re.Match[str], lineno: int) -> ListEntry:
        return ListEntry(m["key"].lower(), _map_label(m["label"], lm, path, lineno), lineno)

    return _parse_with(
        path, rf"(?P<label>\d+)/{_HASH}\.(?:jpg|jpeg|png)", "'<label 0-7>/<hash>.jpg'", lm, make
    )


def parse_affectnet_pose45_list(path: Path) -> ParsedList:
    """Parse the AffectNet pose > 45 list (``<label>/<hash>/8.jpg``, AffectNet label order).

    The file inside the hash directory (``8.jpg`` on every real line) is kept as
    ``info["file"]``.

    Raises:
        DatasetError: naming ``file:line`` for a malformed line or out-of-range label.
    """
    lm = AFFECTNET_LIST_LABELS

    def make(m: re.Match[str], lineno: int) -> ListEntry:
        return ListEntry(
            m["key"].lower(), _map_label(m["label"], lm, path, lineno), lineno,
            {"file": m["file"]},
        )

    return _parse_with(
        path, rf"(?P<label>\d+)/{_HASH}/(?P<file>[^/\s]+\.(?:jpg|jpeg|png))",
        "'<label 0-7>/<hash>/8.jpg'", lm, make,
    )


# ---------------------------------------------------------------------- the table
@dataclass(frozen=True)
class RanSubset:
    """One published RAN subset.

    Attributes:
        dataset: registered dataset name.
        subset: subset name in dataset specs (``ferplus:test:pose30``).
        list_file: list file relative to the lists folder.
        split: the base split the list refers to.
        parser: parse function for the list format.
        label_file: separate label file (RAF-DB pose lists), relative to the lists folder.
    """

    dataset: str
    subset: str
    list_file: str
    split: str
    parser: Callable[[Path], ParsedList]
    label_file: str | None = None

    def parse(self, lists_root: Path) -> ParsedList:
        """Parse this subset's list (and label file) under ``lists_root``."""
        path = Path(lists_root) / self.list_file
        if self.label_file is not None:
            return parse_rafdb_pose_list(path, Path(lists_root) / self.label_file)
        return self.parser(path)


RAN_SUBSETS: tuple[RanSubset, ...] = (
    RanSubset("ferplus", "pose30", "FERplus_dir/pose_30_ferplus_list.txt", "test",
              parse_ferplus_pose_list),
    RanSubset("ferplus", "pose45", "FERplus_dir/pose_45_ferplus_list.txt", "test",
              parse_ferplus_pose_list),
    RanSubset("ferplus", "occlusion", "FERplus_dir/jianfei_occlusion_list.txt", "test",
              parse_ferplus_occlusion_list),
    RanSubset("rafdb", "pose30", "RAF_DB_dir/val_raf_db_list.txt", "test",
              parse_rafdb_pose_list, "RAF_DB_dir/val_raf_db_label.txt"),
    RanSubset("rafdb", "pose45", "RAF_DB_dir/val_raf_db_list_45.txt", "test",
              parse_rafdb_pose_list, "RAF_DB_dir/val_raf_db_label_45.txt"),
    RanSubset("rafdb", "occlusion", "RAF_DB_dir/rafdb_occlusion_list.txt", "test",
              parse_rafdb_occlusion_list),
    RanSubset("affectnet", "pose30", "AffectNet_dir/pose_30_affectnet_list.txt", "valid",
              parse_affectnet_pose30_list),
    RanSubset("affectnet", "pose45", "AffectNet_dir/pose_45_affectnet_list.txt", "valid",
              parse_affectnet_pose45_list),
    RanSubset("affectnet", "occlusion", "AffectNet_dir/occlusion_affectnet_list.txt", "valid",
              parse_affectnet_occlusion_list),
)


def get_ran_subset(dataset: str, subset: str) -> RanSubset:
    """The :data:`RAN_SUBSETS` row for ``dataset`` and ``subset``."""
    for row in RAN_SUBSETS:
        if row.dataset == dataset and row.subset == subset:
            return row
    known = ", ".join(f"{r.dataset}:{r.subset}" for r in RAN_SUBSETS)
    raise DatasetError(f"no RAN subset {dataset}:{subset}; known: {known}.")


def find_lists_root(data_root: Path | None = None, lists_root: Path | str | None = None) -> Path:
    """Locate the ``ran_lists`` folder.

    Args:
        data_root: folder holding the dataset folders; ``<data_root>/ran_lists`` is tried.
        lists_root: explicit lists folder (or a folder holding ``ran_lists/``); wins when given.

    Raises:
        DatasetError: saying where it looked and how to point at the lists.
    """
    if lists_root is not None:
        p = Path(lists_root).expanduser()
        for cand in (p / LISTS_DIRNAME, p):
            if cand.is_dir():
                return cand
        raise DatasetError(
            f"RAN lists folder {p} does not exist; pass subset_lists_root pointing at the "
            "ran_lists/ folder (from kaiwang960112/Challenge-condition-FER-dataset)."
        )
    tried = []
    env = data_root_from_env()
    for base in (data_root, env):
        if base is None:
            continue
        cand = Path(base).expanduser() / LISTS_DIRNAME
        if cand.is_dir():
            return cand
        tried.append(str(cand))
    where = ", ".join(tried) if tried else f"nowhere (no data root and ${DATA_ENV} unset)"
    raise DatasetError(
        f"cannot find the RAN lists folder; looked in {where}. Put the lists of "
        "kaiwang960112/Challenge-condition-FER-dataset in a ran_lists/ folder beside the "
        f"dataset folders (under --data-root or ${DATA_ENV}), or pass subset_lists_root."
    )


# ---------------------------------------------------------------------- selection
@dataclass(frozen=True)
class SubsetReport:
    """What a subset builder selected, attached to the subset as ``subset_report``.

    Attributes:
        spec: the subset's dataset spec (``ferplus:test:pose30``).
        list_file: the list file read.
        list_lines: non-empty lines in the list file.
        list_duplicates: repeated entries dropped.
        list_size: unique list entries.
        evaluated: entries found in the base split (= the subset's size).
        not_in_split: entries legitimately absent from the base split.
        not_in_split_reasons: count per reason.
        label_disagreements: evaluated entries whose list label differs from the dataset's
            label (the dataset's label is used).
        disagreement_examples: up to 10 ``(key, list label, dataset label)``.
    """

    spec: str
    list_file: str
    list_lines: int
    list_duplicates: int
    list_size: int
    evaluated: int
    not_in_split: int
    not_in_split_reasons: Mapping[str, int]
    label_disagreements: int
    disagreement_examples: tuple[tuple[str, str, str], ...] = ()

    @property
    def label_agreement(self) -> int:
        """Evaluated entries whose list label equals the dataset's label."""
        return self.evaluated - self.label_disagreements

    def summary(self) -> str:
        """One line for logs and reports."""
        text = (
            f"{self.spec}: {self.evaluated} of {self.list_size} listed images evaluated "
            f"({self.list_lines} lines, {self.list_duplicates} duplicates dropped); "
            f"list label agrees with the dataset label on {self.label_agreement}/"
            f"{self.evaluated}"
        )
        if self.not_in_split:
            reasons = "; ".join(f"{n} {r}" for r, n in self.not_in_split_reasons.items())
            text += f"; {self.not_in_split} not in split ({reasons})"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "spec": self.spec,
            "list_file": self.list_file,
            "list_lines": self.list_lines,
            "list_duplicates": self.list_duplicates,
            "list_size": self.list_size,
            "evaluated": self.evaluated,
            "not_in_split": self.not_in_split,
            "not_in_split_reasons": dict(self.not_in_split_reasons),
            "label_agreement": self.label_agreement,
            "label_disagreements": self.label_disagreements,
            "disagreement_examples": [list(x) for x in self.disagreement_examples],
        }


_RAF_KEY = re.compile(r"test_\d+")
_HEX_KEY = re.compile(r"[0-9a-f]{16,}")


def _ferplus_keys(s: Sample) -> list[str]:
    return [Path(s.id).name]


def _rafdb_keys(s: Sample) -> list[str]:
    keys = _RAF_KEY.findall(s.id)
    if s.path is not None:
        keys += _RAF_KEY.findall(Path(s.path).name)
    return keys


def _affectnet_keys(s: Sample) -> list[str]:
    parts = list(Path(s.id).parts)
    if s.path is not None:
        parts += list(Path(s.path).parts[-3:])
    keys = []
    for part in parts:
        stem = part.split(".", 1)[0].lower()
        if _HEX_KEY.fullmatch(stem):
            keys.append(stem)
    return keys


_KEY_FUNCS: dict[str, Callable[[Sample], list[str]]] = {
    "ferplus": _ferplus_keys,
    "rafdb": _rafdb_keys,
    "affectnet": _affectnet_keys,
}


def _ferplus_absence(base: FERDataset) -> Callable[[ListEntry], str | None]:
    """Reason a FER+ entry is legitimately missing from ``base``, or None if it is not."""
    from robustfer.data.ferplus import SPLIT_FOLDERS, process_votes, read_label_csv

    if base.root is None:
        return lambda e: None
    rows = dict(read_label_csv(Path(base.root) / SPLIT_FOLDERS["test"] / "label.csv"))

    def reason(e: ListEntry) -> str | None:
        votes = rows.get(e.key)
        if votes is None:
            return None
        target = process_votes(votes, "majority")
        if target is None:
            return "no FER+ majority label (unknown/NF or split votes)"
        if int(target.argmax()) >= base.num_classes:
            return f"majority label outside the {base.num_classes}-class space"
        return "dropped by the split's label rule"

    return reason


def _label_space_absence(base: FERDataset) -> Callable[[ListEntry], str | None]:
    def reason(e: ListEntry) -> str | None:
        if e.label >= base.num_classes:
            return f"list label outside the {base.num_classes}-class space"
        return None

    return reason


def select_subset(base: FERDataset, row: RanSubset, parsed: ParsedList) -> FERDataset:
    """Select ``parsed``'s entries from ``base`` and attach a :class:`SubsetReport`.

    Raises:
        DatasetError: when ``base`` is not the split the list refers to, two samples share a
            key, or a list entry is missing from ``base`` without a legitimate reason.
    """
    if base.name != row.dataset or base.split != row.split:
        raise DatasetError(
            f"the RAN {row.subset} list of {row.dataset} refers to the {row.split} split, not "
            f"{base.spec}; use the spec {row.dataset}:{row.split}:{row.subset}."
        )
    key_fn = _KEY_FUNCS[row.dataset]
    index: dict[str, int] = {}
    for i, s in enumerate(base.samples):
        for k in dict.fromkeys(key_fn(s)):
            if k in index:
                raise DatasetError(
                    f"{base.spec}: samples {base.samples[index[k]].id} and {s.id} both match "
                    f"RAN list key {k!r}; expected sample ids unique per image."
                )
            index[k] = i
    absence = (
        _ferplus_absence(base) if row.dataset == "ferplus" else _label_space_absence(base)
    )
    chosen: list[int] = []
    reasons: Counter[str] = Counter()
    missing: list[ListEntry] = []
    disagree: list[tuple[str, str, str]] = []
    for e in parsed.entries:
        i = index.get(e.key)
        if i is None:
            why = absence(e)
            if why is None:
                missing.append(e)
            else:
                reasons[why] += 1
            continue
        chosen.append(i)
        label = base.samples[i].label
        if label != e.label:
            disagree.append((e.key, EXPRESSIONS_8[e.label], EXPRESSIONS_8[label]))
    if missing:
        shown = ", ".join(f"{e.key} (line {e.line})" for e in missing[:5])
        raise DatasetError(
            f"{len(missing)} entries of {parsed.path} are not in {base.spec} "
            f"({len(base)} images), e.g. {shown}; expected every listed image in the split. "
            "Check that the dataset is complete and that its sample ids or paths contain the "
            "list's image names."
        )
    spec = f"{row.dataset}:{row.split}:{row.subset}"
    report = SubsetReport(
        spec=spec,
        list_file=str(parsed.path),
        list_lines=parsed.lines,
        list_duplicates=parsed.duplicates,
        list_size=len(parsed),
        evaluated=len(chosen),
        not_in_split=sum(reasons.values()),
        not_in_split_reasons=dict(reasons),
        label_disagreements=len(disagree),
        disagreement_examples=tuple(disagree[:10]),
    )
    if disagree:
        logger.warning(
            "%s; the dataset's labels are used", report.summary()
        )
    else:
        logger.info("%s", report.summary())
    ds = base.subset_of(sorted(chosen), row.subset)
    ds.subset_report = report  # type: ignore[attr-defined]
    return ds


def make_subset_builder(row: RanSubset) -> Callable[..., FERDataset]:
    """A subset builder ``fn(base, data_root=None, *, lists_root=None)`` for ``row``.

    ``subset_lists_root`` (the option name ``build_dataset`` forwards) is accepted as a
    synonym of ``lists_root``.
    """

    def build(
        base: FERDataset,
        data_root: Path | None = None,
        lists_root: Path | str | None = None,
        **options: Any,
    ) -> FERDataset:
        explicit = options.pop("subset_lists_root", None)
        if options:
            raise DatasetError(
                f"unknown option(s) {sorted(options)} for subset {row.dataset}:{row.subset}; "
                "the only subset option is subset_lists_root (the ran_lists/ folder)."
            )
        root = find_lists_root(data_root, lists_root if lists_root is not None else explicit)
        return select_subset(base, row, row.parse(root))

    build.__name__ = f"build_{row.dataset}_{row.subset}"
    build.__doc__ = (
        f"RAN {row.subset} subset of {row.dataset}:{row.split} from {row.list_file}."
    )
    return build


def register_ran_subsets() -> list[str]:
    """Register every RAN subset whose dataset is registered now (idempotent).

    Returns:
        The specs newly registered, e.g. ``["ferplus:test:pose30", ...]``.
    """
    infos = {info.name: info for info in list_datasets()}
    added = []
    for row in RAN_SUBSETS:
        info = infos.get(row.dataset)
        if info is None or row.subset in info.subsets:
            continue
        register_subset(row.dataset, row.subset)(make_subset_builder(row))
        added.append(f"{row.dataset}:{row.split}:{row.subset}")
    return added


def describe_ran_lists(lists_root: Path | str | None = None) -> list[dict[str, Any]]:
    """Counts of every RAN list file as found on disk (a check of the list files themselves;
    ``tests/test_subsets.py`` pins them).

    Args:
        lists_root: the ``ran_lists`` folder; found as in :func:`find_lists_root` when None.

    Returns:
        One dict per :data:`RAN_SUBSETS` row: ``dataset``, ``subset``, ``split``, ``file``,
        ``present``, and for present files ``lines``, ``unique``, ``duplicates`` and
        ``classes`` (unique entries per canonical class name).
    """
    root = find_lists_root(None, lists_root)
    out = []
    for row in RAN_SUBSETS:
        d: dict[str, Any] = {
            "dataset": row.dataset, "subset": row.subset, "split": row.split,
            "file": row.list_file, "present": (root / row.list_file).is_file(),
        }
        if d["present"]:
            parsed = row.parse(root)
            d.update(
                lines=parsed.lines, unique=len(parsed), duplicates=parsed.duplicates,
                classes=parsed.class_counts(),
            )
        out.append(d)
    return out
