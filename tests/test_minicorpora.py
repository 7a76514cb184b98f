"""Self-checks of the miniature-corpus generator (mooer_data.minicorpora).

These test the fixtures themselves — native names, audio formats, durations,
quirks, determinism — not any preparer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mooer_data import minicorpora as mc

SR = mc.SAMPLE_RATE


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by all xdist workers (writes are atomic)
    path = base / "minicorpora-synth-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def synth(synth_cache) -> mc.SpeechSynth:
    return mc.SpeechSynth(synth_cache)


@pytest.fixture(scope="session")
def built(tmp_path_factory, synth):
    root = tmp_path_factory.mktemp("minicorpora")
    return root, mc.make_all(root, synth)


@pytest.fixture(scope="session")
def root(built) -> Path:
    return built[0]


@pytest.fixture(scope="session")
def corpora(built) -> dict[str, mc.ExpectedCorpus]:
    return built[1]


def _wav_header(path: Path) -> tuple[int, int, int, int]:
    """(channels, rate, bits, declared data bytes) of a canonical 44-byte WAV."""
    head = path.read_bytes()[:44]
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE" and head[36:40] == b"data"
    ch = int.from_bytes(head[22:24], "little")
    rate = int.from_bytes(head[24:28], "little")
    bits = int.from_bytes(head[34:36], "little")
    return ch, rate, bits, int.from_bytes(head[40:44], "little")


def _tree(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = b"symlink:" + os.readlink(p).encode()
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = b"<dir>"
    return out


# --------------------------------------------------------------------------- #
# synthesis
# --------------------------------------------------------------------------- #
def test_mandarin_goes_through_pinyin_voice(tmp_path, synth):
    fresh = mc.SpeechSynth(tmp_path / "cache")
    argv, spoken = fresh.command("今天天气很好", "zh", mc.SPEED)
    assert spoken == "jin1 tian1 tian1 qi4 hen3 hao3"
    assert argv[argv.index("-v") + 1] == "cmn-latn-pinyin"
    audio = fresh.speech("今天天气很好", "zh", mc.SPEED)
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert len(audio) / SR > 0.8
    assert np.abs(audio).max() > 1000  # real speech, not silence
    assert len(fresh.commands) == 1
    used = fresh.commands[0]
    assert "cmn-latn-pinyin" in used and "cmn" not in used  # never `-v cmn`
    # cached: a second call runs nothing; a separate cache gives the same samples
    again = fresh.speech("今天天气很好", "zh", mc.SPEED)
    assert len(fresh.commands) == 1
    assert np.array_equal(audio, again)
    assert np.array_equal(audio, synth.speech("今天天气很好", "zh", mc.SPEED))


def test_mixed_text_speaks_only_mandarin_and_english_voice(tmp_path):
    s = mc.SpeechSynth(tmp_path)
    assert s.command("播放一首Let it go", "zh")[1] == "bo1 fang4 yi1 shou3"
    assert s.command("[FIL]我想听，Let it be。", "zh")[1] == "wo3 xiang3 ting1"
    argv, spoken = s.command("I DON'T THINK SO", "en")
    assert argv[argv.index("-v") + 1] == "en-us" and spoken == "I DON'T THINK SO"
    with pytest.raises(ValueError):
        s.command("[FIL]", "zh")


# --------------------------------------------------------------------------- #
# native trees
# --------------------------------------------------------------------------- #
EXPECTED_PATHS = [
    "aishell2/AISHELL-2/iOS/data/wav.scp",
    "aishell2/AISHELL-2/iOS/data/trans.txt",
    "aishell2/AISHELL-2/iOS/data/wav/C0001/IC0001W0001.wav",
    "aishell2/AISHELL-2/iOS/data/wav/D0114/ID0114W0002.wav",
    "aishell2/AISHELL-2/iOS/dev/trans.txt",
    "aishell2/AISHELL-2/iOS/test/wav/T0011/IT0011W0001.wav",
    "aishell2_eval/AISHELL-2/iOS/data/trans.txt",
    "aishell2_eval/AISHELL-DEV-TEST-SET/IOS/dev/wav.scp",
    "aishell2_eval/AISHELL-DEV-TEST-SET/IOS/test/wav/T0011/IT0011W0001.wav",
    "librispeech/LibriSpeech/SPEAKERS.TXT",
    "librispeech/LibriSpeech/train-clean-100/.completed",
    "librispeech/LibriSpeech/train-clean-100/19/198/19-198.trans.txt",
    "librispeech/LibriSpeech/train-clean-100/19/198/19-198-0000.flac",
    "librispeech/LibriSpeech/train-clean-100/1034/121119/1034-121119.trans.txt",
    "librispeech/LibriSpeech/dev-clean/84/121123/84-121123-0001.flac",
    "wenetspeech/WenetSpeech/WenetSpeech.json",
    "wenetspeech/WenetSpeech/audio/train/youtube/B00000/Y0000000003_-xK9dQ2mZ_a.opus",
    "wenetspeech/WenetSpeech/audio/train/podcast/B00001/X0000016287_92761015.opus",
    "wenetspeech/WenetSpeech/audio/dev/third_party/B00000/DEV_T0000000000.opus",
    "multi_cn/aidatatang_200zh/transcript/aidatatang_200_zh_transcript.txt",
    "multi_cn/aidatatang_200zh/corpus/train/G0001/T0055G0001S0001.wav",
    "multi_cn/aidatatang_200zh/corpus/train/G0001/T0055G0001S0001.txt",
    "multi_cn/aidatatang_200zh/corpus/train/G0099.tar.gz",
    "multi_cn/aidatatang_200zh/corpus/dev/G0002/T0055G0002S0001.wav",
    "multi_cn/data_aishell/transcript/aishell_transcript_v0.8.txt",
    "multi_cn/data_aishell/wav/train/S0002/BAC009S0002W0122.wav",
    "multi_cn/data_aishell/wav/test/S0764/BAC009S0764W0121.wav",
    "multi_cn/magicdata/train/TRANS.txt",
    "multi_cn/magicdata/train/14_3466/14_3466_20170826171404.wav",
    "multi_cn/magicdata/train/16_4013/16_4013_20170819121429.wav",
    "multi_cn/magicdata/dev/TRANS.txt",
    "multi_cn/magicdata/test/TRANS.txt",
    "multi_cn/primewords_md_2018_set1/set1_transcript.json",
    "multi_cn/primewords_md_2018_set1/audio_files/0/0f/0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b.wav",
    "multi_cn/ST-CMDS-20170001_1-OS/20170001P00001A0001.wav",
    "multi_cn/ST-CMDS-20170001_1-OS/20170001P00001I0001.txt",
    "multi_cn/ST-CMDS-20170001_1-OS/20170001P00002A0001.wav",
    "multi_cn/data_thchs30/data/A11_0.wav",
    "multi_cn/data_thchs30/data/A11_0.wav.trn",
    "multi_cn/data_thchs30/data/D4_750.wav.trn",
    "multi_cn/data_thchs30/train/A11_0.wav",
    "multi_cn/data_thchs30/dev/D4_750.wav.trn",
    "aidatatang_200zh/aidatatang_200zh/corpus/train/G0099.tar.gz",
    "aishell/data_aishell/wav/dev/S0724/BAC009S0724W0121.wav",
    "magicdata/magicdata/train/TRANS.txt",
    "primewords/primewords_md_2018_set1/set1_transcript.json",
    "stcmds/ST-CMDS-20170001_1-OS/20170001P00001A0001.txt",
    "thchs30/data_thchs30/test/C12_33.wav",
    "inhouse/inhouse/notes.txt",
    "inhouse/inhouse/meetings/2024.03 weekly sync/standup.wav",
    "inhouse/inhouse/misc/LOUD.WAV",
    "corrupt/AISHELL-2/iOS/data/wav.scp",
]


def test_native_tree_names(root, corpora):
    for rel in EXPECTED_PATHS:
        assert (root / rel).exists(), rel
    expected_roots = {
        "aishell2": "aishell2/AISHELL-2",
        "aishell2_eval": "aishell2_eval/AISHELL-2",
        "librispeech": "librispeech/LibriSpeech",
        "wenetspeech": "wenetspeech/WenetSpeech",
        "multi_cn": "multi_cn",
        "aidatatang_200zh": "aidatatang_200zh/aidatatang_200zh",
        "aishell": "aishell/data_aishell",
        "magicdata": "magicdata/magicdata",
        "primewords": "primewords/primewords_md_2018_set1",
        "stcmds": "stcmds/ST-CMDS-20170001_1-OS",
        "thchs30": "thchs30/data_thchs30",
        "inhouse": "inhouse/inhouse",
        "corrupt": "corrupt/AISHELL-2",
    }
    assert set(corpora) == set(expected_roots)
    for key, rel in expected_roots.items():
        assert corpora[key].root == root / rel, key
    names = {k: c.corpus for k, c in corpora.items()}
    assert names["corrupt"] == names["aishell2_eval"] == "aishell2"
    assert names["aidatatang_200zh"] == "aidatatang_200zh" and names["multi_cn"] == "multi_cn"


# --------------------------------------------------------------------------- #
# audio + durations
# --------------------------------------------------------------------------- #
SIXTEEN_K = ["aishell2", "aishell2_eval", "librispeech", "wenetspeech", "multi_cn",
             "aidatatang_200zh", "aishell", "magicdata", "primewords", "stcmds", "thchs30", "corrupt"]


@pytest.mark.parametrize("key", SIXTEEN_K)
def test_audio_is_16k_mono_and_durations_match(corpora, key):
    c = corpora[key]
    assert c.recordings and set(c.recordings) == set(c.sources)
    for rid, dur in c.recordings.items():
        info = sf.info(str(c.sources[rid]))
        assert info.samplerate == SR and info.channels == 1, rid
        assert info.frames / SR == pytest.approx(dur, abs=1e-9), rid
        if key != "wenetspeech":
            assert 0.8 <= dur <= 3.2, (rid, dur)  # short utterances
        else:
            assert 8.0 <= dur <= 12.0
    for seg in c.segments.values():
        assert seg.recording_id in c.recordings
        if key == "wenetspeech":
            assert seg.start > 0 and seg.start + seg.duration <= c.recordings[seg.recording_id]
        else:
            assert seg.recording_id == seg.id and seg.start == 0.0
            assert seg.duration == c.recordings[seg.id]
    if key != "wenetspeech":
        assert set(c.recordings) == set(c.segments)


def test_wav_files_are_pcm16(corpora):
    for key in ("aishell2", "multi_cn"):
        for p in corpora[key].sources.values():
            ch, rate, bits, declared = _wav_header(p)
            assert (ch, rate, bits) == (1, SR, 16)
            assert declared == p.stat().st_size - 44


def test_audio_is_speech_not_silence(corpora):
    for key in ("aishell2", "librispeech", "multi_cn"):
        for p in corpora[key].sources.values():
            x, _ = sf.read(str(p), dtype="int16")
            assert np.abs(x).max() > 1000, p


# --------------------------------------------------------------------------- #
# conventions encoded in the expectations
# --------------------------------------------------------------------------- #
_SPK = {
    "aidatatang_200zh": r"aidatatang_200zh-G\d{4}",
    "aishell": r"aishell-S\d{4}",
    "magicdata": r"magicdata-\d+_\d+",
    "primewords": r"primewords-\d+",
    "stcmds": r"stcmds-P\d{5}[AI]",
    "thchs30": r"thchs30-[A-D]\d+",
}
_ID = {
    "aishell2": r"aishell2-I[A-Z]\d{4}W\d{4}",
    "librispeech": r"librispeech-\d+-\d+-\d{4}",
    "wenetspeech": r"wenetspeech-.+_S\d{5}",
    "aidatatang_200zh": r"multi_cn-aidatatang_200zh-T0055G\d{4}S\d{4}",
    "aishell": r"multi_cn-aishell-BAC009S\d{4}W\d{4}",
    "magicdata": r"multi_cn-magicdata-\d+_\d+_\d{14}",
    "primewords": r"multi_cn-primewords-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "stcmds": r"multi_cn-stcmds-20170001P\d{5}[AI]\d{4}",
    "thchs30": r"multi_cn-thchs30-[A-D]\d+_\d+",
}


def _check_text(text: str) -> None:
    assert text and text == text.strip()
    assert not re.search(r"[a-z]", text), text
    assert unicodedata.normalize("NFKC", text) == text, text
    for i, ch in enumerate(text):
        if ch.isspace():
            assert ch == " " and re.match(r"[A-Z0-9']", text[i - 1]) and re.match(r"[A-Z0-9]", text[i + 1]), text
        elif unicodedata.category(ch)[0] in "PS":
            assert ch == "'" and re.match(r"[A-Z0-9]", text[i - 1]), text


@pytest.mark.parametrize("key", sorted(set(SIXTEEN_K)))
def test_expected_rows_follow_conventions(corpora, key):
    c = corpora[key]
    parts = [key] if key in _SPK else (list(_SPK) if key == "multi_cn" else [])
    for sid, seg in c.segments.items():
        assert seg.id == sid and "." not in sid and "." not in seg.recording_id
        assert seg.split in {"train", "dev", "test"}
        _check_text(seg.text)
        assert seg.text_raw and "\n" not in seg.text_raw and "\r" not in seg.text_raw
        assert "\ufeff" not in seg.text_raw
        if parts:
            part = sid.split("-")[1]
            assert part in parts and seg.subset == part and seg.language == "zh"
            assert re.fullmatch(_ID[part], sid) and re.fullmatch(_SPK[part], seg.speaker), (sid, seg.speaker)
        elif key in ("aishell2", "aishell2_eval", "corrupt"):
            assert re.fullmatch(_ID["aishell2"], sid)
            assert seg.speaker == sid[10:15] and seg.subset is None and seg.language == "zh"
        elif key == "librispeech":
            assert re.fullmatch(_ID["librispeech"], sid) and seg.language == "en"
            assert seg.speaker == sid.split("-")[1] and seg.subset in {"train-clean-100", "dev-clean"}
            assert seg.split == seg.subset.split("-")[0] and seg.text == seg.text_raw
        elif key == "wenetspeech":
            assert re.fullmatch(_ID["wenetspeech"], sid) and seg.speaker is None
            assert seg.recording_id.startswith("wenetspeech-") and seg.language == "zh"
    assert set(c.rejects.values()) <= mc.REJECT_CATEGORIES
    assert not set(c.rejects) & set(c.segments)
    assert set(c.duplicate_rejects) <= set(c.segments)
    for item, why in c.rejects.items():
        if why == "not-extracted":
            assert item.endswith(".tar.gz") and (c.root / item).is_file()
        else:
            assert "." not in item


def test_golden_examples(corpora):
    seg = {**corpora["aishell2"].segments, **corpora["multi_cn"].segments,
           **corpora["wenetspeech"].segments, **corpora["librispeech"].segments}
    assert seg["aishell2-IC0001W0002"].text == "播放一首LET IT GO"
    assert seg["aishell2-ID0114W0001"].text == "放一首歌LET'S GO"
    assert seg["aishell2-ID0114W0002"].text_raw == "要及时'关停并转'"
    assert seg["aishell2-ID0114W0002"].text == "要及时关停并转"
    assert seg["aishell2-IC0001W0001"].text == "打开A座空调"
    assert seg["aishell2-IT0001W0001"].text == "赵孟頫的字"
    assert seg["aishell2-IT0011W0002"].text == "一条鱼"
    assert seg["multi_cn-aidatatang_200zh-T0055G0001S0001"].text == "明天早上叫我起床"
    assert seg["multi_cn-aishell-BAC009S0002W0123"].text == "我喜欢K歌"
    assert seg["multi_cn-magicdata-14_3466_20170826171521"].text == "我想听LET IT BE"
    assert seg["multi_cn-thchs30-A11_1"].text_raw.endswith(" l =")
    assert seg["multi_cn-thchs30-A11_1"].text == "绿是阳春烟景"
    assert seg["wenetspeech-Y0000000003_-xK9dQ2mZ_a_S00003"].text == "我喜欢TAYLOR SWIFT"
    assert seg["librispeech-19-198-0001"].text == "I DON'T THINK SO"


def test_multi_cn_is_union_of_parts(corpora):
    union = corpora["multi_cn"]
    segs, recs, dups, rejects = {}, {}, {}, {}
    native = {"aidatatang_200zh": "aidatatang_200zh"}
    for part in _SPK:
        c = corpora[part]
        segs.update(c.segments)
        recs.update(c.recordings)
        dups.update(c.duplicate_rejects)
        for item, why in c.rejects.items():
            rejects[(native[part] + "/" + item) if why == "not-extracted" else item] = why
    assert union.segments == segs  # identical ids and rows
    assert union.recordings == recs and union.duplicate_rejects == dups and union.rejects == rejects
    assert union.rejects["aidatatang_200zh/corpus/train/G0099.tar.gz"] == "not-extracted"


# --------------------------------------------------------------------------- #
# per-corpus quirks
# --------------------------------------------------------------------------- #
def test_aishell2_quirks(corpora):
    c = corpora["aishell2"]
    data = c.root / "iOS" / "data"
    raw = (data / "trans.txt").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") > 0  # CRLF throughout
    scp = dict(l.split("\t") for l in (data / "wav.scp").read_text().splitlines())
    trans = dict(l.split("\t", 1) for l in raw.decode().splitlines())
    assert trans["IC0001W0002"] == "播放一首Let it go"
    assert "IC0001W0003" in scp and "IC0001W0003" not in trans
    assert (data / scp["IC0001W0003"]).is_file()
    assert c.rejects["aishell2-IC0001W0003"] == "no-transcript"
    assert "ID0114W0003" in trans and not (data / "wav/D0114/ID0114W0003.wav").exists()
    assert c.rejects["aishell2-ID0114W0003"] == "missing-audio"
    assert {s.split for s in c.segments.values()} == {"train", "dev", "test"}
    assert {s.speaker for s in c.segments.values() if s.split == "test"} == {"T0011"}
    ev = corpora["aishell2_eval"]
    assert ev.segments == c.segments and ev.rejects == c.rejects
    assert ev.eval_root is not None and (ev.eval_root / "IOS" / "dev" / "trans.txt").is_file()
    assert not (ev.root / "iOS" / "dev").exists()


def test_librispeech_quirks(corpora):
    base = corpora["librispeech"].root
    lines = (base / "SPEAKERS.TXT").read_text().splitlines()
    assert ";ID  |SEX| SUBSET           |MINUTES| NAME" in lines
    rows = {l.split("|")[0].strip(): [f.strip() for f in l.split("|")] for l in lines if not l.startswith(";")}
    assert {"19", "1034", "84"} <= set(rows)
    assert all(r[1] in ("M", "F") for r in rows.values())
    assert (base / "train-clean-100" / ".completed").exists()
    assert not (base / "dev-clean" / ".completed").exists()
    trans = (base / "train-clean-100/19/198/19-198.trans.txt").read_text()
    assert "19-198-0001 I DON'T THINK SO\n" in trans


def test_wenetspeech_json(corpora):
    c = corpora["wenetspeech"]
    head = (c.root / "WenetSpeech.json").read_bytes()[:4096]
    assert b'"dataset": "WenetSpeech"' in head
    doc = json.loads((c.root / "WenetSpeech.json").read_text(encoding="utf-8"))
    assert doc["dataset"] == "WenetSpeech"
    allowed = {"L", "M", "S", "W", "DEV", "TEST_NET", "TEST_MEETING"}
    subset_lists, texts, missing, batch = [], [], [], 0
    for a in doc["audios"]:
        assert list(a)[:8] == ["aid", "duration", "md5", "path", "source", "tags", "url",
                               "segments"] or "batch_id" in a
        batch += "batch_id" in a
        path = c.root / a["path"]
        rid = f"wenetspeech-{a['aid']}"
        if not path.exists():
            missing.append(a["aid"])
            for s in a["segments"]:
                assert c.rejects[f"wenetspeech-{s['sid']}"] == "missing-audio"
            continue
        assert path.suffix == ".opus" and path.read_bytes()[:4] == b"OggS"
        assert hashlib.md5(path.read_bytes()).hexdigest() == a["md5"]
        info = sf.info(str(path))
        assert info.samplerate == SR and info.channels == 1 and info.subtype == "OPUS"
        assert a["duration"] == round(info.frames / SR, 2) == round(c.recordings[rid], 2)
        nums = [int(s["sid"][-5:]) for s in a["segments"]]
        assert nums == sorted(nums) and nums[-1] - nums[0] + 1 > len(nums)  # gaps
        for s in a["segments"]:
            assert s["sid"].startswith(a["aid"] + "_S")
            assert list(s) == ["sid", "confidence", "begin_time", "end_time", "subsets", "text"]
            assert all(isinstance(t, str) and t in allowed for t in s["subsets"])
            subset_lists.append(s["subsets"])
            texts.append(s["text"])
            seg_id = f"wenetspeech-{s['sid']}"
            if s["end_time"] <= s["begin_time"]:
                assert c.rejects[seg_id] == "bad-segment"
                continue
            e = c.segments[seg_id]
            assert e.start == s["begin_time"] and e.duration == round(s["end_time"] - s["begin_time"], 3)
            assert e.subset == " ".join(s["subsets"]) and e.text_raw == s["text"]
            assert e.recording_id == rid and s["end_time"] <= info.frames / SR
    assert ["L"] in subset_lists and ["L", "M", "S"] in subset_lists and ["W"] in subset_lists
    assert ["DEV"] in subset_lists and "{" not in json.dumps(subset_lists)
    assert any("\u3000" in t for t in texts) and any("\u00a0" in t for t in texts)
    assert missing == ["Y0000000009_AbCdEfGhIjK"] and batch == 1
    aids = [a["aid"] for a in doc["audios"]]
    assert any(re.fullmatch(r"Y\d{10}_-.{10}", a) for a in aids)
    assert any(re.fullmatch(r"X\d{10}_\d+", a) for a in aids)
    assert "DEV_T0000000000" in aids
    assert (c.root / "audio/dev/third_party/B00000/DEV_T0000000000.opus").exists()
    assert {s.split for s in c.segments.values()} == {"train", "dev"}


def test_aidatatang_quirks(corpora):
    c = corpora["aidatatang_200zh"]
    lines = (c.root / "transcript/aidatatang_200_zh_transcript.txt").read_text().splitlines()
    assert "T0055G0001S0002 我 在 Ａ 区 等 你" in lines
    for seg in c.segments.values():
        wav = c.sources[seg.id]
        assert wav.with_suffix(".txt").is_file()
    with tarfile.open(c.root / "corpus/train/G0099.tar.gz") as tf:
        assert "G0099/T0055G0099S0001.wav" in tf.getnames()
    assert not (c.root / "corpus/train/G0099").exists()
    assert (c.root / "corpus/train/G0001.tar.gz").is_file() and (c.root / "corpus/train/G0001").is_dir()
    assert c.rejects == {"corpus/train/G0099.tar.gz": "not-extracted"}


def test_aishell_quirks(corpora):
    c = corpora["aishell"]
    text = (c.root / "transcript/aishell_transcript_v0.8.txt").read_text()
    assert "BAC009S0002W0123 我 喜欢 ｋ 歌\n" in text and "BAC009S0002W0124" not in text
    assert (c.root / "wav/train/S0002/BAC009S0002W0124.wav").is_file()
    assert c.rejects == {"multi_cn-aishell-BAC009S0002W0124": "no-transcript"}


def test_magicdata_quirks(corpora):
    c = corpora["magicdata"]
    boms = []
    for split in ("train", "dev", "test"):
        raw = (c.root / split / "TRANS.txt").read_bytes()
        boms.append(raw.startswith(b"\xef\xbb\xbf"))
        lines = raw.decode("utf-8-sig").splitlines()
        assert lines[0] == "UtteranceID\tSpeakerID\tTranscription"
        for line in lines[1:]:
            utt, spk, _text = line.split("\t")
            assert utt.endswith(".wav") and (c.root / split / spk / utt).is_file()
    assert boms.count(True) == 1
    train = (c.root / "train/TRANS.txt").read_text()
    assert "16_4013_20170819121429.wav\t16_4013\t" in train and "[FIL]" in train and "[SPK]" in train
    assert "\t[FIL]\n" in train and "！" in train
    assert c.rejects == {"multi_cn-magicdata-16_4013_20170819121429": "known-bad",
                         "multi_cn-magicdata-5_1812_20170628135834": "empty-text"}


def test_primewords_quirks(corpora):
    c = corpora["primewords"]
    raw = (c.root / "set1_transcript.json").read_text(encoding="utf-8")
    assert "\n" not in raw
    recs = json.loads(raw)
    assert all(isinstance(r[k], str) for r in recs for k in ("id", "user_id", "text", "file"))
    files = [r["file"] for r in recs]
    dup = next(f for f in files if files.count(f) == 2)
    seg_id = "multi_cn-primewords-" + dup[:-4]
    last = [r for r in recs if r["file"] == dup][-1]
    assert c.segments[seg_id].text_raw == last["text"]  # the LAST record wins
    assert c.duplicate_rejects == {seg_id: 1}
    missing = [r["file"] for r in recs
               if not (c.root / "audio_files" / r["file"][0] / r["file"][:2] / r["file"]).exists()]
    assert len(missing) == 1 and c.rejects == {"multi_cn-primewords-" + missing[0][:-4]: "missing-audio"}


def test_stcmds_quirks(corpora):
    c = corpora["stcmds"]
    txts = sorted(c.root.glob("*.txt"))
    assert len(txts) == 3 and all(not t.read_bytes().endswith(b"\n") for t in txts)
    assert any("，" in t.read_text() for t in txts)
    assert {s.speaker for s in c.segments.values()} == {"stcmds-P00001A", "stcmds-P00001I", "stcmds-P00002A"}
    assert [p.name for p in c.root.iterdir() if p.is_dir()] == []


def test_thchs30_quirks(corpora):
    c = corpora["thchs30"]
    for split in ("train", "dev", "test"):
        for p in (c.root / split).iterdir():
            assert p.is_symlink() and p.resolve() == (c.root / "data" / p.name).resolve()
    trn = (c.root / "data/A11_1.wav.trn").read_text().splitlines()
    assert len(trn) == 3 and trn[0].endswith(" l =") and re.fullmatch(r"[a-z0-9 ]+", trn[1])
    assert c.segments["multi_cn-thchs30-D4_750"].speaker == "thchs30-D4"
    assert c.segments["multi_cn-thchs30-D4_750"].split == "dev"
    assert {s.split for s in c.segments.values()} == {"train", "dev", "test"}


def test_inhouse(corpora):
    c = corpora["inhouse"]
    assert not c.segments
    assert c.rejects == {"misc/empty.wav": "empty-file", "misc/broken.mp3": "not-audio"}
    assert (c.root / "misc/empty.wav").stat().st_size == 0
    with pytest.raises(Exception):
        sf.info(str(c.root / "misc/broken.mp3"))
    rel_by_id = {rid: p.relative_to(c.root).as_posix() for rid, p in c.sources.items()}
    exts = {Path(r).suffix for r in rel_by_id.values()}
    assert exts == {".wav", ".WAV", ".flac", ".opus", ".mp3", ".m4a"}
    assert all("notes" not in r for r in rel_by_id.values())
    for rid, rel in rel_by_id.items():
        stem = Path(rel).with_suffix("").as_posix()
        san = "__".join(re.sub(r"[^A-Za-z0-9_-]", "_", part) for part in stem.split("/"))
        assert rid == f"inhouse-{san}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
        assert "." not in rid and " " not in rid
    assert "inhouse-meetings__2024_03_weekly_sync__standup-" in " ".join(rel_by_id)
    for rid, path in c.sources.items():
        dur = c.recordings[rid]
        if path.suffix == ".m4a":
            import av

            with av.open(str(path)) as cont:
                st = cont.streams.audio[0]
                assert st.codec_context.name == "aac" and st.rate == SR
                assert cont.duration / 1e6 == pytest.approx(dur, abs=0.03)
                n = sum(f.samples for f in cont.decode(st))
                assert n / SR == pytest.approx(dur, abs=0.1)
            continue
        info = sf.info(str(path))
        assert info.frames / info.samplerate == pytest.approx(dur, abs=1e-6), path
        if path.name == "hifi_mic.wav":
            assert (info.samplerate, info.channels) == (44100, 2)
        else:
            assert (info.samplerate, info.channels) == (SR, 1), path
    assert max(c.recordings.values()) == pytest.approx(40.0)


def test_corrupt_aishell2(corpora):
    c = corpora["corrupt"]
    data = c.root / "iOS" / "data"
    trans = (data / "trans.txt").read_bytes()
    scp = (data / "wav.scp").read_bytes()
    for raw in (trans, scp):
        assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\r\n") == raw.count(b"\n")
    bad = [l for l in trans.split(b"\r\n") if l]
    undecodable = []
    for line in bad:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            undecodable.append(line)
    assert len(undecodable) == 1 and undecodable[0].split(b"\t")[0] == b"IC0001W0011"
    ids = [l.split(b"\t")[0].lstrip(b"\xef\xbb\xbf") for l in bad]
    assert ids.count(b"IC0001W0002") == 2
    assert c.segments["aishell2-IC0001W0002"].text == "打开空调"  # first kept
    assert c.duplicate_rejects == {"aishell2-IC0001W0002": 1}
    wav = data / "wav" / "C0001"
    ch, rate, bits, declared = _wav_header(wav / "IC0001W0003.wav")
    assert declared > (wav / "IC0001W0003.wav").stat().st_size - 44
    assert (wav / "IC0001W0004.wav").stat().st_size == 0
    assert (wav / "IC0001W0005.wav").read_bytes()[:4] != b"RIFF"
    assert sf.info(str(wav / "IC0001W0006.wav")).samplerate == 8000
    assert sf.info(str(wav / "IC0001W0007.wav")).channels == 2
    assert not (wav / "IC0001W0008.wav").exists() and b"IC0001W0008\t" in scp
    assert b"IC0001W0009\t" in trans and b"IC0001W0009\t" not in scp
    assert b"IC0001W0010\t" in scp and b"IC0001W0010\t" not in trans
    assert c.rejects == {
        "aishell2-IC0001W0003": "truncated",
        "aishell2-IC0001W0004": "empty-file",
        "aishell2-IC0001W0005": "not-audio",
        "aishell2-IC0001W0006": "wrong-sample-rate",
        "aishell2-IC0001W0007": "not-mono",
        "aishell2-IC0001W0008": "missing-audio",
        "aishell2-IC0001W0009": "missing-audio",
        "aishell2-IC0001W0010": "no-transcript",
        "aishell2-IC0001W0011": "bad-encoding",
    }
    assert set(c.segments) == {"aishell2-IC0001W0001", "aishell2-IC0001W0002", "aishell2-IC0002W0001"}


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #
def test_generation_is_byte_identical(tmp_path, root, corpora, synth):
    again = mc.make_all(tmp_path / "again", synth)
    a, b = _tree(root), _tree(tmp_path / "again")
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, diff[:5]
    for key, c in corpora.items():
        d = again[key]
        assert (c.segments, c.recordings, c.rejects, c.duplicate_rejects) == (
            d.segments, d.recordings, d.rejects, d.duplicate_rejects), key


def test_ogg_serial_is_pinned():
    x = (np.sin(np.arange(8000) / 5) * 8000).astype(np.int16)
    one = mc._encode(x, SR, "OGG", "OPUS")
    two = mc._encode(x, SR, "OGG", "OPUS")
    assert one == two
    y, rate = sf.read(io.BytesIO(one), dtype="int16")  # CRCs valid: libogg decodes every page
    assert rate == SR and len(y) == len(x)
