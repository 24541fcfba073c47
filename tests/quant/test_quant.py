"""Packers in quant/: MXFP4 against gpt-oss' own decoder, block-wise int4/int8, fp16, the scheme registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gptoss.quant import blockwise as bw
from gptoss.quant.errors import (
    BlockSizeError,
    LayoutError,
    NaNScaleError,
    NonFiniteWeightError,
    SchemePartError,
    UnknownSchemeError,
)
from gptoss.quant.mxfp4 import (
    FP4_VALUES,
    decode_mxfp4,
    encode_mxfp4,
    pack_qmoe_fp4,
    requantize_mxfp4_to_int8,
)
from gptoss.quant.schemes import PARTS, SCHEMES, get_scheme, packed_nbytes


# ---------------------------------------------------------------------------------------------
# MXFP4 decode: bit-exact with gpt_oss.torch.weights.Checkpoint._get_mxfp4_tensor
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def every_byte_and_scale():
    """blocks [255, 16, 16]: each scale 0..254 paired with every byte value 0..255 (16 blocks of 16 bytes)."""
    scales = np.repeat(np.arange(255, dtype=np.uint8)[:, None], 16, axis=1)  # [255, 16]
    blocks = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(16, 16), (255, 16, 16)).copy()
    return blocks, scales


def _oracle(tmp_path, blocks, scales, dtype):
    """Decode through OpenAI's reference Checkpoint, reading a real safetensors file."""
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = pytest.importorskip("gpt_oss.torch.weights")
    safetensors_torch.save_file(
        {"w.blocks": torch.from_numpy(blocks), "w.scales": torch.from_numpy(scales)},
        str(tmp_path / "model.safetensors"),
    )
    ckpt = weights.Checkpoint(str(tmp_path), torch.device("cpu"))
    return ckpt._get_mxfp4_tensor("w.blocks", "w.scales", dtype=dtype)


def test_decode_float32_is_bit_exact_with_reference(tmp_path, every_byte_and_scale):
    torch = pytest.importorskip("torch")
    blocks, scales = every_byte_and_scale
    ours = decode_mxfp4(blocks, scales, name="w")
    ref = _oracle(tmp_path, blocks, scales, torch.float32).numpy()
    assert ours.shape == ref.shape == (255, 16 * 32)
    # Compare bit patterns: catches -0.0 vs +0.0, subnormals and the infinities at scale 254.
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))
    assert np.isinf(ours[254]).any() and (ours[0][ours[0] != 0] != 0).all()


def test_decode_bfloat16_is_bit_exact_with_reference(tmp_path, every_byte_and_scale):
    torch = pytest.importorskip("torch")
    blocks, scales = every_byte_and_scale
    ours = torch.from_numpy(decode_mxfp4(blocks, scales, name="w")).to(torch.bfloat16)
    ref = _oracle(tmp_path, blocks, scales, torch.bfloat16)
    assert torch.equal(ours.view(torch.int16), ref.view(torch.int16))


def test_decode_nibble_order_and_scale():
    blocks = np.zeros((1, 1, 16), np.uint8)  # one row, one block
    blocks[0, 0, 0] = 0x71  # low nibble 1 (+0.5) is element 0, high nibble 7 (+6) is element 1
    blocks[0, 0, 15] = 0xF8  # element 30 = -0 (code 8), element 31 = -6 (code 15)
    out = decode_mxfp4(blocks, np.array([[129]], np.uint8))  # scale 2**2
    assert out.shape == (1, 32)
    assert out[0, 0] == 2.0 and out[0, 1] == 24.0 and out[0, 31] == -24.0
    assert out[0, 30] == 0 and np.signbit(out[0, 30])


def test_decode_rejects_nan_scale_naming_the_tensor():
    blocks = np.zeros((2, 3, 16), np.uint8)
    scales = np.full((2, 3), 127, np.uint8)
    scales[1, 2] = 255
    with pytest.raises(NaNScaleError, match=r"block\.7\.mlp\.mlp1_weight\.scales.*\(1, 2\)") as err:
        decode_mxfp4(blocks, scales, name="block.7.mlp.mlp1_weight.scales")
    assert isinstance(err.value, ValueError) and err.value.tensor == "block.7.mlp.mlp1_weight.scales"


@pytest.mark.parametrize(
    "blocks, scales",
    [
        (np.zeros((2, 3, 16), np.uint8), np.zeros((2, 4), np.uint8)),  # group count differs
        (np.zeros((2, 3, 8), np.uint8), np.zeros((2, 3), np.uint8)),  # not 16 bytes per block
        (np.zeros((2, 3, 16), np.int8), np.zeros((2, 3), np.uint8)),  # wrong dtype
    ],
)
def test_decode_rejects_bad_layouts(blocks, scales):
    with pytest.raises(LayoutError, match="^down_proj: "):
        decode_mxfp4(blocks, scales, name="down_proj")


