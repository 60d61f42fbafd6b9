"""Model code: pure functions over parameter pytrees (CLIP ViT, projector, LLaMA decoder, LoRA)."""
