"""Datasets: canonical labels, loaders for each dataset's own format, subsets and transforms."""

from robustfer.data import ferplus  # noqa: F401  (registers the loader)
from robustfer.data import affectnet, ckplus, fer2013, folder, jaffe, kdef, muxspace, rafdb, sfew  # noqa: F401
from robustfer.data.base import (
    DATA_ENV,
    FERDataset,
    Sample,
    build_dataset,
    get_dataset_info,
    list_datasets,
    parse_spec,
    read_image,
    register_dataset,
    register_subset,
)
from robustfer.data.labels import EXPRESSIONS_7, EXPRESSIONS_8, Expression, LabelMap

__all__ = [
    "DATA_ENV",
    "EXPRESSIONS_7",
    "EXPRESSIONS_8",
    "Expression",
    "FERDataset",
    "LabelMap",
    "Sample",
    "build_dataset",
    "get_dataset_info",
    "list_datasets",
    "parse_spec",
    "read_image",
    "register_dataset",
    "register_subset",
]
from robustfer.data.subsets import register_ran_subsets  # noqa: E402

register_ran_subsets()
from robustfer.data import synthetic  # noqa: E402,F401  (generated data needs no root)
