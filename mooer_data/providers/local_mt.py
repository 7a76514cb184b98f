"""The "local" MT provider: a transformers model directory on this machine, offline.

Option ``model_dir`` (``--set local.model_dir=DIR`` or ``MOOER_LOCAL_MT_MODEL_DIR``)
names a directory written by ``save_pretrained``:

- a Marian model (``model_type: marian``, e.g. an opus-mt-zh-en snapshot): loaded with
  MarianMTModel + MarianTokenizer; it translates in the one direction it was trained for;
- a causal instruct LLM (any ``...ForCausalLM`` with a chat template, e.g. a Qwen2
  Instruct snapshot): prompted to translate, one chat turn per text, decoded greedily.

The model is loaded once per provider instance (lazily, thread-safe) and runs in a
worker thread. ``translate_raw`` returns a JSON list of strings; ``parse`` checks it
holds exactly one translation per input text.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx

from .base import MtProvider, ProviderConfig
from .errors import ItemFatal, MalformedResponse, NotConfigured
from .types import Capabilities

MODEL_DIR_ENV = ("MOOER_LOCAL_MT_MODEL_DIR",)
LANGUAGE_NAMES = {"zh": "Chinese", "en": "English", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German", "es": "Spanish"}
PROMPT = "Translate the following {source} text into {target}. Reply with the translation only.\n\n{text}"


class _MarianTranslator:
    def __init__(self, directory: Path):
        from transformers import MarianMTModel, MarianTokenizer

        self.tokenizer = MarianTokenizer.from_pretrained(str(directory))
        self.model = MarianMTModel.from_pretrained(str(directory)).eval()

    def translate(self, texts: list[str], source: str, target: str, max_new_tokens: int) -> list[str]:
        import torch

        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            output = self.model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]


class _ChatTranslator:
    def __init__(self, directory: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        if not getattr(self.tokenizer, "chat_template", None):
            raise NotConfigured("local", f"model_dir {directory}: expected an instruct model whose tokenizer has a chat template, found none")
        # a decoder-only model continues the prompt, so prompts are padded on the left
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(str(directory)).eval()

    def prompt(self, text: str, source: str, target: str) -> str:
        content = PROMPT.format(source=LANGUAGE_NAMES.get(source, source), target=LANGUAGE_NAMES.get(target, target), text=text)
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)

    def translate(self, texts: list[str], source: str, target: str, max_new_tokens: int) -> list[str]:
        import torch

        prompts = [self.prompt(text, source, target) for text in texts]
        # the chat template already wrote the special tokens
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        continuations = output[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(continuations, skip_special_tokens=True)]


def model_family(directory: Path) -> str:
    """"marian" or "causal", from the directory's config.json."""
    config_file = directory / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise NotConfigured("local", f"model_dir {directory}: expected a transformers config.json, found {type(error).__name__}: {error}") from None
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type == "marian":
        return "marian"
    if any(str(name).endswith("ForCausalLM") for name in architectures):
        return "causal"
    raise NotConfigured(
        "local",
        f"model_dir {directory}: expected a Marian model or a causal instruct LLM (...ForCausalLM), "
        f"found model_type {model_type!r}, architectures {architectures}",
    )


class LocalTranslation(MtProvider):
    name = "local"
    is_local = True
    capabilities = Capabilities(
        kind="mt",
        languages=("zh", "en"),
        sync=True,
        delivery=(),
        max_texts=8,  # one generate() batch
        max_chars=4000,
        rate=0,  # no service quota
        concurrency=1,  # the model uses every core; batches run one after another
        poll_interval=0.0,
        price_per_million_chars=0.0,  # runs here: no list price
    )

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self._translator = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def model_dir(self) -> Path:
        value = self.config.option("model_dir", MODEL_DIR_ENV)
        if not value:
            raise NotConfigured(
                self.name,
                "needs a model directory: --set local.model_dir=DIR (or MOOER_LOCAL_MT_MODEL_DIR), "
                "a Marian (opus-mt) or instruct LLM directory written by save_pretrained",
            )
        directory = Path(str(value)).expanduser()
        if not directory.is_dir():
            raise NotConfigured(self.name, f"model_dir: expected a directory, found nothing at {directory}")
        return directory

    def check_configured(self) -> None:
        model_family(self.model_dir())

    def translator(self):
        if self._translator is None:
            with self._load_lock:
                if self._translator is None:
                    directory = self.model_dir()
                    family = model_family(directory)
                    try:
                        self._translator = _MarianTranslator(directory) if family == "marian" else _ChatTranslator(directory)
                    except NotConfigured:
                        raise
                    except ImportError as error:
                        raise NotConfigured(self.name, f"transformers is not installed ({error}): pip install 'mooer[local]'") from None
                    except Exception as error:  # a broken directory is a configuration problem
                        raise NotConfigured(self.name, f"could not load {family} model_dir {directory}: {type(error).__name__}: {error}") from None
        return self._translator

    def translate_blocking(self, texts: list[str], source: str, target: str) -> list[str]:
        translator = self.translator()
        max_new_tokens = int(self.config.options.get("max_new_tokens", 256))
        try:
            with self._run_lock:
                return translator.translate(list(texts), source, target, max_new_tokens)
        except Exception as error:  # the same input would fail the same way again
            raise ItemFatal(self.name, f"local translation failed: {type(error).__name__}: {error}", code="engine-error") from None

    async def translate_raw(self, client: httpx.AsyncClient, texts: list[str], source: str, target: str) -> str:
        translations = await asyncio.to_thread(self.translate_blocking, texts, source, target)
        return json.dumps(translations, ensure_ascii=False)

    def parse(self, raw: str, count: int) -> list[str]:
        try:
            translations = json.loads(raw)
        except ValueError as error:
            raise MalformedResponse(self.name, f"expected a JSON list of strings, found unparsable text ({error})") from None
        if not isinstance(translations, list) or not all(isinstance(t, str) for t in translations):
            raise MalformedResponse(self.name, f"expected a JSON list of strings, found {type(translations).__name__}")
        if len(translations) != count:
            raise MalformedResponse(self.name, f"expected {count} translations, found {len(translations)}")
        return translations
