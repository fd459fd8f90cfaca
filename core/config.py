"""Training and generation settings, each declared once.

:data:`SETTINGS` declares every setting of a model: its name, label, meaning,
type, default, allowed range or choices and command-line flag. Everything
else is generated from it:

* :class:`TrainConfig` (saved with the model) takes its fields, defaults and
  validation from the declaration: every value is checked against its range
  and a bad one raises one ``ValueError`` naming the setting, the value and
  what is allowed;
* the flags of ``noisekey train``, ``eval`` and ``generate``
  (:mod:`core.cli.model`) and their help;
* the training panel's form (:mod:`explorer.training_panel`): widgets,
  ranges, defaults and tooltips of the settings marked ``panel``.

The ranges also bound memory and time: ``dim`` is capped at 1024, beam width
at 64 and SMC particles at 1024, so no accepted value asks for an absurd
allocation. This module imports no numba (the window reads it at start-up).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, make_dataclass

import numpy as np

from core.tokenize import TOKENIZERS

__all__ = ["COMPILE_STAGE", "SCHEMA_VERSION", "SETTINGS", "Setting", "TrainConfig",
           "TRAINING_STAGES", "overall_progress", "setting"]

SCHEMA_VERSION = 1

#: The stages of :func:`core.model.train`, in order, as its ``progress`` names
#: them (``corpus`` is skipped for a loaded corpus). Declared here, beside the
#: settings, so the window can say "stage 3 of 8" without importing the model.
TRAINING_STAGES = ("corpus", "counting", "prototypes", "index", "windows", "gate", "memory",
                   "signatures")
#: The stage a fresh install runs before its first training
#: (:func:`core.warmup.compile_kernels`): the window counts it as stage 1.
COMPILE_STAGE = "compiling kernels"


def overall_progress(stage: str, fraction: float,
                     stages: tuple[str, ...] = TRAINING_STAGES) -> tuple[int, float] | None:
    """``(stage number from 1, overall fraction)`` of a stage of ``stages``, None for another name.

    Each stage counts as one equal part of the whole: the bar moves inside
    every stage, and its position says how many stages are behind.
    ``stages``: the run's stages, :data:`TRAINING_STAGES` with
    :data:`COMPILE_STAGE` before them on a first start.
    """
    if stage not in stages:
        return None
    i = stages.index(stage)
    f = min(max(float(fraction), 0.0), 1.0)
    return i + 1, (i + f) / len(stages)


@dataclass(frozen=True)
class Setting:
    """One setting: what it means, what it may be, how it is shown.

    Attributes
    ----------
    name : field of :class:`TrainConfig`
    label : short label of the panel's form
    help : meaning, one line (:meth:`describe` appends range and default)
    type : ``int``, ``float``, ``str`` or ``bool``
    default : the value when none is given
    lo, hi : inclusive bounds of a number (``lo_open``: ``lo`` itself excluded)
    choices : allowed strings of a ``str`` setting
    flag : command-line flag (``--no-NAME`` for a boolean that defaults on)
    panel : shown in the training panel's form
    step : spin-box step of a ``float`` in the panel
    by_tokenizer : ``(tokenizer, default)`` pairs that replace ``default`` for
        those tokenizers when the setting is not given
    """

    name: str
    label: str
    help: str
    type: type
    default: object
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    flag: str = ""
    panel: bool = False
    step: float = 0.1
    by_tokenizer: tuple[tuple[str, object], ...] = ()

    def default_for(self, tokenizer: str) -> object:
        """The default with tokenizer ``tokenizer`` (:attr:`by_tokenizer`, else :attr:`default`)."""
        return dict(self.by_tokenizer).get(tokenizer, self.default)

    def __post_init__(self) -> None:
        if not self.flag:
            base = self.name.replace("_", "-")
            object.__setattr__(self, "flag", f"--no-{base}" if self.type is bool else f"--{base}")

    @property
    def range_text(self) -> str:
        """What is allowed, e.g. ``1..1024``, ``(0, 1]`` or ``l2 | l1 | digit``."""
        if self.choices:
            return " | ".join(self.choices)
        if self.type is bool:
            return "on | off"
        if self.type is int:
            return f"{self.lo:d}..{self.hi:d}"
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"

    def describe(self) -> str:
        """The help text: meaning, allowed values and default."""
        d = self.default
        shown = ("on" if d else "off") if self.type is bool else d
        extra = "".join(f", {t} tokens: {v}" for t, v in self.by_tokenizer)
        return f"{self.help} — {self.range_text}, default {shown}{extra}"

    def check(self, value: object, name: str | None = None) -> object:
        """``value`` as this setting's type, or ``ValueError`` naming ``name``.

        Parameters
        ----------
        value : the candidate value
        name : how the error names the setting (default: ``self.name``;
            the command line passes its flag)

        Returns
        -------
        The value converted to :attr:`type` (an integral float becomes an int).
        """
        who = name or self.name

        def bad(what: str) -> ValueError:
            return ValueError(f"{who} must be {what}, got {value!r}")

        if self.type is bool:
            if not isinstance(value, (bool, np.bool_, numbers.Integral)) or value not in (0, 1):
                raise bad("true or false")
            return bool(value)
        if self.type is str:
            if value not in self.choices:
                raise bad(f"one of {', '.join(self.choices)}")
            return str(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad(f"a number in {self.range_text}")
        v = float(value)
        if self.type is int:
            if not (math.isfinite(v) and v == int(v)):
                raise bad(f"an integer in {self.range_text}")
            value = int(value)
            v = value
        elif not math.isfinite(v):
            raise bad(f"a finite number in {self.range_text}")
        else:
            value = v
        low_ok = v > self.lo if self.lo_open else v >= self.lo
        if not (low_ok and v <= self.hi):
            raise bad(f"in {self.range_text}")
        return value


def _s(name, label, help_, type_, default, lo=None, hi=None, **kw) -> Setting:
    return Setting(name, label, help_, type_, default, lo, hi, **kw)


# Field order is TrainConfig's; the panel shows its subset in this order.
SETTINGS: tuple[Setting, ...] = (
    _s("tokenizer", "tokenizer", "how text becomes tokens", str, "word",
       choices=TOKENIZERS, panel=True),
    _s("min_count", "min count", "words seen fewer times become <unk>", int, 1, 1, 1_000_000,
       panel=True),
    _s("dim", "dimension d", "key dimension d", int, 32, 1, 1024, panel=True),
    _s("prototypes", "noise prototypes P", "noise prototypes P (k-means of the bank's noises)",
       int, 256, 1, 16384, panel=True),
    _s("window", "window W", "C's window W: tokens of context", int, 3, 1, 64, panel=True),
    _s("alpha", "decay α", "C's decay α of older window tokens", float, 0.4, 0.0, 1.0,
       lo_open=True, panel=True, step=0.05),
    _s("metric", "metric", "distance between keys", str, "l2",
       choices=("l2", "l1", "digit"), panel=True),
    _s("f", "digit factor f", "digit metric: digit k weighs f^-(k-1)", float, 10.0, 0.0, 1000.0,
       lo_open=True, panel=True, step=1.0),
    _s("lam", "closeness λ", "digit metric: weight λ of digit-wise numeric closeness",
       float, 1.0, 0.0, 100.0, panel=True, step=0.1),
    _s("digits", "digits D", "digit metric: digits read per coordinate D", int, 4, 1, 9,
       panel=True),
    _s("bucket_size", "bucket size b", "hash index: slots per bucket", int, 4, 1, 64,
       panel=True),
    _s("probes", "probes (-1: all)",
       "hash index: probes per function beyond the home bucket, -1 scans every bucket",
       int, 8, -1, 1024, panel=True),
    _s("seed", "seed", "seed of keys, k-means, index and SMC", int, 0, 0, 2**31 - 1, panel=True),
    _s("op", "layer op", "layer op of the signatures", str, "mean",
       choices=("mean", "halfgap"), panel=True),
    # bytes: 8, the order of the byte baseline; at 5, B trailed the modified
    # 8-gram on validation slices (docs -907 / -130 tokens of top-1 / top-5 and
    # +0.076 bits, quotations -70 / +15 and +0.020); at 8 it ties it on both
    _s("b_order", "B order",
       "order of B's Kneser-Ney transition over the noise bank (files without it: 3)",
       int, 5, 2, 16, by_tokenizer=(("byte", 8),)),
    # bytes: 12, kept per corpus only where a slice of the training part is at
    # least as good on top-1, top-5 and bits (core.b_order); words: no search
    _s("b_order_try", "B order tried",
       "a longer order for B, kept if a held-out slice of the training part is at least as "
       "good on top-1, top-5 and bits (0: keep b_order)",
       int, 0, 0, 16, by_tokenizer=(("byte", 12),)),
    _s("c_neighbours", "C neighbours", "nearest training windows that vote in C", int, 4, 1, 256),
    _s("c_bandwidth", "C bandwidth",
       "C's vote weight exp(-Δδ / (bandwidth · key scale))", float, 0.05, 0.0, 100.0,
       lo_open=True, step=0.01),
    _s("c_mode", "C mode", "modify: C replaces A's state; noise: C's noise on A", str, "modify",
       choices=("modify", "noise")),
    _s("noise_stages", "noise stages", "residual prototype codebooks (noises at once)",
       int, 1, 1, 8),
    _s("ridge", "ridge λ", "middle key ridge penalty", float, 1.0, 0.0, 1e6, lo_open=True),
    _s("max_len", "max length",
       "hard cap on generated tokens (a retrieved training output is kept whole)",
       int, 48, 1, 4096),
    _s("beam", "beam width", "beam search width", int, 4, 1, 64),
    _s("particles", "SMC particles", "particles of SMC generation", int, 16, 1, 1024),
    _s("band_weight", "band weight β", "weight β of the length band in stub scores",
       float, 1.0, 0.0, 100.0),
    _s("no_repeat", "no repeat",
       "block repeating an n-gram of this length of the output, 0 = off", int, 0, 0, 64),
    _s("gate_events", "gate events",
       "training events the gate is estimated from: a seeded sample past this many, 0 = all",
       int, 50_000, 0, 1_000_000_000),
    _s("signatures", "signatures", "build the layer signature bank (similar)", bool, True),
    _s("memory", "prompt memory",
       "nearest training pairs of the prompt memory, 0 = off (pairs only)", int, 8, 0, 256),
    _s("memory_pairs", "memory pairs",
       "training pairs sampled to fit the prompt memory's weights", int, 3000, 0, 1_000_000),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The declaration of setting ``name`` (``KeyError`` if none)."""
    return _BY_NAME[name]


