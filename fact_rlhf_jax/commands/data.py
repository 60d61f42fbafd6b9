"""`fact-rlhf data ...`: converters from standard annotation files to LLaVA JSON, and tfds packing."""

from fact_rlhf_jax.data.converters import add_arguments, run  # noqa: F401
