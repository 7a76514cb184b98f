"""Miniature corpora in their exact native on-disk layouts, with real speech.

Every ``make_*`` function writes one small corpus tree (AISHELL-2, LibriSpeech,
WenetSpeech, the six multi_cn parts, an in-house folder, a corrupt AISHELL-2)
whose directory names, file names, transcript formats and quirks follow
``reference/corpora.md`` §1–§5, and returns an :class:`ExpectedCorpus`: the
exact segments, recordings and rejects a correct ``mooer-data prepare`` must
produce for it.

The audio is real speech synthesised with espeak-ng (Mandarin through pypinyin
TONE3 syllables and the ``cmn-latn-pinyin`` voice, never ``-v cmn`` on
characters) and cached on disk by :class:`SpeechSynth`, so a warm run only
writes files.  Output is deterministic: the same inputs give the same bytes
(Ogg serial numbers, tar/gzip headers and timestamps are pinned).

The normalised ``text`` of every expected segment is a hand-written golden;
nothing here calls a normaliser.

Layout produced by :func:`make_all` (``root`` = its argument)::

    aishell2/AISHELL-2/iOS/{data,dev,test}/...                 corpus aishell2
    aishell2_eval/AISHELL-2/iOS/data + AISHELL-DEV-TEST-SET/IOS/{dev,test}
    librispeech/LibriSpeech/...
    wenetspeech/WenetSpeech/{WenetSpeech.json,audio/...}
    multi_cn/{aidatatang_200zh,data_aishell,magicdata,primewords_md_2018_set1,
              ST-CMDS-20170001_1-OS,data_thchs30}/
    aidatatang_200zh/aidatatang_200zh/  aishell/data_aishell/  magicdata/magicdata/
    primewords/primewords_md_2018_set1/  stcmds/ST-CMDS-20170001_1-OS/
    thchs30/data_thchs30/
    inhouse/inhouse/
    corrupt/AISHELL-2/                                          (corpus aishell2)

Each ``make_<corpus>(root, synth)`` creates the corpus's native top directory
under ``root`` (replacing an earlier copy of that directory) and returns the
expectations with ``ExpectedCorpus.root`` set to the CORPUS_DIR to pass to
``mooer-data prepare`` (for multi_cn: ``root`` itself, which holds the parts).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import soundfile as sf

__all__ = [
    "SAMPLE_RATE",
    "SPEED",
    "REJECT_CATEGORIES",
    "ExpectedSegment",
    "ExpectedCorpus",
    "SpeechSynth",
    "default_cache_dir",
    "inhouse_recording_id",
    "make_aishell2",
    "make_aishell2_eval_variant",
    "make_librispeech",
    "make_wenetspeech",
    "make_multi_cn",
    "make_aidatatang",
    "make_aishell",
    "make_magicdata",
    "make_primewords",
    "make_stcmds",
    "make_thchs30",
    "make_inhouse",
    "make_corrupt_aishell2",
    "make_all",
]

SAMPLE_RATE = 16000
#: espeak-ng words per minute used for every fixture utterance.
SPEED = 170
#: Bump when the synthesis pipeline changes, so old cache entries are not reused.
SYNTH_VERSION = "1"

REJECT_CATEGORIES = frozenset(
    {
        "missing-audio",
        "no-transcript",
        "empty-file",
        "truncated",
        "not-audio",
        "wrong-sample-rate",
        "not-mono",
        "bad-encoding",
        "duplicate-id",
        "empty-text",
        "known-bad",
        "bad-segment",
        "not-extracted",
    }
)

# A fixed timestamp (2017-07-14) for archive members, so archives are byte-stable.
_FIXED_MTIME = 1500000000


# --------------------------------------------------------------------------- #
# Expected results
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ExpectedSegment:
    id: str
    recording_id: str
    speaker: str | None
    split: str
    subset: str | None
    language: str
    text: str  # normalised text (hand-written golden)
    text_raw: str  # transcript exactly as in the corpus file, minus line ending / BOM
    duration: float  # seconds
    start: float = 0.0


@dataclass
class ExpectedCorpus:
    corpus: str  # name passed to `mooer-data prepare`
    root: Path  # CORPUS_DIR to pass
    segments: dict[str, ExpectedSegment] = field(default_factory=dict)
    recordings: dict[str, float] = field(default_factory=dict)  # recording id -> seconds
    rejects: dict[str, str] = field(default_factory=dict)  # item -> reason category
    # Reject rows whose item is also a kept segment id (a later/earlier duplicate
    # of a kept id): item -> number of `duplicate-id` reject rows.
    duplicate_rejects: dict[str, int] = field(default_factory=dict)
    # recording id -> absolute path of the audio file written for it.
    sources: dict[str, Path] = field(default_factory=dict)
    # AISHELL-2 eval-set root when the eval set lives outside `root`.
    eval_root: Path | None = None
    # in-house: recording id -> [(start s, end s, text, language)] actually spoken in it,
    # what an emulated ASR service answers (see oracle_for()).
    spoken: dict[str, list[tuple[float, float, str, str]]] = field(default_factory=dict)

    @property
    def n_reject_rows(self) -> int:
        """Total reject rows a preparer reports (including duplicate rows)."""
        return len(self.rejects) + sum(self.duplicate_rejects.values())

    def merge(self, other: "ExpectedCorpus", reject_prefix: str = "") -> None:
        """Add ``other``'s expectations (used to build multi_cn from its parts).

        Path-keyed rejects (``not-extracted``) are relative to the CORPUS_DIR,
        so ``reject_prefix`` (e.g. ``"aidatatang_200zh/"``) is prepended to them.
        """
        for k in other.segments.keys() & self.segments.keys():
            raise ValueError(f"segment id collision while merging: {k}")
        self.segments.update(other.segments)
        self.recordings.update(other.recordings)
        self.sources.update(other.sources)
        for item, why in other.rejects.items():
            key = reject_prefix + item if why == "not-extracted" else item
            self.rejects[key] = why
        for item, n in other.duplicate_rejects.items():
            self.duplicate_rejects[item] = self.duplicate_rejects.get(item, 0) + n


# --------------------------------------------------------------------------- #
# Speech synthesis (espeak-ng + sox), cached on disk
# --------------------------------------------------------------------------- #
_PINYIN_SYLLABLE = re.compile(r"^[a-zü]+[1-5]$")


def default_cache_dir() -> Path:
    """``$MOOER_SYNTH_CACHE`` or ``~/.cache/mooer/synth``."""
    env = os.environ.get("MOOER_SYNTH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mooer" / "synth"


class Synth(Protocol):
    def speech(
        self, text: str, language: str, speed: int = 160, voice: str | None = None
    ) -> np.ndarray: ...


class SpeechSynth:
    """Real speech from espeak-ng, resampled to 16 kHz mono int16 by sox.

    English: ``espeak-ng -v en-us``.  Mandarin: the text is converted to
    pypinyin TONE3 syllables (neutral tone as 5) and spoken by the
    ``cmn-latn-pinyin`` voice; anything that is not a Mandarin syllable (Latin
    words, punctuation, tags) is left out.  Results are cached in ``cache_dir``
    under a hash of the arguments; writes are atomic, so several processes may
    share one cache.
    """

    def __init__(self, cache_dir: Path, jobs: int | None = None):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.jobs = jobs or max(2, min(8, 2 * (os.cpu_count() or 1)))
        self._lock = threading.Lock()
        #: espeak-ng argv of every synthesis actually run (cache misses).
        self.commands: list[list[str]] = []

    # -- helpers ----------------------------------------------------------- #
    @staticmethod
    def pinyin(text: str) -> str:
        """Mandarin syllables of ``text`` in TONE3 form, space separated."""
        from pypinyin import Style, lazy_pinyin

        syl = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
        return " ".join(s for s in syl if _PINYIN_SYLLABLE.match(s))

    def command(
        self, text: str, language: str, speed: int = 160, voice: str | None = None
    ) -> tuple[list[str], str]:
        """The espeak-ng argv and the text fed to it on stdin."""
        if language == "zh":
            spoken = self.pinyin(text)
            if not spoken:
                raise ValueError(f"no Mandarin syllables to speak in {text!r}")
            voice = voice or "cmn-latn-pinyin"
        elif language == "en":
            spoken = " ".join(text.split())
            if not spoken:
                raise ValueError("empty English text")
            voice = voice or "en-us"
        else:
            raise ValueError(f"unsupported language {language!r} (use 'zh' or 'en')")
        argv = ["espeak-ng", "-v", voice, "-s", str(int(speed)), "--stdin", "--stdout"]
        return argv, spoken

    def _key(self, text: str, language: str, speed: int, voice: str | None) -> str:
        blob = json.dumps([SYNTH_VERSION, text, language, int(speed), voice], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.npy"

    def _synthesize(self, text: str, language: str, speed: int, voice: str | None) -> np.ndarray:
        argv, spoken = self.command(text, language, speed, voice)
        with self._lock:
            self.commands.append(argv)
        wav = subprocess.run(
            argv, input=spoken.encode("utf-8"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, check=True,
        ).stdout
        raw = subprocess.run(
            ["sox", "-R", "-D", "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE),
             "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-"],
            input=wav, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
        ).stdout
        audio, _ = sf.read(
            io.BytesIO(raw), samplerate=SAMPLE_RATE, channels=1, format="RAW",
            subtype="PCM_16", endian="LITTLE", dtype="int16",
        )
        audio = np.ascontiguousarray(audio, dtype=np.int16)
        if audio.size < SAMPLE_RATE // 10:
            raise RuntimeError(f"espeak-ng produced almost no audio for {text!r}")
        return audio

    # -- public ------------------------------------------------------------ #
    def speech(
        self, text: str, language: str, speed: int = 160, voice: str | None = None
    ) -> np.ndarray:
        """int16 mono 16 kHz speech for ``text`` (cached)."""
        path = self._path(self._key(text, language, speed, voice))
        if path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                pass  # a damaged entry: synthesise again
        audio = self._synthesize(text, language, speed, voice)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, audio)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return audio

    def prefetch(self, requests: Iterable[tuple[str, str]], speed: int = SPEED) -> None:
        """Synthesise ``(text, language)`` pairs not yet cached, in parallel."""
        todo = []
        for text, lang in dict.fromkeys(requests):
            if not self._path(self._key(text, lang, speed, None)).exists():
                todo.append((text, lang))
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(lambda tl: self.speech(tl[0], tl[1], speed), todo))


def _prefetch(synth, requests: Iterable[tuple[str, str]]) -> None:
    if hasattr(synth, "prefetch"):
        synth.prefetch(list(requests), SPEED)


def _say(synth, text: str, language: str = "zh") -> np.ndarray:
    return synth.speech(text, language, SPEED)


# --------------------------------------------------------------------------- #
# Low-level writers (all deterministic)
# --------------------------------------------------------------------------- #
def _fresh_dir(path: Path) -> Path:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_text(path: Path, text: str, *, bom: bool = False) -> None:
    _write_bytes(path, (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))


def _lines(lines: Iterable[str], eol: str = "\n") -> str:
    return "".join(line + eol for line in lines)


def _encode(audio: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    data = buf.getvalue()
    if fmt == "OGG":
        data = _ogg_pin_serial(data)
    return data


def _write_audio(path: Path, audio: np.ndarray, sr: int = SAMPLE_RATE, fmt: str = "WAV") -> float:
    """Write ``audio`` (int16, [n] or [n, ch]) and return its duration in seconds."""
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "OPUS", "MP3": "MPEG_LAYER_III"}[fmt]
    _write_bytes(path, _encode(audio, sr, fmt, subtype))
    return len(audio) / sr


def _write_m4a(path: Path, audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """AAC in an MP4 ("ipod") container via PyAV."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="ipod", options={"fflags": "+bitexact"}) as cont:
        stream = cont.add_stream("aac", rate=sr, layout="mono")
        stream.codec_context.flags |= getattr(av.codec.context.Flags, "bitexact", 0)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio, dtype=np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = sr
        frame.pts = 0
        for pkt in stream.encode(frame):
            cont.mux(pkt)
        for pkt in stream.encode(None):
            cont.mux(pkt)
    _write_bytes(path, buf.getvalue())
    return len(audio) / sr


