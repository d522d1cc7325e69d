"""What the image and audio sources share in reading `datasets` datasets: loading a Hub split with
errors that say what to do offline, and finding the columns they read: the media column (a
`datasets.Image` or `datasets.Audio` feature) and the label column (classes, or speakers), with
the label names and, for string labels, their ids."""

from __future__ import annotations

from typing import Any

import datasets

from ..common.hub import check_local_or_hub


def load_hub_split(name: str, split: str, load_kwargs: dict[str, Any] | None, local_alternative: str) -> datasets.Dataset:
    """`datasets.load_dataset(name, split=split, **load_kwargs)`; failures name the dataset, the
    split and `local_alternative` (what to use without the network)."""
    check_local_or_hub(name, "dataset")
    try:
        hf_dataset = datasets.load_dataset(name, split=split, **(load_kwargs or {}))
    except Exception as exc:
        if datasets.config.HF_HUB_OFFLINE:
            raise ConnectionError(
                f"dataset {name!r} (split {split!r}) could not be loaded offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE "
                f"is set) and is not in the local cache. Load it once with the network, or use {local_alternative}. "
                f"Cause: {type(exc).__name__}: {exc}"
            ) from exc
        raise ValueError(
            f"dataset {name!r} (split {split!r}) could not be loaded: {type(exc).__name__}: {exc}. Check the name, "
            f"split and network, or use {local_alternative}."
        ) from exc
    if isinstance(hf_dataset, datasets.DatasetDict):  # only when a caller passes split=None
        raise ValueError(f"dataset {name!r} has splits {list(hf_dataset)}; pass one of them as split.")
    return hf_dataset


def find_media_column(hf_dataset: datasets.Dataset, column: str | None, feature_type: type, argument: str) -> str:
    """`column`, checked, or else the first feature of `feature_type`. `argument` names the
    caller's parameter in the messages (e.g. "image_column")."""
    kind = feature_type.__name__  # "Image" or "Audio"
    cast = f"`hf_dataset.cast_column({{name}}, datasets.{kind}(decode=False))`"
    names = list(hf_dataset.features)
    if column is None:
        found = [name for name, feature in hf_dataset.features.items() if isinstance(feature, feature_type)]
        if not found:
            raise ValueError(
                f"the dataset has no {kind.lower()} column (a `datasets.{kind}` feature); its columns are {names}. "
                f"Pass {argument}=..., after casting that column with {cast.format(name='name')} if it holds "
                "file paths or bytes."
            )
        return found[0]
    if column not in hf_dataset.features:
        raise ValueError(f"{argument} {column!r} is not a column of the dataset; its columns are {names}.")
    if not isinstance(hf_dataset.features[column], feature_type):
        raise ValueError(
            f"column {column!r} is {hf_dataset.features[column]}, not a `datasets.{kind}`; cast it with "
            f"{cast.format(name=repr(column))}."
        )
    return column


def find_label_column(hf_dataset: datasets.Dataset, column: str | None, fallbacks: tuple[str, ...], argument: str) -> str | None:
    """`column`, checked; else the first ClassLabel feature; else the first of `fallbacks` present."""
    features = hf_dataset.features
    if column is not None:
        if column not in features:
            raise ValueError(f"{argument} {column!r} is not a column of the dataset; its columns are {list(features)}.")
        return column
    for name, feature in features.items():
        if isinstance(feature, datasets.ClassLabel):
            return name
    return next((name for name in fallbacks if name in features), None)


def label_vocabulary(hf_dataset: datasets.Dataset, column: str | None, argument: str) -> tuple[list[str] | None, dict[str, int] | None]:
    """(names, name -> id) of a label column: a ClassLabel's names; a string column's sorted
    distinct values, so that ids are stable; no names for integer ids."""
    if column is None:
        return None, None
    feature = hf_dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), None
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        names = sorted({name for name in hf_dataset[column] if name is not None})
        return names, {name: i for i, name in enumerate(names)}
    if isinstance(feature, datasets.Value) and "int" in feature.dtype:
        return None, None
    raise ValueError(
        f"column {column!r} is {feature}; expected a ClassLabel, integer or string column. Pass {argument}=... to pick another column."
    )
