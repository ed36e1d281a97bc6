"""Folder sources (imagefolder, WebDataset shards, image Parquet) read, checked and decoded by Ray Data tasks.

The driver never decodes an image and never holds pixels: it holds the rows' metadata only.

1. **Scan** (``scan.py``). Tasks read every sample (``samples.py``: an imagefolder's files listed in its
   ``metadata.jsonl``, which the driver reads and checks first; a WebDataset's shards streamed by Ray
   Data read tasks; image Parquet files one per task, the driver reading one file's footer for the
   class names), decode and check it, and send back one small record per row.
2. **Plan** (``plan.py``). The driver, from those records alone, decides what ``load_dataset`` decides
   in one process, on the same rows in the same order, so both give the same dataset.
3. **Decode** (``decode.py``). Tasks read and decode the rows again into the preprocessed schema, and
   the pipeline streams them through the model stages to Parquet.

Images are decoded twice (scan and decode) so that nothing is written before every row was checked,
and so that the validation split and the counts are known before the first row is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from raydd.data.image_parquet import SOURCE_NAME as IMAGE_PARQUET, read_schema_names, split_files
from raydd.data.imagefolder.loader import VALIDATION_SPLIT, listed_classes, open_root, split_folders
from raydd.data.imagefolder.metadata import METADATA_FILE, MetadataRow, parse_metadata_columns
from raydd.data.registry import SourceRequest
from raydd.data.webdataset import SOURCE_NAME as WEBDATASET, shard_paths
from raydd.errors import ConfigError, DataError

from .columns import check_label_columns, encode_labels
from .decode import decode
from .plan import OUT_SPLIT, SourcePlan, plan_source
from .samples import image_parquet_samples, imagefolder_samples, imagefolder_table, put_blocks, webdataset_samples
from .scan import scan

ON_BAD_ROW = ("fail", "skip")


def check_on_bad_row(value: str) -> str:
    if value not in ON_BAD_ROW:
        raise ConfigError(f"on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got {value!r}")
    return value


class FolderSource:
    """An imagefolder or WebDataset folder, on its way through Ray: scan, plan, decode."""

    def __init__(self, kind: str, request: SourceRequest, on_bad_row: str) -> None:
        self.kind = kind
        self.request = request
        self.on_bad_row = check_on_bad_row(on_bad_row)
        self.root = open_root(request, kind)
        self.shown = f"{kind} {self.root.display}"
        self.name = f"{kind}:{self.root.display}"
        self.folders: list[str] = []
        self.listed: list[str] | None = None
        self.metadata: dict[str, pa.Table] = {}  # imagefolder: split folder -> parse_metadata_columns
        self.shards: list[str] = []
        self.files: dict[str, str] = {}  # image Parquet: file -> split
        self.class_label: list[str] | None = None  # image Parquet: the ClassLabel's names
        self._sample_blocks: list | None = None  # imagefolder: the samples table's blocks in Ray's object store
        with self._named():
            self.listed = listed_classes(self.root)
            if kind == IMAGE_PARQUET:
                by_split = split_files(self.root)
                self.folders = list(by_split)
                self.files = {file: split for split, files in by_split.items() for file in files}
                self.shards = list(self.files)
                # A Hugging Face ClassLabel names the classes (unless classes.json does): from one footer.
                self.class_label = read_schema_names(self.root, self.shards[0])
                self.listed = self.listed or self.class_label
            elif kind == WEBDATASET:
                self.folders = split_folders(self.root)
                self.shards = [s for split in self.folders for s in shard_paths(self.root, split)]
            else:
                self.folders = split_folders(self.root)
                # The metadata is read and checked here, as load_dataset does, before Ray starts: as columns.
                self.metadata = {folder: self._read_metadata(folder) for folder in self.folders}
                self._check_metadata()

    def _read_metadata(self, folder: str) -> pa.Table:
        if not self.root.is_dir(folder):
            raise DataError(f"missing {folder}/ folder (expected {folder}/{METADATA_FILE} and its images)")
        return parse_metadata_columns(folder, self.root.read(f"{folder}/{METADATA_FILE}", what="metadata file"))

    def _check_metadata(self) -> None:
        metadata = self.metadata

        def where(folder: str, i: int) -> str:
            rows = metadata[folder]
            file_name = rows.column("file_name")[i].as_py()
            return f"{folder}/{METADATA_FILE} line {rows.column('line')[i].as_py()} ({folder}/{file_name})"

        check_label_columns(*encode_labels({f: metadata[f].column("label") for f in self.folders}),
                            {f: pc.is_valid(metadata[f].column("mask_file_name")).to_numpy(zero_copy_only=False)
                             for f in self.folders},
                            self.listed, where, MetadataRow.MASK_FIELD)

    def _named(self):
        """DataErrors raised here say once which dataset they are about (as load_dataset's do)."""
        shown = self.shown

        class _Prefix:
            def __enter__(self):
                return self

            def __exit__(self, kind, error, traceback):
                if isinstance(error, DataError) and not str(error).startswith(shown):
                    raise DataError(f"{shown}: {error}") from None
                return False

        return _Prefix()

    def _before_the_scan(self) -> None:
        if self._sample_blocks is not None:  # the metadata went into Ray's object store with the samples
            raise RuntimeError("an imagefolder's metadata answers only before its samples are put into Ray")

    def has_any_caption(self) -> bool:
        """Before Ray: whether an imagefolder's metadata gives any row a caption (a WebDataset's: not known yet)."""
        self._before_the_scan()
        return any(pc.any(rows.column("has_caption")).as_py() for rows in self.metadata.values())

    def first_missing_caption(self, splits: Sequence[str]) -> str | None:
        """Before Ray: an imagefolder row (of the folders feeding ``splits``) without a caption."""
        self._before_the_scan()
        wanted = {folder for folder, out in OUT_SPLIT.items() if out in splits}
        if "val" in splits and VALIDATION_SPLIT not in self.folders:
            wanted.add("train")
        for folder in self.folders:
            if folder not in wanted or folder not in self.metadata:
                continue
            for batch in self.metadata[folder].select(["file_name", "has_caption", "caption"]).to_batches(4096):
                for file_name, has_caption, caption in zip(*(batch.column(i).to_pylist() for i in range(3))):
                    if not has_caption or caption is None or not caption.strip():
                        return f"{folder}/{file_name}"
        return None

    def samples(self, blocks: int):
        """The source's rows as a Ray dataset of samples (bytes included)."""
        if self.kind == WEBDATASET:
            return webdataset_samples(self.root, self.shards)
        if self.kind == IMAGE_PARQUET:
            return image_parquet_samples(self.root, self.files, self.class_label)
        # Both passes read the same blocks: put once (a second put would count again in the driver's memory).
        if self._sample_blocks is None:
            self._sample_blocks = put_blocks(imagefolder_table(self.metadata, self.folders), blocks)
            self.metadata = {}  # its checks ran before Ray started; the blocks now hold what the passes need
        return imagefolder_samples(self.root, self._sample_blocks)

    # -- pass 1 and the plan

    def scan(self, blocks: int, show_progress: bool) -> pa.Table:
        from .execute import data_context, ray_errors

        with data_context(show_progress), ray_errors(self.shown):
            return scan(self.samples(blocks), self.request.image_size)

    def plan(self, scanned: pa.Table, splits: Sequence[str]) -> SourcePlan:
        with self._named():
            return plan_source(self, scanned, splits)

    # -- pass 2

    def decoded(self, plan: SourcePlan, with_masks: bool, blocks: int):
        """The kept rows of the chosen splits, decoded by tasks into the preprocessed schema."""
        return decode(self.samples(blocks), plan, self.request.image_size, with_masks)


def rejected_lines(rejected: Sequence[dict[str, str]]) -> str:
    return "".join(json.dumps({"file": r["file"], "reason": r["reason"], "id": r["id"], "split": r["split"]}) + "\n"
                   for r in rejected)


__all__ = ["FolderSource", "ON_BAD_ROW", "SourcePlan", "check_on_bad_row", "rejected_lines"]
