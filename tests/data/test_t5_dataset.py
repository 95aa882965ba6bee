from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch
from data_helpers import make_documents

from megatron_lite.data import (
    BlendedDataset,
    GPTDataset,
    IndexedDataset,
    IndexedDatasetWriter,
    T5Dataset,
    build_t5_datasets,
    reconstruct_text_tokens,
)
from megatron_lite.tokenizers import ByteTokenizer, build_tokenizer

SEQ_LENGTH, SEQ_LENGTH_DEC = 128, 32  # 141 raw tokens -> 128 encoder, 29 target tokens (7 spans)
KEYS = {
    "text_enc": (torch.int64, SEQ_LENGTH),
    "text_dec": (torch.int64, SEQ_LENGTH_DEC),
    "labels": (torch.int64, SEQ_LENGTH_DEC),
    "loss_mask": (torch.float32, SEQ_LENGTH_DEC),
    "enc_mask": (torch.bool, SEQ_LENGTH),
    "dec_mask": (torch.bool, SEQ_LENGTH_DEC),
}


def _write_corpus(prefix: str, tokenizer, num_documents: int, seed: int) -> None:
    with IndexedDatasetWriter(prefix, np.uint16) as writer:
        for text in make_documents(num_documents, seed):
            writer.add_document(tokenizer.encode(text) + [tokenizer.eod_id])


@pytest.fixture(scope="module")
def tokenizer() -> ByteTokenizer:
    return build_tokenizer("byte", num_sentinel_tokens=100)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer) -> str:
    prefix = str(tmp_path_factory.mktemp("t5") / "bytes")
    _write_corpus(prefix, tokenizer, 200, seed=3)
    return prefix


def _build(prefix, tokenizer, num_samples=(300, 0, 0), splits="1", seed=1234, **options):
    options = {"seq_length": SEQ_LENGTH, "seq_length_dec": SEQ_LENGTH_DEC, **options}
    return build_t5_datasets(
        prefix,
        splits,
        seed=seed,
        num_samples=num_samples,
        tokenizer=tokenizer,
        **options,
    )


@pytest.fixture(scope="module")
def dataset(corpus, tokenizer, tmp_path_factory) -> T5Dataset:
    cache_dir = str(tmp_path_factory.mktemp("cache"))
    train, _, _ = _build(corpus, tokenizer, (2000, 0, 0), cache_dir=cache_dir)
    return train


def _over_windows(windows, tokenizer, seed: int) -> T5Dataset:
    """Span corruption at the test lengths over given raw windows."""
    return T5Dataset(windows, seq_length=SEQ_LENGTH, seq_length_dec=SEQ_LENGTH_DEC, seed=seed,
                     eod_id=tokenizer.eod_id, pad_id=tokenizer.pad_id, sentinel_ids=tokenizer.sentinel_ids)


def _sentinel_numbers(sequence: torch.Tensor, tokenizer) -> list[int]:
    numbers = {sentinel: n for n, sentinel in enumerate(tokenizer.sentinel_ids)}
    return [numbers[token] for token in sequence.tolist() if token in numbers]


def _restore(item: dict, tokenizer) -> np.ndarray:
    """The raw window an item was corrupted from, rebuilt from its encoder input and labels."""
    return reconstruct_text_tokens(item["text_enc"].numpy(), item["labels"].numpy(),
                                   tokenizer.sentinel_ids, eod_id=tokenizer.eod_id,
                                   pad_id=tokenizer.pad_id)


def test_items_have_nemo_keys_dtypes_and_lengths(dataset):
    assert isinstance(dataset, T5Dataset) and len(dataset) == 2000
    assert dataset.lengths.raw_length == 141 and dataset.lengths.target_length == 29
    for index in range(0, 2000, 97):
        item = dataset[index]
        assert {key: (value.dtype, value.shape[0]) for key, value in item.items()} == KEYS
        assert all(value.dim() == 1 for value in item.values())


