"""The machine's roofline: theoretical peak from /proc/cpuinfo, and measured matrix-multiply rates.

Shared by ``bench_features.py`` and ``bench_paper.py``; pure functions first
(tested in ``tests/test_bench.py``), measurements after.

Why a child process for numpy: the environment of some machines sets
``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``), read by OpenBLAS once when
numpy is imported. ``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 CPU forces
OpenBLAS's AVX2 kernel and halves sgemm (issue 12 measured 244-249 GFLOP/s
with it, 463 GFLOP/s without, on 2 Zen 5 cores). The roofline is measured in
a fresh interpreter with both variables removed, and the kernel OpenBLAS
chose is reported (``threadpoolctl.threadpool_info()``: ``internal_api``,
``architecture``).

Theoretical peak = cores x clock x FLOP per cycle per core, where FLOP per
cycle = 2 (a fused multiply-add is two FLOPs) x SIMD lanes of the widest
float32 ISA in the CPU flags (16 with AVX-512F, 8 with AVX2+FMA, 4 with SSE)
x FMA pipes per core (2 on Zen 4/5 and on Skylake-SP Gold/Platinum and
later; an assumption, stated in the output). bfloat16: AVX512_BF16's
``vdpbf16ps`` does two multiply-adds per float32 lane, twice float32; AMX-BF16
is counted at 1,024 FLOP per cycle per core (Intel's rating for Sapphire
Rapids). The clock is ``cpu MHz`` of
/proc/cpuinfo: in a virtual machine that is the nominal clock, and the cores
may boost above it, so a measured rate can exceed this "peak"; the output
then gives the clock the measurement implies instead of calling it wrong.
Over 100 % of the *measured* roofline, on the other hand, means the
measurement is wrong, and the benchmarks say so instead of printing it.

Three candidates, the roofline being the largest (:func:`pick_roofline`):
numpy's sgemm (child process, above), ``tf.matmul`` of two 4096² matrices,
and a large ``tf.nn.conv2d`` (3x3, NHWC, float32; the best of 64->64
channels on 224x224 (batch 4), 128->128 on 112x112, 256->256 on 56x56 and
512->512 on 28x28 (batch 8): the shapes of VGG19's convolutions). The convolution is there because oneDNN's direct
convolution kernels can run faster than its matmul: measured here, VGG19's
convolutions beat the tf.matmul yardstick (96-103 % of it), so a matmul-only
roofline let a network's "share" exceed 100 %. The two TensorFlow candidates
are measured in the benchmark's own process on purpose: TensorFlow does not
use OpenBLAS (its kernels are oneDNN's and Eigen's, which the OpenBLAS
variables do not steer), and the network being measured runs in that same
process with the same thread pools.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

#: Variables that steer OpenBLAS's kernel choice; removed for the roofline's child process.
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says about the CPUs this process may use."""

    model: str
    mhz: float
    flags: frozenset = field(default_factory=frozenset)
    logical_cpus: int = 1
    physical_cores: int = 1


def parse_cpuinfo(text: str, usable_cpus: int | None = None) -> CpuInfo:
    """Model, clock (largest ``cpu MHz``), flags and core counts from the text of /proc/cpuinfo.

    ``physical_cores`` counts distinct (physical id, core id) pairs, so SMT
    siblings count once; it is capped by ``usable_cpus`` (the affinity mask).
    """
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    model, mhz, flags, cores = "unknown", 0.0, frozenset(), set()
    for b in blocks:
        kv = {}
        for line in b.splitlines():
            k, _, v = line.partition(":")
            kv[k.strip()] = v.strip()
        model = kv.get("model name", model)
        try:
            mhz = max(mhz, float(kv.get("cpu MHz", 0) or 0))
        except ValueError:
            pass
        if "flags" in kv:
            flags = frozenset(kv["flags"].split())
        cores.add((kv.get("physical id", "0"), kv.get("core id", kv.get("processor", "0"))))
    n_logical = len(blocks) or 1
    n_cores = len(cores) or 1
    if usable_cpus is not None:
        n_logical = min(n_logical, usable_cpus)
        n_cores = min(n_cores, usable_cpus)
    return CpuInfo(model=model, mhz=mhz, flags=flags, logical_cpus=n_logical, physical_cores=n_cores)


