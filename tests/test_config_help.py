"""Every field of every dataclass that goes through `TrlParser` documents itself in `--help`."""

import dataclasses
import importlib
import inspect

import pytest

from trl_pav.cli import DemoArguments, TrainPolicyArguments
from trl_pav.demo import DemoConfig
from trl_pav.step_eval import StepEvalArguments

STAGES = ["label", "rl", "search_eval", "sft", "train_verifier"]


def own_dataclasses():
    """The project's dataclasses in each stage parser (TRL's and transformers' own are theirs to document)."""
    found = {DemoArguments, DemoConfig, TrainPolicyArguments, StepEvalArguments}
    for stage in STAGES:
        parser = importlib.import_module(f"trl_pav.scripts.{stage}").make_parser([])
        found.update(t for t in parser.dataclass_types if t.__module__.startswith("trl_pav"))
    return sorted(found, key=lambda t: t.__name__)


@pytest.mark.parametrize("cls", own_dataclasses(), ids=lambda c: c.__name__)
def test_every_parsed_field_has_help(cls):
    fields = dataclasses.fields(cls)
    missing = [f.name for f in fields if f.init and not f.metadata.get("help") and _defined_here(cls, f.name)]
    assert not missing, f"{cls.__name__}: fields without help: {missing}"


def _defined_here(cls, name):
    """Fields declared by a trl_pav class (inherited TrainingArguments/GRPOConfig fields are documented upstream)."""
    for klass in cls.__mro__:
        if name in inspect.get_annotations(klass):
            return klass.__module__.startswith("trl_pav")
    return False


def test_parsers_include_the_library_configs():
    names = {c.__name__ for c in own_dataclasses()}
    assert {"MCLabelConfig", "SearchEvalConfig", "PAVRewardConfig", "PAVGRPOConfig", "StepEvalArguments"} <= names
