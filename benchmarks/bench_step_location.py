"""Locating steps in sampled completions whose tokenization re-tokenizing does not reproduce (non-canonical).

RL maps every completion token to its step through `token_char_ends`. When re-tokenizing the decoded text gives other
ids (a sampled, non-canonical tokenization: common in long samples), it used to decode every prefix, O(T^2). It now
detokenizes incrementally, O(T), and checks the result against the full decode. This benchmark times the new path
against the named baseline, prefix decoding (`tokenizer.batch_decode` of every prefix, the former code and still the
fallback), on completions of `--lengths` tokens built from pieces tokenized apart (SmolLM2's byte-level BPE, multi-byte
characters included), interleaved over `--reps` repetitions after a warm-up, and checks that both give the same step
ownership.
Final line: {"benchmark": "step_location", "ratios": {length: {"median", "min", "max", "iqr", ...}}, ...} where a
ratio is the new path's seconds over the baseline's (median over repetitions).
"""

from __future__ import annotations

import argparse

from _common import emit, interleave, ratio_summary

from trl_pav import StepFormat
from trl_pav.testing import smollm2_tokenizer
from trl_pav.trainers import pav_rl

PIECES = ["The ans", "wer", " is ", "1", "2", "+3=15", ".\n", "So 😀 ", "世", "界 ≤ ", "π\n"]


def completion(tok, length: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < length:
        for piece in PIECES:
            ids.extend(tok(piece, add_special_tokens=False)["input_ids"])
    ids = ids[:length]
    if tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids:
        raise RuntimeError("the benchmark's completion is canonical: it would not exercise the non-canonical path")
    return ids


def prefix_ends(tok, ids: list[int]) -> list[int]:
    return [len(t) for t in tok.batch_decode([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    tok = smollm2_tokenizer()
    fmt = StepFormat()
    ratios, seconds = {}, {}
    for length in args.lengths:
        ids = completion(tok, length)
        new = pav_rl.token_char_ends(tok, ids)
        old = prefix_ends(tok, ids)
        # The same steps either way (ends of partial multi-byte tokens may differ; ownership may not).
        owner_new = pav_rl.locate_steps(tok, ids, fmt, finished=False)
        real_ends = pav_rl.token_char_ends
        try:
            pav_rl.token_char_ends = lambda t, i: prefix_ends(t, list(i))
            owner_old = pav_rl.locate_steps(tok, ids, fmt, finished=False)
        finally:
            pav_rl.token_char_ends = real_ends
        if owner_new != owner_old:
            raise RuntimeError(f"length {length}: step ownership differs between the two paths")
        times = interleave(
            {
                "incremental": lambda rep, ids=ids: pav_rl.token_char_ends(tok, ids),
                "prefix_decoding": lambda rep, ids=ids: prefix_ends(tok, ids),
            },
            args.reps,
        )
        ratios[str(length)] = ratio_summary(times["incremental"], times["prefix_decoding"], digits=4)
        seconds[str(length)] = {k: round(sorted(v)[len(v) // 2], 4) for k, v in times.items()}
        print(f"{length} tokens: {seconds[str(length)]}, ends equal: {new == old}", flush=True)
    emit({"benchmark": "step_location", "baseline": "prefix_decoding", "ratios": ratios, "median_seconds": seconds})


if __name__ == "__main__":
    main()