def simd_lanes_fp32(flags) -> tuple[int, str]:
    """float32 lanes of the widest vector ISA in ``flags``, and its name."""
    flags = set(flags)
    if "avx512f" in flags:
        return 16, "AVX-512F"
    if "avx2" in flags and "fma" in flags:
        return 8, "AVX2+FMA"
    if "avx" in flags:
        return 8, "AVX (no FMA)"
    return 4, "SSE"


def flops_per_cycle(flags, dtype: str = "float32", fma_pipes: int = 2) -> tuple[int, str]:
    """FLOP per cycle per core for ``dtype`` ("float32" or "bfloat16"), and how it was derived.

    Examples
    --------
    >>> flops_per_cycle({"avx2", "fma", "avx512f"})
    (64, '2 FLOP per FMA x 16 float32 lanes (AVX-512F) x 2 FMA pipes')
    >>> flops_per_cycle({"avx2", "fma"})[0], flops_per_cycle({"avx512f", "avx512_bf16"}, "bfloat16")[0]
    (32, 128)
    """
    lanes, isa = simd_lanes_fp32(flags)
    fma = 2 if ("fma" in set(flags) or lanes == 16) else 1
    fp32 = fma * lanes * fma_pipes
    how = f"{fma} FLOP per {'FMA' if fma == 2 else 'op'} x {lanes} float32 lanes ({isa}) x {fma_pipes} FMA pipes"
    if dtype == "float32":
        return fp32, how
    if dtype != "bfloat16":
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    flags = set(flags)
    if "amx_bf16" in flags:
        return 1024, "AMX-BF16 tiles: 1024 FLOP per cycle per core"
    if "avx512_bf16" in flags:
        return 2 * fp32, how + " x 2 (vdpbf16ps: two bfloat16 multiply-adds per float32 lane)"
    return fp32, how + " (no native bfloat16: at most the float32 rate)"


def theoretical_peak(info: CpuInfo, dtype: str = "float32", fma_pipes: int = 2) -> dict:
    """cores x clock x FLOP/cycle, in GFLOP/s, with the derivation in words.

    Examples
    --------
    >>> p = theoretical_peak(CpuInfo("x", 2596.15, frozenset({"avx512f", "fma", "avx2"}), 2, 2))
    >>> p["GFLOP/s"], p["derivation"]
    (332.3, '2 cores x 2.596 GHz x 64 FLOP/cycle (2 FLOP per FMA x 16 float32 lanes (AVX-512F) x 2 FMA pipes)')
    """
    fpc, how = flops_per_cycle(info.flags, dtype, fma_pipes)
    ghz = info.mhz / 1000.0
    g = info.physical_cores * ghz * fpc
    return {
        "GFLOP/s": round(g, 1),
        "FLOP per cycle per core": fpc,
        "cores": info.physical_cores,
        "GHz (cpu MHz of /proc/cpuinfo)": round(ghz, 3),
        "derivation": f"{info.physical_cores} cores x {ghz:.3f} GHz x {fpc} FLOP/cycle ({how})",
    }


def implied_ghz(measured_gflops: float, info: CpuInfo, dtype: str = "float32", fma_pipes: int = 2) -> float:
    """The clock at which ``measured_gflops`` would be the theoretical peak."""
    fpc, _ = flops_per_cycle(info.flags, dtype, fma_pipes)
    return measured_gflops / (info.physical_cores * fpc)


