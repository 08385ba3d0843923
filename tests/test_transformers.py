"""ViT / DeiT / Swin encoders: sizes, timm conversion fixtures, big_vision .npz, modes."""

import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import nnx

from ltr_jax import config_lib
from ltr_jax.models import heads, modes, pretrained, registry, transformer, vit

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "transformers")
CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "vit"
)
# fixture (written by bench/transformer_fixtures.py from timm) -> our encoder of that shape
FIXTURE_ENCODERS = {
    "vit_cls": "deit_smoke",
    "vit_avg": "vit_smoke",
    "deit": "deit_smoke",
    "swin": "swin_smoke",
}


def _num_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


# timm 1.0's counts with the 1000-class head (``timm.create_model(name).parameters()``): every
# encoder with a count in README's transformer table.
TIMM_COUNTS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "deit_tiny_patch16_224": 5_717_416,
    "deit_small_patch16_224": 22_050_664,
    "deit_base_patch16_224": 86_567_656,
    "swin_tiny_patch4_window7_224": 28_288_354,
    "swin_base_patch4_window7_224": 87_768_224,
}


@pytest.mark.parametrize("name, expected", list(TIMM_COUNTS.items()))
def test_parameter_counts_equal_the_originals(name, expected):
    config = mlc.ConfigDict(dict(encoder=name, dtype="float32"))
    model = nnx.eval_shape(lambda: registry.make_classifier(config, 1000, rngs=nnx.Rngs(0)))
    assert _num_params(model) == expected


def test_readme_transformer_table_states_the_tested_counts():
    """Every count in README's transformer table is one tested above, rounded to 0.01 M."""
    readme = open(os.path.join(os.path.dirname(FIXTURES), "..", "..", "README.md")).read()
    blocks = readme[readme.index("## Transformers (ViT, DeiT, Swin)") :].split("\n\n")
    table = next(b for b in blocks if b.startswith("|"))
    stated = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = [n.strip(" `") for n in cells[0].split(",")]
        counts = [c.strip() for c in cells[-1].split(",") if c.strip().endswith("M")]
        if counts:
            assert len(counts) == len(names), line
            stated.update(zip(names, counts))
    assert set(stated) == set(TIMM_COUNTS)
    for name, count in stated.items():
        assert count == f"{TIMM_COUNTS[name] / 1e6:.2f}M", name


def _classifier(encoder: str, num_classes: int = 10) -> heads.Classifier:
    enc = registry.make_encoder(encoder, rngs=nnx.Rngs(0))
    return heads.Classifier(enc, heads.LinearHead(enc.feature_dim, num_classes, rngs=nnx.Rngs(1)))


def _check_outputs(model, fixture: str) -> None:
    images = jnp.asarray(np.load(os.path.join(FIXTURES, "inputs.npy")))
    features, logits = nnx.jit(lambda m, x: (m.encoder(x), m(x)))(modes.eval_view(model), images)
    for got, what in ((features, "features"), (logits, "logits")):
        want = np.load(os.path.join(FIXTURES, f"{fixture}_{what}.npy"))
        err = np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want)
        assert err <= 1e-5, (fixture, what, err)


@pytest.mark.parametrize("fixture", sorted(FIXTURE_ENCODERS))
def test_timm_safetensors_match_timm_outputs(fixture):
    model = _classifier(FIXTURE_ENCODERS[fixture])
    state = pretrained.read_state_dict(os.path.join(FIXTURES, f"{fixture}.safetensors"))
    report = pretrained.load_into(model, state, keep_head=True)
    assert report["missing"] == [] and report["unexpected"] == [] and report["resized"] == []
    _check_outputs(model, fixture)


