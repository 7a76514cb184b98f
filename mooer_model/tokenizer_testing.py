"""A tiny Qwen-shaped tokenizer, trained offline in milliseconds, for tests and the demo.

It is a byte-level BPE (so any UTF-8 text, Chinese included, round-trips) with Qwen2's
three special tokens and its conventions: ``pad = <|endoftext|>``, ``eos = <|im_end|>``
(Qwen2-Instruct's end of turn, which MooER appends after every target), and a ChatML
chat template. Nothing is downloaded (reference/stack.md §3). The vocabulary is small,
so ids differ from Qwen2's; the layout a loader builds with it is the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mooer_model.prompts import INSTRUCTIONS, PROMPT_TEMPLATES

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
PAD_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Both scripts, in the forms the loader feeds: upper-cased ASR English, Chinese without
# spaces, English translations, and the prompts themselves.
TRAINING_TEXT = (
    "今天天气很好我们去公园散步吧",
    "我想喝一杯热茶",
    "这个问题很难回答",
    "北京是中国的首都",
    "请把窗户打开",
    "播放一首LET IT GO",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "I WOULD LIKE A CUP OF HOT TEA",
    "The weather is very nice today, let's take a walk in the park.",
    "I would like a cup of hot tea.",
    "This question is hard to answer.",
    "Beijing is the capital of China.",
    "Please open the window.",
    "0123456789",
    *(PROMPT_TEMPLATES["qwen"].format(instruction) for instruction in INSTRUCTIONS.values()),
)


def build_test_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 1000):
    """A ``PreTrainedTokenizerFast`` trained on ``texts`` (default: :data:`TRAINING_TEXT`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(list(texts or TRAINING_TEXT), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def save_test_tokenizer(directory: str | Path, texts: Iterable[str] | None = None) -> Path:
    """Write the tokenizer with ``save_pretrained`` (``AutoTokenizer.from_pretrained`` reads it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_test_tokenizer(texts).save_pretrained(directory)
    return directory
