"""The check pass: tasks decode and check every sample and send the driver one small record per row.

The record holds what the plan needs and nothing that follows from other columns: the row's label and
caption state, its size and colour kind, its pixel sums, or the problem that makes it unusable.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from raydd.data.imagefolder.pixels import decode_pair
from raydd.data.stats import pixel_sums
from raydd.errors import DataError

from .samples import TASK_CPUS

# What the check pass keeps of each row (typed: a block whose rows all leave a column out still has its type).
_SCANNED = pa.schema([
    ("id", pa.string()), ("split", pa.string()), ("order", pa.int64()), ("shard", pa.string()), ("key", pa.string()),
    ("image_name", pa.string()), ("image_suffix", pa.string()), ("has_mask", pa.bool_()), ("label", pa.string()),
    ("has_caption", pa.bool_()), ("caption_empty", pa.bool_()), ("problem", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("grey", pa.bool_()), ("sums", pa.list_(pa.int64())), ("squares", pa.list_(pa.int64())),
])



def scan(samples, image_size: int | None) -> pa.Table:
    """The check records of a dataset of samples, collected in the driver (in scan order)."""
    dataset = samples.map_batches(_scan, fn_kwargs={"image_size": image_size}, batch_format="pyarrow",
                                  batch_size=None, num_cpus=TASK_CPUS, udf_modifying_row_count=False)
    return _collect(dataset)


def _scan(batch: pa.Table, image_size: int | None) -> pa.Table:
    """Task: decode and check each sample; keep only what the driver needs to decide."""
    out: dict[str, list] = {name: [] for name in _SCANNED.names}
    data = batch.to_pydict()
    for i in range(batch.num_rows):
        problem, size, grey, sums, squares = data["problem"][i], None, None, None, None
        if problem is None:
            try:
                decoded = decode_pair(data["image"][i], data["image_name"][i], data["mask"][i], data["mask_name"][i],
                                      None, image_size)
                size, grey = decoded.size, decoded.grey
                sums, squares = pixel_sums(decoded.pixels)
            except DataError as error:
                problem = str(error)
        caption = data["caption"][i]
        for name in ("split", "order", "shard", "key", "label", "has_caption"):
            out[name].append(data[name][i])
        # The driver keeps this table for every row: what follows from other columns is left out (null).
        row_id, image_name = data["id"][i], data["image_name"][i]
        out["id"].append(None if row_id == shard_member_id(data["shard"][i], data["key"][i]) else row_id)
        suffix = image_name[len(row_id):] if image_name is not None and image_name.startswith(row_id) else None
        out["image_name"].append(None if suffix is not None else image_name)
        out["image_suffix"].append(suffix or None)
        out["has_mask"].append(data["mask_name"][i] is not None)
        out["caption_empty"].append(caption is None or not caption.strip())
        out["problem"].append(problem)
        out["width"].append(None if size is None else size[0])
        out["height"].append(None if size is None else size[1])
        out["grey"].append(grey)
        out["sums"].append(sums)
        out["squares"].append(squares)
    return pa.table(out, schema=_SCANNED)


def shard_member_id(shard: str | None, key: str | None) -> str | None:
    """A WebDataset member's id, shard:key (None for a row without a shard)."""
    return None if shard is None or key is None else f"{shard}:{key}"


def scanned_ids(scanned: pa.Table, rows: pa.Array) -> pa.Array:
    """The ids of some scanned rows, the left-out shard:key ones rebuilt."""
    picked = scanned.select(["id", "shard", "key"]).take(rows)
    members = pc.binary_join_element_wise(picked.column("shard"), picked.column("key"), ":")
    return pc.coalesce(picked.column("id"), members).combine_chunks()


def _collect(dataset) -> pa.Table:
    import ray

    tables = [t for t in ray.get(dataset.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
