"""Determinantal point processes for IP-DPP rebalancing: pure JAX math, no Flax.

Every sampler returns an [N] boolean selection mask with exactly min(k, n_valid) True entries
on valid (unmasked) items; `selection_indices` converts it to k int32 indices. All functions
are jittable (k, scale and method are static) and follow the dtype of their inputs (float32 or
float64).

Kernels: `ip_dpp_kernel`, `ip_dpp_parts`, `log_det_selected`.
Exact k-DPP: `sample_ip_dpp(method="structured")` (fast rejection, default),
`sample_structured_dp` (O(N k) dynamic programme, also the oracle behind
`structured_log_normalizer` / `structured_log_prob`), `sample_k_dpp` (spectral, any PSD kernel).
Other selectors: `sample_paper_alg1`, `greedy_map`, uniform. Batched: `sample_ip_dpp_batched`;
many classes of very different sizes, grouped by padded size: `sample_ip_dpp_grouped`.
"""

from ltr_jax.dpp.alg1 import sample_paper_alg1
from ltr_jax.dpp.greedy import greedy_map
from ltr_jax.dpp.kernels import (
    SCALES,
    IPKernelParts,
    ip_dpp_kernel,
    ip_dpp_parts,
    log_det_selected,
)
from ltr_jax.dpp.rejection import sample_conditional_bernoulli, sample_structured
from ltr_jax.dpp.sampling import (
    METHODS,
    bucket_size,
    pad_per_class,
    sample_ip_dpp,
    sample_ip_dpp_batched,
    sample_ip_dpp_grouped,
    selection_indices,
    size_groups,
    unpad_selection,
)
from ltr_jax.dpp.spectral import log_elementary_symmetric, sample_k_dpp, sample_k_dpp_eigh
from ltr_jax.dpp.structured import (
    sample_structured_dp,
    structured_log_normalizer,
    structured_log_prob,
)

__all__ = [
    "METHODS",
    "SCALES",
    "IPKernelParts",
    "bucket_size",
    "greedy_map",
    "ip_dpp_kernel",
    "ip_dpp_parts",
    "log_det_selected",
    "log_elementary_symmetric",
    "pad_per_class",
    "sample_conditional_bernoulli",
    "sample_ip_dpp",
    "sample_ip_dpp_batched",
    "sample_ip_dpp_grouped",
    "sample_k_dpp",
    "sample_k_dpp_eigh",
    "sample_paper_alg1",
    "sample_structured",
    "sample_structured_dp",
    "selection_indices",
    "size_groups",
    "structured_log_normalizer",
    "structured_log_prob",
    "unpad_selection",
]
