"""Shared forward/backward passes of one architecture, computed at most once per trace.

A :class:`Context` wraps ``(net, params, x, y, key)``; each proxy asks it for the passes it needs
(:meth:`Context.ce`, :meth:`Context.input_grad`, ...). Inside one traced suite every pass is built once and
shared by all proxies that read it (one cross-entropy forward+backward feeds grad_norm, snip, plain, fisher,
nwot and grasp's first gradient; one input gradient of sum(logits) feeds jacov and epe_nas).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jzcp.networks import layers
from jzcp.proxies.net import Net

# Stable stream ids: a proxy's random draws do not depend on which other proxies run with it.
STREAM_INPUT_NOISE, STREAM_ZEN, STREAM_MECO = 1, 2, 3


class CEPass(NamedTuple):
    loss: jax.Array  # () mean cross-entropy
    logits: jax.Array  # (B, K)
    grads: Any  # like params: d loss / d params
    pert_grads: Any  # d loss / d perturbation, per tapped layer output / block input
    taps: Any  # the TAPS collection of the forward


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy (``F.cross_entropy``) of logits (B, K) and integer labels (B,)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=1))


def leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def is_weight_path(path) -> bool:
    """Conv / linear weights are the parameters named ``kernel`` (the capture contract)."""
    return leaf_name(path) == "kernel"


class Context:
    """The passes of one architecture. Shapes: ``x`` (B, H, W, C) float32, ``y`` (B,) int, ``key`` a PRNG key."""

    def __init__(self, net: Net, params, x: jax.Array, y: jax.Array, key: jax.Array, *, hvp: bool = False):
        """``hvp``: a Hessian-vector product of the CE will be asked for (grasp): the CE gradient pass is then
        linearised once (:meth:`_gradient_and_hvp`), so the gradient and the Hessian-vector product share one
        primal forward + backward instead of recomputing it inside a separate pass."""
        self.net, self.params, self.y, self.key = net, params, y, key
        self.config = net.config
        self.x_data = x
        self.want_hvp = hvp
        self._memo: dict[str, Any] = {}

    def _once(self, name: str, fn):
        if name not in self._memo:
            self._memo[name] = fn()
        return self._memo[name]

    def stream(self, stream_id: int) -> jax.Array:
        return jax.random.fold_in(self.key, stream_id)

    # --- inputs and masks ------------------------------------------------------------------------------------

    @property
    def x(self) -> jax.Array:
        """The minibatch the data-reading proxies see: the images, or Gaussian noise of their shape."""
        if self.config.input == "data":
            return self.x_data
        return self._once("x_noise", lambda: jax.random.normal(
            self.stream(STREAM_INPUT_NOISE), self.x_data.shape, jnp.float32))

    def mask(self):
        """Pytree like params of float32 scalars: 1 where the architecture's network has the parameter."""
        return self._once("mask", lambda: jax.tree.map(
            lambda m: jnp.asarray(m, jnp.float32), self.net.spec.param_mask(self.params, self.net.arch)))

    def weight_terms(self, fn, *trees):
        """Sum over conv / linear weights the architecture has of ``fn(weight, *other leaves) -> scalar``."""
        leaves = jax.tree_util.tree_flatten_with_path(self.params)[0]
        others = [jax.tree.leaves(t) for t in trees]
        masks = jax.tree.leaves(self.mask())
        total = jnp.float32(0.0)
        for i, (path, w) in enumerate(leaves):
            if is_weight_path(path):
                total = total + masks[i] * fn(w, *(o[i] for o in others)).astype(jnp.float32)
        return total

    # --- passes ----------------------------------------------------------------------------------------------

    def forward(self):
        """One train-mode forward of the minibatch with taps and (zero) perturbations, kept differentiable:
        ``(logits, taps, vjp)`` with ``vjp(cotangent on logits) -> (d params, d perturbations, d x)``, for
        backward passes other than the CE / sum(logits) ones of :meth:`ce` / :meth:`input_grad`."""

        def run():
            net = self.net
            pert = net.zero_perturbations(self.params, self.x)

            def f(params, pert, x):
                return net.apply(params, x, taps=True, perturbations=pert)

            logits, vjp, taps = jax.vjp(f, self.params, pert, self.x, has_aux=True)
            return logits, taps, vjp

        return self._once("forward", run)

    def _gradient_pass(self, params):
        """CE gradients, perturbation gradients, taps and the input gradient of sum(logits), from one forward
        at ``params``: ``(d params, (loss, logits, d perturbations, taps, d x))``."""
        net, x = self.net, self.x
        pert = net.zero_perturbations(params, x)
        logits, vjp, taps = jax.vjp(lambda p, q, x: net.apply(p, x, taps=True, perturbations=q), params, pert, x,
                                    has_aux=True)
        loss, dlogits = jax.value_and_grad(cross_entropy)(logits, self.y)
        g, gp, _ = vjp(dlogits)
        dx = vjp(jnp.ones_like(logits))[2]
        return g, (loss, logits, gp, taps, dx)

    def _passes(self):
        def run():
            if self.want_hvp:
                g, hvp, aux = self._gradient_and_hvp()
            else:
                (g, aux), hvp = self._gradient_pass(self.params), None
            loss, logits, gp, taps, dx = aux
            return CEPass(loss, logits, g, gp, taps), dx, hvp

        return self._once("passes", run)

    def ce(self) -> CEPass:
        """Mean cross-entropy of the minibatch and its gradients w.r.t. parameters and perturbations."""
        return self._passes()[0]

    def input_grad(self) -> jax.Array:
        """``d sum(logits) / d x`` (B, H, W, C), BN in train mode (samples coupled through batch statistics),
        as ``y.backward(torch.ones_like(y))`` on the input. A second backward of the CE pass's forward."""
        return self._passes()[1]

    def hvp(self, v):
        """``H v``, H the Hessian of the mean CE w.r.t. the parameters (``v`` like params). Linearised with the CE
        pass when the context was built with ``hvp=True``, else from a separate pass."""
        lin = self._passes()[2]
        if lin is None:
            lin = self._gradient_and_hvp()[1]
        return lin(v)

    def _gradient_and_hvp(self):
        """``(g, v -> H v, aux)`` of the CE gradient pass: forward-over-reverse, or reverse-over-reverse (the
        VJP of the gradient, H being symmetric) for networks with custom-VJP ops (``spec.forward_mode``)."""
        if self.net.spec.forward_mode:
            return jax.linearize(self._gradient_pass, self.params, has_aux=True)
        g, vjp, aux = jax.vjp(self._gradient_pass, self.params, has_aux=True)
        return g, lambda v: vjp(v)[0], aux

    def block_input_grads(self) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
        """``[(input, d sum(logits) / d input, live)]`` for every ReLU-Conv-BN block (stem excluded), in a fixed
        order: the gradient flowing through that block (its input perturbation), from the shared forward.
        What EZNAS's ``inpact`` / ``inpactgrad`` on the data pass are; dead blocks have ``live`` False."""

        def run():
            logits, taps, vjp = self.forward()
            grads = flat_paths(vjp(jnp.ones_like(logits))[1])
            out = []
            for path, recs in flat_paths(taps).items():
                for r in recs:
                    if isinstance(r, layers.RCBTap):  # a candidate of a channel-padded block: its first channels
                        out.append((r.inp, grads[path][..., : r.inp.shape[-1]], r.live))
            return out

        return self._once("block_input_grads", run)

    def flops_taps(self):
        """A TAPS collection for counting FLOPs: the CE pass's if it exists (the counts are per sample), else
        an abstract batch-1 forward whose arithmetic XLA removes (FLOP records depend on the arch only)."""
        if "passes" in self._memo:
            return self._memo["passes"][0].taps
        return self._once("flops_taps", lambda: self.net.apply(
            self.params, jnp.zeros((1, *self.x_data.shape[1:]), jnp.float32), taps=True)[1])


def flat_paths(tree) -> dict:
    """Nested-dict collection -> {path tuple of str: leaf} (leaves: arrays or tuples of sown records)."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, prefix + (str(k),))
        else:
            out[prefix] = node

    walk(tree, ())
    return out


def nan_if_not_finite(v: jax.Array) -> jax.Array:
    v = jnp.asarray(v)
    return jnp.where(jnp.isfinite(v), v, jnp.nan).astype(jnp.float32)


def num_per_sample(x) -> int:
    return int(np.prod(x.shape[1:]))
