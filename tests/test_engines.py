"""Engines (issue 25): eval-steps dtype/device, public PRMs under ZeRO-3 in RL, the `trl vllm-serve` client policy."""

import json

import numpy as np
import pytest
import torch

from trl_pav import PAVMetadata, PAVVerifier
from trl_pav.cli import main
from trl_pav.metrics import predicted_first_errors, step_error_metrics
from trl_pav.step_eval import StepEvalArguments, arithmetic_step_errors, load_scorer
from trl_pav.testing import tiny_public_prm, tiny_token_classifier


@pytest.fixture()
def saved_scorers(tmp_path, char_tok):
    """A trl_pav verifier and a Math-Shepherd-style PRM, both saved in bfloat16."""
    verifier = PAVVerifier(tiny_token_classifier(char_tok, seed=5).to(torch.bfloat16), char_tok, PAVMetadata())
    verifier.save_pretrained(tmp_path / "pav")
    model, tok = tiny_public_prm("math-shepherd")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "prm")
    tok.save_pretrained(tmp_path / "prm")
    return tmp_path / "pav", tmp_path / "prm"


@pytest.mark.parametrize("scorer_type", ["pav", "math-shepherd"])
def test_eval_steps_loads_in_the_dtype_and_on_the_device_asked(saved_scorers, scorer_type):
    path = saved_scorers[0] if scorer_type == "pav" else saved_scorers[1]
    for dtype, expected in [("auto", torch.bfloat16), ("float32", torch.float32), ("float16", torch.float16)]:
        args = StepEvalArguments(scorer=str(path), scorer_type=scorer_type, dtype=dtype, device="cpu")
        scorer = load_scorer(args)
        assert {p.dtype for p in scorer.model.parameters()} == {expected}, dtype
        assert {p.device.type for p in scorer.model.parameters()} == {"cpu"}
        assert not any(p.requires_grad for p in scorer.model.parameters())
    # No device named: the GPU when one is visible, else the CPU.
    assert StepEvalArguments(scorer=str(path)).resolved_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_eval_steps_command_takes_dtype_and_device(saved_scorers, tmp_path, capsys):
    rows = arithmetic_step_errors(12, 0.3, seed=4).to_list()
    assert {-1} < {r["label"] for r in rows}  # both correct and erroneous traces (no NaN metric)
    (tmp_path / "pb.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    main(["eval-steps", "--scorer", str(saved_scorers[0]), "--data", str(tmp_path / "pb.jsonl"), "--dtype", "float32",
          "--device", "cpu"])  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The report is the float32 scorer's own predictions.
    scorer = PAVVerifier.from_pretrained(saved_scorers[0], dtype=torch.float32)
    values = [v[1:] for v in scorer.score([r["problem"] for r in rows], [r["steps"] for r in rows])]
    expected = step_error_metrics(predicted_first_errors(values, 0.5), np.array([r["label"] for r in rows]))
    assert report["overall"] == expected


def test_eval_steps_rejects_bad_dtype_and_device(saved_scorers, capsys):
    with pytest.raises(ValueError, match=r"dtype must be one of.*'fp8'"):
        StepEvalArguments(scorer="x", dtype="fp8")
    with pytest.raises(ValueError, match="device 'gpu0' is not a torch device"):
        StepEvalArguments(scorer="x", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:0' asks for a GPU but none is visible"):
            StepEvalArguments(scorer="x", device="cuda:0")
    with pytest.raises(SystemExit):
        main(["eval-steps", "--scorer", str(saved_scorers[0]), "--dtype", "half"])
    assert "--dtype: invalid choice: 'half'" in capsys.readouterr().err