# ---------------------------------------------------------------------------------------------
# MXFP4 encode
# ---------------------------------------------------------------------------------------------

def test_encode_roundtrips_every_decodable_block():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (64, 8, 16), dtype=np.uint8)
    scales = rng.integers(1, 250, (64, 8), dtype=np.uint8)  # finite products
    w = decode_mxfp4(blocks, scales)
    np.testing.assert_array_equal(decode_mxfp4(*encode_mxfp4(w)), w)


def test_encode_rounds_half_to_even_on_the_fp4_grid():
    # Block max 6 -> scale 2**0; the other entries are the midpoints between grid neighbours.
    mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    row = np.zeros(32, np.float32)
    row[0] = 6.0
    row[1:8] = mids
    row[8:15] = [-m for m in mids]
    blocks, scales = encode_mxfp4(row[None])
    assert scales[0, 0] == 127
    out = decode_mxfp4(blocks, scales)[0]
    expect = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]  # ties go to the code with an even mantissa
    np.testing.assert_array_equal(out[1:8], expect)
    np.testing.assert_array_equal(out[8:15], [-e for e in expect])


def test_encode_error_is_within_half_a_grid_step_and_never_clips():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((16, 128)) * np.exp(rng.uniform(-20, 20, (16, 1)))).astype(np.float32)
    blocks, scales = encode_mxfp4(w)
    back = decode_mxfp4(blocks, scales)
    step = np.ldexp(np.float32(1.0), scales.astype(np.int32) - 127)  # widest grid gap is 2 * 2**e
    err = np.abs(back - w).reshape(16, 4, 32)
    assert (err <= step[..., None] + 1e-30).all()
    amax = np.abs(w).reshape(16, 4, 32).max(-1)
    assert (amax <= 6 * step).all() and (amax > 3 * step).all()  # smallest scale that does not clip


def test_encode_rejects_non_finite_and_ragged_input():
    with pytest.raises(NonFiniteWeightError, match="^w1: "):
        encode_mxfp4(np.full((1, 32), np.nan, np.float32), name="w1")
    with pytest.raises(LayoutError, match="^w1: .*multiple of 32"):
        encode_mxfp4(np.zeros((1, 48), np.float32), name="w1")


# ---------------------------------------------------------------------------------------------
# QMoE repack and the lossless int8 requantization
# ---------------------------------------------------------------------------------------------

