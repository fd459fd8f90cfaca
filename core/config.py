"""Training and generation settings: TrainConfig (saved with the model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from core.metric import Metric

SCHEMA_VERSION = 1


@dataclass
class TrainConfig:
    """Training settings (schema-versioned; saved with the model).

    Attributes
    ----------
    tokenizer, min_count : corpus settings
    dim : key dimension d
    prototypes : noise prototypes P
    window, alpha : C's window W and decay α
    metric, f, lam, digits : the metric (``Metric(metric, f, lam, digits)``)
    bucket_size, probes : hash index settings (``probes=-1`` scans all)
    seed : seeds keys, k-means, index and SMC
    op : layer op for signatures (``"mean"`` | ``"halfgap"``)
    c_neighbours : nearest training windows that vote in C
    c_bandwidth : vote weight ``exp(−Δδ / (c_bandwidth · key scale))``
    c_mode : ``"modify"`` (C replaces A's state) or ``"noise"`` (C's noise on A)
    noise_stages : residual prototype codebooks (several noises at once)
    ridge : middle key ridge λ
    max_len : hard cap on generated tokens
    beam, particles : widths of beam search and SMC
    band_weight : weight β of the band potential in stub scores
    no_repeat : a generated token may not repeat an n-gram of this length
        already in the output (0: off)
    signatures : build the layer signature bank (``Model.similar``)
    memory : nearest training pairs of the prompt memory (0: off; pairs only)
    memory_pairs : training pairs sampled to fit the memory's mixing weights
    """

    tokenizer: str = "word"
    min_count: int = 1
    dim: int = 32
    prototypes: int = 256
    window: int = 3
    alpha: float = 0.4
    metric: str = "l2"
    f: float = 10.0
    lam: float = 1.0
    digits: int = 4
    bucket_size: int = 4
    probes: int = 8
    seed: int = 0
    op: str = "mean"
    c_neighbours: int = 4
    c_bandwidth: float = 0.05
    c_mode: str = "modify"
    noise_stages: int = 1
    ridge: float = 1.0
    max_len: int = 48
    beam: int = 4
    particles: int = 16
    band_weight: float = 1.0
    no_repeat: int = 0
    signatures: bool = True
    memory: int = 8
    memory_pairs: int = 3000
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.c_mode not in ("modify", "noise"):
            raise ValueError(f"c_mode must be 'modify' or 'noise', got {self.c_mode!r}")
        if self.prototypes < 1 or self.dim < 1:
            raise ValueError("prototypes and dim must be >= 1")

    @property
    def metric_obj(self) -> Metric:
        return Metric(self.metric, float(self.f), float(self.lam), int(self.digits))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        if int(data.get("schema", 0)) > SCHEMA_VERSION:
            raise ValueError(f"settings schema {data.get('schema')} is newer than this program")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and k != "schema"})
