"""lora-hyper: documents and task descriptions to LoRA adapters for Gemma, in JAX."""
