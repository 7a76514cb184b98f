"""The "local" ASR provider: engines that run on this machine, fully offline.

It reads ``audio.path`` itself (a cut through ``audio.start``/``audio.duration``) and
ignores the stager. Engines, chosen by the option ``engine`` (``--set local.engine=...``
or ``MOOER_LOCAL_ASR_ENGINE``):

- ``pocketsphinx`` (the default): the en-us model inside the pocketsphinx wheel. Its
  open-vocabulary accuracy is poor (reference/stack.md §8); with a JSGF grammar (option
  ``jsgf``) it is a reliable "the audio says one of these sentences" check. Mandarin
  needs a model of your own: options ``hmm``, ``dict`` and ``lm`` (or ``jsgf``).
- ``funasr``: a Paraformer-style model directory (option ``model_dir`` or
  ``MOOER_LOCAL_ASR_MODEL_DIR``), loaded once per provider instance through
  ``funasr.AutoModel`` with hub access disabled.
- ``mooer``: a MooER model decoded through ``mooer_model.infer``: option ``model_dir``
  (a MooER release root or task directory, or a ``mooer-train export`` output; or
  ``MOOER_LOCAL_ASR_MODEL_DIR``), ``llm_dir`` (Qwen2-7B-Instruct, needed by a MooER
  release; or ``MOOER_LOCAL_ASR_LLM_DIR``), ``task`` (asr, the default; mtl keeps the
  transcript half), ``task_dir``, ``device`` (auto) and ``beams`` (4). Loaded once per
  provider instance; needs the ``[train]`` extra (torch, transformers, peft).

Work runs in a worker thread (``asyncio.to_thread``) so the event loop keeps serving
other providers. Recordings longer than ``vad_above_s`` (30 s) are cut into speech
regions by silero-vad and each region is decoded separately, which gives timestamped
sentences. The raw result is a JSON document kept in ``handle.extra["raw"]``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import queue
import threading
from pathlib import Path

import httpx
import numpy as np

from .base import AsrProvider, ProviderConfig
from .errors import ItemFatal, JobExpired, MalformedResponse, NotConfigured
from .types import AudioItem, Capabilities, JobHandle, JobStatus, Sentence, StagedAudio, Transcript

SAMPLE_RATE = 16000
ENGINES = ("pocketsphinx", "funasr", "mooer")
ENGINE_ENV = ("MOOER_LOCAL_ASR_ENGINE",)
MODEL_DIR_ENV = ("MOOER_LOCAL_ASR_MODEL_DIR",)
LLM_DIR_ENV = ("MOOER_LOCAL_ASR_LLM_DIR",)
# pocketsphinx consumes audio in small buffers: feeding the whole utterance at once
# (full_utt) lost whole sentences on espeak speech that chunked feeding recognises.
POCKETSPHINX_CHUNK_SAMPLES = 2048


# --------------------------------------------------------------------------- audio
def read_audio(audio: AudioItem) -> np.ndarray:
    """Mono float32 16 kHz samples of the item (its cut of the file when ``start`` > 0)."""
    import soundfile as sf

    path = Path(audio.path)
    try:
        with sf.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            first = int(round(audio.start * rate))
            frames = int(round(audio.duration * rate)) if audio.duration and audio.duration > 0 else -1
            if first:
                handle.seek(min(first, handle.frames))
            samples = handle.read(frames, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, ValueError) as error:  # soundfile raises LibsndfileError (a RuntimeError)
        raise ItemFatal("local", f"cannot read audio {path.name}: {error}", code="audio-unreadable") from None
    return to_mono_16k(samples, rate)


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Downmix by averaging channels; resample by linear interpolation after a box
    filter as wide as the decimation step (simple, and enough for speech decoding)."""
    samples = np.asarray(samples, dtype=np.float32)
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate == SAMPLE_RATE or not len(mono):
        return np.ascontiguousarray(mono, dtype=np.float32)
    if rate > SAMPLE_RATE:
        width = int(round(rate / SAMPLE_RATE))
        if width > 1:
            mono = np.convolve(mono, np.full(width, 1.0 / width, dtype=np.float32), mode="same")
    count = int(round(len(mono) * SAMPLE_RATE / rate))
    source_times = np.arange(len(mono), dtype=np.float64) / rate
    target_times = np.arange(count, dtype=np.float64) / SAMPLE_RATE
    return np.interp(target_times, source_times, mono).astype(np.float32)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)


