"""The field's reference DM / DC / DSA loops and evaluation trainer, for jobs/benchmark_speed.py.

The same math as raydd, written the way the public DM / DC / DSA code writes it: DM loops over
classes with a per-class DiffAugment seed; DC/DSA loop over classes per outer step and train the
network through a ``TensorDataset`` + ``DataLoader`` with per-batch augmentation and ``.item()``
logging; evaluation is the reference ``epoch`` loop. In *check mode* a reference consumes raydd's
randomness (weights, batches, augmentation draws, inner-loop orders), so its results must equal
raydd's to float tolerance; tests/test_speed_equivalence.py holds it to that.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from raydd.augment import DSA
from raydd.methods.losses import GRADIENT_COSINE_EPS
from raydd.models.init import build_seeded
from raydd.seeding import derive_seed, generator


def ref_distance_wb(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor:
    """``distance_wb`` of the DC code: 1 - cosine per output row; 1-D tensors (bias, norm) give 0."""
    shape = gwr.shape
    if len(shape) == 4:  # conv, out x in x h x w
        gwr = gwr.reshape(shape[0], shape[1] * shape[2] * shape[3])
        gws = gws.reshape(shape[0], shape[1] * shape[2] * shape[3])
    elif len(shape) == 3:
        gwr = gwr.reshape(shape[0], shape[1] * shape[2])
        gws = gws.reshape(shape[0], shape[1] * shape[2])
    elif len(shape) == 1:
        return torch.tensor(0, dtype=torch.float, device=gwr.device)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1)
                     / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + GRADIENT_COSINE_EPS))


def ref_match_loss(gw_syn: list[torch.Tensor], gw_real: list[torch.Tensor]) -> torch.Tensor:
    dis = torch.tensor(0.0, device=gw_real[0].device)
    for ig in range(len(gw_real)):
        dis = dis + ref_distance_wb(gw_real[ig], gw_syn[ig])
    return dis


class RefDiffAugment:
    """DiffAugment with a per-call seed: one family and its parameters drawn per call (per class).

    ``pair(c, real, syn)`` augments the real and the synthetic batch of class c with the same draw
    (Siamese). In check mode (``shared`` = a raydd draw for all classes) it uses class c's entry of
    that draw instead of its own seed, so both implementations see identical parameters.
    """

    def __init__(self, strategy: str, image_size: tuple[int, int], device: torch.device, flip: bool = True):
        self.dsa = DSA(strategy, flip=flip)
        self.size = image_size
        self.device = device
        self.shared = None

    def pair(self, c: int, real: torch.Tensor, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared is not None:
            draw, group = self.shared, c
        else:
            seed = int(time.time() * 1000) % 100000 + c  # the reference's per-class seed
            draw, group = self.dsa.draw(1, self.size, torch.Generator(device=self.device).manual_seed(seed)), 0
        g_real = torch.full((real.shape[0],), group, dtype=torch.int64, device=real.device)
        g_syn = torch.full((syn.shape[0],), group, dtype=torch.int64, device=syn.device)
        return self.dsa.apply(real, draw, groups=g_real), self.dsa.apply(syn, draw, groups=g_syn)

    def batch(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """Training-time augmentation (independent parameters per sample)."""
        if g is None:
            g = torch.Generator(device=self.device).manual_seed(int(time.time() * 1000) % 100000)
        return self.dsa(x, g)


class RefReal:
    """The reference's ``get_images(c, n)``: numpy permutation of the class's indices."""

    def __init__(self, pool, n: int):
        self.images = pool.images
        self.indices = [idx.numpy() for idx in pool.class_indices]
        self.n = n
        self.pool = pool
        self.check_keys: tuple | None = None  # check mode: raydd's per-class draw keys (after the purpose)

    def get(self, c: int, seed: int = 0, n: int | None = None, purpose: str = "real") -> torch.Tensor:
        n = self.n if n is None else n
        if self.check_keys is not None:
            index, _ = self.pool.sample_indices([c], n, seed, purpose, *self.check_keys)
            return self.images[index]
        idx = np.random.permutation(self.indices[c])[:n]
        return self.images[torch.from_numpy(idx).to(self.images.device)]


class RefDM:
    """DM as its reference code: a Python loop over classes, one forward per class."""

    def __init__(self, model: str, spec: dict, images: torch.Tensor, ipc: int, num_classes: int, real: RefReal,
                 aug: RefDiffAugment | None, seed: int, device: torch.device, lr: float = 1.0, momentum: float = 0.5):
        self.model, self.spec, self.ipc, self.num_classes = model, spec, ipc, num_classes
        self.image_syn = images.detach().clone().to(device).requires_grad_(True)
        self.optimizer_img = torch.optim.SGD([self.image_syn], lr=lr, momentum=momentum)
        self.real, self.aug, self.seed, self.device = real, aug, seed, device

    def step(self, it: int, check: bool = False) -> float:
        net = build_seeded(self.model, derive_seed(self.seed, "net", it), self.device, **self.spec)
        net.train()
        for p in net.parameters():
            p.requires_grad = False
        if self.aug is not None:
            self.aug.shared = (self.aug.dsa.draw(self.num_classes, self.aug.size,
                                                 generator(self.seed, "dsa", it, device=self.device))
                               if check else None)
        self.real.check_keys = (it,) if check else None
        loss = torch.tensor(0.0, device=self.device)
        for c in range(self.num_classes):
            img_real = self.real.get(c, self.seed)
            img_syn = self.image_syn[c * self.ipc : (c + 1) * self.ipc]
            if self.aug is not None:
                img_real, img_syn = self.aug.pair(c, img_real, img_syn)
            output_real = net.embed(img_real).detach()
            output_syn = net.embed(img_syn)
            loss = loss + torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
        self.optimizer_img.zero_grad()
        loss.backward()
        self.optimizer_img.step()
        return loss.item()


def ref_epoch(mode: str, loader, net, optimizer, aug: RefDiffAugment | None, device,
              aug_gen: torch.Generator | None = None) -> tuple[float, float]:
    """The reference ``epoch``: per-batch augmentation, ``.item()`` and numpy accuracy per batch."""
    loss_avg, acc_avg, num_exp = 0.0, 0.0, 0
    net.train() if mode == "train" else net.eval()
    for datum in loader:
        img = datum[0].float().to(device)
        if mode == "train" and aug is not None:
            img = aug.batch(img, aug_gen)
        lab = datum[1].long().to(device)
        n_b = lab.shape[0]
        output = net(img)
        loss = F.cross_entropy(output, lab)
        acc = np.sum(np.equal(np.argmax(output.cpu().data.numpy(), axis=-1), lab.cpu().data.numpy()))
        loss_avg += loss.item() * n_b
        acc_avg += acc
        num_exp += n_b
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss_avg / num_exp, acc_avg / num_exp


def _loader(images, labels, batch, order: torch.Tensor | None) -> DataLoader:
    data = TensorDataset(images, labels)
    if order is None:
        return DataLoader(data, batch_size=batch, shuffle=True, num_workers=0)
    return DataLoader(data, batch_size=batch, sampler=order.tolist(), num_workers=0)


class RefGradMatch:
    """DC/DSA as its reference code: per-class loop per outer step, DataLoader inner loop."""

    def __init__(self, model: str, spec: dict, images: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int,
                 real: RefReal, aug: RefDiffAugment | None, seed: int, device: torch.device, outer_loop: int,
                 inner_loop: int, lr_img: float = 0.1, momentum: float = 0.5, lr_net: float = 0.01,
                 batch_train: int = 256):
        self.model, self.spec, self.ipc, self.num_classes = model, spec, ipc, num_classes
        self.image_syn = images.detach().clone().to(device).requires_grad_(True)
        self.label_syn = labels.clone().to(device)
        self.optimizer_img = torch.optim.SGD([self.image_syn], lr=lr_img, momentum=momentum)
        self.real, self.aug, self.seed, self.device = real, aug, seed, device
        self.outer_loop, self.inner_loop, self.lr_net, self.batch_train = outer_loop, inner_loop, lr_net, batch_train

    def step(self, it: int, check: bool = False) -> float:
        net = build_seeded(self.model, derive_seed(self.seed, "net", it), self.device, **self.spec)
        net.train()
        net_parameters = list(net.parameters())
        optimizer_net = torch.optim.SGD(net.parameters(), lr=self.lr_net)
        optimizer_net.zero_grad()
        loss_avg = 0.0
        for ol in range(self.outer_loop):
            if self.aug is not None:
                self.aug.shared = (self.aug.dsa.draw(self.num_classes, self.aug.size,
                                                     generator(self.seed, "dsa", it, ol, device=self.device))
                                   if check else None)
            self.real.check_keys = (it, ol) if check else None
            if any("BatchNorm" in m._get_name() for m in net.modules()):
                # Running statistics from 16 real images per class (train mode), then frozen.
                img_real = torch.cat([self.real.get(c, self.seed, 16, "bn") for c in range(self.num_classes)])
                net.train()
                net(img_real)
                for module in net.modules():
                    if "BatchNorm" in module._get_name():
                        module.eval()
            loss = torch.tensor(0.0, device=self.device)
            for c in range(self.num_classes):
                img_real = self.real.get(c, self.seed)
                lab_real = torch.ones((img_real.shape[0],), device=self.device, dtype=torch.long) * c
                img_syn = self.image_syn[c * self.ipc : (c + 1) * self.ipc]
                lab_syn = torch.ones((self.ipc,), device=self.device, dtype=torch.long) * c
                if self.aug is not None:
                    img_real, img_syn = self.aug.pair(c, img_real, img_syn)
                loss_real = F.cross_entropy(net(img_real), lab_real)
                gw_real = [g.detach().clone() for g in torch.autograd.grad(loss_real, net_parameters)]
                loss_syn = F.cross_entropy(net(img_syn), lab_syn)
                gw_syn = torch.autograd.grad(loss_syn, net_parameters, create_graph=True)
                loss = loss + ref_match_loss(gw_syn, gw_real)
            self.optimizer_img.zero_grad()
            loss.backward()
            self.optimizer_img.step()
            loss_avg += loss.item()
            if ol == self.outer_loop - 1:
                break
            image_syn_train = self.image_syn.detach().clone()
            label_syn_train = self.label_syn.detach().clone()
            for il in range(self.inner_loop):
                order = aug_gen = None
                if check:
                    order = torch.randperm(len(label_syn_train), generator=generator(self.seed, "inner", it, ol, il))
                    aug_gen = generator(self.seed, "inner-aug", it, ol, il, device=self.device)
                loader = _loader(image_syn_train, label_syn_train, self.batch_train, order)
                ref_epoch("train", loader, net, optimizer_net, self.aug, self.device, aug_gen)
        return loss_avg / (self.num_classes * self.outer_loop)


def ref_evaluate(job, device: torch.device, check: bool = False, test: bool = True) -> tuple[torch.nn.Module, float]:
    """``evaluate_synset`` of the reference: DataLoader training, lr x0.1 at half, test pass as an epoch."""
    from raydd.evaluate import build_eval_network

    cfg = job.cfg
    net = build_eval_network(job, device).to(memory_format=torch.contiguous_format)
    aug = RefDiffAugment(cfg.dsa_strategy, tuple(job.train_images.shape[-2:]), device, job.flip_ok) \
        if cfg.augment == "dsa" else None
    epochs = job.epochs or cfg.epochs
    lr = cfg.lr

    def make_optimizer(rate):
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    optimizer = make_optimizer(lr)
    images, labels = job.train_images.to(device), job.train_labels.to(device)
    g_order = generator(job.seed, "eval-order", job.model, job.index)
    g_aug = generator(job.seed, "eval-aug", job.model, job.index, device=device) if check else None
    for ep in range(epochs):
        order = torch.randperm(len(labels), generator=g_order) if check else None
        ref_epoch("train", _loader(images, labels, cfg.batch, order), net, optimizer, aug, device, g_aug)
        if ep + 1 == epochs // 2:
            lr *= 0.1
            optimizer = make_optimizer(lr)
    acc = float("nan")
    if test:
        loader = DataLoader(TensorDataset(job.test_images, job.test_labels), batch_size=256, shuffle=False)
        _, acc = ref_epoch("test", loader, net, optimizer, None, device)
    return net, acc
