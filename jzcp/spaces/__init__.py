"""Search spaces: encodings of architectures as integer arrays.

Each space module (``jzcp.spaces.nb201``, ...) offers the same small set of pure functions:
``parse`` / ``format`` between the community's string form and an integer array, ``sample`` and
``mutate`` (jittable, vmappable, explicit PRNG keys), and the validity flags the space has.
Networks that consume these arrays live in ``jzcp.networks``.
"""
