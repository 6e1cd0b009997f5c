"""Small shims over version differences of the libraries trl_pav builds on."""

from __future__ import annotations

import dataclasses


def activation_checkpointing_off(config_cls: type) -> dict[str, bool]:
    """Keyword arguments that turn activation (gradient) checkpointing off for a `TrainingArguments` subclass.

    TRL's configs turn it on by default; for the tiny models of the demo and tests it only adds a second forward
    pass. transformers >= 5.x renamed the flag `activation_checkpointing` and warns (FutureWarning) when the old name
    is passed; older versions only know `gradient_checkpointing`.

    Example:
        >>> from transformers import TrainingArguments
        >>> list(activation_checkpointing_off(TrainingArguments).values())
        [False]
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}
