"""The model's torch MXFP4 decode is bit-exact with OpenAI's reference decode, for every byte and scale."""

import pytest
import torch

from gptoss.export.ops import dequantize_mxfp4


def _reference_decode(blocks, scales, dtype):
    from gpt_oss.torch.weights import Checkpoint

    ckpt = Checkpoint.__new__(Checkpoint)           # only its pure decode method is used
    ckpt._get_tensor = {"b": blocks, "s": scales}.__getitem__
    ckpt.tensor_name_to_file = {"b": None, "s": None}
    return ckpt._get_mxfp4_tensor("b", "s", dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_byte_and_scale_is_bit_exact(dtype):
    scales = torch.arange(0, 255, dtype=torch.uint8)                       # 0..254; 255 is NaN
    # Each row: one scale, the 256 byte values spread over 16 blocks of 16 bytes.
    blocks = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(16, 16)
    blocks = blocks.expand(len(scales), 16, 16).contiguous()               # [255 rows, 16 blocks, 16]
    row_scales = scales[:, None].expand(-1, 16).contiguous()               # [255, 16]
    ours = dequantize_mxfp4(blocks, row_scales, dtype)
    ref = _reference_decode(blocks, row_scales, dtype)
    assert ours.dtype == ref.dtype == dtype
    assert ours.shape == ref.shape == (255, 512)
    assert torch.equal(ours.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                       ref.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))


def test_low_nibble_comes_first():
    blocks = torch.zeros(1, 16, dtype=torch.uint8)
    blocks[0, 0] = 0x72                                   # low nibble 2 (+1.0), high nibble 7 (+6.0)
    out = dequantize_mxfp4(blocks, torch.tensor([127], dtype=torch.uint8))
    assert out[0].tolist() == 1.0 and out[1].tolist() == 6.0
