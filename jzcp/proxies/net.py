"""What a proxy needs from a network family (:class:`ProxyNet`), one architecture of it (:class:`Net`), and
fresh per-architecture parameters.

A network family is any Flax module ``__call__(x, arch) -> logits`` that follows the capture contract of
:mod:`jzcp.networks.layers`. Adding a search space means writing one small constructor like :func:`nb201_net`.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jzcp.networks.layers import PERTURBATIONS, TAPS
from jzcp.proxies.config import ProxyConfig

Params = Any


@dataclass(frozen=True, eq=False)
class ProxyNet:
    """A network family, as the proxies see it.

    Attributes:
        name: e.g. ``"nb201-c10"``.
        model: the module with BatchNorm (``bn_mode`` of the protocol).
        model_nobn: the same module with every BatchNorm the identity (same parameter tree), for synflow.
        param_mask: ``(params, arch) -> pytree of scalar bool``: parameters the architecture's own network has.
        init: ``key -> params`` (jitted once; the parameters of every architecture of the family).
        num_classes: logits per sample.
        image_shape: ``(H, W, C)`` of the inputs the family is scored at.
        arch_shape, arch_dtype: the architecture array every call takes.
        check_arch: ``arch -> None``, raising ``ValueError`` for a malformed concrete architecture (ids out of
            range, ...); the suite calls it before every call with a concrete architecture.
        forward_mode: False when the network has custom-VJP ops (no forward-mode autodiff through them, e.g.
            :func:`jzcp.networks.layers.branch_conv2d`): Hessian-vector products then go reverse-over-reverse.
    """

    name: str
    model: nn.Module
    model_nobn: nn.Module
    param_mask: Callable[[Params, jax.Array], Any]
    init: Callable[[jax.Array], Params]
    num_classes: int
    image_shape: tuple[int, int, int]
    arch_shape: tuple[int, ...]
    arch_dtype: Any = jnp.int32
    check_arch: Callable[[Any], None] | None = None
    forward_mode: bool = True

    def bind(self, arch: jax.Array, config: ProxyConfig = ProxyConfig()) -> "Net":
        return Net(jnp.asarray(arch, self.arch_dtype), self, config)


@flax.struct.dataclass
class Net:
    """One architecture of a family under one protocol: what every proxy function receives.

    ``arch`` is data (traced under jit); ``spec`` and ``config`` are static.
    """

    arch: jax.Array
    spec: ProxyNet = flax.struct.field(pytree_node=False)
    config: ProxyConfig = flax.struct.field(pytree_node=False)

    def apply(self, params, x, *, bn: bool = True, taps: bool = False, perturbations=None):
        """``(logits (B, num_classes), taps collection or {})``.

        ``bn=False`` runs the BN-free copy; ``taps=True`` records the capture taps; ``perturbations`` (a
        pytree from :meth:`zero_perturbations`) adds them to the tapped layer outputs / block inputs.
        """
        model = self.spec.model if bn else self.spec.model_nobn
        variables = {"params": params}
        if perturbations is not None:
            variables[PERTURBATIONS] = perturbations
        if not taps:
            return model.apply(variables, x, self.arch), {}
        logits, state = model.apply(variables, x, self.arch, mutable=[TAPS])
        return logits, state.get(TAPS, {})

    def zero_perturbations(self, params, x, *, bn: bool = True):
        """Zeros for every perturbation of the network at input ``x`` (structure from an abstract trace)."""
        model = self.spec.model if bn else self.spec.model_nobn
        # The architecture is closed over (not an argument), so a concrete one builds the same network here.
        shapes = jax.eval_shape(
            lambda p, x: model.apply({"params": p}, x, self.arch, mutable=[PERTURBATIONS])[1], params, x
        ).get(PERTURBATIONS, {})
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


# --- NB201 -------------------------------------------------------------------------------------------------------


def nb201_net(num_classes: int = 10, config: ProxyConfig = ProxyConfig(), *, channels: int = 16,
              cells_per_stage: int = 5, image_shape: tuple[int, int, int] = (32, 32, 3),
              edge_dispatch: str = "cond") -> ProxyNet:
    """The NAS-Bench-201 family (``arch`` = ``(6,)`` op ids) under ``config``'s init scheme and BN mode.

    ``edge_dispatch``: see :class:`jzcp.networks.nb201.NB201Config` (``"cond"``, the default, runs only the
    cell's own ops: the fast one for scoring one architecture per call)."""
    from jzcp.networks import nb201

    cfg = nb201.NB201Config(channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes,
                            init=config.init, bn_batch_stats=config.bn_mode == "train", edge_dispatch=edge_dispatch)
    return _nb201_cached(cfg, tuple(image_shape))


@functools.lru_cache(maxsize=None)
def _nb201_cached(cfg, image_shape) -> ProxyNet:
    from jzcp.networks import nb201
    from jzcp.spaces import nb201 as space

    return ProxyNet(
        name=f"nb201-{cfg.num_classes}cls-C{cfg.channels}-N{cfg.cells_per_stage}",
        model=nb201.NB201Network(cfg),
        model_nobn=nb201.NB201Network(dataclasses.replace(cfg, batch_norm=False)),
        param_mask=nb201.param_mask,
        init=functools.partial(nb201.init, config=cfg, image_shape=image_shape),
        num_classes=cfg.num_classes,
        image_shape=image_shape,
        arch_shape=(space.NUM_EDGES,),
        check_arch=space.format,  # raises ValueError naming a wrong shape or an op id outside 0..4
        forward_mode=cfg.edge_dispatch != "cond",
    )


# --- the other search spaces --------------------------------------------------------------------------------
#
# Each constructor maps the protocol (init scheme, BN mode) onto the network's config and is cached on the
# resulting config, so repeated calls return the same ProxyNet (and the same compiled functions).

SPACES = ("nb201", "nb101", "nb301", "darts", "macro", "mobilenetv3")


def nb101_net(num_classes: int = 10, config: ProxyConfig = ProxyConfig(), *, stem_channels: int = 128,
              num_stacks: int = 3, cells_per_stack: int = 3,
              image_shape: tuple[int, int, int] = (32, 32, 3)) -> ProxyNet:
    """The NAS-Bench-101 family: ``arch`` = ``(56,)`` int (7x7 adjacency row-major, then 7 op ids; see
    :func:`jzcp.networks.nb101.encode`)."""
    from jzcp.networks import nb101

    cfg = nb101.NB101Config(stem_channels=stem_channels, num_stacks=num_stacks, cells_per_stack=cells_per_stack,
                            num_classes=num_classes, init=config.init, bn_batch_stats=config.bn_mode == "train")
    return _family("nb101", nb101, nb101.NB101Network, cfg, tuple(image_shape), (nb101.ARCH_LEN,),
                   nb101.check_arch)


def darts_net(num_classes: int = 10, config: ProxyConfig = ProxyConfig(), *, channels: int = 32, layers: int = 8,
              variant: str = "nb301", image_shape: tuple[int, int, int] = (32, 32, 3)) -> ProxyNet:
    """The DARTS cell family (NAS-Bench-301 by default; ``variant="nds"`` with the NDS ``width`` / ``depth``):
    ``arch`` = ``(2, 8, 2)`` int, NASLib's compact encoding (normal / reduce x 8 edges x (input, op))."""
    from jzcp.networks import darts
    from jzcp.spaces import darts as space

    cfg = darts.DartsConfig(channels=channels, layers=layers, num_classes=num_classes, variant=variant,
                            init=config.init, bn_batch_stats=config.bn_mode == "train")
    check = functools.partial(space.parse_compact, allow_none=cfg.allow_none)
    return _family("darts" if variant == "nds" else "nb301", darts, darts.DartsNetwork, cfg, tuple(image_shape),
                   (space.NUM_CELLS, space.NUM_EDGES, 2), check)


def macro_net(num_classes: int = 10, config: ProxyConfig = ProxyConfig(), *, stem_channels: int = 32,
              head_channels: int = 1280, image_shape: tuple[int, int, int] = (32, 32, 3)) -> ProxyNet:
    """NAS-Bench-Macro: ``arch`` = ``(8,)`` op ids (0 identity, 1 MB3_K3, 2 MB6_K5)."""
    from jzcp.networks import macro
    from jzcp.spaces import macro as space

    cfg = macro.MacroConfig(stem_channels=stem_channels, head_channels=head_channels, num_classes=num_classes,
                            init=config.init, bn_batch_stats=config.bn_mode == "train")
    return _family("macro", macro, macro.MacroNetwork, cfg, tuple(image_shape), (space.NUM_LAYERS,),
                   macro.check_arch)


def mobilenetv3_net(num_classes: int = 1000, config: ProxyConfig = ProxyConfig(), *, width_mult: float = 1.0,
                    resolution: int = 224) -> ProxyNet:
    """OFA MobileNetV3: ``arch`` = the flat ``(45,)`` form (:func:`jzcp.spaces.mobilenetv3.flatten`: 20 kernel
    sizes, 20 expand ratios, 5 depths); images ``(resolution, resolution, 3)``."""
    from jzcp.networks import mobilenetv3 as net
    from jzcp.spaces import mobilenetv3 as space

    cfg = net.MobileNetV3NetConfig(width_mult=width_mult, resolution=resolution, num_classes=num_classes,
                                   init=config.init, bn_batch_stats=config.bn_mode == "train")

    def check(flat):
        space.format(space.unflatten(flat))  # ValueError naming a bad depth / kernel / expand entry

    return _family("mobilenetv3", net, net.MobileNetV3Network, cfg, cfg.image_shape, (space.FLAT_LEN,), check,
                   init=lambda key: net.init(key, cfg))


def space_net(space: str, num_classes: int, config: ProxyConfig = ProxyConfig(), *,
              image_shape: tuple[int, int, int] = (32, 32, 3), **kw) -> ProxyNet:
    """The :class:`ProxyNet` of a search space by name (one of :data:`SPACES`; ``nb301`` = ``darts``
    with NAS-Bench-301's network); ``kw`` go to the space's constructor."""
    if space == "nb201":
        return nb201_net(num_classes, config, image_shape=image_shape, **kw)
    if space == "nb101":
        return nb101_net(num_classes, config, image_shape=image_shape, **kw)
    if space in ("nb301", "darts"):
        return darts_net(num_classes, config, image_shape=image_shape, **kw)
    if space == "macro":
        return macro_net(num_classes, config, image_shape=image_shape, **kw)
    if space == "mobilenetv3":
        return mobilenetv3_net(num_classes, config, resolution=image_shape[0], **kw)
    raise ValueError(f"unknown search space {space!r}; choose one of {', '.join(SPACES)}")


_FAMILIES: dict = {}


def _family(name, module, network_cls, cfg, image_shape, arch_shape, check, init=None) -> ProxyNet:
    # Cached on the (hashable) config, so a family is built once and its jitted functions are reused;
    # ``check`` / ``init`` closures are rebuilt by every caller and must not be part of the key.
    key = (name, cfg, image_shape)
    if key not in _FAMILIES:
        _FAMILIES[key] = ProxyNet(
            name=f"{name}-{cfg.num_classes}cls",
            model=network_cls(cfg),
            model_nobn=network_cls(dataclasses.replace(cfg, batch_norm=False)),
            param_mask=module.param_mask,
            init=init or functools.partial(module.init, config=cfg, image_shape=image_shape),
            num_classes=cfg.num_classes,
            image_shape=image_shape,
            arch_shape=arch_shape,
            check_arch=check,
        )
    return _FAMILIES[key]


# --- fresh parameters per architecture ---------------------------------------------------------------------------


def arch_key(seed: int, arch: jax.Array) -> jax.Array:
    """A PRNG key that depends on ``seed`` and every entry of the integer array ``arch``. Jittable."""
    key = jax.random.key(seed)
    for v in jnp.ravel(jnp.asarray(arch, jnp.int32)):
        key = jax.random.fold_in(key, v)
    return key


def fresh_params(spec: ProxyNet, config: ProxyConfig, arch) -> Params:
    """Parameters for scoring ``arch``: a fresh init keyed by (seed, arch) when ``config.fresh_init``, else
    the same init (key ``seed``) for every architecture. ``spec.init`` is compiled once per family."""
    key = _arch_key_jit(config.seed, jnp.asarray(arch, spec.arch_dtype)) if config.fresh_init else jax.random.key(config.seed)
    return spec.init(key)


@functools.partial(jax.jit, static_argnums=0)
def _arch_key_jit(seed, arch):
    return arch_key(seed, arch)
