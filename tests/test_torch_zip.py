"""The torch-free `torch.save` reader: same arrays as `torch.load`, and nothing outside its allow-list runs."""

import collections
import zipfile

import numpy as np
import pytest
import torch

from fact_rlhf_jax import hf, torch_zip


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()


def test_matches_torch_load(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    shared = torch.arange(24, dtype=torch.float16)
    state = collections.OrderedDict(
        f32=torch.randn(3, 5, generator=g),
        f64=torch.randn(4, generator=g, dtype=torch.float64),
        f16=torch.randn(2, 3, generator=g).half(),
        bf16=torch.randn(7, 2, generator=g).bfloat16(),
        i64=torch.arange(-5, 5),
        i32=torch.tensor([[1, -2], [3, 4]], dtype=torch.int32),
        u8=torch.tensor([0, 7, 255], dtype=torch.uint8),
        flag=torch.tensor([True, False, True]),
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 4),
        transposed=base.t(),                     # strides (1, 8)
        strided=base[1::2, ::3],                 # offset 8, strides (16, 3)
        shared_a=shared[2:10].view(2, 4),        # two views of one storage
        shared_b=shared[::5],
        same_twice=base,
        param=torch.nn.Parameter(torch.randn(3, generator=g).bfloat16()),
    )
    state["same_again"] = state["same_twice"]
    path = tmp_path / "state.bin"
    torch.save(state, path)
    with zipfile.ZipFile(path) as zf:  # the shared storages really are stored once
        assert len([n for n in zf.namelist() if "/data/" in n]) == 13  # 17 entries

    got = torch_zip.load(path)
    want = torch.load(path, weights_only=True)
    assert list(got) == list(want)
    for key, tensor in want.items():
        expected_dtype = {torch.bfloat16: "bfloat16"}.get(tensor.dtype, str(tensor.dtype).removeprefix("torch."))
        assert got[key].dtype.name == expected_dtype, key
        assert got[key].shape == tuple(tensor.shape), key
        np.testing.assert_array_equal(got[key].astype(np.float64) if got[key].dtype.name == "bfloat16" else got[key],
                                      _as_numpy(tensor), err_msg=key)


def test_nested_containers_and_metadata(tmp_path):
    linear = torch.nn.Linear(3, 2)
    torch.save({"head": linear.state_dict(), "step": 7, "names": ["a", "b"], "lr": 0.5}, tmp_path / "x.pt")
    got = torch_zip.load(tmp_path / "x.pt")
    assert got["step"] == 7 and got["names"] == ["a", "b"] and got["lr"] == 0.5
    np.testing.assert_array_equal(got["head"]["weight"], linear.weight.detach().numpy())
    assert got["head"]._metadata[""]["version"] == 1  # state_dict's OrderedDict attribute survives


def _zip_with_pickle(path, data_pkl: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


def test_disallowed_global_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    # Protocol-0 pickle: os.system("touch <marker>")
    _zip_with_pickle(tmp_path / "evil.bin", f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(torch_zip.UnsafeCheckpointError, match=r"os\.system.*not allowed"):
        torch_zip.load(tmp_path / "evil.bin")
    with pytest.raises(hf.CheckpointError, match=r"evil\.bin.*os\.system"):
        hf.read_state_dict(tmp_path / "evil.bin")
    assert not marker.exists()

    # A whole pickled module (not a state dict) names torch classes outside the allow-list.
    torch.save({"m": torch.nn.Linear(2, 2)}, tmp_path / "module.bin")
    with pytest.raises(torch_zip.UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        torch_zip.load(tmp_path / "module.bin")


def test_bad_files(tmp_path):
    (tmp_path / "plain.pkl").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(torch_zip.UnsafeCheckpointError, match="not a torch zip checkpoint"):
        torch_zip.load(tmp_path / "plain.pkl")
    # A tensor whose geometry reads past its storage.
    torch.save({"w": torch.ones(4)}, tmp_path / "ok.bin")
    with zipfile.ZipFile(tmp_path / "ok.bin") as zf:
        root = zf.namelist()[0].split("/")[0]
        pkl = zf.read(f"{root}/data.pkl")
    _zip_with_pickle(tmp_path / "short.bin", pkl)  # same pickle, storage record missing
    with pytest.raises(torch_zip.UnsafeCheckpointError, match="storage record .* is missing"):
        torch_zip.load(tmp_path / "short.bin")
    with zipfile.ZipFile(tmp_path / "tiny.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/data/0", np.ones(2, np.float32).tobytes())
    with pytest.raises(torch_zip.UnsafeCheckpointError, match="holds 8 bytes"):
        torch_zip.load(tmp_path / "tiny.bin")
