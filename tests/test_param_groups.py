"""Weight-decay mask, layer-wise learning-rate decay and clipping of the shared optimiser."""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import nnx

from ltr_jax import config_lib, param_groups, train_lib
from ltr_jax.models import registry


def _flat(tree) -> dict:
    return {
        tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path): v
        for path, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def _params(encoder: str):
    config = mlc.ConfigDict(dict(encoder=encoder, dtype="float32"))
    model = nnx.eval_shape(lambda: registry.make_classifier(config, 5, rngs=nnx.Rngs(0)))
    return nnx.state(model, nnx.Param)


def test_vit_layer_groups_and_decay_mask():
    params = _params("vit_smoke")  # 2 blocks: embedding 0, blocks 1-2, rest 3
    ids, last = param_groups.layer_ids(params)
    ids, mask = _flat(ids), _flat(param_groups.decay_mask(params))
    assert last == 3
    for path, group in ids.items():
        names = "/".join(map(str, path))
        if "blocks" in path:
            assert group == path[path.index("blocks") + 1] + 1, names
        elif {"patch_embed", "pos_embed", "cls_token"} & set(path):
            assert group == 0, names
        else:
            assert group == 3, names  # fc_norm, head
    no_decay = {"/".join(map(str, p[:-1])) for p, m in mask.items() if not m}
    assert "encoder/pos_embed" in no_decay and "encoder/cls_token" in no_decay
    assert "encoder/blocks/0/norm1/scale" in no_decay and "head/fc/bias" in no_decay
    assert "encoder/blocks/0/attn/qkv/kernel" not in no_decay


def test_swin_groups_count_blocks_over_stages():
    ids, last = param_groups.layer_ids(_params("swin_smoke"))  # depths (2, 1)
    ids = {"/".join(map(str, p[:-1])): g for p, g in _flat(ids).items()}
    assert last == 4
    assert ids["encoder/patch_embed/proj/kernel"] == 0
    assert ids["encoder/layers/0/blocks/1/attn/qkv/kernel"] == 2
    assert ids["encoder/layers/1/downsample/reduction/kernel"] == 3
    assert ids["encoder/layers/1/blocks/0/attn/relative_position_bias_table"] == 3
    assert ids["encoder/norm/scale"] == 4 and ids["head/fc/kernel"] == 4


def test_resnet_is_one_group():
    ids, last = param_groups.layer_ids(_params("cifar_resnet8"))
    assert last == 1 and set(_flat(ids).values()) == {1}


def _sgd_update(**optim):
    config = config_lib.optim(
        "sgd", lr=0.1, lr_base_batch=1, momentum=0.0, weight_decay=0.0, warmup_epochs=0.0, **optim
    )
    tx, _ = train_lib.make_optimizer(config, batch_size=1, num_steps=10, steps_per_epoch=10)
    params = {
        "encoder": {"pos_embed": jnp.ones((1, 2, 2)), "blocks": [{"w": jnp.ones((2, 2))}]},
        "head": {"w": jnp.ones((2, 2))},
    }
    grads = jax.tree.map(lambda x: 3.0 * x, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates, grads


def test_layer_decay_scales_updates_by_group():
    updates, grads = _sgd_update(layer_decay=0.5)
    lr = 0.1  # no warm-up: the cosine schedule starts at its peak
    np.testing.assert_allclose(updates["head"]["w"], -lr * grads["head"]["w"])
    np.testing.assert_allclose(updates["encoder"]["blocks"][0]["w"], -lr * 0.5 * 3.0)
    np.testing.assert_allclose(updates["encoder"]["pos_embed"], -lr * 0.25 * 3.0)


def test_gradient_clipping_bounds_the_global_norm():
    updates, grads = _sgd_update(clip_grad_norm=1.0)
    total = np.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(updates["head"]["w"], -0.1 * 3.0 / total, rtol=1e-6)
    with pytest.raises(ValueError, match="layer_decay"):
        _sgd_update(layer_decay=0.0)
