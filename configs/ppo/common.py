"""The reference PPO recipe (`RLHF/scripts/*/train_rl_model.sh`) shared by the 7B and 13B configs."""

import ml_collections

from fact_rlhf_jax.train import ppo


def reference_ppo(policy_init_run: str, reward_run: str, *, policy_preset: str, reward_preset: str,
                  rollout_rows_per_pass: int) -> ml_collections.ConfigDict:
    """Fact-RLHF PPO: rollouts of 512 prompts (`batch_size`), minibatches of 256 (`ppo.step_batch_size`) split
    into micro-batches (`grad_accum`), 2 PPO epochs, 4 passes over the 72k prompts (~560 rollouts); temperature
    1.0, top-p 1.0, 896 new tokens, prompts up to 128 tokens (longer ones skipped); lr 3e-5 cosine with 5
    warmup rollouts, stepped once per rollout; grad-norm clip 1.0; KL 0.1 (clamped k1), -8 without EOS, length
    term -10 * n / 896 * the prompt's length_bonus, +2 * the symbolic bonus, rewards x10, gamma = lambda = 1,
    clip 0.2 / value clip 0.2, vf_coef 0.1, whitened advantages. Bases in bf16 (the reference used 4-bit NF4
    bases to fit 8 GPUs; here the bf16 bases are held once and sharded over the mesh instead)."""
    c = ppo.default_config()
    c.init.policy = policy_init_run  # its adapter is the initial policy and the frozen reference
    c.init.reward = reward_run  # its adapter initialises the value model; its head scores
    c.init.param_dtype = "bfloat16"
    # what `fact-rlhf plan` plans with where the runs are not readable
    c.init.policy_preset, c.init.reward_preset = policy_preset, reward_preset
    c.data.train = [("data/llava_rlhf/llava_ppo50k-aokvqa12k-vqa10k.json", "data/coco/train2017", 1.0)]
    c.data.captions = "data/llava_rlhf/image_to_caption.json"
    c.data.query_len = 128
    c.data.instruction_length = 512
    c.data.read_threads = 16
    c.batch_size = 512
    c.num_epochs = 4.0
    c.num_steps = -1
    c.ppo.step_batch_size = 256
    c.grad_accum = 256 // rollout_rows_per_pass
    c.ppo.scoring_batch_size = rollout_rows_per_pass
    c.ppo.noptepochs = 2
    c.ppo.max_new_tokens = 896
    c.optim.lr = 3e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 5
    c.optim.clip_norm = 1.0
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.checkpoint.every, c.checkpoint.keep = 10, 3
    c.ppo.save_rollouts_every = 10
    c.log_every = 1
    return c