def _to_big_vision(state: dict) -> dict:
    """The AugReg .npz layout of a timm ViT state dict, written independently of the loader."""
    d = state["cls_token"].shape[-1]
    heads_, hd = 2, d // 2
    out = {
        "cls": state["cls_token"],
        "Transformer/posembed_input/pos_embedding": state["pos_embed"],
        "embedding/kernel": np.transpose(state["patch_embed.proj.weight"], (2, 3, 1, 0)),
        "embedding/bias": state["patch_embed.proj.bias"],
        "Transformer/encoder_norm/scale": state["norm.weight"],
        "Transformer/encoder_norm/bias": state["norm.bias"],
        "head/kernel": state["head.weight"].T,
        "head/bias": state["head.bias"],
    }
    for i in range(2):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        for ours, theirs in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            out[p + theirs + "/scale"] = state[b + ours + ".weight"]
            out[p + theirs + "/bias"] = state[b + ours + ".bias"]
        w, bias = state[b + "attn.qkv.weight"], state[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            rows = slice(j * d, (j + 1) * d)
            out[p + f"MultiHeadDotProductAttention_1/{n}/kernel"] = w[rows].T.reshape(d, heads_, hd)
            out[p + f"MultiHeadDotProductAttention_1/{n}/bias"] = bias[rows].reshape(heads_, hd)
        proj = state[b + "attn.proj.weight"]  # [out D, in D]
        out[p + "MultiHeadDotProductAttention_1/out/kernel"] = proj.T.reshape(heads_, hd, d)
        out[p + "MultiHeadDotProductAttention_1/out/bias"] = state[b + "attn.proj.bias"]
        for j, fc in enumerate(("fc1", "fc2")):
            out[p + f"MlpBlock_3/Dense_{j}/kernel"] = state[b + f"mlp.{fc}.weight"].T
            out[p + f"MlpBlock_3/Dense_{j}/bias"] = state[b + f"mlp.{fc}.bias"]
    return out


def test_augreg_npz_round_trip(tmp_path):
    state = pretrained.read_timm(os.path.join(FIXTURES, "vit_cls.safetensors"))
    path = str(tmp_path / "augreg.npz")
    np.savez(path, **_to_big_vision(state))
    model = _classifier("deit_smoke")
    report = pretrained.load_into(model, pretrained.read_state_dict(path), keep_head=True)
    assert report["missing"] == [] and report["unexpected"] == []
    _check_outputs(model, "vit_cls")


# big_vision's ViT (``big_vision/models/vit.py``, ``pool_type="tok"``) at depth 2: its
# parameter tree as ``.npz`` keys. Unlike AugReg's, the block's modules are numbered per kind
# (LayerNorm_0/1, MultiHeadDotProductAttention_0, MlpBlock_0) and ``pos_embedding`` is a
# top-level [1, h * w, D] added to the patches BEFORE the class token is prepended: the class
# token carries no position embedding.
BIG_VISION_KEYS = {
    "cls",
    "pos_embedding",
    "embedding/kernel",
    "embedding/bias",
    "Transformer/encoder_norm/scale",
    "Transformer/encoder_norm/bias",
    "head/kernel",
    "head/bias",
} | {
    f"Transformer/encoderblock_{i}/{m}/{leaf}"
    for i in range(2)
    for m, leaves in (
        ("LayerNorm_0", ("scale", "bias")),
        ("LayerNorm_1", ("scale", "bias")),
        *(
            (f"MultiHeadDotProductAttention_0/{n}", ("kernel", "bias"))
            for n in ("query", "key", "value", "out")
        ),
        ("MlpBlock_0/Dense_0", ("kernel", "bias")),
        ("MlpBlock_0/Dense_1", ("kernel", "bias")),
    )
    for leaf in leaves
}


def _to_big_vision_tok(state: dict) -> dict:
    """A timm ViT (class token) as big_vision's own ViT checkpoint: the names above, Flax
    layouts, and timm's class-token position embedding folded into ``cls`` (timm adds
    ``pos_embed[0]`` to the class token; big_vision adds nothing): the same function."""
    augreg = _to_big_vision(state)
    out = {
        "cls": state["cls_token"] + state["pos_embed"][:, :1],
        "pos_embedding": state["pos_embed"][:, 1:],
    }
    rename = {
        "LayerNorm_2": "LayerNorm_1",
        "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
        "MlpBlock_3": "MlpBlock_0",
    }
    for key, value in augreg.items():
        if key in ("cls", "Transformer/posembed_input/pos_embedding"):
            continue
        parts = key.split("/")
        out["/".join(rename.get(p, p) for p in parts)] = value
    return out


def test_big_vision_npz_layout_loads_to_the_same_outputs(tmp_path):
    """A checkpoint in big_vision's real naming (``params/`` prefix as in its .npz files) loads
    with nothing missing or unexpected and gives the timm fixture's features and logits."""
    state = pretrained.read_timm(os.path.join(FIXTURES, "vit_cls.safetensors"))
    checkpoint = _to_big_vision_tok(state)
    assert set(checkpoint) == BIG_VISION_KEYS
    assert checkpoint["pos_embedding"].shape == (1, 16, 32)  # the 4 x 4 grid, no class token
    path = str(tmp_path / "big_vision.npz")
    np.savez(path, **{f"params/{k}": v for k, v in checkpoint.items()})
    model = _classifier("deit_smoke")
    report = pretrained.load_into(model, pretrained.read_state_dict(path), keep_head=True)
    assert report["missing"] == [] and report["unexpected"] == [] and report["resized"] == []
    _check_outputs(model, "vit_cls")


def test_head_dropped_by_default_and_prefix_stripped(tmp_path):
    from safetensors.numpy import save_file

    state = pretrained.read_timm(os.path.join(FIXTURES, "vit_cls.safetensors"))
    path = str(tmp_path / "prefixed.safetensors")
    save_file({f"module.{k}": v for k, v in state.items()}, path)
    model = _classifier("deit_smoke", num_classes=3)  # another head size: must not be loaded
    before = np.asarray(model.head.fc.kernel[...])
    loaded = pretrained.read_state_dict(path, prefix="module.")
    report = pretrained.load_into(model, loaded, keep_head=False)
    assert report["dropped_head"] == ["head.bias", "head.weight"]
    assert report["missing"] == [] and report["unexpected"] == []
    np.testing.assert_array_equal(model.head.fc.kernel[...], before)
    np.testing.assert_array_equal(model.encoder.cls_token[...], state["cls_token"])


def test_pos_embed_resized_to_a_larger_grid():
    state = pretrained.read_timm(os.path.join(FIXTURES, "vit_cls.safetensors"))
    enc = vit.VisionTransformer(
        image_size=48, patch_size=8, embed_dim=32, depth=2, num_heads=2, rngs=nnx.Rngs(0)
    )
    model = heads.Classifier(enc, heads.LinearHead(32, 10, rngs=nnx.Rngs(1)))
    report = pretrained.load_into(model, state, keep_head=False)
    assert report["resized"] == ["pos_embed"] and report["missing"] == []
    pos = np.asarray(enc.pos_embed[...])
    assert pos.shape == (1, 37, 32)
    np.testing.assert_array_equal(pos[0, 0], state["pos_embed"][0, 0])  # class token kept


def test_resize_pos_embed_is_bicubic_on_the_grid():
    side = np.linspace(0.0, 1.0, 4)
    ramp = np.stack(np.meshgrid(side, side, indexing="ij"), -1).reshape(1, 16, 2)  # [1, 16, 2]
    pos = np.concatenate([np.full((1, 1, 2), 7.0), ramp], axis=1)
    same = pretrained.resize_pos_embed(pos, 17, 1)
    np.testing.assert_allclose(same, pos, atol=1e-6)
    no_prefix = pretrained.resize_pos_embed(pos, 64, 0)
    assert no_prefix.shape == (1, 64, 2)
    grid = no_prefix[0].reshape(8, 8, 2)
    # A ramp stays monotone along its axis and constant across it.
    assert np.all(np.diff(grid[:, 0, 0]) > 0) and np.allclose(grid[:, :, 0], grid[:, :1, 0])


def test_dot_product_attention_equals_the_plain_formula():
    key = jax.random.key(0)
    q, k, v = jax.random.normal(key, (3, 2, 5, 3, 4))
    bias = jax.random.normal(jax.random.fold_in(key, 1), (2, 3, 5, 5))
    got = transformer.attention(q, k, v, bias)
    np.testing.assert_allclose(got, transformer.attention_reference(q, k, v, bias), atol=1e-5)


def test_eval_view_is_deterministic_and_step_key_drives_stochastic_depth():
    enc = registry.make_encoder("swin_smoke", rngs=nnx.Rngs(0), drop_path_rate=0.5)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    view = modes.eval_view(enc)
    assert view.deterministic and not enc.deterministic

    graphdef, state = nnx.split(enc)

    @jax.jit
    def train_mode(state, x, key):
        return nnx.merge(graphdef, modes.with_step_key(state, key))(x)

    a, b, c = (train_mode(state, x, jax.random.key(i)) for i in (1, 2, 2))
    np.testing.assert_array_equal(b, c)  # a pure function of the step key
    assert not np.allclose(a, b)
    forward = nnx.jit(lambda m, x: m(x))
    np.testing.assert_array_equal(forward(view, x), forward(modes.eval_view(enc), x))


@pytest.mark.parametrize("name", ["vit_smoke"])
def test_bfloat16_compute_keeps_float32_params_and_features(name):
    fp32 = registry.make_encoder(name, rngs=nnx.Rngs(0))
    bf16 = registry.make_encoder(name, dtype="bfloat16", rngs=nnx.Rngs(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    forward = nnx.jit(lambda m, x: m(x))
    a, b = forward(modes.eval_view(fp32), x), forward(modes.eval_view(bf16), x)
    assert b.dtype == jnp.float32
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05


def test_unknown_format_and_missing_file_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        pretrained.read_state_dict(str(tmp_path / "absent.safetensors"))
    path = tmp_path / "weights.bin"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="init_format"):
        pretrained.read_state_dict(str(path))


@pytest.mark.parametrize("file", sorted(os.listdir(CONFIGS)))
def test_vit_configs_load_and_smoke_uses_tiny_encoders(file):
    full = config_lib.load_config_file(os.path.join(CONFIGS, file))
    smoke = config_lib.load_config_file(os.path.join(CONFIGS, file), "smoke")
    assert full.model.encoder in registry.ENCODERS and not full.model.encoder.endswith("smoke")
    assert smoke.model.encoder in ("vit_smoke", "swin_smoke")
    assert smoke.data.name in ("synthetic", "synthetic_jpeg") and smoke.model.init_from is None
