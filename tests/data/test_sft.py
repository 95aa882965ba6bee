"""Fine-tuning data: template rendering and truncation, the loss on the answer only, packed
examples that do not see each other (equal to running them one by one), T5 pairs, bad records,
files read into examples, and passes over them in a seeded order."""

from __future__ import annotations

import pytest
import torch

from megatron_lite.config import GPTModelConfig
from megatron_lite.data.sft import (
    Example,
    GPTSFTDataset,
    PromptTemplate,
    RepeatedSamples,
    T5SFTDataset,
    read_examples,
    read_records,
    tokenize_example,
)
from megatron_lite.models import GPTModel
from megatron_lite.modules.cross_entropy import linear_cross_entropy
from megatron_lite.tokenizers import ByteTokenizer

TOKENIZER = ByteTokenizer()


def test_the_template_splits_context_and_answer_and_truncates_its_field():
    template = PromptTemplate(prompt_template="Q: {input}\nA: {output}")
    example = tokenize_example({"input": "abcdef", "output": "xy"}, TOKENIZER, template, 64)
    assert TOKENIZER.decode(example.context) == "Q: abcdef\nA: "
    assert example.answer == TOKENIZER.encode("xy") + [TOKENIZER.eod_id]
    # 13 context + 3 answer tokens into 12: the input loses 4 tokens at its right end ...
    short = tokenize_example({"input": "abcdef", "output": "xy"}, TOKENIZER, template, 12)
    assert TOKENIZER.decode(short.context) == "Q: ab\nA: " and len(short.context) + len(short.answer) == 12
    # ... or at its left end
    left = tokenize_example({"input": "abcdef", "output": "xy"}, TOKENIZER,
                            PromptTemplate(prompt_template="Q: {input}\nA: {output}", truncation_method="left"), 12)
    assert TOKENIZER.decode(left.context) == "Q: ef\nA: "


def test_the_loss_falls_on_the_answer_only():
    sample = GPTSFTDataset([Example([5, 6, 7], [8, 9, 1])], max_seq_length=10, pad_id=0, pack=False)[0]
    assert sample["tokens"].tolist() == [5, 6, 7, 8, 9, 1, 0, 0, 0, 0]
    assert sample["labels"].tolist() == [6, 7, 8, 9, 1, 0, 0, 0, 0, 0]
    # inputs 7, 8, 9 predict the answer 8, 9 and eos 1; context and padding predict nothing
    assert sample["loss_mask"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]


def test_packed_examples_equal_the_examples_one_by_one():
    torch.manual_seed(0)
    examples = [Example([5, 6, 7], [8, 9, 1]), Example([10, 11], [12, 1]), Example([13], [14, 15, 1])]
    packed = GPTSFTDataset(examples, max_seq_length=16, pad_id=0, pack=True)
    alone = GPTSFTDataset(examples, max_seq_length=16, pad_id=0, pack=False)
    assert len(packed) == 1 and len(alone) == 3
    model = GPTModel(GPTModelConfig(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4,
                                    encoder_seq_length=16, max_position_embeddings=16, hidden_dropout=0.0,
                                    attention_dropout=0.0, position_embedding_type="rope"), 64)

    def summed_loss(sample):  # the sum over the predicted tokens, so that samples add up
        batch = {key: value[None] for key, value in sample.items()}
        hidden = model.hidden_states(batch["tokens"], batch["position_ids"], batch["segment_ids"])
        mean = linear_cross_entropy(hidden, model.output_weight(), batch["labels"], batch["loss_mask"])
        return mean * batch["loss_mask"].sum()

    torch.testing.assert_close(summed_loss(packed[0]), sum(summed_loss(alone[i]) for i in range(3)))


def test_packing_starts_a_new_sample_when_the_next_example_does_not_fit():
    examples = [Example([1] * 5, [2] * 4), Example([3] * 3, [4] * 3), Example([5] * 2, [6] * 2)]
    assert [len(b) for b in GPTSFTDataset(examples, 12, 0, pack=True).bins] == [1, 2]


def test_t5_pairs_put_the_context_in_the_encoder():
    sample = T5SFTDataset([Example([5, 6], [8, 1])], seq_length=4, seq_length_dec=3, pad_id=0, eod_id=1)[0]
    assert sample["text_enc"].tolist() == [5, 6, 1, 0]
    assert sample["text_dec"].tolist() == [0, 8, 0] and sample["labels"].tolist() == [8, 1, 0]
    with pytest.raises(ValueError, match="does not fit seq_length=4"):
        T5SFTDataset([Example([5, 6, 7, 8], [1])], 4, 3, 0, 1)


@pytest.mark.parametrize("lines, message", [
    (['{"input": "a", "output": "b"}', '{"input": "a"}'], r"data.jsonl:2 has no text field\(s\) \['output'\]"),
    (['{"input": "a", "output": 3}'], r"data.jsonl:1 has no text field"),
    (['{"input": "a", "output": "b"', ], r"data.jsonl:1 is not valid JSON"),
    ([""], "holds no records"),
])
def test_bad_records_name_the_file_and_line(tmp_path, lines, message):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_records(path, PromptTemplate())


@pytest.mark.parametrize("options, message", [
    (dict(prompt_template="{output} {input}"), "must end with the label field"),
    (dict(truncation_field="context"), "truncation_field 'context' is not a field"),
    (dict(truncation_method="middle"), "truncation_method"),
])
def test_bad_templates_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate(**options)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        read_records(tmp_path / "nope.jsonl", PromptTemplate())


def test_answer_only_loss_off_predicts_the_context_too():
    sample = GPTSFTDataset([Example([5, 6, 7], [8, 1])], max_seq_length=8, pad_id=0, pack=False,
                           answer_only_loss=False)[0]
    assert sample["loss_mask"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # every token after the first


def test_examples_of_files_name_the_line_that_cannot_fit(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "ab", "output": "c"}\n{"input": "a", "output": "xxxxxxxxxx"}\n')
    template = PromptTemplate()
    examples = read_examples([path, path], TOKENIZER, template, 13, min_seq_length=6)
    assert len(examples) == 2  # the second record (13 tokens) of each file; the first has 5
    with pytest.raises(ValueError, match=r"data.jsonl:2: the record's answer and template leave no room"):
        read_examples([path], TOKENIZER, template, 11)
    # T5: the length bounds the context; an answer longer than the decoder's is named.
    with pytest.raises(ValueError, match=r"data.jsonl:2: the answer's 11 tokens \(eos included\) exceed the "
                                         "decoder's 8"):
        read_examples([path], TOKENIZER, template, 4, max_answer_length=8)
    with pytest.raises(ValueError, match="no example holds min_seq_length=50 tokens"):
        read_examples([path], TOKENIZER, template, 64, min_seq_length=50)


def test_repeated_samples_take_every_sample_once_per_pass_in_a_seeded_order():
    base = [{"tokens": torch.tensor([i])} for i in range(5)]
    samples = RepeatedSamples(base, 12, seed=3, shuffle=True)
    seen = [int(samples[i]["tokens"]) for i in range(12)]
    assert sorted(seen[:5]) == sorted(seen[5:10]) == list(range(5)) and seen[:5] != seen[5:10]
    assert seen == [int(RepeatedSamples(base, 12, seed=3, shuffle=True)[i]["tokens"]) for i in range(12)]
    in_order = RepeatedSamples(base, 7, seed=3, shuffle=False)
    assert [int(in_order[i]["tokens"]) for i in range(7)] == [0, 1, 2, 3, 4, 0, 1]
