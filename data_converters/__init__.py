"""Raw public datasets -> LLaMA-Factory ShareGPT multimodal records (`vlmr convert`), and their checks.

A converter is one small module per source (its raw format documented in its docstring with a one-record
example) exposing `iter_records(...)`, a generator of `schema.Sample` / `schema.Skipped`. The one shared
`writer.write_split` turns that stream into a split file, a media folder and a skip report; `datasets` owns
everything else about a dataset (its `dataset_info.json` entry, resolving a name, reading its records).
`validate` checks any ShareGPT dataset as LLaMA-Factory will read it.
"""
