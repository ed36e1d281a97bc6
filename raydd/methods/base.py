"""What every distillation method shares: a registry, the image optimiser, state for checkpoints.

A distiller updates the synthetic images of the classes it *owns* (all classes in one process, a shard
of them on a Ray Train worker). Every draw of iteration ``t`` comes from seeds derived from
(run seed, t, class), so one worker owning classes {0..4} and another {5..9} together compute what a
single process owning all ten computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from raydd.augment import DSA
from raydd.config import DistillConfig
from raydd.errors import ConfigError
from raydd.models.init import build_seeded
from raydd.realpool import RealPool
from raydd.synthetic import SyntheticSet

_METHODS: dict[str, type["Distiller"]] = {}


def register_method(name: str) -> Callable[[type["Distiller"]], type["Distiller"]]:
    def add(cls: type[Distiller]) -> type[Distiller]:
        _METHODS[name] = cls
        cls.name = name
        return cls

    return add


def available_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type["Distiller"]:
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _METHODS[name]


@dataclass
class NetworkSpec:
    """What is needed to draw the iteration's random network."""

    model: str
    channels: int
    num_classes: int
    image_size: tuple[int, int]

    def build(self, seed: int, device: torch.device) -> torch.nn.Module:
        return build_seeded(
            self.model,
            seed,
            device,
            channels=self.channels,
            num_classes=self.num_classes,
            image_size=self.image_size,
        )


class Distiller:
    """Base class: subclasses implement ``step(iteration) -> metrics``."""

    name = "base"
    default_lr_img = 1.0
    default_iterations = 1000
    uses_dsa = True
    needs_sync = False  # True when a step reads other classes' synthetic images (a ``sync`` hook)

    def __init__(
        self,
        cfg: DistillConfig,
        pool: RealPool,
        syn: SyntheticSet,
        *,
        classes: list[int] | None,
        seed: int,
        device: torch.device,
        flip_ok: bool = True,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.syn = syn
        self.classes = list(range(syn.num_classes)) if classes is None else sorted(classes)
        self.seed = seed
        self.device = device
        self.net_spec = NetworkSpec(cfg.model, syn.channels, syn.num_classes, syn.image_size)
        self.dsa = DSA(cfg.dsa_strategy, flip=flip_ok) if self.uses_dsa else None
        self.images = syn.images.detach().to(device).requires_grad_(True)
        self.own_rows = syn.rows_of(self.classes).to(device)
        lr = cfg.lr_img if cfg.lr_img is not None else self.default_lr_img
        self.optimizer = torch.optim.SGD([self.images], lr=lr, momentum=cfg.momentum)

    @property
    def iterations(self) -> int:
        return self.cfg.iterations if self.cfg.iterations is not None else self.default_iterations

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def shard_weight(self) -> float:
        """Factor that turns this shard's reported loss into its share of the whole-run loss (sum)."""
        return 1.0

    def own_images(self) -> torch.Tensor:
        return self.images[self.own_rows]

    def export(self) -> SyntheticSet:
        """The current synthetic set (CPU tensors) for saving or evaluation."""
        self.syn.images = self.images.detach().cpu().clone()
        return self.syn

    # -- checkpoint state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"images": self.images.detach().cpu().contiguous()}
        momentum = self.optimizer.state.get(self.images, {}).get("momentum_buffer")
        if momentum is not None:
            state["momentum"] = momentum.detach().cpu().contiguous()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
        if "momentum" in state:
            self.optimizer.state[self.images]["momentum_buffer"] = state["momentum"].to(self.device).clone()

    def _image_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
