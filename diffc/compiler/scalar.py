"""Scalar code for elementwise primitives: libm-free exp/log/tanh, sigmoid, pow, conversion.

Input: an IRBuilder, the LLVM float type of the result, operand values (scalars or vectors
alike) and the equation's params. Output: the result value.
Invariants: no calls except LLVM intrinsics that lower to plain instructions (fabs, copysign,
sqrt), so loops vectorize and objects need no libm; exp, log and tanh are polynomial
approximations accurate to a few ulp of the dtype (range reduction by powers of two, Taylor
series long enough for the dtype), with inf/nan/zero/subnormal handled by selects. Arithmetic
carries only the `contract` flag here: reassociation would undo the range reductions.
"""
from __future__ import annotations

import math

from llvmlite import ir

FLAGS = ("contract",)


class Precision:
    """What the approximations need to know about a float type."""

    def __init__(self, ty: ir.Type):
        double = isinstance(ty, ir.DoubleType)
        self.ty = ty
        self.int = ir.IntType(64 if double else 32)
        self.mantissa_bits = 52 if double else 23
        self.bias = 1023 if double else 127
        self.exp_terms = 13 if double else 7  # r**n/n! < ulp/2 for |r| <= ln2/2
        self.log_terms = 11 if double else 5  # z**n/(2n+1) < ulp/2 for z <= 0.0295
        self.exp_range = (-746.0, 710.0) if double else (-104.0, 89.0)
        self.tanh_limit = 20.0 if double else 10.0  # tanh(x) rounds to 1 beyond this
        self.ln2_hi = 6.93147180369123816490e-01 if double else 0.693145751953125
        self.ln2_lo = 1.90821492927058770002e-10 if double else 1.428606765330187e-06
        self.tiny = 2.0 ** (-1022 if double else -126)  # the smallest normal number
        self.tiny_scale_bits = 54 if double else 25


def _c(ty, value):
    return ir.Constant(ty, value)


