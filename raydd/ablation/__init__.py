"""The ablation: base method, each enhancement alone, and all together, under one protocol.

Each (dataset, method, row, seed) is its own run directory under the work directory and, when a
records file is given, one line in it; finished rows are reused, so an ablation can be stopped and
continued, in this session or a later one. The table reports each row over seeds and its difference
to base paired by seed.
"""

from raydd.ablation.records import load_records, protocol_label, record_from_eval, save_records
from raydd.ablation.rows import caption_row_names, images_without_captions, rows_for, run_name, sets_for
from raydd.ablation.run import AblationSpec, run_ablation
from raydd.ablation.table import ablation_table, paired_difference, reading

__all__ = ["AblationSpec", "ablation_table", "caption_row_names", "images_without_captions", "load_records",
           "paired_difference", "protocol_label", "reading", "record_from_eval", "rows_for", "run_ablation", "run_name",
           "save_records", "sets_for"]
