"""Tiny models generated from config, with random weights, laid out exactly like the
real model directories the local providers load (nothing is downloaded, here or in CI).

Their outputs are garbage, but the loading path is the real one: funasr's ``AutoModel``
reads the Paraformer directory the way it reads a ModelScope snapshot, and transformers
reads the translator directory the way it reads a Hub snapshot. Each generator returns
the directory it wrote; the same ``seed`` gives the same weights.

- :func:`make_tiny_funasr_paraformer`: ``config.yaml`` + ``model.pt`` (a plain state_dict)
  + ``tokens.json`` + ``am.mvn`` (reference/stack.md §2).
- :func:`make_tiny_qwen2_translator`: a 2-layer Qwen2 causal LM and a byte-level BPE
  tokenizer with a ChatML chat template, trained offline (reference/stack.md §3).
- :func:`make_tiny_marian`: a 1-layer MarianMT model and its SentencePiece tokenizer
  (``source.spm``, ``target.spm``, ``vocab.json``) trained offline.
"""

from __future__ import annotations

import json
from pathlib import Path

# Text the tokenizers are trained on: both scripts, so Chinese and English round-trip.
TRAINING_TEXT = [
    "今天天气很好，我们去公园散步吧。",
    "我想喝一杯热茶。",
    "这个问题很难回答。",
    "北京是中国的首都。",
    "请把窗户打开。",
    "The weather is very nice today, let's take a walk in the park.",
    "I would like a cup of hot tea.",
    "This question is hard to answer.",
    "Beijing is the capital of China.",
    "Please open the window.",
    "Translate the following Chinese text into English. Reply with the translation only.",
]

# Paraformer's token conventions: blank 0, sos 1, eos 2, unk last.
PARAFORMER_TOKENS = ["<blank>", "<s>", "</s>", *"今天气很好我们去公园散步吧想喝一杯热茶这个问题难回答北京是中国的首都请把窗户打开", "<unk>"]

FEATURE_DIM = 80 * 7  # 80 fbank bins stacked by LFR m=7


def paraformer_config(vocab_size: int) -> dict:
    """A Paraformer config.yaml in the layout of the released paraformer-zh, shrunk.

    ``frontend_conf`` and ``tokenizer_conf`` must be present: funasr writes the cmvn
    file and token list paths into them when it loads the directory.
    """
    return {
        "model": "Paraformer",
        "model_conf": {"ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True, "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2,
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
            "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
            "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm",
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": 2, "linear_units": 64, "num_blocks": 1, "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1, "src_attention_dropout_rate": 0.1,
            "att_layer_num": 1, "kernel_size": 11, "sanm_shfit": 0,
        },
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": 32, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
        "frontend": "WavFrontend",
        # dither 0: the features (and so the garbage text) are deterministic
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "dither": 0.0},
        "specaug": None,
        "normalize": None,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
        "input_size": FEATURE_DIM,
        "vocab_size": vocab_size,
    }


def write_identity_cmvn(path: Path, dim: int = FEATURE_DIM) -> None:
    """A Kaldi-nnet am.mvn (shift 0, scale 1), in the layout funasr's load_cmvn parses."""
    zeros = " ".join("0" for _ in range(dim))
    ones = " ".join("1" for _ in range(dim))
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {zeros} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {ones} ]\n"
        "</Nnet>\n"
    )


def make_tiny_funasr_paraformer(directory: Path, seed: int = 0) -> Path:
    """Write a tiny random Paraformer that ``funasr.AutoModel(model=directory)`` loads offline."""
    import torch
    import yaml
    from funasr.register import tables

    # importing a model package registers its classes in funasr's tables
    import funasr.models.paraformer.model  # noqa: F401

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = paraformer_config(len(PARAFORMER_TOKENS))
    (directory / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    (directory / "tokens.json").write_text(json.dumps(PARAFORMER_TOKENS, ensure_ascii=False))
    write_identity_cmvn(directory / "am.mvn")

    torch.manual_seed(seed)
    model_class = tables.model_classes.get(config["model"])
    # funasr builds the model from the whole merged config, as AutoModel does
    model = model_class(**{k: v for k, v in config.items() if k not in ("model", "frontend", "tokenizer", "frontend_conf", "tokenizer_conf")}, **config["model_conf"])
    torch.save(model.state_dict(), directory / "model.pt")
    return directory


def _train_byte_level_bpe(vocab_size: int, special_tokens: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    return tokenizer


CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_qwen2_translator(directory: Path, seed: int = 0) -> Path:
    """A 2-layer Qwen2 causal LM with a ChatML tokenizer, saved with save_pretrained."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = _train_byte_level_bpe(1000, special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=special[1:])
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(directory)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


def make_tiny_marian(directory: Path, seed: int = 0) -> Path:
    """A 1-layer MarianMT model and its SentencePiece tokenizer, saved with save_pretrained."""
    import io

    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    work = directory / "_spm"
    work.mkdir(exist_ok=True)
    model_bytes = io.BytesIO()
    # one unigram model serves both sides (Marian's opus-mt models ship two files)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT), model_writer=model_bytes, vocab_size=120,
        character_coverage=1.0, model_type="unigram", pad_id=-1, bos_id=-1, eos_id=1, unk_id=2,
        hard_vocab_limit=False, minloglevel=2,  # its INFO log is pages long
    )
    for name in ("source.spm", "target.spm"):
        (work / name).write_bytes(model_bytes.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model_bytes.getvalue())
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for piece_id in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(piece_id), len(vocab))
    (work / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = MarianTokenizer(
        source_spm=str(work / "source.spm"), target_spm=str(work / "target.spm"), vocab=str(work / "vocab.json"),
        source_lang="zh", target_lang="en",
    )
    tokenizer.save_pretrained(directory)
    for name in ("source.spm", "target.spm", "vocab.json"):
        (work / name).unlink()
    work.rmdir()

    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1,
    )
    MarianMTModel(config).save_pretrained(directory)
    return directory
