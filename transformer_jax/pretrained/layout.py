"""The layout of an export folder: what export.py writes, model_card.py describes and
loading.py reads.

Layout (FORMAT 2):
  params.safetensors  the parameters (averaged over eval.average_last checkpoints, as
                   --mode=eval averages them) in safetensors, one tensor per leaf in its
                   dtype, keyed by its '/'-joined path (e.g.
                   'encoder/layer_0/attention/query/kernel'); `safetensors.flax.load_file`
                   (or safetensors' numpy, torch, ... readers) reads it
  model.json       {'format', 'family', 'config': every field of the family's config
                   dataclass, 'versions': the transformer_jax, jax and flax that wrote it,
                   'metrics': {split: the run's evaluation of these params} (provenance.py)}
  run.json         {'format', 'tokenizer': {'kind': 'sentencepiece', 'file': 'tokenizer.model'}
                   or {'kind': 'identity', 'vocab_size'}, 'decode': the run's decode section,
                   'data': max_len, bucket_lengths, tokens_per_batch (how translate batches),
                   dataset and languages, 'source': the run's workdir, steps averaged, export time}
  tokenizer.model  the sentencepiece model (sentencepiece tokenizers only)
  README.md        the model card: what the model is, how it scored, the lines that use it
FORMAT 1 exports (still read) kept the params in params.npz (numpy's archive, bfloat16 widened
to float32) and had no versions or metrics.

Integrity: run.json's 'checksums' entry records, with checksums.py's CRC-32 ('uint8:<hex>' of
bytes), each binary file's bytes and size (the params file, tokenizer.model), run.json's other
entries and model.json's content (as canonical JSON, so reformatting a file changes nothing),
and a digest of the resolved model config (model.json's family and config, every dataclass
field) with a copy of it, so that `load_pretrained` refuses an edited field by name
(verification.py). README.md is for people and is not checked. FORMAT 1 exports recorded no
model.json content; those written before checksums have no entry and load unchecked.
"""

FORMAT = 2
READ_FORMATS = (1, 2)                # what load_pretrained reads
PARAMS_FILES = {1: 'params.npz', 2: 'params.safetensors'}     # by format
PARAMS_FILE, MODEL_FILE, RUN_FILE = PARAMS_FILES[FORMAT], 'model.json', 'run.json'
TOKENIZER_FILE, README_FILE = 'tokenizer.model', 'README.md'
CHECKSUMS = 'checksums'           # run.json's integrity entry
CHECKED_FILES = (PARAMS_FILE, TOKENIZER_FILE)     # checked byte for byte, when present
EXPORT_FILES = frozenset((*PARAMS_FILES.values(), MODEL_FILE, RUN_FILE, TOKENIZER_FILE,
                          README_FILE))
