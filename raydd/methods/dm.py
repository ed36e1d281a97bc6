"""Distribution matching (DM) and its multi-modal enhancements.

Each iteration draws a fresh randomly initialised network with frozen weights; the base loss is
sum_c || mean phi(A(x_c)) - mean phi(A(s_c)) ||^2 with the same augmentation draw A for the real and
the synthetic images of class c. All owned classes go through the network in one batched pass.

Enhancements (docs/method.md): caption concatenation matches [phi ; alpha P t] (P a random projection
drawn with the network), caption matching pulls each synthetic feature toward caption-weighted real
features, masked feature alignment blends in the loss against object-isolated real images.
"""

from __future__ import annotations

import math

import torch

from raydd.config import DMConfig
from raydd.errors import ConfigError, DataError
from raydd.formation import check_factor, decode
from raydd.masking import classes_without_objects, isolate, mask_on_feature_map
from raydd.methods.base import Distiller, register_method
from raydd.methods.losses import (
    blend, caption_matching_distance, caption_matching_loss, class_means, masked_average, mean_feature_distance,
    object_class_means,
)
from raydd.models.init import channels_last
from raydd.seeding import derive_seed, generator


@register_method("dm")
class DMDistiller(Distiller):
    """DM; its ``dm`` section bounds its memory (``real_chunk``) and switches on the fast DM family (bank,
    trained pool, multi-formation)."""

    default_lr_img = 1.0
    default_iterations = 20000
    config_section = "dm"
    section_type = DMConfig

    def __init__(self, *args, model_pool=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fast: DMConfig = self.section
        self.factor = self.fast.formation
        check_factor(self.factor, self.syn.image_size)
        if self.syn.meta.get("formation", 1) != self.factor:
            raise ConfigError(f"dm.formation={self.factor} but the synthetic set was initialised with "
                              f"formation {self.syn.meta.get('formation', 1)}")
        if self.mm.mfa and self.mm.mfa_level == "feature":
            check_object_masks(self.pool.masks, self.pool.class_indices, self.syn.class_names)
        self.bank = None
        self.network_pool = None
        if self.fast.bank:
            from raydd.methods.feature_bank import check_bank_switches
            from raydd.methods.model_pool import NetworkPool

            check_bank_switches(self.mm)
            if has_batch_statistics(self.net_spec.build(0, torch.device("cpu"))):
                raise ConfigError(f"dm.bank with {self.cfg.model}: batch-norm statistics would mix the classes of "
                                  "a stored draw; use a network without batch norm (convnet3)")
            self.network_pool = NetworkPool(self.fast, self.net_spec, self.seed, self.device, trained=model_pool)

    def make_optimizer(self, params, lr):
        if self.section.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr)
        return super().make_optimizer(params, lr)

    def _set_learning_rate(self, iteration: int) -> None:
        """The schedule as a pure function of the iteration, so a resume needs no scheduler state."""
        if self.fast.schedule == "cosine":
            scale = 0.5 * (1.0 + math.cos(math.pi * iteration / max(1, self.iterations)))
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * scale

    def decoded_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The owned synthetic images as the network sees them, and each one's position in ``classes``."""
        per_class = self.syn.ipc * self.factor * self.factor
        group = torch.arange(len(self.classes), device=self.device).repeat_interleave(per_class)
        return decode(self.own_images(), self.factor), group

    def decoded_captions(self) -> torch.Tensor:
        return self.own_captions().repeat_interleave(self.factor * self.factor, dim=0)

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        self._set_learning_rate(iteration)
        if self.fast.bank:
            return self._bank_step(iteration)
        return self._classic_step(iteration)

    # -- the bank ---------------------------------------------------------------------------------
    def _generation(self, iteration: int):
        from raydd.methods.feature_bank import build_generation

        g = iteration // self.fast.refresh_every if self.fast.refresh_every else 0
        if self.bank is None or self.bank.generation != g:
            syn_captions = syn_group = None
            if self.mm.cm:
                _, syn_group = self.decoded_images()
                syn_captions = self.decoded_captions().detach()
            self.bank = None  # free the previous generation before building the next
            self.bank = build_generation(g, self.network_pool.networks(g), self.fast, self.mm, self.pool,
                                         self.classes, self.syn.num_classes, self.syn.image_size, self.dsa,
                                         self.seed, self.fast.real_chunk, syn_captions, syn_group)
        return self.bank

    def _bank_step(self, iteration: int) -> dict[str, torch.Tensor]:
        mm, fast = self.mm, self.fast
        bank = self._generation(iteration)
        pick = torch.randperm(fast.networks * fast.draws, generator=generator(self.seed, "bank-entry", iteration))
        syn_all, syn_group = self.decoded_images()
        owned = torch.tensor(self.classes, device=self.device)
        k = len(self.classes)
        terms: dict[str, torch.Tensor] = {}

        def add(name: str, value: torch.Tensor) -> None:
            terms[name] = terms.get(name, 0.0) + value / fast.entries_per_step

        if mm.cc:  # one projection per iteration, shared by its entries: the synthetic side is computed once
            u = self.decoded_captions()
            project = self.caption_projection(iteration, u.shape[1])
            syn_caption_means = class_means(mm.cc_alpha * project(u), syn_group, k)
        for entry in pick[: fast.entries_per_step].tolist():
            m, r = divmod(entry, fast.draws)
            draw = bank.draws[m][r]
            syn = self.dsa.apply(syn_all, draw, groups=owned[syn_group]) if draw is not None else syn_all
            features = bank.networks[m].embed(syn)
            syn_means = class_means(features, syn_group, k)
            dm_term = mean_feature_distance(bank.means[m, r], syn_means)
            add("loss_dm", dm_term)
            if mm.mfa:
                mfa_term = mean_feature_distance(bank.isolated_means[m, r], syn_means)
                add("loss_mfa", mfa_term)
                add("loss", blend(dm_term, mfa_term, mm.lambda_mfa))
            else:
                add("loss", dm_term)
            if mm.cc:
                cc_term = mean_feature_distance(mm.cc_alpha * project(bank.caption_means[m, r]), syn_caption_means)
                add("loss_cc", cc_term)
                add("loss", cc_term)
            if mm.cm:
                cm_term = caption_matching_distance(features, bank.cm_targets[m, r], syn_group, mm.cm_reduction)
                add("loss_cm", cm_term)
                add("loss", mm.lambda_cm * cm_term)
        loss = terms.pop("loss")
        self._image_step(loss)
        out = {"loss": loss.detach()}
        if len(terms) > 1:
            out.update({name: value.detach() for name, value in terms.items()})
        return out

    # -- the reference DM ---------------------------------------------------------------------------
    def _classic_step(self, iteration: int) -> dict[str, torch.Tensor]:
        mm = self.mm
        # Channels-last weights: the convolutions run NHWC (faster on CPU and GPU; same values).
        net = channels_last(self.net_spec.build(derive_seed(self.seed, "net", iteration), self.device))
        net.train()
        net.requires_grad_(False)

        k = len(self.classes)
        real_index, real_group = self.pool.sample_indices(self.classes, self.cfg.batch_real, self.seed, "real", iteration)
        real = self.pool.images[real_index]
        masks = self.pool.masks[real_index] if mm.mfa else None
        syn, syn_group = self.decoded_images()  # the stored images themselves unless dm.formation > 1

        isolated = None
        if mm.mfa and mm.mfa_level == "input":
            isolated = isolate(real, masks, mm.fill, generator(self.seed, "fill", iteration, device=self.device))
        if self.dsa is not None:
            # Draw for every class of the dataset, then pick the owned ones: the draw a class gets
            # does not depend on the shard it lives in.
            draw = self.dsa.draw(self.syn.num_classes, self.syn.image_size,
                                 generator(self.seed, "dsa", iteration, device=self.device))
            owned = torch.tensor(self.classes, device=self.device)
            if masks is not None:
                real, masks = self.dsa.apply(real, draw, groups=owned[real_group], masks=masks)
            else:
                real = self.dsa.apply(real, draw, groups=owned[real_group])
            if isolated is not None:
                isolated = self.dsa.apply(isolated, draw, groups=owned[real_group])
            syn = self.dsa.apply(syn, draw, groups=owned[syn_group])

        if has_batch_statistics(net):
            if mm.uses_masks or mm.uses_captions:
                raise NotImplementedError("multi-modal DM with batch-norm networks is not supported; use convnet")
            # Batch norm would mix the statistics of classes sharing a batch: one class at a time.
            real_means = torch.stack([self._embed_mean(net, real[real_group == i], False) for i in range(k)])
            syn_means = torch.stack([self._embed_mean(net, syn[syn_group == i], True) for i in range(k)])
            loss = mean_feature_distance(real_means, syn_means)
            self._image_step(loss)
            return {"loss": loss.detach()}

        chunk = self.fast.real_chunk
        feature_level = mm.mfa and mm.mfa_level == "feature"
        with torch.no_grad():
            if feature_level:  # the real feature maps, kept before flattening for their object positions
                real_map = in_chunks(net.feature_map, real, chunk)
                real_features = real_map.flatten(1)
                weights = mask_on_feature_map(masks, real_map.shape[-2:], net.frame_padding)
                averages, totals = masked_average(real_map, weights)
                real_objects = object_class_means(averages, totals, real_map.mean(dim=(2, 3)), real_group, k)
            else:
                real_features = in_chunks(net.embed, real, chunk)
            if isolated is not None:
                isolated_features = in_chunks(net.embed, isolated, chunk)
        if feature_level:
            syn_map = net.feature_map(syn)
            syn_features = syn_map.flatten(1)  # = net.embed(syn)
        else:
            syn_features = net.embed(syn)
        syn_means = class_means(syn_features, syn_group, k)
        terms: dict[str, torch.Tensor] = {}
        terms["loss_dm"] = mean_feature_distance(class_means(real_features, real_group, k), syn_means)
        loss = terms["loss_dm"]
        if feature_level:
            # Per-channel averages over positions (object positions on the real side, every position on
            # the synthetic side), times the number of positions: the squared distance of the averages
            # spread over the map, on the scale of the flattened DM term it is blended with.
            positions = syn_map.shape[-2] * syn_map.shape[-1]
            syn_averages = class_means(syn_map.mean(dim=(2, 3)), syn_group, k)
            terms["loss_mfa"] = positions * mean_feature_distance(real_objects, syn_averages)
        elif mm.mfa:
            terms["loss_mfa"] = mean_feature_distance(class_means(isolated_features, real_group, k), syn_means)
        if mm.mfa:
            loss = blend(terms["loss_dm"], terms["loss_mfa"], mm.lambda_mfa)
        if mm.cc or mm.cm:
            t = self.pool.caption_emb[real_index]
            u = self.decoded_captions()
        if mm.cc:
            project = self.caption_projection(iteration, t.shape[1])
            terms["loss_cc"] = mean_feature_distance(class_means(mm.cc_alpha * project(t), real_group, k),
                                                     class_means(mm.cc_alpha * project(u), syn_group, k))
            loss = loss + terms["loss_cc"]
        if mm.cm:
            terms["loss_cm"] = caption_matching_loss(syn_features, u, syn_group, real_features, t, real_group, mm.tau,
                                                     mm.cm_reduction)
            loss = loss + mm.lambda_cm * terms["loss_cm"]
        self._image_step(loss)
        out = {"loss": loss.detach()}
        if len(terms) > 1:
            out.update({name: value.detach() for name, value in terms.items()})
        return out

    @staticmethod
    def _embed_mean(net: torch.nn.Module, x: torch.Tensor, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return net.embed(x).mean(dim=0)


def check_object_masks(masks: torch.Tensor | None, class_indices: list[torch.Tensor], class_names: list[str]) -> None:
    """Masked feature alignment at the feature level averages over object positions: a class whose
    training images have no object pixel at all has no such average, and is refused before the run."""
    if masks is None:
        raise DataError("mm.mfa_level=feature needs object masks on the training images, and they have none")
    empty = classes_without_objects(masks, class_indices)
    if empty:
        named = ", ".join(f"{class_names[c]!r} ({len(class_indices[c])} images)" for c in empty)
        raise DataError(f"masked feature alignment (mm.mfa=true, mm.mfa_level=feature) averages features over object "
                        f"positions, but no training image of class {named} has a single mask pixel; fix the "
                        "masks (components.segmenter) or use mm.mfa_level=input")


def in_chunks(fn, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``fn(x)`` computed ``chunk`` rows at a time: the same values for per-sample networks, with the
    activations of one chunk alive instead of those of every owned class (the real pass is no-grad)."""
    if chunk is None or x.shape[0] <= chunk:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk)])


def has_batch_statistics(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
