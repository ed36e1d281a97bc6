"""The typed sections of a run's configuration, each owned by the module that reads it.

``distill`` (what every method shares: raydd/distill.py and the loop), ``dm`` (raydd/methods/dm.py),
``gradmatch`` (DC/DSA, raydd/methods/gradmatch.py), ``mm`` (the enhancement switches and loss weights the
methods read), ``fusion`` (raydd/models/fusion.py), ``components`` (raydd/components: segmenter, text
encoder), ``prepare`` (raydd/pipeline/parquet_copy.py), ``eval``, ``audit``, ``data``. Their defaults are the
``quick`` preset's values; how layers combine is raydd/config.py's job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PRESET = "quick"  # the preset a command runs when none is named; the dataclass defaults are its values


@dataclass
class DataConfig:
    name: str = "fashion-mnist"  # a registered source or an imagefolder path / fsspec URI
    root: str | None = None  # where the source's files are (None: the source's own search order)
    val_fraction: float = 0.1  # seeded validation split carved from train
    image_size: int | None = None  # resize imagefolder images to this square size
    mask_threshold: int = 0  # fashion-mnist foreground = pixel > threshold
    prepared: str | None = None  # set by `raydd run`'s preprocessing stage: this source as Parquet


# Which real images start the synthetic set (raydd/init_choice.py); here so that config stays free of torch.
INIT_CHOICES = ("random", "caption_typical", "caption_cover")


@dataclass
class DistillConfig:
    method: str = "dm"  # dm | dc | dsa, or a recipe (dm+mm, dsa+mm: a base method with chosen switches)
    recipe: str | None = None  # set when ``method`` named a recipe: the recipe it came from
    ipc: int = 10  # synthetic images per class
    iterations: int | None = 200  # None: the method's reference count (DM 20000, DC/DSA 1000)
    batch_real: int = 64  # real images per class per iteration
    init: str = "real"  # real | noise
    init_choice: str = "random"  # real init: random | caption_typical | caption_cover (raydd/init_choice.py)
    model: str = "convnet3"
    lr_img: float | None = None  # None: the method's reference value (DM 1.0, DC/DSA 0.1)
    momentum: float = 0.5  # image optimiser momentum
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    checkpoint_every: int = 50  # iterations between atomic checkpoints
    log_every: int = 10  # iterations between metrics.jsonl rows
    snapshots: list[int] = field(default_factory=list)  # iterations at which the set is kept in snapshots/


@dataclass
class DMConfig:
    """The DM method's own fields (raydd/methods/dm.py): its memory bound, and the fast DM family
    (docs/method.md, "Fast DM"), DM's objective at a fraction of its cost.

    Every switch is off by default and under both presets, so DM is the reference DM unless a switch is
    set (docs/benchmarks/time-to-accuracy.md: what each buys). DC/DSA ignore this section and refuse its
    switches (``validate``).
    """

    real_chunk: int | None = 512  # real images per forward pass (None: all at once). Same values
    #                               (no batch statistics); bounds memory: 2.6 GB -> 0.6 GB at 10 x 256
    bank: bool = False  # match stored real-feature means (the bank) instead of a fresh real pass per iteration
    networks: int = 20  # M: networks in the pool
    draws: int = 5  # R: stored Siamese augmentation draws per network
    bank_real: int = 256  # real images per class averaged into each bank entry (all when a class has fewer)
    refresh_every: int = 0  # 0: the bank is built once; K: rebuilt every K iterations (new nets/draws/images)
    entries_per_step: int = 1  # bank entries (network, draw) matched per iteration, averaged
    pool: str = "random"  # random: freshly initialised networks | trained: partly trained on the real data
    pool_trainings: int = 4  # trained pool: independent trainings on real data; pool nets interpolate them
    pool_steps: int = 200  # trained pool: SGD steps (batch 256, DSA) of each training
    pool_lambda_max: float = 1.0  # trained pool: net = init + lambda (trained - init), lambda ~ U[0, max]
    formation: int = 1  # multi-formation factor: 2 stores 4 half-resolution images in each image (IDC)
    optimizer: str = "sgd"  # image optimiser: sgd (momentum distill.momentum) | adam
    schedule: str = "constant"  # constant | cosine (lr to 0 over the run)
    max_bank_gb: float | None = None  # refuse a bank larger than this (None: half the machine's memory)


@dataclass
class GradMatchConfig:
    """The gradient-matching methods' own fields (DC and DSA, raydd/methods/gradmatch.py); DM ignores them."""

    outer_loop: int | None = None  # image updates per iteration (None: the reference's get_loops(ipc))
    inner_loop: int | None = None  # network training epochs between them (None: the reference's)
    lr_net: float = 0.01  # lr of the network trained between outer steps
    batch_syn_train: int = 256  # batch of that inner network training


# Named evaluation protocols: the training under which a paper reports accuracy. Naming one
# (``eval.protocol``) sets these fields; a field the user sets alongside it still wins. Both train with
# SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, lr x0.1 at half (the reference's trainer).
EVAL_PROTOCOLS: dict[str, dict[str, Any]] = {
    "dsa": {"augment": "dsa", "epochs": 1000},  # DSA and DM papers: Siamese augmentation's strategy
    "dc": {"augment": "none", "epochs": 300},  # DC paper: no augmentation, fewer epochs
}


