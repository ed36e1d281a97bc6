"""Caption-fusion settings compared on the validation split: which fused network reads captions best.

    .venv/bin/python jobs/caption_fusion.py runs/ablation-dm/cluttered-fashion-mnist-dm-cc-ipc10-seed0 \
        --variant plain:fusion.caption_norm=none --variant layer --variant layer-g2:fusion.caption_gain=2 \
        --variant layer-drop0.2:fusion.caption_dropout=0.2 --output docs/benchmarks/caption-fusion-val.md

Each variant trains the run's evaluation protocol's fused networks (eval.models of them, the run's
seed) on the synthetic images and caption embeddings and tests them on the validation split's images
and captions. Nothing here looks at the test split: this is where the fusion defaults are chosen.
"""

from __future__ import annotations

import argparse
import sys


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    return name, [item for item in sets.split(",") if item]


def main(argv: list[str] | None = None) -> None:
    from raydd.config import parse_set
    from raydd.run_inputs import load_splits
    from raydd.modalities import embed_captions
    from raydd.report.tables import emit_table
    from raydd.rundir import RunDir
    from raydd.synthetic import SyntheticSet
    from raydd.workflows import check_compatible, fused_accuracy

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run with caption embeddings (distilled with mm.cc or mm.cm)")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
                        help="a name and the config fields it changes (repeatable)")
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)

    run = RunDir(args.run_dir)
    cfg = run.read_config()
    syn = SyntheticSet.load(run.path)
    if syn.caption_emb is None:
        raise SystemExit(f"error: {args.run_dir} has no caption embeddings (distil with --set mm.cc=true)")
    splits = load_splits(cfg)
    check_compatible(syn, splits, run.path)
    captions = embed_captions(cfg, splits)
    val_t = captions.split("val") if captions is not None else None
    if val_t is None or captions.from_templates:
        raise SystemExit(f"error: {args.run_dir}: the validation split carries no captions to test with")
    val_x, val_y = splits.normalize(splits.val.images), splits.val.labels
    lines = ["| variant | settings | validation image+caption % | per model |", "|---|---|---|---|"]
    for name, sets in map(parse_variant, args.variant):
        variant = run.read_config(parse_set(sets))
        train = (syn.images.detach(), syn.labels, syn.caption_emb)
        result = fused_accuracy(train, splits, variant, (val_x, val_y, val_t), show_progress=False).accuracy
        per_model = ", ".join(f"{100 * a:.2f}" for a in result.per_model)
        lines.append(f"| {name} | {', '.join(sets) or 'defaults'} | {100 * result.mean:.2f} ± "
                     f"{100 * result.std:.2f} | {per_model} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    emit_table(table, args.output)


if __name__ == "__main__":
    main(sys.argv[1:])
