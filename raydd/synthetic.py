"""The synthetic set: one object that owns its tensors, their initialisation, and save/load.

On disk a set is ``synthetic.safetensors`` (tensors only, no pickle) plus ``metadata.json`` holding
everything needed to evaluate it with no other input: normalisation, image size, class names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from raydd.artifacts import METADATA, SYNTHETIC
from raydd.errors import ArtifactError, RunDirError
from raydd.realpool import RealPool
from raydd.seeding import generator
from raydd.storage import read_bytes, read_safetensors, write_bytes_atomic

FORMAT = "raydd-synthetic/1"


@dataclass
class SyntheticSet:
    images: torch.Tensor  # float32 [K*ipc, C, H, W] in the normalised space; class c owns rows c*ipc..(c+1)*ipc-1
    labels: torch.Tensor  # int64 [K*ipc]
    ipc: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    init_ids: list[str] = field(default_factory=list)  # real images copied in at init ("" for noise)
    caption_emb: torch.Tensor | None = None  # [K*ipc, d] when captions are on
    learned_lr: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # method, switches, dataset, ...

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.images.shape[2], self.images.shape[3])

    def class_rows(self, c: int) -> slice:
        return slice(c * self.ipc, (c + 1) * self.ipc)

    def rows_of(self, classes: list[int]) -> torch.Tensor:
        return torch.cat([torch.arange(c * self.ipc, (c + 1) * self.ipc) for c in classes])

    # -- initialisation -------------------------------------------------------------------------
    @classmethod
    def initialise(
        cls,
        pool: RealPool,
        *,
        ipc: int,
        init: str,
        seed: int,
        class_names: list[str],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        classes: list[int] | None = None,
        isolate_fill: str | None = None,
        formation: int = 1,
        choice: str = "random",
        choice_emb: torch.Tensor | None = None,
    ) -> "SyntheticSet":
        """``real``: distinct random real images of each class; ``noise``: standard normal pixels.

        With ``classes`` only those classes are initialised (the others stay zero): a worker that owns
        a shard of the classes gets exactly the rows a single process would have given them.
        ``isolate_fill`` (mask-aware init) starts from the object-isolated images instead. Caption
        embeddings, when the pool has them, start from the captions of the initial images (the
        class mean under noise init). With ``formation`` f > 1 (multi-formation) each stored image
        packs f² real images (``raydd.formation.encode``); ``init_ids`` then lists the decoded images'
        sources, f² per stored image, and a stored image's caption is the mean of its f² captions.
        ``choice`` picks the real images (``raydd.init_choice``: random, or by the captions in
        ``choice_emb``, aligned with the pool's rows).
        """
        from raydd.formation import encode
        from raydd.init_choice import choose_init_rows

        per_image = formation * formation
        k = len(class_names)
        shape = pool.images.shape[1:]
        labels = torch.arange(k).repeat_interleave(ipc)
        owned = set(range(k) if classes is None else classes)
        if init == "noise":
            images = torch.stack([
                torch.randn((ipc, *shape), generator=generator(seed, "init-noise", c)) if c in owned
                else torch.zeros((ipc, *shape)) for c in range(k)
            ]).reshape(k * ipc, *shape)
            init_ids = [""] * (k * ipc * per_image)
        elif init == "real":
            chunks, init_ids, chosen = [], [], {}
            for c in range(k):
                if c not in owned:
                    chunks.append(torch.zeros((ipc, *shape)))
                    init_ids.extend([""] * (ipc * per_image))
                    continue
                index = chosen[c] = choose_init_rows(pool, c, ipc * per_image, seed, choice, choice_emb)
                if len(index) < ipc * per_image:
                    need = f"ipc={ipc}" + (f" x {per_image} (dm.formation={formation})" if per_image > 1 else "")
                    raise RunDirError(
                        f"class {class_names[c]!r} has {len(index)} training images, fewer than {need}"
                    )
                picked = pool.images[index]
                if isolate_fill is not None:
                    from raydd.masking import isolate

                    if pool.masks is None:
                        raise RunDirError("mask-aware init needs masks, and the training data has none")
                    picked = isolate(picked, pool.masks[index], isolate_fill, generator(seed, "init-fill", c,
                                                                                      device=picked.device))
                chunks.append(encode(picked, formation).cpu())
                init_ids.extend(pool.ids[i] for i in index.tolist())
            images = torch.cat(chunks)
        else:
            raise ValueError(f"unknown init {init!r}")
        caption_emb = None
        if pool.caption_emb is not None:
            d = pool.caption_emb.shape[1]
            caption_emb = torch.zeros(k * ipc, d)
            for c in sorted(owned):
                rows = slice(c * ipc, (c + 1) * ipc)
                if init == "real":
                    index = chosen[c]
                    caption_emb[rows] = pool.caption_emb[index].cpu().reshape(ipc, per_image, d).mean(1)
                else:
                    caption_emb[rows] = pool.caption_emb[pool.class_indices[c].to(pool.caption_emb.device)].mean(0).cpu()
        return cls(
            meta={"formation": formation} if formation > 1 else {},
            caption_emb=caption_emb,
            images=images.float().contiguous(),
            labels=labels,
            ipc=ipc,
            class_names=list(class_names),
            mean=tuple(mean),
            std=tuple(std),
            init_ids=init_ids,
        )

    # -- persistence ----------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"images": self.images.detach().float().cpu().contiguous(), "labels": self.labels.cpu()}
        if self.caption_emb is not None:
            out["caption_emb"] = self.caption_emb.detach().float().cpu().contiguous()
        if self.learned_lr is not None:
            out["learned_lr"] = self.learned_lr.detach().float().cpu().reshape(-1)
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "ipc": self.ipc,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "normalisation": {"mean": list(self.mean), "std": list(self.std), "space": "normalised"},
            "label_type": "hard",
            "init_ids": self.init_ids,
            **self.meta,
        }

    def save(self, run_dir: str) -> None:
        write_bytes_atomic(f"{run_dir}/{SYNTHETIC}", save_safetensors(self.tensors()))
        write_bytes_atomic(f"{run_dir}/{METADATA}", json.dumps(self.metadata(), indent=2).encode())

    @classmethod
    def load(cls, run_dir: str) -> "SyntheticSet":
        """The set in ``run_dir``; a missing, cut or foreign file raises a RunDirError naming it."""
        remedy = _remedy(run_dir)
        try:
            meta = _read_metadata(f"{run_dir}/{METADATA}", remedy)
            tensors, _ = read_safetensors(f"{run_dir}/{SYNTHETIC}", "raydd synthetic set", remedy)
        except FileNotFoundError as exc:
            raise RunDirError(f"{run_dir}: no synthetic set here ({exc.filename or exc} is missing)") from None
        if "images" not in tensors or "labels" not in tensors:
            raise ArtifactError(f"{run_dir}/{SYNTHETIC}", "raydd synthetic set",
                                "no images or labels tensor", remedy)
        known = {"format", "ipc", "num_classes", "class_names", "channels", "image_size",
                 "normalisation", "label_type", "init_ids"}
        return cls(
            images=tensors["images"],
            labels=tensors["labels"],
            ipc=meta["ipc"],
            class_names=meta["class_names"],
            mean=tuple(meta["normalisation"]["mean"]),
            std=tuple(meta["normalisation"]["std"]),
            init_ids=meta.get("init_ids", []),
            caption_emb=tensors.get("caption_emb"),
            learned_lr=tensors.get("learned_lr"),
            meta={k: v for k, v in meta.items() if k not in known},
        )

    @property
    def formation(self) -> int:
        return int(self.meta.get("formation", 1))

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(images, labels, caption embeddings) as a network trained on the set sees them.

        The stored tensors themselves, except under multi-formation, where each stored image decodes
        into formation² images that share its label and caption.
        """
        from raydd.formation import decode, decoded_labels

        f = self.formation
        images = decode(self.images.detach().float(), f)
        captions = self.caption_emb.repeat_interleave(f * f, dim=0) if self.caption_emb is not None else None
        return images, decoded_labels(self.labels, f), captions

    def denormalized(self) -> torch.Tensor:
        return self.denormalize(self.images)

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images of this set's normalised space back in [0, 1] (the stored or the decoded ones)."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.detach().cpu() * std + mean).clamp(0, 1)


def read_metadata(run_dir: str) -> dict[str, Any]:
    """The set's metadata.json, checked as ``SyntheticSet.load`` checks it, without reading the images."""
    try:
        return _read_metadata(f"{run_dir}/{METADATA}", _remedy(run_dir))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir}: no synthetic set here ({run_dir}/{METADATA} is missing)") from None


def _remedy(run_dir: str) -> str:
    return f"delete it and rerun the distillation that wrote it (raydd distill --resume --out {run_dir})"


def _read_metadata(path: str, remedy: str) -> dict[str, Any]:
    """metadata.json as a set's loader needs it: this format, with the fields it reads of the right shape."""
    try:
        meta = json.loads(read_bytes(path))
    except ValueError as exc:
        raise ArtifactError(path, "raydd metadata file", str(exc), remedy) from None
    if not isinstance(meta, dict):
        raise ArtifactError(path, "raydd metadata file", f"a JSON {type(meta).__name__}, not an object", remedy)
    if meta.get("format") != FORMAT:
        raise ArtifactError(path, "raydd metadata file", f"format {meta.get('format')!r}, expected {FORMAT!r}", remedy)
    norm = meta.get("normalisation")
    if not (isinstance(meta.get("ipc"), int) and isinstance(meta.get("class_names"), list)
            and isinstance(norm, dict) and isinstance(norm.get("mean"), list) and isinstance(norm.get("std"), list)):
        raise ArtifactError(path, "raydd metadata file", "ipc, class_names or normalisation missing or malformed",
                            remedy)
    return meta