class _TokenizerDefault:
    """Field default of a setting with per-tokenizer defaults: not given yet."""

    def __repr__(self) -> str:
        return "<the tokenizer's default>"


_BY_TOKENIZER = _TokenizerDefault()

_Fields = make_dataclass(
    "_Fields",
    # a setting with per-tokenizer defaults starts as _BY_TOKENIZER:
    # __post_init__ fills in the tokenizer's default unless a value was given
    [(s.name, s.type, field(default=_BY_TOKENIZER if s.by_tokenizer else s.default))
     for s in SETTINGS]
    + [("schema", int, field(default=SCHEMA_VERSION))],
)
_Fields.__module__ = __name__


@dataclass
class TrainConfig(_Fields):
    """Training and generation settings (schema-versioned; saved with the model).

    One field per entry of :data:`SETTINGS` (its help says what each means)
    plus ``schema``. Construction checks every value against its declared
    range and raises ``ValueError`` naming the first bad setting. A setting
    not given takes its tokenizer's default (:meth:`Setting.default_for`:
    ``b_order`` is 8 for byte tokens, 5 for words); ``dataclasses.replace``
    copies the resolved value, so change the tokenizer by constructing anew.
    """

    def __post_init__(self) -> None:
        for s in SETTINGS:  # ``tokenizer`` is first: checked before the defaults that read it
            v = getattr(self, s.name)
            if v is _BY_TOKENIZER:
                v = s.default_for(self.tokenizer)
            setattr(self, s.name, s.check(v))

    @property
    def metric_obj(self):
        """The :class:`core.metric.Metric` of ``metric``, ``f``, ``lam``, ``digits``."""
        from core.metric import Metric  # numba: loaded when a model needs it

        return Metric(self.metric, float(self.f), float(self.lam), int(self.digits))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        if int(data.get("schema", 0)) > SCHEMA_VERSION:
            raise ValueError(f"settings schema {data.get('schema')} is newer than this program")
        names = {f.name for f in fields(cls)}
        vals = {k: v for k, v in data.items() if k in names and k != "schema"}
        # B was a trigram before its order was a setting: files without it keep 3
        vals.setdefault("b_order", 3)
        return cls(**vals)
