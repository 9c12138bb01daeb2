#!/usr/bin/python3
"""GGUF files in numpy: a writer (version 3, any alignment, every metadata value type), a reader,
and for each ggml format moed reads (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q3_K, q4_K,
q5_K, q6_K, iq2_xxs, iq2_xs, iq3_xxs, iq1_s, iq4_nl, iq3_s, iq2_s, iq4_xs, iq1_m) a quantizer and a
dequantizer.

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
    "q6_k": (14, 256, 210), "q8_k": (15, 256, 292), "iq2_xxs": (16, 256, 66), "iq2_xs": (17, 256, 74),
    "iq3_xxs": (18, 256, 98), "iq1_s": (19, 256, 50), "iq4_nl": (20, 32, 18), "iq1_m": (29, 256, 56),
    "iq3_s": (21, 256, 110), "iq2_s": (22, 256, 82),
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


def _search_off_grid(target, grid, index):
    """index, with each row of target [n, k] whose index is -1 (its elements rounded to the nearest
    level make no grid entry) given its nearest entry of grid [entries, k], searched element by
    element in float32 (no BLAS, whose sums differ between machines: the test files must not),
    in chunks of 8 Mi distances."""
    off = np.flatnonzero(index < 0)
    g = grid.astype(np.float32)
    chunk = max(1, (1 << 23) // len(g))
    for start in range(0, len(off), chunk):
        rows = off[start:start + chunk]
        distance = np.zeros((len(rows), len(g)), dtype=np.float32)
        for i in range(g.shape[1]):
            distance += (target[rows, i][:, None] - g[None, :, i]) ** 2
        index[rows] = distance.argmin(axis=1)
    return index


def _iq3s_nearest_entries(target):
    """The grid entry nearest each row of target [n, 4]. Each element rounded to the nearest odd
    magnitude gives the nearest of all 4096 quadruples; where that one is an entry (ggml's map
    of them), it is the nearest entry too. The others are searched (_search_off_grid)."""
    grid = _iq3s_magnitudes()
    level = np.clip(_nearest((target - 1) / 2), 0, 7).astype(np.int64)
    shifts = 3 * np.arange(4)
    entry_of = np.full(4096, -1, dtype=np.int64)
    entry_of[((grid.astype(np.int64) - 1) // 2 << shifts).sum(axis=1)] = np.arange(512)
    index = entry_of[(level << shifts).sum(axis=1)]
    return _search_off_grid(target, grid, index)


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
    an entry, that one; the others searched (_search_off_grid)."""
    grid = _iq3xxs_magnitudes()
    level = np.abs(target[:, :, None] - IQ3XXS_LEVELS[None, None, :]).argmin(axis=2)
    level_of = {int(m): i for i, m in enumerate(IQ3XXS_LEVELS)}
    shifts = 3 * np.arange(4)
    entry_of = np.full(4096, -1, dtype=np.int64)
    grid_levels = np.vectorize(level_of.get)(grid.astype(np.int64))
    entry_of[(grid_levels << shifts).sum(axis=1)] = np.arange(256)
    index = entry_of[(level.astype(np.int64) << shifts).sum(axis=1)]
    return _search_off_grid(target, grid, index)


