"""Ray job: preprocess a dataset into partitioned Parquet (masks, captions, caption embeddings).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/preprocess.py --source cluttered-fashion-mnist --out s3://bucket/data/cluttered \
        --actors 4 --gpus-per-actor 0.25

Writes out/split=<s>/label=<k>/*.parquet and, last, out/manifest.json; read it back with
`--dataset parquet:<out>` (or just the path) in any other raydd command.
"""

from __future__ import annotations

import argparse
import sys

from raydd.flags import add_address_argument
from raydd.pipeline.cluster import run_entrypoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True,
                        help="fashion-mnist, cluttered-fashion-mnist, mnist, or a path / fsspec URI of an imagefolder "
                             "or of WebDataset shards")
    parser.add_argument("--out", required=True, help="output directory (local path or s3:// / gs:// URI)")
    parser.add_argument("--root", default=None, help="where a named source's files are")
    parser.add_argument("--splits", default="train,val,test", help="comma-separated splits to write")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share carved from train")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    parser.add_argument("--image-size", type=int, default=None, help="resize images to N x N")
    parser.add_argument("--segmenter", default="auto",
                        help="auto | none | threshold[:t] | grabcut[:iters] | annotations | sam:<variant>:<ckpt>")
    parser.add_argument("--captioner", default="none", help="none | <coca model>:<weights file or tag>")
    parser.add_argument("--text-encoder", default="minilm",
                        help="minilm | openclip:<model>[:<weights>] | none")
    parser.add_argument("--allow-missing-captions", action="store_true",
                        help="embed a missing caption as zeros instead of failing")
    parser.add_argument("--actors", type=int, default=1, help="actors per stage")
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--gpus-per-actor", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cache-dir", default=None, help="embedding/mask cache for the actors")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    parser.add_argument("--on-bad-row", choices=("fail", "skip"), default="fail",
                        help="fail at the first unusable row, or skip it and list it in out/rejected.jsonl")
    add_address_argument(parser)
    return parser.parse_args(argv)


def pipeline_kwargs(args: argparse.Namespace) -> dict:
    """The flags as ``preprocess_to_parquet`` arguments ("none" switches a component off)."""
    off = lambda value: None if value.strip().lower() in ("", "none", "off") else value  # noqa: E731
    return {
        "root": args.root,
        "splits": [s.strip() for s in args.splits.split(",") if s.strip()],
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "image_size": args.image_size,
        "segmenter": off(args.segmenter),
        "captioner": off(args.captioner),
        "text_encoder": off(args.text_encoder),
        "require_captions": not args.allow_missing_captions,
        "actors": args.actors,
        "cpus_per_actor": args.cpus_per_actor,
        "gpus_per_actor": args.gpus_per_actor,
        "batch_size": args.batch_size,
        "cache_dir": args.cache_dir,
        "overwrite": args.overwrite,
        "on_bad_row": args.on_bad_row,
        "address": args.address,
        "show_progress": False,  # job logs are files: progress bars would only fill them
    }


def main(argv: list[str] | None = None) -> None:
    from raydd.pipeline.preprocess import preprocess_to_parquet

    args = parse_args(argv)
    # It checks names, output and data first, then connects with init_ray(args.address): under
    # `ray job submit` that joins RAY_ADDRESS, the job's cluster.
    manifest = preprocess_to_parquet(args.source, args.out, **pipeline_kwargs(args))
    counts = ", ".join(f"{split} {c['total']}" for split, c in manifest["counts"].items())
    rejected = (manifest.get("rejected") or {}).get("total", 0)
    print(f"preprocessed {manifest['source']}: {counts}" + (f", {rejected} rejected" if rejected else "")
          + f" -> {args.out}/manifest.json")


if __name__ == "__main__":
    sys.exit(run_entrypoint(main))