def test_encoder_target_and_decoder_layout(dataset, tokenizer):
    pad, eod = tokenizer.pad_id, tokenizer.eod_id
    target_length = dataset.lengths.target_length
    for index in range(0, 2000, 13):
        item = dataset[index]
        # The encoder input fills model.seq_length exactly and ends with a sentinel and EOS.
        assert bool(item["enc_mask"].all())
        assert item["text_enc"][-1] == eod and item["text_enc"][-2] == tokenizer.sentinel_ids[6]
        # Labels: the target, EOS, then padding; the masks mark exactly the target.
        labels = item["labels"]
        assert labels[target_length - 1] == eod and bool((labels[target_length:] == pad).all())
        real = torch.arange(SEQ_LENGTH_DEC) < target_length
        assert torch.equal(item["dec_mask"], real)
        assert torch.equal(item["loss_mask"], real.float())
        # Decoder input: the start token (pad, as in T5), then the labels shifted right, without
        # the EOS, which is only ever predicted.
        text_dec = item["text_dec"]
        assert text_dec[0] == pad
        assert torch.equal(text_dec[1:target_length], labels[: target_length - 1])
        assert bool((text_dec[target_length:] == pad).all())


def test_round_trip_recovers_every_raw_window(dataset, tokenizer):
    for index in range(2000):
        item = dataset[index]
        restored = _restore(item, tokenizer)
        np.testing.assert_array_equal(restored, dataset.window(index))


def test_sentinels_come_in_order_and_match_between_input_and_target(dataset, tokenizer):
    for index in range(0, 2000, 7):
        item = dataset[index]
        assert _sentinel_numbers(item["text_enc"], tokenizer) == list(range(7))
        assert _sentinel_numbers(item["labels"], tokenizer) == list(range(7))
        assert item["labels"][0] == tokenizer.sentinel_id(0)
        assert not bool(torch.isin(item["text_dec"][0:1], torch.tensor(tokenizer.sentinel_ids)))


def test_noise_density_and_span_lengths_over_many_samples(dataset, tokenizer):
    sentinels = torch.tensor(tokenizer.sentinel_ids)
    masked, spans = 0, []
    for index in range(2000):
        labels = dataset[index]["labels"][: dataset.lengths.target_length - 1]  # without EOS
        is_sentinel = torch.isin(labels, sentinels)
        masked += int((~is_sentinel).sum())
        starts = torch.nonzero(is_sentinel).flatten().tolist() + [labels.numel()]
        spans += [end - start - 1 for start, end in itertools.pairwise(starts)]
    density = masked / (2000 * dataset.lengths.raw_length)
    assert abs(density - 0.15) < 0.5 / dataset.lengths.raw_length  # round(141 * 0.15) = 21
    assert np.mean(spans) == pytest.approx(3.0, abs=0.05)
    assert min(spans) == 1 and max(spans) >= 8  # random lengths, not a fixed 3


def test_items_are_a_pure_function_of_index_and_seed(corpus, tokenizer, dataset, tmp_path):
    rebuilt, _, _ = _build(corpus, tokenizer, (2000, 0, 0), cache_dir=str(tmp_path))
    copy = pickle.loads(pickle.dumps(dataset))
    for index in [1999, 0, 555, 0, 1999]:  # any order, any number of times
        expected = dataset[index]
        for other in (rebuilt, copy):
            assert all(torch.equal(other[index][key], expected[key]) for key in KEYS)
    # Another seed over the very same windows corrupts them differently.
    reseeded = _over_windows(dataset.windows, tokenizer, seed=4321)
    differing = sum(
        not torch.equal(reseeded[index]["text_enc"], dataset[index]["text_enc"])
        for index in range(50)
    )
    assert differing == 50


def test_batches_collate(dataset):
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert {key: (value.dtype, tuple(value.shape)) for key, value in batch.items()} == {
        key: (dtype, (4, length)) for key, (dtype, length) in KEYS.items()
    }


def test_splits_and_blending(tmp_path, tokenizer):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    _write_corpus(first, tokenizer, 60, seed=4)
    _write_corpus(second, tokenizer, 40, seed=5)
    train, valid, test = _build([0.75, first, 0.25, second], tokenizer, (200, 40, 0), "80,20,0")
    assert test is None
    assert isinstance(train, BlendedDataset) and isinstance(valid, BlendedDataset)
    assert (len(train), len(valid)) == (200, 40)
    assert all(isinstance(part, T5Dataset) for part in train.datasets)
    assert np.bincount(train.dataset_index).tolist() == [150, 50]
    part = train.datasets[1]
    for index in range(len(train)):
        item = train[index]
        source = train.datasets[int(train.dataset_index[index])]
        window = source.window(int(train.dataset_sample_index[index]))
        restored = _restore(item, tokenizer)
        np.testing.assert_array_equal(restored, window)
    assert part.windows.indexed_dataset.path_prefix == second


