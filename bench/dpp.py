"""Benchmark of the IP-DPP samplers (`ltr_jax.dpp`): prints a table and writes JSON.

Cases: one whole CIFAR-10-LT IF100 re-draw (the five classes above k: 5000, 2997, 1796, 1077
and 645 items, padded to [5, 5120], k = 500, one `sample_ip_dpp_batched` call) and single
classes of N in {500, 1000, 2000, 5000} items with k = min(500, N // 2). Confidences are
Beta(5, 1) draws (mean 0.83, skewed towards confident, like a trained classifier's p(y|x)).
Every method is timed jitted, after an ahead-of-time compilation, in float32 and float64, as the
median over repeats (each with a new key; block_until_ready). DPPy's exact k-DPP sampler
(`FiniteDPP('likelihood', L=S).sample_exact_k_dpp`, NumPy float64, eigendecomposition included)
is the outside reference when it is installed (`pip install dppy`); its runtime warnings (float64
overflow of its elementary symmetric polynomials at large N) are recorded with its timings.

On a shared CPU, run with OPENBLAS_NUM_THREADS=1: multithreaded LAPACK eigh under contention
was 30-100x slower here (e.g. 3.4 s instead of 0.02 s for N = 500).

    python bench/dpp.py                    # everything (dense methods at N = 5000 take minutes)
    python bench/dpp.py --quick            # one repeat; dense methods and DPPy only up to N = 1000
    python bench/dpp.py --out /tmp/d.json  # default: bench/results/dpp_cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax import dpp

CIFAR10_IF100_SIZES = (5000, 2997, 1796, 1077, 645)
CIFAR_K = 500
SINGLE_SIZES = (500, 1000, 2000, 5000)
DENSE_METHODS = ("spectral", "paper_alg1")


def single_k(n: int) -> int:
    """k for a single class of n items: min(500, n // 2) (k = 250 at N = 500)."""
    return min(CIFAR_K, n // 2)


def confidences(n: int, seed: int) -> np.ndarray:
    """Beta(5, 1) confidences, float64."""
    return np.random.default_rng(seed).beta(5.0, 1.0, n)


def cifar_classes() -> list[np.ndarray]:
    return [confidences(n, seed=c) for c, n in enumerate(CIFAR10_IF100_SIZES)]


def time_compiled(compiled, args, repeats: int, budget_s: float) -> list[float]:
    """Wall times of up to `repeats` runs (at least one), stopping once `budget_s` is spent."""
    times = []
    key = jax.random.key(0)
    while len(times) < repeats and (not times or sum(times) < budget_s):
        run_key = jax.random.fold_in(key, len(times))
        start = time.perf_counter()
        jax.block_until_ready(compiled(run_key, *args))
        times.append(time.perf_counter() - start)
    return times


def measure(fn, args, repeats: int, budget_s: float) -> dict:
    """AOT-compiles fn(key, *args) and times it."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(jax.random.key(0), *args).compile()
    compile_s = time.perf_counter() - start
    times = time_compiled(compiled, args, repeats, budget_s)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "runs": len(times)}


def jax_cases(dtype) -> list[tuple[str, int, int, object, tuple]]:
    """(case name, N, k, fn-maker(method), args) for the whole re-draw and the single classes."""
    padded, valid = dpp.pad_per_class(cifar_classes())
    cases = [
        (
            "c10lt_if100_redraw",
            int(padded.shape[1]),
            CIFAR_K,
            lambda m: lambda key, p, v: dpp.sample_ip_dpp_batched(key, p, v, CIFAR_K, method=m),
            (jnp.asarray(padded, dtype), jnp.asarray(valid)),
        )
    ]
    for n in SINGLE_SIZES:
        k = single_k(n)
        cases.append(
            (
                f"single_N{n}",
                n,
                k,
                lambda m, k=k: lambda key, p: dpp.sample_ip_dpp(key, p, k, method=m),
                (jnp.asarray(confidences(n, seed=n), dtype),),
            )
        )
    return cases


def skip_reason(method: str, n: int, dense_max_n: int) -> str | None:
    if method in DENSE_METHODS and n > dense_max_n:
        return f"dense O(N^3) method skipped above N = {dense_max_n}"
    return None


def bench_jax(args) -> list[dict]:
    records = []
    for dtype_name in args.dtypes:
        with jax.enable_x64(dtype_name == "float64"):
            dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
            for case, n, k, make_fn, fn_args in jax_cases(dtype):
                for method in args.methods:
                    rec = {"impl": "ltr_jax", "case": case, "N": n, "k": k}
                    rec |= {"method": method, "dtype": dtype_name}
                    reason = skip_reason(method, n, args.dense_max_n)
                    if reason:
                        records.append(rec | {"skipped": reason})
                        continue
                    rec |= measure(make_fn(method), fn_args, args.repeats, args.budget_s)
                    records.append(rec)
                    print_row(rec, flush=True)
    return records


def dppy_draw(kernels: list[np.ndarray], k: int, seed: int):
    from dppy.finite_dpps import FiniteDPP

    rng = np.random.RandomState(seed)
    for kernel in kernels:
        FiniteDPP("likelihood", L=kernel).sample_exact_k_dpp(size=k, random_state=rng)


def bench_dppy(args) -> list[dict]:
    try:
        import dppy  # noqa: F401
    except ImportError:
        print("DPPy not installed (pip install dppy): outside reference skipped.")
        return []
    cases = [("c10lt_if100_redraw", max(CIFAR10_IF100_SIZES), CIFAR_K, cifar_classes())]
    cases += [(f"single_N{n}", n, single_k(n), [confidences(n, seed=n)]) for n in SINGLE_SIZES]
    records = []
    for case, n, k, ps in cases:
        rec = {"impl": "dppy", "case": case, "N": n, "k": k, "method": "exact_k_dpp"}
        rec["dtype"] = "float64"
        if n > args.dense_max_n:
            records.append(rec | {"skipped": f"skipped above N = {args.dense_max_n}"})
            continue
        kernels = [np.asarray(dpp.ip_dpp_kernel(np.asarray(p, np.float32)), np.float64) for p in ps]
        times = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            while len(times) < args.repeats and (not times or sum(times) < args.budget_s):
                start = time.perf_counter()
                dppy_draw(kernels, k, seed=len(times))
                times.append(time.perf_counter() - start)
        rec |= {"compile_s": 0.0, "median_s": statistics.median(times), "runs": len(times)}
        # DPPy's elementary symmetric polynomials are not in log space: e_k overflows float64
        # (log e_k > 709) for N >= ~3000 at k = 500, and its draw is then not exact.
        rec["warnings"] = sorted({str(w.message) for w in caught})
        records.append(rec)
        print_row(rec, flush=True)
    return records


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:10.1f} ms" if seconds < 10 else f"{seconds:10.1f} s "


def print_row(rec: dict, flush: bool = False) -> None:
    head = f"{rec['case']:<20} {rec['N']:>5} {rec['k']:>4} {rec['impl']:<8} "
    head += f"{rec['method']:<14} {rec['dtype']:<8}"
    if "skipped" in rec:
        print(f"{head} {'-':>13} ({rec['skipped']})", flush=flush)
        return
    tail = f"{fmt_time(rec['median_s'])} {rec['compile_s']:8.1f} s {rec['runs']:>4}"
    if rec.get("warnings"):
        tail += "  (numerical warnings: draw not exact)"
    print(f"{head} {tail}", flush=flush)


def print_table(records: list[dict]) -> None:
    print()
    header = f"{'case':<20} {'N':>5} {'k':>4} {'impl':<8} {'method':<14} {'dtype':<8}"
    print(f"{header} {'median':>13} {'compile':>10} {'runs':>4}")
    for rec in sorted(records, key=lambda r: (r["case"], r["impl"], r["method"], r["dtype"])):
        print_row(rec)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("bench", "results", "dpp_cpu.json"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget-s", type=float, default=5.0, help="timing budget per cell")
    parser.add_argument("--dense-max-n", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(dpp.METHODS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--no-dppy", action="store_true")
    args = parser.parse_args(argv)
    if args.dense_max_n is None:
        args.dense_max_n = 1000 if args.quick else 10**9
    if args.quick:
        args.repeats = 1
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    records = bench_jax(args)
    if not args.no_dppy:
        records += bench_dppy(args)
    print_table(records)
    result = {
        "benchmark": "ltr_jax.dpp",
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "p_distribution": "Beta(5, 1)",
        "k_rule": "c10lt redraw: k = 500; single classes: k = min(500, N // 2)",
        "quick": args.quick,
        "total_s": time.perf_counter() - start,
        "records": records,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out} ({result['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
