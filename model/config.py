"""Dataclasses for the model's dimensions (saved in every checkpoint) and training options."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class ModelConfig:
    """What it takes to rebuild the graph. Travels with the weights."""

    arch: str = "dsvae"  # "dsvae" (LSTM prior p(z_t|z_<t)) or "unordered" (Helminger: p(z|f))
    posterior: str = "factorised"  # q(z_t|x_t) or "full": q(z_1:T|x_1:T, f)
    frame_size: int = 64
    channels: int = 3
    seq_len: int = 8  # training length; any T works at inference
    appearance_dim: int = 32  # F: size of the appearance code f
    motion_dim: int = 8  # Z: size of each motion code z_t
    width: int = 32  # channels of the first conv layer; doubles per layer
    hidden: int = 256  # frame feature and recurrent state size
    appearance_width: int = 64  # channels of the bag-of-patches appearance encoder
    appearance_patch: int = 4  # side of the square patches f is pooled from
    appearance_bands: int = 4  # horizontal bands pooled apart (head to feet); 1: all together
    # what f is pooled from: "patches" (4x4 patch colours by band: appearances that are colours,
    # Sprites) or "conv" (a conv net seeing 33x33 windows, pooled over every position and
    # frame: appearances that are shapes, such as digits; ConvAppearanceEncoder)
    appearance_encoder: str = "patches"
    appearance_train_frames: int = 4  # frames f is pooled from in a training step (speed)
    decode_train_frames: int = 4  # frames decoded and scored per clip in a training step (0: all)
    decoder_film: bool = True  # f also scales and shifts the decoder's channels (FiLM)
    # K > 0: each pixel is a soft choice among K colours that f sets (a palette); 0: plain RGB
    decoder_palette: int = 16
    # C > 0: each palette entry is a choice among the C exact colours of the training data (a
    # table kept in the weights, `Decoder.colour_table`), scored by their likelihood; pixel art
    # is then drawn in its own colours. 0: entries are free RGB colours
    decoder_colours: int = 0
    # what the motion encoder sees: "silhouette" (a colour-free soft foreground map, for clips
    # on a plain dark background such as Sprites) or "rgb" (the frames as they are)
    motion_view: str = "silhouette"
    unordered_frames: int = 3  # frames pooled into f by the unordered architecture

    def __post_init__(self) -> None:
        if self.arch not in ("dsvae", "unordered"):
            raise ValueError(f"arch must be 'dsvae' or 'unordered', not {self.arch!r}")
        if self.posterior not in ("factorised", "full"):
            raise ValueError(f"posterior must be 'factorised' or 'full', not {self.posterior!r}")
        if self.appearance_encoder not in ("patches", "conv"):
            raise ValueError("appearance_encoder must be 'patches' or 'conv', not "
                             f"{self.appearance_encoder!r}")
        if self.motion_view not in ("silhouette", "rgb"):
            raise ValueError(f"motion_view must be 'silhouette' or 'rgb', not {self.motion_view!r}")
        if self.frame_size != 64:
            raise ValueError("only 64x64 frames are supported")

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LossConfig:
    """Weights of the loss terms; a weight of 0 switches a term off."""

    beta_appearance: float = 1.0  # KL(q(f|x) || N(0, I))
    beta_motion: float = 8.0  # KL(q(z|x) || p(z))
    static_consistency: float = 1.0  # S3VAE triplet on f (shuffled positive, other clip negative)
    triplet_margin: float = 1.0
    dynamic_prediction: float = 1.0  # S3VAE head on z_t predicting the flow-grid cell
    mutual_information: float = 1.0  # S3VAE MI(f; z_t) penalty, minibatch-weighted sampling
    swap_cycle: float = 0.0  # f of decode(f_A, z_B) nearer f_A than f_B (model/losses.py)
    prior_moments: float = 0.0  # the batch's f samples: mean 0 and variance 1 per dim
    aggregate_prior: float = 0.0  # Gaussian fit of q(f) over recent clips vs N(0, I) (Jeffreys)
    aggregate_bank: int = 1024  # clips in that fit: this batch and those of the last steps
    # the palette decoder's colour variance per pixel (vae.Decoder): weight 1 scores each pixel
    # by its expected error over the entries it mixes, so it paints exact colours, not blends
    palette_spread: float = 0.0
    kl_warmup_steps: int = 1000  # the KL weights ramp from 0 over these steps
    # the prior terms (prior_moments, aggregate_prior) ramp in over these steps once the KL
    # ramp is over (0: they ramp with the KL). From step 0 the aggregate term squeezed f while
    # the codes were still forming (KL(f) 135 -> 10 nats in 100 steps; docs/model.md)
    prior_warmup_steps: int = 0


@dataclass
class TrainConfig:
    dataset: str = "sprites"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch_size: int = 32
    lr: float = 1e-3
    # the shipped model's run: whichever ends first, 100 epochs or 100 minutes (on 2 CPU cores
    # that is the minutes, about 24 epochs)
    epochs: int = 100
    max_minutes: float = 100.0  # 0: no time budget
    colour_augment: bool = True  # the motion encoder sees randomly recoloured clips
    recolour_targets: float = 0.0  # share of clips whose target and f input are recoloured
    # the palette entries choose among the training data's exact colours (ModelConfig's
    # decoder_colours, set from the data), and the reconstruction term is their likelihood
    exact_colours: bool = False
    bf16: bool = True  # CPU autocast to bfloat16 where the CPU has AMX/AVX512-BF16
    seed: int = 0
    threads: int = 0  # 0: torch's default
    subset: int = 0  # 0: the whole training split; else the first N clips (for tests)
    out: str = "runs/sprites"
    # fine-tuning: start from this model file's weights (and its model config), with a fresh
    # optimiser and schedule and the KL terms at full weight from the first step
    init_from: str = ""
    recipe: str = ""  # the model/recipes/ file these options came from, if any

    def to_dict(self) -> dict:
        return asdict(self)
