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
              edge_dispatch: str = "select") -> ProxyNet:
    """The NAS-Bench-201 family (``arch`` = ``(6,)`` op ids) under ``config``'s init scheme and BN mode.

    ``edge_dispatch``: see :class:`jzcp.networks.nb201.NB201Config` (``"select"`` is the fast one for the
    gradient proxies on CPU)."""
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
    )


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
