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
from raydd.config import DistillConfig, FusionConfig, MultiModalConfig, available_recipes
from raydd.errors import ConfigError
from raydd.models.init import build_seeded
from raydd.realpool import RealPool
from raydd.registry import Registry
from raydd.seeding import derive_seed
from raydd.synthetic import SyntheticSet

METHODS: Registry[type["Distiller"]] = Registry("method")


def register_method(name: str) -> Callable[[type["Distiller"]], type["Distiller"]]:
    """Decorator: make ``method_class(name)`` return the class; a name taken by another class is an error."""
    def add(cls: type[Distiller]) -> type[Distiller]:
        METHODS.register(name)(cls)
        cls.name = name
        return cls

    return add


def available_methods() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type["Distiller"]:
    cls = METHODS.get(name)
    if cls is None:
        recipes = ", ".join(available_recipes())
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(available_methods())} (recipes: {recipes})")
    return cls


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
    needs_sync = False  # True when a step reads other classes' rows (a ``share_rows`` hook across workers)
    config_section: str | None = None  # the Config section this method owns (passed as ``section``)
    section_type: type | None = None  # that section's dataclass (its defaults when none is passed)

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
        mm: MultiModalConfig | None = None,
        fusion: FusionConfig | None = None,
        section: object | None = None,
    ) -> None:
        self.cfg = cfg
        self.section = self.owned_section(section)
        self.mm = mm or MultiModalConfig()
        self.fusion = fusion or FusionConfig()
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
        self.captions: torch.Tensor | None = None
        if self.mm.uses_captions:
            if syn.caption_emb is None or pool.caption_emb is None:
                raise ValueError("caption switches are on but the data carries no caption embeddings")
            self.captions = syn.caption_emb.detach().to(device).requires_grad_(self.mm.learn_caption_emb)
        self.base_lr = lr
        self.optimizer = self.make_optimizer([self.images], lr)
        if self.captions is not None and self.mm.learn_caption_emb:
            self.optimizer.add_param_group({"params": [self.captions]})

    @classmethod
    def owned_section(cls, section: object | None) -> object | None:
        """The method's own section: ``section`` when it is one, else its defaults (a caller that builds a
        distiller by hand need not pass it)."""
        if cls.section_type is None or isinstance(section, cls.section_type):
            return section
        return cls.section_type()

    def make_optimizer(self, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        """The reference image optimiser: SGD with momentum (methods may offer others)."""
        return torch.optim.SGD(params, lr=lr, momentum=self.cfg.momentum)

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

    def own_captions(self) -> torch.Tensor:
        return self.captions[self.own_rows]

    def caption_projection(self, iteration: int, caption_dim: int) -> torch.nn.Linear:
        """P for caption concatenation in DM: a random projection (``fusion.projection_dim`` wide) drawn with the
        iteration's network."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(self.seed, "caption-projection", iteration))
            project = torch.nn.Linear(caption_dim, self.fusion.projection_dim, bias=False)
        return project.to(self.device).requires_grad_(False)

    def export(self) -> SyntheticSet:
        """The current synthetic set (CPU tensors) for saving or evaluation."""
        self.syn.images = self.images.detach().cpu().clone()
        if self.captions is not None:
            self.syn.caption_emb = self.captions.detach().cpu().clone()
        return self.syn

    # -- checkpoint state -----------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        named = {"images": self.images}
        if self.captions is not None:
            named["captions"] = self.captions
        return named

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors and optimiser state, every entry with the synthetic rows as its leading dim.

        Row-leading entries are what the Ray path assembles across class shards; Adam's scalar step
        count is stored broadcast over the rows for that reason.
        """
        state = {}
        for name, tensor in self._tensors().items():
            state[name] = tensor.detach().cpu().contiguous()
            for key, value in self.optimizer.state.get(tensor, {}).items():
                if not torch.is_tensor(value):
                    continue
                if value.dim() == 0:
                    value = value.expand(tensor.shape[0])
                state[_state_key(name, key)] = value.detach().cpu().contiguous().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in self._tensors().items():
            if name not in state:
                continue
            with torch.no_grad():
                tensor.copy_(state[name].to(self.device))
            for key in _OPTIMIZER_KEYS:
                stored = state.get(_state_key(name, key))
                if stored is None:
                    continue
                if key == "step":  # a scalar, stored per row
                    stored = stored.reshape(-1)[0].clone()
                    self.optimizer.state[tensor][key] = stored.to(torch.float32)
                else:
                    self.optimizer.state[tensor][key] = stored.to(self.device).clone()

    def _image_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


_OPTIMIZER_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "step")


def _state_key(name: str, key: str) -> str:
    """Checkpoint key of one optimiser buffer; SGD's images momentum keeps its original name."""
    if key == "momentum_buffer":
        return "momentum" if name == "images" else f"{name}_momentum"
    return f"{name}_{key}"
