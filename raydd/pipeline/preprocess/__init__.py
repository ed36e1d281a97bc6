"""Ray Data preprocessing: a dataset source -> masks, captions, caption embeddings -> partitioned Parquet.

An imagefolder or a folder of WebDataset shards is read, checked and decoded by Ray Data tasks; the
driver holds their metadata only (``ingest.py``). Other sources are loaded by the driver (as
``load_dataset`` does for every other command), turned into Arrow rows and cut into blocks. Ray Data
then streams the rows through actor pools -- one per stage, each actor loading its model once -- and
its write tasks put the rows under
``out/split=<s>/label=<k>/``. ``out/manifest.json`` is written last, after the row counts on disk were
checked (and, with ``on_bad_row="skip"``, after ``out/rejected.jsonl``), so a directory without one is
unfinished (``raydd.data.parquet`` describes the format).

Everything that can be checked without Ray is checked before Ray starts: component names (against
their registries, loading no model), the output directory, captions when they are required. An error
raised inside an actor reaches the caller as the original ``RayddError``, not as a Ray traceback.
"""

from .checks import SPLITS, Component, describe_captioner, describe_segmenter, describe_text_encoder
from .execute import WRITE_CPUS, check_capacity, data_context, run_pipeline, user_error
from .output import Output
from .rows import BATCHES_PER_BLOCK, conform, cut_blocks, first_missing_caption, split_table
from .run import preprocess_to_parquet
from .stages import CaptionStage, EmbedStage, MaskStage, StagePlan

__all__ = [
    "BATCHES_PER_BLOCK",
    "SPLITS",
    "WRITE_CPUS",
    "CaptionStage",
    "Component",
    "EmbedStage",
    "MaskStage",
    "Output",
    "StagePlan",
    "check_capacity",
    "conform",
    "cut_blocks",
    "data_context",
    "describe_captioner",
    "describe_segmenter",
    "describe_text_encoder",
    "first_missing_caption",
    "preprocess_to_parquet",
    "run_pipeline",
    "split_table",
    "user_error",
]