# Ogg pages carry a stream serial number that libsndfile draws at random; pin it
# (and fix each page's CRC) so .opus files are byte-identical run to run.
def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
            r &= 0xFFFFFFFF
        table.append(r)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(data: bytes | bytearray) -> int:
    crc = 0
    table = _OGG_CRC
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ b) & 0xFF]
    return crc


def _ogg_pin_serial(data: bytes, serial: int = 0x4D4F4F45) -> bytes:
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise ValueError("unexpected Ogg page layout")
        nseg = out[pos + 26]
        body = sum(out[pos + 27 : pos + 27 + nseg])
        end = pos + 27 + nseg + body
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(out[pos:end]).to_bytes(4, "little")
        pos = end
    return bytes(out)


def _targz(path: Path, members: list[tuple[str, bytes | None]]) -> None:
    """A byte-stable .tar.gz; ``None`` content means a directory."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, content in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = _FIXED_MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            if content is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                ti.mode = 0o644
                ti.size = len(content)
                tf.addfile(ti, io.BytesIO(content))
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=gz, mode="wb", mtime=0) as g:
        g.write(raw.getvalue())
    _write_bytes(path, gz.getvalue())


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.int16)


def _pad_to(audio: np.ndarray, multiple: int) -> np.ndarray:
    extra = (-len(audio)) % multiple
    return np.concatenate([audio, np.zeros(extra, dtype=np.int16)]) if extra else audio


def _resample(audio: np.ndarray, sr_out: int) -> np.ndarray:
    """Deterministic linear-interpolation resampling (good enough for fixtures)."""
    n_out = int(round(len(audio) * sr_out / SAMPLE_RATE))
    t = np.arange(n_out, dtype=np.float64) * (SAMPLE_RATE / sr_out)
    y = np.interp(t, np.arange(len(audio), dtype=np.float64), audio.astype(np.float64))
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- #
# AISHELL-2
# --------------------------------------------------------------------------- #
# (utt id, raw transcript or None = no trans line, golden or None, has wav, spoken text)
_A2_TRAIN = [
    ("IC0001W0001", "打开Ａ座空调", "打开A座空调", True, None),
    ("IC0001W0002", "播放一首Let it go", "播放一首LET IT GO", True, None),
    ("IC0001W0003", None, None, True, "没有文本"),  # wav without transcript
    ("ID0114W0001", "放一首歌Let's go", "放一首歌LET'S GO", True, None),
    ("ID0114W0002", "要及时'关停并转'", "要及时关停并转", True, None),
    ("ID0114W0003", "这句没有音频", None, False, None),  # transcript without wav
]
_A2_DEV = [
    ("IT0001W0001", "赵孟𫖯的字", "赵孟頫的字", True, None),
    ("IT0001W0002", "今天天气很好", "今天天气很好", True, None),
]
_A2_TEST = [
    ("IT0011W0001", "明天叫我起床", "明天叫我起床", True, None),
    ("IT0011W0002", "一条𫚉鱼", "一条鱼", True, None),
]


def _a2_requests():
    for table in (_A2_TRAIN, _A2_DEV, _A2_TEST):
        for _uid, raw, _gold, has_wav, spoken in table:
            if has_wav:
                yield (spoken or raw, "zh")


def _write_a2_set(
    exp: ExpectedCorpus, set_dir: Path, split: str, table, synth, crlf: bool
) -> None:
    scp, trans = [], []
    for uid, raw, gold, has_wav, spoken in table:
        seg_id = f"aishell2-{uid}"
        spk = uid[1:6]
        rel = f"wav/{spk}/{uid}.wav"
        if has_wav:
            dur = _write_audio(set_dir / rel, _say(synth, spoken or raw))
            scp.append(f"{uid}\t{rel}")
        if raw is not None:
            trans.append(f"{uid}\t{raw}")
        if not has_wav:
            exp.rejects[seg_id] = "missing-audio"
        elif raw is None:
            exp.rejects[seg_id] = "no-transcript"
        else:
            exp.segments[seg_id] = ExpectedSegment(
                id=seg_id, recording_id=seg_id, speaker=spk, split=split, subset=None,
                language="zh", text=gold, text_raw=raw, duration=dur,
            )
            exp.recordings[seg_id] = dur
            exp.sources[seg_id] = set_dir / rel
    eol = "\r\n" if crlf else "\n"
    _write_text(set_dir / "wav.scp", _lines(scp))
    _write_text(set_dir / "trans.txt", _lines(trans, eol))


def _aishell2(root: Path, synth, eval_separate: bool) -> ExpectedCorpus:
    _prefetch(synth, _a2_requests())
    base = _fresh_dir(Path(root) / "AISHELL-2")
    exp = ExpectedCorpus("aishell2", base)
    _write_a2_set(exp, base / "iOS" / "data", "train", _A2_TRAIN, synth, crlf=True)
    if eval_separate:
        eval_root = _fresh_dir(Path(root) / "AISHELL-DEV-TEST-SET")
        eval_ios = eval_root / "IOS"  # upper-case, as in one 3rd-party delivery
        exp.eval_root = eval_root
    else:
        eval_ios = base / "iOS"
    _write_a2_set(exp, eval_ios / "dev", "dev", _A2_DEV, synth, crlf=False)
    _write_a2_set(exp, eval_ios / "test", "test", _A2_TEST, synth, crlf=False)
    return exp


def make_aishell2(root: Path, synth) -> ExpectedCorpus:
    """``root/AISHELL-2/iOS/{data,dev,test}``; CORPUS_DIR = ``root/AISHELL-2``."""
    return _aishell2(root, synth, eval_separate=False)


def make_aishell2_eval_variant(root: Path, synth) -> tuple[ExpectedCorpus, Path]:
    """Train under ``root/AISHELL-2/iOS/data``; eval set under a separate
    ``root/AISHELL-DEV-TEST-SET/IOS/{dev,test}``.  Returns (expected, eval_root);
    the expected rows are identical to :func:`make_aishell2`."""
    exp = _aishell2(root, synth, eval_separate=True)
    assert exp.eval_root is not None
    return exp, exp.eval_root


# --------------------------------------------------------------------------- #
# LibriSpeech
# --------------------------------------------------------------------------- #
# part -> speaker -> chapter -> [(utt id, text)]
_LS = {
    "train-clean-100": {
        "19": {"198": [("19-198-0000", "THE LANTERN SWUNG SLOWLY"),
                       ("19-198-0001", "I DON'T THINK SO")]},
        "1034": {"121119": [("1034-121119-0000", "SHE OPENED THE DOOR"),
                            ("1034-121119-0001", "IT WAS A COLD MORNING")]},
    },
    "dev-clean": {
        "84": {"121123": [("84-121123-0000", "WHERE ARE YOU GOING"),
                          ("84-121123-0001", "THEY'LL BE HERE SOON")]},
    },
}
_LS_SPEAKERS = [  # (id, sex, subset, minutes, name) — invented
    ("19", "F", "train-clean-100", "25.19", "Kara Shallenberg"),
    ("84", "F", "dev-clean", "8.02", "Christie Nowak"),
    ("1034", "M", "train-clean-100", "25.03", "Kevin O'Coin"),
]


def _ls_requests():
    for spks in _LS.values():
        for chaps in spks.values():
            for utts in chaps.values():
                for _uid, text in utts:
                    yield (text, "en")


def make_librispeech(root: Path, synth) -> ExpectedCorpus:
    """``root/LibriSpeech/{SPEAKERS.TXT,...,train-clean-100,dev-clean}``."""
    _prefetch(synth, _ls_requests())
    base = _fresh_dir(Path(root) / "LibriSpeech")
    exp = ExpectedCorpus("librispeech", base)
    speakers = [
        "; Miniature LibriSpeech fixture: one row per reader present in this tree.",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ] + [f"{i:<5}| {s} | {sub:<17}| {m:>5} | {n}" for i, s, sub, m, n in _LS_SPEAKERS]
    _write_text(base / "SPEAKERS.TXT", _lines(speakers))
    _write_text(base / "CHAPTERS.TXT", _lines([
        ";ID      |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE | PROJECT TITLE",
        "198      | 19   | 12.45 | train-clean-100  | 3106 | 1234  | Chapter 1 | A Book",
        "121119   | 1034 | 12.50 | train-clean-100  | 2231 | 5678  | Chapter 2 | Another Book",
        "121123   | 84   |  8.02 | dev-clean        | 4242 | 9012  | Chapter 3 | Third Book",
    ]))
    _write_text(base / "README.TXT", "LibriSpeech ASR corpus (miniature fixture)\n")
    for part, spks in _LS.items():
        split = part.split("-")[0]
        for spk, chaps in spks.items():
            for chap, utts in chaps.items():
                d = base / part / spk / chap
                for uid, text in utts:
                    seg_id = f"librispeech-{uid}"
                    path = d / f"{uid}.flac"
                    dur = _write_audio(path, _say(synth, text, "en"), fmt="FLAC")
                    exp.segments[seg_id] = ExpectedSegment(
                        id=seg_id, recording_id=seg_id, speaker=spk, split=split,
                        subset=part, language="en", text=text, text_raw=text, duration=dur,
                    )
                    exp.recordings[seg_id] = dur
                    exp.sources[seg_id] = path
                _write_text(d / f"{spk}-{chap}.trans.txt", _lines(f"{u} {t}" for u, t in utts))
    _write_text(base / "train-clean-100" / ".completed", "")
    return exp


# --------------------------------------------------------------------------- #
# WenetSpeech
# --------------------------------------------------------------------------- #
# Each audio: (aid, path, source, tags, url, extra keys, exists, segments)
# segment: (sid suffix, subsets, confidence, raw text, golden, spoken or None)
# A segment with golden "BAD" is a bad segment (end before begin).
_WS_AUDIOS = [
    dict(
        aid="Y0000000003_-xK9dQ2mZ_a",
        path="audio/train/youtube/B00000/Y0000000003_-xK9dQ2mZ_a.opus",
        source="youtube", tags=["drama"], url="https://www.youtube.com/watch?v=-xK9dQ2mZ_a",
        exists=True,
        segments=[
            ("S00000", ["L"], 1.0, "我们一起去公园", "我们一起去公园"),
            ("S00002", ["L", "M", "S"], 1.0, "今天\u3000天气不错", "今天天气不错"),
            ("S00003", ["W"], 0.82, "我喜欢\u00a0Taylor Swift", "我喜欢TAYLOR SWIFT"),
            ("S00005", ["L"], 0.97, "这段时间错了", "BAD"),
        ],
    ),
    dict(
        aid="X0000016287_92761015",
        path="audio/train/podcast/B00001/X0000016287_92761015.opus",
        source="podcast", tags=["talk"], url="https://www.ximalaya.com/sound/92761015",
        exists=True, batch_id="B00001",
        segments=[
            ("S00000", ["L", "M"], 1.0, "欢迎收听本期节目", "欢迎收听本期节目"),
            ("S00001", ["L"], 0.96, "今天聊聊音乐", "今天聊聊音乐"),
            ("S00004", ["W"], 0.71, "好的，谢谢大家！", "好的谢谢大家"),
        ],
    ),
    dict(
        aid="Y0000000009_AbCdEfGhIjK",
        path="audio/train/youtube/B00001/Y0000000009_AbCdEfGhIjK.opus",
        source="youtube", tags=["news"], url="https://www.youtube.com/watch?v=AbCdEfGhIjK",
        exists=False, duration=9.5,
        segments=[
            ("S00000", ["L", "M", "S"], 1.0, "这个文件不存在", None),
            ("S00001", ["L"], 0.98, "所以跳过它", None),
        ],
    ),
    dict(
        aid="DEV_T0000000000",
        path="audio/dev/third_party/B00000/DEV_T0000000000.opus",
        source="third_party", tags=["news"], url="",
        exists=True,
        segments=[
            ("S00000", ["DEV"], 1.0, "北京时间八点整", "北京时间八点整"),
            ("S00001", ["DEV"], 1.0, "下面播报新闻", "下面播报新闻"),
            ("S00003", ["DEV"], 1.0, "天气晴朗", "天气晴朗"),
        ],
    ),
]
_WS_SPLIT = {"L": "train", "M": "train", "S": "train", "W": "train",
             "DEV": "dev", "TEST_NET": "test", "TEST_MEETING": "test"}


def _ws_requests():
    for a in _WS_AUDIOS:
        if a["exists"]:
            for seg in a["segments"]:
                if seg[4] != "BAD":
                    yield (seg[3], "zh")


def make_wenetspeech(root: Path, synth) -> ExpectedCorpus:
    """``root/WenetSpeech/{WenetSpeech.json,audio/...}`` with 3 opus recordings."""
    _prefetch(synth, _ws_requests())
    base = _fresh_dir(Path(root) / "WenetSpeech")
    exp = ExpectedCorpus("wenetspeech", base)
    _write_text(base / "TERMS_OF_ACCESS", "WenetSpeech terms of access (miniature fixture)\n")
    step = SAMPLE_RATE // 100  # every time on the 10 ms grid
    audios_json = []
    for a in _WS_AUDIOS:
        rec_id = f"wenetspeech-{a['aid']}"
        seg_json = []
        if a["exists"]:
            pieces = [_silence(0.5)]
            offset = len(pieces[0])
            times = {}
            good = [s for s in a["segments"] if s[4] != "BAD"]
            for sid, _subs, _conf, raw, _gold in good:
                utt = _pad_to(_say(synth, raw), step)
                times[sid] = (offset, offset + len(utt))
                pieces += [utt, _silence(0.4)]
                offset += len(utt) + len(pieces[-1])
            total = max(offset + int(0.3 * SAMPLE_RATE), 8 * SAMPLE_RATE)
            audio = _pad_to(np.concatenate(pieces + [_silence((total - offset) / SAMPLE_RATE)]), step)
            path = base / a["path"]
            _write_audio(path, audio, fmt="OGG")
            duration = sf.info(str(path)).frames / SAMPLE_RATE  # true decoded length
            md5 = hashlib.md5(path.read_bytes()).hexdigest()
            exp.recordings[rec_id] = duration
            exp.sources[rec_id] = path
        else:
            duration = a["duration"]
            md5 = hashlib.md5(a["aid"].encode()).hexdigest()
            times = {}
        for sid, subs, conf, raw, gold in a["segments"]:
            full_sid = f"{a['aid']}_{sid}"
            seg_id = f"wenetspeech-{full_sid}"
            if gold == "BAD":
                begin, end = 7.5, 7.1  # end before begin
            elif sid in times:
                begin, end = times[sid][0] / SAMPLE_RATE, times[sid][1] / SAMPLE_RATE
            else:
                begin, end = 1.0 + 4 * len(seg_json), 3.5 + 4 * len(seg_json)
            begin, end = round(begin, 2), round(end, 2)
            seg_json.append({"sid": full_sid, "confidence": conf, "begin_time": begin,
                             "end_time": end, "subsets": list(subs), "text": raw})
            if not a["exists"]:
                exp.rejects[seg_id] = "missing-audio"
            elif gold == "BAD":
                exp.rejects[seg_id] = "bad-segment"
            else:
                exp.segments[seg_id] = ExpectedSegment(
                    id=seg_id, recording_id=rec_id, speaker=None, split=_WS_SPLIT[subs[0]],
                    subset=" ".join(subs), language="zh", text=gold, text_raw=raw,
                    duration=round(end - begin, 3), start=begin,
                )
        obj = {"aid": a["aid"], "duration": round(duration, 2), "md5": md5, "path": a["path"],
               "source": a["source"], "tags": list(a["tags"]), "url": a["url"]}
        if "batch_id" in a:
            obj["batch_id"] = a["batch_id"]
        obj["segments"] = seg_json
        audios_json.append(obj)
    doc = {
        "dataset": "WenetSpeech",
        "language": "Chinese",
        "version": "v1.0",
        "description": "miniature WenetSpeech fixture",
        "audios": audios_json,
    }
    _write_text(base / "WenetSpeech.json", json.dumps(doc, ensure_ascii=False, indent=4) + "\n")
    return exp


# --------------------------------------------------------------------------- #
# multi_cn parts
# --------------------------------------------------------------------------- #
def _mcn_segment(exp, part, native_id, speaker, split, raw, gold, dur, path) -> None:
    seg_id = f"multi_cn-{part}-{native_id}"
    exp.segments[seg_id] = ExpectedSegment(
        id=seg_id, recording_id=seg_id, speaker=f"{part}-{speaker}", split=split, subset=part,
        language="zh", text=gold, text_raw=raw, duration=dur,
    )
    exp.recordings[seg_id] = dur
    exp.sources[seg_id] = path


# ---- aidatatang_200zh ------------------------------------------------------ #
_AIDATATANG = [  # (split, speaker dir, utt id, raw, golden)
    ("train", "G0001", "T0055G0001S0001", "明天 早上 叫 我 起床", "明天早上叫我起床"),
    ("train", "G0001", "T0055G0001S0002", "我 在 Ａ 区 等 你", "我在A区等你"),
    ("dev", "G0002", "T0055G0002S0001", "打开 音乐", "打开音乐"),
    ("test", "G0003", "T0055G0003S0001", "现在 几点 了", "现在几点了"),
]
_AIDATATANG_PACKED = ("train", "G0099", "T0055G0099S0001", "这个 包 没有 解压")


def make_aidatatang(root: Path, synth) -> ExpectedCorpus:
    """``root/aidatatang_200zh``: extracted speakers (+ one archive beside its
    extracted dir) and one unextracted ``corpus/train/G0099.tar.gz``."""
    part = "aidatatang_200zh"
    _prefetch(synth, [(r[3], "zh") for r in _AIDATATANG] + [(_AIDATATANG_PACKED[3], "zh")])
    base = _fresh_dir(Path(root) / "aidatatang_200zh")
    exp = ExpectedCorpus(part, base)
    lines = []
    wav_bytes: dict[str, bytes] = {}
    for split, spk, uid, raw, gold in _AIDATATANG:
        path = base / "corpus" / split / spk / f"{uid}.wav"
        dur = _write_audio(path, _say(synth, raw))
        wav_bytes[uid] = path.read_bytes()
        _write_text(path.with_suffix(".txt"), raw + "\n")
        lines.append(f"{uid} {raw}")
        _mcn_segment(exp, part, uid, spk, split, raw, gold, dur, path)
    _write_text(base / "transcript" / "aidatatang_200_zh_transcript.txt", _lines(sorted(lines)))
    # Lhotse extracts the inner archives alongside: keep G0001.tar.gz next to G0001/.
    g1 = [r for r in _AIDATATANG if r[1] == "G0001"]
    members: list[tuple[str, bytes | None]] = [("G0001", None)]
    for _split, spk, uid, raw, _gold in g1:
        members += [(f"{spk}/{uid}.wav", wav_bytes[uid]), (f"{spk}/{uid}.txt", (raw + "\n").encode())]
    _targz(base / "corpus" / "train" / "G0001.tar.gz", members)
    # An inner archive nobody extracted.
    split, spk, uid, raw = _AIDATATANG_PACKED
    packed = _encode(_say(synth, raw), SAMPLE_RATE, "WAV", "PCM_16")
    _targz(base / "corpus" / split / f"{spk}.tar.gz",
           [(spk, None), (f"{spk}/{uid}.wav", packed), (f"{spk}/{uid}.txt", (raw + "\n").encode())])
    exp.rejects[f"corpus/{split}/{spk}.tar.gz"] = "not-extracted"
    return exp


# ---- AISHELL-1 ------------------------------------------------------------- #
_AISHELL = [  # (split, speaker, utt id, raw or None = no transcript line, golden, spoken)
    ("train", "S0002", "BAC009S0002W0122", "这 款 产品 很 好", "这款产品很好", None),
    ("train", "S0002", "BAC009S0002W0123", "我 喜欢 ｋ 歌", "我喜欢K歌", None),
    ("train", "S0002", "BAC009S0002W0124", None, None, "这句没有标注"),
    ("dev", "S0724", "BAC009S0724W0121", "今天 是 晴天", "今天是晴天", None),
    ("test", "S0764", "BAC009S0764W0121", "我们 去 吃饭", "我们去吃饭", None),
]


def make_aishell(root: Path, synth) -> ExpectedCorpus:
    """``root/data_aishell/{transcript,wav/{train,dev,test}}``."""
    part = "aishell"
    _prefetch(synth, [(r[5] or r[3], "zh") for r in _AISHELL])
    base = _fresh_dir(Path(root) / "data_aishell")
    exp = ExpectedCorpus(part, base)
    lines = []
    for split, spk, uid, raw, gold, spoken in _AISHELL:
        path = base / "wav" / split / spk / f"{uid}.wav"
        dur = _write_audio(path, _say(synth, spoken or raw))
        if raw is None:
            exp.rejects[f"multi_cn-{part}-{uid}"] = "no-transcript"
            continue
        lines.append(f"{uid} {raw}")
        _mcn_segment(exp, part, uid, spk, split, raw, gold, dur, path)
    _write_text(base / "transcript" / "aishell_transcript_v0.8.txt", _lines(sorted(lines)))
    return exp


# ---- MagicData ------------------------------------------------------------- #
# split -> (BOM?, [(utt file, speaker, raw, golden or reject category, spoken)])
_MAGICDATA = {
    "train": (False, [
        ("14_3466_20170826171404.wav", "14_3466", "帮我查一下天气！", "帮我查一下天气", None),
        ("14_3466_20170826171521.wav", "14_3466", "[FIL]我想听，Let it be。", "我想听LET IT BE", None),
        ("16_4013_20170819121429.wav", "16_4013", "今天有点累", "!known-bad", None),
        ("5_1812_20170628135834.wav", "5_1812", "[FIL]", "!empty-text", "嗯"),
        ("5_1812_20170628140011.wav", "5_1812", "你好\u3000《小王子》…[SPK]", "你好小王子", None),
    ]),
    "dev": (True, [
        ("38_5718_20170915093242.wav", "38_5718", "打开蓝牙：谢谢", "打开蓝牙谢谢", None),
    ]),
    "test": (False, [
        ("38_5731_20170915093303.wav", "38_5731", "播放what's up", "播放WHAT'S UP", None),
    ]),
}


def make_magicdata(root: Path, synth) -> ExpectedCorpus:
    """``root/magicdata/{train,dev,test}/{TRANS.txt,<spk>/<utt>.wav}``."""
    part = "magicdata"
    _prefetch(synth, [(r[4] or r[2], "zh") for _b, rows in _MAGICDATA.values() for r in rows])
    base = _fresh_dir(Path(root) / "magicdata")
    exp = ExpectedCorpus(part, base)
    for split, (bom, rows) in _MAGICDATA.items():
        lines = ["UtteranceID\tSpeakerID\tTranscription"]
        for fname, spk, raw, gold, spoken in rows:
            uid = fname[: -len(".wav")]
            path = base / split / spk / fname
            dur = _write_audio(path, _say(synth, spoken or raw))
            lines.append(f"{fname}\t{spk}\t{raw}")
            if gold.startswith("!"):
                exp.rejects[f"multi_cn-{part}-{uid}"] = gold[1:]
            else:
                _mcn_segment(exp, part, uid, spk, split, raw, gold, dur, path)
        _write_text(base / split / "TRANS.txt", _lines(lines), bom=bom)
    return exp


# ---- Primewords ------------------------------------------------------------ #
# records in file order: (uuid, user_id, id, text, golden, wav exists)
_PRIMEWORDS = [
    ("0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b", "211", "30417", "今天 下午 三点 开会", "今天下午三点开会", True),
    ("5732d955-1c2e-4b8f-9d3a-7e6f5a4b3c2d", "211", "30418", "我 想 去 北京", "我想去北京", True),
    ("a3b4c5d6-e7f8-4a9b-8c7d-6e5f4a3b2c1d", "4820", "1024", "请 帮 我 订 机票", "请帮我订机票", True),
    ("c0ffee00-1234-4abc-9def-0123456789ab", "4820", "1025", "明天 见", "明天见", False),
    ("5732d955-1c2e-4b8f-9d3a-7e6f5a4b3c2d", "211", "30419", "我 想 去 上海", "我想去上海", True),
]


def make_primewords(root: Path, synth) -> ExpectedCorpus:
    """``root/primewords_md_2018_set1/{set1_transcript.json,audio_files/h/hh/<uuid>.wav}``.

    A ``file`` listed twice: the LAST record wins (Kaldi/Lhotse), the earlier one
    is a ``duplicate-id`` reject row (recorded in ``duplicate_rejects``)."""
    part = "primewords"
    last: dict[str, int] = {}
    for i, rec in enumerate(_PRIMEWORDS):
        last[rec[0]] = i
    _prefetch(synth, [(_PRIMEWORDS[i][3], "zh") for i in last.values() if _PRIMEWORDS[i][5]])
    base = _fresh_dir(Path(root) / "primewords_md_2018_set1")
    exp = ExpectedCorpus(part, base)
    records = []
    for i, (uuid, user, rid, text, gold, exists) in enumerate(_PRIMEWORDS):
        fname = f"{uuid}.wav"
        records.append({"text": text, "file": fname, "user_id": user, "id": rid})
        seg_id = f"multi_cn-{part}-{uuid}"
        if last[uuid] != i:
            exp.duplicate_rejects[seg_id] = exp.duplicate_rejects.get(seg_id, 0) + 1
            continue
        path = base / "audio_files" / uuid[0] / uuid[:2] / fname
        if not exists:
            exp.rejects[seg_id] = "missing-audio"
            continue
        dur = _write_audio(path, _say(synth, text))
        _mcn_segment(exp, part, uuid, user, "train", text, gold, dur, path)
    # a kept id's earlier duplicate stays in duplicate_rejects; one whose kept
    # record was itself rejected would belong in rejects (not the case here).
    for k in list(exp.duplicate_rejects):
        assert k in exp.segments
    _write_text(base / "set1_transcript.json", json.dumps(records, ensure_ascii=False))
    return exp


# ---- ST-CMDS --------------------------------------------------------------- #
_STCMDS = [  # (stem, raw, golden)
    ("20170001P00001A0001", "我想听轻音乐", "我想听轻音乐"),
    ("20170001P00001I0001", "打开，窗户", "打开窗户"),
    ("20170001P00002A0001", "明天会下雨吗", "明天会下雨吗"),
]


def make_stcmds(root: Path, synth) -> ExpectedCorpus:
    """Flat ``root/ST-CMDS-20170001_1-OS/<stem>.{wav,txt}`` (no trailing newline)."""
    part = "stcmds"
    _prefetch(synth, [(r[1], "zh") for r in _STCMDS])
    base = _fresh_dir(Path(root) / "ST-CMDS-20170001_1-OS")
    exp = ExpectedCorpus(part, base)
    for stem, raw, gold in _STCMDS:
        path = base / f"{stem}.wav"
        dur = _write_audio(path, _say(synth, raw))
        _write_text(base / f"{stem}.txt", raw)
        _mcn_segment(exp, part, stem, stem[8:15], "train", raw, gold, dur, path)
    return exp


# ---- THCHS-30 -------------------------------------------------------------- #
_THCHS30 = [  # (split, stem, words line as in the .trn, golden)
    ("train", "A11_0", "今天 天气 很 好", "今天天气很好"),
    ("train", "A11_1", "绿 是 阳春 烟 景 l =", "绿是阳春烟景"),
    ("dev", "D4_750", "他 仅 凭 腰部 的 力量", "他仅凭腰部的力量"),
    ("test", "C12_33", "明天 去 学校", "明天去学校"),
]


def _thchs_trn(words: str) -> str:
    from pypinyin import Style, lazy_pinyin

    clean = words.replace(" l =", "")
    chars = clean.replace(" ", "")
    syl = lazy_pinyin(chars, style=Style.TONE3, neutral_tone_with_five=True)
    ini = lazy_pinyin(chars, style=Style.INITIALS, strict=False)
    fin = lazy_pinyin(chars, style=Style.FINALS_TONE3, strict=False, neutral_tone_with_five=True)
    phones = " ".join(f"{i} {f}" if i else f for i, f in zip(ini, fin))
    return _lines([words, " ".join(syl), phones])


def make_thchs30(root: Path, synth) -> ExpectedCorpus:
    """``root/data_thchs30/data/<utt>.wav(.trn)`` + ``{train,dev,test}/`` symlinks."""
    part = "thchs30"
    _prefetch(synth, [(r[2], "zh") for r in _THCHS30])
    base = _fresh_dir(Path(root) / "data_thchs30")
    exp = ExpectedCorpus(part, base)
    _write_text(base / "README.TXT", "THCHS-30 (miniature fixture). train/dev/test link into data/.\n")
    for split, stem, words, gold in _THCHS30:
        wav = base / "data" / f"{stem}.wav"
        dur = _write_audio(wav, _say(synth, words))
        _write_text(base / "data" / f"{stem}.wav.trn", _thchs_trn(words))
        (base / split).mkdir(exist_ok=True)
        for name in (f"{stem}.wav", f"{stem}.wav.trn"):
            os.symlink(f"../data/{name}", base / split / name)
        _mcn_segment(exp, part, stem, stem.split("_")[0], split, words, gold, dur, base / split / f"{stem}.wav")
    return exp


_MCN_PARTS = [  # (part name, native dir, maker)
    ("aidatatang_200zh", "aidatatang_200zh", make_aidatatang),
    ("aishell", "data_aishell", make_aishell),
    ("magicdata", "magicdata", make_magicdata),
    ("primewords", "primewords_md_2018_set1", make_primewords),
    ("stcmds", "ST-CMDS-20170001_1-OS", make_stcmds),
    ("thchs30", "data_thchs30", make_thchs30),
]


def _mcn_requests():
    yield from ((r[3], "zh") for r in _AIDATATANG)
    yield (_AIDATATANG_PACKED[3], "zh")
    yield from ((r[5] or r[3], "zh") for r in _AISHELL)
    yield from ((r[4] or r[2], "zh") for _b, rows in _MAGICDATA.values() for r in rows)
    yield from ((r[3], "zh") for r in _PRIMEWORDS if r[5])
    yield from ((r[1], "zh") for r in _STCMDS)
    yield from ((r[2], "zh") for r in _THCHS30)


def make_multi_cn(root: Path, synth) -> ExpectedCorpus:
    """All six parts under ``root`` (which is the CORPUS_DIR).  Rows are the
    union of the parts; path-keyed rejects gain the part's directory prefix."""
    _prefetch(synth, _mcn_requests())
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    exp = ExpectedCorpus("multi_cn", root)
    for _part, native, maker in _MCN_PARTS:
        exp.merge(maker(root, synth), reject_prefix=f"{native}/")
    return exp


