"""Face crops cut the way inference cuts them, for datasets of photos or other crop geometries.

FERPlus faces are 48x48 FER2013 crops; SFEW gives 143x181 aligned crops; muxspace gives whole
photos. A model trained on a mix must see one geometry, and the one that matters is the one the
application pipeline hands it: :func:`align_dataset` runs the front end (detector, face mesh,
alignment to the FER2013 mesh template with the model's ``crop_scale``/``crop_shift``) over every
image and keeps the largest face, exactly as ``Recognizer`` would crop it.

Images where no face is found are left out (and counted); the crops are cached as one ``.npz``
per dataset and setting under ``$ROBUSTFER_CACHE`` (default ``~/.cache/robustfer``), written
atomically, so the detector runs once per machine and a killed run loses nothing finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path

import numpy as np

from robustfer.data.base import FERDataset
from robustfer.errors import DatasetError

logger = logging.getLogger(__name__)

#: Environment variable naming the cache folder.
CACHE_ENV = "ROBUSTFER_CACHE"
#: Bump when the crop arithmetic changes, so stale caches are not reused.
ALIGN_VERSION = 1


#: ``fn(image, size, crop_scale, crop_shift, detector) -> crop | None``: the front end's crop
#: of the largest face. The inference layer registers it when imported (the data layer cannot
#: import the application); see :func:`set_face_cropper`.
FaceCropper = Callable[[np.ndarray, int, float, float, str], "np.ndarray | None"]
_CROPPER: FaceCropper | None = None


def set_face_cropper(fn: FaceCropper) -> None:
    """Register the function that cuts a face crop from a photo (``robustfer.inference`` does)."""
    global _CROPPER
    _CROPPER = fn


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "robustfer")


def _key(ds: FERDataset, detector: str, size: int, crop_scale: float, crop_shift: float) -> str:
    from robustfer.data.real_occluders import TEMPLATE_PATH

    h = hashlib.sha1()
    h.update(json.dumps([ALIGN_VERSION, ds.spec, detector, size, crop_scale, crop_shift,
                         [s.id for s in ds.samples]]).encode())
    if TEMPLATE_PATH.is_file():  # the alignment target: a new template makes new crops
        h.update(TEMPLATE_PATH.read_bytes())
    return h.hexdigest()[:16]


def align_dataset(ds: FERDataset, size: int = 96, crop_scale: float = 1.05, crop_shift: float = 0.0,
                  detector: str = "blazeface:thorough", progress: bool = True) -> FERDataset:
    """``ds`` with every image replaced by the aligned crop of its largest face.

    Args:
        ds: any dataset (its images are decoded from ``path``/``pixels`` as usual).
        size: side of the stored crops (the training transform resizes them to the model's
            input size; larger leaves room for augmentation).
        crop_scale, crop_shift: the model's :class:`~robustfer.data.preprocess.Preprocess`
            crop geometry.
        detector: the front end that finds the faces (thorough by default: speed does not
            matter here, recall does).

    Returns:
        A dataset of the same name and split, subset ``aligned``, with the crops in memory;
        images without a face are left out.
    """
    import cv2

    path = cache_dir() / "aligned" / f"{ds.name}-{ds.split}-{_key(ds, detector, size, crop_scale, crop_shift)}.npz"
    if path.is_file():
        z = np.load(path)
        found, crops = z["found"], z["crops"]
    else:
        from tqdm.auto import tqdm

        if _CROPPER is None:
            raise DatasetError(f"{ds.spec}: cutting faces with the front end needs robustfer.inference; "
                               "`import robustfer.inference` before building the data (the robustfer CLI does).")
        found = np.zeros(len(ds), bool)
        crops = np.zeros((len(ds), size, size, 3), np.uint8)
        for i in tqdm(range(len(ds)), desc=f"align {ds.spec}", disable=not progress):
            try:
                img = ds.load_image(i)
            except Exception as e:  # one unreadable file does not stop the others
                logger.warning("%s: %s skipped (%s)", ds.spec, ds.samples[i].id, e)
                continue
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
            crop = _CROPPER(np.ascontiguousarray(img[:, :, :3]), size, crop_scale, crop_shift, detector)
            if crop is not None:
                crops[i], found[i] = crop, True
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary name of this process's own: two runs started together on a fresh cache both
        # cut the faces, and each must publish a whole file without tripping over the other's.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, found=found, crops=crops)
        os.replace(tmp, path)
    if not found.any():
        raise DatasetError(f"{ds.spec}: the front end found no face in any image; check the images "
                           f"(or delete {path} if it is stale).")
    keep = np.flatnonzero(found)
    if len(keep) < len(ds):
        logger.warning("%s: no face found in %d of %d images; left out.", ds.spec, len(ds) - len(keep), len(ds))
    samples = [replace(ds.samples[i], pixels=crops[i], box=None, landmarks=None) for i in keep]
    out = FERDataset(ds.name, ds.split, samples, ds.num_classes, root=ds.root,
                     subset="aligned" if ds.subset is None else f"{ds.subset}+aligned", cache=True)
    return out