def _mangle(ty) -> str:
    """LLVM's suffix for an intrinsic overloaded on ty: f32, f64, v8f32, v4f64."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_mangle(ty.element)}"
    return "f64" if isinstance(ty, ir.DoubleType) else "f32"


def intrinsic(b: ir.IRBuilder, name: str, *args, overload=None, result=None, fastmath=()):
    """Call the LLVM intrinsic `name` overloaded on `overload` (default: the first operand's
    type), returning `result` (default: the overload type)."""
    overload = overload or args[0].type
    full = f"{name}.{_mangle(overload)}"
    module = b.block.function.module
    fn = module.globals.get(full) or ir.Function(
        module, ir.FunctionType(result or overload, [a.type for a in args]), full)
    return b.call(fn, list(args), fastmath=fastmath)


def _horner(b, x, coeffs, ty):
    """coeffs[0] + x*(coeffs[1] + x*(...)), highest degree innermost."""
    acc = _c(ty, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = b.fadd(b.fmul(acc, x, flags=FLAGS), _c(ty, c), flags=FLAGS)
    return acc


def _pow2(b, pr: Precision, k):
    """2**k as a float, for an integer k in the exponent range (an int of pr.int)."""
    bits = b.shl(b.add(k, _c(pr.int, pr.bias)), _c(pr.int, pr.mantissa_bits))
    return b.bitcast(bits, pr.ty)


def _exp_reduce(b, pr: Precision, x):
    """Write x = k*ln2 + r with |r| <= ln2/2; returns (k as an int, expm1(r))."""
    ty = pr.ty
    magic = 1.5 * 2.0 ** pr.mantissa_bits  # adding it rounds to an integer held in the low bits
    t = b.fadd(b.fmul(x, _c(ty, 1 / math.log(2))), _c(ty, magic))
    kf = b.fsub(t, _c(ty, magic))
    k = b.sub(b.bitcast(t, pr.int), b.bitcast(_c(ty, magic), pr.int))
    r = b.fsub(b.fsub(x, b.fmul(kf, _c(ty, pr.ln2_hi), flags=FLAGS), flags=FLAGS),
               b.fmul(kf, _c(ty, pr.ln2_lo), flags=FLAGS), flags=FLAGS)
    coeffs = [1 / math.factorial(n) for n in range(1, pr.exp_terms + 1)]
    return k, b.fmul(r, _horner(b, r, coeffs, ty), flags=FLAGS)


def _clamp(b, x, lo, hi):
    """x limited to [lo, hi]; nan stays nan."""
    x = b.select(b.fcmp_ordered("<", x, _c(x.type, lo)), _c(x.type, lo), x)
    return b.select(b.fcmp_ordered(">", x, _c(x.type, hi)), _c(x.type, hi), x)


def emit_exp(b: ir.IRBuilder, ty, x):
    pr = Precision(ty)
    x = _clamp(b, x, *pr.exp_range)
    k, p = _exp_reduce(b, pr, x)
    k1 = b.ashr(k, _c(pr.int, 1))  # 2**k as two factors so that neither overflows
    scaled = b.fmul(b.fadd(p, _c(ty, 1.0)), _pow2(b, pr, k1))
    return b.fmul(scaled, _pow2(b, pr, b.sub(k, k1)))


def emit_expm1_negative(b: ir.IRBuilder, pr: Precision, x):
    """exp(x) - 1 for x in [-tanh_limit*2, 0], accurate also near 0."""
    k, p = _exp_reduce(b, pr, x)
    s = _pow2(b, pr, k)
    return b.fadd(b.fmul(s, p, flags=FLAGS), b.fsub(s, _c(pr.ty, 1.0)), flags=FLAGS)


def emit_tanh(b: ir.IRBuilder, ty, x):
    pr = Precision(ty)
    ax = intrinsic(b, "llvm.fabs", x)
    ax = b.select(b.fcmp_ordered(">", ax, _c(ty, pr.tanh_limit)), _c(ty, pr.tanh_limit), ax)
    u = emit_expm1_negative(b, pr, b.fmul(ax, _c(ty, -2.0)))  # tanh|x| = -u / (u + 2)
    t = b.fdiv(b.fneg(u), b.fadd(u, _c(ty, 2.0)))
    return intrinsic(b, "llvm.copysign", t, x)


def _log_split(b, pr: Precision, x):
    """For finite x > 0: (e, log m) with x = 2**e * m, m in [sqrt(1/2), sqrt(2)], e a float."""
    ty = pr.ty
    subnormal = b.fcmp_ordered("<", x, _c(ty, pr.tiny))
    x1 = b.select(subnormal, b.fmul(x, _c(ty, 2.0 ** pr.tiny_scale_bits)), x)
    bits = b.bitcast(x1, pr.int)
    e = b.sub(b.lshr(bits, _c(pr.int, pr.mantissa_bits)), _c(pr.int, pr.bias))
    e = b.sub(e, b.select(subnormal, _c(pr.int, pr.tiny_scale_bits), _c(pr.int, 0)))
    mantissa = (1 << pr.mantissa_bits) - 1
    m = b.bitcast(b.or_(b.and_(bits, _c(pr.int, mantissa)),
                        _c(pr.int, pr.bias << pr.mantissa_bits)), ty)  # m in [1, 2)
    big = b.fcmp_ordered(">", m, _c(ty, math.sqrt(2.0)))
    m = b.select(big, b.fmul(m, _c(ty, 0.5)), m)
    e = b.add(e, b.zext(big, pr.int))
    s = b.fdiv(b.fsub(m, _c(ty, 1.0)), b.fadd(m, _c(ty, 1.0)))  # log m = 2 atanh s
    z = b.fmul(s, s)
    series = _horner(b, z, [1 / (2 * n + 1) for n in range(pr.log_terms + 1)], ty)
    log_m = b.fmul(b.fmul(s, _c(ty, 2.0)), series, flags=FLAGS)
    ef = b.sitofp(b.trunc(e, ir.IntType(32)) if pr.int.width == 64 else e, ty)
    return ef, log_m


def emit_log(b: ir.IRBuilder, ty, x):
    pr = Precision(ty)
    ef, log_m = _log_split(b, pr, x)
    lo = b.fadd(b.fmul(ef, _c(ty, pr.ln2_lo), flags=FLAGS), log_m, flags=FLAGS)
    result = b.fadd(b.fmul(ef, _c(ty, pr.ln2_hi), flags=FLAGS), lo, flags=FLAGS)
    result = b.select(b.fcmp_ordered("==", x, _c(ty, math.inf)), x, result)
    nonpositive = b.select(b.fcmp_ordered("==", x, _c(ty, 0.0)), _c(ty, -math.inf),
                           _c(ty, math.nan))
    return b.select(b.fcmp_ordered(">", x, _c(ty, 0.0)), result, nonpositive)


def _exp_y_log(b, ty, x, y: float):
    """exp(y * log(x)) for finite x > 0, with log x and the product in double-double: the
    rounding of y * log(x) (|y log x| up to ~700) would otherwise cost ~|y log x| ulp."""
    pr = Precision(ty)
    ef, log_m = _log_split(b, pr, x)
    head = b.fmul(ef, _c(ty, pr.ln2_hi))  # exact: ln2_hi has trailing zero bits
    tail = b.fadd(b.fmul(ef, _c(ty, pr.ln2_lo), flags=FLAGS), log_m, flags=FLAGS)
    log_hi = b.fadd(head, tail)
    log_lo = b.fadd(b.fsub(head, log_hi), tail)  # Fast2Sum: |head| >= |tail| unless head = 0
    prod_hi = b.fmul(_c(ty, y), log_hi)
    prod_lo = b.fadd(intrinsic(b, "llvm.fma", _c(ty, y), log_hi, b.fneg(prod_hi)),
                     b.fmul(_c(ty, y), log_lo))
    e = emit_exp(b, ty, prod_hi)
    return intrinsic(b, "llvm.fma", e, prod_lo, e)  # e * (1 + prod_lo)


def emit_sigmoid(b: ir.IRBuilder, ty, x):
    """1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|): for a large negative x
    1 / (1 + exp(-x)) overflows to 0 where sigmoid(x) = exp(x) is still a (subnormal) float."""
    e = emit_exp(b, ty, b.fneg(intrinsic(b, "llvm.fabs", x)))
    numerator = b.select(b.fcmp_ordered("<", x, _c(ty, 0.0)), e, _c(ty, 1.0))
    return b.fdiv(numerator, b.fadd(_c(ty, 1.0), e))


def _int_pow(b, ty, x, n: int):
    """x**n for an integer n, by squaring (x**0 is 1, as in numpy, even for nan)."""
    result, base, m = None, x, abs(n)
    while m:
        if m & 1:
            result = base if result is None else b.fmul(result, base)
        m >>= 1
        if m:
            base = b.fmul(base, base)
    if result is None:
        return _c(ty, 1.0)
    return b.fdiv(_c(ty, 1.0), result) if n < 0 else result


def emit_pow(b: ir.IRBuilder, ty, x, *, y):
    """x**y for a constant y, with numpy's (C99's) special values.

    Integers: multiplications; 1/2: sqrt (numpy's fast path); other halves: x**n * sqrt(x);
    otherwise exp(y * log(x)), whose error grows with |y log x|: float32 computes it in
    float64. Negative x with a non-integer y gives nan; +-0 and -inf follow C99's pow.
    """
    if float(y).is_integer():
        return _int_pow(b, ty, x, int(y))
    if y == 0.5:  # numpy's fast path: exactly sqrt
        return intrinsic(b, "llvm.sqrt", x)
    if float(2 * y).is_integer():
        whole = _int_pow(b, ty, x, int(abs(y) - 0.5))
        root = b.fmul(whole, intrinsic(b, "llvm.sqrt", x))
        result = b.fdiv(_c(ty, 1.0), root) if y < 0 else root
    elif isinstance(ty, ir.FloatType):
        wide = ir.DoubleType()
        return b.fptrunc(emit_pow(b, wide, b.fpext(x, wide), y=y), ty)
    else:
        result = _exp_y_log(b, ty, x, float(y))
        result = b.select(b.fcmp_ordered(">", x, _c(ty, 0.0)), result, _c(ty, math.nan))
        result = b.select(b.fcmp_ordered("==", x, _c(ty, math.inf)),
                          _c(ty, math.inf if y > 0 else 0.0), result)
    far, near = (math.inf, 0.0) if y > 0 else (0.0, math.inf)  # C99: (-inf)**y and (+-0)**y
    result = b.select(b.fcmp_ordered("==", x, _c(ty, 0.0)), _c(ty, near), result)
    return b.select(b.fcmp_ordered("==", x, _c(ty, -math.inf)), _c(ty, far), result)


def _element(ty):
    """A type's elements (ty itself for a scalar type)."""
    return ty.element if isinstance(ty, ir.VectorType) else ty


def emit_convert(b: ir.IRBuilder, ty, x, *, dtype):
    """x as `ty` (the output's float type, of `dtype`): a float widened exactly or rounded to
    nearest; a mask (i1) as 0 or 1; an integer rounded to nearest."""
    source, target = _element(x.type), _element(ty)
    if isinstance(source, ir.IntType):
        return b.uitofp(x, ty) if source.width == 1 else b.sitofp(x, ty)
    if isinstance(source, type(target)):
        return x
    return b.fpext(x, ty) if isinstance(target, ir.DoubleType) else b.fptrunc(x, ty)
