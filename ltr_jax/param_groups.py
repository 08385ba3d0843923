"""Per-parameter optimiser settings read from parameter paths: weight-decay mask, layer decay.

- No weight decay on biases and other 1-D parameters (norm scales and offsets), nor on
  position embeddings, class tokens and Swin's relative position bias tables (as in the
  DeiT / Swin / MAE recipes).
- Layer-wise learning-rate decay (used to fine-tune ViTs: BEiT, MAE): parameter group ``i`` of
  ``L`` transformer blocks gets ``lr * decay ** (L + 1 - i)``. Group 0 is the embedding (patch
  embedding, tokens, position embeddings), group ``i`` the i-th block counted over all stages
  (a Swin stage's patch merging joins its first block), and group ``L + 1`` everything else
  (final norm, heads, projection head). A model without blocks (the ResNets) is all one group.
"""

from __future__ import annotations

import jax

NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token", "dist_token", "relative_position_bias_table"})
EMBEDDING_NAMES = frozenset({"patch_embed", "pos_embed", "cls_token", "dist_token"})


def _names(path) -> tuple:
    """A pytree key path as plain names and indices."""
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def decay_mask(params):
    """True where weight decay applies: parameters of 2+ dimensions not named above."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: x.ndim > 1 and not NO_DECAY_NAMES.intersection(_names(p)), params
    )


def _block(names: tuple) -> tuple | None:
    """(stage, block) of a parameter inside a transformer block, else None."""
    stage = names[names.index("layers") + 1] if "layers" in names else 0
    if "blocks" in names:
        return stage, names[names.index("blocks") + 1]
    if "downsample" in names:  # a Swin stage's patch merging: with the stage's first block
        return stage, 0
    return None


def layer_ids(params):
    """The layer-decay group of every parameter (a pytree of ints like ``params``)."""
    paths = [_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    blocks = sorted({b for b in map(_block, paths) if b is not None})
    index = {b: i + 1 for i, b in enumerate(blocks)}
    last = len(blocks) + 1

    def group(path, _):
        names = _names(path)
        if _block(names) is not None:
            return index[_block(names)]
        return 0 if EMBEDDING_NAMES.intersection(names) else last

    return jax.tree_util.tree_map_with_path(group, params), last


def layer_scales(params, decay: float):
    """``decay ** (L + 1 - group)`` per parameter: 1 for the head, smallest for the embedding."""
    ids, last = layer_ids(params)
    return jax.tree.map(lambda i: decay ** (last - i), ids)
