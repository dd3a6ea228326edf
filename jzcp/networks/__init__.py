"""Flax networks of the search spaces, with the architecture passed as data.

A network module takes the architecture's integer array as a call argument, so one jitted
``apply(params, x, arch)`` serves every architecture of a space at a given input shape (one XLA
compilation). Shared building blocks (initialisers, batch-statistics BatchNorm, ReLU-Conv-BN) are in
:mod:`jzcp.networks.layers`.
"""