def _seven_signs(eights):
    """Groups of eight [..., 8] -> the negative elements as bits [..., 8] and the first seven of
    those as a number [...] (bit i: element i), the form IQ3_XXS, IQ2_XXS and IQ2_XS store: the
    eighth sign is the parity of the seven, so where a group has an odd count of negatives the
    sign of its smallest element is flipped first."""
    negative = (eights < 0).astype(np.uint32)
    odd = negative.sum(axis=-1) % 2 == 1
    smallest = np.abs(eights).argmin(axis=-1)
    flip = np.zeros_like(negative)
    np.put_along_axis(flip, smallest[..., None], odd[..., None].astype(np.uint32), axis=-1)
    negative ^= flip
    seven = (negative[..., :7] << np.arange(7, dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)
    return negative, seven


def quantize_iq3_xxs(x):
    """8 sub-blocks of 32, x ~ d * (0.5 + ls) * 0.5 * magnitude * sign with 4-bit ls and magnitudes
    four at a time from IQ3XXS_GRID: d puts the largest sub-block step on ls = 15, each step puts
    its sub-block's largest magnitude near 62, and each group of four takes the nearest grid
    entry; the signs are stored seven of each eight (_seven_signs)."""
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
    _, seven = _seven_signs(b.reshape(-1, 8, 4, 8))
    words = (seven << (7 * np.arange(4, dtype=np.uint32))).sum(axis=2) | (ls << 28)
    out = _record([("d", "<u2"), ("qs", "u1", 64), ("scales_and_signs", "<u4", 8)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = index.astype(np.uint8)
    out["scales_and_signs"] = words.astype(np.uint32)
    return out.tobytes()


IQ1S_GRID = np.array([
    0xffffffffffffffff, 0xffffffffffffff01, 0xffffffffffff0000, 0xffffffffffff01ff,
    0xffffffffffff0101, 0xffffffffff00ff00, 0xffffffffff000000, 0xffffffffff01ffff,
    0xffffffffff01ff01, 0xffffffffff0101ff, 0xffffffffff010101, 0xffffffff00ff0000,
    0xffffffff0000ff00, 0xffffffff000000ff, 0xffffffff00000001, 0xffffffff00010000,
    0xffffffff01ffffff, 0xffffffff01ffff01, 0xffffffff01ff01ff, 0xffffffff01ff0101,
    0xffffffff01000000, 0xffffffff0101ffff, 0xffffffff0101ff01, 0xffffffff010101ff,
    0xffffffff01010101, 0xffffff00ffff00ff, 0xffffff00ffff0000, 0xffffff00ff00ff00,
    0xffffff00ff0000ff, 0xffffff00ff000001, 0xffffff00ff000100, 0xffffff00ff000101,
    0xffffff00ff010000, 0xffffff0000ffff00, 0xffffff0000ff0001, 0xffffff0000ff0100,
    0xffffff000000ff01, 0xffffff0000000000, 0xffffff0000000101, 0xffffff000001ff00,
    0xffffff00000100ff, 0xffffff0000010001, 0xffffff00000101ff, 0xffffff0001ff0000,
    0xffffff000100ff00, 0xffffff00010000ff, 0xffffff0001000001, 0xffffff0001010000,
    0xffffff01ffffffff, 0xffffff01ffffff01, 0xffffff01ffff01ff, 0xffffff01ffff0101,
    0xffffff01ff000000, 0xffffff01ff01ffff, 0xffffff01ff01ff01, 0xffffff01ff0101ff,
    0xffffff01ff010101, 0xffffff0100ff0000, 0xffffff010000ff00, 0xffffff0100000100,
    0xffffff01000100ff, 0xffffff0100010100, 0xffffff0101ffffff, 0xffffff0101ffff01,
    0xffffff0101ff01ff, 0xffffff0101ff0101, 0xffffff010100ff00, 0xffffff0101000000,
    0xffffff0101000100, 0xffffff010101ffff, 0xffffff010101ff01, 0xffffff01010101ff,
    0xffffff0101010101, 0xffff00ffff00ff00, 0xffff00ffff0000ff, 0xffff00ffff000001,
    0xffff00ffff010000, 0xffff00ff00ffff00, 0xffff00ff00ff0100, 0xffff00ff00000000,
    0xffff00ff00000101, 0xffff00ff000100ff, 0xffff00ff00010000, 0xffff00ff0100ff00,
    0xffff00ff01000100, 0xffff00ff01010000, 0xffff0000ffffff00, 0xffff0000ffff00ff,
    0xffff0000ffff0000, 0xffff0000ffff0001, 0xffff0000ff000000, 0xffff0000ff0001ff,
    0xffff0000ff000101, 0xffff0000ff010100, 0xffff000000ffffff, 0xffff000000ff0000,
    0xffff000000ff0101, 0xffff00000000ffff, 0xffff00000000ff00, 0xffff0000000000ff,
    0xffff000000000000, 0xffff000000000001, 0xffff000000000100, 0xffff00000001ffff,
    0xffff00000001ff01, 0xffff000000010000, 0xffff0000000101ff, 0xffff000000010101,
    0xffff000001ffff00, 0xffff00000100ff00, 0xffff000001000000, 0xffff0000010001ff,
    0xffff000001000101, 0xffff00000101ff00, 0xffff0000010100ff, 0xffff000001010000,
    0xffff000001010001, 0xffff000001010100, 0xffff0001ff0000ff, 0xffff0001ff000100,
    0xffff000100ffff00, 0xffff000100ff00ff, 0xffff00010000ffff, 0xffff00010000ff01,
    0xffff000100000000, 0xffff0001000001ff, 0xffff00010001ffff, 0xffff00010001ff00,
    0xffff000100010001, 0xffff000100010100, 0xffff000101ff0000, 0xffff00010100ff00,
    0xffff0001010000ff, 0xffff000101000100, 0xffff01ffffffffff, 0xffff01ffffffff01,
    0xffff01ffffff01ff, 0xffff01ffffff0101, 0xffff01ffff000000, 0xffff01ffff01ffff,
    0xffff01ffff01ff01, 0xffff01ffff0101ff, 0xffff01ffff010101, 0xffff01ff00ff0000,
    0xffff01ff0000ff00, 0xffff01ff00000001, 0xffff01ff00010000, 0xffff01ff01ffffff,
    0xffff01ff01ffff01, 0xffff01ff01ff01ff, 0xffff01ff01ff0101, 0xffff01ff01000000,
    0xffff01ff0101ffff, 0xffff01ff0101ff01, 0xffff01ff010101ff, 0xffff01ff01010101,
    0xffff0100ffff0000, 0xffff0100ff00ff00, 0xffff0100ff0000ff, 0xffff0100ff000100,
    0xffff0100ff0100ff, 0xffff0100ff010000, 0xffff010000ffff00, 0xffff01000000ffff,
    0xffff01000000ff00, 0xffff010000000000, 0xffff01000001ff00, 0xffff0100000100ff,
    0xffff010000010100, 0xffff01000100ff00, 0xffff0100010000ff, 0xffff010001000001,
    0xffff010001000100, 0xffff010001010000, 0xffff0101ffffffff, 0xffff0101ffffff01,
    0xffff0101ffff01ff, 0xffff0101ffff0101, 0xffff0101ff000000, 0xffff0101ff01ffff,
    0xffff0101ff01ff01, 0xffff0101ff0101ff, 0xffff0101ff010101, 0xffff010100ff0000,
    0xffff01010000ff00, 0xffff010100000100, 0xffff01010001ff00, 0xffff010100010000,
    0xffff010101ffffff, 0xffff010101ffff01, 0xffff010101ff0000, 0xffff010101ff01ff,
    0xffff010101ff0101, 0xffff010101000000, 0xffff01010101ffff, 0xffff01010101ff01,
    0xffff0101010101ff, 0xffff010101010101, 0xff00ffffff00ffff, 0xff00ffffff00ff00,
    0xff00ffffff0000ff, 0xff00ffffff000100, 0xff00ffffff0100ff, 0xff00ffffff010000,
    0xff00ffff00ffff00, 0xff00ffff00ff00ff, 0xff00ffff0000ffff, 0xff00ffff00000000,
    0xff00ffff000001ff, 0xff00ffff0001ff00, 0xff00ffff000100ff, 0xff00ffff00010000,
    0xff00ffff00010100, 0xff00ffff0100ff00, 0xff00ffff010000ff, 0xff00ffff01000001,
    0xff00ffff0101ff00, 0xff00ffff01010000, 0xff00ff00ffffff00, 0xff00ff00ffff00ff,
    0xff00ff00ffff0001, 0xff00ff00ffff0100, 0xff00ff00ff00ffff, 0xff00ff00ff00ff01,
    0xff00ff00ff000000, 0xff00ff00ff0001ff, 0xff00ff00ff01ff00, 0xff00ff00ff0100ff,
    0xff00ff00ff010100, 0xff00ff0000ff0000, 0xff00ff0000ff0101, 0xff00ff000000ffff,
    0xff00ff000000ff00, 0xff00ff000000ff01, 0xff00ff00000000ff, 0xff00ff0000000000,
    0xff00ff0000000001, 0xff00ff0000000100, 0xff00ff000001ffff, 0xff00ff0000010000,
    0xff00ff0001ff00ff, 0xff00ff000100ff01, 0xff00ff0001000000, 0xff00ff000101ff00,
    0xff00ff00010100ff, 0xff00ff01ff00ff00, 0xff00ff01ff0000ff, 0xff00ff01ff000001,
    0xff00ff01ff010000, 0xff00ff0100ffffff, 0xff00ff0100ff0001, 0xff00ff0100ff0100,
    0xff00ff010000ff01, 0xff00ff0100000000, 0xff00ff01000001ff, 0xff00ff0100000101,
    0xff00ff01000100ff, 0xff00ff0100010001, 0xff00ff0101ff0000, 0xff00ff010100ff00,
    0xff00ff01010000ff, 0xff00ff0101000001, 0xff00ff0101010000, 0xff0000ffffffff00,
    0xff0000ffffff0001, 0xff0000ffffff0100, 0xff0000ffff0000ff, 0xff0000ffff000000,
    0xff0000ffff0001ff, 0xff0000ffff000100, 0xff0000ffff01ff00, 0xff0000ffff010001,
    0xff0000ff00ffff00, 0xff0000ff00ff0000, 0xff0000ff00ff0001, 0xff0000ff00ff01ff,
    0xff0000ff00ff0101, 0xff0000ff0000ff00, 0xff0000ff000000ff, 0xff0000ff00000000,
    0xff0000ff00000001, 0xff0000ff00000100, 0xff0000ff0001ff01, 0xff0000ff00010000,
    0xff0000ff000101ff, 0xff0000ff01ff00ff, 0xff0000ff01ff0100, 0xff0000ff0100ffff,
    0xff0000ff010000ff, 0xff0000ff01000000, 0xff0000ff010001ff, 0xff0000ff01000100,
    0xff0000ff01000101, 0xff0000ff0101ff00, 0xff0000ff010100ff, 0xff0000ff01010000,
    0xff0000ff01010100, 0xff000000ffffff01, 0xff000000ffff0000, 0xff000000ffff0101,
    0xff000000ff00ff00, 0xff000000ff0000ff, 0xff000000ff000000, 0xff000000ff000001,
    0xff000000ff000100, 0xff000000ff01ffff, 0xff000000ff01ff01, 0xff000000ff010000,
    0xff000000ff0101ff, 0xff000000ff010101, 0xff00000000ffff00, 0xff00000000ff00ff,
    0xff00000000ff0000, 0xff00000000ff0001, 0xff0000000000ff00, 0xff0000000000ff01,
    0xff000000000000ff, 0xff00000000000000, 0xff00000000000001, 0xff00000000000100,
    0xff00000000000101, 0xff0000000001ff00, 0xff000000000100ff, 0xff00000000010000,
    0xff00000000010001, 0xff00000000010100, 0xff00000001ffffff, 0xff00000001ffff01,
    0xff00000001ff00ff, 0xff00000001ff0000, 0xff00000001ff01ff, 0xff00000001ff0101,
    0xff0000000100ffff, 0xff0000000100ff00, 0xff000000010000ff, 0xff00000001000000,
    0xff00000001000001, 0xff00000001000100, 0xff00000001000101, 0xff0000000101ffff,
    0xff0000000101ff01, 0xff00000001010000, 0xff000001ffffff00, 0xff000001ffff00ff,
    0xff000001ffff0000, 0xff000001ffff0001, 0xff000001ff000000, 0xff000001ff000001,
    0xff000001ff0001ff, 0xff000001ff000101, 0xff000001ff01ff00, 0xff000001ff010001,
    0xff00000100ffffff, 0xff00000100ffff01, 0xff00000100ff00ff, 0xff00000100ff0000,
    0xff00000100ff01ff, 0xff00000100ff0101, 0xff0000010000ff00, 0xff00000100000000,
    0xff00000100000001, 0xff000001000001ff, 0xff00000100000100, 0xff0000010001ff00,
    0xff000001000100ff, 0xff00000100010000, 0xff000001000101ff, 0xff00000100010100,
    0xff00000100010101, 0xff00000101ff0001, 0xff00000101ff0101, 0xff0000010100ff01,
    0xff00000101000000, 0xff000001010100ff, 0xff00000101010100, 0xff0001ffff00ff00,
    0xff0001ffff000001, 0xff0001ffff010000, 0xff0001ff00ffff00, 0xff0001ff00ff00ff,
    0xff0001ff00ff0001, 0xff0001ff00ff0100, 0xff0001ff0000ffff, 0xff0001ff00000000,
    0xff0001ff000001ff, 0xff0001ff00000101, 0xff0001ff0001ffff, 0xff0001ff0001ff00,
    0xff0001ff000100ff, 0xff0001ff00010001, 0xff0001ff00010100, 0xff0001ff01ff0000,
    0xff0001ff0100ff00, 0xff0001ff010000ff, 0xff0001ff01010000, 0xff000100ff00ffff,
    0xff000100ff00ff01, 0xff000100ff000000, 0xff000100ff000101, 0xff000100ff01ff00,
    0xff000100ff010000, 0xff00010000ffff01, 0xff00010000ff00ff, 0xff00010000ff0000,
    0xff00010000ff01ff, 0xff0001000000ff00, 0xff000100000000ff, 0xff00010000000000,
    0xff00010000000001, 0xff00010000000100, 0xff00010000000101, 0xff0001000001ffff,
    0xff00010000010000, 0xff00010000010101, 0xff00010001ff0100, 0xff0001000100ff00,
    0xff0001000100ff01, 0xff00010001000000, 0xff000100010001ff, 0xff0001000101ff00,
    0xff00010001010001, 0xff00010001010100, 0xff000101ffff0100, 0xff000101ff000001,
    0xff000101ff0100ff, 0xff000101ff010001, 0xff00010100ff00ff, 0xff00010100ff0001,
    0xff00010100ff0100, 0xff0001010000ffff, 0xff0001010000ff01, 0xff00010100000000,
    0xff000101000001ff, 0xff0001010001ff00, 0xff00010100010001, 0xff00010100010100,
    0xff00010101ff0000, 0xff0001010100ff00, 0xff00010101000001, 0xff00010101000101,
    0xff01ffffffffffff, 0xff01ffffffffff01, 0xff01ffffffff01ff, 0xff01ffffffff0101,
    0xff01ffffff000000, 0xff01ffffff01ffff, 0xff01ffffff01ff01, 0xff01ffffff010000,
    0xff01ffffff0101ff, 0xff01ffffff010101, 0xff01ffff00ff0000, 0xff01ffff0000ff00,
    0xff01ffff00000100, 0xff01ffff0001ff00, 0xff01ffff00010000, 0xff01ffff01ffffff,
    0xff01ffff01ffff01, 0xff01ffff01ff01ff, 0xff01ffff01ff0101, 0xff01ffff01000000,
    0xff01ffff0101ffff, 0xff01ffff0101ff01, 0xff01ffff01010000, 0xff01ffff010101ff,
    0xff01ffff01010101, 0xff01ff00ffff0000, 0xff01ff00ff00ff00, 0xff01ff00ff0000ff,
    0xff01ff00ff000100, 0xff01ff00ff010000, 0xff01ff0000ffff01, 0xff01ff0000ff00ff,
    0xff01ff0000ff0100, 0xff01ff0000000000, 0xff01ff00000001ff, 0xff01ff0000000101,
    0xff01ff000001ff00, 0xff01ff00000100ff, 0xff01ff0000010000, 0xff01ff0000010001,
    0xff01ff0001ff0000, 0xff01ff000100ffff, 0xff01ff0001000001, 0xff01ff0001000100,
    0xff01ff0001010000, 0xff01ff01ffffff00, 0xff01ff01ffff01ff, 0xff01ff01ffff0101,
    0xff01ff01ff00ff00, 0xff01ff01ff000000, 0xff01ff01ff01ffff, 0xff01ff01ff01ff01,
    0xff01ff01ff0101ff, 0xff01ff01ff010101, 0xff01ff0100ff0000, 0xff01ff010000ff00,
    0xff01ff0100000001, 0xff01ff0100000100, 0xff01ff0100010000, 0xff01ff0101ffff00,
    0xff01ff0101ff01ff, 0xff01ff0101ff0101, 0xff01ff010100ff00, 0xff01ff0101000000,
    0xff01ff010101ffff, 0xff01ff010101ff01, 0xff01ff01010101ff, 0xff01ff0101010101,
    0xff0100ffffff0000, 0xff0100ffff0000ff, 0xff0100ffff000001, 0xff0100ffff000100,
    0xff0100ffff010000, 0xff0100ff00ff00ff, 0xff0100ff00ff0000, 0xff0100ff00ff0001,
    0xff0100ff00ff0100, 0xff0100ff0000ff01, 0xff0100ff00000000, 0xff0100ff000001ff,
    0xff0100ff00000101, 0xff0100ff00010001, 0xff0100ff01ff0000, 0xff0100ff0100ff00,
    0xff0100ff010000ff, 0xff0100ff01000100, 0xff0100ff0101ff00, 0xff0100ff01010000,
    0xff010000ffff0100, 0xff010000ff000000, 0xff010000ff01ff00, 0xff010000ff010100,
    0xff01000000ffffff, 0xff01000000ff0000, 0xff01000000ff01ff, 0xff0100000000ff00,
    0xff010000000000ff, 0xff01000000000000, 0xff01000000000100, 0xff0100000001ff01,
    0xff01000000010000, 0xff010000000101ff, 0xff01000001ff0100, 0xff0100000100ffff,
    0xff010000010000ff, 0xff01000001000000, 0xff010000010001ff, 0xff01000001000101,
    0xff0100000101ff00, 0xff010000010100ff, 0xff01000001010001, 0xff01000001010100,
    0xff010001ffff0000, 0xff010001ff00ffff, 0xff010001ff00ff01, 0xff010001ff000100,
    0xff010001ff010000, 0xff01000100ffff00, 0xff01000100ff0100, 0xff01000100000000,
    0xff0100010001ffff, 0xff0100010001ff00, 0xff01000100010100, 0xff01000101ff00ff,
    0xff01000101ff0001, 0xff0100010100ffff, 0xff01000101000101, 0xff0101ffffffffff,
    0xff0101ffffffff01, 0xff0101ffffff01ff, 0xff0101ffffff0101, 0xff0101ffff000000,
    0xff0101ffff01ffff, 0xff0101ffff01ff01, 0xff0101ffff0101ff, 0xff0101ffff010101,
    0xff0101ff00ff0000, 0xff0101ff0000ff00, 0xff0101ff000000ff, 0xff0101ff00010000,
    0xff0101ff01ffffff, 0xff0101ff01ffff01, 0xff0101ff01ff01ff, 0xff0101ff01ff0101,
    0xff0101ff0101ffff, 0xff0101ff0101ff01, 0xff0101ff010101ff, 0xff0101ff01010101,
    0xff010100ffff0100, 0xff010100ff00ff00, 0xff010100ff0000ff, 0xff010100ff000100,
    0xff010100ff010000, 0xff01010000ff0001, 0xff01010000ff0100, 0xff0101000000ff01,
    0xff01010000000000, 0xff0101000001ff00, 0xff010100000100ff, 0xff01010000010001,
    0xff01010000010100, 0xff01010001ff0000, 0xff0101000100ffff, 0xff01010001000001,
    0xff01010001000100, 0xff010100010100ff, 0xff01010001010000, 0xff010101ffffffff,
    0xff010101ffffff01, 0xff010101ffff01ff, 0xff010101ffff0101, 0xff010101ff01ffff,
    0xff010101ff01ff01, 0xff010101ff0101ff, 0xff010101ff010101, 0xff01010100ff0000,
    0xff0101010000ff00, 0xff01010100000001, 0xff01010100000100, 0xff01010100010000,
    0xff01010101ffffff, 0xff01010101ffff01, 0xff01010101ff01ff, 0xff01010101ff0101,
    0xff01010101000000, 0xff0101010101ffff, 0xff0101010101ff01, 0xff010101010101ff,
    0xff01010101010101, 0x00ffffffffff0000, 0x00ffffffff00ff00, 0x00ffffffff000001,
    0x00ffffffff010000, 0x00ffffff00ff0100, 0x00ffffff0000ff01, 0x00ffffff00000000,
    0x00ffffff000001ff, 0x00ffffff00000101, 0x00ffffff0001ff00, 0x00ffffff000100ff,
    0x00ffffff00010001, 0x00ffffff010000ff, 0x00ffffff01000100, 0x00ffffff0101ff00,
    0x00ffffff01010001, 0x00ffff00ffffffff, 0x00ffff00ffffff00, 0x00ffff00ffff00ff,
    0x00ffff00ffff0001, 0x00ffff00ffff0100, 0x00ffff00ff00ff01, 0x00ffff00ff000000,
    0x00ffff00ff000001, 0x00ffff00ff0001ff, 0x00ffff00ff000101, 0x00ffff00ff01ff00,
    0x00ffff00ff010001, 0x00ffff00ff010100, 0x00ffff0000ff0000, 0x00ffff0000ff01ff,
    0x00ffff0000ff0101, 0x00ffff000000ff00, 0x00ffff00000000ff, 0x00ffff0000000000,
    0x00ffff0000000001, 0x00ffff0000000100, 0x00ffff0000000101, 0x00ffff0000010000,
    0x00ffff00000101ff, 0x00ffff0000010101, 0x00ffff0001ffff00, 0x00ffff0001ff00ff,
    0x00ffff0001ff0001, 0x00ffff000100ffff, 0x00ffff000100ff01, 0x00ffff0001000000,
    0x00ffff000101ffff, 0x00ffff000101ff00, 0x00ffff000101ff01, 0x00ffff01ffff0000,
    0x00ffff01ff00ff00, 0x00ffff01ff0000ff, 0x00ffff01ff000001, 0x00ffff01ff010000,
    0x00ffff0100ffff00, 0x00ffff010000ff01, 0x00ffff0100000000, 0x00ffff0100000101,
    0x00ffff01000100ff, 0x00ffff0100010100, 0x00ffff0101ff0100, 0x00ffff01010000ff,
    0x00ffff0101010000, 0x00ff00ffffffff00, 0x00ff00ffff000000, 0x00ff00ffff000100,
    0x00ff00ffff010100, 0x00ff00ff00ff0000, 0x00ff00ff00ff01ff, 0x00ff00ff00ff0101,
    0x00ff00ff0000ff00, 0x00ff00ff000000ff, 0x00ff00ff00000000, 0x00ff00ff00000001,
    0x00ff00ff0001ff00, 0x00ff00ff0001ff01, 0x00ff00ff00010000, 0x00ff00ff000101ff,
    0x00ff00ff00010101, 0x00ff00ff01ffff00, 0x00ff00ff01ff0001, 0x00ff00ff01ff0100,
    0x00ff00ff0100ffff, 0x00ff00ff0100ff01, 0x00ff00ff01000000, 0x00ff00ff0101ffff,
    0x00ff00ff0101ff00, 0x00ff00ff01010100, 0x00ff0000ffffff00, 0x00ff0000ffffff01,
    0x00ff0000ffff0000, 0x00ff0000ffff0101, 0x00ff0000ff00ff00, 0x00ff0000ff0000ff,
    0x00ff0000ff000000, 0x00ff0000ff000001, 0x00ff0000ff000100, 0x00ff0000ff01ffff,
    0x00ff0000ff010000, 0x00ff0000ff010101, 0x00ff000000ffff00, 0x00ff000000ff00ff,
    0x00ff000000ff0000, 0x00ff000000ff0001, 0x00ff000000ff0100, 0x00ff00000000ffff,
    0x00ff00000000ff00, 0x00ff0000000000ff, 0x00ff000000000000, 0x00ff000000000001,
    0x00ff0000000001ff, 0x00ff000000000100, 0x00ff00000001ff00, 0x00ff0000000100ff,
    0x00ff000000010000, 0x00ff000000010001, 0x00ff000000010100, 0x00ff000001ffff01,
    0x00ff000001ff00ff, 0x00ff000001ff0000, 0x00ff000001ff01ff, 0x00ff00000100ff00,
    0x00ff0000010000ff, 0x00ff000001000000, 0x00ff000001000001, 0x00ff000001000100,
    0x00ff000001000101, 0x00ff000001010000, 0x00ff0000010101ff, 0x00ff000001010101,
    0x00ff0001ffffff00, 0x00ff0001ffff0000, 0x00ff0001ffff0100, 0x00ff0001ff0000ff,
    0x00ff0001ff000000, 0x00ff0001ff0001ff, 0x00ff0001ff000101, 0x00ff0001ff01ff00,
    0x00ff0001ff0100ff, 0x00ff0001ff010100, 0x00ff000100ffffff, 0x00ff000100ffff01,
    0x00ff000100ff0000, 0x00ff000100ff01ff, 0x00ff00010000ffff, 0x00ff00010000ff00,
    0x00ff00010000ff01, 0x00ff000100000000, 0x00ff000100000001, 0x00ff000100000100,
    0x00ff00010001ff01, 0x00ff000100010000, 0x00ff0001000101ff, 0x00ff000101ffff00,
    0x00ff000101ff0000, 0x00ff000101ff0101, 0x00ff0001010000ff, 0x00ff000101000000,
    0x00ff00010101ff00, 0x00ff0001010100ff, 0x00ff000101010001, 0x00ff01ffffff0000,
    0x00ff01ffff00ff00, 0x00ff01ffff000000, 0x00ff01ffff000101, 0x00ff01ffff010000,
    0x00ff01ff00ffff01, 0x00ff01ff00ff0100, 0x00ff01ff0000ffff, 0x00ff01ff00000000,
    0x00ff01ff000001ff, 0x00ff01ff0001ff00, 0x00ff01ff000100ff, 0x00ff01ff00010001,
    0x00ff01ff00010100, 0x00ff01ff01ff0000, 0x00ff01ff0100ff00, 0x00ff01ff010000ff,
    0x00ff01ff01000001, 0x00ff01ff01000100, 0x00ff01ff01010000, 0x00ff0100ffffff00,
    0x00ff0100ffff0000, 0x00ff0100ffff0001, 0x00ff0100ffff0101, 0x00ff0100ff00ffff,
    0x00ff0100ff0000ff, 0x00ff0100ff000000, 0x00ff0100ff0001ff, 0x00ff0100ff01ff00,
    0x00ff0100ff0100ff, 0x00ff0100ff010001, 0x00ff010000ffffff, 0x00ff010000ff0000,
    0x00ff010000ff0101, 0x00ff01000000ff00, 0x00ff01000000ff01, 0x00ff0100000000ff,
    0x00ff010000000000, 0x00ff010000000001, 0x00ff010000000100, 0x00ff01000001ffff,
    0x00ff01000001ff01, 0x00ff010000010000, 0x00ff010000010001, 0x00ff010000010101,
    0x00ff010001ff0001, 0x00ff010001ff0100, 0x00ff01000100ff01, 0x00ff010001000000,
    0x00ff010001000001, 0x00ff0100010001ff, 0x00ff01000101ff00, 0x00ff0100010100ff,
    0x00ff010001010001, 0x00ff010001010100, 0x00ff0101ff000001, 0x00ff010100ff00ff,
    0x00ff010100ff0001, 0x00ff010100ff0100, 0x00ff010100000000, 0x00ff0101000001ff,
    0x00ff010100000101, 0x00ff0101000100ff, 0x00ff010100010100, 0x00ff0101010000ff,
    0x00ff010101010000, 0x0000ffffffffff00, 0x0000ffffffff00ff, 0x0000ffffffff0000,
    0x0000ffffffff0001, 0x0000ffffffff0100, 0x0000ffffff00ff01, 0x0000ffffff000000,
    0x0000ffffff000101, 0x0000ffffff01ff00, 0x0000ffffff0100ff, 0x0000ffffff010100,
    0x0000ffff00ffffff, 0x0000ffff00ff0000, 0x0000ffff00ff01ff, 0x0000ffff0000ff00,
    0x0000ffff000000ff, 0x0000ffff00000000, 0x0000ffff00000001, 0x0000ffff00000100,
    0x0000ffff00010000, 0x0000ffff000101ff, 0x0000ffff01ff0001, 0x0000ffff01ff0100,
    0x0000ffff01000000, 0x0000ffff010001ff, 0x0000ffff0101ffff, 0x0000ffff0101ff00,
    0x0000ffff01010001, 0x0000ffff01010100, 0x0000ff00ffff0000, 0x0000ff00ffff01ff,
    0x0000ff00ffff0100, 0x0000ff00ffff0101, 0x0000ff00ff00ff00, 0x0000ff00ff0000ff,
    0x0000ff00ff000000, 0x0000ff00ff000001, 0x0000ff00ff0001ff, 0x0000ff00ff000100,
    0x0000ff00ff01ffff, 0x0000ff00ff010000, 0x0000ff00ff010001, 0x0000ff00ff0101ff,
    0x0000ff00ff010101, 0x0000ff0000ffff00, 0x0000ff0000ff00ff, 0x0000ff0000ff0000,
    0x0000ff0000ff0001, 0x0000ff0000ff0100, 0x0000ff000000ffff, 0x0000ff000000ff00,
    0x0000ff000000ff01, 0x0000ff00000000ff, 0x0000ff0000000000, 0x0000ff0000000001,
    0x0000ff00000001ff, 0x0000ff0000000100, 0x0000ff0000000101, 0x0000ff000001ff00,
    0x0000ff00000100ff, 0x0000ff0000010000, 0x0000ff0000010001, 0x0000ff0000010100,
    0x0000ff0001ffff01, 0x0000ff0001ff0000, 0x0000ff000100ff00, 0x0000ff00010000ff,
    0x0000ff0001000000, 0x0000ff0001000001, 0x0000ff0001000100, 0x0000ff000101ffff,
    0x0000ff0001010000, 0x0000ff0001010101, 0x0000ff01ffffff00, 0x0000ff01ffff0001,
    0x0000ff01ff00ff01, 0x0000ff01ff000000, 0x0000ff01ff000101, 0x0000ff01ff01ff00,
    0x0000ff01ff0100ff, 0x0000ff0100ffff01, 0x0000ff0100ff0000, 0x0000ff0100ff0101,
    0x0000ff010000ff00, 0x0000ff01000000ff, 0x0000ff0100000000, 0x0000ff0100000001,
    0x0000ff0100000100, 0x0000ff010001ff01, 0x0000ff0100010000, 0x0000ff0101ff0000,
    0x0000ff010100ffff, 0x0000ff010100ff01, 0x0000ff0101000000, 0x0000ff0101000100,
    0x0000ff0101000101, 0x0000ff01010100ff, 0x000000ffffff00ff, 0x000000ffffff0000,
    0x000000ffff00ff00, 0x000000ffff0000ff, 0x000000ffff000000, 0x000000ffff000001,
    0x000000ffff0001ff, 0x000000ffff000100, 0x000000ffff01ff00, 0x000000ffff010000,
    0x000000ffff0101ff, 0x000000ffff010101, 0x000000ff00ffff00, 0x000000ff00ff00ff,
    0x000000ff00ff0000, 0x000000ff00ff0001, 0x000000ff00ff0100, 0x000000ff00ff0101,
    0x000000ff0000ffff, 0x000000ff0000ff00, 0x000000ff000000ff, 0x000000ff00000000,
    0x000000ff00000001, 0x000000ff000001ff, 0x000000ff00000100, 0x000000ff00000101,
    0x000000ff0001ff00, 0x000000ff0001ff01, 0x000000ff000100ff, 0x000000ff00010000,
    0x000000ff00010001, 0x000000ff00010100, 0x000000ff01ffffff, 0x000000ff01ff01ff,
    0x000000ff01ff0101, 0x000000ff0100ff00, 0x000000ff010000ff, 0x000000ff01000000,
    0x000000ff01000001, 0x000000ff01000100, 0x000000ff0101ff00, 0x000000ff010100ff,
    0x000000ff01010000, 0x000000ff01010101, 0x00000000ffffff00, 0x00000000ffffff01,
    0x00000000ffff00ff, 0x00000000ffff0000, 0x00000000ffff0001, 0x00000000ffff0100,
    0x00000000ff00ffff, 0x00000000ff00ff00, 0x00000000ff00ff01, 0x00000000ff0000ff,
    0x00000000ff000000, 0x00000000ff000001, 0x00000000ff000100, 0x00000000ff000101,
    0x00000000ff01ff00, 0x00000000ff0100ff, 0x00000000ff010000, 0x00000000ff010001,
    0x00000000ff010100, 0x0000000000ffffff, 0x0000000000ffff00, 0x0000000000ffff01,
    0x0000000000ff00ff, 0x0000000000ff0000, 0x0000000000ff0001, 0x0000000000ff01ff,
    0x0000000000ff0100, 0x000000000000ffff, 0x000000000000ff00, 0x000000000000ff01,
    0x00000000000000ff, 0x0000000000000000, 0x0000000000000001, 0x00000000000001ff,
    0x0000000000000100, 0x0000000000000101, 0x000000000001ffff, 0x000000000001ff00,
    0x00000000000100ff, 0x0000000000010000, 0x0000000000010001, 0x00000000000101ff,
    0x0000000000010100, 0x0000000000010101, 0x0000000001ffff00, 0x0000000001ff00ff,
    0x0000000001ff0000, 0x0000000001ff0100, 0x0000000001ff0101, 0x000000000100ffff,
    0x000000000100ff00, 0x00000000010000ff, 0x0000000001000000, 0x0000000001000001,
    0x00000000010001ff, 0x0000000001000100, 0x000000000101ff00, 0x00000000010100ff,
    0x0000000001010000, 0x0000000001010001, 0x0000000001010100, 0x00000001ffffffff,
    0x00000001ffffff00, 0x00000001ffffff01, 0x00000001ffff00ff, 0x00000001ffff0001,
    0x00000001ffff01ff, 0x00000001ffff0100, 0x00000001ff00ff00, 0x00000001ff0000ff,
    0x00000001ff000000, 0x00000001ff0001ff, 0x00000001ff000100, 0x00000001ff01ffff,
    0x00000001ff01ff00, 0x00000001ff01ff01, 0x00000001ff0100ff, 0x00000001ff010000,
    0x00000001ff010001, 0x00000001ff0101ff, 0x00000001ff010100, 0x0000000100ffff00,
    0x0000000100ff0000, 0x0000000100ff0001, 0x0000000100ff01ff, 0x0000000100ff0100,
    0x0000000100ff0101, 0x000000010000ffff, 0x000000010000ff00, 0x000000010000ff01,
    0x00000001000000ff, 0x0000000100000000, 0x0000000100000001, 0x00000001000001ff,
    0x0000000100000100, 0x0000000100000101, 0x000000010001ff00, 0x00000001000100ff,
    0x0000000100010000, 0x0000000100010100, 0x0000000101ffff01, 0x0000000101ff0000,
    0x0000000101ff0001, 0x0000000101ff01ff, 0x0000000101ff0100, 0x0000000101ff0101,
    0x000000010100ff00, 0x0000000101000000, 0x0000000101000101, 0x000000010101ff01,
    0x0000000101010000, 0x0000000101010001, 0x00000001010101ff, 0x0000000101010100,
    0x000001ffffff00ff, 0x000001ffffff0000, 0x000001ffffff0001, 0x000001ffffff0100,
    0x000001ffff00ffff, 0x000001ffff000000, 0x000001ffff0001ff, 0x000001ffff01ff00,
    0x000001ffff010101, 0x000001ff00ff0000, 0x000001ff00ff01ff, 0x000001ff00ff0101,
    0x000001ff0000ff00, 0x000001ff000000ff, 0x000001ff00000000, 0x000001ff00000001,
    0x000001ff000001ff, 0x000001ff00000100, 0x000001ff0001ffff, 0x000001ff0001ff01,
    0x000001ff000100ff, 0x000001ff00010000, 0x000001ff01ffff01, 0x000001ff01ff0100,
    0x000001ff0100ffff, 0x000001ff0100ff01, 0x000001ff01000000, 0x000001ff010001ff,
    0x000001ff0101ff00, 0x000001ff01010100, 0x00000100ffffff00, 0x00000100ffffff01,
    0x00000100ffff0000, 0x00000100ffff0101, 0x00000100ff00ff00, 0x00000100ff0000ff,
    0x00000100ff000000, 0x00000100ff000001, 0x00000100ff000100, 0x00000100ff010000,
    0x0000010000ffff00, 0x0000010000ff00ff, 0x0000010000ff0000, 0x0000010000ff0001,
    0x0000010000ff0100, 0x000001000000ffff, 0x000001000000ff00, 0x000001000000ff01,
    0x00000100000000ff, 0x0000010000000000, 0x0000010000000001, 0x00000100000001ff,
    0x0000010000000100, 0x0000010000000101, 0x000001000001ff00, 0x00000100000100ff,
    0x0000010000010000, 0x0000010000010001, 0x0000010000010100, 0x0000010001ffff00,
    0x0000010001ff0000, 0x0000010001ff0100, 0x000001000100ff00, 0x00000100010000ff,
    0x0000010001000000, 0x0000010001000001, 0x00000100010001ff, 0x0000010001000100,
    0x0000010001010000, 0x00000101ffff00ff, 0x00000101ffff01ff, 0x00000101ff000000,
    0x00000101ff000101, 0x00000101ff01ffff, 0x00000101ff010000, 0x00000101ff010001,
    0x00000101ff010100, 0x0000010100ff0000, 0x0000010100ff01ff, 0x0000010100ff0100,
    0x000001010000ff00, 0x0000010100000000, 0x0000010100000001, 0x00000101000001ff,
    0x0000010100000100, 0x000001010001ff01, 0x0000010100010000, 0x00000101000101ff,
    0x0000010100010101, 0x0000010101ffff00, 0x0000010101ff0101, 0x000001010100ff01,
    0x0000010101000000, 0x0000010101000001, 0x00000101010001ff, 0x0000010101000101,
    0x000001010101ff00, 0x0001ffffffff0000, 0x0001ffffff0000ff, 0x0001ffffff000001,
    0x0001ffffff000100, 0x0001ffffff010000, 0x0001ffff00ff00ff, 0x0001ffff0000ffff,
    0x0001ffff00000000, 0x0001ffff00000001, 0x0001ffff000001ff, 0x0001ffff00000101,
    0x0001ffff0001ff00, 0x0001ffff000100ff, 0x0001ffff00010001, 0x0001ffff00010100,
    0x0001ffff01ffff00, 0x0001ffff01000001, 0x0001ffff01010000, 0x0001ff00ffffff00,
    0x0001ff00ffff00ff, 0x0001ff00ffff0001, 0x0001ff00ffff0100, 0x0001ff00ff00ff01,
    0x0001ff00ff000000, 0x0001ff00ff01ff00, 0x0001ff00ff01ff01, 0x0001ff00ff010001,
    0x0001ff00ff010100, 0x0001ff0000ff0000, 0x0001ff0000ff0100, 0x0001ff000000ff00,
    0x0001ff0000000000, 0x0001ff0000000001, 0x0001ff0000000100, 0x0001ff0000010000,
    0x0001ff0000010001, 0x0001ff0000010101, 0x0001ff0001ff00ff, 0x0001ff0001ff0101,
    0x0001ff000100ff01, 0x0001ff0001000000, 0x0001ff000101ff00, 0x0001ff0001010001,
    0x0001ff0001010100, 0x0001ff01ff00ff00, 0x0001ff01ff000001, 0x0001ff01ff000100,
    0x0001ff0100ffffff, 0x0001ff0100ffff00, 0x0001ff0100ff0001, 0x0001ff0100000000,
    0x0001ff0100000001, 0x0001ff01000001ff, 0x0001ff010001ffff, 0x0001ff0101ff0000,
    0x0001ff010100ff00, 0x0001ff0101000001, 0x0001ff0101010000, 0x000100ffff00ff00,
    0x000100ffff00ff01, 0x000100ffff000000, 0x000100ffff000001, 0x000100ffff000101,
    0x000100ffff01ff00, 0x000100ffff010001, 0x000100ffff010100, 0x000100ff00ffffff,
    0x000100ff00ffff01, 0x000100ff00ff0000, 0x000100ff00ff01ff, 0x000100ff00ff0101,
    0x000100ff0000ff00, 0x000100ff000000ff, 0x000100ff00000000, 0x000100ff00000001,
    0x000100ff00000100, 0x000100ff00000101, 0x000100ff0001ffff, 0x000100ff0001ff01,
    0x000100ff00010000, 0x000100ff01ff00ff, 0x000100ff01ff0000, 0x000100ff01ff0100,
    0x000100ff0100ffff, 0x000100ff0100ff01, 0x000100ff010000ff, 0x000100ff01000000,
    0x000100ff01000001, 0x000100ff010001ff, 0x000100ff01000101, 0x000100ff0101ff00,
    0x000100ff010100ff, 0x000100ff01010100, 0x00010000ffff0000, 0x00010000ffff01ff,
    0x00010000ffff0101, 0x00010000ff00ff00, 0x00010000ff000000, 0x00010000ff000001,
    0x00010000ff000100, 0x0001000000ff00ff, 0x0001000000ff0000, 0x0001000000ff0001,
    0x0001000000ff0100, 0x000100000000ffff, 0x000100000000ff00, 0x00010000000000ff,
    0x0001000000000000, 0x0001000000000001, 0x0001000000000100, 0x000100000001ff00,
    0x00010000000100ff, 0x0001000000010000, 0x0001000000010001, 0x0001000000010100,
    0x0001000001ff0001, 0x0001000001ff0100, 0x0001000001ff0101, 0x000100000100ff00,
    0x0001000001000000, 0x0001000001000001, 0x0001000001000100, 0x0001000001000101,
    0x000100000101ff01, 0x0001000001010000, 0x0001000001010001, 0x00010000010101ff,
    0x00010001ffffff01, 0x00010001ffff0100, 0x00010001ff000000, 0x00010001ff01ffff,
    0x00010001ff010001, 0x00010001ff0101ff, 0x00010001ff010100, 0x0001000100ffffff,
    0x0001000100ff0000, 0x0001000100ff01ff, 0x0001000100ff0101, 0x000100010000ff00,
    0x00010001000000ff, 0x0001000100000000, 0x0001000100000001, 0x00010001000001ff,
    0x0001000100000101, 0x000100010001ffff, 0x0001000100010000, 0x00010001000101ff,
    0x0001000101ffffff, 0x0001000101ffff01, 0x0001000101ff0000, 0x0001000101ff0101,
    0x00010001010000ff, 0x0001000101000001, 0x00010001010001ff, 0x0001000101000100,
    0x000100010101ffff, 0x00010001010100ff, 0x0001000101010001, 0x0001000101010101,
    0x000101ffff000001, 0x000101ffff000100, 0x000101ffff010000, 0x000101ff00ffff00,
    0x000101ff0000ff01, 0x000101ff00000000, 0x000101ff00000101, 0x000101ff0001ff00,
    0x000101ff00010100, 0x000101ff01ff0000, 0x000101ff0100ff00, 0x000101ff010001ff,
    0x000101ff01010001, 0x00010100ffffff00, 0x00010100ffff00ff, 0x00010100ff00ffff,
    0x00010100ff000000, 0x00010100ff01ff00, 0x00010100ff0100ff, 0x00010100ff010001,
    0x00010100ff010100, 0x0001010000ffffff, 0x0001010000ffff00, 0x0001010000ff0000,
    0x0001010000ff0001, 0x0001010000ff01ff, 0x000101000000ff00, 0x00010100000000ff,
    0x0001010000000000, 0x0001010000000001, 0x0001010000000100, 0x000101000001ffff,
    0x0001010000010000, 0x0001010000010101, 0x0001010001ffff01, 0x0001010001ff00ff,
    0x0001010001ff0101, 0x0001010001000000, 0x000101000101ff00, 0x00010100010100ff,
    0x0001010001010000, 0x0001010001010100, 0x00010101ff00ff00, 0x00010101ff000001,
    0x00010101ff0001ff, 0x0001010100ffff00, 0x0001010100ff00ff, 0x0001010100ff0100,
    0x000101010000ffff, 0x0001010100000000, 0x00010101000001ff, 0x0001010100000101,
    0x00010101000100ff, 0x0001010100010000, 0x0001010100010100, 0x0001010101ff0001,
    0x00010101010000ff, 0x00010101010001ff, 0x0001010101000101, 0x0001010101010001,
    0x01ffffffffffffff, 0x01ffffffffffff01, 0x01ffffffffff01ff, 0x01ffffffffff0101,
    0x01ffffffff01ffff, 0x01ffffffff01ff01, 0x01ffffffff0101ff, 0x01ffffffff010101,
    0x01ffffff00ff0000, 0x01ffffff0000ffff, 0x01ffffff0000ff00, 0x01ffffff000000ff,
    0x01ffffff00000001, 0x01ffffff00000100, 0x01ffffff00010000, 0x01ffffff01ffffff,
    0x01ffffff01ffff01, 0x01ffffff01ff01ff, 0x01ffffff01ff0101, 0x01ffffff01000000,
    0x01ffffff0101ffff, 0x01ffffff0101ff01, 0x01ffffff010101ff, 0x01ffffff01010101,
    0x01ffff00ffff0000, 0x01ffff00ff00ff00, 0x01ffff00ff0000ff, 0x01ffff00ff000001,
    0x01ffff00ff000100, 0x01ffff00ff010000, 0x01ffff0000ffff00, 0x01ffff0000ff00ff,
    0x01ffff0000ff0100, 0x01ffff000000ffff, 0x01ffff000000ff01, 0x01ffff0000000000,
    0x01ffff0000000001, 0x01ffff00000001ff, 0x01ffff0000000100, 0x01ffff00000100ff,
    0x01ffff0000010001, 0x01ffff0000010100, 0x01ffff0001ff0000, 0x01ffff0001ff0100,
    0x01ffff00010000ff, 0x01ffff0001000001, 0x01ffff0001000100, 0x01ffff0001010000,
    0x01ffff01ffffffff, 0x01ffff01ffffff01, 0x01ffff01ffff01ff, 0x01ffff01ffff0101,
    0x01ffff01ff000000, 0x01ffff01ff01ffff, 0x01ffff01ff01ff01, 0x01ffff01ff0101ff,
    0x01ffff01ff010101, 0x01ffff010000ff00, 0x01ffff01000000ff, 0x01ffff0100000100,
    0x01ffff0100010000, 0x01ffff0101ffffff, 0x01ffff0101ffff01, 0x01ffff0101ff01ff,
    0x01ffff0101ff0101, 0x01ffff0101000000, 0x01ffff010101ffff, 0x01ffff010101ff01,
    0x01ffff01010101ff, 0x01ffff0101010101, 0x01ff00ffff0000ff, 0x01ff00ffff000100,
    0x01ff00ff00ffff00, 0x01ff00ff00ff00ff, 0x01ff00ff0000ff00, 0x01ff00ff00000000,
    0x01ff00ff00000101, 0x01ff00ff0001ff00, 0x01ff00ff000100ff, 0x01ff00ff00010100,
    0x01ff00ff010000ff, 0x01ff00ff01000100, 0x01ff0000ffffff00, 0x01ff0000ffff0100,
    0x01ff0000ff00ff01, 0x01ff0000ff000000, 0x01ff0000ff000101, 0x01ff0000ff010001,
    0x01ff0000ff010100, 0x01ff000000ffffff, 0x01ff000000ffff00, 0x01ff000000ff0000,
    0x01ff000000ff01ff, 0x01ff00000000ff00, 0x01ff0000000000ff, 0x01ff000000000000,
    0x01ff000000000001, 0x01ff000000000100, 0x01ff000000000101, 0x01ff000000010000,
    0x01ff000000010001, 0x01ff0000000101ff, 0x01ff000000010101, 0x01ff000001ffff00,
    0x01ff000001ff00ff, 0x01ff000001ff0001, 0x01ff000001ff0100, 0x01ff00000100ffff,
    0x01ff00000100ff01, 0x01ff000001000000, 0x01ff0000010001ff, 0x01ff000001010001,
    0x01ff0001ff00ff00, 0x01ff0001ff000001, 0x01ff0001ff000100, 0x01ff0001ff010000,
    0x01ff000100ffff00, 0x01ff000100ff00ff, 0x01ff000100ff0100, 0x01ff000100ff0101,
    0x01ff00010000ffff, 0x01ff000100000000, 0x01ff000100000100, 0x01ff000100000101,
    0x01ff00010001ff00, 0x01ff000100010001, 0x01ff000100010101, 0x01ff000101ff0000,
    0x01ff00010100ff00, 0x01ff000101000101, 0x01ff0001010100ff, 0x01ff01ffffffffff,
    0x01ff01ffffffff01, 0x01ff01ffffff01ff, 0x01ff01ffffff0101, 0x01ff01ffff000000,
    0x01ff01ffff01ffff, 0x01ff01ffff01ff01, 0x01ff01ffff0101ff, 0x01ff01ffff010101,
    0x01ff01ff00ffff00, 0x01ff01ff00ff0000, 0x01ff01ff0000ff00, 0x01ff01ff000000ff,
    0x01ff01ff00000100, 0x01ff01ff00010000, 0x01ff01ff00010100, 0x01ff01ff01ffffff,
    0x01ff01ff01ffff01, 0x01ff01ff01ff01ff, 0x01ff01ff01ff0101, 0x01ff01ff01000000,
    0x01ff01ff0101ffff, 0x01ff01ff0101ff01, 0x01ff01ff010101ff, 0x01ff01ff01010101,
    0x01ff0100ffff0000, 0x01ff0100ffff0001, 0x01ff0100ff00ff00, 0x01ff0100ff0000ff,
    0x01ff0100ff000001, 0x01ff0100ff010000, 0x01ff010000ffff00, 0x01ff010000ff00ff,
    0x01ff010000ff0001, 0x01ff010000ff0100, 0x01ff01000000ffff, 0x01ff01000000ff01,
    0x01ff010000000000, 0x01ff010000000101, 0x01ff01000001ff00, 0x01ff0100000100ff,
    0x01ff010001ff0000, 0x01ff010001000001, 0x01ff010001000100, 0x01ff010001010000,
    0x01ff0101ffffffff, 0x01ff0101ffffff01, 0x01ff0101ffff01ff, 0x01ff0101ffff0101,
    0x01ff0101ff000000, 0x01ff0101ff01ffff, 0x01ff0101ff01ff01, 0x01ff0101ff0101ff,
    0x01ff0101ff010101, 0x01ff010100ff0000, 0x01ff01010000ff00, 0x01ff0101000000ff,
    0x01ff010100000001, 0x01ff010101ffffff, 0x01ff010101ffff01, 0x01ff010101ff01ff,
    0x01ff010101ff0101, 0x01ff010101000000, 0x01ff01010101ffff, 0x01ff01010101ff01,
    0x01ff0101010101ff, 0x01ff010101010101, 0x0100ffffffff0000, 0x0100ffffff00ff00,
    0x0100ffffff000001, 0x0100ffffff0001ff, 0x0100ffffff000100, 0x0100ffffff010000,
    0x0100ffff00ffff00, 0x0100ffff00ff0001, 0x0100ffff00ff0100, 0x0100ffff00000000,
    0x0100ffff000001ff, 0x0100ffff00000101, 0x0100ffff00010100, 0x0100ffff00010101,
    0x0100ffff01ff0000, 0x0100ffff0100ff00, 0x0100ffff010000ff, 0x0100ffff01000001,
    0x0100ffff01000100, 0x0100ffff01010000, 0x0100ff00ffffff00, 0x0100ff00ffff00ff,
    0x0100ff00ffff0001, 0x0100ff00ffff0100, 0x0100ff00ff00ffff, 0x0100ff00ff000000,
    0x0100ff00ff0001ff, 0x0100ff00ff000101, 0x0100ff00ff01ff00, 0x0100ff00ff0100ff,
    0x0100ff00ff010001, 0x0100ff00ff010100, 0x0100ff0000ffffff, 0x0100ff0000ff0000,
    0x0100ff000000ffff, 0x0100ff000000ff00, 0x0100ff00000000ff, 0x0100ff0000000000,
    0x0100ff0000000001, 0x0100ff0000000100, 0x0100ff000001ff01, 0x0100ff0000010000,
    0x0100ff0001ff00ff, 0x0100ff0001ff0001, 0x0100ff000100ff01, 0x0100ff0001000000,
    0x0100ff00010001ff, 0x0100ff000101ff00, 0x0100ff00010100ff, 0x0100ff0001010001,
    0x0100ff0001010100, 0x0100ff01ffff0000, 0x0100ff01ff00ff00, 0x0100ff01ff0000ff,
    0x0100ff01ff000100, 0x0100ff01ff010000, 0x0100ff0100ff00ff, 0x0100ff0100ff0001,
    0x0100ff0100ff0100, 0x0100ff010000ffff, 0x0100ff010000ff01, 0x0100ff0100000000,
    0x0100ff01000001ff, 0x0100ff0100010001, 0x0100ff0100010100, 0x0100ff0101ff0000,
    0x0100ff01010000ff, 0x0100ff0101000001, 0x0100ff0101010100, 0x010000ffffffff00,
    0x010000ffffff00ff, 0x010000ffffff0001, 0x010000ffff00ffff, 0x010000ffff000000,
    0x010000ffff0001ff, 0x010000ffff010001, 0x010000ff00ffffff, 0x010000ff00ff0101,
    0x010000ff0000ff00, 0x010000ff000000ff, 0x010000ff00000000, 0x010000ff00000001,
    0x010000ff000001ff, 0x010000ff00000100, 0x010000ff0001ffff, 0x010000ff0001ff00,
    0x010000ff0001ff01, 0x010000ff00010000, 0x010000ff01ff00ff, 0x010000ff01ff0001,
    0x010000ff0100ff01, 0x010000ff010000ff, 0x010000ff01000000, 0x010000ff010001ff,
    0x010000ff0101ff00, 0x010000ff01010100, 0x01000000ffffffff, 0x01000000ffff0000,
    0x01000000ffff01ff, 0x01000000ffff0101, 0x01000000ff00ffff, 0x01000000ff00ff00,
    0x01000000ff0000ff, 0x01000000ff000000, 0x01000000ff000001, 0x01000000ff000100,
    0x01000000ff01ff00, 0x01000000ff010000, 0x01000000ff010100, 0x01000000ff010101,
    0x0100000000ffff00, 0x0100000000ff00ff, 0x0100000000ff0000, 0x0100000000ff0001,
    0x0100000000ff0100, 0x010000000000ffff, 0x010000000000ff00, 0x010000000000ff01,
    0x01000000000000ff, 0x0100000000000000, 0x0100000000000001, 0x01000000000001ff,
    0x0100000000000100, 0x0100000000000101, 0x010000000001ff00, 0x01000000000100ff,
    0x0100000000010000, 0x0100000000010001, 0x0100000000010100, 0x0100000001ffff00,
    0x0100000001ff0000, 0x0100000001ff01ff, 0x010000000100ff00, 0x010000000100ff01,
    0x01000000010000ff, 0x0100000001000000, 0x0100000001000001, 0x0100000001000100,
    0x0100000001000101, 0x010000000101ffff, 0x010000000101ff01, 0x0100000001010000,
    0x01000000010101ff, 0x0100000001010101, 0x01000001ffffff00, 0x01000001ffff00ff,
    0x01000001ff00ffff, 0x01000001ff000000, 0x01000001ff000100, 0x01000001ff01ffff,
    0x01000001ff010001, 0x01000001ff010100, 0x0100000100ff0000, 0x0100000100ff01ff,
    0x0100000100ff0100, 0x010000010000ff00, 0x010000010000ff01, 0x0100000100000000,
    0x0100000100000001, 0x0100000100000100, 0x0100000100010000, 0x01000001000101ff,
    0x0100000101ffff01, 0x0100000101ff00ff, 0x0100000101ff0100, 0x0100000101ff0101,
    0x010000010100ff01, 0x01000001010000ff, 0x0100000101000000, 0x01000001010100ff,
    0x0100000101010001, 0x0100000101010100, 0x010001ffffff0000, 0x010001ffff000001,
    0x010001ffff000100, 0x010001ffff010000, 0x010001ff00ffff00, 0x010001ff00ff0001,
    0x010001ff0000ffff, 0x010001ff0000ff01, 0x010001ff00000000, 0x010001ff00000001,
    0x010001ff00000101, 0x010001ff000100ff, 0x010001ff00010000, 0x010001ff01ff0000,
    0x010001ff0100ff00, 0x010001ff01000001, 0x010001ff01000100, 0x010001ff01010000,
    0x01000100ffff00ff, 0x01000100ffff0001, 0x01000100ffff0100, 0x01000100ff00ffff,
    0x01000100ff00ff01, 0x01000100ff000000, 0x01000100ff0001ff, 0x01000100ff000101,
    0x01000100ff01ffff, 0x01000100ff01ff00, 0x01000100ff0100ff, 0x01000100ff010001,
    0x0100010000ffffff, 0x0100010000ffff01, 0x0100010000ff0000, 0x0100010000ff01ff,
    0x0100010000ff0101, 0x010001000000ff00, 0x01000100000000ff, 0x0100010000000000,
    0x0100010000000001, 0x0100010000000100, 0x010001000001ff01, 0x0100010000010000,
    0x0100010000010001, 0x0100010000010101, 0x0100010001ffff00, 0x0100010001ff00ff,
    0x010001000100ffff, 0x010001000100ff01, 0x0100010001000000, 0x0100010001000101,
    0x010001000101ff00, 0x0100010001010001, 0x01000101ffff0000, 0x01000101ff000000,
    0x01000101ff010000, 0x0100010100ff00ff, 0x0100010100ff0001, 0x0100010100ff0100,
    0x010001010000ffff, 0x0100010100000000, 0x01000101000001ff, 0x010001010001ff00,
    0x0100010101ff0000, 0x010001010100ff00, 0x01000101010000ff, 0x0100010101000000,
    0x0100010101000001, 0x0101ffffffffffff, 0x0101ffffffffff01, 0x0101ffffffff01ff,
    0x0101ffffffff0101, 0x0101ffffff000000, 0x0101ffffff01ffff, 0x0101ffffff01ff01,
    0x0101ffffff0101ff, 0x0101ffffff010101, 0x0101ffff00ff0000, 0x0101ffff0000ff00,
    0x0101ffff000000ff, 0x0101ffff00000001, 0x0101ffff00000100, 0x0101ffff01ffffff,
    0x0101ffff01ffff01, 0x0101ffff01ff01ff, 0x0101ffff01ff0101, 0x0101ffff01000000,
    0x0101ffff0101ffff, 0x0101ffff0101ff01, 0x0101ffff010101ff, 0x0101ffff01010101,
    0x0101ff00ffff0000, 0x0101ff00ffff0100, 0x0101ff00ff00ff00, 0x0101ff00ff0000ff,
    0x0101ff00ff000001, 0x0101ff00ff000100, 0x0101ff00ff000101, 0x0101ff0000ff0001,
    0x0101ff0000ff0100, 0x0101ff000000ff00, 0x0101ff0000000000, 0x0101ff00000001ff,
    0x0101ff0000000101, 0x0101ff000001ff00, 0x0101ff00000100ff, 0x0101ff0001ff0000,
    0x0101ff000100ffff, 0x0101ff000100ff01, 0x0101ff0001000001, 0x0101ff0001000100,
    0x0101ff01ffffff01, 0x0101ff01ffff01ff, 0x0101ff01ffff0101, 0x0101ff01ff00ffff,
    0x0101ff01ff000100, 0x0101ff01ff01ff01, 0x0101ff01ff0101ff, 0x0101ff01ff010101,
    0x0101ff0100ff0000, 0x0101ff010000ff00, 0x0101ff0100000001, 0x0101ff0100000100,
    0x0101ff0100010000, 0x0101ff0101ffffff, 0x0101ff0101ffff01, 0x0101ff0101ff01ff,
    0x0101ff0101ff0101, 0x0101ff0101000000, 0x0101ff010101ffff, 0x0101ff010101ff01,
    0x0101ff01010101ff, 0x0101ff0101010101, 0x010100ffff000100, 0x010100ffff010000,
    0x010100ff00ffff00, 0x010100ff00ff00ff, 0x010100ff0000ffff, 0x010100ff000000ff,
    0x010100ff00000000, 0x010100ff000001ff, 0x010100ff00000101, 0x010100ff0001ff00,
    0x010100ff00010000, 0x010100ff00010001, 0x010100ff000101ff, 0x010100ff00010100,
    0x010100ff01ff0000, 0x01010000ffff0001, 0x01010000ffff0100, 0x01010000ff00ffff,
    0x01010000ff00ff01, 0x01010000ff000000, 0x01010000ff0001ff, 0x01010000ff010001,
    0x01010000ff010100, 0x0101000000ffff01, 0x0101000000ff0000, 0x010100000000ff00,
    0x01010000000000ff, 0x0101000000000000, 0x0101000000000001, 0x0101000000000100,
    0x0101000000010000, 0x0101000000010101, 0x0101000001ffff00, 0x0101000001ff00ff,
    0x0101000001ff0000, 0x0101000001ff0001, 0x0101000001ff0100, 0x010100000100ff01,
    0x0101000001000000, 0x01010000010001ff, 0x01010001ffff0000, 0x01010001ff00ff00,
    0x01010001ff000001, 0x01010001ff000101, 0x01010001ff01ff00, 0x01010001ff010000,
    0x0101000100ff00ff, 0x0101000100ff0001, 0x0101000100ff0101, 0x010100010000ff01,
    0x0101000100000000, 0x0101000100000001, 0x01010001000001ff, 0x010100010001ffff,
    0x010100010001ff01, 0x0101000101ff0001, 0x010100010100ffff, 0x0101000101000000,
    0x0101000101000001, 0x0101000101000100, 0x010100010101ff00, 0x01010001010100ff,
    0x0101000101010001, 0x010101ffffffffff, 0x010101ffffffff01, 0x010101ffffff01ff,
    0x010101ffffff0101, 0x010101ffff01ffff, 0x010101ffff01ff01, 0x010101ffff0101ff,
    0x010101ffff010101, 0x010101ff0000ff00, 0x010101ff000000ff, 0x010101ff00000001,
    0x010101ff00000100, 0x010101ff01ffffff, 0x010101ff01ffff01, 0x010101ff01ff01ff,
    0x010101ff01ff0101, 0x010101ff01000000, 0x010101ff0101ffff, 0x010101ff0101ff01,
    0x010101ff010101ff, 0x010101ff01010101, 0x01010100ffff0000, 0x01010100ff0000ff,
    0x01010100ff000100, 0x01010100ff01ff00, 0x01010100ff010000, 0x0101010000ffff00,
    0x010101000000ffff, 0x0101010000000000, 0x0101010000000101, 0x010101000001ff00,
    0x0101010000010001, 0x0101010000010100, 0x010101000100ffff, 0x0101010001000001,
    0x01010101ffffffff, 0x01010101ffffff01, 0x01010101ffff01ff, 0x01010101ffff0101,
    0x01010101ff01ffff, 0x01010101ff01ff01, 0x01010101ff0101ff, 0x01010101ff010101,
    0x010101010000ff00, 0x01010101000000ff, 0x0101010100000001, 0x0101010101ffffff,
    0x0101010101ffff01, 0x0101010101ff01ff, 0x0101010101ff0101, 0x0101010101000000,
    0x010101010101ffff, 0x010101010101ff01, 0x01010101010101ff, 0x0101010101010101,
], dtype="<u8")  # ggml-common.h's iq1s_grid: eight of -1, 0, 1 per entry (signed bytes), low byte first


def _iq1s_values():
    """IQ1S_GRID as [2048, 8] values -1, 0, 1, the entry's first element first."""
    return IQ1S_GRID.view(np.int8).reshape(2048, 8)


def _iq1_nearest_entries(target):
    """The grid entry nearest each row of target [n, 8]: where each element rounded to -1, 0 or 1
    makes an entry, that one; the others searched (_search_off_grid)."""
    grid = _iq1s_values().astype(np.int64)
    powers = 3 ** np.arange(8)
    entry_of = np.full(3 ** 8, -1, dtype=np.int64)
    entry_of[((grid + 1) * powers).sum(axis=1)] = np.arange(2048)
    rounded = np.clip(_nearest(target), -1, 1).astype(np.int64)
    index = entry_of[((rounded + 1) * powers).sum(axis=1)]
    return _search_off_grid(target, grid, index)


def _iq1_choices(groups, scale_count):
    """For groups [n_blocks, 32, 8] of eight, with scale_count scales per block (8: one per 32
    elements, IQ1_S, whose delta is one per 32 too; 16: IQ1_M, a delta per eight): x ~ d * (2 * ls
    + 1) * (grid value + delta), delta +-1/8 by the sign of the elements' mean, d putting the
    largest step on ls = 7 and each step near 1.2 times its elements' root mean square (of 1.0,
    1.2 and 1.4 times it and the largest magnitude over 1.125, the least error on normal weights:
    the largest magnitude leaves most elements at 0)."""
    n = len(groups)
    per_scale = groups.reshape(n, scale_count, -1)
    step_wanted = np.sqrt((per_scale ** 2).mean(axis=2)) * np.float32(1.2)
    d = f16_values(f16_bits(step_wanted.max(axis=1) / 15.0))
    ratio = np.divide(step_wanted, d[:, None], out=np.zeros_like(step_wanted), where=d[:, None] != 0)
    ls = np.clip(_nearest((ratio - 1) / 2), 0, 7).astype(np.int64)
    step = (d[:, None] * (2 * ls + 1).astype(np.float32)).astype(np.float32)
    delta_groups = groups.reshape(n, 32 if scale_count == 16 else 8, -1)
    negative = (delta_groups.mean(axis=2) < 0).astype(np.int64)
    delta = np.where(negative == 1, -0.125, 0.125).astype(np.float32)
    step_of_group = np.repeat(step, 32 // scale_count, axis=1)  # [n, 32]
    delta_of_group = np.repeat(delta, 32 // delta.shape[1], axis=1)
    target = np.divide(groups, step_of_group[:, :, None], out=np.zeros_like(groups),
                       where=step_of_group[:, :, None] != 0) - delta_of_group[:, :, None]
    index = _iq1_nearest_entries(target.reshape(-1, 8)).reshape(n, 32)
    return d, ls, negative, index


def quantize_iq1_s(x):
    """8 sub-blocks of 32, each with a 3-bit ls and one delta sign, groups of eight from IQ1S_GRID
    (_iq1_choices); qh[j] holds group l's top three index bits at 3l, ls at 12, the sign at 15."""
    b = _blocks(x, QK_K)
    d, ls, negative, index = _iq1_choices(b.reshape(-1, 32, 8), 8)
    top = (index >> 8).reshape(-1, 8, 4)
    qh = (top << (3 * np.arange(4))).sum(axis=2) | (ls << 12) | (negative << 15)
    out = _record([("d", "<u2"), ("qs", "u1", 32), ("qh", "<u2", 8)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = (index & 0xFF).astype(np.uint8)
    out["qh"] = qh.astype(np.uint16)
    return out.tobytes()


def quantize_iq1_m(x):
    """16 groups of 16, each with a 3-bit ls, a delta sign per eight, groups of eight from
    IQ1S_GRID (_iq1_choices); qh byte k holds group 2k's top index bits and sign in its low nibble,
    group 2k + 1's in its high; scale word w the ls of groups of 16 4w..4w + 3 (three bits each)
    and nibble w of d's half at bit 12."""
    b = _blocks(x, QK_K)
    d, ls, negative, index = _iq1_choices(b.reshape(-1, 32, 8), 16)
    nibble = ((index >> 8) | (negative << 3)).reshape(-1, 16, 2)
    words = (ls.reshape(-1, 4, 4) << (3 * np.arange(4))).sum(axis=2)
    d_bits = f16_bits(d).astype(np.int64)
    words |= ((d_bits[:, None] >> (4 * np.arange(4))) & 0xF) << 12
    out = _record([("qs", "u1", 32), ("qh", "u1", 16), ("scales", "<u2", 4)], len(b))
    out["qs"] = (index & 0xFF).astype(np.uint8)
    out["qh"] = (nibble[:, :, 0] | (nibble[:, :, 1] << 4)).astype(np.uint8)
    out["scales"] = words.astype(np.uint16)
    return out.tobytes()


IQ2XXS_GRID = np.array([
    0x0808080808080808, 0x080808080808082b, 0x0808080808081919, 0x0808080808082b08,
    0x0808080808082b2b, 0x0808080808190819, 0x0808080808191908, 0x08080808082b0808,
    0x08080808082b082b, 0x08080808082b2b08, 0x08080808082b2b2b, 0x0808080819080819,
    0x0808080819081908, 0x0808080819190808, 0x0808080819192b08, 0x08080808192b0819,
    0x08080808192b1908, 0x080808082b080808, 0x080808082b08082b, 0x080808082b082b2b,
    0x080808082b2b082b, 0x0808081908080819, 0x0808081908081908, 0x0808081908190808,
    0x0808081908191919, 0x0808081919080808, 0x080808192b081908, 0x080808192b192b08,
    0x0808082b08080808, 0x0808082b0808082b, 0x0808082b082b082b, 0x0808082b2b08082b,
    0x0808190808080819, 0x0808190808081908, 0x0808190808190808, 0x08081908082b0819,
    0x08081908082b1908, 0x0808190819080808, 0x080819081908082b, 0x0808190819082b08,
    0x08081908192b0808, 0x080819082b080819, 0x080819082b081908, 0x080819082b190808,
    0x080819082b2b1908, 0x0808191908080808, 0x080819190808082b, 0x0808191908082b08,
    0x08081919082b0808, 0x080819191908192b, 0x08081919192b2b19, 0x080819192b080808,
    0x080819192b190819, 0x0808192b08082b19, 0x0808192b08190808, 0x0808192b19080808,
    0x0808192b2b081908, 0x0808192b2b2b1908, 0x08082b0808080808, 0x08082b0808081919,
    0x08082b0808082b08, 0x08082b0808191908, 0x08082b08082b2b08, 0x08082b0819080819,
    0x08082b0819081908, 0x08082b0819190808, 0x08082b081919082b, 0x08082b082b082b08,
    0x08082b1908081908, 0x08082b1919080808, 0x08082b2b0808082b, 0x08082b2b08191908,
    0x0819080808080819, 0x0819080808081908, 0x0819080808190808, 0x08190808082b0819,
    0x0819080819080808, 0x08190808192b0808, 0x081908082b081908, 0x081908082b190808,
    0x081908082b191919, 0x0819081908080808, 0x0819081908082b08, 0x08190819082b0808,
    0x0819081919190808, 0x0819081919192b2b, 0x081908192b080808, 0x0819082b082b1908,
    0x0819082b19081919, 0x0819190808080808, 0x0819190808082b08, 0x08191908082b0808,
    0x08191908082b1919, 0x0819190819082b19, 0x081919082b080808, 0x0819191908192b08,
    0x08191919192b082b, 0x0819192b08080808, 0x0819192b0819192b, 0x08192b0808080819,
    0x08192b0808081908, 0x08192b0808190808, 0x08192b0819080808, 0x08192b082b080819,
    0x08192b1908080808, 0x08192b1908081919, 0x08192b192b2b0808, 0x08192b2b19190819,
    0x082b080808080808, 0x082b08080808082b, 0x082b080808082b2b, 0x082b080819081908,
    0x082b0808192b0819, 0x082b08082b080808, 0x082b08082b08082b, 0x082b0819082b2b19,
    0x082b081919082b08, 0x082b082b08080808, 0x082b082b0808082b, 0x082b190808080819,
    0x082b190808081908, 0x082b190808190808, 0x082b190819080808, 0x082b19081919192b,
    0x082b191908080808, 0x082b191919080819, 0x082b1919192b1908, 0x082b192b2b190808,
    0x082b2b0808082b08, 0x082b2b08082b0808, 0x082b2b082b191908, 0x082b2b2b19081908,
    0x1908080808080819, 0x1908080808081908, 0x1908080808190808, 0x1908080808192b08,
    0x19080808082b0819, 0x19080808082b1908, 0x1908080819080808, 0x1908080819082b08,
    0x190808081919192b, 0x19080808192b0808, 0x190808082b080819, 0x190808082b081908,
    0x190808082b190808, 0x1908081908080808, 0x19080819082b0808, 0x19080819192b0819,
    0x190808192b080808, 0x190808192b081919, 0x1908082b08080819, 0x1908082b08190808,
    0x1908082b19082b08, 0x1908082b1919192b, 0x1908082b192b2b08, 0x1908190808080808,
    0x1908190808082b08, 0x19081908082b0808, 0x190819082b080808, 0x190819082b192b19,
    0x190819190819082b, 0x19081919082b1908, 0x1908192b08080808, 0x19082b0808080819,
    0x19082b0808081908, 0x19082b0808190808, 0x19082b0819080808, 0x19082b0819081919,
    0x19082b1908080808, 0x19082b1919192b08, 0x19082b19192b0819, 0x19082b192b08082b,
    0x19082b2b19081919, 0x19082b2b2b190808, 0x1919080808080808, 0x1919080808082b08,
    0x1919080808190819, 0x1919080808192b19, 0x19190808082b0808, 0x191908082b080808,
    0x191908082b082b08, 0x1919081908081908, 0x191908191908082b, 0x191908192b2b1908,
    0x1919082b2b190819, 0x191919082b190808, 0x191919082b19082b, 0x1919191908082b2b,
    0x1919192b08080819, 0x1919192b19191908, 0x19192b0808080808, 0x19192b0808190819,
    0x19192b0808192b19, 0x19192b08192b1908, 0x19192b1919080808, 0x19192b2b08082b08,
    0x192b080808081908, 0x192b080808190808, 0x192b080819080808, 0x192b0808192b2b08,
    0x192b081908080808, 0x192b081919191919, 0x192b082b08192b08, 0x192b082b192b0808,
    0x192b190808080808, 0x192b190808081919, 0x192b191908190808, 0x192b19190819082b,
    0x192b19192b081908, 0x192b2b081908082b, 0x2b08080808080808, 0x2b0808080808082b,
    0x2b08080808082b2b, 0x2b08080819080819, 0x2b0808082b08082b, 0x2b08081908081908,
    0x2b08081908192b08, 0x2b08081919080808, 0x2b08082b08190819, 0x2b08190808080819,
    0x2b08190808081908, 0x2b08190808190808, 0x2b08190808191919, 0x2b08190819080808,
    0x2b081908192b0808, 0x2b08191908080808, 0x2b0819191908192b, 0x2b0819192b191908,
    0x2b08192b08082b19, 0x2b08192b19080808, 0x2b08192b192b0808, 0x2b082b080808082b,
    0x2b082b1908081908, 0x2b082b2b08190819, 0x2b19080808081908, 0x2b19080808190808,
    0x2b190808082b1908, 0x2b19080819080808, 0x2b1908082b2b0819, 0x2b1908190819192b,
    0x2b1908192b080808, 0x2b19082b19081919, 0x2b19190808080808, 0x2b191908082b082b,
    0x2b19190819081908, 0x2b19191919190819, 0x2b192b082b080819, 0x2b192b19082b0808,
    0x2b2b08080808082b, 0x2b2b080819190808, 0x2b2b08082b081919, 0x2b2b081908082b19,
    0x2b2b082b08080808, 0x2b2b190808192b08, 0x2b2b2b0819190808, 0x2b2b2b1908081908,
], dtype="<u8")  # ggml-common.h's iq2xxs_grid: eight of the magnitudes 8, 25, 43 per entry, low byte first
IQ2XS_GRID = np.array([
    0x0808080808080808, 0x080808080808082b, 0x0808080808081919, 0x0808080808082b08,
    0x0808080808082b2b, 0x0808080808190819, 0x0808080808191908, 0x080808080819192b,
    0x0808080808192b19, 0x08080808082b0808, 0x08080808082b082b, 0x08080808082b1919,
    0x08080808082b2b08, 0x0808080819080819, 0x0808080819081908, 0x080808081908192b,
    0x0808080819082b19, 0x0808080819190808, 0x080808081919082b, 0x0808080819191919,
    0x0808080819192b08, 0x08080808192b0819, 0x08080808192b1908, 0x080808082b080808,
    0x080808082b08082b, 0x080808082b081919, 0x080808082b082b08, 0x080808082b190819,
    0x080808082b191908, 0x080808082b192b19, 0x080808082b2b0808, 0x0808081908080819,
    0x0808081908081908, 0x080808190808192b, 0x0808081908082b19, 0x0808081908190808,
    0x080808190819082b, 0x0808081908191919, 0x0808081908192b08, 0x0808081908192b2b,
    0x08080819082b0819, 0x08080819082b1908, 0x0808081919080808, 0x080808191908082b,
    0x0808081919081919, 0x0808081919082b08, 0x0808081919190819, 0x0808081919191908,
    0x08080819192b0808, 0x08080819192b2b08, 0x080808192b080819, 0x080808192b081908,
    0x080808192b190808, 0x0808082b08080808, 0x0808082b0808082b, 0x0808082b08081919,
    0x0808082b08082b08, 0x0808082b08190819, 0x0808082b08191908, 0x0808082b082b0808,
    0x0808082b19080819, 0x0808082b19081908, 0x0808082b19190808, 0x0808082b19191919,
    0x0808082b2b080808, 0x0808082b2b082b2b, 0x0808190808080819, 0x0808190808081908,
    0x080819080808192b, 0x0808190808082b19, 0x0808190808190808, 0x080819080819082b,
    0x0808190808191919, 0x0808190808192b08, 0x08081908082b0819, 0x08081908082b1908,
    0x0808190819080808, 0x080819081908082b, 0x0808190819081919, 0x0808190819082b08,
    0x0808190819190819, 0x0808190819191908, 0x080819081919192b, 0x08081908192b0808,
    0x080819082b080819, 0x080819082b081908, 0x080819082b190808, 0x0808191908080808,
    0x080819190808082b, 0x0808191908081919, 0x0808191908082b08, 0x0808191908190819,
    0x0808191908191908, 0x08081919082b0808, 0x0808191919080819, 0x0808191919081908,
    0x0808191919190808, 0x08081919192b0819, 0x080819192b080808, 0x0808192b08080819,
    0x0808192b08081908, 0x0808192b08190808, 0x0808192b082b192b, 0x0808192b19080808,
    0x0808192b1908082b, 0x0808192b2b081908, 0x08082b0808080808, 0x08082b080808082b,
    0x08082b0808081919, 0x08082b0808082b08, 0x08082b0808082b2b, 0x08082b0808190819,
    0x08082b0808191908, 0x08082b08082b0808, 0x08082b08082b1919, 0x08082b0819080819,
    0x08082b0819081908, 0x08082b0819190808, 0x08082b0819192b08, 0x08082b082b080808,
    0x08082b082b2b0808, 0x08082b082b2b2b2b, 0x08082b1908080819, 0x08082b1908081908,
    0x08082b1908190808, 0x08082b1919080808, 0x08082b192b080819, 0x08082b192b082b19,
    0x08082b2b08080808, 0x08082b2b082b0808, 0x08082b2b082b2b08, 0x08082b2b2b19192b,
    0x08082b2b2b2b0808, 0x0819080808080819, 0x0819080808081908, 0x081908080808192b,
    0x0819080808082b19, 0x0819080808190808, 0x081908080819082b, 0x0819080808191919,
    0x0819080808192b08, 0x08190808082b0819, 0x08190808082b1908, 0x0819080819080808,
    0x081908081908082b, 0x0819080819081919, 0x0819080819082b08, 0x0819080819190819,
    0x0819080819191908, 0x08190808192b0808, 0x08190808192b2b2b, 0x081908082b080819,
    0x081908082b081908, 0x081908082b190808, 0x0819081908080808, 0x081908190808082b,
    0x0819081908081919, 0x0819081908082b08, 0x0819081908190819, 0x0819081908191908,
    0x08190819082b0808, 0x0819081919080819, 0x0819081919081908, 0x0819081919190808,
    0x081908192b080808, 0x081908192b191908, 0x081908192b19192b, 0x0819082b08080819,
    0x0819082b08081908, 0x0819082b0808192b, 0x0819082b08190808, 0x0819082b19080808,
    0x0819082b192b0808, 0x0819190808080808, 0x081919080808082b, 0x0819190808081919,
    0x0819190808082b08, 0x0819190808190819, 0x0819190808191908, 0x08191908082b0808,
    0x0819190819080819, 0x0819190819081908, 0x0819190819082b19, 0x0819190819190808,
    0x08191908192b1908, 0x081919082b080808, 0x0819191908080819, 0x0819191908081908,
    0x0819191908190808, 0x0819191919080808, 0x0819192b08080808, 0x0819192b08191908,
    0x0819192b19082b19, 0x08192b0808080819, 0x08192b0808081908, 0x08192b0808190808,
    0x08192b080819082b, 0x08192b0819080808, 0x08192b0819191908, 0x08192b082b08192b,
    0x08192b1908080808, 0x08192b1908081919, 0x08192b19192b192b, 0x08192b2b19190819,
    0x08192b2b2b2b2b19, 0x082b080808080808, 0x082b08080808082b, 0x082b080808081919,
    0x082b080808082b08, 0x082b080808082b2b, 0x082b080808190819, 0x082b080808191908,
    0x082b0808082b0808, 0x082b080819080819, 0x082b080819081908, 0x082b080819190808,
    0x082b08082b080808, 0x082b08082b2b0808, 0x082b081908080819, 0x082b081908081908,
    0x082b081908190808, 0x082b081919080808, 0x082b081919082b08, 0x082b0819192b1919,
    0x082b082b08080808, 0x082b082b082b082b, 0x082b082b2b080808, 0x082b082b2b2b2b08,
    0x082b190808080819, 0x082b190808081908, 0x082b190808190808, 0x082b1908082b2b19,
    0x082b190819080808, 0x082b191908080808, 0x082b191919080819, 0x082b19191919082b,
    0x082b19192b192b19, 0x082b192b08080819, 0x082b192b08192b2b, 0x082b192b2b2b192b,
    0x082b2b0808080808, 0x082b2b0808082b08, 0x082b2b0808082b2b, 0x082b2b08082b0808,
    0x082b2b0819191919, 0x082b2b082b082b08, 0x082b2b082b2b082b, 0x082b2b19192b2b08,
    0x082b2b192b190808, 0x082b2b2b08082b08, 0x082b2b2b082b0808, 0x082b2b2b2b08082b,
    0x082b2b2b2b082b08, 0x082b2b2b2b082b2b, 0x1908080808080819, 0x1908080808081908,
    0x190808080808192b, 0x1908080808082b19, 0x1908080808190808, 0x190808080819082b,
    0x1908080808191919, 0x1908080808192b08, 0x19080808082b0819, 0x19080808082b1908,
    0x1908080819080808, 0x190808081908082b, 0x1908080819081919, 0x1908080819082b08,
    0x1908080819082b2b, 0x1908080819190819, 0x1908080819191908, 0x19080808192b0808,
    0x19080808192b1919, 0x190808082b080819, 0x190808082b081908, 0x190808082b190808,
    0x1908081908080808, 0x190808190808082b, 0x1908081908081919, 0x1908081908082b08,
    0x1908081908190819, 0x1908081908191908, 0x19080819082b0808, 0x1908081919080819,
    0x1908081919081908, 0x1908081919190808, 0x190808192b080808, 0x190808192b081919,
    0x190808192b2b082b, 0x1908082b08080819, 0x1908082b08081908, 0x1908082b08190808,
    0x1908082b0819082b, 0x1908082b082b2b19, 0x1908082b19080808, 0x1908190808080808,
    0x190819080808082b, 0x1908190808081919, 0x1908190808082b08, 0x1908190808190819,
    0x1908190808191908, 0x1908190808192b19, 0x19081908082b0808, 0x1908190819080819,
    0x1908190819081908, 0x1908190819190808, 0x190819082b080808, 0x190819082b191908,
    0x1908191908080819, 0x1908191908081908, 0x1908191908190808, 0x19081919082b1908,
    0x1908191919080808, 0x190819192b192b2b, 0x1908192b08080808, 0x1908192b08082b2b,
    0x1908192b19081908, 0x1908192b19190808, 0x19082b0808080819, 0x19082b0808081908,
    0x19082b0808190808, 0x19082b0819080808, 0x19082b0819081919, 0x19082b0819191908,
    0x19082b08192b082b, 0x19082b1908080808, 0x19082b1908190819, 0x19082b1919081908,
    0x19082b1919190808, 0x19082b19192b2b19, 0x19082b2b08081908, 0x1919080808080808,
    0x191908080808082b, 0x1919080808081919, 0x1919080808082b08, 0x1919080808190819,
    0x1919080808191908, 0x19190808082b0808, 0x19190808082b2b08, 0x1919080819080819,
    0x1919080819081908, 0x1919080819190808, 0x191908082b080808, 0x1919081908080819,
    0x1919081908081908, 0x1919081908190808, 0x1919081908191919, 0x1919081919080808,
    0x191908191908082b, 0x1919082b08080808, 0x1919082b19081908, 0x1919082b2b2b2b2b,
    0x1919190808080819, 0x1919190808081908, 0x1919190808190808, 0x19191908082b0819,
    0x1919190819080808, 0x19191908192b0808, 0x191919082b080819, 0x191919082b2b0819,
    0x1919191908080808, 0x1919191908082b08, 0x191919192b080808, 0x191919192b082b08,
    0x1919192b082b0819, 0x1919192b192b2b08, 0x1919192b2b2b0819, 0x19192b0808080808,
    0x19192b0808191908, 0x19192b0819080819, 0x19192b0819190808, 0x19192b082b192b19,
    0x19192b1908192b2b, 0x19192b1919080808, 0x19192b191908082b, 0x19192b2b2b081919,
    0x192b080808080819, 0x192b080808081908, 0x192b080808190808, 0x192b080819080808,
    0x192b080819191908, 0x192b0808192b082b, 0x192b08082b08192b, 0x192b08082b2b2b19,
    0x192b081908080808, 0x192b082b082b1908, 0x192b082b19082b2b, 0x192b082b2b19082b,
    0x192b190808080808, 0x192b19080819192b, 0x192b191908190808, 0x192b191919080808,
    0x192b191919081919, 0x192b19192b2b1908, 0x192b2b0808080819, 0x192b2b08192b2b2b,
    0x192b2b19082b1919, 0x192b2b2b0808192b, 0x192b2b2b19191908, 0x192b2b2b192b082b,
    0x2b08080808080808, 0x2b0808080808082b, 0x2b08080808081919, 0x2b08080808082b08,
    0x2b08080808190819, 0x2b08080808191908, 0x2b080808082b0808, 0x2b080808082b2b2b,
    0x2b08080819080819, 0x2b08080819081908, 0x2b08080819190808, 0x2b0808082b080808,
    0x2b0808082b08082b, 0x2b0808082b2b2b08, 0x2b0808082b2b2b2b, 0x2b08081908080819,
    0x2b08081908081908, 0x2b0808190808192b, 0x2b08081908190808, 0x2b08081919080808,
    0x2b08081919190819, 0x2b08081919192b19, 0x2b08082b08080808, 0x2b08082b082b0808,
    0x2b08082b2b080808, 0x2b08082b2b08082b, 0x2b08082b2b2b0808, 0x2b08082b2b2b2b08,
    0x2b08190808080819, 0x2b08190808081908, 0x2b08190808190808, 0x2b0819080819082b,
    0x2b08190808191919, 0x2b08190819080808, 0x2b081908192b0808, 0x2b0819082b082b19,
    0x2b08191908080808, 0x2b08191919081908, 0x2b0819192b2b1919, 0x2b08192b08192b08,
    0x2b08192b192b2b2b, 0x2b082b0808080808, 0x2b082b0808082b08, 0x2b082b08082b1919,
    0x2b082b0819192b2b, 0x2b082b082b080808, 0x2b082b082b08082b, 0x2b082b082b2b2b08,
    0x2b082b190808192b, 0x2b082b2b082b082b, 0x2b082b2b2b080808, 0x2b082b2b2b082b08,
    0x2b082b2b2b19192b, 0x2b082b2b2b2b2b08, 0x2b19080808080819, 0x2b19080808081908,
    0x2b19080808190808, 0x2b19080819080808, 0x2b1908081919192b, 0x2b1908082b081908,
    0x2b19081908080808, 0x2b190819082b082b, 0x2b190819192b1908, 0x2b19082b1919192b,
    0x2b19082b2b082b19, 0x2b19190808080808, 0x2b19190808081919, 0x2b19190819081908,
    0x2b19190819190808, 0x2b19190819192b08, 0x2b191919082b2b19, 0x2b1919192b190808,
    0x2b1919192b19082b, 0x2b19192b19080819, 0x2b192b0819190819, 0x2b192b082b2b192b,
    0x2b192b1919082b19, 0x2b192b2b08191919, 0x2b192b2b192b0808, 0x2b2b080808080808,
    0x2b2b08080808082b, 0x2b2b080808082b08, 0x2b2b080808082b2b, 0x2b2b0808082b0808,
    0x2b2b0808082b2b2b, 0x2b2b08082b2b0808, 0x2b2b081919190819, 0x2b2b081919192b19,
    0x2b2b08192b2b192b, 0x2b2b082b08080808, 0x2b2b082b0808082b, 0x2b2b082b08082b08,
    0x2b2b082b082b2b2b, 0x2b2b082b2b080808, 0x2b2b082b2b2b0808, 0x2b2b190819080808,
    0x2b2b19082b191919, 0x2b2b192b192b1919, 0x2b2b192b2b192b08, 0x2b2b2b0808082b2b,
    0x2b2b2b08082b0808, 0x2b2b2b08082b082b, 0x2b2b2b08082b2b08, 0x2b2b2b082b2b0808,
    0x2b2b2b082b2b2b08, 0x2b2b2b1908081908, 0x2b2b2b192b081908, 0x2b2b2b192b08192b,
    0x2b2b2b2b082b2b08, 0x2b2b2b2b082b2b2b, 0x2b2b2b2b2b190819, 0x2b2b2b2b2b2b2b2b,
], dtype="<u8")  # ggml-common.h's iq2xs_grid, as IQ2XXS_GRID
IQ2S_GRID = np.array([
    0x0808080808080808, 0x080808080808082b, 0x0808080808081919, 0x0808080808082b08,
    0x0808080808082b2b, 0x0808080808190819, 0x0808080808191908, 0x080808080819192b,
    0x0808080808192b19, 0x08080808082b0808, 0x08080808082b082b, 0x08080808082b1919,
    0x08080808082b2b08, 0x0808080819080819, 0x0808080819081908, 0x080808081908192b,
    0x0808080819082b19, 0x0808080819190808, 0x080808081919082b, 0x0808080819191919,
    0x0808080819192b08, 0x08080808192b0819, 0x08080808192b1908, 0x08080808192b192b,
    0x08080808192b2b19, 0x080808082b080808, 0x080808082b08082b, 0x080808082b081919,
    0x080808082b082b08, 0x080808082b190819, 0x080808082b191908, 0x080808082b2b0808,
    0x080808082b2b1919, 0x080808082b2b2b2b, 0x0808081908080819, 0x0808081908081908,
    0x080808190808192b, 0x0808081908082b19, 0x0808081908190808, 0x080808190819082b,
    0x0808081908191919, 0x0808081908192b08, 0x08080819082b0819, 0x08080819082b1908,
    0x0808081919080808, 0x080808191908082b, 0x0808081919081919, 0x0808081919082b08,
    0x0808081919190819, 0x0808081919191908, 0x080808191919192b, 0x0808081919192b19,
    0x08080819192b0808, 0x08080819192b1919, 0x08080819192b2b08, 0x080808192b080819,
    0x080808192b081908, 0x080808192b190808, 0x080808192b19082b, 0x080808192b191919,
    0x080808192b2b0819, 0x080808192b2b1908, 0x0808082b08080808, 0x0808082b0808082b,
    0x0808082b08081919, 0x0808082b08082b08, 0x0808082b08190819, 0x0808082b08191908,
    0x0808082b082b0808, 0x0808082b082b2b2b, 0x0808082b19080819, 0x0808082b19081908,
    0x0808082b1908192b, 0x0808082b19082b19, 0x0808082b19190808, 0x0808082b19191919,
    0x0808082b2b080808, 0x0808082b2b081919, 0x0808082b2b082b2b, 0x0808082b2b191908,
    0x0808082b2b2b082b, 0x0808190808080819, 0x0808190808081908, 0x080819080808192b,
    0x0808190808082b19, 0x0808190808190808, 0x080819080819082b, 0x0808190808191919,
    0x0808190808192b08, 0x08081908082b0819, 0x08081908082b1908, 0x08081908082b192b,
    0x08081908082b2b19, 0x0808190819080808, 0x080819081908082b, 0x0808190819081919,
    0x0808190819082b08, 0x0808190819082b2b, 0x0808190819190819, 0x0808190819191908,
    0x080819081919192b, 0x0808190819192b19, 0x08081908192b0808, 0x08081908192b082b,
    0x08081908192b1919, 0x080819082b080819, 0x080819082b081908, 0x080819082b08192b,
    0x080819082b082b19, 0x080819082b190808, 0x080819082b191919, 0x080819082b192b08,
    0x080819082b2b0819, 0x080819082b2b1908, 0x0808191908080808, 0x080819190808082b,
    0x0808191908081919, 0x0808191908082b08, 0x0808191908082b2b, 0x0808191908190819,
    0x0808191908191908, 0x080819190819192b, 0x0808191908192b19, 0x08081919082b0808,
    0x08081919082b1919, 0x08081919082b2b08, 0x0808191919080819, 0x0808191919081908,
    0x080819191908192b, 0x0808191919082b19, 0x0808191919190808, 0x080819191919082b,
    0x0808191919191919, 0x0808191919192b08, 0x08081919192b0819, 0x08081919192b1908,
    0x080819192b080808, 0x080819192b08082b, 0x080819192b081919, 0x080819192b082b08,
    0x080819192b190819, 0x080819192b191908, 0x080819192b2b0808, 0x0808192b08080819,
    0x0808192b08081908, 0x0808192b0808192b, 0x0808192b08082b19, 0x0808192b08190808,
    0x0808192b08191919, 0x0808192b19080808, 0x0808192b19081919, 0x0808192b19082b08,
    0x0808192b19190819, 0x0808192b19191908, 0x0808192b192b0808, 0x0808192b2b080819,
    0x0808192b2b081908, 0x0808192b2b190808, 0x08082b0808080808, 0x08082b080808082b,
    0x08082b0808081919, 0x08082b0808082b08, 0x08082b0808190819, 0x08082b0808191908,
    0x08082b080819192b, 0x08082b0808192b19, 0x08082b08082b0808, 0x08082b08082b1919,
    0x08082b08082b2b2b, 0x08082b0819080819, 0x08082b0819081908, 0x08082b081908192b,
    0x08082b0819082b19, 0x08082b0819190808, 0x08082b081919082b, 0x08082b0819191919,
    0x08082b0819192b08, 0x08082b08192b0819, 0x08082b08192b1908, 0x08082b082b080808,
    0x08082b082b081919, 0x08082b082b191908, 0x08082b082b2b2b2b, 0x08082b1908080819,
    0x08082b1908081908, 0x08082b1908190808, 0x08082b190819082b, 0x08082b1908191919,
    0x08082b1908192b08, 0x08082b19082b0819, 0x08082b1919080808, 0x08082b1919081919,
    0x08082b1919082b08, 0x08082b1919190819, 0x08082b1919191908, 0x08082b19192b0808,
    0x08082b192b080819, 0x08082b192b190808, 0x08082b2b08080808, 0x08082b2b08190819,
    0x08082b2b08191908, 0x08082b2b082b082b, 0x08082b2b082b2b08, 0x08082b2b082b2b2b,
    0x08082b2b19190808, 0x08082b2b2b192b19, 0x0819080808080819, 0x0819080808081908,
    0x081908080808192b, 0x0819080808082b19, 0x0819080808190808, 0x081908080819082b,
    0x0819080808191919, 0x0819080808192b08, 0x08190808082b0819, 0x08190808082b1908,
    0x08190808082b192b, 0x0819080819080808, 0x081908081908082b, 0x0819080819081919,
    0x0819080819082b08, 0x0819080819190819, 0x0819080819191908, 0x081908081919192b,
    0x0819080819192b19, 0x08190808192b0808, 0x08190808192b082b, 0x08190808192b1919,
    0x08190808192b2b08, 0x081908082b080819, 0x081908082b081908, 0x081908082b08192b,
    0x081908082b190808, 0x081908082b191919, 0x081908082b192b08, 0x081908082b2b0819,
    0x081908082b2b1908, 0x0819081908080808, 0x081908190808082b, 0x0819081908081919,
    0x0819081908082b08, 0x0819081908082b2b, 0x0819081908190819, 0x0819081908191908,
    0x081908190819192b, 0x0819081908192b19, 0x08190819082b0808, 0x08190819082b082b,
    0x08190819082b1919, 0x08190819082b2b08, 0x0819081919080819, 0x0819081919081908,
    0x081908191908192b, 0x0819081919082b19, 0x0819081919190808, 0x081908191919082b,
    0x0819081919191919, 0x0819081919192b08, 0x08190819192b0819, 0x08190819192b1908,
    0x081908192b080808, 0x081908192b08082b, 0x081908192b081919, 0x081908192b082b08,
    0x081908192b190819, 0x081908192b191908, 0x0819082b08080819, 0x0819082b08081908,
    0x0819082b08082b19, 0x0819082b08190808, 0x0819082b08191919, 0x0819082b082b0819,
    0x0819082b082b1908, 0x0819082b19080808, 0x0819082b19081919, 0x0819082b19190819,
    0x0819082b19191908, 0x0819082b2b080819, 0x0819082b2b081908, 0x0819082b2b190808,
    0x0819190808080808, 0x081919080808082b, 0x0819190808081919, 0x0819190808082b08,
    0x0819190808190819, 0x0819190808191908, 0x081919080819192b, 0x0819190808192b19,
    0x08191908082b0808, 0x08191908082b1919, 0x08191908082b2b08, 0x0819190819080819,
    0x0819190819081908, 0x081919081908192b, 0x0819190819082b19, 0x0819190819190808,
    0x081919081919082b, 0x0819190819191919, 0x0819190819192b08, 0x08191908192b0819,
    0x08191908192b1908, 0x081919082b080808, 0x081919082b08082b, 0x081919082b081919,
    0x081919082b082b08, 0x081919082b190819, 0x081919082b191908, 0x081919082b2b0808,
    0x0819191908080819, 0x0819191908081908, 0x081919190808192b, 0x0819191908082b19,
    0x0819191908190808, 0x081919190819082b, 0x0819191908191919, 0x0819191908192b08,
    0x08191919082b0819, 0x08191919082b1908, 0x0819191919080808, 0x081919191908082b,
    0x0819191919081919, 0x0819191919082b08, 0x0819191919190819, 0x0819191919191908,
    0x08191919192b0808, 0x081919192b080819, 0x081919192b081908, 0x081919192b190808,
    0x0819192b08080808, 0x0819192b08081919, 0x0819192b08082b08, 0x0819192b08190819,
    0x0819192b08191908, 0x0819192b082b0808, 0x0819192b19080819, 0x0819192b19081908,
    0x0819192b19190808, 0x0819192b2b080808, 0x0819192b2b2b2b2b, 0x08192b0808080819,
    0x08192b0808081908, 0x08192b080808192b, 0x08192b0808082b19, 0x08192b0808190808,
    0x08192b0808191919, 0x08192b0808192b08, 0x08192b08082b0819, 0x08192b0819080808,
    0x08192b081908082b, 0x08192b0819081919, 0x08192b0819082b08, 0x08192b0819190819,
    0x08192b0819191908, 0x08192b08192b0808, 0x08192b082b080819, 0x08192b082b081908,
    0x08192b1908080808, 0x08192b190808082b, 0x08192b1908081919, 0x08192b1908082b08,
    0x08192b1908190819, 0x08192b1908191908, 0x08192b19082b0808, 0x08192b1919080819,
    0x08192b1919081908, 0x08192b1919190808, 0x08192b19192b2b19, 0x08192b192b2b082b,
    0x08192b2b08081908, 0x08192b2b08190808, 0x08192b2b19080808, 0x08192b2b1919192b,
    0x082b080808080808, 0x082b08080808082b, 0x082b080808081919, 0x082b080808082b08,
    0x082b080808190819, 0x082b080808191908, 0x082b08080819192b, 0x082b080808192b19,
    0x082b0808082b0808, 0x082b0808082b1919, 0x082b0808082b2b2b, 0x082b080819080819,
    0x082b080819081908, 0x082b080819190808, 0x082b08081919082b, 0x082b080819191919,
    0x082b0808192b1908, 0x082b08082b080808, 0x082b08082b082b2b, 0x082b08082b191908,
    0x082b08082b2b2b2b, 0x082b081908080819, 0x082b081908081908, 0x082b081908190808,
    0x082b08190819082b, 0x082b081908191919, 0x082b0819082b0819, 0x082b081919080808,
    0x082b08191908082b, 0x082b081919081919, 0x082b081919190819, 0x082b081919191908,
    0x082b0819192b0808, 0x082b08192b080819, 0x082b08192b081908, 0x082b08192b190808,
    0x082b082b08080808, 0x082b082b08082b2b, 0x082b082b082b082b, 0x082b082b082b2b08,
    0x082b082b082b2b2b, 0x082b082b19081908, 0x082b082b19190808, 0x082b082b2b082b08,
    0x082b082b2b082b2b, 0x082b082b2b2b2b08, 0x082b190808080819, 0x082b190808081908,
    0x082b19080808192b, 0x082b190808082b19, 0x082b190808190808, 0x082b190808191919,
    0x082b190808192b08, 0x082b1908082b0819, 0x082b1908082b1908, 0x082b190819080808,
    0x082b19081908082b, 0x082b190819081919, 0x082b190819082b08, 0x082b190819190819,
    0x082b190819191908, 0x082b1908192b0808, 0x082b19082b080819, 0x082b19082b081908,
    0x082b19082b190808, 0x082b191908080808, 0x082b191908081919, 0x082b191908082b08,
    0x082b191908190819, 0x082b191908191908, 0x082b1919082b0808, 0x082b191919080819,
    0x082b191919081908, 0x082b191919190808, 0x082b1919192b192b, 0x082b19192b080808,
    0x082b192b08080819, 0x082b192b08081908, 0x082b192b08190808, 0x082b192b19080808,
    0x082b192b19192b19, 0x082b2b0808080808, 0x082b2b0808081919, 0x082b2b0808190819,
    0x082b2b0808191908, 0x082b2b0819080819, 0x082b2b0819081908, 0x082b2b0819190808,
    0x082b2b082b082b2b, 0x082b2b082b2b2b2b, 0x082b2b1908080819, 0x082b2b1908081908,
    0x082b2b1908190808, 0x082b2b192b191919, 0x082b2b2b08082b2b, 0x082b2b2b082b082b,
    0x082b2b2b192b1908, 0x082b2b2b2b082b08, 0x082b2b2b2b082b2b, 0x1908080808080819,
    0x1908080808081908, 0x190808080808192b, 0x1908080808082b19, 0x1908080808190808,
    0x190808080819082b, 0x1908080808191919, 0x1908080808192b08, 0x1908080808192b2b,
    0x19080808082b0819, 0x19080808082b1908, 0x19080808082b192b, 0x1908080819080808,
    0x190808081908082b, 0x1908080819081919, 0x1908080819082b08, 0x1908080819082b2b,
    0x1908080819190819, 0x1908080819191908, 0x190808081919192b, 0x1908080819192b19,
    0x19080808192b0808, 0x19080808192b082b, 0x19080808192b1919, 0x190808082b080819,
    0x190808082b081908, 0x190808082b190808, 0x190808082b191919, 0x190808082b192b08,
    0x190808082b2b0819, 0x190808082b2b1908, 0x1908081908080808, 0x190808190808082b,
    0x1908081908081919, 0x1908081908082b08, 0x1908081908190819, 0x1908081908191908,
    0x190808190819192b, 0x1908081908192b19, 0x19080819082b0808, 0x19080819082b082b,
    0x19080819082b1919, 0x1908081919080819, 0x1908081919081908, 0x190808191908192b,
    0x1908081919082b19, 0x1908081919190808, 0x190808191919082b, 0x1908081919191919,
    0x1908081919192b08, 0x19080819192b0819, 0x19080819192b1908, 0x190808192b080808,
    0x190808192b08082b, 0x190808192b081919, 0x190808192b082b08, 0x190808192b190819,
    0x190808192b191908, 0x190808192b2b0808, 0x1908082b08080819, 0x1908082b08081908,
    0x1908082b08190808, 0x1908082b0819082b, 0x1908082b08191919, 0x1908082b08192b08,
    0x1908082b082b1908, 0x1908082b19080808, 0x1908082b19081919, 0x1908082b19082b08,
    0x1908082b19190819, 0x1908082b19191908, 0x1908082b192b0808, 0x1908082b2b080819,
    0x1908082b2b081908, 0x1908190808080808, 0x190819080808082b, 0x1908190808081919,
    0x1908190808082b08, 0x1908190808082b2b, 0x1908190808190819, 0x1908190808191908,
    0x190819080819192b, 0x1908190808192b19, 0x19081908082b0808, 0x19081908082b082b,
    0x19081908082b1919, 0x19081908082b2b08, 0x1908190819080819, 0x1908190819081908,
    0x190819081908192b, 0x1908190819082b19, 0x1908190819190808, 0x190819081919082b,
    0x1908190819191919, 0x1908190819192b08, 0x19081908192b0819, 0x19081908192b1908,
    0x190819082b080808, 0x190819082b08082b, 0x190819082b081919, 0x190819082b082b08,
    0x190819082b190819, 0x190819082b191908, 0x190819082b2b0808, 0x1908191908080819,
    0x1908191908081908, 0x190819190808192b, 0x1908191908082b19, 0x1908191908190808,
    0x190819190819082b, 0x1908191908191919, 0x1908191908192b08, 0x19081919082b0819,
    0x19081919082b1908, 0x1908191919080808, 0x190819191908082b, 0x1908191919081919,
    0x1908191919082b08, 0x1908191919190819, 0x1908191919191908, 0x19081919192b0808,
    0x19081919192b2b2b, 0x190819192b080819, 0x190819192b081908, 0x190819192b190808,
    0x1908192b08080808, 0x1908192b0808082b, 0x1908192b08081919, 0x1908192b08082b08,
    0x1908192b08190819, 0x1908192b08191908, 0x1908192b082b0808, 0x1908192b19080819,
    0x1908192b19081908, 0x1908192b19190808, 0x1908192b2b080808, 0x1908192b2b2b1919,
    0x19082b0808080819, 0x19082b0808081908, 0x19082b0808082b19, 0x19082b0808190808,
    0x19082b080819082b, 0x19082b0808191919, 0x19082b0808192b08, 0x19082b08082b0819,
    0x19082b08082b1908, 0x19082b0819080808, 0x19082b081908082b, 0x19082b0819081919,
    0x19082b0819082b08, 0x19082b0819190819, 0x19082b0819191908, 0x19082b08192b0808,
    0x19082b082b081908, 0x19082b082b190808, 0x19082b1908080808, 0x19082b190808082b,
    0x19082b1908081919, 0x19082b1908082b08, 0x19082b1908190819, 0x19082b1908191908,
    0x19082b19082b0808, 0x19082b1919080819, 0x19082b1919081908, 0x19082b1919190808,
    0x19082b192b080808, 0x19082b192b19192b, 0x19082b2b08080819, 0x19082b2b08081908,
    0x19082b2b08190808, 0x19082b2b19080808, 0x1919080808080808, 0x191908080808082b,
    0x1919080808081919, 0x1919080808082b08, 0x1919080808190819, 0x1919080808191908,
    0x191908080819192b, 0x1919080808192b19, 0x19190808082b0808, 0x19190808082b082b,
    0x19190808082b1919, 0x19190808082b2b08, 0x1919080819080819, 0x1919080819081908,
    0x191908081908192b, 0x1919080819082b19, 0x1919080819190808, 0x191908081919082b,
    0x1919080819191919, 0x1919080819192b08, 0x19190808192b0819, 0x19190808192b1908,
    0x191908082b080808, 0x191908082b08082b, 0x191908082b081919, 0x191908082b082b08,
    0x191908082b190819, 0x191908082b191908, 0x1919081908080819, 0x1919081908081908,
    0x191908190808192b, 0x1919081908082b19, 0x1919081908190808, 0x191908190819082b,
    0x1919081908191919, 0x1919081908192b08, 0x19190819082b0819, 0x19190819082b1908,
    0x1919081919080808, 0x191908191908082b, 0x1919081919081919, 0x1919081919082b08,
    0x1919081919190819, 0x1919081919191908, 0x19190819192b0808, 0x191908192b080819,
    0x191908192b081908, 0x191908192b190808, 0x1919082b08080808, 0x1919082b08081919,
    0x1919082b08082b08, 0x1919082b08190819, 0x1919082b08191908, 0x1919082b082b0808,
    0x1919082b19080819, 0x1919082b19081908, 0x1919082b19190808, 0x1919082b192b2b19,
    0x1919082b2b080808, 0x1919190808080819, 0x1919190808081908, 0x191919080808192b,
    0x1919190808082b19, 0x1919190808190808, 0x191919080819082b, 0x1919190808191919,
    0x1919190808192b08, 0x19191908082b0819, 0x19191908082b1908, 0x1919190819080808,
    0x191919081908082b, 0x1919190819081919, 0x1919190819082b08, 0x1919190819190819,
    0x1919190819191908, 0x19191908192b0808, 0x191919082b080819, 0x191919082b081908,
    0x191919082b190808, 0x1919191908080808, 0x191919190808082b, 0x1919191908081919,
    0x1919191908082b08, 0x1919191908190819, 0x1919191908191908, 0x19191919082b0808,
    0x1919191919080819, 0x1919191919081908, 0x1919191919190808, 0x191919192b080808,
    0x1919192b08080819, 0x1919192b08081908, 0x1919192b08190808, 0x1919192b082b192b,
    0x1919192b19080808, 0x19192b0808080808, 0x19192b080808082b, 0x19192b0808081919,
    0x19192b0808082b08, 0x19192b0808190819, 0x19192b0808191908, 0x19192b08082b0808,
    0x19192b0819080819, 0x19192b0819081908, 0x19192b0819190808, 0x19192b0819192b2b,
    0x19192b082b080808, 0x19192b1908080819, 0x19192b1908081908, 0x19192b1908190808,
    0x19192b1919080808, 0x19192b2b08080808, 0x19192b2b08192b19, 0x19192b2b2b081919,
    0x19192b2b2b2b2b08, 0x192b080808080819, 0x192b080808081908, 0x192b08080808192b,
    0x192b080808190808, 0x192b08080819082b, 0x192b080808191919, 0x192b080808192b08,
    0x192b0808082b0819, 0x192b0808082b1908, 0x192b080819080808, 0x192b080819081919,
    0x192b080819082b08, 0x192b080819190819, 0x192b080819191908, 0x192b0808192b0808,
    0x192b08082b081908, 0x192b08082b190808, 0x192b081908080808, 0x192b08190808082b,
    0x192b081908081919, 0x192b081908082b08, 0x192b081908190819, 0x192b081908191908,
    0x192b0819082b0808, 0x192b081919080819, 0x192b081919081908, 0x192b081919190808,
    0x192b08192b080808, 0x192b08192b192b19, 0x192b082b08081908, 0x192b082b08190808,
    0x192b082b19080808, 0x192b082b1919192b, 0x192b082b2b2b0819, 0x192b190808080808,
    0x192b190808081919, 0x192b190808082b08, 0x192b190808190819, 0x192b190808191908,
    0x192b1908082b0808, 0x192b190819080819, 0x192b190819081908, 0x192b190819190808,
    0x192b19082b080808, 0x192b191908080819, 0x192b191908081908, 0x192b191908190808,
    0x192b191919080808, 0x192b191919082b2b, 0x192b1919192b2b08, 0x192b19192b19082b,
    0x192b192b08080808, 0x192b192b2b191908, 0x192b2b0808080819, 0x192b2b0808081908,
    0x192b2b0808190808, 0x192b2b08192b1919, 0x192b2b082b192b08, 0x192b2b1908080808,
    0x192b2b19082b2b2b, 0x192b2b2b1908082b, 0x192b2b2b2b2b0819, 0x2b08080808080808,
    0x2b0808080808082b, 0x2b08080808081919, 0x2b08080808082b08, 0x2b08080808190819,
    0x2b08080808191908, 0x2b08080808192b19, 0x2b080808082b0808, 0x2b080808082b1919,
    0x2b08080819080819, 0x2b08080819081908, 0x2b08080819190808, 0x2b0808081919082b,
    0x2b08080819191919, 0x2b08080819192b08, 0x2b080808192b0819, 0x2b0808082b080808,
    0x2b0808082b081919, 0x2b0808082b190819, 0x2b0808082b191908, 0x2b08081908080819,
    0x2b08081908081908, 0x2b08081908082b19, 0x2b08081908190808, 0x2b0808190819082b,
    0x2b08081908191919, 0x2b08081908192b08, 0x2b080819082b0819, 0x2b080819082b1908,
    0x2b08081919080808, 0x2b0808191908082b, 0x2b08081919081919, 0x2b08081919082b08,
    0x2b08081919190819, 0x2b08081919191908, 0x2b0808192b080819, 0x2b0808192b081908,
    0x2b0808192b190808, 0x2b0808192b2b2b19, 0x2b08082b08080808, 0x2b08082b08081919,
    0x2b08082b08082b2b, 0x2b08082b08190819, 0x2b08082b08191908, 0x2b08082b19080819,
    0x2b08082b19081908, 0x2b08082b19190808, 0x2b08190808080819, 0x2b08190808081908,
    0x2b0819080808192b, 0x2b08190808082b19, 0x2b08190808190808, 0x2b0819080819082b,
    0x2b08190808191919, 0x2b08190808192b08, 0x2b081908082b0819, 0x2b08190819080808,
    0x2b0819081908082b, 0x2b08190819081919, 0x2b08190819082b08, 0x2b08190819190819,
    0x2b08190819191908, 0x2b081908192b0808, 0x2b0819082b080819, 0x2b0819082b081908,
    0x2b0819082b190808, 0x2b08191908080808, 0x2b0819190808082b, 0x2b08191908081919,
    0x2b08191908082b08, 0x2b08191908190819, 0x2b08191908191908, 0x2b081919082b0808,
    0x2b08191919080819, 0x2b08191919081908, 0x2b08191919190808, 0x2b0819192b080808,
    0x2b0819192b082b2b, 0x2b08192b08080819, 0x2b08192b08081908, 0x2b08192b08190808,
    0x2b08192b082b2b19, 0x2b08192b19080808, 0x2b082b0808080808, 0x2b082b0808081919,
    0x2b082b0808190819, 0x2b082b0808191908, 0x2b082b0819080819, 0x2b082b0819081908,
    0x2b082b0819190808, 0x2b082b082b2b082b, 0x2b082b1908080819, 0x2b082b1908081908,
    0x2b082b1919080808, 0x2b082b19192b1919, 0x2b082b2b082b082b, 0x2b082b2b19192b08,
    0x2b082b2b19192b2b, 0x2b082b2b2b08082b, 0x2b082b2b2b2b082b, 0x2b19080808080819,
    0x2b19080808081908, 0x2b19080808082b19, 0x2b19080808190808, 0x2b1908080819082b,
    0x2b19080808191919, 0x2b19080808192b08, 0x2b190808082b1908, 0x2b19080819080808,
    0x2b1908081908082b, 0x2b19080819081919, 0x2b19080819082b08, 0x2b19080819190819,
    0x2b19080819191908, 0x2b190808192b0808, 0x2b1908082b080819, 0x2b1908082b081908,
    0x2b1908082b190808, 0x2b19081908080808, 0x2b19081908081919, 0x2b19081908190819,
    0x2b19081908191908, 0x2b19081919080819, 0x2b19081919081908, 0x2b19081919190808,
    0x2b19081919192b2b, 0x2b19082b08080819, 0x2b19082b08081908, 0x2b19082b08190808,
    0x2b19082b19080808, 0x2b19082b2b2b192b, 0x2b19190808080808, 0x2b1919080808082b,
    0x2b19190808081919, 0x2b19190808082b08, 0x2b19190808190819, 0x2b19190808191908,
    0x2b191908082b0808, 0x2b19190819080819, 0x2b19190819081908, 0x2b19190819190808,
    0x2b1919082b080808, 0x2b1919082b19192b, 0x2b19191908080819, 0x2b19191908081908,
    0x2b19191908190808, 0x2b19191919080808, 0x2b1919192b192b08, 0x2b1919192b2b0819,
    0x2b19192b08080808, 0x2b19192b1908192b, 0x2b19192b192b1908, 0x2b192b0808080819,
    0x2b192b0808081908, 0x2b192b0808190808, 0x2b192b08082b192b, 0x2b192b0819080808,
    0x2b192b082b2b2b19, 0x2b192b1908080808, 0x2b192b1919082b19, 0x2b192b191919082b,
    0x2b192b2b2b190808, 0x2b2b080808080808, 0x2b2b080808081919, 0x2b2b080808082b2b,
    0x2b2b080808191908, 0x2b2b0808082b082b, 0x2b2b0808082b2b2b, 0x2b2b080819080819,
    0x2b2b080819081908, 0x2b2b080819190808, 0x2b2b08082b2b082b, 0x2b2b08082b2b2b2b,
    0x2b2b081919080808, 0x2b2b0819192b1919, 0x2b2b082b0808082b, 0x2b2b082b08082b2b,
    0x2b2b082b082b082b, 0x2b2b082b082b2b08, 0x2b2b082b082b2b2b, 0x2b2b082b2b08082b,
    0x2b2b082b2b082b08, 0x2b2b082b2b082b2b, 0x2b2b082b2b2b2b08, 0x2b2b190808080819,
    0x2b2b190808081908, 0x2b2b190808190808, 0x2b2b190819080808, 0x2b2b19082b082b19,
    0x2b2b19082b2b1908, 0x2b2b191908080808, 0x2b2b191908192b19, 0x2b2b192b19190819,
    0x2b2b2b0808082b2b, 0x2b2b2b08082b2b08, 0x2b2b2b082b2b082b, 0x2b2b2b1919191908,
    0x2b2b2b192b08192b, 0x2b2b2b2b08082b08, 0x2b2b2b2b08082b2b, 0x2b2b2b2b082b0808,
    0x2b2b2b2b082b082b, 0x2b2b2b2b082b2b08, 0x2b2b2b2b2b082b08, 0x2b2b2b2b2b2b2b2b,
], dtype="<u8")  # ggml-common.h's iq2s_grid, as IQ2XXS_GRID
IQ2_LEVELS = np.array([8, 25, 43], dtype=np.float32)


def _iq2_magnitudes(grid):
    """IQ2XXS_GRID, IQ2XS_GRID or IQ2S_GRID as [entries, 8] magnitudes, the entry's first element
    first."""
    return grid.view(np.uint8).reshape(-1, 8)


def _iq2_nearest_entries(target, grid):
    """The entry of grid nearest each row of target [n, 8]. Each element at its nearest level
    gives the nearest of all 6561 octets; where that one is an entry, it is the nearest entry too.
    The others are searched (_search_off_grid)."""
    magnitudes = _iq2_magnitudes(grid)
    powers = 3 ** np.arange(8)
    entry_of = np.full(3 ** 8, -1, dtype=np.int64)
    entry_of[(np.searchsorted(IQ2_LEVELS, magnitudes) * powers).sum(axis=1)] = np.arange(len(grid))
    level = np.abs(target[:, :, None] - IQ2_LEVELS[None, None, :]).argmin(axis=2)
    index = entry_of[(level * powers).sum(axis=1)]
    return _search_off_grid(target, magnitudes, index)


def _iq2_choices(b, negative, scale_size, grid):
    """For blocks b [n, 256] stored with the signs negative [n, 256] and a 4-bit ls per scale_size
    elements: x ~ d * (0.5 + ls) * 0.25 * magnitude * sign, magnitudes eight at a time from grid.
    d puts ls = 15 on the step that takes the block's largest magnitude to 43; each ls is the one
    of all 16 with the least squared error when every element takes its nearest level (the
    grid's choice of octets left out: searching it for each ls would cost 16 grid searches); each
    group of eight takes the entry nearest x times its stored sign, so an element whose sign was
    flipped takes a small magnitude."""
    groups = np.abs(b).reshape(len(b), -1, scale_size)
    d = f16_values(f16_bits(8.0 * groups.max(axis=(1, 2)) / (43.0 * 31.0)))
    midpoints = (IQ2_LEVELS[:-1] + IQ2_LEVELS[1:]) / 2
    best = np.full(groups.shape[:2], np.inf, dtype=np.float32)
    ls = np.zeros(groups.shape[:2], dtype=np.uint32)
    for candidate in range(16):
        step = d * np.float32(0.5 + candidate) * np.float32(0.25)
        t = np.divide(groups, step[:, None, None], out=np.zeros_like(groups),
                      where=step[:, None, None] != 0)
        level = IQ2_LEVELS[np.digitize(t, midpoints)]
        err = ((groups - step[:, None, None] * level) ** 2).sum(axis=2)
        better = err < best
        best[better] = err[better]
        ls[better] = candidate
    step = d[:, None] * (np.float32(0.5) + ls.astype(np.float32)) * np.float32(0.25)
    signed = np.where(negative == 1, -b, b).reshape(groups.shape)
    target = np.divide(signed, step[:, :, None], out=np.zeros_like(signed),
                       where=step[:, :, None] != 0).reshape(-1, 8)
    return d, ls, _iq2_nearest_entries(target, grid).reshape(len(b), 32)


def quantize_iq2_xxs(x):
    """8 sub-blocks of 32, each with a 4-bit ls, groups of eight from IQ2XXS_GRID (_iq2_choices);
    sub-block j's two little-endian words: its four indices, then its groups' seven signs
    (_seven_signs) at 7l and ls at 28."""
    b = _blocks(x, QK_K)
    negative, seven = _seven_signs(b.reshape(-1, 8, 4, 8))
    d, ls, index = _iq2_choices(b, negative.reshape(-1, 256), 32, IQ2XXS_GRID)
    shifts = np.arange(4, dtype=np.uint32)
    words = np.zeros((len(b), 8, 2), dtype=np.uint32)
    words[:, :, 0] = (index.reshape(-1, 8, 4).astype(np.uint32) << (8 * shifts)).sum(axis=2)
    words[:, :, 1] = (seven << (7 * shifts)).sum(axis=2) | (ls << 28)
    out = _record([("d", "<u2"), ("qs", "<u4", 16)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = words.reshape(-1, 16)
    return out.tobytes()


def quantize_iq2_xs(x):
    """8 sub-blocks of 32, each with two 4-bit ls (its halves', low nibble first), groups of eight
    from IQ2XS_GRID (_iq2_choices); group i's uint16 holds its index and, at bit 9, its seven
    signs (_seven_signs)."""
    b = _blocks(x, QK_K)
    negative, seven = _seven_signs(b.reshape(-1, 32, 8))
    d, ls, index = _iq2_choices(b, negative.reshape(-1, 256), 16, IQ2XS_GRID)
    out = _record([("d", "<u2"), ("qs", "<u2", 32), ("scales", "u1", 8)], len(b))
    out["d"] = f16_bits(d)
    out["qs"] = index.astype(np.uint32) | (seven << 9)
    out["scales"] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    return out.tobytes()


def quantize_iq2_s(x):
    """8 sub-blocks of 32, each with two 4-bit ls (as IQ2_XS), groups of eight from IQ2S_GRID
    (_iq2_choices); qs holds the indices' low bytes, then every sign (bit e % 8 of byte e // 8),
    qh[j] group 4j + l's top two index bits at 2l."""
    b = _blocks(x, QK_K)
    negative = (b < 0).astype(np.uint8)
    d, ls, index = _iq2_choices(b, negative, 16, IQ2S_GRID)
    out = _record([("d", "<u2"), ("qs", "u1", 64), ("qh", "u1", 8), ("scales", "u1", 8)], len(b))
    out["d"] = f16_bits(d)
    out["qs"][:, :32] = (index & 0xFF).astype(np.uint8)
    out["qs"][:, 32:] = (negative.reshape(-1, 32, 8) << np.arange(8, dtype=np.uint8)).sum(axis=2)
    out["qh"] = ((index >> 8).reshape(-1, 8, 4) << (2 * np.arange(4))).sum(axis=2).astype(np.uint8)
    out["scales"] = ls[:, 0::2] | (ls[:, 1::2] << 4)
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
    "iq3_s": quantize_iq3_s, "iq3_xxs": quantize_iq3_xxs, "iq1_s": quantize_iq1_s,
    "iq1_m": quantize_iq1_m, "iq2_xxs": quantize_iq2_xxs, "iq2_xs": quantize_iq2_xs,
    "iq2_s": quantize_iq2_s,
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


def _eight_signs(seven):
    """Seven stored signs [...] (bit i set: element i negative) -> the negative bits [..., 8] of
    their group of eight, the eighth the parity of the seven (ggml spells these out as its
    ksigns_iq2xs table)."""
    bits = (seven[..., None] >> np.arange(7, dtype=np.uint32)) & 1
    parity = bits.sum(axis=-1) % 2
    return np.concatenate([bits, parity[..., None]], axis=-1)


def dequantize_iq3_xxs(raw):
    """As ggml's dequantize_row_iq3_xxs: x = d * (0.5 + ls) * 0.5 * magnitude * sign per sub-block
    of 32; group i of four takes grid entry qs[i]; sub-block j's little-endian word holds ls in
    bits 28..31 and, for its elements 8l..8l + 7, seven sign bits at 7l (the eighth their
    parity)."""
    b = _view(raw, [("d", "<u2"), ("qs", "u1", 64), ("scales_and_signs", "<u4", 8)])
    magnitude = _iq3xxs_magnitudes()[b["qs"].astype(np.int64)].reshape(-1, 8, 32).astype(np.float32)
    words = b["scales_and_signs"].astype(np.uint32)
    seven = (words[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 0x7F  # [n, 8, 4]
    negative = _eight_signs(seven).reshape(-1, 8, 32)
    ls = (words >> 28).astype(np.float32)
    db = (f16_values(b["d"])[:, None] * (np.float32(0.5) + ls) * np.float32(0.5)).astype(np.float32)
    values = db[:, :, None] * magnitude
    return np.where(negative == 1, -values, values).reshape(-1)


def _iq1_values(d, ls, negative, index):
    """d [n], ls [n, s] (a scale per 256 / s elements), negative [n, t] (a delta sign per 256 / t),
    index [n, 32]: d * (2 * ls + 1), times each grid value plus its delta, in float32."""
    n = len(d)
    dl = (d[:, None] * (2 * ls + 1).astype(np.float32)).astype(np.float32)
    grid = _iq1s_values()[index].astype(np.float32).reshape(n, 256)
    delta = np.where(negative == 1, np.float32(-0.125), np.float32(0.125)).astype(np.float32)
    plus = (grid + np.repeat(delta, 256 // delta.shape[1], axis=1)).astype(np.float32)
    return (np.repeat(dl, 256 // dl.shape[1], axis=1) * plus).reshape(-1)


def dequantize_iq1_s(raw):
    """As ggml's dequantize_row_iq1_s: x = (d * (2 * ls + 1)) * (grid value + delta) per sub-block
    of 32, ls in bits 12..14 of qh[j], the delta's sign in bit 15 (set: -1/8), group 4j + l's
    index qs[4j + l] | (bits 3l..3l + 2 of qh[j]) << 8."""
    b = _view(raw, [("d", "<u2"), ("qs", "u1", 32), ("qh", "<u2", 8)])
    qh = b["qh"].astype(np.int64)
    top = (qh[:, :, None] >> (3 * np.arange(4))) & 7
    index = b["qs"].astype(np.int64) | top.reshape(-1, 32) << 8
    return _iq1_values(f16_values(b["d"]), (qh >> 12) & 7, (qh >> 15) & 1, index)


def dequantize_iq1_m(raw):
    """As ggml's dequantize_row_iq1_m: d is the half made of the top nibbles of the four scale
    words (word w's at bits 4w..4w + 3); group of 16 i has ls bits 3(i % 4).. of word i // 4;
    group of eight k has index qs[k] | (low three bits of nibble k % 2 of qh[k // 2]) << 8 and its
    delta's sign in that nibble's bit 3."""
    b = _view(raw, [("qs", "u1", 32), ("qh", "u1", 16), ("scales", "<u2", 4)])
    words = b["scales"].astype(np.int64)
    d_bits = ((words >> 12) << (4 * np.arange(4))).sum(axis=1).astype(np.uint16)
    ls = ((words[:, :, None] >> (3 * np.arange(4))) & 7).reshape(-1, 16)
    nibble = np.stack([b["qh"] & 0xF, b["qh"] >> 4], axis=2).reshape(-1, 32).astype(np.int64)
    index = b["qs"].astype(np.int64) | (nibble & 7) << 8
    return _iq1_values(f16_values(d_bits), ls, (nibble >> 3) & 1, index)


def _iq2_values(d, scales, magnitude, negative):
    """d [n], scales [n, k] (4-bit ls per 256 / k elements), magnitude and negative [n, 256]:
    (d * (0.5 + ls) * 0.25) * magnitude * sign, in float32."""
    db = d[:, None] * (np.float32(0.5) + scales.astype(np.float32)) * np.float32(0.25)
    values = np.repeat(db, 256 // db.shape[1], axis=1) * magnitude.astype(np.float32)
    return np.where(negative == 1, -values, values).reshape(-1)


def _nibbles_interleaved(scales):
    """[n, 8] bytes -> [n, 16]: byte j's low nibble, then its high."""
    return np.stack([scales & 0xF, scales >> 4], axis=2).reshape(len(scales), 16)


def dequantize_iq2_xxs(raw):
    """As ggml's dequantize_row_iq2_xxs: x = (d * (0.5 + ls) * 0.25) * magnitude * sign per
    sub-block of 32; sub-block j's first little-endian word holds its four groups' indices into
    IQ2XXS_GRID (byte l: group l), its second ls in bits 28..31 and group l's seven signs at
    7l (the eighth their parity)."""
    b = _view(raw, [("d", "<u2"), ("qs", "<u4", 16)])
    words = b["qs"].reshape(-1, 8, 2)
    index = words[:, :, 0:1] >> (8 * np.arange(4, dtype=np.uint32)) & 0xFF  # [n, 8, 4]
    magnitude = _iq2_magnitudes(IQ2XXS_GRID)[index.astype(np.int64)].reshape(-1, 256)
    seven = (words[:, :, 1:2] >> (7 * np.arange(4, dtype=np.uint32))) & 0x7F
    negative = _eight_signs(seven).reshape(-1, 256)
    return _iq2_values(f16_values(b["d"]), words[:, :, 1] >> 28, magnitude, negative)


def dequantize_iq2_xs(raw):
    """As ggml's dequantize_row_iq2_xs: x = (d * (0.5 + ls) * 0.25) * magnitude * sign per half
    sub-block of 16 (ls nibble h of scales[j] for half h of sub-block j); group i's uint16 holds
    its index into IQ2XS_GRID in bits 0..8 and its seven signs from bit 9 (the eighth their
    parity)."""
    b = _view(raw, [("d", "<u2"), ("qs", "<u2", 32), ("scales", "u1", 8)])
    qs = b["qs"].astype(np.uint32)
    magnitude = _iq2_magnitudes(IQ2XS_GRID)[(qs & 511).astype(np.int64)].reshape(-1, 256)
    negative = _eight_signs(qs >> 9).reshape(-1, 256)
    return _iq2_values(f16_values(b["d"]), _nibbles_interleaved(b["scales"]), magnitude, negative)


def dequantize_iq2_s(raw):
    """As ggml's dequantize_row_iq2_s: scales as IQ2_XS; group 4j + l's index into IQ2S_GRID is
    qs[4j + l] | (bits 2l, 2l + 1 of qh[j]) << 8, element e's sign bit e % 8 of qs[32 + e // 8]."""
    b = _view(raw, [("d", "<u2"), ("qs", "u1", 64), ("qh", "u1", 8), ("scales", "u1", 8)])
    top = (b["qh"][:, :, None].astype(np.int64) >> (2 * np.arange(4))) & 3
    index = b["qs"][:, :32].astype(np.int64) | top.reshape(-1, 32) << 8
    magnitude = _iq2_magnitudes(IQ2S_GRID)[index].reshape(-1, 256)
    e = np.arange(256)
    negative = (b["qs"][:, 32 + e // 8].astype(np.int32) >> (e % 8)) & 1
    return _iq2_values(f16_values(b["d"]), _nibbles_interleaved(b["scales"]), magnitude, negative)


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
    "iq1_s": dequantize_iq1_s, "iq1_m": dequantize_iq1_m, "iq2_xxs": dequantize_iq2_xxs,
    "iq2_xs": dequantize_iq2_xs, "iq2_s": dequantize_iq2_s,
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
    # 4096 quadruples, iq3_xxs to its 256 and its flipped signs, iq1_s and iq1_m to three levels
    # (plus or minus an eighth) a step of 1.2 root mean squares clips the largest elements at,
    # the iq2 formats to three magnitudes whose step, chosen for the least squared error, may clip
    # a sub-block's largest element, to their grids' 256 to 1024 of 6561 octets and (iq2_xxs,
    # iq2_xs) flipped signs.
    bounds = {"f32": 0, "f16": 1e-3, "bf16": 4e-3, "q8_0": 0.0042, "q5_0": 0.033, "q5_1": 0.034,
              "q4_0": 0.065, "q4_1": 0.067, "q6_k": 0.025, "q5_k": 0.025, "q4_k": 0.05,
              "q3_k": 0.16, "q2_k": 0.34, "iq4_nl": 0.12, "iq4_xs": 0.12, "iq3_s": 0.3,
              "iq3_xxs": 0.3,
              "iq1_s": 0.6, "iq1_m": 0.6, "iq2_xxs": 0.5, "iq2_xs": 0.5, "iq2_s": 0.5}
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


# The formats whose elements come from a grid of octets or quadruples (ggml-common.h's tables).
GRID_FORMATS = ("iq3_xxs", "iq3_s", "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s")


def random_grid_blocks(name, blocks, rng):
    """`blocks` blocks of a grid format of random bytes but d (1/16): every index, sign and scale
    field drawn at random, so that with 1024 blocks every grid entry appears (the largest grid,
    IQ1's 2048 entries, meets 32768 groups), which quantizing weights does not reach."""
    size = GGML_TYPES[name][2]
    raw = rng.integers(0, 256, (blocks, size), dtype=np.uint8)
    half = 0x2C00
    if name == "iq1_m":  # d's nibbles in the top nibbles of the four scale words
        for w in range(4):
            at = size - 8 + 2 * w + 1
            raw[:, at] = (raw[:, at] & 0x0F) | (((half >> (4 * w)) & 0xF) << 4)
    else:
        raw[:, 0], raw[:, 1] = half & 0xFF, half >> 8
    return raw.tobytes()


def write_formats_file(path, rows=2, cols=512, seed=11):
    """A GGUF with, for every format, a quantized tensor q.<type> and the numpy dequantization of
    it as ref.<type> (f32), for every grid format random blocks grid.<type> (random_grid_blocks)
    and theirs as gridref.<type>, plus a key of every value type: moed's reader and dequantizers
    are checked against it (tests/unit/test_gguf.cpp)."""
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
    for name in GRID_FORMATS:
        raw = random_grid_blocks(name, 1024, rng)
        w.add_tensor("grid." + name, name, (1024, 256), raw)
        w.add_array("gridref." + name, dequantize(raw, name, (1024, 256)), "f32")
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
