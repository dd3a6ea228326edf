"""OFA MobileNetV3 encodings: dict / string forms, depth mask, widths, sampling and mutation."""
from __future__ import annotations

import json

import chex
import jax
import numpy as np
import pytest

from jzcp.spaces import mobilenetv3 as mbv3


def _one(batch, i):
    return mbv3.Arch(*(np.asarray(x)[i] for x in batch))


def test_widths_strides_se_and_activations():
    # make_divisible keeps within 10 % of the target: 16 * 1.2 = 19.2 rounds to 16 (too far), so 24.
    assert [mbv3.make_divisible(v) for v in (19.2, 28.8, 134.4, 1152.0, 4.0)] == [24, 32, 136, 1152, 8]
    assert mbv3.MobileNetV3Config(1.0).widths() == (16, 16, 24, 40, 80, 112, 160, 960, 1280)
    assert mbv3.MobileNetV3Config(1.2).widths() == (24, 24, 32, 48, 96, 136, 192, 1152, 1536)
    stages = mbv3.MobileNetV3Config(1.2).stages()
    assert [s.width for s in stages] == [24, 32, 48, 96, 136, 192]
    assert [s.stride for s in stages] == [1, 2, 2, 2, 1, 2]
    assert [s.se for s in stages] == [False, False, True, False, True, True]
    assert [s.act for s in stages] == ["relu", "relu", "relu", "h_swish", "h_swish", "h_swish"]
    assert [s.max_layers for s in stages] == [1, 4, 4, 4, 4, 4]
    assert mbv3.MobileNetV3Config(resolution=224).feature_sizes() == (112, 56, 28, 14, 14, 7)
    assert mbv3.MobileNetV3Config(resolution=162).feature_sizes() == (81, 41, 21, 11, 11, 6)
    for bad, problem in [({"width_mult": 0}, "width_mult"), ({"resolution": 16}, "resolution"), ({"num_classes": 0}, "num_classes")]:
        with pytest.raises(ValueError, match=problem):
            mbv3.MobileNetV3Config(**bad)


def test_dict_and_string_round_trip():
    batch = mbv3.sample(jax.random.key(0), 50)
    for i in range(50):
        arch = _one(batch, i)
        d = mbv3.format(arch)
        assert set(d) == {"ks", "e", "d"} and all(type(x) is int for x in d["ks"] + d["e"] + d["d"])
        back = mbv3.parse(d)
        for a, b in zip(back, arch):
            np.testing.assert_array_equal(a, b)
        assert mbv3.format(mbv3.parse(json.loads(json.dumps(d)))) == d
        assert mbv3.format(mbv3.parse(mbv3.to_string(arch))) == d
        assert mbv3.format(mbv3.parse(str(d))) == d  # Python-literal text
    # The resolution travels as OFA writes it: 'r': [224] (tutorial) or 'image_size' (arch encoder).
    d = mbv3.format(_one(batch, 0), resolution=192)
    assert d["image_size"] == 192 and mbv3.parse_resolution(d) == 192
    d2 = {k: v for k, v in d.items() if k != "image_size"} | {"r": [176], "wid": None}
    assert mbv3.parse_resolution(d2) == 176 and mbv3.format(mbv3.parse(d2)) == mbv3.format(_one(batch, 0))
    assert mbv3.parse_resolution({"ks": 3, "e": 3, "d": 2}) is None
    # OFA's val2list: one int for every position.
    a = mbv3.parse({"ks": 7, "e": 6, "d": 4})
    assert (a.ks == 7).all() and (a.e == 6).all() and (a.d == 4).all() and a.ks.shape == (20,)


