"""The input layer: what the stages see of a `LongTail` record.

`make.make_input(long_tail, config.data, mesh)` is its one entry (`make.load_input` loads the
dataset first): `in_memory`, `streamed` (Grain: `grain_pipeline`) and `decoded` (a
`decoded_store`) inputs behind the `protocols`; step-indexed sampling (`sampler`,
`sampler_registry`) and augmentation (`augment`, `augment_registry`).
"""
