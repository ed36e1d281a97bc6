"""A folder source's rows as a Ray dataset of samples: each row's bytes, label and caption, read by tasks.

Every layout (an imagefolder's listed files, WebDataset shards, image Parquet files) becomes the same
sample schema, so the check pass (``scan.py``) and the decode pass (``decode.py``) read all of them
alike. A row whose bytes cannot be read keeps its row and carries the problem; the plan decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raydd.data.image_parquet import file_columns, iter_tables, parse_row
from raydd.data.imagefolder.storage import DatasetRoot
from raydd.data.webdataset import MASK_SUFFIX, parse_sample
from raydd.errors import DataError

TASK_CPUS = 0.5  # read/scan/decode tasks: fractional, so they fit beside the actor pools
PARQUET_ROWS = 256  # image Parquet rows a task holds at once (a Hugging Face file can be gigabytes)

# One sample as the tasks pass it on, whatever the source.
_SAMPLE = pa.schema([
    ("id", pa.string()), ("split", pa.string()), ("order", pa.int64()), ("shard", pa.string()), ("key", pa.string()),
    ("image_name", pa.string()), ("mask_name", pa.string()), ("image", pa.binary()), ("mask", pa.binary()),
    ("label", pa.string()), ("has_caption", pa.bool_()), ("caption", pa.string()), ("problem", pa.string()),
])


def imagefolder_table(metadata: dict[str, pa.Table], folders: Sequence[str]) -> pa.Table:
    """The listed files' metadata (columns of ``parse_metadata_columns``) as samples without bytes."""
    parts = []
    for folder in folders:
        rows = metadata[folder]
        path = pc.binary_join_element_wise(f"{folder}/", rows.column("file_name"), "")
        # The image's path is its id (the tasks name the image by it): one column, not two.
        parts.append(pa.table({
            "id": path,
            "split": pa.repeat(pa.scalar(folder, pa.string()), rows.num_rows),
            "mask_name": pc.binary_join_element_wise(f"{folder}/", rows.column("mask_file_name"), ""),
            "label": rows.column("label"),
            "has_caption": rows.column("has_caption"),
            "caption": rows.column("caption"),
        }))
    table = pa.concat_tables(parts)  # chunks as parsed: no copy into one
    order = pa.array(np.arange(table.num_rows, dtype=np.int64))
    return table.add_column(2, "order", order)


def put_blocks(table: pa.Table, blocks: int) -> list:
    """The table in about ``blocks`` slices, each put into Ray's object store once."""
    import ray

    bounds = np.linspace(0, table.num_rows, max(1, min(blocks, table.num_rows)) + 1).round().astype(int)
    return [ray.put(table.slice(a, b - a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def imagefolder_samples(root: DatasetRoot, blocks: list):
    """A dataset of the listed files' metadata (blocks the driver put once) that tasks fill with bytes."""
    import ray.data

    return ray.data.from_arrow_refs(blocks).map_batches(
        _read_files, fn_kwargs={"root_url": root.url}, batch_format="pyarrow", batch_size=None,
        num_cpus=TASK_CPUS, udf_modifying_row_count=False)


def _read_files(batch: pa.Table, root_url: str) -> pa.Table:
    """Task: the bytes of each row's image and mask; a missing file becomes the row's problem."""
    root = DatasetRoot(root_url)
    images, masks, problems = [], [], []
    for image_name, mask_name in zip(batch.column("id").to_pylist(), batch.column("mask_name").to_pylist()):
        try:
            images.append(root.read(image_name, what="image file"))
            masks.append(None if mask_name is None else root.read(mask_name, what="mask file"))
            problems.append(None)
        except DataError as error:
            images.append(None)
            masks.append(None)
            problems.append(str(error))
    columns = {name: batch.column(name) for name in batch.column_names}
    columns.update(shard=pa.nulls(batch.num_rows, pa.string()), key=pa.nulls(batch.num_rows, pa.string()),
                   image_name=batch.column("id"), image=pa.array(images, pa.binary()), mask=pa.array(masks, pa.binary()),
                   problem=pa.array(problems, pa.string()))
    return pa.table({name: columns[name] for name in _SAMPLE.names}, schema=_SAMPLE)


def webdataset_samples(root: DatasetRoot, shards: Sequence[str]):
    """Read tasks stream each shard (``ShardSamples``) into samples."""
    import ray.data

    from .output import Output
    from .shard_source import ShardSamples

    _, filesystem = Output.parse(root.url).ray_target()  # None locally, else pyarrow's fsspec adapter
    paths = [f"{root.path}/{shard}" for shard in shards]
    return ray.data.read_datasource(ShardSamples(paths, _shard_samples, filesystem=filesystem), num_cpus=TASK_CPUS)


def _shard_samples(shard: str, members: list[tuple[str, dict[str, bytes]]]) -> pa.Table:
    """One shard's (key, {suffix: bytes}) members -> samples; a sample's problem stays with its row."""
    split = shard.split("/", 1)[0]
    samples = []
    for key, suffixes in members:
        values = _blank_sample(f"{shard}:{key}", split, shard, key)
        try:
            row = parse_sample(split, shard, key, suffixes)
            values.update(image_name=row.image_path, mask_name=row.mask_path, label=json.dumps(row.label),
                          has_caption=row.has_caption, caption=row.caption, image=suffixes[row.image_suffix],
                          mask=suffixes.get(MASK_SUFFIX))
        except DataError as error:
            values["problem"] = str(error)
        samples.append(values)
    return _samples_table(samples)


def _blank_sample(row_id: str, split: str, shard: str, key: str) -> dict[str, Any]:
    """A sample before its members are parsed: what a row with a problem still carries."""
    return dict(id=row_id, split=split, order=None, shard=shard, key=key, label=None, has_caption=False, caption=None,
                image=None, mask=None, problem=None, image_name=row_id, mask_name=None)


def _samples_table(samples: list[dict[str, Any]]) -> pa.Table:
    return pa.table({name: pa.array([v[name] for v in samples], _SAMPLE.field(name).type) for name in _SAMPLE.names},
                    schema=_SAMPLE)


def image_parquet_samples(root: DatasetRoot, files: dict[str, str], names: list[str] | None):
    """A dataset of the files (split by file, built by the driver) that tasks read into samples."""
    import ray.data

    table = pa.table({"file": list(files), "split": list(files.values())})
    parts = [table.slice(i, 1) for i in range(table.num_rows)]
    return ray.data.from_arrow(parts).map_batches(
        _parquet_samples, fn_kwargs={"root_url": root.url, "names": names}, batch_format="pyarrow",
        batch_size=None, num_cpus=TASK_CPUS)


def _parquet_samples(batch: pa.Table, root_url: str, names: list[str] | None) -> Iterator[pa.Table]:
    """Task: each file's rows as samples, a stretch at a time; a bad row carries its problem, a bad file fails
    the ingest."""
    root = DatasetRoot(root_url)
    for file, split in zip(batch.column("file").to_pylist(), batch.column("split").to_pylist()):
        for first, table in iter_tables(root, file, PARQUET_ROWS):
            cells = file_columns(table, file, first)
            samples = []
            for i in range(first, first + table.num_rows):
                values = _blank_sample(f"{file}:{i}", split, file, f"{i:012d}")  # the key sorts rows numerically
                try:
                    row, image, mask = parse_row(split, file, i, cells, names)
                    values.update(label=json.dumps(row.label), has_caption=row.has_caption, caption=row.caption,
                                  image=image, mask=mask, mask_name=row.mask_path)
                except DataError as error:
                    values["problem"] = str(error)
                samples.append(values)
            yield _samples_table(samples)
