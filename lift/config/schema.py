"""The typed schema of every stage's config: one dataclass per section, each field with the docstring under it that
`lift config show STAGE` prints. The defaults are the embedded toy run (tiny models, a laptop CPU);
`configs/cluster/*.yaml` point the same schemas at real models and s3:// URLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional

DEFAULT_RUN = "./runs/default"


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts (each value, for a list or a mapping of numbers), declared beside the field
    as `field(..., metadata=NAME)` with one of the constants below; `lift.config.load` checks every key, naming it."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    meaning: str = ""

    def __contains__(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            bound = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            bound = f"within {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"{bound} ({self.meaning})" if self.meaning else bound


def _range(*args, **kwargs) -> dict:
    return {"range": Range(*args, **kwargs)}


AT_LEAST_0 = _range(0, meaning="a count, size or weight: not negative")
AT_LEAST_1 = _range(1, meaning="at least one")
POSITIVE = _range(0, low_open=True, meaning="positive")
FRACTION = _range(0, 1, meaning="a fraction")
BELOW_1 = _range(0, 1, high_open=True, meaning="a probability or decay rate")
TOY_FRAMES = _range(4, meaning="motion needs frames")
TOY_SIZE = _range(16, meaning="pixels; the toy world draws shapes of 4+ px")


@dataclass
class TrainerConfig:
    """Optimisation and checkpointing, shared by every training stage."""

    lr: float = field(default=1e-5, metadata=POSITIVE)
    """Peak learning rate of AdamW."""
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999], metadata=BELOW_1)
    """AdamW (beta1, beta2)."""
    weight_decay: float = field(default=0.0, metadata=AT_LEAST_0)
    """AdamW decoupled weight decay."""
    warmup_ratio: float = field(default=0.0, metadata=FRACTION)
    """Fraction of the total steps spent in linear warmup (used when warmup_steps is 0)."""
    warmup_steps: int = field(default=0, metadata=AT_LEAST_0)
    """Linear warmup steps; overrides warmup_ratio when > 0."""
    schedule: Literal["cosine", "cosine_with_restarts", "constant"] = "cosine"
    """Learning-rate schedule after warmup."""
    num_cycles: int = field(default=1, metadata=AT_LEAST_1)
    """Cosine cycles for cosine_with_restarts."""
    epochs: int = field(default=1, metadata=AT_LEAST_1)
    """Passes over the training set (ignored when max_steps > 0)."""
    max_steps: int = field(default=0, metadata=AT_LEAST_0)
    """Optimizer steps to run; 0 means derive from epochs."""
    batch_size: int = field(default=1, metadata=AT_LEAST_1)
    """Examples per rank per micro-batch."""
    grad_accum: int = field(default=1, metadata=AT_LEAST_1)
    """Micro-batches per optimizer step (global batch = batch_size x grad_accum x world size)."""
    grad_clip: float = field(default=1.0, metadata=AT_LEAST_0)
    """Max global gradient norm; 0 disables clipping."""
    mixed_precision: Literal["bf16", "fp32"] = "bf16"
    """Parameter/compute dtype on GPU (reductions stay fp32); CPU runs always use fp32."""
    activation_checkpointing: bool = True
    """Recompute each block's activations in backward to save memory."""
    fsdp: bool = True
    """Shard parameters, gradients and optimizer state with FSDP2 when world size > 1."""
    checkpoint_every: int = field(default=500, metadata=AT_LEAST_0)
    """Save a DCP checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = field(default=2, metadata=AT_LEAST_1)
    """Complete checkpoints to keep; older ones are deleted after a newer one is committed."""
    async_checkpoint: bool = True
    """Upload checkpoints in the background during the next step (committed at its end); false: block until saved."""
    log_every: int = field(default=10, metadata=AT_LEAST_1)
    """Log scalars every N optimizer steps."""
    num_workers: int = field(default=2, metadata=AT_LEAST_0)
    """DataLoader worker processes per rank."""
    seed: int = field(default=0, metadata=AT_LEAST_0)
    """Seed for initialisation, data order and noise."""
    on_nonfinite: Literal["skip", "stop"] = "stop"
    """A NaN/inf loss: skip the step and count it, or stop naming the step and batch."""


@dataclass
class ToyConfig:
    """The synthetic toy world: coloured shapes moving over backgrounds, with controlled defects."""

    num_clips: int = field(default=1000, metadata=AT_LEAST_0)
    """Rated clips in the HRA-style manifest."""
    frames: int = field(default=16, metadata=TOY_FRAMES)
    """Frames per clip."""
    size: int = field(default=32, metadata=TOY_SIZE)
    """Clip height and width in pixels."""
    fps: int = field(default=8, metadata=AT_LEAST_1)
    """Frames per second written into the mp4 files."""
    num_prompts: int = field(default=16, metadata=AT_LEAST_0)
    """Prompts written to prompts.jsonl for rollouts."""
    num_eval_prompts: int = field(default=16, metadata=AT_LEAST_0)
    """Held-out prompts written to eval_prompts.jsonl for `lift evaluate`: scenes that no rollout prompt shows."""
    num_real: int = field(default=128, metadata=AT_LEAST_0)
    """Clean clips with captions written to real/ (the D_real set of LiFT's objective)."""
    label_mix: Dict[str, float] = field(default_factory=lambda: {"Good": 0.35, "Normal": 0.15, "Bad": 0.5},
                                        metadata=AT_LEAST_0)
    """Relative weights of the labels drawn per clip and dimension (LiFT-HRA: ~35% Good, 15% Normal, 50% Bad)."""


@dataclass
class SplitConfig:
    """Deterministic train/test split by video."""

    test_fraction: float = field(default=0.1, metadata=FRACTION)
    """Fraction of videos placed in the test split."""
    seed: int = field(default=0, metadata=AT_LEAST_0)
    """Salt of the hash that assigns a video to a split."""


@dataclass
class ReleaseConfig:
    """The public LiFT-HRA release (LLaVA conversation JSON plus videos) to import."""

    json: Optional[str] = None
    """URL of the release JSON."""
    videos: Optional[str] = None
    """Folder or zip part URL holding the release's videos."""


@dataclass
class DataConfig:
    """`lift data toy|import|export`: build the HRA manifest a run trains and evaluates on."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    out: str = "${run}/data"
    """Output folder: manifest.jsonl, videos/, prompts.jsonl, eval_prompts.jsonl, real/."""
    source: Literal["toy", "import"] = "toy"
    """Where the ratings come from: the built-in toy world, or an imported LiFT-HRA release."""
    seed: int = field(default=0, metadata=AT_LEAST_0)
    """Seed of the toy world."""
    on_error: Literal["stop", "skip"] = "stop"
    """Bad records: stop with the full list, or skip them into rejected.jsonl beside the output."""
    toy: ToyConfig = field(default_factory=ToyConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class LoraConfig:
    """Low-rank adapters through peft (LiFT: r128/a256 for 13B, r64/a128 for 40B)."""

    enabled: bool = False
    """Train LoRA adapters (LiFT's recipe for its 13B/40B critics); false trains the whole model (the toy default:
    the 1M-parameter tiny critic is fine-tuned fully)."""
    r: int = field(default=128, metadata=AT_LEAST_1)
    """Adapter rank."""
    alpha: int = field(default=256, metadata=AT_LEAST_1)
    """Adapter scaling numerator (scale = alpha / r)."""
    dropout: float = field(default=0.05, metadata=BELOW_1)
    """Dropout on the adapter input."""
    target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names of the language model that get adapters."""


@dataclass
class CriticModelConfig:
    """The video VLM behind the critic."""

    name_or_path: str = "${run}/models/critic-toy"
    """Hub id, local folder or object-storage URL (e.g. Qwen/Qwen2.5-VL-7B-Instruct); the default is the tiny
    critic pretrained on toy clips that `lift models toy` writes."""
    frames: int = field(default=4, metadata=AT_LEAST_1)
    """Frames sampled uniformly per video (LiFT: 8; the toy default 4 of a 16-frame clip puts frames 5 apart in
    each 2-frame temporal patch, so motion shows inside one patch, where a tiny vision tower sees it)."""
    sample_fps: float = field(default=2.0, metadata=POSITIVE)
    """Rate the sampled frames are shown at (frames / clip seconds: 4 of a 2 s toy clip -> 2); Qwen2.5-VL places
    video tokens in time by it."""
    answer_format: Literal["label_first", "reason_first"] = "reason_first"
    """label_first is LiFT's '<Label>. <reason>'; reason_first says what it sees, then judges (the toy default:
    a tiny critic compares words it has written far more easily than it judges at the first token;
    docs/RESULTS.md)."""
    with_reasons: bool = True
    """Train on reasons; false trains '<Label>.' alone (the paper's ablation)."""
    freeze_vision: bool = False
    """Keep the vision tower and projector frozen, as the paper does (configs/cluster); the toy default trains
    them, as the tiny critic has still to learn to see the toy world's defects."""
    trust_remote_code: bool = False
    """Run Python code shipped inside the model folder (transformers auto_map); off unless the model needs it."""


@dataclass
class CriticConfig:
    """`lift critic`: supervised fine-tuning of the critic VLM on the HRA train split."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    data: str = "${run}/data"
    """Folder holding manifest.jsonl and the videos."""
    out: str = "${run}/critic"
    """Output folder: model/ (transformers layout) and checkpoints/."""
    model: CriticModelConfig = field(default_factory=CriticModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        lr=2e-4, warmup_ratio=0.05, max_steps=200, batch_size=16, checkpoint_every=100, activation_checkpointing=False,
        num_workers=1, log_every=20))
    """The toy run's fine-tuning of the shipped critic start on the run's own ratings.
    LiFT's recipe (lr 1e-5, warmup 0.03, 20 epochs, LoRA, frozen vision) is configs/cluster/critic-qwen2.5-vl-7b.yaml;
    the longer toy recipe of docs/RESULTS.md's critic accuracy is configs/local/critic-accuracy.yaml."""


@dataclass
class CriticEvalConfig:
    """`lift critic-eval`: accuracy of the critic on the test split, in the layout of LiFT's Table 2."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    data: str = "${run}/data"
    """Folder holding manifest.jsonl and the videos."""
    critic: str = "${run}/critic/model"
    """The trained critic (transformers layout)."""
    out: str = "${run}/critic/eval"
    """Output folder: accuracy.json, accuracy.md."""
    split: Literal["train", "test"] = "test"
    """Manifest split to evaluate."""
    mode: Literal["logits", "generate"] = "logits"
    """How labels are read: argmax of label probabilities, or parsed from greedy answers."""
    max_new_tokens: int = field(default=96, metadata=AT_LEAST_1)
    """Longest generated answer in generate mode, and the longest reason a reason-first critic may give before its
    label is read in logits mode (a reason cut short misleads the label read after it)."""
    batch_size: int = field(default=8, metadata=AT_LEAST_1)
    """Videos per forward pass per rank."""
    num_shards: int = field(default=0, metadata=AT_LEAST_0)
    """Part files of the output; 0 means one per rank."""


@dataclass
class T2VModelConfig:
    """A diffusers text-to-video pipeline."""

    family: Literal["cogvideox", "wan"] = "cogvideox"
    """Model family: selects pipeline class and training objective."""
    name_or_path: str = "${run}/base"
    """Hub id, local folder or object-storage URL (e.g. THUDM/CogVideoX-2b)."""
    trust_remote_code: bool = False
    """Run Python code shipped inside the pipeline folder (custom components); off unless the model needs it."""


@dataclass
class SamplingConfig:
    """How videos are sampled from a text-to-video pipeline."""

    steps: int = field(default=20, metadata=AT_LEAST_1)
    """Denoising steps (CogVideoX-2B's published default: 50)."""
    guidance: float = field(default=1.0, metadata=AT_LEAST_0)
    """Classifier-free guidance scale; 1 samples unguided, the toy default for rollouts and evaluation alike
    (docs/RESULTS.md says why). CogVideoX-2B's published default: 6."""
    height: int = field(default=32, metadata=AT_LEAST_1)
    """Frame height in pixels (CogVideoX-2B: 480)."""
    width: int = field(default=32, metadata=AT_LEAST_1)
    """Frame width in pixels (CogVideoX-2B: 720)."""
    frames: int = field(default=16, metadata=AT_LEAST_1)
    """Frames per video (CogVideoX-2B: 49)."""
    fps: int = field(default=8, metadata=AT_LEAST_1)
    """Frames per second of the written mp4."""
    vae_tiling: bool = True
    """Decode in tiles a clip larger than its family's VAE tile (lift/models/families; memory)."""
    vae_slicing: bool = True
    """Decode one such clip of a batch at a time (memory)."""


@dataclass
class GenerateConfig:
    """`lift generate`: roll out videos from the base model, sharded by prompt."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    model: T2VModelConfig = field(default_factory=T2VModelConfig)
    prompts: str = "${run}/data/prompts.jsonl"
    """Prompt file (.txt, one per line, or .jsonl with 'id' and 'prompt')."""
    out: str = "${run}/rollouts"
    """Output folder: videos/, metadata parts, _SUCCESS."""
    videos_per_prompt: int = field(default=8, metadata=AT_LEAST_1)
    """Videos per prompt; video k of prompt p uses a seed derived from (seed, p, k)."""
    seed: int = field(default=0, metadata=AT_LEAST_0)
    """Base seed of the derived per-video seeds."""
    batch_size: int = field(default=4, metadata=AT_LEAST_1)
    """Videos per pipeline call."""
    num_shards: int = field(default=0, metadata=AT_LEAST_0)
    """Part files of the output; 0 means one per rank."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class ScoreConfig:
    """`lift score`: rate every rollout with the critic and compute its reward."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    rollouts: str = "${run}/rollouts"
    """Folder of videos with metadata (or any HRA-style manifest folder)."""
    critic: str = "${run}/critic/model"
    """The trained critic (transformers layout)."""
    trust_remote_code: bool = False
    """Run Python code shipped inside the critic's folder (transformers auto_map); off unless the model needs it."""
    out: str = "${run}/scores"
    """Output folder: score part files (JSONL), _SUCCESS."""
    mode: Literal["logits", "generate", "remote"] = "logits"
    """logits: label probabilities from one forward; generate: greedy answers with reasons; remote: ask the
    `lift serve` at `url` (its own mode, critic and reward settings apply; the keys below are unused)."""
    url: Optional[str] = None
    """`lift serve` base URL for mode=remote (e.g. http://lift-serve:8000); the bearer token comes from
    LIFT_SERVE_TOKEN or the file LIFT_SERVE_TOKEN_FILE names."""
    label_scores: Dict[str, float] = field(default_factory=lambda: {"Good": 0.9, "Normal": 0.2, "Bad": 0.05},
                                           metadata=AT_LEAST_0)
    """s(label) of LiFT's reward r = mean over dimensions of s(label)."""
    dimension_weights: Dict[str, float] = field(
        default_factory=lambda: {"semantic": 1.0, "motion": 1.0, "fidelity": 1.0}, metadata=AT_LEAST_0
    )
    """Weight of each dimension in the reward's mean."""
    batch_size: int = field(default=8, metadata=AT_LEAST_1)
    """Videos per forward pass per rank."""
    max_new_tokens: int = field(default=96, metadata=AT_LEAST_1)
    """Longest generated answer in generate mode, and the longest reason a reason-first critic may give before its
    label is read in logits mode (a reason cut short misleads the label read after it)."""
    num_shards: int = field(default=0, metadata=AT_LEAST_0)
    """Part files of the output; 0 means one per rank."""


@dataclass
class ObjectiveConfig:
    """LiFT's loss: L = E_syn[r * l(x, c)] + lambda * E_real[l(x, c)]."""

    reward_weighting: bool = True
    """Weight each synthetic video's loss by its reward; false is plain fine-tuning."""
    lambda_real: float = field(default=1.0, metadata=AT_LEAST_0)
    """Weight of the real-data term (0 disables it; the paper shows that hurts temporal consistency)."""
    rejection_sampling: bool = False
    """Keep only videos rated Good on every dimension, unweighted (the paper's variant)."""
    reward_norm: Literal["none", "mean", "zscore"] = "none"
    """Normalise rewards over the dataset: divide by the mean, or standardise."""


@dataclass
class AlignConfig:
    """`lift align`: reward-weighted fine-tuning of the text-to-video transformer under FSDP2."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    model: T2VModelConfig = field(default_factory=T2VModelConfig)
    rollouts: str = "${run}/rollouts"
    """Generated videos (D_syn)."""
    scores: str = "${run}/scores"
    """Critic scores of the rollouts."""
    real: Optional[str] = "${run}/data/real"
    """Real video-caption set (D_real); null disables the real-data term."""
    out: str = "${run}/align"
    """Output folder: model/ (diffusers layout), checkpoints/, latent cache."""
    height: int = field(default=32, metadata=AT_LEAST_1)
    """Training resolution, pixels (LiFT: 480)."""
    width: int = field(default=32, metadata=AT_LEAST_1)
    """Training resolution, pixels (LiFT: 720)."""
    frames: int = field(default=16, metadata=AT_LEAST_1)
    """Frames per training clip (LiFT: 49)."""
    caption_dropout: float = field(default=0.0, metadata=BELOW_1)
    """Probability of training an example on the empty prompt instead of its caption (finetrainers'
    caption_dropout_p): classifier-free guidance needs an unconditional prediction. Released models have one;
    the toy base is trained with 0.1."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            lr=3e-4, betas=[0.9, 0.95], weight_decay=1e-4, warmup_steps=20, schedule="cosine_with_restarts",
            batch_size=8, grad_clip=1.0, max_steps=400, checkpoint_every=200, activation_checkpointing=False,
            num_workers=1, log_every=20))
    """The toy run's alignment of the toy base; LiFT's recipe for CogVideoX-2B (lr 1e-5, 200 warmup steps, one
    epoch) is configs/cluster/align-cogvideox-2b-8gpu.yaml."""


