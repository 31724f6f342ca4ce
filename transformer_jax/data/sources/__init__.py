"""The data sets: one module per corpus or task, each a TFDS builder or a reader of raw files."""
