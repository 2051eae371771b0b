"""dhian.inference.tag / answer: BIO decoding, first-subword word labels with character spans,
span search over windows (max length, no-answer threshold), agreement of the windowed answer
with a single-window one, and the attention viewer on both kinds of model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhian.data.qa_windows import QAWindow, qa_windows
from dhian.errors import DataError
from dhian.inference.answer import answer, answer_many, best_span, pick_answer, window_logits
from dhian.inference.attention_maps import extract_attention
from dhian.inference.load import load_model
from dhian.inference.tag import bio_entities, tag
from helpers.ner_qa import CONTEXT, TAGS, tiny_task_dir


def test_bio_entities() -> None:
    labels = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "B-LOC", "I-PER", "O"]
    assert bio_entities(labels) == [
        ("PER", 0, 2),
        ("LOC", 3, 5),  # I- without B- starts an entity (seqeval's default)
        ("LOC", 5, 6),
        ("LOC", 6, 7),
        ("PER", 7, 8),  # I-PER after B-LOC: a new entity
    ]
    assert bio_entities(["B-ORG", "I-ORG"]) == [("ORG", 0, 2)]
    assert bio_entities(["O", "O"]) == []


def test_tag_words_use_the_first_subword(tmp_path: Path) -> None:
    loaded = load_model(tiny_task_dir(tmp_path, "token_classification"))
    tok = loaded.tokenizers["src"]
    text = "Anna visited Parisian  London!"
    (res,) = tag(loaded.model, tok, [text])
    assert [w.text for w in res.words] == ["Anna", "visited", "Parisian", "London", "!"]
    assert all(text[w.start : w.end] == w.text for w in res.words)
    # the label of "Parisian" is the argmax at its first subword ("paris")
    ids = [tok.cls_id, *tok.encode(text), tok.sep_id]
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0]  # (T, C)
    pieces = tok.ids_to_tokens(ids)
    first = pieces.index("paris")
    assert res.words[2].label == TAGS[int(logits[first].argmax())]
    for e in res.entities:
        assert text[e.start : e.end] == e.text
    # batching and order: the same results one by one and in a batch
    texts = ["Bob lives in Berlin", text, "x", ""]
    batched = tag(loaded.model, tok, texts, batch_size=3)
    assert [r.as_dict() for r in batched] == [
        tag(loaded.model, tok, [t])[0].as_dict() for t in texts
    ]
    assert batched[3].words == []


def window(n_ctx: int) -> QAWindow:
    """A window of [CLS] q [SEP] + n_ctx context tokens (one char each) + [SEP]."""
    offsets: list[tuple[int, int] | None] = [None, None, None]
    offsets += [(i, i + 1) for i in range(n_ctx)] + [None]
    return QAWindow([0] * len(offsets), [0] * len(offsets), offsets)


def test_best_span_respects_context_order_and_length() -> None:
    w = window(5)  # context tokens at positions 3..7
    start = torch.tensor([9.0, 8, 0, 0, 1, 0, 0, 0, 0])
    end = torch.tensor([9.0, 0, 0, 0, 0, 0, 2, 0, 0])
    assert best_span(start, end, w) == (3.0, 4, 6)  # [CLS] and question tokens are not spans
    short = best_span(start, end, w, max_answer_len=2)
    assert short is not None and short[2] - short[1] < 2
    # end before start is never chosen: start only at 7, end only at 3 → a weaker valid span
    s, e = torch.zeros(9), torch.zeros(9)
    s[7], e[3] = 5.0, 5.0
    got = best_span(s, e, w)
    assert got is not None and got[1] <= got[2]


def test_pick_answer_over_windows_and_no_answer() -> None:
    ctx = "abcdefgh"
    w1, w2 = window(5), window(5)
    w2 = QAWindow(
        w2.ids, w2.type_ids, [None, None, None, *[(i + 3, i + 4) for i in range(5)], None]
    )
    s2, e2 = torch.zeros(9), torch.zeros(9)
    s2[4], e2[5] = 4.0, 4.0  # window 2: "ef" (chars 4..6) scores 8
    s1, e1 = torch.zeros(9), torch.zeros(9)
    s1[0] = e1[0] = 3.0  # window 1 prefers [CLS]: null 6; window 2's null is 0 → min 0
    ans = pick_answer(ctx, [w1, w2], [(s1, e1), (s2, e2)], 30, 0.0)
    assert (ans.text, ans.start, ans.end, ans.null_score) == ("ef", 4, 6, 0.0)
    # a null score above the best span + threshold → no answer (v2); None → always answer
    s1[0] = e1[0] = s2[0] = e2[0] = 5.0  # both windows' null = 10 > 8
    assert pick_answer(ctx, [w1, w2], [(s1, e1), (s2, e2)], 30, 0.0).text == ""
    assert pick_answer(ctx, [w1, w2], [(s1, e1), (s2, e2)], 30, 5.0).text == "ef"
    assert pick_answer(ctx, [w1, w2], [(s1, e1), (s2, e2)], 30, None).text == "ef"


def test_answer_windows_agree_with_one_window(tmp_path: Path) -> None:
    """A random QA model: windows of 16 ids score every context token with the same logits as
    the windows hold them; the best span over windows is a real span of the context."""
    loaded = load_model(tiny_task_dir(tmp_path, "question_answering"))
    model, tok = loaded.model, loaded.tokenizers["src"]
    q = "Where does Bob live?"
    res = answer(model, tok, q, CONTEXT, max_len=16, stride=4)
    assert res.text == CONTEXT[res.start : res.end] and res.text
    wins = qa_windows(tok, q, CONTEXT, 16, 4)
    assert len(wins) > 2
    logits = window_logits(model, wins, batch_size=2)
    assert [s.shape[0] for s, _ in logits] == [len(w.ids) for w in wins]
    one = [window_logits(model, [w])[0] for w in wins]
    for (a, b), (c, d) in zip(logits, one, strict=True):
        assert torch.allclose(a, c, atol=1e-5) and torch.allclose(b, d, atol=1e-5)
    many = answer_many(model, tok, [(q, CONTEXT), ("Who?", "Anna.")], max_len=16, stride=4)
    assert many[0] == res and many[1].text in ("Anna", ".", "Anna.")
    with pytest.raises(DataError, match="context is empty"):
        answer(model, tok, q, "  ")


@pytest.mark.parametrize("task", ["token_classification", "question_answering"])
def test_attention_viewer_works_on_both_kinds(task: str, tmp_path: Path) -> None:
    loaded = load_model(tiny_task_dir(tmp_path, task))
    if task == "question_answering":
        res = extract_attention(loaded, "Where does Bob live?", context=CONTEXT)
        assert res.tokens_src[0] == "[CLS]" and res.tokens_src.count("[SEP]") == 2
        assert res.output and res.output.lower() in CONTEXT.lower()
    else:
        res = extract_attention(loaded, "Anna lives in Paris")
        assert res.output is not None and len(res.output.split()) == 4
        with pytest.raises(DataError, match="context is only for question-answering"):
            extract_attention(loaded, "x", context="y")
    w = res.self_attention["encoder"]
    assert w.shape[:2] == (2, 2) and w.shape[2] == w.shape[3] == len(res.tokens_src)
    payload = res.payload()
    assert payload["tokens"]["src"] == res.tokens_src