def share_or_problem(achieved_gflops: float, roofline_gflops: float, limit: float = 1.0) -> tuple[float | None, str]:
    """``achieved / roofline``, or None and the reason when that cannot be right (over ``limit``).

    Examples
    --------
    >>> share_or_problem(400.0, 463.0)
    (0.864, '')
    >>> share_or_problem(309.0, 247.0)[0] is None
    True
    """
    if not roofline_gflops or roofline_gflops <= 0:
        return None, "no roofline measured"
    s = achieved_gflops / roofline_gflops
    if s > limit:
        return None, (
            f"MEASUREMENT WRONG: {achieved_gflops:.0f} GFLOP/s is {s:.0%} of a {roofline_gflops:.0f} GFLOP/s "
            "roofline; the roofline is too low (a forced BLAS kernel? load during its rounds?) or the "
            "FLOP count too high; not reported"
        )
    return round(s, 3), ""


#: Names of the roofline candidates, in the order ties are broken (the first listed wins a tie).
CANDIDATES = ("numpy sgemm (child, OpenBLAS variables unset)", "tf.matmul", "tf.nn.conv2d")


def pick_roofline(candidates: dict) -> tuple[str, float]:
    """The largest of the measured candidates (name -> GFLOP/s) and its name.

    Missing, zero, negative or non-finite rates are ignored (a candidate that
    failed to run); a tie goes to the candidate listed first in ``candidates``.

    Examples
    --------
    >>> pick_roofline({"numpy": 195.0, "tf.matmul": 216.0, "tf.nn.conv2d": 231.0})
    ('tf.nn.conv2d', 231.0)
    >>> pick_roofline({"numpy": 463.0, "tf.matmul": None, "tf.nn.conv2d": 0.0})
    ('numpy', 463.0)
    """
    best_name, best = "none measured", 0.0
    for name, g in candidates.items():
        if g is None or not math.isfinite(g) or g <= 0:
            continue
        if g > best:
            best_name, best = name, float(g)
    return best_name, best


def conv2d_flops(batch: int, height: int, width: int, c_in: int, c_out: int, kernel: int = 3) -> float:
    """FLOPs of a stride-1 ``SAME`` convolution: 2 x MACs = 2 N H W C_out C_in k².

    Examples
    --------
    >>> conv2d_flops(8, 56, 56, 256, 256) / 1e9
    29.595009024
    """
    return 2.0 * batch * height * width * c_out * c_in * kernel * kernel


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    try:
        text = open(path).read()
    except OSError:
        text = ""
    return parse_cpuinfo(text, usable_cpus())


def clean_env(env=None) -> dict:
    """``env`` (default os.environ) without :data:`OPENBLAS_VARS`."""
    return {k: v for k, v in dict(os.environ if env is None else env).items() if k not in OPENBLAS_VARS}


def _numpy_sgemm(n: int, repeats: int) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def child_main(n: int, repeats: int) -> int:
    """In the child: numpy sgemm rate and the BLAS kernel, as one JSON line."""
    from threadpoolctl import threadpool_info

    rate = _numpy_sgemm(n, repeats)
    pools = [
        {k: p.get(k) for k in ("user_api", "internal_api", "architecture", "num_threads", "version")}
        for p in threadpool_info()
    ]
    blas = next((p for p in pools if p["user_api"] == "blas"), {})
    print(
        "ROOFLINE "
        + json.dumps(
            {
                "gflops": rate,
                "n": n,
                "kernel": blas,
                "pools": pools,
                "env": {k: os.environ.get(k) for k in OPENBLAS_VARS},
            }
        )
    )
    return 0


def numpy_sgemm_child(n: int = 2048, repeats: int = 5, env=None) -> dict:
    """numpy float32 ``n x n`` matmul rate (best of ``repeats``) in a child with the OpenBLAS variables unset."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), str(repeats)]
    out = subprocess.run(cmd, env=clean_env(env), capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("ROOFLINE "):
            return json.loads(line[len("ROOFLINE ") :])
    raise RuntimeError(f"roofline child failed: {out.stderr[-2000:]}")


def tf_matmul(n: int = 4096, repeats: int = 3, dtype: str = "float32") -> float:
    """Best ``tf.matmul`` rate of two ``n x n`` matrices of ``dtype``, GFLOP/s (TensorFlow's own kernels)."""
    import uslib.features as F

    tf = F.import_tensorflow()
    dt = {"float32": tf.float32, "bfloat16": tf.bfloat16}[dtype]
    a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dt)
    b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dt)
    f = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    return 2.0 * n**3 / _best_seconds(f, a, b, repeats=repeats) / 1e9


