"""Gradient matching: DC (Zhao et al., ICLR 2021) and DSA (Zhao & Bilen, ICML 2021).

Per outer iteration a fresh network is drawn. For ``gradmatch.outer_loop`` steps the per-class gradients of the
cross-entropy on real and synthetic images are matched (layer-wise 1 - cosine over output rows), the
synthetic images take one SGD step, and the network is then trained on the synthetic set for
``gradmatch.inner_loop`` epochs (the ``gradmatch`` section: this module's own fields). DSA is DC with the same (Siamese) augmentation draw on both sides and the
inner network training augmented.

The network's inner training reads *all* classes' synthetic images, so a class-sharded run needs the
other workers' images before each inner loop. A network with batch norm also needs real images of every
class before each outer step: as the reference, its running statistics are set from 16 real images per
class (one train-mode pass) and then frozen, so that the matched gradients of a class do not depend on
which images share its batch. Both exchanges go through the ``share_rows`` hook.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from raydd.config import GradMatchConfig
from raydd.masking import isolate
from raydd.methods.base import Distiller, register_method
from raydd.methods.losses import blend, caption_matching_loss, gradient_distance
from raydd.models.fusion import build_fused_seeded, drop_captions
from raydd.seeding import derive_seed, generator

# Real images per class in the batch that sets the batch-norm statistics (the reference's value).
BN_IMAGES_PER_CLASS = 16

# Reference outer/inner loop counts by images per class.
REFERENCE_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def reference_loops(ipc: int) -> tuple[int, int]:
    if ipc in REFERENCE_LOOPS:
        return REFERENCE_LOOPS[ipc]
    # Between the tabulated values: the nearest tabulated IPC at or below (documented choice).
    below = max(k for k in REFERENCE_LOOPS if k <= ipc) if ipc >= 1 else 1
    return REFERENCE_LOOPS[below]


def batchnorm_layers(net: torch.nn.Module) -> list[torch.nn.Module]:
    """The network's batch-norm modules (any dimension); empty for instance/group norm networks."""
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


