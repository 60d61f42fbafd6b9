"""fact_rlhf_jax: LLaVA-RLHF (Factually Augmented RLHF) in JAX/Flax."""

__version__ = "0.1.0"
