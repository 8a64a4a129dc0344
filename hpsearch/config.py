"""The trial config: every factor of the search space, declared once.

The names of the datasets, architectures, optimizers and augmentations are
:mod:`hpsearch.choices`'s, which the CLI reads without loading this module.

Field names are the YAML keys of study files and the MLflow param names.
Defaults are the reference study's (SPEC.md, "Search space"). Validation
errors name the key, the value received and what is allowed.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpsearch.choices import AUGMENTATIONS, Architecture, Augmentation, DatasetName, Optimizer
from hpsearch.errors import ConfigError

#: the optimizers that take the config's ``momentum`` (hpsearch.model.optimizers builds them so)
USES_MOMENTUM = frozenset({"sgd_momentum", "sgd_nesterov", "rmsprop_momentum"})
NOT_APPLICABLE = "n/a"  # a logged param whose factor the trial does not use

BatchNorm = Literal["none", "before", "after"]
Activation = Literal["relu", "leaky_relu", "sigmoid", "tanh", "elu", "gelu", "swish"]
Initializer = Literal[
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "lecun_normal",
    "lecun_uniform",
    "torch_uniform",  # PyTorch's default for Conv2d and Linear: U(+-1/sqrt(fan_in))
    "random_normal",
    "random_uniform",
    "zeros",
]
WeightDecay = Literal["none", "l1", "l2", "l1l2"]
LrSchedule = Literal["constant", "cosine", "plateau"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
Monitor = Literal["val_loss", "val_accuracy"]
DropoutPlacement = Literal["block", "conv"]
OptimizerSwitch = Literal["none", "epoch", "plateau"]

#: The reference networks' blocks, each (filters, convolutions) and a pooling; built by
#: hpsearch.model.builder, declared here for their count below.
VGG_BLOCKS: dict[str, tuple[tuple[int, int], ...]] = {
    "baseline1": ((32, 1), (64, 1)),
    "baseline2": ((32, 2), (64, 2), (128, 2)),
}
#: resnet9's blocks after its stem, each (filters, residual?): conv -> pool [-> x + conv(conv(x))]
RESNET9_BLOCKS: tuple[tuple[int, bool], ...] = ((128, True), (256, False), (512, True))
#: Blocks (conv groups followed by pooling) per architecture; a per-block
#: dropout list must have this many rates.
ARCHITECTURE_BLOCKS: dict[str, int] = {
    **{name: len(blocks) for name, blocks in VGG_BLOCKS.items()},
    "resnet9": len(RESNET9_BLOCKS),
}


class TrialConfig(BaseModel):
    """One trial's complete configuration (what the model builder and runner need)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    architecture: Architecture = "baseline2"
    # Multiplies every block's filters (1: the reference networks; beyond the study).
    width: int = Field(default=1, ge=1, le=8, description="filter multiplier, 1 to 8")
    batch_norm: BatchNorm = "none"  # "before" = conv -> BN -> activation
    # The moving statistics' decay per step (Keras: 0.99; PyTorch's default: 0.9).
    batch_norm_momentum: float = Field(default=0.99, gt=0.0, lt=1.0, description="in (0, 1)")
    activation: Activation = "relu"
    kernel_initializer: Initializer = "glorot_uniform"
    # No dropout, one rate after every block, or one rate per block.
    dropout: tuple[float, ...] = Field(
        default=(),
        description="none, one rate in [0, 1) for every block, or one rate per block (0.2/0.5/0.7)",
    )
    # Where the dropout layers go: after each block's pooling ("block"), or after every
    # convolution ("conv", the study's "on each convolutional layer"; a per-block rate
    # applies to each convolution of its block).
    dropout_placement: DropoutPlacement = "block"
    weight_decay: WeightDecay = "none"  # kernel regularizer type
    weight_decay_magnitude: float = Field(default=1e-4, ge=1e-6, le=1e-1)
    optimizer: Optimizer = "adam"
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=10.0,
        description="float in (0, 10], or null: the optimizer's default",
    )
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)  # *_momentum, sgd_nesterov only
    lr_schedule: LrSchedule = "constant"
    # The study's future work (Keskar & Socher's SWATS): train with Adam, then switch to SGD
    # with momentum at an epoch ("epoch": at switch_epoch) or when the validation loss has
    # not improved for switch_patience epochs ("plateau"). Adam only.
    optimizer_switch: OptimizerSwitch = "none"
    switch_epoch: int = Field(default=10, ge=1, le=10_000)  # "epoch": the first SGD epoch
    switch_patience: int = Field(default=2, ge=1, le=1000)  # "plateau": epochs without gain
    # SGD's rate after the switch; null: estimated from Adam's steps as SWATS does.
    switch_learning_rate: float | None = Field(
        default=None, gt=0, le=10.0, description="float in (0, 10], or null: SWATS's estimate"
    )
    # Cosine only: the rate climbs linearly from 0 over these first epochs, then decays.
    warmup_epochs: int = Field(default=0, ge=0, le=1000)
    # Multiplies the logits (Page's resnet9: 0.125); 1 leaves the network as it was.
    logit_scale: float = Field(default=1.0, gt=0.0, le=10.0, description="in (0, 10]")
    # The training loss's targets: 1 - s on the true class, s spread over all classes.
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0, description="in [0, 1)")
    batch_size: int = Field(default=32, ge=1, le=8192)
    augmentation: tuple[Augmentation, ...] = Field(
        default=(),
        description=f"none, or any of {', '.join(AUGMENTATIONS)} joined by +",
    )
    epochs: int = Field(default=20, ge=1, le=10_000)  # maximum; early stopping may end sooner
    patience: int = Field(default=3, ge=0)  # early stopping on `monitor`
    # What early stopping watches; the weights of its best epoch are the ones kept.
    monitor: Monitor = "val_loss"
    seed: int = Field(default=0, ge=0)
    # Test-time augmentation: the test evaluation and the exported model average each image's
    # probabilities with its left-right mirror's (for classes that mirroring keeps, as
    # CIFAR-10's; not digits). Validation during training, the search's objective, is plain.
    test_time_flip: bool = False
    precision: Precision = "float32"
    jit_compile: bool = False
    # Train step by step without tracing a graph: faster only for toy runs of a few steps,
    # where tracing and compiling cost more than the steps (`reproduce --quick`).
    run_eagerly: bool = False

    @field_validator("dropout", mode="before")
    @classmethod
    def _parse_dropout(cls, value: Any) -> Any:
        if value is None or value == "none" or value == 0:
            return ()
        if isinstance(value, str):
            value = [v for v in value.replace(",", "/").split("/") if v.strip()]
        if isinstance(value, int | float):
            return (value,)
        return value

    @field_validator("dropout")
    @classmethod
    def _check_rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for rate in value:
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"each dropout rate must be in [0, 1), got {rate}")
        return value

    @field_validator("augmentation", mode="before")
    @classmethod
    def _parse_augmentation(cls, value: Any) -> Any:
        if value is None or value == "none":
            return ()
        if isinstance(value, str):
            value = [v.strip() for v in value.replace(",", "+").split("+") if v.strip()]
        return value

    @field_validator("augmentation")
    @classmethod
    def _unique_augmentation(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _dropout_matches_blocks(self) -> TrialConfig:
        blocks = ARCHITECTURE_BLOCKS[self.architecture]
        if len(self.dropout) not in (0, 1, blocks):
            raise ValueError(
                f"dropout: {self.architecture} has {blocks} blocks, so give one rate or "
                f"{blocks} rates; got {len(self.dropout)}: {list(self.dropout)}"
            )
        return self

    @model_validator(mode="after")
    def _placement_fits_architecture(self) -> TrialConfig:
        if self.dropout_placement == "conv" and self.architecture == "resnet9":
            raise ValueError(
                "dropout_placement: conv is defined for the reference networks (baseline1, "
                "baseline2); resnet9 takes dropout per block"
            )
        return self

    @model_validator(mode="after")
    def _switch_needs_adam(self) -> TrialConfig:
        if self.optimizer_switch != "none" and self.optimizer != "adam":
            raise ValueError(
                f"optimizer_switch: {self.optimizer_switch} switches from Adam to SGD; it needs "
                f"optimizer: adam (got {self.optimizer})"
            )
        return self

    @model_validator(mode="after")
    def _warmup_fits_the_schedule(self) -> TrialConfig:
        if self.warmup_epochs and self.lr_schedule != "cosine":
            raise ValueError(
                f"warmup_epochs needs lr_schedule: cosine (got {self.lr_schedule}): the warm-up "
                "is the start of the cosine schedule"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})"
            )
        return self

    def dropout_rates(self) -> tuple[float, ...]:
        """The dropout rate after each block (0.0 where there is none)."""
        blocks = ARCHITECTURE_BLOCKS[self.architecture]
        if not self.dropout:
            return (0.0,) * blocks
        if len(self.dropout) == 1:
            return self.dropout * blocks
        return self.dropout

    def inapplicable(self) -> set[str]:
        """The factors this config's other choices leave unused (momentum under Adam, say)."""
        unused = set()
        if self.optimizer not in USES_MOMENTUM:
            unused.add("momentum")
        if self.batch_norm == "none":
            unused.add("batch_norm_momentum")
        if not self.dropout:
            unused.add("dropout_placement")
        if self.weight_decay == "none":
            unused.add("weight_decay_magnitude")
        if self.optimizer_switch != "epoch":
            unused.add("switch_epoch")
        if self.optimizer_switch != "plateau":
            unused.add("switch_patience")
        if self.optimizer_switch == "none":
            unused.add("switch_learning_rate")
        if self.lr_schedule != "cosine":
            unused.add("warmup_epochs")
        return unused

    def to_params(self, mark_unused: bool = True) -> dict[str, str]:
        """Every factor as a flat string, as logged to MLflow (same names in every study);
        ``n/a`` where the config's other choices leave it unused (unless not ``mark_unused``)."""
        params: dict[str, str] = {}
        unused = self.inapplicable() if mark_unused else set()
        for key, value in self.model_dump().items():
            if key in unused:
                value = NOT_APPLICABLE
            elif key == "dropout":
                value = "/".join(f"{r:g}" for r in value) if value else "none"
            elif key == "augmentation":
                value = "+".join(value) if value else "none"
            elif value is None:
                value = "default"
            params[key] = str(value)
        return params

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data["dropout"] = list(self.dropout) or "none"  # as a study file writes it
        data["augmentation"] = list(self.augmentation) or "none"
        return yaml.safe_dump(data, sort_keys=False)


