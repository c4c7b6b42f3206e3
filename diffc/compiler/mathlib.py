"""libm-free log1p, expm1, softplus, sin, cos and erfc, in the style of scalar.py.

Input: an IRBuilder, the LLVM float type of the result and the operand (a scalar; loops
vectorize them). Output: the result value.
Invariants: no calls but LLVM intrinsics that lower to instructions (fabs); special values by
selects. Accuracy: log1p, expm1 and softplus a few ulp of the dtype, computed in it; sin, cos and
erfc are computed in double (float32 rounds the double result once):
- sin, cos: x = k*pi/2 + r (Cody-Waite: pi/2 as three 33-bit parts, so k*part is exact for
  |k| < 2**20), then Taylor series of sin r and cos r on |r| <= pi/4. Within a few ulp for
  |x| <= 2**20 * pi/2 (about 1.6e6); beyond, k*part rounds and the absolute error grows like
  |x| * 2**-53 (1e-8 at |x| = 1e8); for |x| >= 2**50 (where it would reach 0.1) the result is
  nan, as for infinities and nan.
- erfc: erfc(z) = t * exp(-z*z + P(2t - 1)), t = 2 / (2 + z), z = |x| (erfc(-z) = 2 - erfc(z)),
  P a Chebyshev series fitted to log(erfc(z) / t) + z*z over all z >= 0 (t in (0, 1]; computed
  in 110-digit decimal arithmetic, tail below 3e-18), -z*z kept exact in two parts: within
  ~10 ulp of double; 0 beyond z = 28, where erfc underflows.
"""
from __future__ import annotations

import math

from llvmlite import ir

from .scalar import (
    FLAGS,
    Precision,
    _c,
    _exp_reduce,
    _horner,
    _pow2,
    emit_exp,
    emit_log,
    intrinsic,
)


def _wide(b, ty, x, emit):
    """emit(b, double type, x as double), rounded back to ty (a float or double type)."""
    if isinstance(ty, ir.DoubleType):
        return emit(b, ty, x)
    wide = ir.DoubleType()
    return b.fptrunc(emit(b, wide, b.fpext(x, wide)), ty)


def emit_log1p(b: ir.IRBuilder, ty, x):
    """log(u) + (x - (u - 1)) / u with u = 1 + x: the correction restores what rounding u lost.
    Where u is 0 or inf the correction is nan and left out; where u == 1, x itself (|x| below
    half an ulp of 1, also -0)."""
    u = b.fadd(x, _c(ty, 1.0))
    correction = b.fdiv(b.fsub(x, b.fsub(u, _c(ty, 1.0))), u)
    correction = b.select(b.fcmp_ordered("ord", correction, correction), correction,
                          _c(ty, 0.0))
    result = b.fadd(emit_log(b, ty, u), correction)
    return b.select(b.fcmp_ordered("==", u, _c(ty, 1.0)), x, result)


def emit_expm1(b: ir.IRBuilder, ty, x):
    """2**k * expm1(r) + (2**k - 1) for x = k*ln2 + r (accurate near 0, x itself at +-0);
    exp(x) where the -1 no longer matters and 2**k would overflow; -1 far below 0."""
    pr = Precision(ty)
    double = isinstance(ty, ir.DoubleType)
    big, low = (700.0, -60.0) if double else (80.0, -30.0)  # expm1(low) rounds to -1
    k, p = _exp_reduce(b, pr, _clamp_low(b, x, low))
    s = _pow2(b, pr, k)
    result = b.fadd(b.fmul(s, p, flags=FLAGS), b.fsub(s, _c(ty, 1.0)), flags=FLAGS)
    result = b.select(b.fcmp_ordered(">", x, _c(ty, big)), emit_exp(b, ty, x), result)
    return b.select(b.fcmp_ordered("==", x, _c(ty, 0.0)), x, result)


def _clamp_low(b, x, lo: float):
    """max(x, lo); nan stays nan."""
    return b.select(b.fcmp_ordered("<", x, _c(x.type, lo)), _c(x.type, lo), x)


def emit_softplus(b: ir.IRBuilder, ty, x):
    """log1p(exp(-|x|)) + max(x, 0): no overflow for large x, no underflow to log(1) for large
    negative x (it stays exp(x)); nan stays nan."""
    e = emit_exp(b, ty, b.fneg(intrinsic(b, "llvm.fabs", x)))
    positive = b.select(b.fcmp_ordered(">", x, _c(ty, 0.0)), x, _c(ty, 0.0))
    return b.fadd(emit_log1p(b, ty, e), positive)


# pi/2 in three parts of 33 significant bits (the bits of pi/2 in order), and 2/pi
PIO2 = tuple(map(float.fromhex, ("0x1.921fb544p0", "0x1.0b4611a6p-34", "0x1.3198a2ep-69")))
TWO_OVER_PI = 0.6366197723675814
TRIG_LIMIT = 2.0 ** 50  # beyond: nan (the reduction would be off by more than 0.1)
SIN = [(-1) ** n / math.factorial(2 * n + 1) for n in range(1, 9)]  # r**17/17! < ulp/2
COS = [(-1) ** n / math.factorial(2 * n) for n in range(1, 10)]  # r**18/18! < ulp/2