ShareRows = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GradientMatching(Distiller):
    default_lr_img = 0.1
    default_iterations = 1000
    needs_sync = True
    config_section = "gradmatch"
    section_type = GradMatchConfig

    def __init__(self, *args, share_rows: ShareRows | None = None, **kwargs) -> None:
        """``share_rows(tensor, rows)``: every worker's ``rows`` of ``tensor`` combined into one full tensor
        (a collective: all workers call it together). None in one process, which owns every row."""
        super().__init__(*args, **kwargs)
        self.loops: GradMatchConfig = self.section
        outer, inner = reference_loops(self.syn.ipc)
        self.outer_loop = self.loops.outer_loop if self.loops.outer_loop is not None else outer
        self.inner_loop = self.loops.inner_loop if self.loops.inner_loop is not None else inner
        self.share_rows = share_rows

    def _shared(self, tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``tensor`` with the other workers' rows filled in (itself in one process)."""
        return tensor if self.share_rows is None else self.share_rows(tensor, rows)

    def batchnorm_batch(self, iteration: int, outer: int) -> torch.Tensor:
        """Up to 16 real images of every class, in class order, identical on every worker.

        Each class's images come from a seed of (run, iteration, outer step, class), drawn by the worker
        that holds the class; a slot per image (16 per class, empty where a class has fewer) lets the
        workers combine their slots by row, so a shard sees the batch one process draws.
        """
        per_class = BN_IMAGES_PER_CLASS
        slots = self.pool.images.new_zeros((self.syn.num_classes * per_class, *self.pool.images.shape[1:]))
        filled = torch.zeros(slots.shape[0], device=slots.device)
        owned = []
        for c in self.classes:
            index, _ = self.pool.sample_indices([c], per_class, self.seed, "bn", iteration, outer)
            rows = torch.arange(len(index), device=slots.device) + c * per_class
            slots[rows] = self.pool.images[index]
            filled[rows] = 1.0
            owned.append(rows)
        rows = torch.cat(owned)
        return self._shared(slots, rows)[self._shared(filled, rows) > 0]

    def freeze_batchnorm(self, net: torch.nn.Module, iteration: int, outer: int) -> None:
        """Set every batch-norm layer's running statistics from a real batch of all classes, then freeze them.

        With statistics frozen (eval mode), a class's real and synthetic gradients are those of per-sample
        losses, not of batches whose normalisation mixes samples. No-op for networks without batch norm.
        """
        layers = batchnorm_layers(net)
        if not layers:
            return
        batch = self.batchnorm_batch(iteration, outer)
        net.train()
        with torch.no_grad():
            net.embed(batch)  # every model's classifier is a linear layer on embed(): no normalisation after it
        for layer in layers:
            layer.eval()

    def build_network(self, iteration: int) -> torch.nn.Module:
        seed = derive_seed(self.seed, "net", iteration)
        if not self.mm.cc:
            return self.net_spec.build(seed, self.device)
        spec = self.net_spec
        return build_fused_seeded(spec.model, seed, self.device, caption_dim=self.captions.shape[1],
                                  fusion=self.fusion, channels=spec.channels,
                                  num_classes=spec.num_classes, image_size=spec.image_size)

    def _logits(self, net: torch.nn.Module, x: torch.Tensor, captions: torch.Tensor | None) -> torch.Tensor:
        return net(x, captions) if self.mm.cc else net(x)

    def _augment(self, x: torch.Tensor, c: int, draw) -> torch.Tensor:
        if self.dsa is None:
            return x
        return self.dsa.apply(x, draw, groups=torch.full((x.shape[0],), c, dtype=torch.int64, device=self.device))

    def matching_loss(self, net: torch.nn.Module, iteration: int, outer: int,
                      terms: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Sum over owned classes of the gradient distance (one class at a time, as the reference).

        ``terms``, when given, gathers each summed term unweighted and detached (``loss_gm``, ``loss_mgm``,
        ``loss_cm``), so that the log shows which one drives the loss, as DM's does.
        """
        terms = {} if terms is None else terms

        def add(name: str, value: torch.Tensor) -> None:
            terms[name] = terms.get(name, 0.0) + value.detach()

        mm = self.mm
        params = [p for p in net.parameters() if p.requires_grad]
        draw = None
        if self.dsa is not None:
            g = generator(self.seed, "dsa", iteration, outer, device=self.device)
            draw = self.dsa.draw(self.syn.num_classes, self.syn.image_size, g)
        loss = self.images.new_zeros(())
        for c in self.classes:
            index, _ = self.pool.sample_indices([c], self.cfg.batch_real, self.seed, "real", iteration, outer)
            real_raw = self.pool.images[index]
            real = self._augment(real_raw, c, draw)
            syn = self._augment(self.images[self.syn.class_rows(c)], c, draw)
            t = self.pool.caption_emb[index] if self.captions is not None else None
            u = self.captions[self.syn.class_rows(c)] if self.captions is not None else None
            target_real = torch.full((real.shape[0],), c, dtype=torch.int64, device=self.device)
            target_syn = torch.full((syn.shape[0],), c, dtype=torch.int64, device=self.device)

            def real_gradients(x: torch.Tensor) -> list[torch.Tensor]:
                grads = torch.autograd.grad(F.cross_entropy(self._logits(net, x, t), target_real), params)
                return [g.detach() for g in grads]

            g_syn = list(torch.autograd.grad(F.cross_entropy(self._logits(net, syn, u), target_syn), params,
                                             create_graph=True))
            distance = gradient_distance(real_gradients(real), g_syn)
            add("loss_gm", distance)
            if mm.mgm:
                fill_gen = generator(self.seed, "fill", iteration, outer, c, device=self.device)
                isolated = self._augment(isolate(real_raw, self.pool.masks[index], mm.fill, fill_gen), c, draw)
                masked = gradient_distance(real_gradients(isolated), g_syn)
                add("loss_mgm", masked)
                distance = blend(distance, masked, mm.lambda_mgm)
            loss = loss + distance
            if mm.cm:
                with torch.no_grad():
                    real_features = net.embed(real)
                groups_real = torch.zeros(real.shape[0], dtype=torch.int64, device=self.device)
                groups_syn = torch.zeros(syn.shape[0], dtype=torch.int64, device=self.device)
                # One class per call: the per-class mean of the reduction is this class's term, as in DM.
                caption = caption_matching_loss(net.embed(syn), u, groups_syn, real_features, t, groups_real, mm.tau,
                                                mm.cm_reduction)
                add("loss_cm", caption)
                loss = loss + mm.lambda_cm * caption
        return loss

    def train_network(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, iteration: int, outer: int) -> None:
        """``inner_loop`` epochs of SGD on the (detached) synthetic set, augmented for DSA.

        In train mode, batch norm included: the statistics frozen for matching are the next freeze's start.
        """
        net.train()
        images = self.images.detach()
        captions = self.captions.detach() if self.captions is not None else None
        labels = self.syn.labels.to(self.device)
        n = images.shape[0]
        batch = self.loops.batch_syn_train
        for inner in range(self.inner_loop):
            g = generator(self.seed, "inner", iteration, outer, inner)
            order = torch.randperm(n, generator=g).to(self.device)
            g_aug = generator(self.seed, "inner-aug", iteration, outer, inner, device=self.device)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                x = images[idx]
                if self.dsa is not None:
                    x = self.dsa(x, g_aug)
                u = drop_captions(captions[idx], self.fusion.caption_dropout, g_aug) if captions is not None else None
                loss = F.cross_entropy(self._logits(net, x, u), labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def _share_synthetic(self) -> None:
        """Other workers' synthetic rows (and learned captions) before the inner loop, which reads every class."""
        if self.share_rows is None:
            return
        with torch.no_grad():
            self.images.copy_(self.share_rows(self.images, self.own_rows))
            if self.captions is not None and self.mm.learn_caption_emb:
                self.captions.copy_(self.share_rows(self.captions, self.own_rows))

    def shard_weight(self) -> float:
        # The reported loss is a mean over the shard's classes; the run's is a mean over all classes.
        return len(self.classes) / self.syn.num_classes

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        net = self.build_network(iteration)
        net.train()
        net_optimizer = torch.optim.SGD(net.parameters(), lr=self.loops.lr_net)
        total = self.images.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for outer in range(self.outer_loop):
            self.freeze_batchnorm(net, iteration, outer)
            loss = self.matching_loss(net, iteration, outer, terms)
            self._image_step(loss)
            total = total + loss.detach()
            if outer == self.outer_loop - 1:
                break
            self._share_synthetic()
            self.train_network(net, net_optimizer, iteration, outer)
        # Reference reports the loss averaged over classes and outer steps; each term is averaged alike.
        steps = len(self.classes) * self.outer_loop
        out = {"loss": total / steps}
        if len(terms) > 1:  # plain DC/DSA: loss_gm is the loss itself
            out.update({name: value / steps for name, value in terms.items()})
        return out


@register_method("dc")
class DCDistiller(GradientMatching):
    """DC: gradient matching without augmentation."""

    uses_dsa = False


@register_method("dsa")
class DSADistiller(GradientMatching):
    """DSA: gradient matching with differentiable Siamese augmentation."""

    uses_dsa = True