def allowed_values(key: str) -> str:
    """Human description of what a trial-config key accepts."""
    field = TrialConfig.model_fields[key]
    if field.description:
        return field.description
    annotation = field.annotation
    args = get_args(annotation)
    literal_args = [a for a in args if isinstance(a, str)]
    if not literal_args and args:
        literal_args = [a for arg in args for a in get_args(arg) if isinstance(a, str)]
    if literal_args:
        return "one of " + ", ".join(literal_args)
    bounds = [
        f"{name} {getattr(m, name)}"
        for m in field.metadata
        for name in ("ge", "gt", "le", "lt")
        if getattr(m, name, None) is not None
    ]
    kind = getattr(annotation, "__name__", str(annotation))
    return kind + (" (" + ", ".join(bounds) + ")" if bounds else "")


def format_validation_error(error: ValidationError, where: str) -> str:
    """One line per problem: where, key, value received (cut short), what is allowed."""
    from hpsearch.errors import short_repr

    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"] if not isinstance(p, int)) or "(config)"
        received = item.get("input")
        if item["type"] == "extra_forbidden":
            allowed = "known keys: " + ", ".join(TrialConfig.model_fields)
            lines.append(
                f"{where}: unknown key {short_repr(key)} (value {short_repr(received)}); {allowed}"
            )
            continue
        allowed = allowed_values(key) if key in TrialConfig.model_fields else ""
        message = item["msg"].removeprefix("Value error, ")
        if key == "(config)":
            lines.append(f"{where}: {message}")
            continue
        suffix = f"; allowed: {allowed}" if allowed else ""
        lines.append(f"{where}: {key}: got {short_repr(received)}: {message}{suffix}")
    return "\n".join(lines)


