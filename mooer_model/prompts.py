"""MooER's prompts and training targets, exactly as released (reference/mooer-model.md §1.4).

The chat prompt is the ``qwen`` template of ``src/mooer/utils/data_utils.py`` with one of
the instructions (their trailing spaces are part of the released text). The sequence a
model sees is ``[audio][prompt][target][eos]``; this module only says what ``prompt`` and
``target`` are for a task:

=====  ==================  =====================================================
task   instruction         target
=====  ==================  =====================================================
asr    ``asr``             the transcript (``▁`` turned back into a space)
ast    ``ast``             the English translation, as stored
mtl    ``ast``             transcript, ``\\n``, translation (one generation, split
                           on the newline at inference: :func:`split_mtl_output`)
=====  ==================  =====================================================

MooER runs its ASR+AST multitask model with the ast prompt (README, ``demo/app.py``).
Its training code joins the two labels with ``<|im_end|>`` in one mode and asks for a
missing ``asr_ast`` prompt in another; the released MTL checkpoint answers with a
newline, so that is the separator used here.
"""

from __future__ import annotations

PROMPT_TEMPLATES = {
    "qwen": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
}

INSTRUCTIONS = {
    "asr": "Transcribe speech to text. ",
    "ast": "Translate speech to english text. ",
    # Used only by MooER's speech-to-speech inference; kept for completeness.
    "s2s_trans": "Translate speech to english speech. ",
    "s2s_chat": "Answer my question with speech. ",
}

# Which instruction each training task is prompted with.
TASK_INSTRUCTION = {"asr": "asr", "ast": "ast", "mtl": "ast"}
TASKS = tuple(TASK_INSTRUCTION)

MTL_SEPARATOR = "\n"
WORD_SEPARATOR = "\u2581"  # ▁: how stored transcripts keep the space between Latin words

# Why a sample has no target for a task (the loader counts skips under these names).
NO_TEXT = "no_text"
NO_TRANSLATION = "no_translation"


def prompt_text(task: str, template: str = "qwen") -> str:
    """The full chat prompt a task is trained and decoded with."""
    if task not in TASK_INSTRUCTION:
        raise ValueError(f"expected a task among {', '.join(TASKS)}, found {task!r}")
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"expected a prompt template among {', '.join(PROMPT_TEMPLATES)}, found {template!r}")
    return PROMPT_TEMPLATES[template].format(INSTRUCTIONS[TASK_INSTRUCTION[task]])


def transcript(text: str | None) -> str:
    """A stored transcript in the form the model reads: ``▁`` back to a space."""
    return (text or "").replace(WORD_SEPARATOR, " ").strip()


def target_text(task: str, text: str | None, translation: str | None) -> tuple[str | None, str | None]:
    """``(target, None)``, or ``(None, reason)`` when the sample lacks what ``task`` needs."""
    asr = transcript(text)
    ast = (translation or "").strip()
    if task == "asr":
        return (asr, None) if asr else (None, NO_TEXT)
    if task == "ast":
        return (ast, None) if ast else (None, NO_TRANSLATION)
    if task == "mtl":
        if not asr:
            return None, NO_TEXT
        if not ast:
            return None, NO_TRANSLATION
        return asr + MTL_SEPARATOR + ast, None
    raise ValueError(f"expected a task among {', '.join(TASKS)}, found {task!r}")


def split_mtl_output(output: str) -> tuple[str, str | None]:
    """An MTL generation as ``(asr, ast)``; MooER treats anything but two lines as ASR only."""
    parts = output.split(MTL_SEPARATOR)
    if len(parts) == 2:
        return parts[0], parts[1]
    return output, None
