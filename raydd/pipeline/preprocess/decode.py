"""The decode pass: tasks decode the rows the plan kept into the preprocessed schema's columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raydd.data.imagefolder.pixels import decode_pair, grey_to_rgb
from raydd.errors import DataError

from .plan import OUT_SPLIT, SourcePlan
from .samples import TASK_CPUS

DECODE_MEMORY = 512 * 1024 * 1024  # per decode task: a worker with its libraries (~400 MB) and a block of pixels


def decode(samples, plan: SourcePlan, image_size: int | None, with_masks: bool):
    """The kept rows of the plan's splits, decoded by tasks (a lazy Ray dataset)."""
    kwargs = {
        "shown": plan.shown, "image_size": image_size, "colour": plan.colour, "masks": with_masks,
        "class_names": list(plan.class_names), "label_index": plan.label_index, "val_ids": plan.val_ids,
        "drop_ids": plan.rejected_ids, "splits": plan.splits, "image_shape": plan.image_shape,
    }
    # The memory reservation (a block of decoded images) also keeps Ray Data from fusing the decoding
    # into the first actor pool: decoding then scales with the cluster's CPUs, not with the model actors.
    return samples.map_batches(_decode, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=None,
                               num_cpus=TASK_CPUS, memory=DECODE_MEMORY)


def _decode(batch: pa.Table, *, shown: str, image_size: int | None, colour: bool, masks: bool,
            class_names: list[str], label_index: dict[str, int], val_ids: pa.Array,
            drop_ids: pa.Array, splits: tuple[str, ...],
            image_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Task: the rows the driver kept, decoded into the preprocessed schema's columns."""
    ids = batch.column("id")
    is_val = pc.is_in(ids, value_set=val_ids).to_numpy(zero_copy_only=False)
    dropped = pc.is_in(ids, value_set=drop_ids).to_numpy(zero_copy_only=False)
    data = batch.to_pydict()
    rows = {"id": [], "split": [], "label": [], "class_name": [], "image": [], "caption": [], "mask": []}
    for i in range(batch.num_rows):
        row_id = data["id"][i]
        if dropped[i]:
            continue
        split = "val" if is_val[i] else OUT_SPLIT[data["split"][i]]
        if split not in splits:
            continue
        try:
            if data["problem"][i] is not None:
                raise DataError(data["problem"][i])
            decoded = decode_pair(data["image"][i], data["image_name"][i], data["mask"][i] if masks else None,
                                  data["mask_name"][i], "RGB" if colour else "L", image_size)
        except DataError as error:  # it passed the scan: the file changed, or storage failed, since
            raise DataError(f"{shown}: {error}") from None
        pixels = decoded.pixels
        pixels = (grey_to_rgb(pixels) if pixels.ndim == 2 else pixels) if colour else pixels[..., None]
        label = label_index[data["label"][i]]
        rows["id"].append(row_id)
        rows["split"].append(split)
        rows["label"].append(label)
        rows["class_name"].append(class_names[label])
        rows["image"].append(pixels)
        rows["caption"].append(data["caption"][i] if data["has_caption"][i] else None)
        rows["mask"].append(decoded.mask)
    out = {
        "id": np.array(rows["id"], dtype=object),
        "split": np.array(rows["split"], dtype=object),
        "label": np.array(rows["label"], dtype=np.int64),
        "class_name": np.array(rows["class_name"], dtype=object),
        "caption": np.array(rows["caption"], dtype=object),
    }
    height, width, channels = image_shape
    out["image"] = np.stack(rows["image"]) if rows["image"] else np.zeros((0, height, width, channels), np.uint8)
    if masks:
        out["mask"] = np.stack(rows["mask"]) if rows["mask"] else np.zeros((0, height, width), np.uint8)
    return out