def make_config(values: dict[str, Any], where: str = "trial config") -> TrialConfig:
    """Validate ``values`` into a :class:`TrialConfig` or raise :class:`ConfigError`."""
    try:
        return TrialConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, where)) from None


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Parse ``key=value`` overrides; each item may hold several, space-separated.

    Values are read as YAML scalars/flow sequences, so ``dropout=[0.2,0.5]``,
    ``learning_rate=1e-3`` and ``jit_compile=true`` get their natural types.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        for pair in shlex.split(item):
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set batch_size=256")
            if key not in TrialConfig.model_fields:
                known = ", ".join(TrialConfig.model_fields)
                raise ConfigError(f"--set {pair!r}: unknown key {key!r}; known keys: {known}")
            overrides[key] = _scalar(raw)
    return overrides


def _scalar(raw: str) -> Any:
    """A YAML value, with YAML 1.1's gaps filled: ``1e-3`` is a number, not a string."""
    if not raw.strip():
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrialConfig:
    """Read a YAML trial config (or start from the defaults) and apply overrides."""
    from hpsearch.util.safe_yaml import load_yaml_file

    values: dict[str, Any] = {}
    where = "trial config"
    if path:
        where = str(path)
        loaded = load_yaml_file(path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping of key: value, got {type(loaded).__name__}"
            )
        values.update(loaded or {})
    values.update(overrides or {})
    return make_config(values, where)


class DataSpec(BaseModel):
    """Which data a trial trains on, and how it is split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: DatasetName = "digits"
    data_dir: str | None = None  # local copy; None: the dataset's downloader
    limit: int | None = Field(default=None, ge=1)  # at most N samples per split
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0)

    def to_params(self) -> dict[str, str]:
        return {k: "none" if v is None else str(v) for k, v in self.model_dump().items()}


def make_data_spec(values: dict[str, Any], where: str = "data options") -> DataSpec:
    try:
        return DataSpec.model_validate(values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, where)) from None