def test_depth_mask_inactive_layers_and_canonical_form():
    arch = mbv3.parse({"ks": 3, "e": 4, "d": [2, 3, 4, 2, 3]})
    mask = np.asarray(mbv3.depth_mask(arch))
    expected = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], bool).ravel()
    np.testing.assert_array_equal(mask, expected)
    # OFA's feature2arch writes 0 for inactive layers: accepted, and canonicalize produces that form.
    zeroed = mbv3.canonicalize(arch)
    assert (np.asarray(zeroed.ks)[~expected] == 0).all() and (np.asarray(zeroed.ks)[expected] == 3).all()
    d = mbv3.format(zeroed)
    np.testing.assert_array_equal(mbv3.parse(d).ks, zeroed.ks)
    assert bool(mbv3.is_valid(zeroed)) and bool(mbv3.is_valid(arch))
    np.testing.assert_array_equal(mbv3.kernel_index(zeroed), np.where(expected, 0, -1))
    np.testing.assert_array_equal(mbv3.expand_index(arch), np.ones(20))
    # Two archs differing only in inactive layers are the same sub-network.
    other = arch._replace(ks=np.where(expected, arch.ks, 7))
    np.testing.assert_array_equal(mbv3.canonicalize(other).ks, zeroed.ks)
    assert not bool(mbv3.is_valid(arch._replace(ks=np.where(expected, 0, 3))))  # 0 in active layers


@pytest.mark.parametrize(
    "spec, problem",
    [
        ({"ks": 3, "e": 3}, "missing key\\(s\\) \\['d'\\]"),
        ({"ks": [3] * 19, "e": 3, "d": 2}, "'ks' must list 20 integers, got 19"),
        ({"ks": 3, "e": 3, "d": [2, 3, 4, 5, 2]}, "depth of stage 4 is 5"),
        ({"ks": [3] * 5 + [9] + [3] * 14, "e": 3, "d": 4}, "ks\\[5\\] \\(stage 2, layer 2, active\\) is 9"),
        ({"ks": 3, "e": [3] * 19 + [0], "d": 4}, "e\\[19\\] \\(stage 5, layer 4, active\\) is 0"),
        ({"ks": 3, "e": [3] * 19 + [5], "d": 2}, "e\\[19\\] .*inactive\\) is 5.*or 0"),
        ({"ks": 3, "e": 3, "d": 2, "width": 1.2}, "unknown key"),
        ({"ks": 3, "e": 3, "d": 2, "r": [8]}, "resolution"),
        ({"ks": 3.0, "e": 3, "d": 2}, "'ks' must list 20 integers"),
        ("{'ks': 3, 'e': ", "neither a Python literal nor JSON"),
        ([3, 3, 2], "must be a dict"),
    ],
)
def test_malformed_specs_raise_clear_errors(spec, problem):
    with pytest.raises(ValueError, match=problem):
        mbv3.parse(spec)


def test_sample_and_mutate():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def population(key):
        k_s, k_m = jax.random.split(key)
        archs = mbv3.sample(k_s, 2000)
        return archs, jax.vmap(mbv3.mutate)(jax.random.split(k_m, 2000), archs)

    for seed in range(2):
        archs, children = (mbv3.Arch(*(np.asarray(x) for x in a)) for a in population(jax.random.key(seed)))
        assert archs.ks.shape == (2000, 20) and archs.d.shape == (2000, 5) and archs.ks.dtype == np.int32
        assert np.asarray(mbv3.is_valid(archs)).all() and np.asarray(mbv3.is_valid(children)).all()
        for values, choices in ((archs.ks, mbv3.KERNEL_SIZES), (archs.e, mbv3.EXPAND_RATIOS), (archs.d, mbv3.DEPTHS)):
            freq = np.array([(values == c).mean() for c in choices])
            np.testing.assert_allclose(freq, 1 / 3, atol=0.02)
        # A layer is redrawn w.p. 0.1 and then keeps both values w.p. 1/9; depths likewise (keep w.p. 1/3).
        layer_changed = (archs.ks != children.ks) | (archs.e != children.e)
        assert abs(layer_changed.mean() - 0.1 * 8 / 9) < 0.01
        assert abs((archs.d != children.d).mean() - 0.1 * 2 / 3) < 0.015
    arch = _one(mbv3.sample(jax.random.key(5), 1), 0)
    same = mbv3.mutate(jax.random.key(6), arch, prob=0.0)
    for a, b in zip(same, arch):
        np.testing.assert_array_equal(a, b)
