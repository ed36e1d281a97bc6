"""Distribution matching (DM): match mean embeddings of real and synthetic images per class.

Each iteration draws a fresh randomly initialised network with frozen weights; the loss is
sum_c || mean phi(A(x_c)) - mean phi(A(s_c)) ||^2 with the same augmentation draw A for the real and
the synthetic images of class c. All owned classes go through the network in one batched pass.
"""

from __future__ import annotations

import torch

from raydd.methods.base import Distiller, register_method
from raydd.methods.losses import class_means, mean_feature_distance
from raydd.seeding import derive_seed, generator


@register_method("dm")
class DMDistiller(Distiller):
    default_lr_img = 1.0
    default_iterations = 20000

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        net = self.net_spec.build(derive_seed(self.seed, "net", iteration), self.device)
        net.train()
        net.requires_grad_(False)

        k = len(self.classes)
        real_index, real_group = self.pool.sample_indices(self.classes, self.cfg.batch_real, self.seed, "real", iteration)
        real = self.pool.images[real_index]
        syn = self.own_images()
        syn_group = torch.arange(k, device=self.device).repeat_interleave(self.syn.ipc)

        if self.dsa is not None:
            # Draw for every class of the dataset, then pick the owned ones: the draw a class gets
            # does not depend on the shard it lives in.
            draw = self.dsa.draw(self.syn.num_classes, self.syn.image_size, generator(self.seed, "dsa", iteration, device=self.device))
            owned = torch.tensor(self.classes, device=self.device)
            real = self.dsa.apply(real, draw, groups=owned[real_group])
            syn = self.dsa.apply(syn, draw, groups=owned[syn_group])

        if has_batch_statistics(net):
            # Batch norm would mix the statistics of classes sharing a batch: one class at a time.
            real_means = torch.stack([self._embed_mean(net, real[real_group == i], False) for i in range(k)])
            syn_means = torch.stack([self._embed_mean(net, syn[syn_group == i], True) for i in range(k)])
        else:
            with torch.no_grad():
                real_means = class_means(net.embed(real), real_group, k)
            syn_means = class_means(net.embed(syn), syn_group, k)
        loss = mean_feature_distance(real_means, syn_means)
        self._image_step(loss)
        return {"loss": loss.detach()}

    @staticmethod
    def _embed_mean(net: torch.nn.Module, x: torch.Tensor, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return net.embed(x).mean(dim=0)


def has_batch_statistics(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
