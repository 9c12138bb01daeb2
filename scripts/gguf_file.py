#!/usr/bin/python3
"""GGUF files in numpy: a writer (version 3, any alignment, every metadata value type), a reader,
and for each ggml format moed reads (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q3_K, q4_K,
q5_K, q6_K, iq3_xxs, iq4_nl, iq3_s, iq4_xs) a quantizer and a dequantizer.

Layouts follow ggml's docs/gguf.md and ggml-common.h byte for byte. The quantizers are simple
(round to nearest with min/max or absmax scales; the K-quants search nothing beyond a per
sub-block min/max): any valid encoding is a correct file. The dequantizers are written from the
layouts, apart from moed's C++ (kernels/cpu/quant.cpp), so each checks the other.

Tensor shapes here are numpy's (row-major, last axis contiguous); GGUF stores dims innermost
first, so a numpy shape (rows, cols) is written as ne = [cols, rows].
"""
import os
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# gguf_metadata_value_type
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR_FORMATS = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
                   FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}
VALUE_TYPE_NAMES = {UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16", UINT32: "uint32",
                    INT32: "int32", FLOAT32: "float32", BOOL: "bool", STRING: "string", ARRAY: "array",
                    UINT64: "uint64", INT64: "int64", FLOAT64: "float64"}

# ggml_type: name -> (id, elements per block, bytes per block)
GGML_TYPES = {
    "f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20),
    "q5_0": (6, 32, 22), "q5_1": (7, 32, 24), "q8_0": (8, 32, 34), "q8_1": (9, 32, 36),
    "q2_k": (10, 256, 84), "q3_k": (11, 256, 110), "q4_k": (12, 256, 144), "q5_k": (13, 256, 176),
    "q6_k": (14, 256, 210), "q8_k": (15, 256, 292), "iq3_xxs": (18, 256, 98), "iq4_nl": (20, 32, 18),
    "iq3_s": (21, 256, 110),
    "iq4_xs": (23, 256, 136),
    "bf16": (30, 1, 2),
}
GGML_TYPE_BY_ID = {v[0]: k for k, v in GGML_TYPES.items()}
QK_K = 256


class Value:
    """A metadata value with an explicit GGUF type. Plain Python values are typed by write():
    str -> string, bool -> bool, int -> int32 (uint32 if it does not fit, then int64), float ->
    float32, list -> array of the first element's type."""

    def __init__(self, vtype, value, element_type=None):
        self.vtype = vtype
        self.value = value
        self.element_type = element_type

    def __repr__(self):
        return "Value(%s, %r)" % (VALUE_TYPE_NAMES[self.vtype], self.value)


