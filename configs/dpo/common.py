"""The reference-scale DPO recipe shared by the 7B and 13B configs (imported by file path).

Where each number comes from:
  LoRA r=64, alpha=16 on q,k,v,o,gate,up,down   LLaVA-RLHF's adapters (reward model, RL init, PPO policy)
  bfloat16 base (init.param_dtype)              LLaVA-RLHF trains its LoRA stages on a 16-bit base (`--bits 16`)
  dpo.loss sigmoid, beta 0.1                    RLAIF-V (`--dpo_beta 0.1`), TRL `DPOConfig` default
  dpo.label_smoothing 0                         TRL default (plain DPO; set > 0 for conservative DPO)
  sums of token log-probs                       RLAIF-V `--dpo_use_average False`, TRL's sigmoid loss
  lr 1e-5, cosine, 5 % warmup, weight decay 0.01   RLAIF-V's LoRA recipe for LLaVA-1.5 (`llava15_train_lora.sh`)
  batch 8 pairs                                 the same script: 1 pair per GPU x 8 GPUs, no accumulation
  2 epochs of the 10k pairs (~2.4k updates)     RLAIF-V's 2,672 updates of 8 pairs (`--max_steps 2672`)
  max length 2048 text tokens                   RLAIF-V `--model_max_length 2048`; LLaVA-RLHF's reward model
  gradient clipping at 1.0                      HF Trainer default (neither recipe changes it)
  500 held-out pairs, seed 42                   LLaVA-RLHF's reward-model split of the same file
Data: LLaVA-RLHF's human preference file `llava_7b_v1_preference.json` (10k pairs on COCO train2017 images).
Start: the released LLaVA-RLHF SFT model (original-LLaVA layout, CLIP tower in its own directory).
"""

import ml_collections

from fact_rlhf_jax.train import dpo


def reference_dpo(sft_model: str, vision_tower: str, preset: str) -> ml_collections.ConfigDict:
    c = dpo.default_config()
    with c.init.ignore_type():  # a group, so that --config.init.model.path=... overrides it
        c.init.model = ml_collections.ConfigDict(dict(path=sft_model, vision_tower=vision_tower))
    c.init.param_dtype = "bfloat16"
    c.init.preset = preset  # what `fact-rlhf plan` plans with where sft_model is not readable
    c.model.remat = "full"
    c.model.loss_chunk = 512  # never materialise [pairs x 2, 2.6k, 32000] float32 logits
    c.lora.rank = 64
    c.lora.alpha = 16.0
    c.lora.targets = ("q", "k", "v", "o", "gate", "up", "down")
    c.trainable = ("lora/.*",)
    c.dpo.loss = "sigmoid"
    c.dpo.beta = 0.1
    c.dpo.label_smoothing = 0.0
    c.dpo.average_log_probs = False
    c.data.train = [("data/llava_rlhf/llava_7b_v1_preference.json", "data/coco/train2017", 1.0)]
    c.data.eval = []
    c.data.eval_size = 500
    c.data.split_seed = 42
    c.data.template = "vicuna_v1"
    c.data.max_text_length = 2048
    c.data.read_threads = 16
    c.batch_size = 8
    c.grad_accum = 1
    c.num_epochs = 2.0
    c.num_steps = -1
    c.optim.lr = 1e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.05
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 1.0
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.checkpoint.every = 200
    c.checkpoint.keep = 3
    c.log_every = 10
    c.eval_every = 200
    return c
