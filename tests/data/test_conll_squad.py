"""dhian.data.conll / squad / qa_windows on fixture files written here: first-subword labels
with -100 elsewhere, offsets and stride windows, answer positions, batches."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from dhian.data.batching import collate
from dhian.data.conll import IGNORE, conll_path, encode_tagged, read_conll, tag_names
from dhian.data.qa_windows import answer_positions, qa_windows
from dhian.data.squad import encode_squad, read_squad, squad_path
from dhian.errors import DataError
from helpers.ner_qa import CONTEXT, NER_SENTENCES, ner_tokenizer, write_conll, write_squad


def test_read_conll_and_tags(tmp_path: Path) -> None:
    d = write_conll(tmp_path / "c")
    sents = read_conll(conll_path(f"conll:{d}", "train"))
    assert [list(s.words) for s in sents] == [w for w, _ in NER_SENTENCES]
    assert [list(s.tags) for s in sents] == [t for _, t in NER_SENTENCES]
    assert tag_names(sents) == ["O", "B-LOC", "I-LOC", "B-MISC", "B-ORG", "I-ORG", "B-PER"][:0] or (
        tag_names(sents) == ["O", "B-LOC", "B-MISC", "B-ORG", "I-ORG", "B-PER"]
    )
    (d / "dev.txt").rename(d / "valid.txt")
    assert conll_path(str(d), "dev").name == "valid.txt"
    with pytest.raises(DataError, match="no test file"):
        conll_path(str(tmp_path), "test")


def test_first_subword_gets_the_label(tmp_path: Path) -> None:
    tok = ner_tokenizer(tmp_path)
    sents = read_conll(write_conll(tmp_path / "c") / "train.txt")
    names = tag_names(sents)
    data = encode_tagged(sents, tok, names, max_len=32)
    assert data.tgt is not None
    # sentence 3: "the Parisian lives in London" — Parisian is several subwords
    ids, tags = data.src[3], data.tgt[3]
    pieces = tok.ids_to_tokens(ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and tags[0] == tags[-1] == IGNORE
    start = pieces.index("paris")  # parisian → paris ##i ##a ##n
    assert pieces[start + 1].startswith("##")
    assert tags[start] == names.index("B-MISC")
    cont = [i for i in range(start + 1, len(pieces)) if pieces[i].startswith("##")]
    assert cont and all(tags[i] == IGNORE for i in cont)
    labelled = [t for t in tags if t != IGNORE]
    assert [names[t] for t in labelled] == list(sents[3].tags)
    # truncation keeps [SEP] and counts the sentence
    short = encode_tagged(sents, tok, names, max_len=4)
    assert short.truncated >= 3 and all(len(s) <= 4 for s in short.src)
    batch = collate(data, [0, 3])
    assert batch.tgt_out is not None and batch.tgt_out.shape == batch.src.shape
    assert int(batch.tgt_out[0, len(data.src[0]) :].ne(IGNORE).sum()) == 0  # padding ignored
    with pytest.raises(DataError, match=r"tag .B-PER., not one of"):
        encode_tagged(sents, tok, ["O"], 32)


def test_squad_reading_windows_and_labels(tmp_path: Path) -> None:
    tok = ner_tokenizer(tmp_path)
    d = write_squad(tmp_path / "s")
    exs = read_squad(squad_path(f"squad:{d}", "dev"))
    assert [e.id for e in exs] == ["q1", "q2", "q3", "q4"]
    assert exs[3].impossible and not exs[0].impossible
    one = qa_windows(tok, exs[0].question, CONTEXT, max_len=64, stride=4)
    assert len(one) == 1
    s, e = answer_positions(one[0], CONTEXT.index("Paris"), CONTEXT.index("Paris") + 5)
    start, end = one[0].offsets[s], one[0].offsets[e]
    assert start is not None and end is not None and CONTEXT[start[0] : end[1]] == "Paris"
    # a short max_len splits the context into overlapping windows that cover it all
    wins = qa_windows(tok, exs[1].question, CONTEXT, max_len=16, stride=3)
    assert len(wins) > 2 and all(len(w.ids) <= 16 for w in wins)
    spans = [[o for o in w.offsets if o is not None] for w in wins]
    for a, b in itertools.pairwise(spans):
        assert a[-3:] == b[:3]  # stride = 3 shared tokens
    assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(CONTEXT)  # the whole context
    feats = encode_squad(exs, tok, max_len=16, stride=3)
    assert feats.data.spans is not None and len(feats.windows) == len(feats.data)
    for w, (s, e), owner in zip(feats.windows, feats.data.spans, feats.example, strict=True):
        ex = exs[owner]
        if (s, e) != (0, 0):
            a, b = w.offsets[s], w.offsets[e]
            assert a is not None and b is not None
            assert CONTEXT[a[0] : b[1]] == ex.answers[0][0]
    found = {exs[o].id for (s, e), o in zip(feats.data.spans, feats.example, strict=True) if s}
    assert found == {"q1", "q2", "q3"}  # each answer is wholly inside at least one window
    batch = collate(feats.data, [0, 1])
    assert batch.labels is not None and batch.labels.shape == (2, 2)
    assert batch.type_ids is not None and int(batch.type_ids[0, 0]) == 0


def test_squad_errors(tmp_path: Path) -> None:
    tok = ner_tokenizer(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "abc",
                                "qas": [
                                    {
                                        "id": "x",
                                        "question": "q",
                                        "answers": [{"text": "zz", "answer_start": 0}],
                                    }
                                ],
                            }
                        ]
                    }
                ]
            }
        )
    )
    with pytest.raises(DataError, match="not at character 0"):
        read_squad(bad)
    bad.write_text("{}")
    with pytest.raises(DataError, match="not SQuAD JSON"):
        read_squad(bad)
    with pytest.raises(DataError, match="stride"):
        qa_windows(tok, "who", CONTEXT, max_len=16, stride=20)