# --------------------------------------------------------------------------- #
# In-house folder
# --------------------------------------------------------------------------- #
def inhouse_recording_id(rel_path: str) -> str:
    """``inhouse-<sanitised path without extension>-<sha1(rel path)[:8]>``."""
    p = Path(rel_path)
    stem = p.with_suffix("").as_posix()
    parts = [re.sub(r"[^A-Za-z0-9_-]", "_", s) for s in stem.split("/")]
    digest = hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:8]
    return f"inhouse-{'__'.join(parts)}-{digest}"


_INHOUSE_SPEECH = [
    ("请大家准时参加周会", "zh"),
    ("This is the hi fi microphone", "en"),
    ("您好，这里是客服中心", "zh"),
    ("Please hold the line", "en"),
    ("Welcome to episode one", "en"),
    ("欢迎收听第二期", "zh"),
    ("Today we talk about speech", "en"),
    ("同学们好，我们开始上课", "zh"),
    ("声音很大", "zh"),
]


def make_inhouse(root: Path, synth) -> ExpectedCorpus:
    """A nested folder of mixed-format recordings (no transcripts, no segments)."""
    _prefetch(synth, _INHOUSE_SPEECH)
    base = _fresh_dir(Path(root) / "inhouse")
    exp = ExpectedCorpus("inhouse", base)
    s = {t: _say(synth, t, lang) for t, lang in _INHOUSE_SPEECH}
    sp = [s[t] for t, _ in _INHOUSE_SPEECH]

    langs = [lang for _, lang in _INHOUSE_SPEECH]
    texts = [t for t, _ in _INHOUSE_SPEECH]

    def add(rel: str, dur: float, utterance: int | None = None) -> None:
        rid = inhouse_recording_id(rel)
        exp.recordings[rid] = dur
        exp.sources[rid] = base / rel
        if utterance is not None:
            exp.spoken[rid] = [(0.0, round(dur, 3), texts[utterance], langs[utterance])]

    sync = "meetings/2024.03 weekly sync"
    add(f"{sync}/standup.wav", _write_audio(base / sync / "standup.wav", sp[0]), 0)
    left = _resample(sp[1], 44100)
    stereo = np.stack([left, (left.astype(np.int32) * 3 // 4).astype(np.int16)], axis=1)
    add(f"{sync}/hifi_mic.wav", _write_audio(base / sync / "hifi_mic.wav", stereo, sr=44100), 1)
    add("calls/agent-01/call_0001.flac",
        _write_audio(base / "calls/agent-01/call_0001.flac", sp[2], fmt="FLAC"), 2)
    add("calls/agent-01/call_0002.opus",
        _write_audio(base / "calls/agent-01/call_0002.opus",
                     _pad_to(np.concatenate([sp[3], _silence(0.2)]), 160), fmt="OGG"), 3)
    add("podcasts/episode_01.mp3", _write_audio(base / "podcasts/episode_01.mp3", sp[4], fmt="MP3"), 4)
    add("podcasts/episode_02.m4a", _write_m4a(base / "podcasts/episode_02.m4a", sp[5]), 5)
    # ~40 s lecture: cycle through the utterances with pauses, cut to exactly 40 s.
    pieces, n, i = [], 0, 0
    lecture_spoken = []
    while n < 40 * SAMPLE_RATE:
        index = (6 + i) % len(sp)
        if n + len(sp[index]) <= 40 * SAMPLE_RATE:
            lecture_spoken.append((round(n / SAMPLE_RATE, 3), round((n + len(sp[index])) / SAMPLE_RATE, 3), texts[index], langs[index]))
        chunk = np.concatenate([sp[index], _silence(0.6)])
        pieces.append(chunk)
        n += len(chunk)
        i += 1
    lecture = np.concatenate(pieces)[: 40 * SAMPLE_RATE]
    add("lectures/long_lecture.wav", _write_audio(base / "lectures/long_lecture.wav", lecture))
    exp.spoken[inhouse_recording_id("lectures/long_lecture.wav")] = lecture_spoken
    add("misc/LOUD.WAV", _write_audio(base / "misc/LOUD.WAV", sp[8]), 8)
    _write_bytes(base / "misc/empty.wav", b"")
    exp.rejects["misc/empty.wav"] = "empty-file"
    _write_text(base / "misc/broken.mp3", "this is not an mp3 file, just text\n")
    exp.rejects["misc/broken.mp3"] = "not-audio"
    _write_text(base / "notes.txt", "Recorded in the office, March 2024. Not audio; ignore.\n")
    return exp


# --------------------------------------------------------------------------- #
# Corrupt AISHELL-2
# --------------------------------------------------------------------------- #
# (utt, kind, raw transcript or None, golden, spoken). kind: good / truncated /
# empty / text / 8k / stereo / missing / trans-only / scp-only / bad-utf8
_CORRUPT = [
    ("IC0001W0001", "good", "你好世界", "你好世界", None),
    ("IC0001W0002", "good", "打开空调", "打开空调", None),
    ("IC0001W0003", "truncated", "现在几点", "truncated", None),
    ("IC0001W0004", "empty", "空的文件", "empty-file", None),
    ("IC0001W0005", "text", "不是音频", "not-audio", None),
    ("IC0001W0006", "8k", "声音很小", "wrong-sample-rate", None),
    ("IC0001W0007", "stereo", "两个声道", "not-mono", None),
    ("IC0001W0008", "missing", "文件丢了", "missing-audio", None),
    ("IC0001W0009", "trans-only", "没有列表", "missing-audio", None),
    ("IC0001W0010", "scp-only", None, "no-transcript", "没有文本"),
    ("IC0001W0011", "bad-utf8", None, "bad-encoding", "编码坏了"),
    ("IC0002W0001", "good", "今天很冷", "今天很冷", None),
]
_CORRUPT_DUP = ("IC0001W0002", "关闭空调")  # a later duplicate line for a good id


def make_corrupt_aishell2(root: Path, synth) -> ExpectedCorpus:
    """AISHELL-2 layout (``root/AISHELL-2/iOS/data``) with one of each defect."""
    _prefetch(synth, [(r[4] or r[2], "zh") for r in _CORRUPT if r[1] not in ("missing", "trans-only", "empty", "text")])
    base = _fresh_dir(Path(root) / "AISHELL-2")
    exp = ExpectedCorpus("aishell2", base)
    data = base / "iOS" / "data"
    scp: list[str] = []
    trans: list[bytes] = []
    for uid, kind, raw, gold, spoken in _CORRUPT:
        seg_id = f"aishell2-{uid}"
        spk = uid[1:6]
        rel = f"wav/{spk}/{uid}.wav"
        path = data / rel
        if kind != "trans-only":
            scp.append(f"{uid}\t{rel}")
        if raw is not None:
            trans.append(f"{uid}\t{raw}".encode("utf-8"))
            if uid == _CORRUPT_DUP[0]:
                trans.append(f"{uid}\t{_CORRUPT_DUP[1]}".encode("utf-8"))
        if kind == "bad-utf8":
            trans.append(uid.encode("ascii") + b"\t\xe7\xbc\x96\xff\xfe\xe5\x9d\x8f")
        audio = None if kind in ("missing", "trans-only", "empty", "text") else _say(synth, spoken or raw)
        if kind in ("good", "scp-only", "bad-utf8"):
            dur = _write_audio(path, audio)
        elif kind == "truncated":
            full = _encode(audio, SAMPLE_RATE, "WAV", "PCM_16")
            header = 44
            assert full[36:40] == b"data"
            _write_bytes(path, full[: header + (len(full) - header) // 2])
        elif kind == "empty":
            _write_bytes(path, b"")
        elif kind == "text":
            _write_text(path, "this is a transcript, not a wav file\n")
        elif kind == "8k":
            _write_audio(path, audio[::2].copy(), sr=8000)
        elif kind == "stereo":
            _write_audio(path, np.stack([audio, audio], axis=1))
        if kind == "good":
            exp.segments[seg_id] = ExpectedSegment(
                id=seg_id, recording_id=seg_id, speaker=spk, split="train", subset=None,
                language="zh", text=gold, text_raw=raw, duration=dur,
            )
            exp.recordings[seg_id] = dur
            exp.sources[seg_id] = path
        else:
            exp.rejects[seg_id] = gold
    exp.duplicate_rejects[f"aishell2-{_CORRUPT_DUP[0]}"] = 1
    bom = b"\xef\xbb\xbf"
    _write_bytes(data / "wav.scp", bom + "".join(l + "\r\n" for l in scp).encode("utf-8"))
    _write_bytes(data / "trans.txt", bom + b"".join(l + b"\r\n" for l in trans))
    return exp


# --------------------------------------------------------------------------- #
# Everything
# --------------------------------------------------------------------------- #
def _all_requests():
    yield from _a2_requests()
    yield from _ls_requests()
    yield from _ws_requests()
    yield from _mcn_requests()
    yield from _INHOUSE_SPEECH
    yield from ((r[4] or r[2], "zh") for r in _CORRUPT
                if r[1] not in ("missing", "trans-only", "empty", "text"))


def make_all(root: Path, synth) -> dict[str, ExpectedCorpus]:
    """Every corpus in its own subdirectory of ``root`` (see the module doc)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _prefetch(synth, _all_requests())
    out: dict[str, ExpectedCorpus] = {}
    out["aishell2"] = make_aishell2(root / "aishell2", synth)
    out["aishell2_eval"] = make_aishell2_eval_variant(root / "aishell2_eval", synth)[0]
    out["librispeech"] = make_librispeech(root / "librispeech", synth)
    out["wenetspeech"] = make_wenetspeech(root / "wenetspeech", synth)
    out["multi_cn"] = make_multi_cn(root / "multi_cn", synth)
    for part, _native, maker in _MCN_PARTS:
        out[part] = maker(root / part, synth)
    out["inhouse"] = make_inhouse(root / "inhouse", synth)
    out["corrupt"] = make_corrupt_aishell2(root / "corrupt", synth)
    return out


def oracle_for(expected: ExpectedCorpus, translations: dict[str, str] | None = None) -> dict:
    """The emulator's oracle for a generated corpus: what each file really says, keyed by
    the SHA-256 of its bytes (what an emulated service receives), plus translations."""
    import hashlib

    audio = {}
    for recording_id, spoken in expected.spoken.items():
        digest = hashlib.sha256(Path(expected.sources[recording_id]).read_bytes()).hexdigest()
        languages = {language for *_, language in spoken}
        audio[digest] = {
            "language": languages.pop() if len(languages) == 1 else None,
            "sentences": [{"start": start, "end": end, "text": text} for start, end, text, _ in spoken],
        }
    return {"audio": audio, "translations": dict(translations or DEMO_TRANSLATIONS)}


# What the emulated MT services answer for the Mandarin the generators speak.
DEMO_TRANSLATIONS = {
    "请大家准时参加周会": "Everyone please attend the weekly meeting on time",
    "您好，这里是客服中心": "Hello, this is the customer service center",
    "欢迎收听第二期": "Welcome to episode two",
    "同学们好，我们开始上课": "Hello everyone, let's begin the class",
    "声音很大": "The sound is loud",
}
