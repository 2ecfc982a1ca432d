"""Raw public datasets -> LLaMA-Factory ShareGPT multimodal records (`vlmr convert`), and their checks.

A converter is one small module per source (its raw format documented in its docstring with a one-record
example) exposing `iter_records(...)`, a generator of `schema.Sample` / `schema.Skipped`. The one shared
`writer.write_split` turns that stream into a split file, a media folder, a skip report and a
`dataset_info.json` entry. `validate` checks any ShareGPT dataset as LLaMA-Factory will read it.
"""