@dataclass
class EvaluateConfig:
    """`lift evaluate`: compare base and aligned models on held-out prompts with the critic (and the toy oracle)."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    base: T2VModelConfig = field(default_factory=T2VModelConfig)
    aligned: T2VModelConfig = field(default_factory=lambda: T2VModelConfig(name_or_path="${run}/align/model"))
    critic: str = "${run}/critic/model"
    """The trained critic (transformers layout)."""
    prompts: str = "${run}/data/eval_prompts.jsonl"
    """Held-out prompts (the toy world writes scenes no rollout prompt shows)."""
    out: str = "${run}/eval"
    """Output folder: results.json and the generated videos."""
    videos_per_prompt: int = field(default=8, metadata=AT_LEAST_1)
    """Videos per prompt and model; both models share the seeds."""
    seed: int = field(default=1000, metadata=AT_LEAST_0)
    """Base seed of the derived per-video seeds (apart from the rollouts' seeds)."""
    batch_size: int = field(default=4, metadata=AT_LEAST_1)
    """Videos per pipeline call."""
    score_batch_size: int = field(default=8, metadata=AT_LEAST_1)
    """Videos per critic forward pass per rank."""
    max_new_tokens: int = field(default=96, metadata=AT_LEAST_1)
    """Longest reason a reason-first critic may say before its label is read."""
    label_scores: Dict[str, float] = field(default_factory=lambda: {"Good": 0.9, "Normal": 0.2, "Bad": 0.05},
                                           metadata=AT_LEAST_0)
    """s(label) of LiFT's reward r = mean over dimensions of s(label) (expected under the critic's probabilities)."""
    dimension_weights: Dict[str, float] = field(
        default_factory=lambda: {"semantic": 1.0, "motion": 1.0, "fidelity": 1.0}, metadata=AT_LEAST_0
    )
    """Weight of each dimension in the reward's mean."""
    tie_margin: float = field(default=1e-4, metadata=AT_LEAST_0)
    """Reward differences up to this count as a tie (half a win) in the win rate."""
    num_shards: int = field(default=0, metadata=AT_LEAST_0)
    """Part files of the output; 0 means one per rank."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class BaseConfig:
    """`lift base` (toy world): train the tiny zoo's VAE and transformer on toy clips into a base model."""

    run: str = DEFAULT_RUN
    """Run folder URL; every default path below hangs off it."""
    data: str = "${run}/data"
    """Toy data folder: every rated clip (defects included) is training data."""
    start: str = "${run}/models/cogvideox-toy"
    """The tiny CogVideoX pipeline to start from: the toy base shipped with lift (models/cogvideox-toy of `lift
    models toy`), or the random zoo one (models/cogvideox) with train=true."""
    train: bool = False
    """Train the VAE, then the transformer, from `start`; false takes `start` as the base as it is
    (scripts/make-toy-pretrained.py makes the shipped toy base with train=true)."""
    work: str = "${run}/base_train"
    """Checkpoints and intermediate models."""
    out: str = "${run}/base"
    """The base pipeline, diffusers layout."""
    frames: int = field(default=16, metadata=AT_LEAST_1)
    """Frames per training clip (CogVideoX's VAE takes 8k or 8k+1)."""
    size: int = field(default=32, metadata=AT_LEAST_1)
    """Clip height and width in pixels."""
    kl_weight: float = field(default=1e-6, metadata=AT_LEAST_0)
    """Weight of the VAE's KL term next to reconstruction MSE."""
    caption_dropout: float = field(default=0.1, metadata=BELOW_1)
    """The transformer's `align.caption_dropout`: guided sampling (guidance > 1) needs an unconditional model."""
    # The shipped toy base's recipe (docs/RESULTS.md).
    vae: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        lr=1e-3, max_steps=1500, batch_size=4, warmup_steps=20, checkpoint_every=100, activation_checkpointing=False,
        num_workers=1, log_every=25))
    transformer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        lr=5e-4, max_steps=10000, batch_size=8, warmup_steps=50, betas=[0.9, 0.95], weight_decay=1e-4,
        checkpoint_every=400, activation_checkpointing=False, num_workers=1, log_every=50))