# --------------------------------------------------------------------------- engines
class PocketsphinxEngine:
    """A pool of pocketsphinx decoders (a decoder is not thread-safe; building one takes
    about 0.1 s), one pool per language. The cepstral-mean state is reset before every
    utterance, so a result does not depend on what the decoder heard before (or on which
    decoder of the pool it got)."""

    def __init__(self, options: dict):
        self.options = options
        self._pools: dict[str, queue.SimpleQueue] = {}
        self._initial_cmn: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def mandarin_missing(options: dict) -> list[str]:
        needed = ["hmm", "dict"] + ([] if options.get("jsgf") else ["lm"])
        return [key for key in needed if not options.get(key)]

    def decoder_settings(self, language: str) -> dict:
        settings: dict = {"samprate": SAMPLE_RATE, "loglevel": "FATAL"}
        if language == "zh":
            missing = self.mandarin_missing(self.options)
            if missing:
                raise NotConfigured(
                    "local",
                    "pocketsphinx has no Mandarin model in its wheel; expected options hmm, dict and lm "
                    f"(paths to a zh acoustic model directory, dictionary and language model), missing {', '.join(missing)}: "
                    "--set local.hmm=DIR --set local.dict=FILE --set local.lm=FILE, "
                    "or use --set local.engine=funasr --set local.model_dir=<Paraformer model dir>",
                )
            for key in ("hmm", "dict", "lm"):
                if self.options.get(key):
                    settings[key] = str(self.options[key])
        if self.options.get("jsgf"):
            grammar = Path(str(self.options["jsgf"]))
            if not grammar.is_file():
                raise NotConfigured("local", f"option jsgf: expected a JSGF grammar file, found nothing at {grammar}")
            settings["jsgf"] = str(grammar)
        for key in ("hmm", "dict", "lm"):
            if key in settings and not Path(settings[key]).exists():
                raise NotConfigured("local", f"option {key}: expected a path, found nothing at {settings[key]}")
        return settings

    def _borrow(self, language: str):
        with self._lock:
            pool = self._pools.setdefault(language, queue.SimpleQueue())
        try:
            return pool.get_nowait()
        except queue.Empty:
            pass
        try:
            from pocketsphinx import Decoder
        except ImportError as error:
            raise NotConfigured("local", f"engine pocketsphinx is not installed ({error}): pip install 'mooer[local]'") from None
        settings = self.decoder_settings(language)
        try:
            decoder = Decoder(**settings)
        except (RuntimeError, ValueError) as error:
            files = ", ".join(f"{k}={v}" for k, v in settings.items() if k in ("hmm", "dict", "lm", "jsgf"))
            raise NotConfigured("local", f"pocketsphinx could not load its model ({files or 'bundled en-us'}): {error}") from None
        with self._lock:
            self._initial_cmn.setdefault(language, decoder.get_cmn())
        return decoder

    @staticmethod
    def _feed(decoder, pcm: np.ndarray, search: bool) -> None:
        decoder.start_utt()
        for offset in range(0, len(pcm), POCKETSPHINX_CHUNK_SAMPLES):
            decoder.process_raw(pcm[offset : offset + POCKETSPHINX_CHUNK_SAMPLES].tobytes(), not search, False)
        decoder.end_utt()

    def transcribe(self, samples: np.ndarray, language: str) -> tuple[str, float | None]:
        decoder = self._borrow(language)
        pcm = to_int16(samples)
        try:
            # Pass 1 computes features only (no search) to estimate this utterance's
            # cepstral mean from the model's initial one; pass 2 decodes with it. Open-
            # vocabulary WER on espeak speech: 0.90 from the initial mean, 0.69 this way.
            decoder.set_cmn(self._initial_cmn[language])
            self._feed(decoder, pcm, search=False)
            decoder.set_cmn(decoder.get_cmn())
            self._feed(decoder, pcm, search=True)
            hypothesis = decoder.hyp()
        finally:
            self._pools[language].put(decoder)
        if hypothesis is None:
            return "", None
        # hyp().prob is the lattice posterior of the whole hypothesis, already in [0, 1]
        return hypothesis.hypstr.strip(), float(hypothesis.prob)


