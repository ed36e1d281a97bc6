"""The real-feature bank: DM's real side computed once, so an iteration costs only the synthetic pass.

Classic DM spends most of an iteration embedding ``batch_real`` real images per class through a fresh
network. The bank stores, for each of M pool networks x R Siamese augmentation draws, the mean
embedding of ``dm.bank_real`` real images of each owned class under that draw. An iteration picks
bank entries (seeded by the iteration), applies the entry's stored draw to the synthetic images and
matches their class means against the stored real means: the DM objective, with a larger real sample
per mean than a batch holds and no real forward pass. With ``dm.refresh_every = K`` the bank is rebuilt
every K iterations from new networks, draws and real images ("generation" ``iteration // K``).

Everything is per class and seeded by (run seed, generation, network, draw, class), so a worker owning
a shard of the classes stores exactly the rows of the whole-run bank, and a resume rebuilds the bank
it had. The object-isolated means of masked feature alignment, the caption means of caption
concatenation and the caption-weighted targets of caption matching live in the same bank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from raydd.augment import DSA, AugDraw
from raydd.config import DMConfig, MultiModalConfig
from raydd.errors import ConfigError
from raydd.masking import isolate
from raydd.methods.losses import class_means
from raydd.models.init import channels_last
from raydd.realpool import RealPool
from raydd.seeding import generator


@dataclass
class BankGeneration:
    generation: int
    networks: list[torch.nn.Module]
    draws: list[list[AugDraw]]  # [M][R]
    means: torch.Tensor  # [M, R, K_owned, D]
    isolated_means: torch.Tensor | None = None  # [M, R, K_owned, D] (MFA)
    caption_means: torch.Tensor | None = None  # [M, R, K_owned, d_t] (CC)
    cm_targets: torch.Tensor | None = None  # [M, R, N_syn_owned, D] (CM; synthetic captions fixed)


def bank_bytes(cfg: DMConfig, mm: MultiModalConfig, num_classes: int, feature_dim: int,
               syn_per_class: int, caption_dim: int = 0) -> int:
    """Bytes of one bank generation over all classes (what one process owning every class holds)."""
    per_entry = num_classes * feature_dim * (2 if mm.mfa else 1)
    if mm.cc:
        per_entry += num_classes * caption_dim
    if mm.cm:
        per_entry += num_classes * syn_per_class * feature_dim
    return cfg.networks * cfg.draws * per_entry * 4


def memory_limit_bytes(cfg: DMConfig) -> int:
    if cfg.max_bank_gb is not None:
        return int(cfg.max_bank_gb * 2**30)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2)


def check_bank_memory(cfg: DMConfig, mm: MultiModalConfig, num_classes: int, feature_dim: int,
                      syn_per_class: int, caption_dim: int = 0) -> int:
    """Refuse, with the figure, a bank that would not fit; returns its size in bytes."""
    size = bank_bytes(cfg, mm, num_classes, feature_dim, syn_per_class, caption_dim)
    limit = memory_limit_bytes(cfg)
    if size > limit:
        raise ConfigError(
            f"the real-feature bank would take {size / 2**30:.2f} GiB (dm.networks {cfg.networks} x dm.draws "
            f"{cfg.draws} x {num_classes} classes x {feature_dim} features x 4 bytes"
            f"{' x 2 for masked feature alignment' if mm.mfa else ''}), over the limit of {limit / 2**30:.2f} GiB; "
            "lower dm.networks or dm.draws, or raise dm.max_bank_gb")
    return size


def check_bank_switches(mm: MultiModalConfig) -> None:
    if mm.mfa and mm.mfa_level != "input":
        raise ConfigError("dm.bank stores input-level masked feature alignment only; set mm.mfa_level=input")
    if mm.cm and mm.learn_caption_emb:
        raise ConfigError("dm.bank stores caption matching's targets for fixed synthetic captions; "
                          "unset mm.learn_caption_emb or dm.bank")


def build_generation(
    generation: int,
    networks: list[torch.nn.Module],
    cfg: DMConfig,
    mm: MultiModalConfig,
    real: RealPool,
    classes: list[int],
    num_classes: int,
    image_size: tuple[int, int],
    dsa: DSA | None,
    seed: int,
    chunk: int | None,
    syn_captions: torch.Tensor | None = None,
    syn_group: torch.Tensor | None = None,
) -> BankGeneration:
    """Embed the real images of ``classes`` through every (network, draw) of one generation."""
    from raydd.methods.dm import in_chunks  # the chunked real pass DM already uses

    device = real.images.device
    owned = torch.tensor(classes, device=device)
    k = len(classes)
    means, isolated_means, caption_means, cm_targets, draws = [], [], [], [], []
    nets = [channels_last(net) for net in networks]
    for m, net in enumerate(nets):
        per_net, iso_net, cap_net, cm_net, net_draws = [], [], [], [], []
        for r in range(cfg.draws):
            index, group = real.sample_indices(classes, cfg.bank_real, seed, "bank-real", generation, m, r)
            x = real.images[index]
            masks = real.masks[index] if mm.mfa else None
            iso = isolate(x, masks, mm.fill, generator(seed, "bank-fill", generation, m, r, device=device)) \
                if mm.mfa else None
            draw = None
            if dsa is not None:
                draw = dsa.draw(num_classes, image_size, generator(seed, "bank-dsa", generation, m, r, device=device))
                x = dsa.apply(x, draw, groups=owned[group])
                if iso is not None:
                    iso = dsa.apply(iso, draw, groups=owned[group])
            net_draws.append(draw)
            with torch.no_grad():
                features = in_chunks(net.embed, x, chunk)
                per_net.append(class_means(features, group, k))
                if iso is not None:
                    iso_net.append(class_means(in_chunks(net.embed, iso, chunk), group, k))
                if mm.cc:
                    cap_net.append(class_means(real.caption_emb[index], group, k))
                if mm.cm:
                    from raydd.methods.losses import caption_matching_targets

                    cm_net.append(caption_matching_targets(syn_captions, syn_group, features,
                                                           real.caption_emb[index], group, mm.tau))
        means.append(torch.stack(per_net))
        draws.append(net_draws)
        if iso_net:
            isolated_means.append(torch.stack(iso_net))
        if cap_net:
            caption_means.append(torch.stack(cap_net))
        if cm_net:
            cm_targets.append(torch.stack(cm_net))
    stack = lambda parts: torch.stack(parts) if parts else None  # noqa: E731
    return BankGeneration(generation, nets, draws, torch.stack(means), stack(isolated_means), stack(caption_means),
                          stack(cm_targets))
