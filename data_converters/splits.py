"""One split vocabulary for every converter: `train`, `validation`, `test`.

A converted split is written as `<split>.jsonl` and registered as `<name>_<split>` with one of these three names,
whatever the source calls it, so recipes and `vlmr eval` name the same split the same way for every dataset.
`--split` also accepts the usual short forms (`val`, `dev`, ...) and the source's own names (FER2013's
`PublicTest`, ...), matched without regard to case.

A converter whose raw data holds several splits in one input (FER2013's `Usage` column, VQA-RAD's
`phrase_type`, PathVQA's `<split>-*.parquet` shards) declares `SOURCE_SPLITS`: our name -> the source's name, for
the splits the source has; any other split is an error naming those. A converter without it reads one split per
input file (the file given to `--input` is the split), and `--split` only names the output.
"""

from __future__ import annotations

from types import ModuleType

SPLITS = ("train", "validation", "test")
ALIASES = {"training": "train", "val": "validation", "valid": "validation", "dev": "validation",
           "eval": "validation", "testing": "test"}


def source_splits(converter: ModuleType) -> dict[str, str] | None:
    """Our split name -> the source's own name, for a converter that selects splits inside one input; else None."""
    return getattr(converter, "SOURCE_SPLITS", None)


def resolve(split: str, converter: ModuleType) -> str:
    """Our name of `split` (ours, an alias or the source's own name, any case); ValueError naming the splits
    that exist."""
    own = source_splits(converter)
    names = {name.lower(): name for name in SPLITS}
    names.update(ALIASES)
    names.update({source.lower(): ours for ours, source in (own or {}).items()})
    found = names.get(split.lower())
    if found is None or own is not None and found not in own:
        raise ValueError(f"unknown split {split!r}: this source has {describe(converter)}")
    return found


def describe(converter: ModuleType) -> str:
    """The splits `--split` takes, each with the source's own name: "train (Training) | validation (PublicTest)"."""
    own = source_splits(converter)
    if own is None:
        return " | ".join(SPLITS) + " (the --input file is the split; this only names the output)"
    return " | ".join(ours if source == ours else f"{ours} ({source})" for ours, source in own.items())