class FunasrEngine:
    """funasr.AutoModel on a local model directory, loaded once (lazily, thread-safe)."""

    def __init__(self, options: dict):
        self.options = options
        self._model = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one generate at a time: it uses all of ncpu

    @staticmethod
    def model_dir(options: dict) -> Path:
        value = options.get("model_dir")
        if not value:
            raise NotConfigured(
                "local",
                "engine funasr needs a model directory: --set local.model_dir=DIR (or MOOER_LOCAL_ASR_MODEL_DIR) "
                "holding config.yaml and model.pt, e.g. a Paraformer snapshot",
            )
        directory = Path(str(value)).expanduser()
        missing = [name for name in ("config.yaml", "model.pt") if not (directory / name).is_file()]
        if missing:
            # checked here: given a path that does not exist, funasr would try to download it
            raise NotConfigured("local", f"model_dir {directory}: expected config.yaml and model.pt, missing {', '.join(missing)}")
        return directory

    def model(self):
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    directory = self.model_dir(self.options)
                    try:
                        from funasr import AutoModel
                    except ImportError as error:
                        raise NotConfigured("local", f"engine funasr is not installed ({error}): pip install 'funasr[knf]'") from None
                    try:
                        self._model = AutoModel(
                            model=str(directory),
                            disable_update=True,  # else funasr asks pypi.org for a newer version
                            device="cpu",
                            disable_pbar=True,
                            log_level="ERROR",
                            ncpu=int(self.options.get("ncpu", 1)),  # else it sets torch to 4 threads
                        )
                    except Exception as error:  # a broken directory is a configuration problem, not the item's
                        raise NotConfigured("local", f"funasr could not load model_dir {directory}: {type(error).__name__}: {error}") from None
        return self._model

    def transcribe(self, samples: np.ndarray, language: str) -> tuple[str, float | None]:
        model = self.model()
        with self._run_lock:
            results = model.generate(input=np.ascontiguousarray(samples, dtype=np.float32))
        texts = [str(r.get("text", "")) for r in results or [] if isinstance(r, dict)]
        return " ".join(t.strip() for t in texts if t.strip()), None


