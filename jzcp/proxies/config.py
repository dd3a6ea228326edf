"""The scoring protocol: every knob that changes a proxy value, recorded with every result."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from jzcp.networks.layers import INIT_SCHEMES

INPUT_KINDS = ("data", "noise")
BN_MODES = ("train", "eval")


@dataclass(frozen=True)
class ProxyConfig:
    """Protocol of a zero-cost scoring run.

    Attributes:
        batch_size: images per minibatch (64: ICLR'21 protocol; NAS-Bench-Suite-Zero's configs used 32).
        seed: seed of the minibatch, of the weight init and of every random draw of a proxy.
        init: weight init scheme (``jzcp.networks.layers.INIT_SCHEMES``): ``"pytorch"`` (torch defaults, as
            all NAS-Bench-Suite-Zero / ICLR'21 values) or ``"kaiming_fan_out"`` (EZNAS).
        input: ``"data"`` (the image minibatch) or ``"noise"`` (standard Gaussian of the same shape) for the
            proxies that read the minibatch. zen, synflow and meco always use their own inputs.
        synflow_float64: compute synflow in float64, as the references do (its value overflows float32 for
            deep / wide cells: log synflow reaches ~115 on NB201, float32 ends at ~88.7).
        bn_mode: ``"train"`` (batch statistics, what every reference uses at init) or ``"eval"`` (running
            statistics at init: mean 0, variance 1).
        fresh_init: re-initialise the network of every architecture with a key folded from ``seed`` and the
            architecture (the references build and initialise a new network per architecture).
        zico_splits: ZiCo's number of minibatches: the batch is split into this many equal parts (the ZiCo
            code used by MeCo's benchmark splits one batch in 2).
        meco_input_hw: (H, W) of MeCo's single standard-Gaussian image (its code hard-codes 64 x 64).
        zen_mixup_gamma: zen's perturbation scale (1e-2 in Zen-NAS / NASLib).
    """

    batch_size: int = 64
    seed: int = 42
    init: str = "pytorch"
    input: str = "data"
    synflow_float64: bool = True
    bn_mode: str = "train"
    fresh_init: bool = True
    zico_splits: int = 2
    meco_input_hw: tuple[int, int] = (64, 64)
    zen_mixup_gamma: float = 1e-2

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"ProxyConfig.batch_size must be a positive integer, got {self.batch_size!r}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"ProxyConfig.init {self.init!r} unknown; choose one of {sorted(INIT_SCHEMES)}")
        if self.input not in INPUT_KINDS:
            raise ValueError(f"ProxyConfig.input must be one of {INPUT_KINDS}, got {self.input!r}")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"ProxyConfig.bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if not isinstance(self.zico_splits, int) or self.zico_splits < 2:
            raise ValueError(f"ProxyConfig.zico_splits must be an integer >= 2, got {self.zico_splits!r}")
        if len(self.meco_input_hw) != 2 or min(self.meco_input_hw) < 1:
            raise ValueError(f"ProxyConfig.meco_input_hw must be (H, W) > 0, got {self.meco_input_hw!r}")
        object.__setattr__(self, "meco_input_hw", tuple(int(v) for v in self.meco_input_hw))

    def to_dict(self) -> dict:
        """JSON-ready dict of every field (record it next to the scores)."""
        d = asdict(self)
        d["meco_input_hw"] = list(self.meco_input_hw)
        return d