@dataclass
class ServeConfig:
    """`lift serve`: the trained critic behind HTTP (POST /v1/score), micro-batched across clients."""

    run: str = DEFAULT_RUN
    """Run folder URL; the default critic hangs off it."""
    critic: str = "${run}/critic/model"
    """The trained critic (transformers layout); its URL is the `critic` of every record, as in `lift score`."""
    trust_remote_code: bool = False
    """Run Python code shipped inside the critic's folder (transformers auto_map); off unless the model needs it."""
    mode: Literal["logits", "generate"] = "logits"
    """How labels are read, as `lift score`'s mode."""
    max_new_tokens: int = field(default=ScoreConfig.max_new_tokens, metadata=AT_LEAST_1)
    """As `lift score`'s max_new_tokens."""
    label_scores: Dict[str, float] = field(default_factory=lambda: ScoreConfig().label_scores)
    """s(label) of the reward, as `lift score`'s label_scores."""
    dimension_weights: Dict[str, float] = field(default_factory=lambda: ScoreConfig().dimension_weights)
    """Weight of each dimension in the reward, as `lift score`'s dimension_weights."""
    host: str = "127.0.0.1"
    """Address to listen on (the chart sets 0.0.0.0 inside the pod)."""
    port: int = field(default=8000, metadata=_range(1, 65535, meaning="a TCP port"))
    """TCP port."""
    batch_size: int = field(default=8, metadata=AT_LEAST_1)
    """Most videos per critic forward; a batch runs as soon as it is full."""
    max_wait_ms: float = field(default=5.0, metadata=AT_LEAST_0)
    """How long the first video of a batch waits for others to join before the batch runs anyway."""
    max_queue: int = field(default=256, metadata=AT_LEAST_1)
    """Most videos waiting for the critic; a request that would overflow it gets 429 with Retry-After."""
    max_items: int = field(default=64, metadata=AT_LEAST_1)
    """Most videos in one request."""
    max_body_bytes: int = field(default=32 << 20, metadata=AT_LEAST_1)
    """Largest request body (inline videos are base64 in it); larger gets 413."""
    max_video_bytes: int = field(default=16 << 20, metadata=AT_LEAST_1)
    """Largest video, inline or fetched from a URL; larger gets 413."""
    allow: List[str] = field(default_factory=list)
    """URL prefixes the server may read videos from (e.g. s3://bucket/runs/); anything else is refused with 400,
    so a client cannot make the server fetch internal addresses. Empty: inline videos only."""
    token_file: Optional[str] = None
    """File holding the bearer token (a mounted Kubernetes Secret); else the LIFT_SERVE_TOKEN environment variable."""
    anonymous: bool = False
    """Serve without a token; refused at start-up unless set, so a forgotten Secret never opens the API."""
    cache_url: Optional[str] = None
    """Object-storage folder of the result cache, kept across restarts; null keeps results in memory only."""
    cache_entries: int = field(default=100000, metadata=AT_LEAST_0)
    """Results kept in memory (least recently used dropped first)."""
    decode_threads: int = field(default=4, metadata=AT_LEAST_1)
    """Threads fetching and decoding videos ahead of the critic."""
