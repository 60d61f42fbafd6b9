"""Supervised fine-tuning (and projector pretraining) of LLaVA: next-token cross-entropy on the
assistant tokens.

Config groups read here (besides the loop's, see `train.defaults`):
  model.preset            name from `models.config.preset` ("tiny", "small", "llava_7b_224", ...)
  model.overrides         dict passed to `preset(name, **overrides)`; nested `text` / `vision` dicts allowed
  model.vocab_from_tokenizer  set text.vocab_size to the tokenizer's size (toy tokenizers)
  model.image_token_from_tokenizer  use the tokenizer's `<image>` id as `image_token_id`
  model.loss_chunk        > 0: cross-entropy from hidden states, this many positions of logits at a time
                          (never materialises [B, T, vocab] logits; 0 = plain logits)
  lora.rank               0 = full fine-tune; > 0 trains LoRA adapters on the frozen model named by
                          init.params_from / init.hf_llava (held outside the checkpoints; the run's model
                          card names it as its base, so PPO can share it with the reward model)
  lora.alpha, lora.targets
  init.hf_llava           llava-hf checkpoint dir to start from (all weights)
  init.hf_llm, init.hf_clip   HF LLaMA / CLIP dirs (the reference recipe starts from Vicuna + CLIP)
  init.params_from        workdir of an earlier run (e.g. projector pretraining): its latest params (any
                          starting point of `fact_rlhf_jax.pretrained` works here, adapters are merged)
  data.train, data.eval   sources: [(path, image_folder, weight), ...] (LLaVA JSON / tfds dirs)
  data.tokenizer          tokenizer directory (transformers `from_pretrained`)
  data.template           conversation template ("vicuna_v1" for SFT, "plain" for projector pretraining)
  data.max_text_length    text tokens with the image counted as one token (the reference's 1280);
                          sequences are padded up to max_text_length - 1 + num_image_tokens
  data.shapesworld.num_images  > 0: write a ShapesWorld into WORKDIR/shapesworld and train on it
  data.strict, data.read_threads, data.pad_to_square
Parameter paths (for `trainable` / `frozen` regexes): full fine-tune: `vision/...`,
`projector/...`, `llm/...`; with LoRA: `lora/llm/layers/...` (only adapters train).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import ml_collections

from fact_rlhf_jax.train.losses import sft_loss_terms, sft_loss_terms_chunked
from fact_rlhf_jax.train.stage import LossTerms, Stage

log = logging.getLogger(__name__)


def model_config(config: ml_collections.ConfigDict, tokenizer=None):
    from fact_rlhf_jax.models import config as mcfg

    overrides = dict(config.model.get("overrides", {}) or {})
    overrides = {k: (dict(v) if isinstance(v, (dict, ml_collections.ConfigDict)) else v) for k, v in overrides.items()}
    if tokenizer is not None and config.model.get("vocab_from_tokenizer", False):
        overrides.setdefault("text", {})["vocab_size"] = len(tokenizer)
    if tokenizer is not None and config.model.get("image_token_from_tokenizer", False):
        image_id = tokenizer.convert_tokens_to_ids("<image>")
        if image_id is None or image_id == tokenizer.unk_token_id:
            raise ValueError(f"{config.data.tokenizer}: tokenizer has no <image> token "
                             "(model.image_token_from_tokenizer is set)")
        overrides["image_token_id"] = int(image_id)
    return mcfg.preset(config.model.preset, **overrides)


def default_config() -> ml_collections.ConfigDict:
    """Every SFT key with its default (configs/sft/*.py start here)."""
    from fact_rlhf_jax.train.defaults import base_config

    c = base_config()
    c.stage = "sft"
    # loss_chunk > 0: cross-entropy from hidden states, that many positions of logits at a time.
    c.model = ml_collections.ConfigDict(dict(preset="tiny", overrides={}, vocab_from_tokenizer=False,
                                             image_token_from_tokenizer=False, loss_chunk=0))
    # CLIP frozen, projector + LLM trained (full fine-tune), as in the reference SFT.
    c.trainable = ("projector/.*", "llm/.*")
    c.frozen = ()
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down")))
    c.init = ml_collections.ConfigDict(dict(hf_llava="", hf_llm="", hf_clip="", params_from=""))
    c.data = ml_collections.ConfigDict(
        dict(
            train=[],  # [(path, image_folder, weight), ...]
            eval=[],
            tokenizer="",
            template="vicuna_v1",
            max_text_length=1280,
            strict=False,
            read_threads=4,
            pad_to_square=True,
            shapesworld=dict(num_images=0, seed=0, noise=0.0, image_size=64, eval_fraction=0.1),
        )
    )
    c.optim.lr = 2e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.03
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    return c


def tiny_config() -> ml_collections.ConfigDict:
    """CPU-sized SFT on a ShapesWorld written into the workdir: the `tiny` LLaVA, 40 steps (configs/sft/tiny.py)."""
    c = default_config()
    c.model.preset = "tiny"
    c.model.vocab_from_tokenizer = True  # the ShapesWorld tokenizer's vocabulary
    c.model.image_token_from_tokenizer = True
    c.data.shapesworld.num_images = 48
    c.data.shapesworld.image_size = 56
    c.data.max_text_length = 192
    c.data.read_threads = 0
    c.batch_size = 8
    c.grad_accum = 1
    c.num_steps = 40
    c.mesh.fsdp = -1  # every local device (1 on a plain CPU)
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 4
    c.optim.weight_decay = 0.0
    c.checkpoint.every = 20  # two checkpoints per run (20, 40)
    c.checkpoint.keep = 2
    c.log_every = 5
    c.eval_every = 20
    c.eval_batches = 4
    return c


class SFTStage(Stage):
    name = "sft"

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        from transformers import AutoTokenizer

        self.config = config
        self.workdir = workdir
        data = config.data
        self.train_sources = [tuple(s) for s in data.train]
        self.eval_sources = [tuple(s) for s in (data.get("eval", ()) or ())]
        tokenizer_dir = data.tokenizer
        world = data.get("shapesworld", None)
        if world is not None and int(world.get("num_images", 0)) > 0:
            if jax.process_count() > 1:
                raise ValueError("data.shapesworld is for single-host runs; write the world first and point "
                                 "data.train / data.tokenizer at it")
            from fact_rlhf_jax.train import prerequisites

            split = prerequisites.sft_split(prerequisites.shapesworld(workdir, world),
                                            float(world.get("eval_fraction", 0.1)))
            self.train_sources = [(split["train"], split["images"], 1.0)]
            self.eval_sources = [(split["eval"], split["images"], 1.0)]
            tokenizer_dir = split["tokenizer"]
        if not tokenizer_dir:
            raise ValueError("config.data.tokenizer: no tokenizer directory given")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self._set_model(config, self.tokenizer)
        from fact_rlhf_jax import pretrained

        adapter = (pretrained.AdapterSpec("lora", self.lora_rank, float(config.lora.alpha), self.lora_targets)
                   if self.lora_rank else None)
        base = pretrained.absolute(self.lora_base_source) if self.lora_rank else None
        pretrained.write_card(workdir, pretrained.Card(
            "llava", self.model_cfg, str(Path(tokenizer_dir).absolute()), base=base, adapter=adapter))

    @classmethod
    def model_only(cls, config: ml_collections.ConfigDict) -> "SFTStage":
        """The model and loss side only (no tokenizer, no data): for planning on abstract inputs.

        Without a tokenizer, `model.vocab_from_tokenizer` / `image_token_from_tokenizer` keep the preset's values.
        """
        stage = cls.__new__(cls)
        stage.config, stage.workdir, stage.tokenizer = config, None, None
        stage.train_sources = stage.eval_sources = []
        stage._set_model(config, None)
        return stage

    def _set_model(self, config: ml_collections.ConfigDict, tokenizer) -> None:
        self.model_cfg = model_config(config, tokenizer)
        self.max_length = int(config.data.max_text_length) - 1 + self.model_cfg.num_image_tokens
        self.lora_rank = int(config.lora.rank) if "lora" in config else 0
        if self.lora_rank:
            self.lora_targets = tuple(config.lora.targets)
            self.lora_scale = float(config.lora.alpha) / self.lora_rank
        self._loader = None
        init = config.get("init", ml_collections.ConfigDict())
        self.lora_base_source = init.get("hf_llava", "") or init.get("params_from", "")
        if self.lora_rank and not self.lora_base_source:
            raise ValueError("lora.rank > 0: LoRA SFT adapts a whole model; name it in init.params_from (a training "
                             "workdir or any starting point) or init.hf_llava")

    # --- model ------------------------------------------------------------------------------------
    def init_params(self, rng):
        from fact_rlhf_jax.models import llava, lora

        if not self.lora_rank:
            return llava.init(self.model_cfg, rng)
        return {"lora": lora.init(self.model_cfg, rng, rank=self.lora_rank, targets=self.lora_targets)}

    def param_axes(self):
        from fact_rlhf_jax.models import llava, lora

        if not self.lora_rank:
            return llava.param_axes(self.model_cfg)
        return {"lora": lora.param_axes(self.model_cfg, rank=self.lora_rank, targets=self.lora_targets)}

    def frozen_params(self, mesh, rules):
        """LoRA SFT: the adapted model, held frozen outside the checkpoints (its adapters merged in)."""
        if not self.lora_rank:
            return None
        from fact_rlhf_jax import pretrained
        from fact_rlhf_jax.models import llava

        base = pretrained.load(self.lora_base_source, mesh=mesh, rules=rules, param_dtype=self.model_cfg.param_dtype)
        shardings = jax.tree.map(lambda x: x.sharding, base.params)
        like = jax.eval_shape(lambda: llava.init(self.model_cfg, jax.random.key(0)))
        return {"base": pretrained.place_checked(base.merged_params(), like, shardings, self.lora_base_source)}

    def abstract_frozen(self, mesh, rules):
        if not self.lora_rank:
            return None
        from fact_rlhf_jax import pretrained

        return {"base": pretrained.abstract_llava(self.model_cfg, mesh, rules)}

    def logits(self, params, batch):
        from fact_rlhf_jax.models import llava

        base, adapters = (params["base"], params["lora"]) if self.lora_rank else (params, None)
        out = llava.forward(base, self.model_cfg, batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                            lora=adapters, lora_scale=self.lora_scale if self.lora_rank else 1.0)
        return out.logits

    def loss(self, params, batch, rng) -> LossTerms:
        chunk = int(self.config.model.get("loss_chunk", 0) or 0)
        if not chunk:
            return sft_loss_terms(self.logits(params, batch), batch["labels"])
        from fact_rlhf_jax.models import llava

        base, adapters = (params["base"], params["lora"]) if self.lora_rank else (params, None)
        hidden = llava.hidden_states(base, self.model_cfg, batch["input_ids"], batch["pixel_values"],
                                     batch["attention_mask"], lora=adapters,
                                     lora_scale=self.lora_scale if self.lora_rank else 1.0)
        return sft_loss_terms_chunked(hidden, base["llm"]["lm_head"], batch["labels"], chunk)

    def load_pretrained(self, params, shardings):
        init = self.config.get("init", None)
        if init is None or self.lora_rank:  # LoRA SFT: the starting point is the frozen base
            return None
        return load_initial_weights(init, params, shardings, self.model_cfg, self.config)

    # --- data -------------------------------------------------------------------------------------
    def _build_loader(self, sources, *, process_index, process_count, batch_size, seed, shuffle, num_epochs):
        from fact_rlhf_jax.data.pipeline import build_sft_loader

        data = self.config.data
        return build_sft_loader(
            sources, self.tokenizer,
            image_token_id=self.model_cfg.image_token_id,
            num_image_tokens=self.model_cfg.num_image_tokens,
            image_size=self.model_cfg.vision.image_size,
            template=data.get("template", "vicuna_v1"),
            max_length=self.max_length,
            global_batch_size=batch_size * process_count,
            seed=seed, shuffle=shuffle, num_epochs=num_epochs,
            strict=bool(data.get("strict", False)),
            process_index=process_index, process_count=process_count,
            pad_side="right",
            pad_to_square=bool(data.get("pad_to_square", True)),
            read_threads=int(data.get("read_threads", 4)),
        )

    def train_data(self, *, process_index, process_count, batch_size, seed):
        self._loader = self._build_loader(self.train_sources, process_index=process_index,
                                          process_count=process_count, batch_size=batch_size, seed=seed,
                                          shuffle=True, num_epochs=None)
        return iter(self._loader)

    def eval_data(self, *, process_index, process_count, batch_size):
        if not self.eval_sources:
            return None
        loader = self._build_loader(self.eval_sources, process_index=process_index, process_count=process_count,
                                    batch_size=batch_size, seed=0, shuffle=False, num_epochs=1)
        return iter(loader)

    def num_train_examples(self):
        if self._loader is None:
            return None
        return int(self._loader.num_records)

    def to_global(self, batch, mesh):
        from fact_rlhf_jax.data.pipeline import to_global

        return to_global(batch, mesh, pad_side="right", pad_id=self._loader.pad_id if self._loader else 0)

    def finish(self, workdir, data):
        from fact_rlhf_jax.data.pipeline import write_bad_record_report

        if self._loader is not None:
            write_bad_record_report(self._loader, workdir)


def load_initial_weights(init: ml_collections.ConfigDict, params: dict, shardings: dict, model_cfg, config) -> dict | None:
    """Weights to start from (see the module docstring); None when nothing is configured."""
    from fact_rlhf_jax import pretrained
    from fact_rlhf_jax.train.loop import make_rules

    mesh = jax.tree.leaves(shardings)[0].mesh
    whole = init.get("hf_llava", "") or init.get("params_from", "")
    if whole:
        loaded = pretrained.load(whole, mesh=mesh, rules=make_rules(config), param_dtype=model_cfg.param_dtype)
        return pretrained.place_checked(loaded.merged_params(), params, shardings, whole)
    if init.get("hf_llm", "") or init.get("hf_clip", ""):
        return pretrained.load_parts(init.get("hf_llm", ""), init.get("hf_clip", ""), params, shardings,
                                     dtype=model_cfg.param_dtype)
    return None


def build_stage(config, workdir):
    return SFTStage(config, workdir)


def plan_programs(config, mesh, rules):
    """`fact-rlhf plan` hook: one train step on the longest padded batch the config allows (with LoRA, the frozen
    model it adapts, `init.params_from`, is an argument of the step; its shapes are those of `model.preset`).

    Rows: `batch_size` (global; the step splits them into `grad_accum` micro-batches); length: the last
    length bucket, `max_text_length - 1 + num_image_tokens`.
    """
    import jax.numpy as jnp

    from fact_rlhf_jax.plan import train_step_program

    stage = SFTStage.model_only(config)
    rows, length, size = int(config.batch_size), stage.max_length, stage.model_cfg.vision.image_size
    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32)
    batch = {"input_ids": tokens, "attention_mask": tokens, "labels": tokens,
             "pixel_values": jax.ShapeDtypeStruct((rows, 3, size, size), jnp.float32)}
    accum = int(config.grad_accum)
    trains = f"LoRA r{stage.lora_rank} on a frozen" if stage.lora_rank else "full fine-tune of"
    what = (f"one optimizer update of {rows} sequences x {length} tokens ({accum} micro-batch"
            f"{'es' if accum > 1 else ''} of {rows // accum}), {trains} {config.model.preset}, "
            f"{stage.model_cfg.param_dtype} weights, remat {stage.model_cfg.remat}")
    return [train_step_program(stage, config, mesh, rules, batch, what)]
