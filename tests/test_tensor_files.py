"""Rows read straight into a batch equal what safetensors itself reads, and bad files are named."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from dp2o_core.training.tensor_files import TensorFile


def test_rows_read_into_a_tensor_equal_safetensors_own_reading(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "latents": torch.randn(6, 4, 8, 8, generator=generator),
        "half": torch.randn(3, 5, generator=generator).to(torch.bfloat16),
        "ids": torch.arange(10, dtype=torch.int64).reshape(5, 2),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"prompt": "a cat"})
    expected = load_file(str(tmp_path / "t.safetensors"))
    with TensorFile(tmp_path / "t.safetensors") as file:
        for name, tensor in expected.items():
            whole = torch.empty_like(tensor)
            file.read_rows(name, 0, whole)
            assert torch.equal(whole, tensor)
        rows = torch.empty(2, 4, 8, 8)
        file.read_rows("latents", 3, rows)
        assert torch.equal(rows, expected["latents"][3:5])
        with pytest.raises(ValueError, match="latents is torch.float32"):
            file.read_rows("latents", 0, torch.empty(1, 4, 8, 8, dtype=torch.float16))
        with pytest.raises(ValueError, match="has 6 rows"):
            file.read_rows("latents", 5, torch.empty(2, 4, 8, 8))


def test_a_truncated_or_foreign_file_is_named(tmp_path):
    save_file({"latents": torch.ones(4, 16)}, str(tmp_path / "t.safetensors"))
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-20])
    with TensorFile(tmp_path / "cut.safetensors") as file:
        with pytest.raises(OSError, match=r"cut\.safetensors ends before the bytes of latents"):
            file.read_rows("latents", 0, torch.empty(4, 16))
    (tmp_path / "notes.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(OSError, match=r"notes\.safetensors is not a safetensors file"):
        TensorFile(tmp_path / "notes.safetensors")
