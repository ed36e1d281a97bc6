"""Who is audited: a seeded sample of members, as many non-members, and the shadows' halves of them.

Members are real training images the distillation could see (``members.json``). Non-members come from
the test split: no stage trains on it or selects with it (evaluation only scores on it), so it is real
data of the same distribution that no model in the pipeline has fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raydd.data import DatasetSplits, ImageData
from raydd.errors import RunDirError
from raydd.seeding import generator


@dataclass
class Population:
    """The audited images: the ``n_members`` members first, then the non-members (uint8, as on disk)."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    ids: list[str]
    is_member: torch.Tensor  # bool [N]
    masks: torch.Tensor | None = None  # uint8 [N, 1, H, W] when both splits have masks (mask switches)
    captions: list[str | None] | None = None  # when both splits have captions (caption switches)

    @property
    def n_members(self) -> int:
        return int(self.is_member.sum())

    @property
    def n_nonmembers(self) -> int:
        return len(self.ids) - self.n_members

    def member_positions(self) -> torch.Tensor:
        return torch.nonzero(self.is_member).flatten()

    def subset(self, positions: torch.Tensor, class_names: list[str]) -> ImageData:
        index = positions.tolist()
        captions = None if self.captions is None else [self.captions[i] for i in index]
        masks = None if self.masks is None else self.masks[positions]
        return ImageData(self.images[positions], self.labels[positions], [self.ids[i] for i in index],
                         list(class_names), captions=captions, masks=masks)


def _draw(count: int, size: int, seed: int, key: str) -> torch.Tensor:
    return torch.randperm(count, generator=generator(seed, key))[:size]


def draw_population(splits: DatasetSplits, member_ids: list[str], size: int, seed: int) -> Population:
    """``size`` members from ``member_ids`` and ``size`` test images, both seeded (fewer if either runs out)."""
    position = {image_id: i for i, image_id in enumerate(splits.train.ids)}
    found = [position[i] for i in member_ids if i in position]
    if len(found) < len(member_ids):
        missing = next(i for i in member_ids if i not in position)
        raise RunDirError(f"members.json names {len(member_ids) - len(found)} ids the dataset's train split "
                          f"lacks (e.g. {missing!r}): was the run made with other data or another split seed?")
    known = set(member_ids)
    outsiders = [i for i, image_id in enumerate(splits.test.ids) if image_id not in known]
    n = min(size, len(found), len(outsiders))
    if n < 1:
        raise RunDirError(f"nothing to audit: {len(found)} members and {len(outsiders)} test images available")
    members = torch.tensor(found)[_draw(len(found), n, seed, "audit-members")]
    nonmembers = torch.tensor(outsiders)[_draw(len(outsiders), n, seed, "audit-nonmembers")]
    train, test = splits.train, splits.test
    masks = captions = None
    if train.masks is not None and test.masks is not None:
        masks = torch.cat([train.masks[members], test.masks[nonmembers]])
    if train.captions is not None and test.captions is not None:
        captions = [train.captions[i] for i in members.tolist()] + [test.captions[i] for i in nonmembers.tolist()]
    return Population(
        images=torch.cat([splits.train.images[members], splits.test.images[nonmembers]]),
        labels=torch.cat([splits.train.labels[members], splits.test.labels[nonmembers]]),
        ids=[splits.train.ids[i] for i in members.tolist()] + [splits.test.ids[i] for i in nonmembers.tolist()],
        is_member=torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]),
        masks=masks,
        captions=captions,
    )


def shadow_halves(labels: torch.Tensor, shadows: int, seed: int) -> torch.Tensor:
    """bool [shadows, N]: which examples each shadow trains on.

    Shadows come in complementary pairs of class-stratified halves, so every example is IN for exactly
    half of the paired shadows (and OUT for the rest: each has OUT shadows to compare against) and
    every shadow sees about half of each class.
    """
    if shadows < 2:
        raise ValueError("LiRA needs at least 2 shadows")
    n = labels.shape[0]
    halves = torch.zeros((shadows, n), dtype=torch.bool)
    for pair in range((shadows + 1) // 2):
        g = generator(seed, "audit-halves", pair)
        chosen = torch.zeros(n, dtype=torch.bool)
        for c in torch.unique(labels).tolist():
            rows = torch.nonzero(labels == c).flatten()
            order = rows[torch.randperm(len(rows), generator=g)]
            take = len(rows) // 2 + int(torch.randint(0, 2, (1,), generator=g)) * (len(rows) % 2)
            chosen[order[:take]] = True
        halves[2 * pair] = chosen
        if 2 * pair + 1 < shadows:
            halves[2 * pair + 1] = ~chosen
    return halves


def per_class_sample(labels: torch.Tensor, candidates: torch.Tensor, per_class: int, seed: int, *keys: object
                     ) -> torch.Tensor:
    """Up to ``per_class`` of the ``candidates`` positions of each class (a random real subset)."""
    picks = []
    for c in torch.unique(labels[candidates]).tolist():
        rows = candidates[labels[candidates] == c]
        picks.append(rows[torch.randperm(len(rows), generator=generator(seed, *keys, c))[:per_class]])
    return torch.sort(torch.cat(picks)).values