def test_sentencepiece_tokenizer_round_trips_text(tmp_path, sentencepiece_model):
    tokenizer = build_tokenizer("sentencepiece", sentencepiece_model, num_sentinel_tokens=20)
    assert tokenizer.pad_id == 3
    prefix = str(tmp_path / "spm")
    _write_corpus(prefix, tokenizer, 50, seed=6)
    train, _, _ = _build(prefix, tokenizer, (40, 0, 0), seq_length=64, seq_length_dec=16)
    for index in range(len(train)):
        item = train[index]
        assert item["text_dec"][0] == 3
        restored = _restore(item, tokenizer)
        assert tokenizer.decode(restored.tolist()) == tokenizer.decode(train.window(index).tolist())
        assert "<extra_id_0>" in tokenizer.decode(item["text_enc"][item["enc_mask"]].tolist())


def test_an_encoder_length_that_cannot_be_filled_leaves_one_pad(corpus, tokenizer):
    # Half the tokens masked one at a time: 99 raw tokens make 99 encoder tokens, 100 make 101.
    options = {"masked_lm_prob": 0.5, "mean_ngram_size": 1, "seq_length": 100}
    train, _, _ = _build(corpus, tokenizer, (20, 0, 0), seq_length_dec=120, **options)
    assert (train.lengths.raw_length, train.lengths.encoder_length) == (99, 99)
    item = train[0]
    assert item["enc_mask"].sum() == 99 and item["text_enc"][99] == tokenizer.pad_id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seq_length_dec": 28}, r"data\.seq_length_dec=28 is too short.*>= 29"),
        ({"masked_lm_prob": 0.0}, r"data\.masked_lm_prob must be in \(0, 1\), got 0\.0"),
        ({"masked_lm_prob": 1.0}, r"data\.masked_lm_prob"),
        ({"masked_lm_prob": 1.2}, r"data\.masked_lm_prob"),
        ({"mean_ngram_size": 0.5}, r"data\.mean_ngram_size must be >= 1, got 0\.5"),
        ({"mean_ngram_size": 0}, r"data\.mean_ngram_size"),
        ({"seq_length": 2}, r"model\.seq_length=2 is too short"),
    ],
)
def test_bad_settings_fail_before_any_file_is_read(tokenizer, tmp_path, options, message):
    missing = str(tmp_path / "no_such_dataset")  # reading it would be a FileNotFoundError
    with pytest.raises(ValueError, match=message):
        _build(missing, tokenizer, **options)


@pytest.mark.parametrize("num_sentinel_tokens", [0, 6])
def test_too_few_sentinels_names_the_key_and_the_need(tmp_path, num_sentinel_tokens):
    tokenizer = build_tokenizer("byte", num_sentinel_tokens=num_sentinel_tokens)
    message = (
        rf"tokenizer\.num_sentinel_tokens={num_sentinel_tokens} is too few.*"
        r"tokenizer\.num_sentinel_tokens >= 7"
    )
    with pytest.raises(ValueError, match=message):
        _build(str(tmp_path / "unread"), tokenizer)


def test_a_tokenizer_without_pad_is_refused(tmp_path):
    tokenizer = ByteTokenizer(num_sentinel_tokens=100)
    tokenizer.pad_id = None  # as a sentencepiece model trained without a pad piece
    with pytest.raises(ValueError, match="no pad token"):
        _build(str(tmp_path / "unread"), tokenizer)


def test_windows_of_the_wrong_length_are_refused(corpus, tokenizer, tmp_path):
    windows = GPTDataset(
        IndexedDataset(corpus),
        None,
        SEQ_LENGTH,  # 129-token windows, not the 141 that corruption into 128 needs
        10,
        1,
        eod_id=tokenizer.eod_id,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        cache_dir=str(tmp_path),
    )
    with pytest.raises(ValueError, match=r"the windows hold 129 tokens but .* needs 141"):
        _over_windows(windows, tokenizer, seed=1)