def _sin_cos_reduced(b, ty, x):
    """(sin r, cos r, k mod 4) for x = k*pi/2 + r, |r| <= pi/4 (a double ty)."""
    i64 = ir.IntType(64)
    magic = 1.5 * 2.0 ** 52  # adding it rounds to an integer held in the low bits
    t = b.fadd(b.fmul(x, _c(ty, TWO_OVER_PI)), _c(ty, magic))
    kf = b.fsub(t, _c(ty, magic))
    quadrant = b.and_(b.sub(b.bitcast(t, i64), b.bitcast(_c(ty, magic), i64)), _c(i64, 3))
    r = x
    for part in PIO2:  # x - k*PIO2[0] is exact, the later parts round only the small rest
        r = b.fsub(r, b.fmul(kf, _c(ty, part)))
    r2 = b.fmul(r, r)
    sin = b.fadd(r, b.fmul(b.fmul(r, r2), _horner(b, r2, SIN, ty), flags=FLAGS), flags=FLAGS)
    cos = b.fadd(_c(ty, 1.0), b.fmul(r2, _horner(b, r2, COS, ty), flags=FLAGS), flags=FLAGS)
    return sin, cos, quadrant


def _trig(b, ty, x, shift: int):
    """sin(x + shift * pi/2) in double: sin for shift 0, cos for shift 1."""
    sin, cos, quadrant = _sin_cos_reduced(b, ty, x)
    q = b.and_(b.add(quadrant, _c(quadrant.type, shift)), _c(quadrant.type, 3))
    odd = b.trunc(q, ir.IntType(1))  # quadrants 1 and 3: the cosine
    negate = b.icmp_unsigned(">=", q, _c(q.type, 2))  # quadrants 2 and 3: negated
    value = b.select(odd, cos, sin)
    value = b.select(negate, b.fneg(value), value)
    if shift == 0:  # sin(-0) is -0 (the series' r + r**3 * s gives +0)
        value = b.select(b.fcmp_ordered("==", x, _c(ty, 0.0)), x, value)
    far = b.fcmp_unordered(">=", intrinsic(b, "llvm.fabs", x), _c(ty, TRIG_LIMIT))
    return b.select(far, _c(ty, math.nan), value)


def emit_sin(b: ir.IRBuilder, ty, x):
    return _wide(b, ty, x, lambda b, t, v: _trig(b, t, v, 0))


def emit_cos(b: ir.IRBuilder, ty, x):
    return _wide(b, ty, x, lambda b, t, v: _trig(b, t, v, 1))


# log(erfc(z) / t) + z*z as sum_k ERFC[k] T_k(2t - 1), t = 2 / (2 + z), z >= 0 (Chebyshev
# series, evaluated by Clenshaw's recurrence)
ERFC = (-0.6513268598908547, 0.6419697923564902, 0.019476473204185836, -0.009561514786808632,
        -0.0009465953444820369, 0.00036683949785276145, 4.252332480690777e-05,
        -2.0278578112534242e-05, -1.6242900046470256e-06, 1.3036558355805232e-06,
        1.5626441722066142e-08, -8.523809591492654e-08, 6.5290544390988515e-09,
        5.059343495551469e-09, -9.91364156493033e-10, -2.273651222931836e-10,
        9.646791102015527e-11, 2.3940380830391146e-12, -6.886027526497553e-12,
        8.944879273090725e-13, 3.130921399342958e-13, -1.1270822361367252e-13,
        3.810905255189232e-16, 7.106097613609237e-15, -1.5230282014571043e-15,
        -9.457494571291233e-17, 1.210237189224279e-16, -2.816663087747177e-17)
ERFC_ZERO = 28.0  # erfc(z) rounds to 0 in double beyond


def _clenshaw(b, ty, u, coeffs):
    """sum_k coeffs[k] T_k(u)."""
    b1, b2 = _c(ty, 0.0), _c(ty, 0.0)
    two_u = b.fmul(u, _c(ty, 2.0))
    for ck in coeffs[:0:-1]:
        b1, b2 = b.fsub(b.fadd(b.fmul(two_u, b1, flags=FLAGS), _c(ty, ck), flags=FLAGS), b2), b1
    return b.fsub(b.fadd(b.fmul(u, b1, flags=FLAGS), _c(ty, coeffs[0]), flags=FLAGS), b2)


def _erfc_double(b, ty, x):
    """erfc(x) in double: exp(s) * (1 + e) * t with s + e = -z*z + P exactly (two-sum), -z*z
    as -zh*zh (exact: zh is z's upper 26 bits) - zl * (z + zh)."""
    i64 = ir.IntType(64)
    z = intrinsic(b, "llvm.fabs", x)
    t = b.fdiv(_c(ty, 2.0), b.fadd(z, _c(ty, 2.0)))
    series = _clenshaw(b, ty, b.fsub(b.fmul(t, _c(ty, 2.0)), _c(ty, 1.0)), ERFC)
    zh = b.bitcast(b.and_(b.bitcast(z, i64), _c(i64, -(1 << 27))), ty)
    head = b.fneg(b.fmul(zh, zh))
    tail = b.fsub(series, b.fmul(b.fsub(z, zh), b.fadd(z, zh)))
    s = b.fadd(head, tail)  # two-sum: s + e == head + tail
    tail_part = b.fsub(s, head)
    e = b.fadd(b.fsub(head, b.fsub(s, tail_part)), b.fsub(tail, tail_part))
    exp_s = emit_exp(b, ty, s)
    value = b.fmul(t, b.fadd(exp_s, b.fmul(exp_s, e)))
    value = b.select(b.fcmp_ordered(">", z, _c(ty, ERFC_ZERO)), _c(ty, 0.0), value)
    return b.select(b.fcmp_ordered("<", x, _c(ty, 0.0)), b.fsub(_c(ty, 2.0), value), value)


def emit_erfc(b: ir.IRBuilder, ty, x):
    return _wide(b, ty, x, _erfc_double)