@dataclass
class EvalConfig:
    protocol: str | None = None  # dsa | dc (EVAL_PROTOCOLS); None: augment and epochs as given
    model: str = "convnet3"
    models: int = 2  # independent networks trained from scratch
    epochs: int = 300  # the DSA protocol's 1000 cut short (eval.protocol=dsa: all of them)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 256
    batch_test: int = 1024
    augment: str = "dsa"  # dsa | none
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    cross_arch: list[str] = field(default_factory=list)  # extra architectures to evaluate
    full_epochs: int = 3  # epochs of the whole-training-set baseline (not a synthetic-set protocol)


@dataclass
class MultiModalConfig:
    """The four enhancements (docs/method.md): their switches and loss weights, read by the methods.

    How captions join image features is the ``fusion`` section; what makes masks and caption
    embeddings is the ``components`` section."""

    cc: bool = False  # caption concatenation (its projection and fused network: the fusion section)
    cc_alpha: float = 1.0  # DM: weight of the projected caption in the matched embedding
    learn_caption_emb: bool = False  # optimise the synthetic caption embeddings too
    cm: bool = False  # caption matching
    # Weight of caption matching's per-class mean distance (docs/method.md). 1.0 is the strength 0.1 had
    # at IPC 10 when the distance was summed over synthetic images (cm_reduction: sum).
    lambda_cm: float = 1.0
    cm_reduction: str = "mean"  # mean over a class's synthetic images | sum (runs written before this field)
    tau: float = 10.0
    class_templates: bool = False  # CM only: "a photo of a {class}" when a dataset has no captions
    mfa: bool = False  # masked feature alignment (DM)
    lambda_mfa: float = 0.5
    mfa_level: str = "input"  # input | feature
    mgm: bool = False  # masked gradient matching (DC/DSA)
    lambda_mgm: float = 0.5
    mask_init: bool = False  # synthetic images start from object-isolated real images
    fill: str = "mean"  # background of isolated images: mean | blur | noise

    @property
    def uses_captions(self) -> bool:
        return self.cc or self.cm

    @property
    def uses_masks(self) -> bool:
        return self.mfa or self.mgm or self.mask_init

    def switches(self) -> dict[str, object]:
        on = {k: getattr(self, k) for k in ("cc", "cm", "mfa", "mgm", "mask_init") if getattr(self, k)}
        return on


@dataclass
class FusionConfig:
    """Caption concatenation's network (raydd/models/fusion.py): [phi(x) ; g * LN(P t)], in gradient
    matching and in evaluation; DM's matched embedding uses the same projection size."""

    projection_dim: int = 128  # P: caption embedding -> this many features
    caption_gain: float = 1.0  # g: the caption half is g * LayerNorm(P t) (docs/method.md)
    caption_norm: str = "layer"  # layer | none (none: the plain [phi ; P t], which does not learn captions in time)
    caption_dropout: float = 0.5  # probability a caption is replaced by 0 while training the fused network


@dataclass
class ComponentsConfig:
    """The models that make a run's masks and caption embeddings (raydd/components), used by the
    preprocessing stage (``prepare``) and, without it, when the run's data is loaded (raydd/modalities.py)."""

    text_encoder: str = "minilm"  # minilm | openclip:<model>[:<tag or path>]
    segmenter: str = "auto"  # auto (the dataset's masks, else threshold) | threshold | grabcut | sam:<v>:<ckpt>


@dataclass
class AuditConfig:
    """Privacy audit sizes (docs/privacy.md). Run directories written before this section existed read it
    back as these defaults (quick's, as every default is) and must still resume under quick."""

    preset: str = DEFAULT_PRESET  # the audit preset these sizes came from (recorded in audit.json)
    members: int = 500  # audited members (seeded sample of members.json); as many non-members from test
    shadows: int = 4  # LiRA shadow pipelines per target kind (complementary halves of the population)
    targets: int = 1  # target models per kind; their scores are pooled
    epochs: int | None = 30  # epochs of models trained on synthetic-sized sets (None: eval.epochs)
    real_epochs: int | None = 12  # epochs of models trained on real member samples/halves (None: eval.epochs)
    shadow_iterations: int | None = 5  # distillation iterations of each shadow (None: the run's)
    variance: str = "auto"  # LiRA OUT variance: auto | global | per_example
    nn_pool: int | None = 3000  # real training images searched in feature space (None: all members)
    nn_queries: int = 30  # real images per class whose nearest same-class neighbour sets the reference


@dataclass
class PrepareConfig:
    """The preprocessing stage of `raydd run` (Ray Data -> partitioned Parquet, reused across runs)."""

    enabled: bool = True  # off: distill straight from the source (as `raydd distill` does)
    root: str | None = None  # where preprocessed datasets live (None: $XDG_CACHE_HOME/raydd/prepared);
    #                          on a multi-node cluster a shared URI (s3://, gs://) every node can read
    actors: int = 1  # actors per stage
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    batch_size: int = 256
    on_bad_row: str = "fail"  # skip: leave unusable rows out, listed in rejected.jsonl beside the Parquet


@dataclass
class Config:
    preset: str = DEFAULT_PRESET
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    dm: DMConfig = field(default_factory=DMConfig)
    gradmatch: GradMatchConfig = field(default_factory=GradMatchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mm: MultiModalConfig = field(default_factory=MultiModalConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