class MooerEngine:
    """A MooER model through ``mooer_model.infer``, loaded once (lazily, thread-safe);
    one generate at a time, as it uses every core. Its imports stay inside the methods:
    the data side installs without torch."""

    TASKS = ("asr", "ast", "mtl")
    PACKAGES = ("torch", "transformers", "peft")

    def __init__(self, options: dict):
        self.options = options
        self._model = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @staticmethod
    def parse_options(options: dict) -> dict:
        """The engine's options, checked: raises NotConfigured naming the bad one."""
        model_dir = options.get("model_dir")
        if not model_dir:
            raise NotConfigured(
                "local",
                "engine mooer needs a model directory: --set local.model_dir=DIR (or MOOER_LOCAL_ASR_MODEL_DIR), a MooER "
                "release root or task directory or a `mooer-train export` output, and for a MooER release "
                "--set local.llm_dir=DIR (or MOOER_LOCAL_ASR_LLM_DIR), the Qwen2-7B-Instruct directory",
            )
        llm_dir = options.get("llm_dir") or next((os.environ[name] for name in LLM_DIR_ENV if os.environ.get(name)), None)
        task = str(options.get("task", "asr")).strip().lower()
        if task not in MooerEngine.TASKS:
            raise NotConfigured("local", f"option task: expected one of {', '.join(MooerEngine.TASKS)}, found {task!r}")
        try:
            beams = int(options.get("beams", 4))
        except (TypeError, ValueError):
            beams = 0
        if beams < 1:
            raise NotConfigured("local", f"option beams: expected a positive integer, found {options.get('beams')!r}")
        return {"model_dir": str(model_dir), "llm_dir": str(llm_dir) if llm_dir else None, "task": task, "beams": beams,
                "task_dir": options.get("task_dir") or None, "device": str(options.get("device", "auto"))}

    @staticmethod
    def check(options: dict) -> None:
        """Everything but loading the weights: options, packages, layout, device."""
        settings = MooerEngine.parse_options(options)
        missing = [name for name in MooerEngine.PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise NotConfigured("local", f"engine mooer: expected {', '.join(missing)} installed, found them missing: pip install 'mooer[train]'")
        from mooer_model.device import resolve_device
        from mooer_model.infer import check_model_dir

        try:
            check_model_dir(settings["model_dir"], settings["llm_dir"], settings["task"], settings["task_dir"])
            resolve_device(settings["device"])
        except ValueError as error:  # CheckpointError too
            raise NotConfigured("local", f"engine mooer: {error}") from None

    def model(self):
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self.check(self.options)
                    settings = self.parse_options(self.options)
                    from mooer_model.infer import load_model

                    try:
                        self._model = load_model(settings["model_dir"], settings["llm_dir"], settings["task"], settings["task_dir"],
                                                 settings["device"])
                    except ValueError as error:  # a checkpoint that does not load is a configuration problem
                        raise NotConfigured("local", f"engine mooer could not load {settings['model_dir']}: {error}") from None
        return self._model

    def transcribe(self, samples: np.ndarray, language: str) -> tuple[str, float | None]:
        from mooer_model.infer import MIN_SAMPLES, transcribe_waveforms
        from mooer_model.model import GenerationSettings
        from mooer_model.prompts import split_mtl_output

        if len(samples) < MIN_SAMPLES:  # too short for one audio embedding: nothing was said
            return "", None
        settings = self.parse_options(self.options)
        model = self.model()
        with self._run_lock:
            [output] = transcribe_waveforms(model, [samples], settings["task"], GenerationSettings(num_beams=settings["beams"]))
        if settings["task"] == "mtl":
            output = split_mtl_output(output)[0]
        return output.strip(), None


# --------------------------------------------------------------------------- provider
class LocalAsr(AsrProvider):
    name = "local"
    is_local = True
    capabilities = Capabilities(
        kind="asr",
        languages=("zh", "en"),
        sync=True,
        delivery=("local",),  # reads audio.path itself
        rate=0,  # no service quota
        concurrency=2,  # CPU-bound; pocketsphinx decoders run side by side, funasr one at a time
        poll_interval=0.0,
        price_per_hour=0.0,  # runs here: no list price
    )

    def __init__(self, config: ProviderConfig):
        super().__init__(config)
        self._engine = None
        self._engine_lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------
    def resolved_options(self) -> dict:
        options = dict(self.config.options)
        options["engine"] = str(self.config.option("engine", ENGINE_ENV, "pocketsphinx")).strip().lower()
        model_dir = self.config.option("model_dir", MODEL_DIR_ENV)
        if model_dir:
            options["model_dir"] = model_dir
        return options

    def check_configured(self) -> None:
        """Raise NotConfigured naming what is missing; loads no model."""
        options = self.resolved_options()
        engine = options["engine"]
        if engine not in ENGINES:
            raise NotConfigured(self.name, f"option engine: expected one of {', '.join(ENGINES)}, found {engine!r}")
        if engine == "mooer":
            MooerEngine.check(options)
            return
        package = {"pocketsphinx": "pocketsphinx", "funasr": "funasr"}[engine]
        if importlib.util.find_spec(package) is None:
            raise NotConfigured(self.name, f"engine {engine}: expected the {package} package, found it not installed: pip install 'mooer[local]'")
        if engine == "funasr":
            FunasrEngine.model_dir(options)

    def engine(self):
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self.check_configured()
                    options = self.resolved_options()
                    engines = {"pocketsphinx": PocketsphinxEngine, "funasr": FunasrEngine, "mooer": MooerEngine}
                    self._engine = engines[options["engine"]](options)
        return self._engine

    # -- the work --------------------------------------------------------------------
    def transcribe(self, audio: AudioItem) -> dict:
        """Blocking: decode the item, whole or region by region; the raw result document."""
        engine = self.engine()
        if isinstance(engine, PocketsphinxEngine):
            engine.decoder_settings(audio.language)  # NotConfigured before reading any audio
        samples = read_audio(audio)
        duration = len(samples) / SAMPLE_RATE
        options = self.resolved_options()
        vad_above_s = float(options.get("vad_above_s", 30.0))
        if duration > vad_above_s:
            from .vad import speech_regions

            try:
                regions = speech_regions(
                    samples,
                    min_silence_s=float(options.get("min_silence_s", 0.5)),
                    max_region_s=float(options.get("max_region_s", 30.0)),
                )
            except ImportError as error:
                raise NotConfigured(self.name, f"items over {vad_above_s:g} s are cut by silero-vad, which is not installed ({error}): pip install silero-vad") from None
        else:
            regions = [(0.0, duration)] if len(samples) else []
        sentences = []
        for start, end in regions:
            piece = samples[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
            try:
                text, confidence = engine.transcribe(piece, audio.language)
            except (NotConfigured, ItemFatal):
                raise
            except Exception as error:  # an engine crash on this input: retrying the same decode cannot help
                raise ItemFatal(self.name, f"{options['engine']} failed on {audio.key}: {type(error).__name__}: {error}", code="engine-error") from None
            sentences.append({"start": round(start, 3), "end": round(end, 3), "text": text, "confidence": confidence})
        return {
            "engine": options["engine"],
            "language": audio.language,
            "duration": round(duration, 3),
            "vad": duration > vad_above_s,
            "sentences": sentences,
        }

    async def submit(self, client: httpx.AsyncClient, audio: AudioItem, staged: StagedAudio) -> JobHandle:
        result = await asyncio.to_thread(self.transcribe, audio)
        raw = json.dumps(result, ensure_ascii=False)
        return JobHandle(self.name, f"local-{result['engine']}-{audio.key}", audio.key, {"raw": raw})

    async def poll(self, client: httpx.AsyncClient, handle: JobHandle) -> JobStatus:
        return JobStatus.SUCCEEDED

    async def fetch(self, client: httpx.AsyncClient, handle: JobHandle) -> str:
        raw = handle.extra.get("raw")
        if not isinstance(raw, str):
            raise JobExpired(self.name, f"handle {handle.job_id} carries no local result; decoding again")
        return raw

    def parse(self, raw: str, audio: AudioItem) -> Transcript:
        try:
            data = json.loads(raw)
            sentences = tuple(
                Sentence(float(s["start"]), float(s["end"]), str(s["text"]).strip(), None if s.get("confidence") is None else float(s["confidence"]))
                for s in data["sentences"]
            )
        except (ValueError, TypeError, KeyError) as error:
            raise MalformedResponse(self.name, f"expected a local result document with sentences[start, end, text], found {type(error).__name__}: {error}") from None
        spoken = tuple(s for s in sentences if s.text)
        scored = [s.confidence for s in spoken if s.confidence is not None]
        confidence = sum(scored) / len(scored) if scored and len(scored) == len(spoken) else None
        return Transcript(spoken, data.get("language") or audio.language, confidence, "provider" if confidence is not None else "none")
