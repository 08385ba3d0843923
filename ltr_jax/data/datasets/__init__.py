"""The dataset layer: get the data and make it long-tailed.

`registry` (``data.name`` -> its entry; ``load(config.data)`` -> one `records.LongTail`, the
layer's one entry), `records` (the records it passes on), `long_tail` (the one place the long
tail is applied), and the sources: `cifar`, `image_lists` + `split_lists`, `own_data`,
`synthetic`. It imports nothing of the layers above (input, training, validation).
"""
