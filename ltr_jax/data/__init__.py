"""ltr_jax/data: two layers, one arrow between them.

`ltr_jax.data.datasets` gets the data and makes it long-tailed (``registry.load(config.data)``
-> one `records.LongTail`); `ltr_jax.data.input` makes what the stages see from that record
(``make.make_input(long_tail, config.data, mesh)``). The input layer imports the dataset
layer, never the other way round.
"""
