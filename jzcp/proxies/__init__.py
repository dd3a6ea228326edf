"""Zero-cost proxies in JAX: NAS-Bench-Suite-Zero's 13 (epe_nas, fisher, flops, grad_norm, grasp, jacov,
l2_norm, nwot, params, plain, snip, synflow, zen) plus ZiCo and MeCo.

Each proxy is a pure function ``proxy(net, params, x, y, key) -> scalar`` (``net`` = :class:`Net`, one
architecture of a :class:`ProxyNet` family under a :class:`ProxyConfig`); :data:`PROXIES` lists them with
their metadata. :func:`make_suite` computes many proxies of one architecture in one jitted call that shares
forward / backward passes and compiles once per family and batch shape::

    spec = proxies.nb201_net(10, cfg)
    suite = proxies.make_suite(spec, proxies.NBSZ_PROXIES, cfg)
    scores = suite(proxies.fresh_params(spec, cfg, ops), x, y, ops, jax.random.key(cfg.seed))

Networks expose what the proxies read through the capture contract of :mod:`jzcp.networks.layers`.
"""
from jzcp.proxies.config import BN_MODES, INPUT_KINDS, ProxyConfig
from jzcp.proxies.context import Context, cross_entropy
from jzcp.proxies.measures import (
    NBSZ_PROXIES,
    PROXIES,
    ProxyInfo,
    epe_nas,
    fisher,
    flops,
    grad_norm,
    grasp,
    jacov,
    l2_norm,
    meco,
    nwot,
    params,
    plain,
    proxy_info,
    snip,
    synflow,
    zen,
    zico,
)
from jzcp.proxies.net import (
    SPACES,
    Net,
    ProxyNet,
    arch_key,
    darts_net,
    fresh_params,
    macro_net,
    mobilenetv3_net,
    nb101_net,
    nb201_net,
    space_net,
)
from jzcp.proxies.suite import make_suite, suite_fn

__all__ = [
    "BN_MODES", "INPUT_KINDS", "NBSZ_PROXIES", "PROXIES", "Context", "Net", "ProxyConfig", "ProxyInfo", "ProxyNet",
    "arch_key", "cross_entropy", "epe_nas", "fisher", "flops", "fresh_params", "grad_norm", "grasp", "jacov",
    "l2_norm", "make_suite", "meco", "nb201_net", "nb101_net", "darts_net", "macro_net", "mobilenetv3_net",
    "space_net", "SPACES", "nwot", "params", "plain", "proxy_info", "snip", "suite_fn",
    "synflow", "zen", "zico",
]