def _typed(value):
    if isinstance(value, Value):
        return value
    if isinstance(value, bool):
        return Value(BOOL, value)
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if -2**31 <= value < 2**31:
            return Value(INT32, value)
        if 0 <= value < 2**32:
            return Value(UINT32, value)
        return Value(INT64, value)
    if isinstance(value, (float, np.floating)):
        return Value(FLOAT32, float(value))
    if isinstance(value, str):
        return Value(STRING, value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list needs an explicit Value(ARRAY, [], element_type)")
        first = _typed(value[0])
        return Value(ARRAY, list(value), first.vtype)
    raise TypeError("no GGUF type for %r" % (value,))


def _encode_string(text):
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _encode_payload(vtype, value, element_type=None):
    if vtype == STRING:
        return _encode_string(value)
    if vtype == ARRAY:
        items = [v if isinstance(v, Value) else _typed(v) if element_type == ARRAY else Value(element_type, v)
                 for v in value]
        out = [struct.pack("<IQ", element_type, len(items))]
        for item in items:
            if item.vtype != element_type:
                raise ValueError("array of %s holds a %s" % (VALUE_TYPE_NAMES[element_type],
                                                             VALUE_TYPE_NAMES[item.vtype]))
            out.append(_encode_payload(item.vtype, item.value, item.element_type))
        return b"".join(out)
    return struct.pack(_SCALAR_FORMATS[vtype], value)


# ---------------------------------------------------------------------------------------------
# fp16 / bf16 helpers

def f16_bits(x):
    return np.asarray(x, dtype=np.float32).astype("<f2").view("<u2")


def f16_values(bits):
    return np.asarray(bits, dtype="<u2").view("<f2").astype(np.float32)


def bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (as torch does)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype("<u2")


def _blocks(x, size):
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if x.size % size:
        raise ValueError("%d elements are not whole blocks of %d" % (x.size, size))
    return x.reshape(-1, size)


def _nearest(x):
    """Round half away from zero, as C's roundf (numpy's rint rounds half to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _record(fields, n):
    dtype = np.dtype(fields)
    return np.zeros(n, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Quantizers: a float32 array (its size a multiple of the block) -> the blocks' bytes.

def quantize_q8_0(x):
    b = _blocks(x, 32)
    amax = np.abs(b).max(axis=1)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    out = _record([("d", "<u2"), ("qs", "i1", 32)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = np.clip(_nearest(b * inv[:, None]), -127, 127).astype(np.int8)
    return out.tobytes()


def _signed_max(b):
    """Per row, the element of largest magnitude with its sign (ggml's q4_0/q5_0 scale)."""
    idx = np.abs(b).argmax(axis=1)
    return b[np.arange(len(b)), idx]


def _symmetric_quants(b, half):
    """ggml's q4_0/q5_0: d = signed max / -half, quants round(x / d) + half in [0, 2 * half)."""
    d = _signed_max(b) / -float(half)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.floor(b * inv[:, None] + half + 0.5), 0, 2 * half - 1).astype(np.uint8)
    return d, q


def _affine_quants(b, top):
    """ggml's q4_1/q5_1: x ~ d * q + min over each block, quants in [0, top]."""
    lo, hi = b.min(axis=1), b.max(axis=1)
    d = (hi - lo) / float(top)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    q = np.clip(np.floor((b - lo[:, None]) * inv[:, None] + 0.5), 0, top).astype(np.uint8)
    return d, lo, q


def _pack_nibbles(q):
    """32 quants of 4 bits (the low 4 of 5 for q5) -> 16 bytes: element i low, i + 16 high."""
    return (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)


def quantize_q4_0(x):
    b = _blocks(x, 32)
    d, q = _symmetric_quants(b, 8)
    out = _record([("d", "<u2"), ("qs", "u1", 16)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = _pack_nibbles(q)
    return out.tobytes()


def quantize_q4_1(x):
    b = _blocks(x, 32)
    d, lo, q = _affine_quants(b, 15)
    out = _record([("d", "<u2"), ("m", "<u2"), ("qs", "u1", 16)], len(b))
    out["d"] = f16_bits(d)
    out["m"] = f16_bits(lo)
    out["qs"] = _pack_nibbles(q)
    return out.tobytes()


def _fifth_bits(q):
    """Bit 4 of each of the 32 quants, as the 4 little-endian bytes of q5's qh."""
    high = (q >> 4).astype(np.uint32)
    qh = (high << np.arange(32, dtype=np.uint32)).sum(axis=1).astype("<u4")
    return qh.view(np.uint8).reshape(-1, 4)


def quantize_q5_0(x):
    b = _blocks(x, 32)
    d, q = _symmetric_quants(b, 16)
    out = _record([("d", "<u2"), ("qh", "u1", 4), ("qs", "u1", 16)], len(b))
    out["d"] = f16_bits(d)
    out["qh"], out["qs"] = _fifth_bits(q), _pack_nibbles(q)
    return out.tobytes()


def quantize_q5_1(x):
    b = _blocks(x, 32)
    d, lo, q = _affine_quants(b, 31)
    out = _record([("d", "<u2"), ("m", "<u2"), ("qh", "u1", 4), ("qs", "u1", 16)], len(b))
    out["d"] = f16_bits(d)
    out["m"] = f16_bits(lo)
    out["qh"], out["qs"] = _fifth_bits(q), _pack_nibbles(q)
    return out.tobytes()


def _k_scales(b, levels, sub_size=32, scale_max=63):
    """Scales and mins for sub-blocks of sub_size per super-block (Q4_K: levels 15, Q5_K: 31,
    6-bit sc and m; Q2_K: levels 3, sub-blocks of 16, 4-bit sc and m): x ~ d * sc * q - dmin * m.
    Returns d, dmin (float32 after fp16 rounding), sc, m [n, 256 / sub_size] and the quants
    [n, 256]."""
    sub = b.reshape(-1, QK_K // sub_size, sub_size)
    lo = np.minimum(sub.min(axis=2), 0.0)  # a positive min is clamped, as ggml does
    hi = sub.max(axis=2)
    scale = (hi - lo) / levels
    neg_min = -lo
    d = f16_values(f16_bits(scale.max(axis=1) / scale_max))
    dmin = f16_values(f16_bits(neg_min.max(axis=1) / scale_max))
    sc = np.clip(_nearest(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] > 0)),
                 0, scale_max)
    m = np.clip(_nearest(np.divide(neg_min, dmin[:, None], out=np.zeros_like(neg_min),
                                   where=dmin[:, None] > 0)), 0, scale_max)
    step = d[:, None] * sc
    offset = dmin[:, None] * m
    q = np.divide(sub + offset[:, :, None], step[:, :, None], out=np.zeros_like(sub),
                  where=step[:, :, None] > 0)
    q = np.clip(_nearest(q), 0, levels).astype(np.uint8).reshape(-1, 256)
    return d, dmin, sc.astype(np.uint8), m.astype(np.uint8), q


def _pack_k_scales(sc, m):
    """Inverse of ggml's get_scale_min_k4: 8 six-bit scales and mins -> 12 bytes."""
    out = np.zeros((len(sc), 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def quantize_q2_k(x):
    """16 sub-blocks of 16, x ~ d * sc * q - dmin * m with 4-bit sc, m and 2-bit q; element e's
    quant in qs[32 * (e // 128) + e % 32] at bit 2 * (e % 128 // 32), sc | m << 4 per sub-block."""
    b = _blocks(x, QK_K)
    d, dmin, sc, m, q = _k_scales(b, 3, sub_size=16, scale_max=15)
    quarters = q.reshape(-1, 2, 4, 32)
    qs = quarters[:, :, 0] | (quarters[:, :, 1] << 2) | (quarters[:, :, 2] << 4) | (quarters[:, :, 3] << 6)
    out = _record([("scales", "u1", 16), ("qs", "u1", 64), ("d", "<u2"), ("dmin", "<u2")], len(b))
    out["scales"] = sc | (m << 4)
    out["qs"] = qs.reshape(-1, 64)
    out["d"] = f16_bits(d)
    out["dmin"] = f16_bits(dmin)
    return out.tobytes()


def quantize_q4_k(x):
    b = _blocks(x, QK_K)
    d, dmin, sc, m, q = _k_scales(b, 15)
    groups = q.reshape(-1, 4, 2, 32)  # 64-element groups: low nibbles, then high
    out = _record([("d", "<u2"), ("dmin", "<u2"), ("scales", "u1", 12), ("qs", "u1", 128)], len(b))
    out["d"] = f16_bits(d)
    out["dmin"] = f16_bits(dmin)
    out["scales"] = _pack_k_scales(sc, m)
    out["qs"] = (groups[:, :, 0] | (groups[:, :, 1] << 4)).reshape(-1, 128)
    return out.tobytes()


def quantize_q5_k(x):
    b = _blocks(x, QK_K)
    d, dmin, sc, m, q = _k_scales(b, 31)
    sub = q.reshape(-1, 8, 32)
    groups = (sub & 0xF).reshape(-1, 4, 2, 32)
    qh = np.zeros((len(b), 32), dtype=np.uint8)
    for s in range(8):  # bit s of qh[l]: fifth bit of element l of sub-block s
        qh |= ((sub[:, s] >> 4) << s).astype(np.uint8)
    out = _record([("d", "<u2"), ("dmin", "<u2"), ("scales", "u1", 12), ("qh", "u1", 32),
                   ("qs", "u1", 128)], len(b))
    out["d"] = f16_bits(d)
    out["dmin"] = f16_bits(dmin)
    out["scales"] = _pack_k_scales(sc, m)
    out["qh"] = qh
    out["qs"] = (groups[:, :, 0] | (groups[:, :, 1] << 4)).reshape(-1, 128)
    return out.tobytes()


IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.int8)  # ggml-common.h's kvalues_iq4nl


def quantize_iq4_nl(x):
    """Blocks of 32, x ~ d * IQ4_NL_VALUES[q]: d puts each block's largest magnitude on -127,
    every element takes the nearest codebook entry; Q4_0's nibble order."""
    b = _blocks(x, 32)
    biggest = np.take_along_axis(b, np.abs(b).argmax(axis=1)[:, None], axis=1)[:, 0]
    d = f16_values(f16_bits(-biggest / 127.0))
    scaled = np.divide(b, d[:, None], out=np.zeros_like(b), where=d[:, None] != 0)
    q = np.abs(scaled[:, :, None] - IQ4_NL_VALUES.astype(np.float32)).argmin(axis=2).astype(np.uint8)
    out = _record([("d", "<u2"), ("qs", "u1", 16)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = q[:, :16] | (q[:, 16:] << 4)
    return out.tobytes()


def quantize_iq4_xs(x):
    """8 sub-blocks of 32, x ~ d * ls * IQ4_NL_VALUES[q] with 6-bit signed ls: each sub-block's
    largest magnitude lands on -127, and d puts the largest scale on ls = -32 (as
    quantize_q3_k does); every element takes the nearest codebook entry."""
    b = _blocks(x, QK_K)
    sub = b.reshape(-1, 8, 32)
    biggest = np.take_along_axis(sub, np.abs(sub).argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
    scale = -biggest / 127.0
    largest = np.take_along_axis(scale, np.abs(scale).argmax(axis=1)[:, None], axis=1)[:, 0]
    d = f16_values(f16_bits(-largest / 32.0))
    ls = np.clip(_nearest(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] != 0)),
                 -32, 31)
    step = (d[:, None] * ls).astype(np.float32)
    scaled = np.divide(sub, step[:, :, None], out=np.zeros_like(sub), where=step[:, :, None] != 0)
    q = np.abs(scaled[:, :, :, None] - IQ4_NL_VALUES.astype(np.float32)).argmin(axis=3).astype(np.uint8)
    v = (ls + 32).astype(np.uint16)
    scales_h = np.zeros(len(b), dtype=np.uint16)
    for j in range(8):
        scales_h |= ((v[:, j] >> 4) & 3) << (2 * j)
    out = _record([("d", "<u2"), ("scales_h", "<u2"), ("scales_l", "u1", 4), ("qs", "u1", 128)], len(b))
    out["d"] = f16_bits(d)
    out["scales_h"] = scales_h
    out["scales_l"] = ((v[:, 0::2] & 0xF) | ((v[:, 1::2] & 0xF) << 4)).astype(np.uint8)
    out["qs"] = (q[:, :, :16] | (q[:, :, 16:] << 4)).reshape(-1, 128)
    return out.tobytes()


IQ3S_GRID = np.array([
    0x01010101, 0x01010103, 0x01010105, 0x0101010b, 0x0101010f, 0x01010301, 0x01010303, 0x01010305,
    0x01010309, 0x0101030d, 0x01010501, 0x01010503, 0x0101050b, 0x01010707, 0x01010901, 0x01010905,
    0x0101090b, 0x0101090f, 0x01010b03, 0x01010b07, 0x01010d01, 0x01010d05, 0x01010f03, 0x01010f09,
    0x01010f0f, 0x01030101, 0x01030103, 0x01030105, 0x01030109, 0x01030301, 0x01030303, 0x0103030b,
    0x01030501, 0x01030507, 0x0103050f, 0x01030703, 0x0103070b, 0x01030909, 0x01030d03, 0x01030d0b,
    0x01030f05, 0x01050101, 0x01050103, 0x0105010b, 0x0105010f, 0x01050301, 0x01050307, 0x0105030d,
    0x01050503, 0x0105050b, 0x01050701, 0x01050709, 0x01050905, 0x0105090b, 0x0105090f, 0x01050b03,
    0x01050b07, 0x01050f01, 0x01050f07, 0x01070107, 0x01070303, 0x0107030b, 0x01070501, 0x01070505,
    0x01070703, 0x01070707, 0x0107070d, 0x01070909, 0x01070b01, 0x01070b05, 0x01070d0f, 0x01070f03,
    0x01070f0b, 0x01090101, 0x01090307, 0x0109030f, 0x01090503, 0x01090509, 0x01090705, 0x01090901,
    0x01090907, 0x01090b03, 0x01090f01, 0x010b0105, 0x010b0109, 0x010b0501, 0x010b0505, 0x010b050d,
    0x010b0707, 0x010b0903, 0x010b090b, 0x010b090f, 0x010b0d0d, 0x010b0f07, 0x010d010d, 0x010d0303,
    0x010d0307, 0x010d0703, 0x010d0b05, 0x010d0f03, 0x010f0101, 0x010f0105, 0x010f0109, 0x010f0501,
    0x010f0505, 0x010f050d, 0x010f0707, 0x010f0b01, 0x010f0b09, 0x03010101, 0x03010103, 0x03010105,
    0x03010109, 0x03010301, 0x03010303, 0x03010307, 0x0301030b, 0x0301030f, 0x03010501, 0x03010505,
    0x03010703, 0x03010709, 0x0301070d, 0x03010b09, 0x03010b0d, 0x03010d03, 0x03010f05, 0x03030101,
    0x03030103, 0x03030107, 0x0303010d, 0x03030301, 0x03030309, 0x03030503, 0x03030701, 0x03030707,
    0x03030903, 0x03030b01, 0x03030b05, 0x03030f01, 0x03030f0d, 0x03050101, 0x03050305, 0x0305030b,
    0x0305030f, 0x03050501, 0x03050509, 0x03050705, 0x03050901, 0x03050907, 0x03050b0b, 0x03050d01,
    0x03050f05, 0x03070103, 0x03070109, 0x0307010f, 0x03070301, 0x03070307, 0x03070503, 0x0307050f,
    0x03070701, 0x03070709, 0x03070903, 0x03070d05, 0x03070f01, 0x03090107, 0x0309010b, 0x03090305,
    0x03090309, 0x03090703, 0x03090707, 0x03090905, 0x0309090d, 0x03090b01, 0x03090b09, 0x030b0103,
    0x030b0301, 0x030b0307, 0x030b0503, 0x030b0701, 0x030b0705, 0x030b0b03, 0x030d0501, 0x030d0509,
    0x030d050f, 0x030d0909, 0x030d090d, 0x030f0103, 0x030f0107, 0x030f0301, 0x030f0305, 0x030f0503,
    0x030f070b, 0x030f0903, 0x030f0d05, 0x030f0f01, 0x05010101, 0x05010103, 0x05010107, 0x0501010b,
    0x0501010f, 0x05010301, 0x05010305, 0x05010309, 0x0501030d, 0x05010503, 0x05010507, 0x0501050f,
    0x05010701, 0x05010705, 0x05010903, 0x05010907, 0x0501090b, 0x05010b01, 0x05010b05, 0x05010d0f,
    0x05010f01, 0x05010f07, 0x05010f0b, 0x05030101, 0x05030105, 0x05030301, 0x05030307, 0x0503030f,
    0x05030505, 0x0503050b, 0x05030703, 0x05030709, 0x05030905, 0x05030b03, 0x05050103, 0x05050109,
    0x0505010f, 0x05050503, 0x05050507, 0x05050701, 0x0505070f, 0x05050903, 0x05050b07, 0x05050b0f,
    0x05050f03, 0x05050f09, 0x05070101, 0x05070105, 0x0507010b, 0x05070303, 0x05070505, 0x05070509,
    0x05070703, 0x05070707, 0x05070905, 0x05070b01, 0x05070d0d, 0x05090103, 0x0509010f, 0x05090501,
    0x05090507, 0x05090705, 0x0509070b, 0x05090903, 0x05090f05, 0x05090f0b, 0x050b0109, 0x050b0303,
    0x050b0505, 0x050b070f, 0x050b0901, 0x050b0b07, 0x050b0f01, 0x050d0101, 0x050d0105, 0x050d010f,
    0x050d0503, 0x050d0b0b, 0x050d0d03, 0x050f010b, 0x050f0303, 0x050f050d, 0x050f0701, 0x050f0907,
    0x050f0b01, 0x07010105, 0x07010303, 0x07010307, 0x0701030b, 0x0701030f, 0x07010505, 0x07010703,
    0x07010707, 0x0701070b, 0x07010905, 0x07010909, 0x0701090f, 0x07010b03, 0x07010d07, 0x07010f03,
    0x07030103, 0x07030107, 0x0703010b, 0x07030309, 0x07030503, 0x07030507, 0x07030901, 0x07030d01,
    0x07030f05, 0x07030f0d, 0x07050101, 0x07050305, 0x07050501, 0x07050705, 0x07050709, 0x07050b01,
    0x07070103, 0x07070301, 0x07070309, 0x07070503, 0x07070507, 0x0707050f, 0x07070701, 0x07070903,
    0x07070907, 0x0707090f, 0x07070b0b, 0x07070f07, 0x07090107, 0x07090303, 0x0709030d, 0x07090505,
    0x07090703, 0x07090b05, 0x07090d01, 0x07090d09, 0x070b0103, 0x070b0301, 0x070b0305, 0x070b050b,
    0x070b0705, 0x070b0909, 0x070b0b0d, 0x070b0f07, 0x070d030d, 0x070d0903, 0x070f0103, 0x070f0107,
    0x070f0501, 0x070f0505, 0x070f070b, 0x09010101, 0x09010109, 0x09010305, 0x09010501, 0x09010509,
    0x0901050f, 0x09010705, 0x09010903, 0x09010b01, 0x09010f01, 0x09030105, 0x0903010f, 0x09030303,
    0x09030307, 0x09030505, 0x09030701, 0x0903070b, 0x09030907, 0x09030b03, 0x09030b0b, 0x09050103,
    0x09050107, 0x09050301, 0x0905030b, 0x09050503, 0x09050707, 0x09050901, 0x09050b0f, 0x09050d05,
    0x09050f01, 0x09070109, 0x09070303, 0x09070307, 0x09070501, 0x09070505, 0x09070703, 0x0907070b,
    0x09090101, 0x09090105, 0x09090509, 0x0909070f, 0x09090901, 0x09090f03, 0x090b010b, 0x090b010f,
    0x090b0503, 0x090b0d05, 0x090d0307, 0x090d0709, 0x090d0d01, 0x090f0301, 0x090f030b, 0x090f0701,
    0x090f0907, 0x090f0b03, 0x0b010105, 0x0b010301, 0x0b010309, 0x0b010505, 0x0b010901, 0x0b010909,
    0x0b01090f, 0x0b010b05, 0x0b010d0d, 0x0b010f09, 0x0b030103, 0x0b030107, 0x0b03010b, 0x0b030305,
    0x0b030503, 0x0b030705, 0x0b030f05, 0x0b050101, 0x0b050303, 0x0b050507, 0x0b050701, 0x0b05070d,
    0x0b050b07, 0x0b070105, 0x0b07010f, 0x0b070301, 0x0b07050f, 0x0b070909, 0x0b070b03, 0x0b070d0b,
    0x0b070f07, 0x0b090103, 0x0b090109, 0x0b090501, 0x0b090705, 0x0b09090d, 0x0b0b0305, 0x0b0b050d,
    0x0b0b0b03, 0x0b0b0b07, 0x0b0d0905, 0x0b0f0105, 0x0b0f0109, 0x0b0f0505, 0x0d010303, 0x0d010307,
    0x0d01030b, 0x0d010703, 0x0d010707, 0x0d010d01, 0x0d030101, 0x0d030501, 0x0d03050f, 0x0d030d09,
    0x0d050305, 0x0d050709, 0x0d050905, 0x0d050b0b, 0x0d050d05, 0x0d050f01, 0x0d070101, 0x0d070309,
    0x0d070503, 0x0d070901, 0x0d09050b, 0x0d090907, 0x0d090d05, 0x0d0b0101, 0x0d0b0107, 0x0d0b0709,
    0x0d0b0d01, 0x0d0d010b, 0x0d0d0901, 0x0d0f0303, 0x0d0f0307, 0x0f010101, 0x0f010109, 0x0f01010f,
    0x0f010501, 0x0f010505, 0x0f01070d, 0x0f010901, 0x0f010b09, 0x0f010d05, 0x0f030105, 0x0f030303,
    0x0f030509, 0x0f030907, 0x0f03090b, 0x0f050103, 0x0f050109, 0x0f050301, 0x0f05030d, 0x0f050503,
    0x0f050701, 0x0f050b03, 0x0f070105, 0x0f070705, 0x0f07070b, 0x0f070b07, 0x0f090103, 0x0f09010b,
    0x0f090307, 0x0f090501, 0x0f090b01, 0x0f0b0505, 0x0f0b0905, 0x0f0d0105, 0x0f0d0703, 0x0f0f0101,
], dtype="<u4")  # ggml-common.h's iq3s_grid: four odd magnitudes 1..15 per entry, low byte first
def _iq3s_magnitudes():
    """IQ3S_GRID as [512, 4] magnitudes, the entry's first element first."""
    return IQ3S_GRID.view(np.uint8).reshape(512, 4)


def _iq3s_nearest_entries(target):
    """The grid entry nearest each row of target [n, 4]. Each element rounded to the nearest odd
    magnitude gives the nearest of all 4096 quadruples; where that one is an entry (ggml's map
    of them), it is the nearest entry too. The others are searched, element by element in
    float32 (no BLAS, whose sums differ between machines: the test files must not)."""
    grid = _iq3s_magnitudes()
    level = np.clip(_nearest((target - 1) / 2), 0, 7).astype(np.int64)
    shifts = 3 * np.arange(4)
    entry_of = np.full(4096, -1, dtype=np.int64)
    entry_of[((grid.astype(np.int64) - 1) // 2 << shifts).sum(axis=1)] = np.arange(512)
    index = entry_of[(level << shifts).sum(axis=1)]
    off = np.flatnonzero(index < 0)
    g = grid.astype(np.float32)
    for start in range(0, len(off), 16384):
        rows = off[start:start + 16384]
        distance = np.zeros((len(rows), 512), dtype=np.float32)
        for i in range(4):
            distance += (target[rows, i][:, None] - g[None, :, i]) ** 2
        index[rows] = distance.argmin(axis=1)
    return index


def quantize_iq3_s(x):
    """8 sub-blocks of 32, x ~ (d * (1 + 2 * ls)) * magnitude * sign with 4-bit ls and magnitudes
    four at a time from IQ3S_GRID: d puts the largest sub-block step on ls = 15, each step puts its
    sub-block's largest magnitude near 15, and each group of four takes the nearest grid entry."""
    b = _blocks(x, QK_K)
    sub = b.reshape(-1, 8, 32)
    step_wanted = np.abs(sub).max(axis=2) / 15.0
    d = f16_values(f16_bits(step_wanted.max(axis=1) / 31.0))
    ratio = np.divide(step_wanted, d[:, None], out=np.zeros_like(step_wanted), where=d[:, None] != 0)
    ls = np.clip(_nearest((ratio - 1) / 2), 0, 15).astype(np.uint8)
    step = (d[:, None] * (1 + 2 * ls.astype(np.float32))).astype(np.float32)
    target = np.divide(np.abs(sub), step[:, :, None], out=np.zeros_like(sub),
                       where=step[:, :, None] != 0).reshape(-1, 4)
    index = _iq3s_nearest_entries(target).reshape(-1, 64)
    negative = (sub.reshape(-1, 256) < 0).astype(np.uint8).reshape(-1, 32, 8)
    out = _record([("d", "<u2"), ("qs", "u1", 64), ("qh", "u1", 8), ("signs", "u1", 32),
                   ("scales", "u1", 4)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = (index & 0xFF).astype(np.uint8)
    top = (index >> 8).reshape(-1, 8, 8)  # group 8j + k's bit 8 at bit k of qh[j]
    out["qh"] = (top << np.arange(8)).sum(axis=2).astype(np.uint8)
    out["signs"] = (negative << np.arange(8, dtype=np.uint8)).sum(axis=2).astype(np.uint8)
    out["scales"] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    return out.tobytes()


IQ3XXS_GRID = np.array([
    0x04040404, 0x04040414, 0x04040424, 0x04040c0c, 0x04040c1c, 0x04040c3e, 0x04041404, 0x04041414,
    0x04041c0c, 0x04042414, 0x04043e1c, 0x04043e2c, 0x040c040c, 0x040c041c, 0x040c0c04, 0x040c0c14,
    0x040c140c, 0x040c142c, 0x040c1c04, 0x040c1c14, 0x040c240c, 0x040c2c24, 0x040c3e04, 0x04140404,
    0x04140414, 0x04140424, 0x04140c0c, 0x04141404, 0x04141414, 0x04141c0c, 0x04141c1c, 0x04141c3e,
    0x04142c0c, 0x04142c3e, 0x04143e2c, 0x041c040c, 0x041c043e, 0x041c0c04, 0x041c0c14, 0x041c142c,
    0x041c3e04, 0x04240c1c, 0x04241c3e, 0x04242424, 0x04242c3e, 0x04243e1c, 0x04243e2c, 0x042c040c,
    0x042c043e, 0x042c1c14, 0x042c2c14, 0x04341c2c, 0x04343424, 0x043e0c04, 0x043e0c24, 0x043e0c34,
    0x043e241c, 0x043e340c, 0x0c04040c, 0x0c04041c, 0x0c040c04, 0x0c040c14, 0x0c04140c, 0x0c04141c,
    0x0c041c04, 0x0c041c14, 0x0c041c24, 0x0c04243e, 0x0c042c04, 0x0c0c0404, 0x0c0c0414, 0x0c0c0c0c,
    0x0c0c1404, 0x0c0c1414, 0x0c14040c, 0x0c14041c, 0x0c140c04, 0x0c140c14, 0x0c14140c, 0x0c141c04,
    0x0c143e14, 0x0c1c0404, 0x0c1c0414, 0x0c1c1404, 0x0c1c1c0c, 0x0c1c2434, 0x0c1c3434, 0x0c24040c,
    0x0c24042c, 0x0c242c04, 0x0c2c1404, 0x0c2c1424, 0x0c2c2434, 0x0c2c3e0c, 0x0c34042c, 0x0c3e1414,
    0x0c3e2404, 0x14040404, 0x14040414, 0x14040c0c, 0x14040c1c, 0x14041404, 0x14041414, 0x14041434,
    0x14041c0c, 0x14042414, 0x140c040c, 0x140c041c, 0x140c042c, 0x140c0c04, 0x140c0c14, 0x140c140c,
    0x140c1c04, 0x140c341c, 0x140c343e, 0x140c3e04, 0x14140404, 0x14140414, 0x14140c0c, 0x14140c3e,
    0x14141404, 0x14141414, 0x14141c3e, 0x14142404, 0x14142c2c, 0x141c040c, 0x141c0c04, 0x141c0c24,
    0x141c3e04, 0x141c3e24, 0x14241c2c, 0x14242c1c, 0x142c041c, 0x142c143e, 0x142c240c, 0x142c3e24,
    0x143e040c, 0x143e041c, 0x143e0c34, 0x143e242c, 0x1c04040c, 0x1c040c04, 0x1c040c14, 0x1c04140c,
    0x1c04141c, 0x1c042c04, 0x1c04342c, 0x1c043e14, 0x1c0c0404, 0x1c0c0414, 0x1c0c1404, 0x1c0c1c0c,
    0x1c0c2424, 0x1c0c2434, 0x1c14040c, 0x1c14041c, 0x1c140c04, 0x1c14142c, 0x1c142c14, 0x1c143e14,
    0x1c1c0c0c, 0x1c1c1c1c, 0x1c241c04, 0x1c24243e, 0x1c243e14, 0x1c2c0404, 0x1c2c0434, 0x1c2c1414,
    0x1c2c2c2c, 0x1c340c24, 0x1c341c34, 0x1c34341c, 0x1c3e1c1c, 0x1c3e3404, 0x24040424, 0x24040c3e,
    0x24041c2c, 0x24041c3e, 0x24042c1c, 0x24042c3e, 0x240c3e24, 0x24141404, 0x24141c3e, 0x24142404,
    0x24143404, 0x24143434, 0x241c043e, 0x241c242c, 0x24240424, 0x24242c0c, 0x24243424, 0x242c142c,
    0x242c241c, 0x242c3e04, 0x243e042c, 0x243e0c04, 0x243e0c14, 0x243e1c04, 0x2c040c14, 0x2c04240c,
    0x2c043e04, 0x2c0c0404, 0x2c0c0434, 0x2c0c1434, 0x2c0c2c2c, 0x2c140c24, 0x2c141c14, 0x2c143e14,
    0x2c1c0414, 0x2c1c2c1c, 0x2c240c04, 0x2c24141c, 0x2c24143e, 0x2c243e14, 0x2c2c0414, 0x2c2c1c0c,
    0x2c342c04, 0x2c3e1424, 0x2c3e2414, 0x34041424, 0x34042424, 0x34042434, 0x34043424, 0x340c140c,
    0x340c340c, 0x34140c3e, 0x34143424, 0x341c1c04, 0x341c1c34, 0x34242424, 0x342c042c, 0x342c2c14,
    0x34341c1c, 0x343e041c, 0x343e140c, 0x3e04041c, 0x3e04042c, 0x3e04043e, 0x3e040c04, 0x3e041c14,
    0x3e042c14, 0x3e0c1434, 0x3e0c2404, 0x3e140c14, 0x3e14242c, 0x3e142c14, 0x3e1c0404, 0x3e1c0c2c,
    0x3e1c1c1c, 0x3e1c3404, 0x3e24140c, 0x3e24240c, 0x3e2c0404, 0x3e2c0414, 0x3e2c1424, 0x3e341c04,
], dtype="<u4")  # ggml-common.h's iq3xxs_grid: four of the magnitudes 4, 12, ..., 52, 62, low byte first
IQ3XXS_LEVELS = np.array([4, 12, 20, 28, 36, 44, 52, 62], dtype=np.float32)


def _iq3xxs_magnitudes():
    """IQ3XXS_GRID as [256, 4] magnitudes, the entry's first element first."""
    return IQ3XXS_GRID.view(np.uint8).reshape(256, 4)


def _iq3xxs_nearest_entries(target):
    """The grid entry nearest each row of target [n, 4]: where each element's nearest level makes
    an entry, that one; the others searched element by element in float32 (no BLAS)."""
    grid = _iq3xxs_magnitudes()
    level = np.abs(target[:, :, None] - IQ3XXS_LEVELS[None, None, :]).argmin(axis=2)
    level_of = {int(m): i for i, m in enumerate(IQ3XXS_LEVELS)}
    shifts = 3 * np.arange(4)
    entry_of = np.full(4096, -1, dtype=np.int64)
    grid_levels = np.vectorize(level_of.get)(grid.astype(np.int64))
    entry_of[(grid_levels << shifts).sum(axis=1)] = np.arange(256)
    index = entry_of[(level.astype(np.int64) << shifts).sum(axis=1)]
    off = np.flatnonzero(index < 0)
    g = grid.astype(np.float32)
    for start in range(0, len(off), 16384):
        rows = off[start:start + 16384]
        distance = np.zeros((len(rows), 256), dtype=np.float32)
        for i in range(4):
            distance += (target[rows, i][:, None] - g[None, :, i]) ** 2
        index[rows] = distance.argmin(axis=1)
    return index


def quantize_iq3_xxs(x):
    """8 sub-blocks of 32, x ~ d * (0.5 + ls) * 0.5 * magnitude * sign with 4-bit ls and magnitudes
    four at a time from IQ3XXS_GRID: d puts the largest sub-block step on ls = 15, each step puts
    its sub-block's largest magnitude near 62, and each group of four takes the nearest grid
    entry. Only seven signs of each eight are stored (the eighth is their parity), so where a
    group of eight has an odd count of negatives the sign of its smallest element is flipped."""
    b = _blocks(x, QK_K)
    sub = b.reshape(-1, 8, 32)
    step_wanted = np.abs(sub).max(axis=2) / 62.0
    d = f16_values(f16_bits(4.0 * step_wanted.max(axis=1) / 31.0))
    ratio = np.divide(4.0 * step_wanted, d[:, None], out=np.zeros_like(step_wanted),
                      where=d[:, None] != 0)
    ls = np.clip(_nearest((ratio - 1) / 2), 0, 15).astype(np.uint32)
    step = (d[:, None] * (0.5 + ls.astype(np.float32)) * np.float32(0.5)).astype(np.float32)
    target = np.divide(np.abs(sub), step[:, :, None], out=np.zeros_like(sub),
                       where=step[:, :, None] != 0).reshape(-1, 4)
    index = _iq3xxs_nearest_entries(target).reshape(-1, 64)
    eights = b.reshape(-1, 32, 8)
    negative = (eights < 0).astype(np.uint32)
    odd = negative.sum(axis=2) % 2 == 1
    smallest = np.abs(eights).argmin(axis=2)
    flip = np.zeros_like(negative)
    np.put_along_axis(flip, smallest[:, :, None], odd[:, :, None].astype(np.uint32), axis=2)
    negative ^= flip
    seven = (negative[:, :, :7] << np.arange(7, dtype=np.uint32)).sum(axis=2).reshape(-1, 8, 4)
    words = (seven << (7 * np.arange(4, dtype=np.uint32))).sum(axis=2) | (ls << 28)
    out = _record([("d", "<u2"), ("qs", "u1", 64), ("scales_and_signs", "<u4", 8)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = index.astype(np.uint8)
    out["scales_and_signs"] = words.astype(np.uint32)
    return out.tobytes()


def quantize_q3_k(x):
    """16 sub-blocks of 16, x ~ d * s * (q - 4) with 6-bit signed s and 3-bit q: each sub-block's
    largest magnitude lands on q - 4 = -4 (its scale takes that element's sign), and, as ggml's
    quantize_row_q3_K_ref does, d puts the largest scale on s = -32 (a sign of its own)."""
    b = _blocks(x, QK_K)
    sub = b.reshape(-1, 16, 16)
    biggest = np.take_along_axis(sub, np.abs(sub).argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
    scale = -biggest / 4.0
    largest = np.take_along_axis(scale, np.abs(scale).argmax(axis=1)[:, None], axis=1)[:, 0]
    d = f16_values(f16_bits(-largest / 32.0))
    sc = np.clip(_nearest(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] != 0)),
                 -32, 31)
    step = d[:, None] * sc
    q = np.divide(sub, step[:, :, None], out=np.zeros_like(sub), where=step[:, :, None] != 0)
    q = (np.clip(_nearest(q), -4, 3) + 4).astype(np.uint8).reshape(-1, QK_K)
    # Element e: its low two bits in qs[32 * (e // 128) + e % 32] at bit 2 * (e % 128 // 32), its
    # third in hmask[e % 32] at bit e // 32.
    quarters = q.reshape(-1, 2, 4, 32)
    qs = ((quarters[:, :, 0] & 3) | ((quarters[:, :, 1] & 3) << 2) | ((quarters[:, :, 2] & 3) << 4)
          | ((quarters[:, :, 3] & 3) << 6))
    eighths = q.reshape(-1, 8, 32) >> 2
    hmask = np.zeros((len(b), 32), dtype=np.uint8)
    for bit in range(8):
        hmask |= (eighths[:, bit] << bit).astype(np.uint8)
    # Scale i + 32 (6 bits): its low nibble in byte i (i < 8) or the high nibble of byte i - 8, its
    # top two bits in byte 8 + i % 4 at bit 2 * (i // 4).
    v = (sc + 32).astype(np.uint8)
    scales = np.zeros((len(b), 12), dtype=np.uint8)
    scales[:, 0:8] = (v[:, 0:8] & 0xF) | ((v[:, 8:16] & 0xF) << 4)
    for i in range(16):
        scales[:, 8 + i % 4] |= ((v[:, i] >> 4) << (2 * (i // 4))).astype(np.uint8)
    out = _record([("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<u2")], len(b))
    out["hmask"] = hmask
    out["qs"] = qs.reshape(-1, 64)
    out["scales"] = scales
    out["d"] = f16_bits(d)
    return out.tobytes()


def quantize_q6_k(x):
    b = _blocks(x, QK_K)
    sub = b.reshape(-1, 16, 16)
    amax = np.abs(sub).max(axis=2)
    scale = amax / 31.0  # q in [-31, 31] of the 6-bit range [-32, 31]
    d = f16_values(f16_bits(scale.max(axis=1) / 127.0))
    sc = np.clip(_nearest(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] > 0)),
                 0, 127)
    # Round the scale up where rounding it down would push a quant past 31.
    step = d[:, None] * sc
    too_small = (step > 0) & (amax / np.where(step > 0, step, 1) > 31.5)
    sc = np.where(too_small, np.minimum(sc + 1, 127), sc)
    step = d[:, None] * sc
    q = np.divide(sub, step[:, :, None], out=np.zeros_like(sub), where=step[:, :, None] > 0)
    q = (np.clip(_nearest(q), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)
    # Per half of 128: quarters 0-3 of 32 elements.
    ql = np.concatenate([(q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4),
                         (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)], axis=2)
    qh = (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
    out = _record([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<u2")], len(b))
    out["ql"] = ql.reshape(-1, 128)
    out["qh"] = qh.reshape(-1, 64)
    out["scales"] = sc.astype(np.int8)
    out["d"] = f16_bits(d)
    return out.tobytes()


QUANTIZERS = {
    "f32": lambda x: np.ascontiguousarray(x, dtype="<f4").tobytes(),
    "f16": lambda x: f16_bits(x).tobytes(),
    "bf16": lambda x: bf16_bits(x).tobytes(),
    "q8_0": quantize_q8_0, "q4_0": quantize_q4_0, "q4_1": quantize_q4_1, "q5_0": quantize_q5_0,
    "q5_1": quantize_q5_1, "q2_k": quantize_q2_k, "q3_k": quantize_q3_k, "q4_k": quantize_q4_k, "q5_k": quantize_q5_k,
    "q6_k": quantize_q6_k, "iq4_nl": quantize_iq4_nl, "iq4_xs": quantize_iq4_xs,
    "iq3_s": quantize_iq3_s, "iq3_xxs": quantize_iq3_xxs,
}


# ---------------------------------------------------------------------------------------------
# Dequantizers: the blocks' bytes -> float32 [n].

def _view(raw, fields):
    return np.frombuffer(raw, dtype=np.dtype(fields))


def dequantize_q8_0(raw):
    b = _view(raw, [("d", "<u2"), ("qs", "i1", 32)])
    return (f16_values(b["d"])[:, None] * b["qs"].astype(np.float32)).reshape(-1)


def _nibbles(qs):
    """qs [n, 16] -> quants [n, 32]: low nibbles are elements 0-15, high 16-31."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.int32)


def dequantize_q4_0(raw):
    b = _view(raw, [("d", "<u2"), ("qs", "u1", 16)])
    return ((_nibbles(b["qs"]) - 8).astype(np.float32) * f16_values(b["d"])[:, None]).reshape(-1)


def dequantize_q4_1(raw):
    b = _view(raw, [("d", "<u2"), ("m", "<u2"), ("qs", "u1", 16)])
    d, m = f16_values(b["d"])[:, None], f16_values(b["m"])[:, None]
    return (_nibbles(b["qs"]).astype(np.float32) * d + m).reshape(-1)


def _q5_quants(b):
    qh = b["qh"].copy().view("<u4").reshape(-1).astype(np.uint64)
    high = (qh[:, None] >> np.arange(32, dtype=np.uint64)) & 1
    return _nibbles(b["qs"]) | (high.astype(np.int32) << 4)


def dequantize_q5_0(raw):
    b = _view(raw, [("d", "<u2"), ("qh", "u1", 4), ("qs", "u1", 16)])
    return ((_q5_quants(b) - 16).astype(np.float32) * f16_values(b["d"])[:, None]).reshape(-1)


def dequantize_q5_1(raw):
    b = _view(raw, [("d", "<u2"), ("m", "<u2"), ("qh", "u1", 4), ("qs", "u1", 16)])
    d, m = f16_values(b["d"])[:, None], f16_values(b["m"])[:, None]
    return (_q5_quants(b).astype(np.float32) * d + m).reshape(-1)


def _unpack_k_scales(scales):
    s = scales.astype(np.int32)
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _k_values(d, dmin, sc, m, q):
    """x = (d * sc) * q - dmin * m, each step in float32."""
    step = d * sc.astype(np.float32)[:, :, None]
    offset = dmin * m.astype(np.float32)[:, :, None]
    return (step * q.astype(np.float32) - offset).reshape(-1)


def _k_low_quants(qs):
    """qs [n, 128] -> 4-bit quants [n, 8, 32]: per 64-element group, low nibbles then high."""
    g = qs.reshape(-1, 4, 32).astype(np.int32)
    return np.stack([g & 0xF, g >> 4], axis=2).reshape(-1, 8, 32)


def dequantize_q4_k(raw):
    b = _view(raw, [("d", "<u2"), ("dmin", "<u2"), ("scales", "u1", 12), ("qs", "u1", 128)])
    sc, m = _unpack_k_scales(b["scales"])
    d, dmin = f16_values(b["d"])[:, None, None], f16_values(b["dmin"])[:, None, None]
    q = _k_low_quants(b["qs"])
    return _k_values(d, dmin, sc, m, q)


def dequantize_q5_k(raw):
    b = _view(raw, [("d", "<u2"), ("dmin", "<u2"), ("scales", "u1", 12), ("qh", "u1", 32),
                    ("qs", "u1", 128)])
    sc, m = _unpack_k_scales(b["scales"])
    d, dmin = f16_values(b["d"])[:, None, None], f16_values(b["dmin"])[:, None, None]
    qh = b["qh"].astype(np.int32)
    high = np.stack([(qh >> s) & 1 for s in range(8)], axis=1)  # [n, 8, 32]
    q = _k_low_quants(b["qs"]) | (high << 4)
    return _k_values(d, dmin, sc, m, q)


def dequantize_iq4_nl(raw):
    b = _view(raw, [("d", "<u2"), ("qs", "u1", 16)])
    index = np.concatenate([b["qs"] & 0xF, b["qs"] >> 4], axis=1)
    return (f16_values(b["d"])[:, None] * IQ4_NL_VALUES[index].astype(np.float32)).reshape(-1)


def dequantize_iq4_xs(raw):
    """As ggml's dequantize_row_iq4_xs: x = (d * (ls - 32)) * IQ4_NL_VALUES[q] per sub-block of 32,
    ls's low four bits in scales_l (nibble j % 2 of byte j // 2), its top two at bit 2j of
    scales_h."""
    b = _view(raw, [("d", "<u2"), ("scales_h", "<u2"), ("scales_l", "u1", 4), ("qs", "u1", 128)])
    j = np.arange(8)
    low = (b["scales_l"][:, j // 2].astype(np.int32) >> (4 * (j % 2))) & 0xF
    high = (b["scales_h"].astype(np.int32)[:, None] >> (2 * j)) & 3
    ls = (low | (high << 4)) - 32
    qs = b["qs"].reshape(-1, 8, 16)
    index = np.concatenate([qs & 0xF, qs >> 4], axis=2)
    dl = (f16_values(b["d"])[:, None] * ls.astype(np.float32)).astype(np.float32)
    return (dl[:, :, None] * IQ4_NL_VALUES[index].astype(np.float32)).reshape(-1)


def dequantize_iq3_s(raw):
    """As ggml's dequantize_row_iq3_s: x = (d * (1 + 2 * ls)) * magnitude * sign per sub-block of
    32; group i of four takes grid entry qs[i] | (bit i % 8 of qh[i // 8]) << 8, element e's sign
    is bit e % 8 of signs[e // 8], sub-block j's ls nibble j % 2 of scales[j // 2]."""
    b = _view(raw, [("d", "<u2"), ("qs", "u1", 64), ("qh", "u1", 8), ("signs", "u1", 32),
                    ("scales", "u1", 4)])
    group = np.arange(64)
    top = (b["qh"][:, group // 8].astype(np.int32) >> (group % 8)) & 1
    index = b["qs"].astype(np.int32) | (top << 8)
    magnitude = _iq3s_magnitudes()[index].reshape(-1, 8, 32).astype(np.float32)
    e = np.arange(256)
    negative = ((b["signs"][:, e // 8].astype(np.int32) >> (e % 8)) & 1).reshape(-1, 8, 32)
    j = np.arange(8)
    ls = (b["scales"][:, j // 2].astype(np.int32) >> (4 * (j % 2))) & 0xF
    dl = (f16_values(b["d"])[:, None] * (1 + 2 * ls).astype(np.float32)).astype(np.float32)
    values = dl[:, :, None] * magnitude
    return np.where(negative == 1, -values, values).reshape(-1)


def dequantize_iq3_xxs(raw):
    """As ggml's dequantize_row_iq3_xxs: x = d * (0.5 + ls) * 0.5 * magnitude * sign per sub-block
    of 32; group i of four takes grid entry qs[i]; sub-block j's little-endian word holds ls in
    bits 28..31 and, for its elements 8l..8l + 7, seven sign bits at 7l (the eighth their
    parity)."""
    b = _view(raw, [("d", "<u2"), ("qs", "u1", 64), ("scales_and_signs", "<u4", 8)])
    magnitude = _iq3xxs_magnitudes()[b["qs"].astype(np.int64)].reshape(-1, 8, 32).astype(np.float32)
    words = b["scales_and_signs"].astype(np.uint32)
    seven = (words[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 0x7F  # [n, 8, 4]
    bits = (seven[:, :, :, None] >> np.arange(7, dtype=np.uint32)) & 1
    parity = bits.sum(axis=3) % 2
    negative = np.concatenate([bits, parity[:, :, :, None]], axis=3).reshape(-1, 8, 32)
    ls = (words >> 28).astype(np.float32)
    db = (f16_values(b["d"])[:, None] * (np.float32(0.5) + ls) * np.float32(0.5)).astype(np.float32)
    values = db[:, :, None] * magnitude
    return np.where(negative == 1, -values, values).reshape(-1)


def dequantize_q2_k(raw):
    """As ggml's dequantize_row_q2_K: x = (d * sc) * q - dmin * m per sub-block of 16."""
    b = _view(raw, [("scales", "u1", 16), ("qs", "u1", 64), ("d", "<u2"), ("dmin", "<u2")])
    qs = b["qs"].reshape(-1, 2, 1, 32).astype(np.int32)
    q = ((qs >> (2 * np.arange(4)[None, None, :, None])) & 3).reshape(-1, 16, 16)
    d, dmin = f16_values(b["d"])[:, None, None], f16_values(b["dmin"])[:, None, None]
    return _k_values(d, dmin, b["scales"] & 0xF, b["scales"] >> 4, q)


def dequantize_q3_k(raw):
    """As ggml's dequantize_row_q3_K: the 12 scale bytes read as three little-endian words and
    spread to sixteen 6-bit scales four at a time; x = (d * (s - 32)) * (q - 4)."""
    b = _view(raw, [("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<u2")])
    words = b["scales"].copy().view("<u4").astype(np.uint32)  # [n, 3]
    low, top = np.uint32(0x0F0F0F0F), np.uint32(0x03030303)
    aux = np.stack([(words[:, 0] & low) | (((words[:, 2] >> 0) & top) << 4),
                    (words[:, 1] & low) | (((words[:, 2] >> 2) & top) << 4),
                    ((words[:, 0] >> 4) & low) | (((words[:, 2] >> 4) & top) << 4),
                    ((words[:, 1] >> 4) & low) | (((words[:, 2] >> 6) & top) << 4)], axis=1)
    s = aux.astype("<u4").view(np.uint8).reshape(-1, 16).astype(np.int32) - 32
    qs = b["qs"].reshape(-1, 2, 32).astype(np.int32)
    hm = b["hmask"].astype(np.int32)
    q = np.empty((len(b), 256), dtype=np.int32)
    for half in range(2):
        for shift in range(4):
            low2 = (qs[:, half, :] >> (2 * shift)) & 3
            high = (hm >> (4 * half + shift)) & 1
            q[:, 128 * half + 32 * shift:128 * half + 32 * shift + 32] = low2 - np.where(high == 1, 0, 4)
    d = f16_values(b["d"])[:, None]
    dl = (d * s.astype(np.float32)).astype(np.float32)  # [n, 16]
    return (np.repeat(dl, 16, axis=1) * q.astype(np.float32)).reshape(-1)


def dequantize_q6_k(raw):
    b = _view(raw, [("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<u2")])
    ql = b["ql"].reshape(-1, 2, 64).astype(np.int32)
    qh = b["qh"].reshape(-1, 2, 32).astype(np.int32)
    quarters = [(ql[:, :, 0:32] & 0xF) | (((qh >> 0) & 3) << 4),
                (ql[:, :, 32:64] & 0xF) | (((qh >> 2) & 3) << 4),
                (ql[:, :, 0:32] >> 4) | (((qh >> 4) & 3) << 4),
                (ql[:, :, 32:64] >> 4) | (((qh >> 6) & 3) << 4)]
    q = np.stack(quarters, axis=2).reshape(-1, 16, 16) - 32  # element order within the block
    d = f16_values(b["d"])[:, None, None]
    return (d * (b["scales"].astype(np.int32)[:, :, None] * q).astype(np.float32)).reshape(-1)


DEQUANTIZERS = {
    "f32": lambda raw: np.frombuffer(raw, dtype="<f4").astype(np.float32),
    "f16": lambda raw: f16_values(np.frombuffer(raw, dtype="<u2")),
    "bf16": lambda raw: (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32),
    "q8_0": dequantize_q8_0, "q4_0": dequantize_q4_0, "q4_1": dequantize_q4_1,
    "q5_0": dequantize_q5_0, "q5_1": dequantize_q5_1, "q2_k": dequantize_q2_k, "q3_k": dequantize_q3_k, "q4_k": dequantize_q4_k,
    "q5_k": dequantize_q5_k, "q6_k": dequantize_q6_k, "iq4_nl": dequantize_iq4_nl,
    "iq4_xs": dequantize_iq4_xs, "iq3_s": dequantize_iq3_s, "iq3_xxs": dequantize_iq3_xxs,
}


def quantize(x, type_name):
    return QUANTIZERS[type_name](x)


def dequantize(raw, type_name, shape=None):
    """The float32 values of a tensor's bytes; shape in numpy order when given."""
    if type_name not in DEQUANTIZERS:
        raise ValueError("no dequantizer for ggml type %s" % type_name)
    values = DEQUANTIZERS[type_name](bytes(raw))
    return values.reshape(shape) if shape is not None else values


def tensor_nbytes(type_name, shape):
    _, block, size = GGML_TYPES[type_name]
    if shape[-1] % block:
        raise ValueError("a row of %d is not whole %s blocks of %d" % (shape[-1], type_name, block))
    return int(np.prod(shape)) // block * size


# ---------------------------------------------------------------------------------------------
# Writer

class Writer:
    """Collects metadata and tensors, then writes one GGUF v3 file (or v2 when asked)."""

    def __init__(self, version=3, alignment=DEFAULT_ALIGNMENT):
        self.version = version
        self.alignment = alignment
        self.kv = {}
        self.tensors = []  # (name, type_name, numpy shape, bytes)

    def add(self, key, value):
        if key in self.kv:
            raise ValueError("key %s written twice" % key)
        self.kv[key] = _typed(value)

    def add_tensor(self, name, type_name, shape, raw):
        shape = tuple(int(s) for s in shape)
        expected = tensor_nbytes(type_name, shape)
        if len(raw) != expected:
            raise ValueError("tensor %s: %d bytes, %s %s needs %d" % (name, len(raw), type_name, shape, expected))
        if any(t[0] == name for t in self.tensors):
            raise ValueError("tensor %s written twice" % name)
        self.tensors.append((name, type_name, shape, raw))

    def add_array(self, name, x, type_name):
        """Quantizes a float array to the type and adds it."""
        self.add_tensor(name, type_name, x.shape, quantize(x, type_name))

    def encode_header(self):
        out = [GGUF_MAGIC, struct.pack("<IQQ", self.version, len(self.tensors), len(self.kv))]
        for key, value in self.kv.items():
            out.append(_encode_string(key))
            out.append(struct.pack("<I", value.vtype))
            out.append(_encode_payload(value.vtype, value.value, value.element_type))
        offset = 0
        for name, type_name, shape, raw in self.tensors:
            out.append(_encode_string(name))
            dims = list(reversed(shape))
            out.append(struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims))
            out.append(struct.pack("<IQ", GGML_TYPES[type_name][0], offset))
            offset += self._padded(len(raw))
        return b"".join(out)

    def _padded(self, n):
        return (n + self.alignment - 1) // self.alignment * self.alignment

    def write(self, path):
        header = self.encode_header()
        with open(path, "wb") as f:
            f.write(header)
            f.write(b"\0" * (self._padded(len(header)) - len(header)))
            for _, _, _, raw in self.tensors:
                f.write(raw)
                f.write(b"\0" * (self._padded(len(raw)) - len(raw)))


# ---------------------------------------------------------------------------------------------
# Reader (for tests and the reference): the metadata as Python values, tensors as bytes.

class Tensor:
    def __init__(self, name, type_name, dims, offset, raw):
        self.name = name
        self.type_name = type_name
        self.dims = dims  # GGUF order, ne[0] first
        self.offset = offset
        self.raw = raw

    @property
    def shape(self):
        return tuple(reversed(self.dims))

    def values(self):
        return dequantize(self.raw, self.type_name, self.shape)


class Reader:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        self.pos = 0
        if self._take(4) != GGUF_MAGIC:
            raise ValueError("%s: not a GGUF file" % path)
        self.version, n_tensors, n_kv = struct.unpack("<IQQ", self._take(20))
        if self.version not in (2, 3):
            raise ValueError("%s: GGUF version %d" % (path, self.version))
        self.metadata = {}
        self.types = {}
        self.element_types = {}  # an array key's element type
        for _ in range(n_kv):
            key = self._string()
            vtype = self._u32()
            self.types[key] = vtype
            if vtype == ARRAY:
                self.element_types[key] = struct.unpack_from("<I", self.data, self.pos)[0]
            self.metadata[key] = self._value(vtype)
        self.alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._u32()
            dims = list(struct.unpack("<%dQ" % n_dims, self._take(8 * n_dims)))
            type_id, offset = struct.unpack("<IQ", self._take(12))
            infos.append((name, GGML_TYPE_BY_ID.get(type_id, "type%d" % type_id), dims, offset))
        start = (self.pos + self.alignment - 1) // self.alignment * self.alignment
        self.tensors = {}
        for name, type_name, dims, offset in infos:
            nbytes = tensor_nbytes(type_name, tuple(reversed(dims))) if type_name in GGML_TYPES else 0
            raw = self.data[start + offset:start + offset + nbytes]
            if len(raw) != nbytes:
                raise ValueError("%s: tensor %s runs past the end" % (path, name))
            self.tensors[name] = Tensor(name, type_name, dims, start + offset, raw)

    def _take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated at byte %d" % self.pos)
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw

    def _u32(self):
        return struct.unpack("<I", self._take(4))[0]

    def _string(self):
        n = struct.unpack("<Q", self._take(8))[0]
        return self._take(n).decode("utf-8")

    def _value(self, vtype):
        if vtype == STRING:
            return self._string()
        if vtype == ARRAY:
            etype = self._u32()
            n = struct.unpack("<Q", self._take(8))[0]
            return [self._value(etype) for _ in range(n)]
        fmt = _SCALAR_FORMATS[vtype]
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]


def read(path):
    return Reader(path)


def _self_test():
    """Round trip of every format and value type (python3 scripts/gguf_file.py)."""
    import tempfile
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    x[1, :256] += 3.0  # a sub-block whose minimum is positive
    # Max error as a share of max |x|: half a quantization step (q8_0: 1/254, q5_0: 1/32, q4_0:
    # 1/16; min/max formats: range / (2 levels) <= 2 / (2 levels)) plus fp16 rounding of the
    # scales; the K-quants lose more to their 6-bit sub-block scales, iq3_s to its grid's 512 of
    # 4096 quadruples, iq3_xxs to its 256 and its flipped signs.
    bounds = {"f32": 0, "f16": 1e-3, "bf16": 4e-3, "q8_0": 0.0042, "q5_0": 0.033, "q5_1": 0.034,
              "q4_0": 0.065, "q4_1": 0.067, "q6_k": 0.025, "q5_k": 0.025, "q4_k": 0.05,
              "q3_k": 0.16, "q2_k": 0.34, "iq4_nl": 0.12, "iq4_xs": 0.12, "iq3_s": 0.3,
              "iq3_xxs": 0.3}
    for name, bound in bounds.items():
        raw = quantize(x, name)
        assert len(raw) == tensor_nbytes(name, x.shape), name
        err = np.abs(dequantize(raw, name, x.shape) - x).max() / np.abs(x).max()
        assert err <= bound, "%s: max error %g > %g" % (name, err, bound)
    w = Writer(alignment=64)
    w.add("general.alignment", Value(UINT32, 64))
    w.add("a.u8", Value(UINT8, 7))
    w.add("a.i64", Value(INT64, -5))
    w.add("a.f64", Value(FLOAT64, 0.5))
    w.add("a.strings", ["x", "yz"])
    w.add("a.nested", Value(ARRAY, [Value(ARRAY, [1, 2], INT32), Value(ARRAY, [3], INT32)], ARRAY))
    w.add("a.empty", Value(ARRAY, [], UINT16))
    for name in bounds:
        w.add_array("t." + name, x, name)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.gguf")
        w.write(path)
        r = read(path)
        assert r.metadata["a.strings"] == ["x", "yz"] and r.metadata["a.nested"] == [[1, 2], [3]]
        assert r.metadata["a.empty"] == [] and r.metadata["a.f64"] == 0.5
        for name in bounds:
            t = r.tensors["t." + name]
            assert t.offset % 64 == 0 and t.dims == [512, 4]
            np.testing.assert_array_equal(t.values(), dequantize(quantize(x, name), name, x.shape))
    print("gguf_file: self-test passed")


def write_formats_file(path, rows=2, cols=512, seed=11):
    """A GGUF with, for every format, a quantized tensor q.<type> and the numpy dequantization of
    it as ref.<type> (f32), plus a key of every value type: moed's reader and dequantizers are
    checked against it (tests/unit/test_gguf.cpp)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[0, :cols // 2] += 2.5  # sub-blocks whose minimum is positive
    x[-1, :32] = 0.0  # an all-zero block: zero scales
    w = Writer()
    w.add("general.architecture", "llama")
    w.add("general.name", "formats")
    w.add("test.u8", Value(UINT8, 255))
    w.add("test.i8", Value(INT8, -128))
    w.add("test.u16", Value(UINT16, 65535))
    w.add("test.i16", Value(INT16, -32768))
    w.add("test.u32", Value(UINT32, 2**32 - 1))
    w.add("test.i32", Value(INT32, -2**31))
    w.add("test.f32", Value(FLOAT32, 0.125))
    w.add("test.bool", Value(BOOL, True))
    w.add("test.u64", Value(UINT64, 2**63 - 1))
    w.add("test.i64", Value(INT64, -2**63))
    w.add("test.f64", Value(FLOAT64, -1.5))
    w.add("test.strings", Value(ARRAY, ["", "\u2581the", "<0x0A>"], STRING))
    w.add("test.nested", Value(ARRAY, [Value(ARRAY, [1.0, 2.0], FLOAT32), Value(ARRAY, [], FLOAT32)], ARRAY))
    for name in QUANTIZERS:
        raw = quantize(x, name)
        w.add_tensor("q." + name, name, x.shape, raw)
        w.add_array("ref." + name, dequantize(raw, name, x.shape), "f32")
    w.write(path)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="GGUF writer/reader/quantizers; with no option, a self-test")
    ap.add_argument("--formats", metavar="FILE", help="write the formats check file (q.* and ref.* tensors)")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--cols", type=int, default=512)
    args = ap.parse_args()
    if args.formats:
        write_formats_file(args.formats, args.rows, args.cols)
    else:
        _self_test()
