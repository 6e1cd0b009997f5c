"""The pipeline's stage scripts: each has a `make_parser()` (TRL's `TrlParser` over its dataclasses) and a
`main(...)` returning a JSON-able summary. `recipes/*.py` run them under `accelerate launch`; `trl-pav` runs them too.
"""
