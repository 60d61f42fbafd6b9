"""The reference reward-model recipe shared by the 7B and 13B configs (imported by file path)."""

import ml_collections

from fact_rlhf_jax.train import reward


def reference_rm(sft_run: str, preset: str, grad_accum: int) -> ml_collections.ConfigDict:
    """`RLHF/scripts/13b-v1.5-336/train_reward_model.sh`: LoRA r64 / alpha 16 on q, k, v, o, gate, up, down of the
    SFT model (a frozen bf16 base) + a scalar head; Fact-RLHF prompt with the COCO captions / A-OKVQA rationales of
    `image_to_caption.json`; 32 pairs per step, lr 2e-5 constant after a 3 % warmup, no weight decay, grad-norm
    clip 0.3 (the HF default the script keeps), max length 2048; eval and save every 50 steps; the PPO scripts use
    checkpoint-200, so the run stops at step 200 (about 0.67 epoch of the 9.5k training pairs)."""
    c = reward.default_config()
    c.init.model = sft_run
    c.init.preset = preset  # what `fact-rlhf plan` plans with where sft_run is not readable
    c.init.param_dtype = "bfloat16"
    c.lora.rank, c.lora.alpha = 64, 16.0
    c.reward.prompt = "fact_rlhf"
    c.data.train = [("data/llava_rlhf/llava_7b_v1_preference.json", "data/coco/train2017", 1.0)]
    c.data.captions = "data/llava_rlhf/image_to_caption.json"
    c.data.eval_size, c.data.split_seed = 500, 42
    c.data.max_text_length = 2048
    c.data.read_threads = 16
    c.batch_size = 32
    c.grad_accum = grad_accum
    c.num_steps = 200
    c.optim.lr = 2e-5
    c.optim.schedule = "constant"
    # 3 % of the epoch the HF Trainer planned (9.5k pairs / 32 = 297 steps), though training stops at 200
    c.optim.warmup_steps = 9
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.3
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.checkpoint.every, c.checkpoint.keep = 50, 10
    c.eval_every = 50
    c.log_every = 10
    return c