def test_pack_qmoe_fp4_is_k_packed_low_nibble_first():
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, (3, 10, 4, 16), dtype=np.uint8)  # E=3, N=10, K=128
    scales = rng.integers(100, 150, (3, 10, 4), dtype=np.uint8)
    packed, e8m0 = pack_qmoe_fp4(blocks, scales, name="mlp1")
    assert packed.shape == (3, 10, 64) and packed.dtype == np.uint8
    assert e8m0.shape == (3, 10, 4) and e8m0.dtype == np.uint8
    w = decode_mxfp4(blocks, scales)  # [E, N, K]
    e, n, j = 2, 7, 37  # byte j of row n holds k = 2j (low nibble) and k = 2j + 1 (high nibble)
    scale = 2.0 ** (int(e8m0[e, n, (2 * j) // 32]) - 127)
    assert w[e, n, 2 * j] == FP4_VALUES[packed[e, n, j] & 0xF] * scale
    assert w[e, n, 2 * j + 1] == FP4_VALUES[packed[e, n, j] >> 4] * scale


def test_pack_qmoe_fp4_rejects_nan_scale_and_wrong_rank():
    blocks = np.zeros((2, 4, 2, 16), np.uint8)
    scales = np.full((2, 4, 2), 255, np.uint8)
    with pytest.raises(NaNScaleError, match="^block.3.mlp.mlp2_weight: 16 scale"):
        pack_qmoe_fp4(blocks, scales, name="block.3.mlp.mlp2_weight")
    with pytest.raises(LayoutError, match=r"\[E, N, K/32, 16\]"):
        pack_qmoe_fp4(blocks[0], scales[0] * 0, name="x")


def test_mxfp4_to_int8_is_lossless():
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, (5, 6, 3, 16), dtype=np.uint8)
    scales = rng.integers(0, 254, (5, 6, 3), dtype=np.uint8)
    q = requantize_mxfp4_to_int8(blocks, scales)
    assert q.bits == 8 and q.block_size == 32 and q.zero_points is None
    np.testing.assert_array_equal(bw.dequantize_blockwise(q), decode_mxfp4(blocks, scales))
    assert q.codes.min() >= 128 - 12 and q.codes.max() <= 128 + 12


# ---------------------------------------------------------------------------------------------
# Block-wise int4 / int8
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block_size", [16, 32, 128])
def test_blockwise_error_is_at_most_half_a_step(bits, symmetric, block_size):
    rng = np.random.default_rng(bits * 1000 + block_size)
    w = (rng.standard_normal((7, 160)) + (0 if symmetric else 0.7)).astype(np.float32)
    q = bw.quantize_blockwise(w, bits, block_size, symmetric)
    back = bw.dequantize_blockwise(q)
    assert back.shape == w.shape
    step = np.repeat(q.scales, block_size, axis=-1)[:, :160]
    assert (np.abs(back - w) <= step / 2 * (1 + 1e-5)).all()
    assert (q.zero_points is None) == symmetric
    zp = q.default_zero_point if symmetric else q.zero_points[..., None]
    assert ((q.codes.astype(int) - zp)[:, -1, 160 % block_size or block_size:] == 0).all()  # padding is zero


def test_blockwise_keeps_zero_exact_and_handles_zero_blocks():
    w = np.zeros((2, 64), np.float32)
    w[0, :32] = np.linspace(-1, 3, 32)
    w[0, 5] = 0.0
    for symmetric in (True, False):
        back = bw.dequantize_blockwise(bw.quantize_blockwise(w, 4, 32, symmetric))
        assert back[0, 5] == 0.0 and (back[1] == 0).all()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_packing_reads_back_to_the_same_values(bits, symmetric):
    rng = np.random.default_rng(bits)
    w2d = rng.standard_normal((12, 96)).astype(np.float32)
    q = bw.quantize_blockwise(w2d, bits, 32, symmetric)
    expect = bw.dequantize_blockwise(q)

    mnb = bw.pack_matmul_nbits(q)
    assert mnb.data.shape == (12, 3, 32 * bits // 8) and mnb.scales.shape == (12, 3)
    if not symmetric:
        assert mnb.zero_points.shape == (12, math.ceil(3 * bits / 8))
    np.testing.assert_array_equal(bw.dequantize_packed(mnb), expect)

    gbq = bw.pack_gather_block_quantized(q)
    assert gbq.data.shape == (12, 96 * bits // 8)
    np.testing.assert_array_equal(bw.dequantize_packed(gbq), expect)

    w3d = rng.standard_normal((3, 8, 64)).astype(np.float32)
    q3 = bw.quantize_blockwise(w3d, bits, 32, symmetric)
    moe = bw.pack_qmoe_int(q3)
    assert moe.data.shape == (3, 8, 64 * bits // 8) and moe.scales.shape == (3, 8, 2)
    np.testing.assert_array_equal(bw.dequantize_packed(moe), bw.dequantize_blockwise(q3))


def test_int4_packing_is_low_nibble_first():
    codes = np.array([[1, 2, 3, 4, 15]], np.uint8)
    packed = bw.pack_bits(codes, 4)
    np.testing.assert_array_equal(packed, [[0x21, 0x43, 0x0F]])
    np.testing.assert_array_equal(bw.unpack_bits(packed, 4, 5), codes)


def test_matmul_nbits_pads_a_partial_last_block():
    w = np.random.default_rng(5).standard_normal((4, 80)).astype(np.float32)
    p = bw.pack_matmul_nbits(bw.quantize_blockwise(w, 4, 32))
    assert p.data.shape == (4, 3, 16)
    assert np.abs(bw.dequantize_packed(p) - w).max() < 0.5
    with pytest.raises(BlockSizeError, match="^emb: H=80"):
        bw.pack_gather_block_quantized(bw.quantize_blockwise(w, 4, 32), name="emb")


@pytest.mark.parametrize("block_size", [0, 8, 24, 48, 512, 32.0])
def test_block_size_must_be_a_power_of_two_in_range(block_size):
    with pytest.raises(BlockSizeError, match="^attn.q: block size"):
        bw.quantize_blockwise(np.zeros((1, 64), np.float32), 4, block_size, name="attn.q")


def test_blockwise_rejects_bad_bits_and_non_finite():
    with pytest.raises(LayoutError, match="bits"):
        bw.quantize_blockwise(np.zeros((1, 64), np.float32), 3)
    with pytest.raises(NonFiniteWeightError, match="^lm_head: "):
        bw.quantize_blockwise(np.full((1, 64), np.inf, np.float32), name="lm_head")


def test_fp16_cast_rounds_and_refuses_overflow():
    out = bw.to_fp16(np.array([1.0 + 2**-11, 65504.0], np.float32))  # tie rounds to even (1.0)
    assert out.dtype == np.float16 and out[0] == 1.0 and out[1] == 65504
    with pytest.raises(LayoutError, match="^embed: 1 value"):
        bw.to_fp16(np.array([1.0, 70000.0], np.float32), name="embed")


# ---------------------------------------------------------------------------------------------
# Scheme registry
# ---------------------------------------------------------------------------------------------

def test_registry_rows():
    assert tuple(SCHEMES) == ("mxfp4", "int8", "int8_b128", "int4", "fp16", "fp32")
    assert get_scheme("int8_b128").block_size == 128 and get_scheme("int8_b128").bits == 8
    assert get_scheme("mxfp4").parts == {"experts"}
    assert "router" not in get_scheme("int4").parts and "router" in get_scheme("fp16").parts
    for s in SCHEMES.values():
        assert s.parts <= set(PARTS)


def test_unknown_scheme_lists_known_ones():
    with pytest.raises(UnknownSchemeError, match="'nf4'.*mxfp4, int8, int8_b128, int4, fp16, fp32"):
        get_scheme("nf4")


def test_part_checks():
    get_scheme("int8").check_part("embedding")
    with pytest.raises(SchemePartError, match="'mxfp4' does not apply to 'attention'; it applies to: experts"):
        get_scheme("mxfp4").check_part("attention")
    with pytest.raises(SchemePartError, match="known parts"):
        get_scheme("fp16").check_part("mlp")


def _pack_under(scheme: str, w: np.ndarray, block_size: int | None, asymmetric: bool) -> list[np.ndarray]:
    """What each scheme's packer really emits for w; every registered scheme must appear here."""
    if scheme == "mxfp4":
        return list(encode_mxfp4(w))
    if scheme.startswith(("int4", "int8")):
        row = get_scheme(scheme)
        p = bw.pack_matmul_nbits(
            bw.quantize_blockwise(w, row.bits, block_size or row.block_size, symmetric=not asymmetric)
        )
        return [a for a in (p.data, p.scales, p.zero_points) if a is not None]
    if scheme == "fp16":
        return [bw.to_fp16(w)]
    if scheme == "fp32":
        return [w.astype(np.float32)]
    raise AssertionError(f"scheme {scheme!r} has no packer in this test")


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_packed_nbytes_matches_the_packers(scheme):
    w = np.random.default_rng(0).standard_normal((24, 2880)).astype(np.float32)
    variants = [(None, False)]
    if scheme in ("int4", "int8"):
        variants += [(64, False), (128, True), (256, True)]  # 2880 is not a multiple of 128 or 256
    for block_size, asymmetric in variants:
        real = sum(a.nbytes for a in _pack_under(scheme, w, block_size, asymmetric))
        assert packed_nbytes(scheme, w.shape, block_size=block_size, asymmetric=asymmetric) == real


def test_packed_nbytes_of_a_20b_expert_tensor():
    # gate_up of gpt-oss-20b, one layer: [32, 5760, 2880] -> 4.25 bits per weight.
    assert packed_nbytes("mxfp4", (32, 5760, 2880)) == 32 * 5760 * (1440 + 90)
    with pytest.raises(BlockSizeError, match="fixes the block size"):
        packed_nbytes("mxfp4", (4, 64), block_size=64)
    with pytest.raises(LayoutError, match="no blocks"):
        packed_nbytes("fp16", (4, 64), asymmetric=True)


def test_pack_qmoe_fp4_n_packed_moves_codes_not_values():
    """CUDA's fp4 QMoE layout [E, K, N/2]: byte (e, k, j) holds W[e, 2j, k] low and W[e, 2j+1, k] high."""
    from gptoss.quant.mxfp4 import pack_qmoe_fp4_n_packed

    rng = np.random.default_rng(5)
    blocks = rng.integers(0, 256, (3, 6, 2, 16), dtype=np.uint8)
    scales = rng.integers(120, 130, (3, 6, 2), dtype=np.uint8)
    w = decode_mxfp4(blocks, scales)                                   # [E, N, K]
    packed = pack_qmoe_fp4_n_packed(blocks)
    assert packed.shape == (3, 64, 3)
    low, high = FP4_VALUES[packed & 0xF], FP4_VALUES[packed >> 4]      # [E, K, N/2]: rows 2j and 2j+1
    scale = np.ldexp(1.0, scales.astype(np.int32) - 127).repeat(32, axis=-1)   # [E, N, K]
    assert np.array_equal(low * scale[:, 0::2].transpose(0, 2, 1), w[:, 0::2].transpose(0, 2, 1))
    assert np.array_equal(high * scale[:, 1::2].transpose(0, 2, 1), w[:, 1::2].transpose(0, 2, 1))
    with pytest.raises(LayoutError, match="must be even"):
        pack_qmoe_fp4_n_packed(blocks[:, :5])