def _best_seconds(f, *args, repeats: int) -> float:
    """Best wall time of ``f(*args).numpy()`` over ``repeats`` calls, after one warm-up call (tracing)."""
    f(*args).numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(*args).numpy()
        best = min(best, time.perf_counter() - t0)
    return best


#: Shapes of the convolution candidate: (batch, height = width, channels in = out); 3x3 kernel, NHWC.
CONV_SHAPES = ((8, 56, 256), (8, 28, 512), (8, 112, 128), (4, 224, 64))


def tf_conv2d(shapes=CONV_SHAPES, repeats: int = 3, dtype: str = "float32") -> tuple[float, str]:
    """Best ``tf.nn.conv2d`` rate (3x3, stride 1, SAME, NHWC) over ``shapes``, GFLOP/s, and the winning shape.

    Timed as :func:`tf_matmul`: one ``tf.function``, a warm-up call, the best
    of ``repeats``, the result read back (a one-element slice, summed).
    """
    import uslib.features as F

    tf = F.import_tensorflow()
    dt = {"float32": tf.float32, "bfloat16": tf.bfloat16}[dtype]
    f = tf.function(
        lambda x, w: tf.reduce_sum(
            tf.cast(tf.nn.conv2d(x, w, strides=1, padding="SAME", data_format="NHWC")[:1, :1, :1, :1], tf.float32)
        )
    )
    best_rate, best_shape = 0.0, ""
    for batch, hw, c in shapes:
        x = tf.cast(tf.random.stateless_normal((batch, hw, hw, c), seed=(5, 6)), dt)
        w = tf.cast(tf.random.stateless_normal((3, 3, c, c), seed=(7, 8)) * 0.02, dt)
        rate = conv2d_flops(batch, hw, hw, c, c) / _best_seconds(f, x, w, repeats=repeats) / 1e9
        if rate > best_rate:
            best_rate, best_shape = rate, f"3x3 {c}->{c} on {hw}x{hw}, batch {batch}, NHWC, {dtype}"
    return best_rate, best_shape


@dataclass
class Roofline:
    """One measurement of the roofline: numpy sgemm (child), tf.matmul, tf.nn.conv2d, the largest of them."""

    numpy_gflops: float
    tf_gflops: float
    kernel: dict
    load_1min: float
    conv_gflops: float = 0.0
    conv_shape: str = ""

    def candidates(self) -> dict:
        """Candidate name -> GFLOP/s, in :data:`CANDIDATES` order."""
        return dict(zip(CANDIDATES, (self.numpy_gflops, self.tf_gflops, self.conv_gflops)))

    @property
    def gflops(self) -> float:
        return pick_roofline(self.candidates())[1]

    @property
    def source(self) -> str:
        return pick_roofline(self.candidates())[0]

    def to_dict(self) -> dict:
        return {**asdict(self), "gflops": self.gflops, "source": self.source}


def measure_roofline(numpy_n: int = 2048, tf_n: int = 4096, repeats: int = 3, conv: bool = True) -> Roofline:
    """One round's roofline (all three candidates) and the 1-minute load average when it started."""
    load = os.getloadavg()[0]
    child = numpy_sgemm_child(numpy_n, repeats + 2)
    conv_g, conv_shape = tf_conv2d(repeats=repeats) if conv else (0.0, "")
    return Roofline(
        numpy_gflops=child["gflops"],
        tf_gflops=tf_matmul(tf_n, repeats),
        kernel=child["kernel"],
        load_1min=load,
        conv_gflops=conv_g,
        conv_shape=conv_shape,
    )


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        raise SystemExit(child_main(int(sys.argv[2]), int(sys.argv[3])))
    info = cpu_info()
    print(
        json.dumps(
            {"cpu": info.model, "peak float32": theoretical_peak(info), "numpy sgemm": numpy_sgemm_child()},
            indent=1,
            default=str,
        )
    )
