import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_pav import StepFormat, token_positions, tokenize_trace

FORMATS = [StepFormat.newline(), StepFormat.blank_line(), StepFormat(" ;; ")]
TEXT = st.text(alphabet=st.sampled_from(list("ab1+=. \n\té€;")), max_size=60)


def valid_steps(fmt):
    """Step lists that `join` accepts (no whitespace-only steps, no separator inside or at the edges)."""
    step = st.text(alphabet=st.sampled_from(list("ab1+=. é€;\t\n")), min_size=1, max_size=12)
    return st.lists(step, min_size=1, max_size=8).filter(lambda steps: _joinable(fmt, steps))


def _joinable(fmt, steps):
    try:
        fmt.join(steps)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_split_join_roundtrip(fmt, data):
    steps = data.draw(valid_steps(fmt))
    text = fmt.join(steps)
    assert fmt.split(text) == steps
    assert fmt.join(fmt.split(text)) == text
    # Ends of steps as offsets into the joined text.
    ends = fmt.step_ends(steps)
    assert [e for _, e in fmt.spans(text)] == ends
    assert [text[s:e] for s, e in fmt.spans(text)] == steps


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@given(text=TEXT)
@settings(max_examples=200, deadline=None)
def test_split_rule_on_arbitrary_text(fmt, text):
    steps = fmt.split(text)
    # Documented rule: only whitespace-only pieces are dropped, the rest come back verbatim and in order.
    pieces = text.split(fmt.separator)
    assert steps == [p for p in pieces if p.strip()]
    canonical = all(p.strip() for p in pieces)
    if canonical:
        assert fmt.join(steps) == text
    for s, e in fmt.spans(text):
        assert text[s:e].strip()


def test_empty_and_whitespace_steps():
    fmt = StepFormat()
    assert fmt.split("") == []
    assert fmt.split("  \n\n\t") == []
    assert fmt.split("a\n\n  \nb\n") == ["a", "b"]
    assert fmt.spans("a\n\n  \nb\n") == [(0, 1), (6, 7)]
    with pytest.raises(ValueError, match="whitespace-only"):
        fmt.join(["a", "  "])
    with pytest.raises(ValueError, match="separator"):
        fmt.join(["a\nb"])
    with pytest.raises(ValueError, match=r"step 0 .* would not split back"):
        StepFormat.blank_line().join(["1\n", "1"])
    with pytest.raises(ValueError, match="would not split back"):
        StepFormat(" ;; ").join(["1 ;;", "2"])
    with pytest.raises(ValueError, match="non-empty"):
        StepFormat("")


def test_dict_roundtrip():
    for fmt in FORMATS:
        assert StepFormat.from_dict(fmt.to_dict()) == fmt
    assert StepFormat.from_dict(None) == StepFormat()
    with pytest.raises(ValueError, match="unknown keys"):
        StepFormat.from_dict({"separator": "\n", "sep2": 1})


def _check_positions(tok, text, ends):
    enc = tok(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    positions = token_positions(offsets, ends)
    for end, pos in zip(ends, positions):
        s, e = offsets[pos]
        assert e > s and s < end, (text, end, offsets[pos])
        covering = [i for i, (a, b) in enumerate(offsets) if b > a and a <= end - 1 < b]
        if covering:
            # The token that contains the step's last character (the last such token for multi-byte characters).
            assert pos == covering[-1], (text, end, pos, covering)
        later = [a for a, b in offsets[pos + 1 :] if b > a]
        assert all(a >= end for a in later)
    return positions


@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_step_ends_land_on_last_character_token_char(char_tok, data):
    fmt = StepFormat()
    steps = data.draw(valid_steps(fmt))
    text = "Q: " + fmt.join(steps)
    _check_positions(char_tok, text, fmt.step_ends(steps, offset=3))


@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_step_ends_land_on_last_character_token_bpe(bpe_tok, data):
    fmt = data.draw(st.sampled_from(FORMATS))
    steps = data.draw(valid_steps(fmt))
    text = "Problem: " + fmt.join(steps)
    _check_positions(bpe_tok, text, fmt.step_ends(steps, offset=len("Problem: ")))


def test_token_positions_inside_bpe_token(bpe_tok):
    # "The answer" is one BPE run; a step ending at "Th" lies inside the token "The".
    text = "The answer is 19."
    enc = bpe_tok(text, return_offsets_mapping=True)
    (pos,) = token_positions(enc["offset_mapping"], [2])
    s, e = enc["offset_mapping"][pos]
    assert s <= 1 < e


def test_token_positions_errors():
    with pytest.raises(ValueError, match="before every token"):
        token_positions([(0, 0), (3, 5)], [2])


@pytest.mark.parametrize("tok_name", ["char_tok", "bpe_tok"])
def test_tokenize_trace_prefix_consistency(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    fmt = StepFormat()
    steps = ["29*14=406", "25-406=-381", "The answer is -381."]
    full = tokenize_trace(tok, "Q: 25-29*14?", steps, fmt)
    assert len(full.positions) == len(steps) + 1
    for h in range(len(steps) + 1):
        part = tokenize_trace(tok, "Q: 25-29*14?", steps[:h], fmt)
        assert part.input_ids == full.input_ids[: len(part.input_ids)]
        assert part.positions == full.positions[: h + 1]
        assert part.positions[-1] == len(part.input_ids) - 1
    with pytest.raises(ValueError, match="prompt"):
        tokenize_trace(tok, "", steps, fmt)
    with pytest.raises(ValueError, match="separator"):
        tokenize_trace(tok, "Q", ["a\nb"], fmt)
